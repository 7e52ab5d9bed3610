"""The measured steps of the ingest stages, each run in a fresh interpreter by ``ingest_bench``.

``python -m benchmarks.ingest_tasks TASK JSON-ARGS`` calls one task with the JSON object's
items as keyword arguments and prints its result as JSON, then the interpreter's peak memory
(see :func:`benchmarks.harness.run_task`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from benchmarks.harness import serve


def _decode(frames: list[str]) -> int:
    import cv2

    cv2.setNumThreads(1)  # one core per process, as ingest's workers
    for f in frames:
        assert cv2.imread(f) is not None
    return len(frames)


def imread_task(data: str, jobs: int) -> dict:
    """Decode every frame of the dataset at ``data`` with ``cv2.imread``, nothing else.

    ``jobs`` > 1 splits the frames over that many warm processes (their start not timed): what
    the machine gives a parallel decode.
    """
    from concurrent.futures import ProcessPoolExecutor

    import cv2

    from benchmarks.data import specs

    frames = [str(f) for s in specs(Path(data)) for f in s.frames]
    if jobs == 1:
        start = time.perf_counter()
        for f in frames:
            assert cv2.imread(f) is not None
    else:
        with ProcessPoolExecutor(jobs) as pool:
            list(pool.map(_decode, [frames[:1]] * jobs))
            start = time.perf_counter()
            assert sum(pool.map(_decode, [frames[i::jobs] for i in range(jobs)])) == len(frames)
    return {"seconds": time.perf_counter() - start, "frames": len(frames)}


def ingest_task(calls: list, store: str, jobs: int, library: str | None = None) -> dict:
    """Ingest ``calls`` (reader, root, annotations) into ``store``; ``library``: another checkout's roistore."""
    if library:
        sys.path.insert(0, library)  # before anything imports roi_store
    from roi_store.ingest import ingest

    start = time.perf_counter()
    frames = sum(ingest(store, name, root, annotations, jobs=jobs).frames for name, root, annotations in calls)
    return {"seconds": time.perf_counter() - start, "frames": frames}


def per_frame_task(frames: list[str]) -> dict:
    """Face detection, 68 landmarks and the six cuts on every one of ``frames`` (the per-frame baseline)."""
    from roi_store.ingest import regions as rg
    from roi_store.ingest.decode import read_grey
    from roi_store.ingest.faces import find_face

    layout = rg.default_layout()
    start = time.perf_counter()
    found = 0
    for f in frames:
        image = read_grey(Path(f))
        face = find_face(image)
        if face is not None:
            found += 1
            [rg.cut(image, c) for c in rg.plan_cuts(face.landmarks, layout["default_scheme"], layout)]
    return {"seconds": time.perf_counter() - start, "frames": len(frames), "faces": found}


if __name__ == "__main__":
    serve({"imread": imread_task, "ingest": ingest_task, "per_frame": per_frame_task})
