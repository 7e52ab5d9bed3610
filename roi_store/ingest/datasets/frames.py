"""Frame listing and selection: a clip folder's image files in true temporal order.

Image files only, ordered by the number in the name (never as text); stray files are ignored,
duplicate frame numbers and empty folders refused, gaps and partly missing annotated ranges
reported as warnings. Nothing is decoded: only names are read.

A clip that cannot be used raises :class:`ClipProblem`; the readers turn it into a
:class:`~roi_store.ingest.datasets.base.Skip` so that one bad clip never stops a scan.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from roi_store.ingest.datasets.base import IMAGE_SUFFIXES, frame_number, one_line
from roi_store.ingest.datasets.paths import escapes_root, outside_root

#: How many names or ranges a warning spells out before it says "and N more".
_LIST_LIMIT = 8


class ClipProblem(Exception):
    """Why one clip (or folder, or sheet row) cannot become a ClipSpec; becomes a Skip."""


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


def _ignored(names: Sequence[str], noun: str, why: str) -> str:
    more = f" and {len(names) - _LIST_LIMIT} more" if len(names) > _LIST_LIMIT else ""
    plural = "" if len(names) == 1 else "s"
    return f"ignored {len(names)} {noun}{plural} {why}: {', '.join(names[:_LIST_LIMIT])}{more}"


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
    if reason := outside_root(folder, root):
        raise ClipProblem(f"clip folder {reason}")
    if not folder.is_dir():
        raise ClipProblem(f"{folder} is not a folder")
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise ClipProblem(f"clip folder cannot be listed ({one_line(exc.strerror)})") from None

    by_number: dict[int, list[str]] = {}
    unnumbered: list[str] = []
    unreadable: list[str] = []
    for entry in entries:
        # Dot files include macOS "._img46.jpg" companions, which carry an image suffix and the
        # frame's number but no image: taking them would create false duplicates. Other suffixes
        # (Thumbs.db, notes.txt, ...) are not frames, not worth a warning.
        if entry.name.startswith(".") or Path(entry.name).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if entry.is_symlink() and escapes_root(folder / entry.name, root):
            raise ClipProblem(f"frame {entry.name} resolves to a place outside the dataset root (symlink); not read")
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
            f"two frame files share frame number {n}: {', '.join(clashes[n])}{more}; keep one file per frame"
        )
    warnings = []
    if unnumbered:
        warnings.append(_ignored(unnumbered, "image file", "with no frame number in the name"))
    if unreadable:
        warnings.append(
            _ignored(unreadable, "image name", "that cannot be read as a file (broken link, loop or folder)")
        )
    if not by_number:
        raise ClipProblem("no frame files in folder" + (f" ({'; '.join(warnings)})" if warnings else ""))
    numbers = sorted(by_number)
    return FrameListing(numbers, [folder / by_number[n][0] for n in numbers], warnings)


def select_frames(listing: FrameListing, onset: int | None = None, offset: int | None = None) -> FrameListing:
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
            raise ClipProblem(
                f"annotated frames {onset}-{offset} not on disk "
                f"(the folder holds frames {format_ranges([(listing.numbers[0], listing.numbers[-1])])})"
            )
        numbers, paths = (list(column) for column in zip(*kept))
        edges = [(a, b) for a, b in ((onset, numbers[0] - 1), (numbers[-1] + 1, offset)) if a <= b]
        if edges:
            warnings.append(f"annotated frames {format_ranges(edges)} missing on disk")
    # From neighbouring pairs, so a huge jump costs nothing to describe.
    gaps = [(a + 1, b - 1) for a, b in zip(numbers, numbers[1:]) if b - a > 1]
    if gaps:
        warnings.append(f"frames {format_ranges(gaps)} missing inside the clip")
    return FrameListing(numbers, paths, warnings)
