"""Store stages: bytes against the source frame folders (and lossless read-back); the training data path."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks import data as bd
from benchmarks.harness import figure, ratio, run_task, target, tree_bytes
from benchmarks.ingest_bench import sample


def _source_specs(store, data: Path) -> dict:
    ids = {c.id for c in store.clips}
    return {s.id: s for s in bd.specs(data) if s.id in ids}


def bench_store(store_path: Path, data: Path, verify: int, seed: int = 0) -> dict:
    """Store bytes vs the source frames' bytes; region crops read back == crops cut from the source."""
    import roi_store
    from roi_store.ingest.cut import CutSettings, cut_clip

    store = roi_store.open_store(store_path)
    specs = _source_specs(store, data)
    source = sum(f.stat().st_size for s in specs.values() for f in s.frames)
    from roi_store.store.runs import RUNS

    # The ingested store alone: the bench's later stages add a run (models, embeddings) to it.
    total = tree_bytes(store_path) - tree_bytes(Path(store_path) / RUNS)
    regions = tree_bytes(Path(store_path) / "regions")
    work = CutSettings.of(store)
    checked, equal = sample(sorted(specs), verify, seed), []
    for cid in checked:
        blocks, meta = cut_clip(specs[cid], work)
        n = meta["n_frames"]
        equal.append(all(np.array_equal(store.frames(cid, r), b[:n]) for r, b in zip(store.regions, blocks)))
    figures = {
        "source_bytes": figure("source frame files of the stored clips (baseline)", "bytes", source),
        "store_bytes": figure("whole store (region clips padded to t_max, records, header)", "bytes", total),
        "region_bytes": figure("region arrays alone", "bytes", regions),
        "source_vs_store": ratio("source bytes / store bytes", [source], [total]),
        "lossless_fraction": figure(f"clips whose six read-back crops equal crops cut from the source "
                                    f"({len(checked)} checked)", "share", sum(equal) / max(len(equal), 1)),
    }
    return {"title": f"Store size ({len(specs)} clips, {sum(len(s.frames) for s in specs.values())} frames)",
            "figures": figures,
            "targets": [target("lossless: every checked clip reads back exactly as cut from the source", figures,
                               "lossless_fraction", ">=", 1.0)],
            "details": {"checked": checked, "mismatched": [c for c, ok in zip(checked, equal) if not ok]}}


def bench_data_path(store_path: Path, data: Path, clips: int, repeats: int, seed: int = 0) -> dict:
    """Clips/s reading six region clips from the store vs decoding and cutting the source frames (alternated)."""
    import roi_store

    store = roi_store.open_store(store_path)
    ids = sample([c.id for c in store.view_clips()], clips, seed)
    if not ids:
        raise ValueError(f"{store_path} has no megc2019 clips at this scale: give a larger --scale")
    r = run_task("benchmarks.store_tasks", "data_path",
                 {"store": str(store_path), "data": str(data), "ids": ids, "repeats": repeats})
    figures = {
        "store_clips_per_s": figure("six region clips read from the store (through Zarr, its default concurrency)",
                                    "clips/s", r["store"]),
        "source_clips_per_s": figure("decode + face + cut the same clips from the source frames (baseline)",
                                     "clips/s", r["source"]),
        "store_vs_source": ratio("store / source", r["store"], r["source"]),
    }
    # A figure, not a target: the training engine reads a view into memory once, so what the data
    # path costs a user shows in the whole embed's time (the engine and cnn stages).
    return {"title": f"Data path for training ({len(ids)} clips of the megc2019 view)", "figures": figures,
            "targets": [], "details": {"clips": ids}}
