"""Path safety: every folder and frame a reader touches resolves to a place inside the dataset root.

Symlinks out of the root, ``..`` and symlink loops become a recorded reason, never a read and
never a hang. Only links are followed (``os.path.realpath``) and folders listed; no file is
opened here.
"""

from __future__ import annotations

import dataclasses
import errno
import os
from pathlib import Path

from roi_store.errors import DatasetError
from roi_store.ingest.datasets.base import one_line

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
        return [], [BadEntry(folder.name, folder, f"cannot be listed ({one_line(exc.strerror)})")]
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
            bad.append(BadEntry(entry.name, path, f"cannot be read ({one_line(exc.strerror)})"))
    return dirs, bad
