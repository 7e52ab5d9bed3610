"""Ingest stages: throughput against decoding alone, against per-frame face finding and against the
previous release's ingest; growth.

Every contender runs in a fresh interpreter (``harness.run_task`` of :mod:`benchmarks.ingest_tasks`)
through the public ``roi_store.ingest.ingest``, so its time and peak memory are its own, and
contenders alternate within each repeat.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np

from benchmarks import data as bd
from benchmarks.harness import alternate, figure, ratio, run_task, target

#: The commit before the store's bytes went through Zarr and its tasks through one runner: the
#: 2-job ingest's baseline (a git worktree of it, under the output folder).
BASELINE_REF = "3adff11"

def _native_calls(data: Path) -> list:
    return [(name, str(Path(data) / rel), None) for name, rel in bd.datasets(data)]


def imread(data: Path, jobs: int = 1) -> dict:
    """Decode every frame ingest reads with ``cv2.imread`` (full resolution, colour), nothing else.

    ``jobs`` > 1 splits the frames over that many warm processes (start-up not timed): how far
    this machine itself scales a decode, the ceiling for ingest's own scaling.
    """
    return run_task("benchmarks.ingest_tasks", "imread", {"data": str(data), "jobs": jobs})


def ingest_once(calls: list, store: Path, jobs: int, library: Path | None = None) -> dict:
    """One ingest of ``calls`` (reader, root, annotations) into a new store, in a fresh interpreter.

    ``library``: a checkout of another commit whose ``roi_store`` runs instead of this one's.
    """
    shutil.rmtree(store, ignore_errors=True)
    try:
        return run_task("benchmarks.ingest_tasks", "ingest", {"calls": calls, "store": str(store), "jobs": jobs,
                                                              "library": str(library) if library else None})
    finally:
        shutil.rmtree(store, ignore_errors=True)


def bench_ingest(data: Path, work: Path, repeats: int, scale: float, baseline: Path | None = None) -> dict:
    """Alternate ``cv2.imread``, 1-job and 2-job ingests ``repeats`` times: frames/s, ratios, peak memory.

    ``data`` is the preset at ``scale``. With ``baseline`` (a checkout of an earlier commit), its
    2-job ingest of the same data alternates with the others.
    """
    calls = _native_calls(data)
    imread(data)  # warm the page cache so that no contender pays for the first read
    contenders = {"imread": lambda: imread(data),
                  "imread_2": lambda: imread(data, 2),
                  "ingest_1": lambda: ingest_once(calls, work / "bench-1.zarr", 1),
                  "ingest_2": lambda: ingest_once(calls, work / "bench-2.zarr", 2)}
    if baseline is not None:
        contenders["baseline_2"] = lambda: ingest_once(calls, work / "bench-b.zarr", 2, library=baseline)
    runs = alternate(contenders, repeats)
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
    targets = [target("ingest, 1 job, vs cv2.imread of the same frames", figures, "ingest_1_vs_imread", ">=", 1.0),
               target("ingest from 1 to 2 jobs", figures, "ingest_2_vs_ingest_1", ">=", 1.8)]
    if baseline is not None:
        figures["baseline_2_frames_per_s"] = figure(f"ingest, 2 jobs, at {baseline.name} (baseline)", "frames/s",
                                                    fps["baseline_2"])
        figures["ingest_2_vs_baseline"] = ratio(f"ingest 2 jobs, this checkout / {baseline.name}", fps["ingest_2"],
                                                fps["baseline_2"])
        # "Within 20 % of its time": at least 1 / 1.2 of its frames per second.
        targets.append(target(f"2-job ingest within 20 % of the time of {baseline.name}", figures,
                              "ingest_2_vs_baseline", ">=", round(1 / 1.2, 3)))
    return {"title": f"Ingest (scale {scale:g}: {n} frames, {len(calls)} datasets)", "figures": figures,
            "targets": targets,
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
    per_frame = lambda: run_task("benchmarks.ingest_tasks", "per_frame", {"frames": frames})  # noqa: E731
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
