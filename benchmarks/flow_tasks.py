"""The measured steps of the flow stage, each run in a fresh interpreter by ``flow_bench``.

``python -m benchmarks.flow_tasks TASK JSON-ARGS``: see :func:`benchmarks.harness.run_task`.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.harness import serve


def store_task(store: str, name: str, jobs: int, estimator: str, size: int) -> dict:
    """``roistore flow`` as the library runs it: a new set, middle apex, ``jobs`` workers."""
    from roi_store.ingest.flow import compute_flow

    start = time.perf_counter()
    rep = compute_flow(store, name, estimator=estimator, size=size, apex="middle", jobs=jobs, overwrite=True)
    return {"seconds": time.perf_counter() - start, "clips": rep.computed}


def _plain_clip(paths: tuple[str, str], size: int) -> int:
    """What a paper repository's script does for one clip: decode onset and apex, find the face, crop, TV-L1."""
    import cv2

    from roi_store.ingest import regions as rg
    from roi_store.ingest.faces import find_face
    from roi_store.ingest.flow import onset_apex_flow

    onset, apex = (cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2GRAY) for p in paths)
    face = find_face(onset)
    if face is None:
        return 0
    layout = rg.default_layout()
    cuts = [rg.face_cut(face.landmarks), *rg.plan_cuts(face.landmarks, layout["default_scheme"], layout)]
    for c in cuts:
        onset_apex_flow(rg.cut(onset, c), rg.cut(apex, c), size, "tvl1")
    return 1


def _worker_init() -> None:
    import cv2

    from roi_store.ingest import faces

    cv2.setNumThreads(1)
    faces.preload()  # the face models load once per worker, as a script's loop would load them once


def plain_task(pairs: list[list[str]], jobs: int, size: int) -> dict:
    """The plain script over every clip's (onset, apex) source frames, on ``jobs`` warm processes (start not timed)."""
    with ProcessPoolExecutor(jobs, initializer=_worker_init) as pool:
        list(pool.map(_noop, range(jobs)))  # workers started and their models loaded before the clock
        start = time.perf_counter()
        done = sum(pool.map(_plain_clip, [tuple(p) for p in pairs], [size] * len(pairs), chunksize=1))
    return {"seconds": time.perf_counter() - start, "clips": done}


def _noop(_):
    return 0


def _tvl1_only(crops: list[tuple[np.ndarray, np.ndarray]], size: int) -> int:
    from roi_store.ingest.flow import onset_apex_flow

    for a, b in crops:
        onset_apex_flow(a, b, size, "tvl1")
    return len(crops)


def tvl1_task(store: str, jobs: int, size: int) -> dict:
    """The TV-L1 calls alone: every clip's seven onset/apex crop pairs, read beforehand (not timed), on ``jobs``
    warm processes."""
    import roi_store

    opened = roi_store.open_store(store)
    work = []
    for clip in opened.clips:
        pairs = []
        for crop in opened.arrays:
            frames = opened.frames(clip.id, crop)
            pairs.append((frames[0], frames[clip.n_frames // 2]))
        work.append(pairs)
    with ProcessPoolExecutor(jobs, initializer=_worker_init) as pool:
        list(pool.map(_noop, range(jobs)))
        start = time.perf_counter()
        calls = sum(pool.map(_tvl1_only, work, [size] * len(work), chunksize=1))
    return {"seconds": time.perf_counter() - start, "clips": len(work), "calls": calls}


def source_pairs(store: str, data: str) -> list[list[str]]:
    """Each complete clip's onset and middle source frame paths (the frames ``--apex middle`` uses)."""
    import roi_store
    from benchmarks.data import specs

    by_id = {s.id: s for s in specs(Path(data))}
    opened = roi_store.open_store(store)
    return [[str(by_id[c.id].frames[0]), str(by_id[c.id].frames[c.n_frames // 2])] for c in opened.clips]


if __name__ == "__main__":
    serve({"store": store_task, "plain": plain_task, "tvl1": tvl1_task})
