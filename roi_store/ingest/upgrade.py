"""``roistore upgrade``: a format 1 store made format 2 in place, its whole-face crops cut from the source frames.

Format 2 adds the aligned whole-face crop of every frame (array ``face``), which flow feature
sets are computed from. A format 1 store has the landmarks of every clip but not those pixels,
so the upgrade reads each clip's frames again from the dataset folders its ingests recorded
(no face is detected again: the recorded landmarks place the crop, as ingest would have). Only
then does the header say format 2; an interrupted upgrade leaves a format 1 store that a second
run upgrades.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path

import numpy as np

from roi_store import parallel
from roi_store.errors import StoreBusyError, StoreError
from roi_store.ingest import regions as rg
from roi_store.ingest.decode import read_grey_window
from roi_store.store import format as fmt
from roi_store.store import lock as locks
from roi_store.store.layout import FACE, write_clip_frames
from roi_store.store.store import create_clip_array, local_store_path, open_store


@dataclasses.dataclass
class UpgradeReport:
    """What one ``upgrade`` call did."""

    store: str
    old_version: int
    new_version: int
    clips: int  # clips whose face crops were cut
    frames: int
    seconds: float


def _source_folder(rec, roots: dict[str, list[str]]) -> Path | None:
    for root in roots.get(rec.dataset, []):
        folder = Path(root) / rec["folder"]
        if folder.is_dir():
            return folder
    return None


def upgrade_store(store_path: str | Path, *, jobs: int = 1, scheduler: str | None = None,
                  progress: bool = False) -> UpgradeReport:
    """Upgrade a format 1 store in place to the current format (format 2: whole-face crops).

    Parameters
    ----------
    store_path : path
        The store folder.
    jobs, scheduler
        Where clips are cut (as ``ingest``).
    progress : bool
        A progress bar on stderr.

    Returns
    -------
    UpgradeReport
        ``clips`` 0 when the store was already current.

    Raises
    ------
    StoreError
        If a clip's source frames are no longer where its ingest found them (named, with what
        to do), or the store is busy.
    """
    started = time.perf_counter()
    store_path = local_store_path(store_path)
    parallel.check(jobs, scheduler)
    lock = locks.acquire(store_path, f"store {store_path}", "roistore upgrade", busy=StoreBusyError,
                         hint="or upgrade a copy")
    try:
        store = open_store(store_path, mode="r+")
        old = store.header["format_version"]
        if FACE in store.arrays:
            return UpgradeReport(store.where, old, old, 0, 0, 0.0)
        roots: dict[str, list[str]] = {}
        for log in reversed(store.header["ingests"]):  # the newest ingest of a dataset first
            roots.setdefault(log["dataset"], []).append(log["root"])
        clips = store.clips
        folders = {c.id: _source_folder(c, roots) for c in clips}
        lost = [c for c in clips
                if folders[c.id] is None or not all((folders[c.id] / f).is_file() for f in c["frames"])]
        if lost:
            c = lost[0]
            where = ", ".join(roots.get(c.dataset, [])) or "no recorded root"
            raise StoreError(f"cannot upgrade {store.where}: the frames of {len(lost)} clips are not where their "
                             f"ingest read them (first {c.id}: folder {c['folder']} under {where}): put the dataset "
                             "back at that path, or re-ingest into a new store")
        face = {"size": rg.FACE_SIZE, "margin": rg.FACE_MARGIN}
        rows = store.array(store.regions[0]).shape[0]
        if FACE not in store.zgroup:
            create_clip_array(store.zgroup, FACE, store.t_max, face["size"], face["size"], rows=rows)
        location = parallel.store_location(store.where)
        calls = [(location, c.row, [str(folders[c.id] / f) for f in c["frames"]], c["face"]["landmarks"],
                  c["decode_factor"], face) for c in clips]
        frames = 0
        for n in parallel.run_tasks(cut_face_clip, calls, jobs=jobs, scheduler=scheduler, shared=[location],
                                    setup=functools.partial(_setup, jobs)):
            frames += n
        store.update_header(face=face, format_version=fmt.FACE_VERSION)
        return UpgradeReport(store.where, old, fmt.FACE_VERSION, len(clips), frames,
                             round(time.perf_counter() - started, 3))
    finally:
        lock.release()


def _setup(jobs: int) -> None:
    import cv2

    if jobs > 1:
        cv2.setNumThreads(1)


def cut_face_clip(location: str, row: int, frames: list[str], landmarks: list, factor: int, face: dict) -> int:
    """Cut one clip's whole-face crops from its source ``frames`` and write them at ``row``; the frame count.

    The frames are decoded at the reduction (``factor``) its ingest used and the crop placed from
    the recorded landmarks, as ingest places it: the pixels a format 2 ingest would have written.
    """
    c = rg.face_cut(np.asarray(landmarks, dtype=np.float64), face["size"], face["margin"]).scaled(factor)
    window = rg.source_window([c])
    block = np.empty((len(frames), face["size"], face["size"]), dtype=np.uint8)
    for t, path in enumerate(frames):
        image, size, origin = read_grey_window(Path(path), factor, window)
        block[t] = rg.cut(image, c, origin, size)
    write_clip_frames(location, row, {FACE: block})
    return len(frames)


__all__ = ["UpgradeReport", "upgrade_store"]
