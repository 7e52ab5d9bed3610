"""Path safety: every folder and frame a reader touches resolves to a place inside the dataset root.

Symlinks out of the root, ``..`` and symlink loops become a recorded reason, never a read and
never a hang. Only links are followed (``os.path.realpath``) and folders listed; no file is
opened here, so a link that points out of the dataset is refused before any of its content is
touched.
"""

from __future__ import annotations

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
    if not os.path.isdir(path):  # a symlink loop or a permission problem reads the same to the user
        state = "is not a folder" if path.exists() else "not found"
        raise DatasetError(
            f"dataset root {str(path)!r} {state}: give the folder that holds the subject folders ({expected})"
        )
    return Path(os.path.realpath(path))


def escapes_root(path: Path, root: Path) -> bool:
    """True when ``path``, with every link and ``..`` resolved, lies outside ``root``."""
    real = Path(os.path.realpath(path))
    return real != root and not real.is_relative_to(root)


def outside_root(path: Path, root: Path) -> str | None:
    """Why ``path`` may not be read, or None when it resolves to a place inside ``root``.

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


def subdirs(folder: Path, root: Path) -> tuple[list[tuple[str, Path]], list[tuple[str, Path, str]]]:
    """The sub-folders of ``folder`` that are safe to enter, sorted by name.

    Hidden entries (``.DS_Store``, ``._sub01``) and plain files are ignored. Symlinks are
    followed only when they stay inside ``root``; those that leave it, loop or dangle are
    returned as ``(name, path, reason)`` so the reader can record them.

    Parameters
    ----------
    folder : Path
        A folder already known to be inside ``root``.
    root : Path
        The resolved dataset root.

    Returns
    -------
    (list of (name, Path), list of (name, Path, reason))
    """
    dirs: list[tuple[str, Path]] = []
    bad: list[tuple[str, Path, str]] = []
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        return [], [(folder.name, folder, f"cannot be listed ({one_line(exc.strerror)})")]
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = folder / entry.name
        reason = outside_root(path, root) if entry.is_symlink() else None
        try:
            if not reason and entry.is_dir():
                dirs.append((entry.name, path))
        except OSError as exc:
            reason = f"cannot be read ({one_line(exc.strerror)})"
        if reason:
            bad.append((entry.name, path, reason))
    return dirs, bad
