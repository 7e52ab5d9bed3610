"""Ingest stages: throughput against decoding alone and against per-frame face finding; growth.

Every contender runs in a fresh interpreter (``harness.run_python``) through the public
``roi_store.ingest.pipeline.ingest``, so its time and peak memory are its own, and contenders alternate
within each repeat.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np

from benchmarks import data as bd
from benchmarks.harness import alternate, figure, ratio, run_python, target

_IMREAD = """
import json, time, cv2
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from benchmarks.data import specs

def decode(frames):
    cv2.setNumThreads(1)  # one core per process, as ingest's workers
    for f in frames:
        assert cv2.imread(str(f)) is not None
    return len(frames)

if __name__ == "__main__":
    frames = [str(f) for s in specs(Path({data!r})) for f in s.frames]
    jobs = {jobs}
    if jobs == 1:
        start = time.perf_counter()
        for f in frames:
            assert cv2.imread(f) is not None
    else:  # the frames split over warm worker processes: what the machine gives a parallel decode
        with ProcessPoolExecutor(jobs) as pool:
            list(pool.map(decode, [frames[:1]] * jobs))
            start = time.perf_counter()
            assert sum(pool.map(decode, [frames[i::jobs] for i in range(jobs)])) == len(frames)
    print(json.dumps({{"seconds": time.perf_counter() - start, "frames": len(frames)}}))
"""

_INGEST = """
import json, time
from pathlib import Path
from roi_store.ingest.pipeline import ingest
jobs = {jobs}
start = time.perf_counter()
frames = 0
for name, root, annotations in {calls!r}:
    frames += ingest({store!r}, name, root, annotations, jobs=jobs).frames
print(json.dumps({{"seconds": time.perf_counter() - start, "frames": frames}}))
"""

_PER_FRAME = """
import json, time
from pathlib import Path
from roi_store.ingest import regions as rg
from roi_store.ingest.decode import read_grey
from roi_store.ingest.faces import find_face
frames = [Path(f) for f in {frames!r}]
layout = rg.default_layout()
start = time.perf_counter()
found = 0
for f in frames:
    image = read_grey(f)
    face = find_face(image)
    if face is not None:
        found += 1
        crops = [rg.cut(image, c) for c in rg.plan_cuts(face.landmarks, layout["default_scheme"], layout)]
print(json.dumps({{"seconds": time.perf_counter() - start, "frames": len(frames), "faces": found}}))
"""


def _native_calls(data: Path) -> list:
    return [(name, str(Path(data) / rel), None) for name, rel in bd.datasets(data)]


def imread(data: Path, jobs: int = 1) -> dict:
    """Decode every frame ingest reads with ``cv2.imread`` (full resolution, colour), nothing else.

    ``jobs`` > 1 splits the frames over that many warm processes (start-up not timed): how far
    this machine itself scales a decode, the ceiling for ingest's own scaling.
    """
    return run_python(_IMREAD.format(data=str(data), jobs=jobs))


def ingest_once(calls: list, store: Path, jobs: int) -> dict:
    """One ingest of ``calls`` (reader, root, annotations) into a new store, in a fresh interpreter."""
    shutil.rmtree(store, ignore_errors=True)
    try:
        return run_python(_INGEST.format(calls=calls, store=str(store), jobs=jobs))
    finally:
        shutil.rmtree(store, ignore_errors=True)


def bench_ingest(data: Path, work: Path, repeats: int, scale: float) -> dict:
    """Alternate ``cv2.imread``, 1-job and 2-job ingests ``repeats`` times: frames/s, ratios, peak memory.

    ``data`` is the preset at ``scale``.
    """
    calls = _native_calls(data)
    imread(data)  # warm the page cache so that no contender pays for the first read
    runs = alternate({"imread": lambda: imread(data),
                      "imread_2": lambda: imread(data, 2),
                      "ingest_1": lambda: ingest_once(calls, work / "bench-1.zarr", 1),
                      "ingest_2": lambda: ingest_once(calls, work / "bench-2.zarr", 2)}, repeats)
    frames = {r["frames"] for rs in runs.values() for r in rs}
    if len(frames) != 1:
        raise RuntimeError(f"contenders read different frame counts: {sorted(frames)}")
    (n,) = frames
    fps = {k: [n / r["seconds"] for r in v] for k, v in runs.items()}
    figures = {
        "imread_frames_per_s": figure("cv2.imread of the same frames, nothing else (baseline)", "frames/s", fps["imread"]),
        "ingest_1_frames_per_s": figure("roistore ingest, 1 job", "frames/s", fps["ingest_1"]),
        "ingest_2_frames_per_s": figure("roistore ingest, 2 jobs", "frames/s", fps["ingest_2"]),
        "ingest_1_vs_imread": ratio("ingest 1 job / cv2.imread", fps["ingest_1"], fps["imread"]),
        "ingest_2_vs_ingest_1": ratio("ingest 2 jobs / 1 job", fps["ingest_2"], fps["ingest_1"]),
        "imread_2_frames_per_s": figure("cv2.imread of the same frames, split over 2 warm processes", "frames/s",
                                        fps["imread_2"]),
        "imread_2_vs_imread": ratio("cv2.imread 2 processes / 1: how far this machine scales a decode",
                                    fps["imread_2"], fps["imread"]),
        "peak_rss_mib_1_job": figure("peak memory, 1-job ingest", "MiB", [r["peak_rss_mib"] for r in runs["ingest_1"]]),
        "peak_rss_mib_2_jobs": figure("peak memory, 2-job ingest's coordinating process", "MiB",
                                      [r["peak_rss_mib"] for r in runs["ingest_2"]]),
    }
    return {"title": f"Ingest (scale {scale:g}: {n} frames, {len(calls)} datasets)", "figures": figures,
            "targets": [target("ingest, 1 job, vs cv2.imread of the same frames", figures, "ingest_1_vs_imread", ">=", 1.0),
                        target("ingest from 1 to 2 jobs", figures, "ingest_2_vs_ingest_1", ">=", 1.8)],
            "details": {"frames": n, "seconds": {k: [r["seconds"] for r in v] for k, v in runs.items()}}}


def write_manifest(path: Path, root: Path, clips: list) -> Path:
    """A manifest naming exactly ``clips`` (ClipSpec) and their frame ranges, relative to ``root``."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["dataset", "subject", "clip", "folder", "label", "onset", "offset"])
        for s in clips:
            w.writerow([s.key.dataset, s.key.subject, s.key.clip, os.path.relpath(s.folder, root).replace(os.sep, "/"),
                        s.emotion, s.frame_numbers[0], s.frame_numbers[-1]])
    return path


def sample(items: list, n: int, seed: int) -> list:
    """``n`` items chosen at random with ``seed``, in their original order."""
    if n >= len(items):
        return list(items)
    keep = np.sort(np.random.default_rng(seed).choice(len(items), n, replace=False))
    return [items[i] for i in keep]


def bench_detect(data: Path, work: Path, repeats: int, clips: int, seed: int = 0) -> dict:
    """Ingest (face once per clip) vs face detection + 68 landmarks + cuts on every frame, same clips."""
    chosen = sample(bd.specs(data), clips, seed)
    manifest = write_manifest(work / "detect-manifest.csv", data, chosen)
    calls = [("manifest", str(data), str(manifest))]
    frames = [str(f) for s in chosen for f in s.frames]
    per_frame = lambda: run_python(_PER_FRAME.format(frames=frames))  # noqa: E731
    for f in frames:  # warm the page cache so that neither contender pays for the first read
        Path(f).read_bytes()
    runs = alternate({"ingest": lambda: ingest_once(calls, work / "detect.zarr", 1), "per_frame": per_frame}, repeats)
    n = len(frames)
    if any(r["frames"] != n for r in runs["ingest"]):
        raise RuntimeError(f"the manifest ingest cut {runs['ingest'][0]['frames']} frames, not {n}")
    fps = {k: [n / r["seconds"] for r in v] for k, v in runs.items()}
    figures = {
        "ingest_frames_per_s": figure("roistore ingest, 1 job (face and landmarks once per clip)", "frames/s",
                                      fps["ingest"]),
        "per_frame_frames_per_s": figure("face detection + 68 landmarks + cuts on every frame (baseline)",
                                         "frames/s", fps["per_frame"]),
        "ingest_vs_per_frame": ratio("ingest / per-frame face finding", fps["ingest"], fps["per_frame"]),
    }
    return {"title": f"Ingest vs per-frame face finding ({len(chosen)} clips, {n} frames)", "figures": figures,
            "targets": [], "details": {"clips": [s.id for s in chosen], "frames": n,
                                       "faces_found": runs["per_frame"][0]["faces"]}}


def bench_scaling(out: Path, scale: float, fractions: list[float], repeats: int, seed: int = 0) -> dict:
    """Time and peak memory of a 1-job ingest as the data grows (``fractions`` of ``scale``), alternated."""
    scales = sorted({round(scale * f, 6) for f in fractions})
    if len(scales) < 2:
        raise ValueError("--scaling needs at least two different fractions, e.g. 0.25,0.5,1")
    folders = {s: bd.dataset(out, s, seed) for s in scales}
    runs = alternate({s: (lambda d=d, s=s: ingest_once(_native_calls(d), out / f"scale-{s:g}.zarr", 1))
                      for s, d in folders.items()}, repeats)
    rows, figures = [], {}
    for s in scales:
        frames = runs[s][0]["frames"]
        rows.append({"scale": s, "clips": bd.summary(folders[s])["clips"], "frames": frames,
                     "seconds": figure("seconds", "s", [r["seconds"] for r in runs[s]]),
                     "frames_per_s": figure("frames/s", "frames/s", [frames / r["seconds"] for r in runs[s]]),
                     "peak_rss_mib": figure("peak memory", "MiB", [r["peak_rss_mib"] for r in runs[s]])})
    small, large = scales[0], scales[-1]
    grow = rows[-1]["frames"] / rows[0]["frames"]
    figures["frames_growth"] = figure(f"frames, scale {large:g} / {small:g}", "x", grow)
    figures["peak_rss_growth"] = ratio(f"peak memory, scale {large:g} / {small:g}",
                                       [r["peak_rss_mib"] for r in runs[large]], [r["peak_rss_mib"] for r in runs[small]])
    figures["seconds_per_frame_growth"] = ratio(
        f"seconds per frame, scale {large:g} / {small:g}",
        [r["seconds"] / r["frames"] for r in runs[large]], [r["seconds"] / r["frames"] for r in runs[small]])
    return {"title": "Ingest growth (1 job)", "figures": figures,
            "targets": [target("peak memory flat as clips grow (largest / smallest scale)", figures,
                               "peak_rss_growth", "<=", 1.25),
                        target("time linear in frames (seconds per frame, largest / smallest scale)", figures,
                               "seconds_per_frame_growth", "<=", 1.25)],
            "details": {"rows": rows}}
