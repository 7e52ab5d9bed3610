"""The results document: its schema check and its markdown rendering (both from the data alone)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from benchmarks.harness import table

FORMAT = "roistore-bench/1"
SCHEMA = Path(__file__).with_name("results.schema.json")


@functools.cache
def _validator():
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    return jsonschema.Draft202012Validator(schema)


def validate(results: dict) -> None:
    """Raise ``ValueError`` naming the first place where ``results`` breaks ``results.schema.json``."""
    error = next(iter(sorted(_validator().iter_errors(results), key=lambda e: list(e.path))), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
        raise ValueError(f"benchmark results at {where}: {error.message}")


def _num(value: float, unit: str = "") -> str:
    if unit == "bytes":
        return f"{value / 2**20:,.1f} MiB"
    if unit == "share":
        return f"{value:.0%}"
    a = abs(value)
    if unit == "s" and a >= 3600:
        return f"{value:,.0f} ({value / 86400:,.1f} days)" if a >= 3 * 86400 else f"{value:,.0f} ({value / 3600:.1f} h)"
    if a >= 100:
        return f"{value:,.0f}"
    if a >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if a >= 0.1 or value == 0 else f"{value:.3g}"


def _unit(unit: str) -> str:
    return "" if unit in ("bytes", "share") else unit


def _spread(fig: dict) -> str:
    if len(fig["runs"]) == 1:
        return "(1 run)"
    return f"{_num(fig['min'], fig['unit'])} - {_num(fig['max'], fig['unit'])}"


def markdown(results: dict) -> str:
    """``results.md``: machine, targets met or not, then one table per stage."""
    m, s = results["machine"], results["settings"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    ingest_scale = s.get("ingest_scale", s["scale"])
    ingest = "" if ingest_scale == s["scale"] else f", the ingest stage at {ingest_scale:g}"
    lines = [
        f"# roistore benchmarks (megc2019 preset at scale {s['scale']:g}{ingest}, {s['repeats']} repeats"
        f"{', quick settings' if s['quick'] else ''})", "",
        f"Measured {results['created']} on {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), "
        f"{m['memory_gib']} GiB, {'GPU: ' + ', '.join(m['gpus']) if m['gpus'] else 'no GPU'}; "
        f"Python {m['python']}, Keras backend {m['keras_backend']}; {versions}.", "",
        f"Data: {s['data']['clips']} clips, {s['data']['frames']} frames, {s['data']['composite_clips']} in the "
        f"megc2019 composite. Each figure is the median of its repeats (min - max beside it); each ratio "
        f"compares two figures measured alternately in this run.", "",
        "## Targets", "",
    ]
    rows = []
    for name, stage in results["stages"].items():
        if "error" in stage:
            rows.append([name, "stage failed", stage["error"], "-"])
        for t in stage.get("targets", []):
            unit = stage["figures"][t["figure"]]["unit"]
            rows.append([name, f"{t['what']}: {t['op']} {_num(t['threshold'], unit)} {_unit(unit)}".rstrip(),
                         f"{_num(t['value'], unit)} {_unit(unit)}".rstrip(), "yes" if t["met"] else "**no**"])
    lines += [table(["stage", "target", "measured (median)", "met"], rows) if rows else "No stage with a target ran."]
    for name, stage in results["stages"].items():
        if "error" in stage:
            lines += ["", f"## {name}: failed", "", f"`{stage['error']}`"]
            continue
        lines += ["", f"## {name}: {stage['title']}", "",
                  table(["figure", "median", "min - max", "unit"],
                        [[f["label"], _num(f["median"], f["unit"]), _spread(f), f["unit"]]
                         for f in stage["figures"].values()])]
        d = stage.get("details", {})
        for key in ("note", "assumptions"):
            if d.get(key):
                lines += ["", d[key][0].upper() + d[key][1:] + "."]
        if name == "scaling":
            lines += ["", table(["scale", "clips", "frames", "seconds", "frames/s", "peak MiB"],
                                [[f"{r['scale']:g}", r["clips"], r["frames"], _num(r["seconds"]["median"]),
                                  _num(r["frames_per_s"]["median"]), _num(r["peak_rss_mib"]["median"])]
                                 for r in d["rows"]])]
    return "\n".join(lines) + "\n"
