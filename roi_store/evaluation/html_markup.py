"""The markup of ``roistore report --html``'s page (:mod:`roi_store.evaluation.html`): its style
sheet, escaped text, tables and inline figures."""

from __future__ import annotations

import html
import re

import numpy as np

from roi_store.evaluation import figures

#: The page's style sheet, inline: narrow screens scroll tables sideways; print drops the navigation.
CSS = """
:root { --ink: #1d2329; --muted: #5b6670; --line: #d6dbe0; --bad: #b3261e; --good: #1e6b35; --mark: #fff1c2; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--ink);
       max-width: 1100px; margin: 0 auto; padding: 0 16px 40px; }
h1 { font-size: 1.5em; margin: 0.8em 0 0.2em; } h2 { font-size: 1.2em; margin: 0 0 0.5em; }
header p { margin: 0.2em 0; color: var(--muted); }
nav { position: sticky; top: 0; background: #fff; border-bottom: 1px solid var(--line); padding: 6px 0; z-index: 1;
      display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 0.9em; }
nav a { color: #0b57d0; text-decoration: none; }
section { border-top: 1px solid var(--line); padding: 14px 0 6px; margin-top: 10px; } nav + section { border-top: 0; }
.banner { border: 2px solid var(--bad); color: var(--bad); padding: 8px 12px; margin: 10px 0; font-weight: 600; }
.note { color: var(--muted); font-size: 0.9em; }
.ok { color: var(--good); font-weight: 600; } .bad { color: var(--bad); font-weight: 600; }
.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 4px 18px; margin: 8px 0; }
.facts div span { display: block; color: var(--muted); font-size: 0.8em; }
.scroll { overflow-x: auto; max-width: 100%; margin: 6px 0 10px; }
table { border-collapse: collapse; font-size: 0.88em; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f5f7; font-weight: 600; } td.n { text-align: right; white-space: nowrap; }
td.differs { background: var(--mark); font-weight: 600; }
.text td.n { text-align: left; } .text td { overflow-wrap: anywhere; } .text td:first-child { white-space: nowrap; }
.figs { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
figure { margin: 0; max-width: 100%; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); margin-bottom: 4px; }
figcaption { font-size: 0.82em; color: var(--muted); margin-top: 3px; max-width: 640px; }
.gallery figure { flex: 1 1 420px; }
details summary { cursor: pointer; color: var(--muted); }
footer { margin-top: 24px; color: var(--muted); font-size: 0.8em; }
@media (max-width: 640px) {
  body { font-size: 14px; padding: 0 8px 24px; } th, td { padding: 2px 5px; } .gallery figure { flex-basis: 100%; }
}
@media print {
  nav { display: none; } body { max-width: none; font-size: 11pt; }
  h2, h3 { break-after: avoid; } figure, tr { break-inside: avoid; }
  figure img { max-height: 8cm; width: auto; } .gallery figure { flex: 1 1 45%; }
  td.differs, th, .banner { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""


def escape(value) -> str:
    """``value`` as text safe in HTML (None as nothing)."""
    return html.escape("" if value is None else str(value))


def when(stamp: str | None) -> str:
    """``2026-12-07T15:29:48+00:00`` as ``2026-12-07 15:29:48 UTC`` (the run documents' stamps are UTC)."""
    return stamp.replace("T", " ").replace("+00:00", " UTC") if stamp else "–"


def number(value, digits: int = 4) -> str:
    """A score with ``digits`` decimals; a missing one (None or NaN) as a dash."""
    return "–" if value is None or value != value else f"{value:.{digits}f}"


def setting(value) -> str:
    """A setting's value as text, spelt as in the run's JSON: lists and dicts compact, floats without noise."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {setting(v)}" for k, v in value.items()) or "{}"
    if isinstance(value, (list, tuple)):
        return ", ".join(setting(v) for v in value) or "[]"
    return str(value)


class Markup(str):
    """Text that is HTML already: a table cell made by the caller (``<td ...>``) or inline markup."""


#: A cell's text that is a number, an interval or a dash: right-aligned.
NUMERIC = re.compile(r"^(–|[-+\[]*\d[\d.,:\s\[\]+\-–e]*)$")


def table(head: list, rows: list[list], cls: str = "") -> str:
    """A table that scrolls sideways on a narrow screen; numbers right-aligned, :class:`Markup` as it is."""
    def cell(v) -> str:
        if isinstance(v, Markup):
            return v if v.startswith("<td") else f"<td>{v}</td>"
        text = escape(v)
        return f'<td class="n">{text}</td>' if NUMERIC.match(text) else f"<td>{text}</td>"

    return (f'<div class="scroll"><table class="{cls}"><thead><tr>' + "".join(f"<th>{escape(h)}</th>" for h in head)
            + "</tr></thead><tbody>" + "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
            + "</tbody></table></div>")


def figures_html(items: list[tuple[bytes, str]]) -> str:
    """Images (PNG or JPEG bytes, each with its caption) inline, side by side as the width allows."""
    return '<div class="figs">' + "".join(
        f'<figure><img src="{figures.data_uri(data)}" alt="{escape(caption)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>" for data, caption in items) + "</div>"


def jpeg(bgr: np.ndarray, scale: float) -> bytes:
    """A BGR image as JPEG bytes (quality 85), shrunk by ``scale`` when it is below 1."""
    import cv2

    if scale < 1:
        bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
