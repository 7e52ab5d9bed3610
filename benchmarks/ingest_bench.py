"""Ingest throughput against a decode-only baseline, 1 and 2 jobs, and peak memory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from benchmarks.harness import run_python, stats

DATASETS = (("casme2", "CASME2/CASME2_RAW_selected"), ("samm", "SAMM/SAMM"), ("smic", "SMIC/HS"))

_BASELINE = """
import json, sys, time, cv2
from pathlib import Path
from roi_store.datasets import get_reader
from roi_store.datasets.base import ClipSpec
data, datasets = json.loads({args!r})
frames = [f for name, rel in datasets for s in get_reader(name).scan(Path(data) / rel)
          if isinstance(s, ClipSpec) for f in s.frames]
start = time.perf_counter()
for f in frames:
    assert cv2.imread(str(f)) is not None
print(json.dumps({{"seconds": time.perf_counter() - start, "frames": len(frames)}}))
"""

_INGEST = """
import json, resource, sys, time
from pathlib import Path
from roi_store.ingest import ingest
data, datasets, store, jobs = json.loads({args!r})
start = time.perf_counter()
frames = 0
for name, rel in datasets:
    frames += ingest(store, name, Path(data) / rel, jobs=jobs).frames
seconds = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": seconds, "frames": frames, "peak_rss_mib": rss}}))
"""


def baseline(data: Path) -> dict:
    """Decode every frame ingest would read with ``cv2.imread`` (full resolution, colour), nothing else."""
    return run_python(_BASELINE.format(args=json.dumps([str(data), DATASETS])))


def ingest_once(data: Path, store: Path, jobs: int) -> dict:
    """One full ingest of the three datasets into a new store, in a fresh interpreter."""
    shutil.rmtree(store, ignore_errors=True)
    try:
        return run_python(_INGEST.format(args=json.dumps([str(data), DATASETS, str(store), jobs])))
    finally:
        shutil.rmtree(store, ignore_errors=True)


def bench_ingest(data: Path, work: Path, repeats: int = 3) -> dict:
    """Alternate baseline, 1-job and 2-job ingests ``repeats`` times; frames/s and ratios."""
    baseline(data)  # warm the page cache so that no contender pays for the first read
    runs = {"imread": [], "ingest_1": [], "ingest_2": []}
    rss = []
    frames = None
    for _ in range(repeats):
        b = baseline(data)
        one = ingest_once(data, work / "bench-1.zarr", 1)
        two = ingest_once(data, work / "bench-2.zarr", 2)
        if not (b["frames"] == one["frames"] == two["frames"]):
            raise RuntimeError(f"frame counts differ: {b['frames']}, {one['frames']}, {two['frames']}")
        frames = b["frames"]
        runs["imread"].append(frames / b["seconds"])
        runs["ingest_1"].append(frames / one["seconds"])
        runs["ingest_2"].append(frames / two["seconds"])
        rss.append(one["peak_rss_mib"])
    fps = {k: stats(v) for k, v in runs.items()}
    ratio_1 = stats([i / b for i, b in zip(runs["ingest_1"], runs["imread"])])
    ratio_2 = stats([t / o for t, o in zip(runs["ingest_2"], runs["ingest_1"])])
    return {"frames": frames, "frames_per_s": fps, "ingest_1_vs_imread": ratio_1,
            "ingest_2_vs_ingest_1": ratio_2, "peak_rss_mib_1_job": stats(rss)}


def memory_scaling(make_data, work: Path, scales: list[float]) -> list[dict]:
    """Time and peak memory of a one-job ingest as the dataset grows (``make_data(scale)`` -> folder)."""
    rows = []
    for scale in scales:
        data = make_data(scale)
        r = ingest_once(data, work / f"scale-{scale}.zarr", 1)
        rows.append({"scale": scale, "frames": r["frames"], "seconds": r["seconds"],
                     "frames_per_s": r["frames"] / r["seconds"], "peak_rss_mib": r["peak_rss_mib"]})
    return rows
