"""The flow stage: ``roistore flow`` against a paper repository's plain script, and against its TV-L1 calls alone.

Three contenders, alternated ``repeats`` times, each in a fresh interpreter, all on 2 processes
over every complete clip of the benchmark's store (whole face + six regions, TV-L1, 28 px,
middle apex, so that all three use the same frames):

* ``store``: ``compute_flow`` as the command runs it (reads the store's crops, writes the set);
* ``plain``: for each clip, decode the onset and apex source frames, find the face and its
  landmarks, crop the face and the six regions, run the same TV-L1 (the models loaded before
  the clock);
* ``tvl1``: the same TV-L1 calls on crops read into memory beforehand: the floor.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.flow_tasks import source_pairs
from benchmarks.harness import alternate, figure, ratio, run_task, target

JOBS, SIZE = 2, 28


def bench_flow(store: Path, data: Path, repeats: int) -> dict:
    """Alternate the three contenders ``repeats`` times: clips/s each, and the two ratios the targets name."""
    pairs = source_pairs(str(store), str(data))
    contenders = {
        "store": lambda: run_task("benchmarks.flow_tasks", "store",
                                  {"store": str(store), "name": "bench28", "jobs": JOBS, "estimator": "tvl1",
                                   "size": SIZE}),
        "plain": lambda: run_task("benchmarks.flow_tasks", "plain", {"pairs": pairs, "jobs": JOBS, "size": SIZE}),
        "tvl1": lambda: run_task("benchmarks.flow_tasks", "tvl1", {"store": str(store), "jobs": JOBS, "size": SIZE}),
    }
    runs = alternate(contenders, repeats)
    seconds = {k: [r["seconds"] for r in v] for k, v in runs.items()}
    clips = len(pairs)
    figures = {
        "store_clips_per_s": figure("roistore flow (2 jobs), clips/s", "clips/s",
                                    [clips / s for s in seconds["store"]]),
        "plain_clips_per_s": figure("plain script: decode, detect, crop, TV-L1 (2 processes), clips/s", "clips/s",
                                    [clips / s for s in seconds["plain"]]),
        "tvl1_clips_per_s": figure("TV-L1 calls alone (2 processes), clips/s", "clips/s",
                                   [clips / s for s in seconds["tvl1"]]),
        "store_vs_plain": ratio("plain script time / roistore flow time", seconds["plain"], seconds["store"]),
        "store_vs_tvl1": ratio("roistore flow time / TV-L1 calls' time", seconds["store"], seconds["tvl1"]),
        "store_peak_mib": figure("roistore flow peak memory (coordinator)", "MiB",
                                 [r["peak_rss_mib"] for r in runs["store"]]),
    }
    faces = min(r["clips"] for r in runs["plain"])
    return {
        "title": f"onset-apex flow of {clips} clips (face + 6 regions, TV-L1, {SIZE} px, {JOBS} jobs)",
        "figures": figures,
        "targets": [target("roistore flow at least 2x faster than the plain script", figures, "store_vs_plain",
                           ">=", 2.0),
                    target("roistore flow within 1.5x of the TV-L1 calls alone", figures, "store_vs_tvl1", "<=", 1.5)],
        "details": {"note": f"{clips} clips with {SIZE}x{SIZE} flow maps of the whole face and six regions, apex the "
                            f"middle frame; the plain script found a face on {faces} of them; start-up and model "
                            "loading of the plain script's and the TV-L1 floor's workers are not timed, the whole "
                            "command is"},
    }
