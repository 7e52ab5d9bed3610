"""A plain CSV manifest, so that any dataset can be read without new code.

Header columns (names compared without case or blanks): ``dataset, subject, clip, folder,
label`` and optionally ``onset, apex, offset, aus, fps``. ``folder`` is relative to the root
given to :meth:`ManifestReader.scan`; absolute paths, ``..`` and symlinks that lead out of the
root are refused (a Skip), never read. Each row is one clip: all frames of its folder, or
``onset``..``offset`` when both are given.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

from roi_store.ingest.datasets import casme2, samm, smic
from roi_store.ingest.datasets.base import ClipSpec, Skip
from roi_store.ingest.datasets.common import (
    Annotation,
    BadCell,
    Pending,
    cell_int,
    emit_sorted,
    is_blank,
    match_columns,
    normalise_emotion,
    outside_root,
    parse_apex,
    parse_aus,
    resolve_root,
    sort_key,
)
from roi_store.errors import AnnotationError
from roi_store.ids import ClipKey

#: Column key -> header name (the same here; the coded readers map keys to their sheets' names).
COLUMNS = {k: k for k in ("dataset", "subject", "clip", "folder", "label")}
OPTIONAL = {k: k for k in ("onset", "apex", "offset", "aus", "fps")}

_HINT = (
    "a manifest needs the columns dataset, subject, clip, folder, label "
    "(optional: onset, apex, offset, aus, fps)"
)

#: When a row names a dataset roistore knows, its labels and frame rate are the defaults.
_NATIVE = {
    "casme2": (casme2.EMOTIONS, casme2.LAYOUT.fps),
    "samm": (samm.EMOTIONS, samm.LAYOUT.fps),
    "smic": (smic.EMOTIONS, smic.SMICReader.fps),
}


class ManifestReader:
    """Reader of clips listed in a CSV manifest.

    Parameters
    ----------
    fps : float
        Frame rate for rows with no ``fps`` cell whose dataset is not one roistore knows;
        such clips carry a warning saying the default was assumed.
    """

    name = "manifest"

    def __init__(self, fps: float = 30.0) -> None:
        self.fps = float(fps)

    def scan(self, root: Path, annotations: Path | None = None) -> Iterator[ClipSpec | Skip]:
        """Yield every clip the manifest lists, in ClipKey order, or a Skip saying why not.

        Parameters
        ----------
        root : Path
            The folder the ``folder`` column is relative to.
        annotations : Path
            The manifest CSV (required).

        Returns
        -------
        iterator of ClipSpec or Skip
            ``label`` becomes ``ClipSpec.emotion`` (lower case); ``source`` is
            ``"<file> row N"`` (the header is row 1).

        Raises
        ------
        AnnotationError
            If no manifest is given, it cannot be read, or a required column is missing.
        DatasetError
            If ``root`` is missing.
        """
        if annotations is None:
            raise AnnotationError(
                "the manifest reader needs the manifest CSV (annotations=None given): pass the "
                f"CSV's path; {_HINT}"
            )
        path = Path(annotations)
        root = resolve_root(root, expected="the folder the manifest's 'folder' paths start from")
        header, rows = _read_csv(path)
        index = match_columns(header, COLUMNS, OPTIONAL, file=path.name, header_row=1, hint=_HINT)
        items: list[tuple[tuple[str, ...], Pending]] = []
        first_row: dict = {}
        for number, row in rows:
            cells = {k: (row[i] if i < len(row) else "") for k, i in index.items()}
            items.append(self._row(path, root, number, cells, first_row))
        return emit_sorted(items, root, self.fps)

    def _row(
        self, path: Path, root: Path, number: int, v: dict[str, str], first_row: dict
    ) -> tuple[tuple[str, ...], Pending]:
        where = f"{path.name} row {number}"
        ds, subj, clip = v["dataset"], v["subject"], v["clip"]
        try:
            key = ClipKey.make(ds, subj, clip)
        except AnnotationError as exc:
            rid = f"{ds.strip()}/{subj.strip()}/{clip.strip()}"
            return sort_key(ds.strip().lower(), subj, clip), Skip(rid, f"{where}: {exc}", where)
        skey = (key.dataset, key.subject, key.clip)

        def skip(reason: str) -> tuple[tuple[str, ...], Skip]:
            return skey, Skip(key.id, f"{where}: {reason}", where)

        if key in first_row:
            first = first_row[key]
            return skip(f"duplicate of row {first} for the same clip; the first row is used")
        first_row[key] = number

        folder_text = v["folder"].strip()
        if not folder_text:
            return skip("folder is blank")
        if "\0" in folder_text:  # no file system call accepts it
            return skip(f"folder {folder_text!r} contains a NUL character; fix the manifest cell")
        # Refused on the text alone, before any file system call: nothing outside the root is
        # ever looked at, whatever the file system would make of it.
        win = PureWindowsPath(folder_text)
        if PurePosixPath(folder_text).is_absolute() or win.is_absolute() or win.drive:
            return skip(f"folder {folder_text!r} is an absolute path; give it relative to the root")
        parts = folder_text.replace("\\", "/").split("/")
        if ".." in parts:
            return skip(f"folder {folder_text!r} contains '..'; give a path inside the root")
        folder = root.joinpath(*[p for p in parts if p not in ("", ".")])
        why = outside_root(folder, root)
        if why:
            return skip(f"folder {folder} {why}")
        if not os.path.isdir(folder):
            return skip(f"{folder} is not a folder")

        warnings: list[str] = []
        onset = offset = apex = None
        given = [k for k in ("onset", "offset") if not is_blank(v.get(k))]
        if len(given) == 1:
            other = "offset" if given[0] == "onset" else "onset"
            return skip(f"{given[0]} given without {other}; give both or neither")
        if given:
            try:
                onset, offset = cell_int(v["onset"]), cell_int(v["offset"])
            except BadCell as exc:
                return skip(f"onset/offset {exc}")
            if onset > offset:
                return skip(f"onset {onset} > offset {offset}")
            apex, warnings = parse_apex(v.get("apex"), onset, offset, "apex")
        elif not is_blank(v.get("apex")):
            # No range to check it against: make_clip warns if its frame is not on disk.
            apex, warnings = parse_apex(v["apex"], None, None, "apex")

        native = _NATIVE.get(key.dataset)
        fps_text = v.get("fps", "")
        if not is_blank(fps_text):
            try:
                fps = float(fps_text)
            except ValueError:
                fps = math.nan
            if not (math.isfinite(fps) and fps > 0):
                return skip(f"fps {fps_text.strip()!r} is not a positive number")
        elif native:
            fps = native[1]
        else:
            fps = self.fps
            warnings.append(f"fps not given; assumed {self.fps:g} (add an 'fps' column)")
        emotion, more = normalise_emotion(v["label"], native[0] if native else None, key.dataset)
        aus, aus_raw = parse_aus(v.get("aus"))
        warnings += more
        ann = Annotation(emotion, where, aus, aus_raw, onset, apex, offset, warnings, fps=fps)
        return skey, (key, folder, ann)


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    if not path.is_file():
        raise AnnotationError(f"manifest not found: {path}")
    try:
        # utf-8-sig: spreadsheet programs put a byte-order mark in front of the header.
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(
            f"{path.name}: cannot be read as a UTF-8 CSV file ({type(exc).__name__}); save the "
            f"manifest as CSV (UTF-8); {_HINT}"
        ) from None
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    # European spreadsheet programs write ';' when ',' is the decimal mark.
    delimiter = ";" if first.count(";") > first.count(",") else ","
    try:
        # Blank lines come back as [] and are counted, so row N is the spreadsheet's row N.
        records = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    except csv.Error as exc:
        raise AnnotationError(f"{path.name}: not a valid CSV file ({exc}); {_HINT}") from None
    if not records or not any(c.strip() for c in records[0]):
        raise AnnotationError(f"{path.name}: no header in row 1; {_HINT}")
    rows = [(i + 1, r) for i, r in enumerate(records) if i > 0 and any(c.strip() for c in r)]
    return records[0], rows
