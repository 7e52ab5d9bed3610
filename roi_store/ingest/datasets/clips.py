"""Assembly: what a reader found (a folder and its annotation) made into ClipSpecs and Skips.

Readers find clip folders with :func:`walk_clip_folders` and hand ``(sort key, item)`` pairs, an
item being a Skip or a ClipSpec with no frames yet, to :func:`emit_sorted`, which yields them in
ClipKey order and lists each clip's frames only when it is reached. What cannot be a clip is
named by :func:`skip_item` with the id every other clip of its subject has (``casme2/sub01/...``
whether a sheet said ``01`` or a folder said ``sub01``), so a refused clip is recorded once,
under one id.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from roi_store.errors import AnnotationError, DatasetError
from roi_store.ids import ClipKey, loose_parts, normalise_subject
from roi_store.ingest.datasets.base import ClipSpec, Skip
from roi_store.ingest.datasets.frames import ClipProblem, list_frames, select_frames
from roi_store.ingest.datasets.paths import subdirs


#: A sort key (``(dataset, subject, clip)`` strings) and a Skip or a clip whose frames are still to be listed.
Item = tuple[tuple[str, ...], Skip | ClipSpec]


def emit_sorted(items: Iterable[Item], root: Path, apex_from_middle: bool = False) -> Iterator[ClipSpec | Skip]:
    """Yield items in ClipKey order, listing each clip's frames only when it is reached.

    A clip comes with its annotated range of frames selected, or as a Skip saying why it cannot
    (see :func:`~roi_store.ingest.datasets.frames.list_frames` and ``select_frames``).

    Parameters
    ----------
    items : iterable of (sort key, Skip or ClipSpec)
        Sort keys are ``(dataset, subject, clip)`` strings; ties keep their input order, so a
        sheet's first row comes before its duplicate. A ClipSpec has no frames yet; its folder
        lies lexically under ``root``.
    root : Path
        The resolved dataset root.
    apex_from_middle : bool
        No apex is annotated: use the middle frame on disk as the usual stand-in (SMIC).

    Yields
    ------
    ClipSpec or Skip
    """
    for _, item in sorted(items, key=lambda t: t[0]):
        if isinstance(item, Skip):
            yield item
            continue
        try:
            chosen = select_frames(list_frames(item.folder, root), item.onset, item.offset)
        except ClipProblem as exc:
            yield Skip(item.id, str(exc), item.source)
            continue
        warnings = item.warnings + chosen.warnings
        apex = item.apex
        if apex_from_middle:
            apex = chosen.numbers[len(chosen.numbers) // 2]
        elif apex is not None and apex not in set(chosen.numbers):
            warnings.append(f"apex frame {apex} missing on disk")
        yield dataclasses.replace(item, frames=chosen.paths, frame_numbers=chosen.numbers, apex=apex, warnings=warnings)


def skip_item(dataset: object, subject: object, clip: object, reason: str, source: str) -> Item:
    """A Skip named and sorted as near canonical as it goes (as its key, for a valid clip).

    Parameters
    ----------
    dataset, subject, clip : object
        As found (folder names, cells); ``clip`` is ``""`` for a subject folder.
    reason, source : str
        As for :class:`~roi_store.ingest.datasets.base.Skip`.

    Returns
    -------
    (tuple of str, Skip)
        The id parts from :func:`roi_store.ids.loose_parts` (the sort key) and the Skip.
    """
    parts = loose_parts(dataset, subject, clip)
    return parts, Skip("/".join(parts), reason, source)


def walk_clip_folders(
    root: Path, dataset: str, root_hint: str, groups: Callable[..., list[tuple[str, Path]]] | None = None,
    on_clip: Callable[[ClipKey, Path, str], ClipSpec] | None = None,
) -> tuple[dict[ClipKey, Path], list[Item], dict[tuple[str, ...], Skip]]:
    """Find every ``ROOT/subject/clip`` (or ``ROOT/subject/.../group/clip``) folder; record whatever cannot be one.

    Parameters
    ----------
    root : Path
        The resolved dataset root.
    dataset : str
        For subject/clip normalisation through :meth:`ClipKey.make`.
    root_hint : str
        For the error when ROOT holds no subject folder at all.
    groups : callable, optional
        ``groups(subject, folder, dirs, skip)``: the ``(group, folder)`` pairs that hold a subject's
        clip folders (SMIC's emotion folders), listed with ``dirs(folder, subject)``, refusing with
        ``skip(subject, clip, reason)``. Default: the subject folder itself, group ``""``.
    on_clip : callable, optional
        ``on_clip(key, folder, group)``: a clip's ClipSpec, added where the clip is found.

    Returns
    -------
    (dict of ClipKey to Path, list of Item, dict of id parts to Skip)
        Clip folders by key (the first one when two spellings give the same key), the items, and
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
        parts, skipped = skip_item(dataset, subject, clip, reason, "folder name")
        items.append((parts, skipped))
        if clip:
            refused.setdefault(parts, skipped)

    def dirs(folder: Path, subject: str = "") -> list[tuple[str, Path]]:
        listed, bad = subdirs(folder, root)
        for name, path, reason in bad:
            if subject:  # a clip folder
                skip(subject, name, f"folder {path} {reason}")
            else:
                skip(name, "", f"folder {path} {reason}")
        return listed

    n_subjects = 0
    for sname, spath in dirs(root):
        try:
            normalise_subject(dataset, sname)
        except AnnotationError:
            skip(sname, "", f"folder {spath} is not a {dataset} subject folder; ignored")
            continue
        n_subjects += 1
        for group, gpath in groups(sname, spath, dirs, skip) if groups else [("", spath)]:
            for cname, cpath in dirs(gpath, sname):
                try:
                    key = ClipKey.make(dataset, sname, cname)
                except AnnotationError as exc:
                    skip(sname, cname, f"folder {cpath}: {exc}")
                    continue
                if key in found:
                    reason = f"folder {cpath} is the same clip as {found[key]}; the first is used"
                    items.append(skip_item(dataset, sname, cname, reason, "folder name"))
                    continue
                found[key] = cpath
                if on_clip:
                    items.append((dataclasses.astuple(key), on_clip(key, cpath, group)))
    if n_subjects == 0:
        raise DatasetError(f"no {dataset} subject folders in {root}: give {root_hint}")
    return found, items, refused
