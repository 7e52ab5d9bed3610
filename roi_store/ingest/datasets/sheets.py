"""Coding sheets: finding a dataset's sheet, reading it without evaluating anything, and
finding its columns by name (blank columns come and go between published versions).

Every problem is one line that says what to do: use the sheet published with the dataset,
re-save it as .xlsx, or list the clips in a manifest CSV instead.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
from collections.abc import Sequence
from pathlib import Path

from roi_store.errors import AnnotationError
from roi_store.ingest.datasets.base import one_line
from roi_store.ingest.datasets.cells import is_blank

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
        found += [
            folder / n
            for n in names
            if fnmatch.fnmatch(n.lower(), pattern.lower()) and (folder / n).is_file()
        ]
    if not found:
        raise AnnotationError(
            f"no annotation sheet {pattern} in {root.parent} or {root}: give the sheet's path "
            "explicitly, or use a manifest CSV"
        )
    return max(found, key=_sheet_rank)


@dataclasses.dataclass
class SheetRow:
    """One data row of a sheet: its 1-based row number and its cells by column key."""

    number: int
    values: dict[str, object]


@dataclasses.dataclass
class Sheet:
    """A coding sheet read into memory: the header row found and the data rows below it."""

    path: Path
    title: str
    header_row: int
    rows: list[SheetRow]

    def where(self, row: int) -> str:
        """``"CASME2-coding.xlsx row 12"``: how messages and ``source`` name a row."""
        return f"{self.path.name} row {row}"


def _header_key(value: object) -> str:
    """A header name without case, blanks or punctuation: ``Onset Frame`` = ``OnsetFrame``."""
    return re.sub(r"[^a-z0-9]", "", str(value).lower()) if value is not None else ""


def _missing_columns_message(
    file: str, missing: Sequence[str], header_row: int, found: Sequence[str], hint: str
) -> str:
    """The one-line message for a sheet or CSV that lacks required columns."""
    cols = ", ".join(f"'{m}'" for m in missing)
    return (
        f"{file}: missing column{'s' if len(missing) > 1 else ''} {cols} in the header row "
        f"(row {header_row}); found: {', '.join(found) or '(nothing)'}; {hint}"
    )


def match_columns(
    header: Sequence[object],
    columns: dict[str, str],
    optional: dict[str, str],
    *,
    file: str,
    header_row: int,
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
    missing = [name for name in columns.values() if _header_key(name) not in first]
    if missing:
        found = [one_line(c) for c in header if not is_blank(c)]
        raise AnnotationError(_missing_columns_message(file, missing, header_row, found, hint))
    wanted = {**columns, **optional}
    return {k: first[_header_key(name)] for k, name in wanted.items() if _header_key(name) in first}


_SHEET_HINT = "use the coding sheet published with the dataset or a manifest CSV"

#: The signature of OLE compound files: Excel 97-2003 workbooks and encrypted .xlsx files.
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(magic)) == magic
    except OSError:
        return False  # load_workbook reports it


def read_sheet(
    path: Path,
    columns: dict[str, str],
    optional: dict[str, str] | None = None,
    *,
    sheet: str | None = None,
    find_header: bool = False,
) -> Sheet:
    """Read an .xlsx coding sheet without evaluating anything.

    The workbook is opened ``read_only=True, data_only=False``: a formula cell reads as its
    formula text (``"=F15-D15"``), which :func:`~roi_store.ingest.datasets.cells.cell_int` refuses, so a cached or recomputed
    value can never slip in.

    Parameters
    ----------
    path : Path
        The .xlsx file.
    columns : dict of str to str
        Required columns: key -> published name, matched without case, blanks or punctuation.
    optional : dict of str to str, optional
        Columns used when present.
    sheet : str, optional
        Worksheet to use when the workbook has it (case-insensitive); else the first one.
    find_header : bool
        False: the header is the first non-empty row. True: it is the first row holding the
        first two required columns' names (SAMM puts 13 note rows above it).

    Returns
    -------
    Sheet

    Raises
    ------
    AnnotationError
        If the file is missing or not a readable .xlsx workbook, no header row is found, or a
        required column is missing (one line each).
    """
    import openpyxl  # only the coded datasets need it

    optional = optional or {}
    if not path.is_file():
        raise AnnotationError(f"annotation sheet not found: {path}")
    if _starts_with(path, _OLE_MAGIC):
        raise AnnotationError(
            f"{path.name}: is password-protected or an old .xls workbook (an OLE file, not .xlsx): "
            "save it unprotected as .xlsx, or use a manifest CSV"
        )
    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=False, keep_links=False)
    except Exception as exc:  # openpyxl/zipfile/xml raise many types for a bad file
        raise AnnotationError(
            f"{path.name}: cannot be read as an .xlsx workbook ({type(exc).__name__}: "
            f"{one_line(exc)[:120]}); re-save it as .xlsx or use a manifest CSV"
        ) from None
    try:
        by_title = {ws.title.lower(): ws for ws in wb.worksheets}
        ws = by_title.get(sheet.lower()) if sheet else None
        # A hidden sheet (a lookup table, an old version) is not the one a person reads.
        visible = [w for w in wb.worksheets if getattr(w, "sheet_state", "visible") == "visible"]
        ws = ws or (visible or wb.worksheets)[0]
        title = ws.title
        # Files written by other tools may declare wrong dimensions; read to the real end.
        ws.reset_dimensions()
        cells = [list(r) for r in ws.iter_rows(values_only=True)]
    except Exception as exc:  # corrupt sheet XML surfaces only while iterating
        raise AnnotationError(
            f"{path.name}: cannot be read as an .xlsx workbook ({type(exc).__name__}: "
            f"{one_line(exc)[:120]}); re-save it as .xlsx or use a manifest CSV"
        ) from None
    finally:
        wb.close()

    header_at = None
    if find_header:
        anchors = [_header_key(n) for n in list(columns.values())[:2]]
        for i, row in enumerate(cells):
            keys = {_header_key(c) for c in row}
            if all(a in keys for a in anchors):
                header_at = i
                break
        if header_at is None:
            names = " and ".join(f"'{n}'" for n in list(columns.values())[:2])
            raise AnnotationError(
                f"{path.name}: no header row (a row holding {names}) in sheet '{title}'; "
                f"{_SHEET_HINT}"
            )
    else:
        header_at = next((i for i, r in enumerate(cells) if any(not is_blank(c) for c in r)), 0)
    header = cells[header_at] if cells else []
    index = match_columns(
        header, columns, optional, file=path.name, header_row=header_at + 1, hint=_SHEET_HINT
    )
    rows = []
    for i in range(header_at + 1, len(cells)):
        row = cells[i]
        if all(is_blank(c) for c in row):
            continue
        values = {k: row[j] if j < len(row) else None for k, j in index.items()}
        rows.append(SheetRow(i + 1, values))
    return Sheet(path, title, header_at + 1, rows)
