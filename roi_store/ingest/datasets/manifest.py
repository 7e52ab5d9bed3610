"""A plain CSV manifest, so that any dataset can be read without new code.

Header columns (names compared without case or blanks): ``dataset, subject, clip, folder,
label`` and optionally ``onset, apex, offset, aus, fps``. ``folder`` is relative to the root
given to :meth:`ManifestReader.scan`; absolute paths, ``..`` and symlinks that lead out of the
root are refused (a Skip), never read. Each row is one clip: all frames of its folder, or
``onset``..``offset`` when both are given. Names may be in any script (``表情01``); a row
that names a dataset with a native reader takes its subject spelling, labels and frame rate.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

from roi_store.errors import AnnotationError
from roi_store.ids import ClipKey, loose_parts
from roi_store.ingest.datasets.base import ClipSpec, DatasetReader, Skip
from roi_store.ingest.datasets.cells import (BadCell, cell_int, is_blank, match_columns, normalise_emotion, parse_apex,
                                             parse_aus)
from roi_store.ingest.datasets.clips import Item, emit_sorted
from roi_store.ingest.datasets.paths import outside_root, resolve_root

#: Column key -> header name (the same here; the coded readers map keys to their sheets' names).
COLUMNS = {k: k for k in ("dataset", "subject", "clip", "folder", "label")}
OPTIONAL = {k: k for k in ("onset", "apex", "offset", "aus", "fps")}

_HINT = "a manifest needs the columns dataset, subject, clip, folder, label (optional: onset, apex, offset, aus, fps)"


class ManifestReader:
    """Reader of clips listed in a CSV manifest.

    Parameters
    ----------
    natives : iterable of DatasetReader
        The native readers: a row naming one of their datasets takes its labels and fps.
    """

    name = "manifest"
    #: Frame rate for rows with no ``fps`` cell whose dataset is not one roistore knows; such
    #: clips carry a warning saying the default was assumed.
    fps = 30.0
    spelling = None
    emotions = None

    def __init__(self, natives: Iterable[DatasetReader] = ()) -> None:
        self._natives = {reader.name: reader for reader in natives}

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
        first_row: dict = {}
        items = [self._row(path, root, number, cells, first_row) for number, cells in _read_csv(path)]
        return emit_sorted(items, root)

    def _row(self, path: Path, root: Path, number: int, v: dict[str, str], first_row: dict) -> Item:
        where = f"{path.name} row {number}"
        ds, subj, clip = v["dataset"], v["subject"], v["clip"]
        # Valid or not, a row is named by the id its clip would have (for a valid one, its key).
        parts = loose_parts(ds, subj, clip)

        def skip(reason: str) -> Item:
            return parts, Skip("/".join(parts), f"{where}: {reason}", where)

        try:
            key = ClipKey.make(ds, subj, clip)
        except AnnotationError as exc:
            return skip(str(exc))
        if (first := first_row.setdefault(key, number)) != number:
            return skip(f"duplicate of row {first} for the same clip; the first row is used")

        folder_text = v["folder"].strip()
        if not folder_text:
            return skip("folder is blank")
        if "\0" in folder_text:  # no file system call accepts it
            return skip(f"folder {folder_text!r} contains a NUL character; fix the manifest cell")
        # Refused on the text alone, before any file system call: nothing outside the root is
        # ever looked at, whatever the file system would make of it.
        if PurePosixPath(folder_text).is_absolute() or PureWindowsPath(folder_text).drive:
            return skip(f"folder {folder_text!r} is an absolute path; give it relative to the root")
        steps = folder_text.replace("\\", "/").split("/")
        if ".." in steps:
            return skip(f"folder {folder_text!r} contains '..'; give a path inside the root")
        folder = root.joinpath(*[p for p in steps if p not in ("", ".")])
        if why := outside_root(folder, root):
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
        if given or not is_blank(v.get("apex")):
            # With no range to check it against, emit_sorted warns if its frame is not on disk.
            apex, warnings = parse_apex(v.get("apex"), onset, offset, "apex")

        native = self._natives.get(key.dataset)
        fps_text = v.get("fps", "")
        if not is_blank(fps_text):
            try:
                fps = float(fps_text)
            except ValueError:
                fps = math.nan
            if not (math.isfinite(fps) and fps > 0):
                return skip(f"fps {fps_text.strip()!r} is not a positive number")
        elif native:
            fps = native.fps
        else:
            fps = self.fps
            warnings.append(f"fps not given; assumed {self.fps:g} (add an 'fps' column)")
        emotion, more = normalise_emotion(v["label"], native.emotions if native else None, key.dataset)
        aus, aus_raw = parse_aus(v.get("aus"))
        return parts, ClipSpec(key, folder, [], [], fps, emotion, aus=aus, onset=onset, apex=apex, offset=offset,
                               source=where, warnings=warnings + more, aus_raw=aus_raw)


def _read_csv(path: Path) -> list[tuple[int, dict[str, str]]]:
    """The manifest's rows that are not blank: each row's number (the header is row 1) and its cells by column key."""
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
    index = match_columns(records[0], COLUMNS, OPTIONAL, file=path.name, header_row=1, hint=_HINT)
    return [
        (i + 1, {k: (row[j] if j < len(row) else "") for k, j in index.items()})
        for i, row in enumerate(records)
        if i > 0 and any(c.strip() for c in row)
    ]
