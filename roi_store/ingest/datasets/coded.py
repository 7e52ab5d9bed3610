"""The coded datasets' reader: ``ROOT/subject/clip/`` frame folders joined with a coding sheet.

CASME II and SAMM differ only in what their modules declare on a :class:`CodedReader` (sheet
name and columns, labels, frame rate, subject spelling); the join is written once, here. Each
clip folder and each sheet row ends as one ClipSpec or one Skip: a folder that cannot be a clip
and the sheet row that lists it make a single Skip, which names the row as its source.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from roi_store.errors import AnnotationError
from roi_store.ids import ClipKey, loose_parts
from roi_store.ingest.datasets.base import ClipSpec, DatasetReader, Skip
from roi_store.ingest.datasets.cells import (BadCell, cell_int, find_annotations, is_blank, normalise_emotion,
                                             parse_apex, parse_aus, read_sheet)
from roi_store.ingest.datasets.clips import emit_sorted, skip_item, walk_clip_folders
from roi_store.ingest.datasets.paths import resolve_root


class CodedReader(DatasetReader):
    """Reader of one coded dataset; a subclass declares the dataset's layout as class attributes.

    ``name``, ``fps``, ``spelling`` (how subject folders and the sheet's subject cells spell
    subject ids) and ``emotions`` (its labels, lower case) are the dataset's; the rest say
    where its sheet is and how to read it.
    """

    #: Glob for the default sheet, searched in ROOT's parent and ROOT.
    sheet_glob: str
    #: Required columns: key -> published name; keys subject, clip, onset, apex, offset,
    #: aus, emotion. "subject" and "clip" come first (they anchor header detection).
    columns: dict[str, str]
    #: What ROOT is, for messages: e.g. "the CASME2_RAW_selected/ folder that holds sub01, ...".
    root_hint: str
    #: The worksheet to use when the workbook has it (else the first visible one).
    sheet: str | None = None
    #: Whether the header is found by its subject and clip cells (else: the first non-empty row).
    find_header: bool = False

    def scan(self, root: Path | str, annotations: Path | str | None = None) -> Iterator[ClipSpec | Skip]:
        """Join the dataset's sheet with its folders and yield clips in ClipKey order.

        The root, the sheet and the folder tree are checked when this is called (errors raise
        here); frames are listed lazily, clip by clip, as the iterator is consumed.

        Parameters
        ----------
        root : path
            The folder holding the subject folders (``root_hint`` says which).
        annotations : path, optional
            The coding sheet; default: the newest-looking ``sheet_glob`` match in the parent of
            ``root`` or in ``root``.

        Returns
        -------
        iterator of ClipSpec or Skip
            A Skip for: rows whose subject, clip or frame numbers are unusable (naming the row),
            onset > offset, duplicate rows (the first is used), rows with no folder, folders with
            no row, and whatever :func:`~roi_store.ingest.datasets.clips.emit_sorted` refuses.

        Raises
        ------
        DatasetError
            If ``root`` is missing or holds no subject folder.
        AnnotationError
            If the sheet is missing, unreadable, has no header row or lacks a column.
        """
        ds = self.name
        root = resolve_root(root, expected=self.root_hint)
        sheet_path = find_annotations(root, self.sheet_glob) if annotations is None else Path(annotations)
        rows = read_sheet(sheet_path, self.columns, sheet=self.sheet, find_header=self.find_header)
        folders, items, refused = walk_clip_folders(root, ds, self.root_hint)
        # Subject folders as spelled on disk, so "no folder ..." names the path one would look at.
        subject_dirs = {k.subject: f.parent for k, f in folders.items()}
        first_row: dict[tuple[str, ...], int] = {}
        for number, v in rows:
            where = f"{sheet_path.name} row {number}"
            subj, clip = v["subject"], v["clip"]
            if is_blank(subj) and is_blank(clip):
                continue  # a note or total line below the table
            # Valid or not, a row is named by the id its folder would have: one clip, one record.
            parts = loose_parts(ds, subj, clip)
            blank = [self.columns[k] for k, cell in (("subject", subj), ("clip", clip)) if is_blank(cell)]
            if blank:
                # Merged cells read as blank in every row but the first of the merge.
                made = (f"{where}: {blank[0]} is blank (a merged cell is blank below its first row): "
                        "write it in every row")
            elif (first := first_row.setdefault(parts, number)) != number:
                made = f"{where}: duplicate of row {first} for the same clip; the first row is used"
            else:
                try:
                    key = ClipKey.make(ds, subj, clip)
                except AnnotationError as exc:
                    key, made = None, f"{where}: {exc}"
                folder = folders.pop(key, None)
                if folder is None and parts in refused:
                    refused[parts].source = where  # the folder's own Skip already says why
                    continue
                if folder is not None:
                    made = self._clip(key, folder, v, where)
                elif key is not None:
                    expected = subject_dirs.get(key.subject, root / key.subject) / key.clip
                    made = f"listed in {where} but no folder {expected}"
            # The row's clip, or why it has none: for a valid clip, parts are its key's parts.
            items.append((parts, made if isinstance(made, ClipSpec) else Skip("/".join(parts), made, where)))
        for key in folders:  # what is left on disk had no row
            reason = f"folder not in annotation sheet {sheet_path.name}"
            items.append(skip_item(ds, key.subject, key.clip, reason, "folder name"))
        return emit_sorted(items, root)

    def _clip(self, key: ClipKey, folder: Path, v: dict[str, object], where: str) -> ClipSpec | str:
        """What a row says about its clip (no frames listed yet), or why its frame numbers cannot be used."""
        frames = {}
        for k in ("onset", "offset"):
            try:
                frames[k] = cell_int(v[k])
            except BadCell as exc:
                return f"{where}: {self.columns[k]} {exc}"
        onset, offset = frames["onset"], frames["offset"]
        if onset > offset:
            return f"{where}: onset {onset} > offset {offset}"
        apex, warnings = parse_apex(v["apex"], onset, offset, self.columns["apex"])
        aus, aus_raw = parse_aus(v["aus"])
        emotion, more = normalise_emotion(v["emotion"], self.emotions, self.name)
        return ClipSpec(key, folder, [], [], self.fps, emotion, aus=aus, onset=onset, apex=apex, offset=offset,
                        source=where, warnings=warnings + more, aus_raw=aus_raw)
