"""Rules every dataset reader shares, written once.

* **Path safety** -- :func:`resolve_root`, :func:`outside_root`, :func:`subdirs`: every folder
  and frame is resolved and must stay inside the dataset root; symlinks out of it, ``..`` and
  symlink loops become a recorded reason, never a read and never a hang.
* **Frame listing and selection** -- :func:`list_frames`, :func:`select_frames`: image files
  only, ordered by the number in the name (never as text), stray files ignored, duplicates and
  empty folders refused, gaps and partly missing annotated ranges reported as warnings.
* **Sheets** -- :func:`find_annotations`, :func:`read_sheet`, :func:`cell_int`,
  :func:`parse_apex`, :func:`parse_aus`, :func:`normalise_emotion`: columns found by name,
  formulas never evaluated, one-line errors that say what to do.
* **Assembly** -- :class:`Annotation`, :func:`make_clip`, :func:`scan_coded_dataset`,
  :func:`emit_sorted`: the sheet/disk join of the coded datasets (CASME II, SAMM) and the
  deterministic ordering of what every reader yields.

A clip that cannot be used raises :class:`ClipProblem` inside these helpers; the readers turn
it into a :class:`~roi_store.ingest.datasets.base.Skip` so that one bad clip never stops a scan.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import fnmatch
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from roi_store.ingest.datasets.base import IMAGE_SUFFIXES, ClipSpec, Skip, frame_number
from roi_store.errors import AnnotationError, DatasetError
from roi_store.ids import ClipKey, normalise_subject

#: How many names or ranges a warning spells out before it says "and N more".
_LIST_LIMIT = 8


class ClipProblem(Exception):
    """Why one clip (or folder, or sheet row) cannot become a ClipSpec; becomes a Skip."""


class BadCell(ValueError):
    """A sheet cell that does not hold what its column needs (the message says why)."""


# --------------------------------------------------------------------------------------------
# small text helpers


def format_ranges(ranges: Sequence[tuple[int, int]], limit: int = _LIST_LIMIT) -> str:
    """Spell inclusive integer ranges compactly: ``[(40, 45), (50, 50)]`` -> ``"40-45, 50"``.

    Parameters
    ----------
    ranges : sequence of (int, int)
        Inclusive ``(first, last)`` pairs, in order.
    limit : int
        At most this many ranges are written; the rest are counted.

    Returns
    -------
    str
    """
    parts = [str(a) if a == b else f"{a}-{b}" for a, b in ranges[:limit]]
    if len(ranges) > limit:
        parts.append(f"and {len(ranges) - limit} more")
    return ", ".join(parts)


def _names(names: Sequence[str], limit: int = _LIST_LIMIT) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _count(items: Sequence[object], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _one_line(text: object) -> str:
    # Messages must stay one line even when a header cell or an exception carries newlines.
    return " ".join(str(text).split())


def _show(value: object) -> str:
    text = _one_line(value)
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _cell_text(value: object) -> str:
    return "" if value is None else _one_line(value)


def is_blank(value: object) -> bool:
    """True for an empty cell: None or text made of blanks only."""
    return value is None or (isinstance(value, str) and not value.strip())


# --------------------------------------------------------------------------------------------
# path safety


def resolve_root(root: Path | str, *, expected: str) -> Path:
    """The dataset root, fully resolved, or a one-line DatasetError.

    Parameters
    ----------
    root : path
        The folder that holds the subject folders.
    expected : str
        What the folder should be, for the message (e.g. ``"CASME2_RAW_selected/"``).

    Returns
    -------
    Path
        The real path (symlinks resolved), against which every clip path is checked.

    Raises
    ------
    DatasetError
        If the folder does not exist or is not a folder.
    """
    path = Path(root).expanduser()
    try:
        ok = path.is_dir()
    except OSError:  # a symlink loop or a permission problem reads the same to the user
        ok = False
    if not ok:
        state = "is not a folder" if path.exists() else "not found"
        raise DatasetError(
            f"dataset root {str(path)!r} {state}: give the folder that holds the subject "
            f"folders ({expected})"
        )
    return Path(os.path.realpath(path))


def escapes_root(path: Path, root: Path) -> bool:
    """True when ``path``, with every link and ``..`` resolved, lies outside ``root``."""
    real = Path(os.path.realpath(path))
    return real != root and not real.is_relative_to(root)


def outside_root(path: Path, root: Path) -> str | None:
    """Why ``path`` may not be read, or None when it resolves to a place inside ``root``.

    Only links are followed (``os.path.realpath``); nothing is opened, so a link that points
    out of the dataset is refused before any of its content is touched, and a link loop ends
    in a reason instead of a hang.

    Parameters
    ----------
    path : Path
        A path under ``root`` (lexically).
    root : Path
        The resolved dataset root.

    Returns
    -------
    str or None
    """
    if escapes_root(path, root):
        return "resolves to a place outside the dataset root (symlink or '..'); not read"
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symlink loop"
        return "is a broken symlink" if os.path.islink(path) else "does not exist"
    return None


@dataclasses.dataclass
class BadEntry:
    """A folder entry that could not be followed safely."""

    name: str
    path: Path
    reason: str


def subdirs(folder: Path, root: Path) -> tuple[list[tuple[str, Path]], list[BadEntry]]:
    """The sub-folders of ``folder`` that are safe to enter, sorted by name.

    Hidden entries (``.DS_Store``, ``._sub01``) and plain files are ignored. Symlinks are
    followed only when they stay inside ``root``; those that leave it, loop or dangle are
    returned as :class:`BadEntry` so the reader can record them.

    Parameters
    ----------
    folder : Path
        A folder already known to be inside ``root``.
    root : Path
        The resolved dataset root.

    Returns
    -------
    (list of (name, Path), list of BadEntry)
    """
    dirs: list[tuple[str, Path]] = []
    bad: list[BadEntry] = []
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        return [], [BadEntry(folder.name, folder, f"cannot be listed ({_one_line(exc.strerror)})")]
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = folder / entry.name
        if entry.is_symlink():
            reason = outside_root(path, root)
            if reason:
                bad.append(BadEntry(entry.name, path, reason))
                continue
        try:
            if entry.is_dir():
                dirs.append((entry.name, path))
        except OSError as exc:
            bad.append(BadEntry(entry.name, path, f"cannot be read ({_one_line(exc.strerror)})"))
    return dirs, bad


# --------------------------------------------------------------------------------------------
# frames


@dataclasses.dataclass
class FrameListing:
    """A clip folder's frames in temporal order, plus what listing them had to say."""

    numbers: list[int]
    paths: list[Path]
    warnings: list[str]


def list_frames(folder: Path, root: Path) -> FrameListing:
    """List a clip folder's frame files in true temporal order; never opens a file.

    Parameters
    ----------
    folder : Path
        The clip folder (lexically under ``root``).
    root : Path
        The resolved dataset root.

    Returns
    -------
    FrameListing
        Frames sorted by :func:`~roi_store.ingest.datasets.base.frame_number` (``img99`` before
        ``img100``). Files with no number in the name are left out with a warning.

    Raises
    ------
    ClipProblem
        If the folder resolves outside ``root``, a frame is a symlink out of it, two files
        share a frame number, or no frame file is left.
    """
    reason = outside_root(folder, root)
    if reason:
        raise ClipProblem(f"clip folder {reason}")
    if not folder.is_dir():
        raise ClipProblem(f"{folder} is not a folder")
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise ClipProblem(f"clip folder cannot be listed ({_one_line(exc.strerror)})") from None

    by_number: dict[int, list[str]] = {}
    unnumbered: list[str] = []
    unreadable: list[str] = []
    for entry in entries:
        # Dot files include macOS "._img46.jpg" companions, which carry an image suffix and the
        # frame's number but no image: taking them would create false duplicates.
        if entry.name.startswith("."):
            continue
        if Path(entry.name).suffix.lower() not in IMAGE_SUFFIXES:
            continue  # Thumbs.db, notes.txt, ...: not frames, not worth a warning
        if entry.is_symlink() and escapes_root(folder / entry.name, root):
            raise ClipProblem(
                f"frame {entry.name} resolves to a place outside the dataset root (symlink); "
                "not read"
            )
        try:
            regular = entry.is_file()
        except OSError:
            regular = False
        if not regular:
            unreadable.append(entry.name)
            continue
        number = frame_number(Path(entry.name))
        if number is None:
            unnumbered.append(entry.name)
            continue
        by_number.setdefault(number, []).append(entry.name)

    clashes = {n: names for n, names in by_number.items() if len(names) > 1}
    if clashes:
        n = min(clashes)
        more = f" (and {len(clashes) - 1} more numbers)" if len(clashes) > 1 else ""
        raise ClipProblem(
            f"two frame files share frame number {n}: {', '.join(clashes[n])}{more}; "
            "keep one file per frame"
        )
    warnings = []
    if unnumbered:
        warnings.append(
            f"ignored {_count(unnumbered, 'image file')} with no frame number in the name: "
            f"{_names(unnumbered)}"
        )
    if unreadable:
        warnings.append(
            f"ignored {_count(unreadable, 'image name')} that cannot be read as a file "
            f"(broken link, loop or folder): {_names(unreadable)}"
        )
    if not by_number:
        raise ClipProblem(
            "no frame files in folder"
            + (f" ({'; '.join(warnings)})" if warnings else "")
        )
    numbers = sorted(by_number)
    return FrameListing(numbers, [folder / by_number[n][0] for n in numbers], warnings)


def _gaps(numbers: Sequence[int]) -> list[tuple[int, int]]:
    # From neighbouring pairs, so a huge jump costs nothing to describe.
    return [(a + 1, b - 1) for a, b in zip(numbers, numbers[1:]) if b - a > 1]


def select_frames(
    listing: FrameListing, onset: int | None = None, offset: int | None = None
) -> FrameListing:
    """Keep the frames whose number lies in ``[onset, offset]`` (all frames if not given).

    Parameters
    ----------
    listing : FrameListing
        The folder's frames, from :func:`list_frames`.
    onset, offset : int or None
        The annotated range, inclusive; both or neither.

    Returns
    -------
    FrameListing
        The selected frames, with warnings for annotated frames missing at either end
        (``"annotated frames 40-45 missing on disk"``) and for gaps inside the selected run
        (``"frames 50, 53-55 missing inside the clip"``).

    Raises
    ------
    ClipProblem
        If no frame of the annotated range is on disk.
    """
    warnings = list(listing.warnings)
    if onset is None or offset is None:
        numbers, paths = list(listing.numbers), list(listing.paths)
    else:
        kept = [(n, p) for n, p in zip(listing.numbers, listing.paths) if onset <= n <= offset]
        if not kept:
            have = listing.numbers
            raise ClipProblem(
                f"annotated frames {onset}-{offset} not on disk "
                f"(the folder holds frames {format_ranges([(have[0], have[-1])])})"
            )
        numbers = [n for n, _ in kept]
        paths = [p for _, p in kept]
        edges = []
        if numbers[0] > onset:
            edges.append((onset, numbers[0] - 1))
        if numbers[-1] < offset:
            edges.append((numbers[-1] + 1, offset))
        if edges:
            warnings.append(f"annotated frames {format_ranges(edges)} missing on disk")
    gaps = _gaps(numbers)
    if gaps:
        warnings.append(f"frames {format_ranges(gaps)} missing inside the clip")
    return FrameListing(numbers, paths, warnings)


# --------------------------------------------------------------------------------------------
# sheets


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


def header_key(value: object) -> str:
    """A header name without case, blanks or punctuation: ``Onset Frame`` = ``OnsetFrame``."""
    return re.sub(r"[^a-z0-9]", "", str(value).lower()) if value is not None else ""


def missing_columns_message(
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
        first.setdefault(header_key(cell), i)  # blank header columns map to "" and are unused
    missing = [name for name in columns.values() if header_key(name) not in first]
    if missing:
        found = [_one_line(c) for c in header if not is_blank(c)]
        raise AnnotationError(missing_columns_message(file, missing, header_row, found, hint))
    wanted = {**columns, **optional}
    return {k: first[header_key(name)] for k, name in wanted.items() if header_key(name) in first}


SHEET_HINT = "use the coding sheet published with the dataset or a manifest CSV"

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
    formula text (``"=F15-D15"``), which :func:`cell_int` refuses, so a cached or recomputed
    value can never slip in.

    Parameters
    ----------
    path : Path
        The .xlsx file.
    columns : dict of str to str
        Required columns: key -> published name. Matched by :func:`header_key`.
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
            f"{_one_line(exc)[:120]}); re-save it as .xlsx or use a manifest CSV"
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
            f"{_one_line(exc)[:120]}); re-save it as .xlsx or use a manifest CSV"
        ) from None
    finally:
        wb.close()

    header_at = None
    if find_header:
        anchors = [header_key(n) for n in list(columns.values())[:2]]
        for i, row in enumerate(cells):
            keys = {header_key(c) for c in row}
            if all(a in keys for a in anchors):
                header_at = i
                break
        if header_at is None:
            names = " and ".join(f"'{n}'" for n in list(columns.values())[:2])
            raise AnnotationError(
                f"{path.name}: no header row (a row holding {names}) in sheet '{title}'; "
                f"{SHEET_HINT}"
            )
    else:
        header_at = next((i for i, r in enumerate(cells) if any(not is_blank(c) for c in r)), 0)
    header = cells[header_at] if cells else []
    index = match_columns(
        header, columns, optional, file=path.name, header_row=header_at + 1, hint=SHEET_HINT
    )
    rows = []
    for i in range(header_at + 1, len(cells)):
        row = cells[i]
        if all(is_blank(c) for c in row):
            continue
        values = {k: row[j] if j < len(row) else None for k, j in index.items()}
        rows.append(SheetRow(i + 1, values))
    return Sheet(path, title, header_at + 1, rows)


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
    if isinstance(value, int):
        return _not_negative(value)
    if isinstance(value, float):
        if value.is_integer():
            return _not_negative(int(value))
        raise BadCell(f"holds {value!r}, not a whole frame number")
    if isinstance(value, (datetime.date, datetime.time, datetime.timedelta)):
        raise BadCell(f"holds a date/time ({value}), not a frame number")
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("="):
            raise BadCell(f"holds a formula ({_show(text)}); formulas are not evaluated")
        if _WHOLE.match(text):
            return _not_negative(int(float(text)))
        raise BadCell(f"holds {_show(text)}, not a frame number")
    raise BadCell(f"holds {_show(value)} ({type(value).__name__}), not a frame number")


def _not_negative(number: int) -> int:
    if number < 0:
        raise BadCell(f"holds {number}, not a frame number (frame numbers are 0 or more)")
    return number


def parse_apex(
    value: object, onset: int | None, offset: int | None, column: str
) -> tuple[int | None, list[str]]:
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
    raw = _one_line(value)
    aus: list[str] = []
    for token in re.split(r"[+,;/&\s]+", raw):
        token = token.strip("()[]{}?*")
        if token and token.lower() not in {"or", "and"} and token not in aus:
            aus.append(token)
    return aus, raw


def normalise_emotion(
    value: object, known: Iterable[str] | None, dataset: str
) -> tuple[str, list[str]]:
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
    given = "" if value is None else " ".join(str(value).split())
    text = given.lower()  # "Others"/"others" and "Happiness"/"happiness" must compare equal
    if not text:
        return "", ["emotion not given"]
    labels = sorted(known) if known is not None else None
    if labels is not None and text not in labels:
        return text, [
            f"emotion {given!r} is not one of the {dataset} labels ({', '.join(labels)}); "
            f"kept as {text!r}"
        ]
    return text, []


# --------------------------------------------------------------------------------------------
# assembling clips


@dataclasses.dataclass
class Annotation:
    """What a sheet row, manifest row or folder name says about one clip."""

    emotion: str
    source: str
    aus: list[str] = dataclasses.field(default_factory=list)
    aus_raw: str = ""
    onset: int | None = None
    apex: int | None = None
    offset: int | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    #: No apex annotated: use the middle frame on disk as the usual stand-in (SMIC).
    apex_from_middle: bool = False
    #: This clip's own frame rate (manifest rows); None means the reader's.
    fps: float | None = None


def make_clip(key: ClipKey, folder: Path, root: Path, fps: float, ann: Annotation) -> ClipSpec:
    """List a clip's frames, select its annotated range and build the ClipSpec.

    Parameters
    ----------
    key : ClipKey
    folder : Path
        The clip folder, lexically under ``root``.
    root : Path
        The resolved dataset root.
    fps : float
    ann : Annotation

    Returns
    -------
    ClipSpec

    Raises
    ------
    ClipProblem
        See :func:`list_frames` and :func:`select_frames`.
    """
    chosen = select_frames(list_frames(folder, root), ann.onset, ann.offset)
    warnings = list(ann.warnings) + chosen.warnings
    apex = ann.apex
    if ann.apex_from_middle:
        apex = chosen.numbers[len(chosen.numbers) // 2]
    elif apex is not None and apex not in set(chosen.numbers):
        warnings.append(f"apex frame {apex} missing on disk")
    return ClipSpec(
        key=key,
        folder=folder,
        frames=chosen.paths,
        frame_numbers=chosen.numbers,
        fps=float(fps),
        emotion=ann.emotion,
        aus=list(ann.aus),
        onset=ann.onset,
        apex=apex,
        offset=ann.offset,
        source=ann.source,
        warnings=warnings,
        aus_raw=ann.aus_raw,
    )


#: What :func:`emit_sorted` takes: a finished Skip, or a clip still to be listed.
Pending = Skip | tuple[ClipKey, Path, Annotation]


def emit_sorted(
    items: Iterable[tuple[tuple[str, ...], Pending]], root: Path, fps: float
) -> Iterator[ClipSpec | Skip]:
    """Yield items in ClipKey order, listing each clip's frames only when it is reached.

    Parameters
    ----------
    items : iterable of (sort key, Skip or (ClipKey, folder, Annotation))
        Sort keys are ``(dataset, subject, clip)`` strings; ties keep their input order, so a
        sheet's first row comes before its duplicate.
    root : Path
        The resolved dataset root.
    fps : float
        Frame rate for every clip (a manifest passes each clip's own via its Annotation).

    Yields
    ------
    ClipSpec or Skip
    """
    ordered = sorted(enumerate(items), key=lambda t: (t[1][0], t[0]))
    for _, (_, item) in ordered:
        if isinstance(item, Skip):
            yield item
            continue
        key, folder, ann = item
        try:
            yield make_clip(key, folder, root, ann.fps or fps, ann)
        except ClipProblem as exc:
            yield Skip(key.id, str(exc), ann.source)


def sort_key(dataset: str, subject: object, clip: object = "") -> tuple[str, ...]:
    """Sort key for items without a valid ClipKey; matches ClipKey's own field order."""
    return (dataset, _one_line(subject), _one_line(clip))


def _key_order(key: ClipKey) -> tuple[str, ...]:
    return (key.dataset, key.subject, key.clip)


# --------------------------------------------------------------------------------------------
# the coded datasets (a sheet + ROOT/subject/clip/frames)


@dataclasses.dataclass(frozen=True)
class CodedLayout:
    """How one coded dataset is laid out: its sheet's name and columns, its labels, its fps."""

    dataset: str
    fps: float
    #: Glob for the default sheet, searched in ROOT's parent and ROOT.
    sheet_glob: str
    #: Required columns: key -> published name; keys subject, clip, onset, apex, offset,
    #: aus, emotion. "subject" and "clip" come first (they anchor header detection).
    columns: dict[str, str]
    known_emotions: frozenset[str]
    #: What ROOT is, for messages: e.g. "CASME2_RAW_selected/ holding sub01, sub02, ...".
    root_hint: str
    sheet: str | None = None
    find_header: bool = False


def walk_subject_clip(
    root: Path, dataset: str, root_hint: str
) -> tuple[dict[ClipKey, Path], list[tuple[tuple[str, ...], Skip]], dict[ClipKey, Skip]]:
    """Find every ``ROOT/subject/clip`` folder; record whatever cannot be one.

    Parameters
    ----------
    root : Path
        The resolved dataset root.
    dataset : str
        For subject/clip normalisation through :meth:`ClipKey.make`.
    root_hint : str
        For the error when ROOT holds no subject folder at all.

    Returns
    -------
    (dict of ClipKey to Path, list of (sort key, Skip), dict of ClipKey to Skip)
        Clip folders by key (the first one when two spellings give the same key), Skips, and
        the Skips of clip entries that could not be entered (symlink out, loop), by key, so a
        sheet row for one of them adds its row to that Skip instead of a second Skip.

    Raises
    ------
    DatasetError
        If ROOT holds no subject folder (usually: the wrong folder was given).
    """
    found: dict[ClipKey, Path] = {}
    skips: list[tuple[tuple[str, ...], Skip]] = []
    blocked: dict[ClipKey, Skip] = {}

    def skip(subject: str, clip: str, reason: str) -> None:
        sid = f"{dataset}/{subject}" + (f"/{clip}" if clip else "")
        skips.append((sort_key(dataset, subject, clip), Skip(sid, reason, "folder name")))

    subjects, bad = subdirs(root, root)
    for b in bad:
        skip(b.name, "", f"folder {b.path} {b.reason}")
    n_subjects = 0
    for sname, spath in subjects:
        try:
            normalise_subject(dataset, sname)
        except AnnotationError:
            skip(sname, "", f"folder {spath} is not a {dataset} subject folder; ignored")
            continue
        n_subjects += 1
        clips, bad = subdirs(spath, root)
        for b in bad:
            skip(sname, b.name, f"folder {b.path} {b.reason}")
            try:
                blocked.setdefault(ClipKey.make(dataset, sname, b.name), skips[-1][1])
            except AnnotationError:
                pass  # not even a clip name: the Skip above says enough
        for cname, cpath in clips:
            try:
                key = ClipKey.make(dataset, sname, cname)
            except AnnotationError as exc:
                skip(sname, cname, f"folder {cpath}: {exc}")
                continue
            if key in found:
                reason = f"folder {cpath} is the same clip as {found[key]}; the first is used"
                skips.append((_key_order(key), Skip(key.id, reason, "folder name")))
                continue
            found[key] = cpath
    if n_subjects == 0:
        raise DatasetError(f"no {dataset} subject folders in {root}: give {root_hint}")
    return found, skips, blocked


def scan_coded_dataset(
    layout: CodedLayout, root: Path | str, annotations: Path | str | None
) -> Iterator[ClipSpec | Skip]:
    """Join a coded dataset's sheet with its folders and yield clips in ClipKey order.

    The root, the sheet and the folder tree are checked when this is called (errors raise
    here); frames are listed lazily, clip by clip, as the iterator is consumed.

    Parameters
    ----------
    layout : CodedLayout
    root : path
        The folder holding the subject folders.
    annotations : path or None
        The coding sheet; None searches ``layout.sheet_glob`` beside and inside ``root``.

    Returns
    -------
    iterator of ClipSpec or Skip
        A Skip for: rows whose subject, clip or frame numbers are unusable (naming the row),
        onset > offset, duplicate rows (the first is used), rows with no folder, folders with
        no row, and whatever :func:`make_clip` refuses.

    Raises
    ------
    DatasetError
        If ``root`` is missing or holds no subject folder.
    AnnotationError
        If the sheet is missing, unreadable, or lacks a required column.
    """
    ds = layout.dataset
    root = resolve_root(root, expected=layout.root_hint)
    if annotations is None:
        sheet_path = find_annotations(root, layout.sheet_glob)
    else:
        sheet_path = Path(annotations)
    sheet = read_sheet(
        sheet_path, layout.columns, sheet=layout.sheet, find_header=layout.find_header
    )
    folders, items, blocked = walk_subject_clip(root, ds, layout.root_hint)
    # Subject folders as spelled on disk, so "no folder ..." names the path one would look at.
    subject_dirs = {k.subject: f.parent for k, f in folders.items()}
    cols = layout.columns
    first_row: dict[ClipKey, int] = {}
    for row in sheet.rows:
        v = row.values
        where = sheet.where(row.number)
        subj, clip = v["subject"], v["clip"]
        if is_blank(subj) and is_blank(clip):
            continue  # a note or total line below the table
        sid = f"{ds}/{_cell_text(subj)}/{_cell_text(clip)}"
        blank = [cols[k] for k, cell in (("subject", subj), ("clip", clip)) if is_blank(cell)]
        if blank:
            # Merged cells read as blank in every row but the first of the merge.
            reason = (f"{where}: {blank[0]} is blank (a merged cell is blank below its first row): "
                      "write it in every row")
            items.append((sort_key(ds, _cell_text(subj), _cell_text(clip)), Skip(sid, reason, where)))
            continue
        try:
            key = ClipKey.make(ds, subj, clip)
        except AnnotationError as exc:
            items.append((sort_key(ds, subj, clip), Skip(sid, f"{where}: {exc}", where)))
            continue

        def skip(reason: str) -> None:
            items.append((_key_order(key), Skip(key.id, reason, where)))

        if key in first_row:
            skip(f"{where}: duplicate of row {first_row[key]} for the same clip; "
                 "the first row is used")
            continue
        first_row[key] = row.number
        folder = folders.pop(key, None)
        if folder is None and key in blocked:
            blocked[key].source = where  # the folder's own Skip already says why
            continue
        if folder is None:
            expected = subject_dirs.get(key.subject, root / key.subject) / key.clip
            skip(f"listed in {where} but no folder {expected}")
            continue
        try:
            onset = _frame_cell(v["onset"], cols["onset"])
            offset = _frame_cell(v["offset"], cols["offset"])
        except ClipProblem as exc:
            skip(f"{where}: {exc}")
            continue
        if onset > offset:
            skip(f"{where}: onset {onset} > offset {offset}")
            continue
        apex, warnings = parse_apex(v["apex"], onset, offset, cols["apex"])
        aus, aus_raw = parse_aus(v["aus"])
        emotion, more = normalise_emotion(v["emotion"], layout.known_emotions, ds)
        ann = Annotation(emotion, where, aus, aus_raw, onset, apex, offset, warnings + more)
        items.append((_key_order(key), (key, folder, ann)))
    for key in folders:  # what is left on disk had no row
        reason = f"folder not in annotation sheet {sheet.path.name}"
        items.append((_key_order(key), Skip(key.id, reason, "folder name")))
    return emit_sorted(items, root, layout.fps)


def _frame_cell(value: object, column: str) -> int:
    try:
        return cell_int(value)
    except BadCell as exc:
        raise ClipProblem(f"{column} {exc}") from None
