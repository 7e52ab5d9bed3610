"""Cells and coding sheets: frame numbers, apex, action units and emotion labels from a sheet or
CSV cell; a dataset's sheet found, read without evaluating anything, its columns found by name
(blank columns come and go between published versions).

Formulas are never evaluated and dates never taken for numbers; a cell that does not hold what
its column needs raises :class:`BadCell` (or, for the lenient columns, gives a warning), with a
message that shows the cell. Every problem with a sheet is one line that says what to do: use
the sheet published with the dataset, re-save it as .xlsx, or list the clips in a manifest CSV.
"""

from __future__ import annotations

import datetime
import fnmatch
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from roi_store.errors import AnnotationError
from roi_store.ingest.datasets.base import one_line


class BadCell(ValueError):
    """A sheet cell that does not hold what its column needs (the message says why)."""


def is_blank(value: object) -> bool:
    """True for an empty cell: None or text made of blanks only."""
    return value is None or (isinstance(value, str) and not value.strip())


def _show(value: object) -> str:
    text = one_line(value)
    return repr(text if len(text) <= 40 else text[:37] + "...")


_WHOLE = re.compile(r"^[+-]?\d+(?:\.0*)?$")


def cell_int(value: object) -> int:
    """A frame number from a cell: int, integral float, or digits as text; never negative.

    Raises
    ------
    BadCell
        For a blank cell, a formula (never evaluated), a date, a negative number, or anything
        not whole.
    """
    if is_blank(value):
        raise BadCell("is blank")
    if isinstance(value, bool):
        raise BadCell(f"holds {value!r}, not a frame number")
    if isinstance(value, float) and not value.is_integer():
        raise BadCell(f"holds {value!r}, not a whole frame number")
    if isinstance(value, (datetime.date, datetime.time, datetime.timedelta)):
        raise BadCell(f"holds a date/time ({value}), not a frame number")
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("="):
            raise BadCell(f"holds a formula ({_show(text)}); formulas are not evaluated")
        if not _WHOLE.match(text):
            raise BadCell(f"holds {_show(text)}, not a frame number")
        value = float(text)
    elif not isinstance(value, (int, float)):
        raise BadCell(f"holds {_show(value)} ({type(value).__name__}), not a frame number")
    if value < 0:
        raise BadCell(f"holds {int(value)}, not a frame number (frame numbers are 0 or more)")
    return int(value)


def parse_apex(value: object, onset: int | None, offset: int | None, column: str) -> tuple[int | None, list[str]]:
    """The apex frame, or None with a warning when it is not given or unusable.

    Parameters
    ----------
    value : object
        The cell.
    onset, offset : int or None
        The clip's annotated range; an apex outside it is dropped. None: no range to check.
    column : str
        The column's name, for the warning.

    Returns
    -------
    (int or None, list of str)
    """
    if is_blank(value):
        return None, ["apex not given (blank)"]
    if isinstance(value, str) and value.strip() == "/":
        return None, ["apex not given ('/')"]
    try:
        apex = cell_int(value)
    except BadCell as exc:
        return None, [f"apex not usable: {column} {exc}"]
    if onset is not None and offset is not None and not onset <= apex <= offset:
        return None, [f"apex {apex} outside the annotated frames {onset}-{offset}; apex not used"]
    return apex, []


def parse_aus(value: object) -> tuple[list[str], str]:
    """Action units from a cell, as a flat list of strings, and the cell's raw text.

    ``12`` -> ``["12"]``; ``"4+7+L10"`` -> ``["4", "7", "L10"]``; alternatives are kept, all of
    them: ``"L12 or L14"`` -> ``["L12", "L14"]``, ``"A1/A2"`` (``/`` means "or") ->
    ``["A1", "A2"]``.

    Returns
    -------
    (list of str, str)
        The AUs in order of mention without repeats, and the raw text (``""`` if blank).
    """
    if is_blank(value):
        return [], ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    raw = one_line(value)
    tokens = (token.strip("()[]{}?*") for token in re.split(r"[+,;/&\s]+", raw))
    return list(dict.fromkeys(t for t in tokens if t and t.lower() not in {"or", "and"})), raw


def normalise_emotion(value: object, known: Iterable[str] | None, dataset: str) -> tuple[str, list[str]]:
    """An emotion label stripped and lower-cased, with a warning when it is not a known one.

    Parameters
    ----------
    value : object
        The cell or folder name.
    known : iterable of str or None
        The dataset's labels (lower case); None accepts anything silently.
    dataset : str
        For the warning.

    Returns
    -------
    (str, list of str)
        ``"Happiness "`` -> ``"happiness"``; unknown labels are kept as given (lower-cased).
    """
    given = "" if value is None else one_line(value)
    text = given.lower()  # "Others"/"others" and "Happiness"/"happiness" must compare equal
    if not text:
        return "", ["emotion not given"]
    if known is not None and text not in known:
        labels = ", ".join(sorted(known))
        return text, [f"emotion {given!r} is not one of the {dataset} labels ({labels}); kept as {text!r}"]
    return text, []


def _sheet_rank(path: Path) -> tuple:
    # "Newest-looking": a YYYYMMDD date in the name wins, then words that mark a revision,
    # then a version number (v2 > v1); the chosen file is named in every clip's `source`.
    name = path.name.lower()
    dates = [int(d) for d in re.findall(r"(?<!\d)((?:19|20)\d{6})(?!\d)", name)]
    revised = any(w in name for w in ("updated", "latest", "final", "new"))
    versions = [int(v) for v in re.findall(r"v(\d+)", name)]
    return (max(dates, default=0), revised, max(versions, default=0), name)


def find_annotations(root: Path, pattern: str) -> Path:
    """Find a dataset's coding sheet beside ``root`` (in its parent) or inside it.

    Parameters
    ----------
    root : Path
        The resolved dataset root.
    pattern : str
        A case-insensitive glob such as ``"CASME2-coding*.xlsx"``.

    Returns
    -------
    Path
        The newest-looking match (a date in the name, then "updated", then ``vN``).

    Raises
    ------
    AnnotationError
        If no file matches.
    """
    found = []
    for folder in (root.parent, root):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        found += [folder / n for n in names if fnmatch.fnmatch(n.lower(), pattern.lower()) and (folder / n).is_file()]
    if not found:
        raise AnnotationError(
            f"no annotation sheet {pattern} in {root.parent} or {root}: give the sheet's path "
            "explicitly, or use a manifest CSV"
        )
    return max(found, key=_sheet_rank)


def _header_key(value: object) -> str:
    """A header name without case, blanks or punctuation: ``Onset Frame`` = ``OnsetFrame``."""
    return re.sub(r"[^a-z0-9]", "", str(value).lower()) if value is not None else ""


def match_columns(
    header: Sequence[object], columns: dict[str, str], optional: dict[str, str], *, file: str, header_row: int,
    hint: str,
) -> dict[str, int]:
    """Map column keys to positions by header name; raise if a required one is absent.

    Parameters
    ----------
    header : sequence
        The header row's cells.
    columns, optional : dict of str to str
        Column key -> the name the published file uses (``{"onset": "OnsetFrame"}``).
    file, header_row, hint : str, int, str
        For the error message.

    Returns
    -------
    dict of str to int
        Positions of every required column and of the optional ones present.

    Raises
    ------
    AnnotationError
        One line naming the missing columns and the ones found.
    """
    first: dict[str, int] = {}
    for i, cell in enumerate(header):
        first.setdefault(_header_key(cell), i)  # blank header columns map to "" and are unused
    missing = [f"'{name}'" for name in columns.values() if _header_key(name) not in first]
    if missing:
        found = ", ".join(one_line(c) for c in header if not is_blank(c)) or "(nothing)"
        raise AnnotationError(
            f"{file}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} in the header row "
            f"(row {header_row}); found: {found}; {hint}"
        )
    wanted = {**columns, **optional}
    return {k: first[_header_key(name)] for k, name in wanted.items() if _header_key(name) in first}


_SHEET_HINT = "use the coding sheet published with the dataset or a manifest CSV"

#: The signature of OLE compound files: Excel 97-2003 workbooks and encrypted .xlsx files.
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def _not_xlsx(path: Path, exc: Exception) -> AnnotationError:
    return AnnotationError(
        f"{path.name}: cannot be read as an .xlsx workbook ({type(exc).__name__}: "
        f"{one_line(exc)[:120]}); re-save it as .xlsx or use a manifest CSV"
    )


def read_sheet(
    path: Path, columns: dict[str, str], *, sheet: str | None = None, find_header: bool = False
) -> list[tuple[int, dict[str, object]]]:
    """Read an .xlsx coding sheet without evaluating anything.

    The workbook is opened ``read_only=True, data_only=False``: a formula cell reads as its
    formula text (``"=F15-D15"``), which :func:`cell_int` refuses, so a cached or recomputed
    value can never slip in.

    Parameters
    ----------
    path : Path
        The .xlsx file.
    columns : dict of str to str
        Required columns: key -> published name, matched without case, blanks or punctuation.
    sheet : str, optional
        Worksheet to use when the workbook has it (case-insensitive); else the first one.
    find_header : bool
        False: the header is the first non-empty row. True: it is the first row holding the
        first two required columns' names (SAMM puts 13 note rows above it).

    Returns
    -------
    list of (int, dict)
        The data rows below the header that are not blank: each row's 1-based number and its
        cells by column key.

    Raises
    ------
    AnnotationError
        If the file is missing or not a readable .xlsx workbook, no header row is found, or a
        required column is missing (one line each).
    """
    import openpyxl  # only the coded datasets need it

    if not path.is_file():
        raise AnnotationError(f"annotation sheet not found: {path}")
    try:
        with open(path, "rb") as fh:
            ole = fh.read(len(_OLE_MAGIC)) == _OLE_MAGIC
    except OSError:
        ole = False  # load_workbook reports it
    if ole:
        raise AnnotationError(
            f"{path.name}: is password-protected or an old .xls workbook (an OLE file, not .xlsx): "
            "save it unprotected as .xlsx, or use a manifest CSV"
        )
    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=False, keep_links=False)
    except Exception as exc:  # openpyxl/zipfile/xml raise many types for a bad file
        raise _not_xlsx(path, exc) from None
    try:
        by_title = {ws.title.lower(): ws for ws in wb.worksheets}
        ws = by_title.get(sheet.lower()) if sheet else None
        # A hidden sheet (a lookup table, an old version) is not the one a person reads.
        visible = [w for w in wb.worksheets if getattr(w, "sheet_state", "visible") == "visible"]
        ws = ws or (visible or wb.worksheets)[0]
        # Files written by other tools may declare wrong dimensions; read to the real end.
        ws.reset_dimensions()
        cells = [list(r) for r in ws.iter_rows(values_only=True)]
    except Exception as exc:  # corrupt sheet XML surfaces only while iterating
        raise _not_xlsx(path, exc) from None
    finally:
        wb.close()

    if find_header:
        anchors = [_header_key(n) for n in list(columns.values())[:2]]
        header_at = next((i for i, row in enumerate(cells) if set(anchors) <= {_header_key(c) for c in row}), None)
        if header_at is None:
            names = " and ".join(f"'{n}'" for n in list(columns.values())[:2])
            raise AnnotationError(
                f"{path.name}: no header row (a row holding {names}) in sheet '{ws.title}'; {_SHEET_HINT}"
            )
    else:
        header_at = next((i for i, r in enumerate(cells) if any(not is_blank(c) for c in r)), 0)
    header = cells[header_at] if cells else []
    index = match_columns(header, columns, {}, file=path.name, header_row=header_at + 1, hint=_SHEET_HINT)
    return [
        (i + 1, {k: row[j] if j < len(row) else None for k, j in index.items()})
        for i, row in enumerate(cells)
        if i > header_at and not all(is_blank(c) for c in row)
    ]
