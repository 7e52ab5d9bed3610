"""Class views (which clips a protocol uses, with which label) and per-region relabel vectors.

Both are driven by data recorded in the store (``views`` and ``relabel`` in its header), so a
store always says how its labels were made.
"""

from __future__ import annotations

import csv
import json
import re
from importlib import resources
from pathlib import Path

from roi_store.errors import AnnotationError
from roi_store.ids import ClipKey

MEGC2019 = "megc2019"


def _packaged(name: str) -> dict:
    return json.loads(resources.files("roi_store").joinpath(f"data/{name}.json").read_text())


def default_views() -> dict:
    """The packaged view rules (the MEGC 2019 composite)."""
    return _packaged("views")


def default_relabel() -> dict:
    """The packaged relabel tables (default FACS table and AU-driven table)."""
    return _packaged("relabel")


def read_view_file(path: Path, classes: list[str]) -> dict:
    """Read a clip list in the MEGC 2019 file format as a view definition.

    The file has no header; each row is ``dataset, subject, filename, label`` with label an
    index into ``classes`` (0/1/2 = negative/positive/surprise) or a class name. Subjects may be
    written in any form the datasets use (``6`` for SAMM's ``006``, ``s01`` for SMIC's ``s1``).
    """
    entries: dict[str, str] = {}
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise AnnotationError(f"cannot read view file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"cannot read view file {path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
                              f"{exc.start}); save it as CSV (UTF-8)") from None
    for n, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or all(not c.strip() for c in row):
            continue
        try:  # every complaint about a row is prefixed with where it is
            if len(row) < 4:
                raise AnnotationError(f"expected 4 columns (dataset, subject, filename, label), got {len(row)}")
            dataset, subject, clip, label = (c.strip() for c in row[:4])
            key = ClipKey.make(dataset, subject, clip)
            if re.fullmatch(r"\d+", label) and int(label) < len(classes):
                label = classes[int(label)]
            if label not in classes:
                raise AnnotationError(f"invalid label {label!r}: allowed values are 0..{len(classes) - 1} or "
                                      f"{', '.join(classes)}")
            if key.id in entries:
                raise AnnotationError(f"clip {key.id} is listed twice")
        except AnnotationError as exc:
            raise AnnotationError(f"{path} row {n}: {exc}") from None
        entries[key.id] = label
    if not entries:
        raise AnnotationError(f"view file {path} lists no clips")
    return {"kind": "list", "source": Path(path).name, "classes": list(classes), "entries": entries}


def view_label(view: dict, key: ClipKey, emotion: str) -> tuple[str | None, str | None]:
    """(label, None) if the clip is in the view, else (None, reason it is excluded)."""
    if view.get("kind") == "list":
        label = view["entries"].get(key.id)
        return (label, None) if label else (None, f"not listed in view file {view['source']}")
    rules = view["datasets"].get(key.dataset)
    if rules is None:
        return None, f"dataset {key.dataset!r} is not part of this view"
    if key.id in rules.get("exclude", {}):
        return None, rules["exclude"][key.id]
    label = rules["map"].get(emotion.lower())
    if label is None:
        return None, f"emotion {emotion!r} is not one of this view's classes"
    return label, None


def relabel_vectors(label: str | None, aus: list[str], table: dict, regions: list[str]) -> dict | None:
    """Per-region 4-class targets for a clip with 3-class ``label``.

    Returns ``{"default": [...], "au": [...], "au_source": "aus" | "default"}``: each list holds
    one class name per region, the clip's label where the region can show it, else ``not_me``.
    None when the clip has no label in the view.
    """
    if label is None:
        return None
    not_me = table["not_me"]
    default = [label if label in table["default"][r] else not_me for r in regions]
    numbers = {int(m.group(1)) for m in (re.search(r"(\d+)", str(au)) for au in aus) if m}
    if numbers:
        au = [label if numbers & set(table["au"][r]) else not_me for r in regions]
    else:
        au = list(default)
    return {"default": default, "au": au, "au_source": "aus" if numbers else "default"}
