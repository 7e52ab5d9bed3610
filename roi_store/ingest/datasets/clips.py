"""Assembly: what a reader found (a folder and its annotation) made into ClipSpecs and Skips.

Every reader collects ``(sort key, item)`` pairs and hands them to :func:`emit_sorted`, which
yields them in ClipKey order and lists each clip's frames only when it is reached. What cannot
be a clip is named by :func:`skip_item` with the id every other clip of its subject has
(``casme2/sub01/...`` whether a sheet said ``01`` or a folder said ``sub01``), so a refused
clip is recorded once, under one id.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from pathlib import Path

from roi_store.ids import ClipKey, loose_parts
from roi_store.ingest.datasets.base import ClipSpec, Skip
from roi_store.ingest.datasets.frames import ClipProblem, list_frames, select_frames


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
        See :func:`~roi_store.ingest.datasets.frames.list_frames` and ``select_frames``.
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

#: A sort key (``(dataset, subject, clip)`` strings) and what to yield there.
Item = tuple[tuple[str, ...], Pending]


def emit_sorted(items: Iterable[Item], root: Path, fps: float) -> Iterator[ClipSpec | Skip]:
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


def key_order(key: ClipKey) -> tuple[str, ...]:
    """The sort key of a valid clip: its parts, in ClipKey's own field order."""
    return (key.dataset, key.subject, key.clip)


def key_skip(key: ClipKey, reason: str, source: str) -> tuple[tuple[str, ...], Skip]:
    """A Skip for a clip with a valid key (a duplicate, a row with no folder), with its sort key."""
    return key_order(key), Skip(key.id, reason, source)


def skip_item(
    dataset: object, subject: object, clip: object, reason: str, source: str
) -> tuple[tuple[str, ...], Skip]:
    """A Skip for what has no valid key, named and sorted as near canonical as it goes.

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
