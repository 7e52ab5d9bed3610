"""The coded datasets' reader: ``ROOT/subject/clip/`` frame folders joined with a coding sheet.

CASME II and SAMM differ only in what their modules declare in a :class:`CodedLayout` (sheet
name and columns, labels, frame rate, subject spelling); the join is written once, here. Each
clip folder and each sheet row ends as one ClipSpec or one Skip: a folder that cannot be a clip
and the sheet row that lists it make a single Skip, which names the row as its source.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

from roi_store.errors import AnnotationError, DatasetError
from roi_store.ids import ClipKey, SubjectSpelling, loose_parts, normalise_subject
from roi_store.ingest.datasets.base import ClipSpec, Skip
from roi_store.ingest.datasets.cells import (
    BadCell,
    cell_int,
    is_blank,
    normalise_emotion,
    parse_apex,
    parse_aus,
)
from roi_store.ingest.datasets.clips import (
    Annotation,
    Item,
    emit_sorted,
    key_order,
    key_skip,
    skip_item,
)
from roi_store.ingest.datasets.frames import ClipProblem
from roi_store.ingest.datasets.paths import resolve_root, subdirs
from roi_store.ingest.datasets.sheets import find_annotations, read_sheet


@dataclasses.dataclass(frozen=True)
class CodedLayout:
    """How one coded dataset is laid out: its sheet's name and columns, its labels, its fps."""

    dataset: str
    fps: float
    #: How subject folders and the sheet's subject cells spell subject ids.
    spelling: SubjectSpelling
    #: Glob for the default sheet, searched in ROOT's parent and ROOT.
    sheet_glob: str
    #: Required columns: key -> published name; keys subject, clip, onset, apex, offset,
    #: aus, emotion. "subject" and "clip" come first (they anchor header detection).
    columns: dict[str, str]
    known_emotions: frozenset[str]
    #: What ROOT is, for messages: e.g. "the CASME2_RAW_selected/ folder that holds sub01, ...".
    root_hint: str
    sheet: str | None = None
    find_header: bool = False


class CodedReader:
    """Reader of one coded dataset; a subclass sets ``layout`` (the dataset's declarations)."""

    layout: CodedLayout

    @property
    def name(self) -> str:
        return self.layout.dataset

    @property
    def fps(self) -> float:
        return self.layout.fps

    @property
    def spelling(self) -> SubjectSpelling:
        return self.layout.spelling

    @property
    def emotions(self) -> frozenset[str]:
        return self.layout.known_emotions

    def scan(self, root: Path, annotations: Path | None = None) -> Iterator[ClipSpec | Skip]:
        """Yield every coded clip under ``root`` in ClipKey order, or a Skip saying why not.

        Parameters
        ----------
        root : Path
            The folder holding the subject folders (``layout.root_hint`` says which).
        annotations : Path, optional
            The coding sheet; default: the newest-looking ``layout.sheet_glob`` match in the
            parent of ``root`` or in ``root``.

        Returns
        -------
        iterator of ClipSpec or Skip
            See :func:`scan_coded_dataset`.

        Raises
        ------
        DatasetError
            If ``root`` is missing or holds no subject folder.
        AnnotationError
            If the sheet is missing, unreadable, has no header row or lacks a column.
        """
        return scan_coded_dataset(self.layout, root, annotations)


def walk_subject_clip(
    root: Path, dataset: str, root_hint: str
) -> tuple[dict[ClipKey, Path], list[Item], dict[tuple[str, ...], Skip]]:
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
    (dict of ClipKey to Path, list of (sort key, Skip), dict of id parts to Skip)
        Clip folders by key (the first one when two spellings give the same key), Skips, and
        the Skips of clip folders that cannot be used (an invalid name, a symlink out, a loop)
        by their :func:`~roi_store.ids.loose_parts`, so that a sheet row for one of them adds
        its row to that Skip instead of making a second one.

    Raises
    ------
    DatasetError
        If ROOT holds no subject folder (usually: the wrong folder was given).
    """
    found: dict[ClipKey, Path] = {}
    items: list[Item] = []
    refused: dict[tuple[str, ...], Skip] = {}

    def skip(subject: str, clip: str, reason: str) -> None:
        parts, item = skip_item(dataset, subject, clip, reason, "folder name")
        items.append((parts, item))
        if clip:
            refused.setdefault(parts, item)

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
        for cname, cpath in clips:
            try:
                key = ClipKey.make(dataset, sname, cname)
            except AnnotationError as exc:
                skip(sname, cname, f"folder {cpath}: {exc}")
                continue
            if key in found:
                reason = f"folder {cpath} is the same clip as {found[key]}; the first is used"
                items.append(key_skip(key, reason, "folder name"))
                continue
            found[key] = cpath
    if n_subjects == 0:
        raise DatasetError(f"no {dataset} subject folders in {root}: give {root_hint}")
    return found, items, refused


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
        no row, and whatever :func:`~roi_store.ingest.datasets.clips.make_clip` refuses.

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
    folders, items, refused = walk_subject_clip(root, ds, layout.root_hint)
    # Subject folders as spelled on disk, so "no folder ..." names the path one would look at.
    subject_dirs = {k.subject: f.parent for k, f in folders.items()}
    cols = layout.columns
    first_row: dict[tuple[str, ...], int] = {}
    for row in sheet.rows:
        v = row.values
        where = sheet.where(row.number)
        subj, clip = v["subject"], v["clip"]
        if is_blank(subj) and is_blank(clip):
            continue  # a note or total line below the table
        blank = [cols[k] for k, cell in (("subject", subj), ("clip", clip)) if is_blank(cell)]
        if blank:
            # Merged cells read as blank in every row but the first of the merge.
            reason = (f"{where}: {blank[0]} is blank (a merged cell is blank below its first row): "
                      "write it in every row")
            items.append(skip_item(ds, subj, clip, reason, where))
            continue
        # Valid or not, a row is named by the id its folder would have: one clip, one record.
        parts = loose_parts(ds, subj, clip)
        if parts in first_row:
            reason = (f"{where}: duplicate of row {first_row[parts]} for the same clip; "
                      "the first row is used")
            items.append((parts, Skip("/".join(parts), reason, where)))
            continue
        first_row[parts] = row.number
        try:
            key: ClipKey | None = ClipKey.make(ds, subj, clip)
        except AnnotationError as exc:
            key, invalid = None, f"{where}: {exc}"
        folder = folders.pop(key, None) if key else None
        if folder is None and parts in refused:
            refused[parts].source = where  # the folder's own Skip already says why
            continue
        if key is None:
            items.append(skip_item(ds, subj, clip, invalid, where))
            continue
        if folder is None:
            expected = subject_dirs.get(key.subject, root / key.subject) / key.clip
            items.append(key_skip(key, f"listed in {where} but no folder {expected}", where))
            continue
        ann = _annotation(layout, v, where)
        if isinstance(ann, str):
            items.append(key_skip(key, ann, where))
        else:
            items.append((key_order(key), (key, folder, ann)))
    for key in folders:  # what is left on disk had no row
        reason = f"folder not in annotation sheet {sheet.path.name}"
        items.append(key_skip(key, reason, "folder name"))
    return emit_sorted(items, root, layout.fps)


def _annotation(layout: CodedLayout, v: dict[str, object], where: str) -> Annotation | str:
    """What a row says about its clip, or why its frame numbers cannot be used."""
    cols = layout.columns
    try:
        onset = _frame_cell(v["onset"], cols["onset"])
        offset = _frame_cell(v["offset"], cols["offset"])
    except ClipProblem as exc:
        return f"{where}: {exc}"
    if onset > offset:
        return f"{where}: onset {onset} > offset {offset}"
    apex, warnings = parse_apex(v["apex"], onset, offset, cols["apex"])
    aus, aus_raw = parse_aus(v["aus"])
    emotion, more = normalise_emotion(v["emotion"], layout.known_emotions, layout.dataset)
    return Annotation(emotion, where, aus, aus_raw, onset, apex, offset, warnings + more)


def _frame_cell(value: object, column: str) -> int:
    try:
        return cell_int(value)
    except BadCell as exc:
        raise ClipProblem(f"{column} {exc}") from None
