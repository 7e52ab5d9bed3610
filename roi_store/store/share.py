"""``pack``: a finished store as one zip file to send; it opens read-only where it arrives.

The zip holds the store's files at its top, byte for byte, without compression (every chunk is
already zstd-compressed and carries its crc32c checksum; the zip adds a CRC-32 per member).
``open_store("store.zip")`` reads it in place, ``roistore validate store.zip`` checks it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path

from roi_store.errors import StoreError
from roi_store.store.layout import PENDING
from roi_store.store.lock import LOCK, TAKEOVER
from roi_store.store.features import feature_summary
from roi_store.store.runs import list_runs
from roi_store.store.store import open_store

#: Run states that mean a command is still writing the run (or was killed while it did).
BUSY_STATES = ("running", "stalled", "incomplete")
#: A fixed member time, so that the same store always packs to the same bytes.
_EPOCH = (1980, 1, 1, 0, 0, 0)

#: Zarr writes each file as ``<name>.<random>.partial`` and renames it into place: a writer
#: killed mid-write leaves one behind, which no reader looks at.
PARTIAL_SUFFIX = ".partial"


@dataclasses.dataclass
class PackReport:
    """Outcome of :func:`pack_store`."""

    out: str
    files: int
    bytes: int
    clips: int
    runs: int
    forced: list[str]  # what --force packed anyway (pending clips, busy runs)


def pack_store(store_path: str | Path, out: str | Path, *, force: bool = False, overwrite: bool = False) -> PackReport:
    """Pack the store folder ``store_path`` into the zip file ``out``.

    The zip is written beside ``out`` under a temporary name and renamed into place once
    complete, so ``out`` is either the old file, or absent, or the whole new zip.

    Parameters
    ----------
    store_path : path
        A store folder (not a zip or a URL).
    out : path
        The zip file to write.
    force : bool
        Pack even if clips are pending (an interrupted ingest) or a run is still running.
    overwrite : bool
        Replace an existing ``out``.

    Returns
    -------
    PackReport

    Raises
    ------
    StoreError
        If the store is unfinished (without ``force``), ``out`` exists (without ``overwrite``)
        or lies inside the store, or the store folder holds links or special files.
    """
    store = open_store(store_path, mode="r")
    if store.source != "dir":
        raise StoreError(f"{store.where} is a {store.source}, not a store folder: pack the folder it came from")
    root = Path(store_path).resolve()
    out = Path(out)
    if out.resolve().is_relative_to(root):
        raise StoreError(f"{out} lies inside the store {store.where}: write the zip somewhere else")
    check_output(out, overwrite)

    pending = [r.id for r in store.records().values() if r.status == PENDING]
    runs = list_runs(store)
    unfinished = [f"run {r['name']!r} is {r['state']}" for r in runs if r.get("state") in BUSY_STATES]
    unfinished += [f"feature set {name!r} is {s['state']} (re-run its 'roistore flow')"
                   for name, s in feature_summary(store).items() if s["state"] != "complete"]
    if pending:
        many = len(pending) > 1
        unfinished.insert(0, f"{len(pending)} clip{'s are' if many else ' is'} pending ({pending[0]}"
                             f"{', ...' if many else ''})")
    if unfinished and not force:
        raise StoreError(f"{store.where} is not finished: {'; '.join(unfinished)}: re-run the interrupted ingest, "
                         "wait for the run to end (or delete it), or pass --force to pack it as it is")

    files = _store_files(root)
    total = 0
    with atomic_file(out) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for rel, path in files:
                info = zipfile.ZipInfo(rel, date_time=_EPOCH)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_STORED  # chunks are zstd already: no second pass
                info.file_size = path.stat().st_size  # lets zipfile choose ZIP64 only where needed
                with open(path, "rb") as src, zf.open(info, "w") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                total += info.file_size
        # What arrives must open: check the packed copy's header before it takes the name.
        open_store(tmp).close()
    return PackReport(out=str(out), files=len(files), bytes=total, clips=len(store.clips), runs=len(runs),
                      forced=unfinished)


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse to replace an existing file unless asked, or to write into a missing folder."""
    if out.exists() and not overwrite:
        raise StoreError(f"{out} exists: choose another file name or pass --overwrite")
    if not out.parent.is_dir():
        raise StoreError(f"folder {out.parent} does not exist: create it first")


@contextlib.contextmanager
def atomic_file(out: Path):
    """Yield a temporary file name beside ``out``; it becomes ``out`` only if the block succeeds.

    A reader of ``out`` never sees a half-written file, and an interrupted write leaves the old
    ``out`` (if any) as it was.
    """
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would keep a file meant to be shared private
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _store_files(root: Path) -> list[tuple[str, Path]]:
    """Every file of the store folder as (zip member name, path), sorted; links are refused."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode) or not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise StoreError(f"{path} is a link or a special file: a store folder holds plain files only; "
                                 "replace it with the file itself")
        for name in filenames:
            if name.endswith(PARTIAL_SUFFIX) or name in (LOCK, TAKEOVER) or \
                    (name.startswith(f"{LOCK}.") and name.endswith(".tmp")):
                continue  # a file whose writer was killed mid-write, or a writer's claim: never part of the store
            path = Path(dirpath) / name
            out.append((path.relative_to(root).as_posix(), path))
    return sorted(out)


__all__ = ["PackReport", "atomic_file", "check_output", "pack_store"]
