"""What long runs pay for being exact and resumable: per-fold batches and checkpoints, on this CPU.

- ``per-fold batches``: the engine's steady-state training throughput at one fold per step (the
  paper's network, six regions, batch 256, every frame of the bench store's view), with this
  checkout's engine (each fold its own batches, full batches padded, a loop of ``train_on_batch``)
  against the engine of :data:`BEFORE_REF` (batches shared by the step's folds, Keras ``fit``),
  alternating, each in a fresh interpreter. Target: at most 10 % slower.
- ``checkpoint``: one step's whole state (weights, Adam's moments, dropout generators) of the
  full-size network written into a run of a store, against the seconds of training between two
  checkpoints at the default interval (``--checkpoint-every 600``: the first epoch end after 10
  minutes, so at least one epoch). Target: at most 3 %.

Run as a stage (``python -m benchmarks --stages long-runs``); its measurements run in fresh
interpreters (``python -m benchmarks.long_runs_bench TASK JSON``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from benchmarks.harness import alternate, figure, ratio, run_task, serve, target

#: The commit before per-fold batches: the baseline of the per-fold-batch cost.
BEFORE_REF = "3f90594"
#: ``embed``'s default seconds between checkpoints.
DEFAULT_INTERVAL = 600.0


def _throughput(store: str, epochs: int, src: str | None = None) -> dict:
    """Steady-state region frames/s of one fold's six region CNNs, with this engine or ``src``'s."""
    if src:  # the baseline commit's library, before anything imports it, and its own bench code
        import importlib.util
        import sys

        sys.path.insert(0, src)
        spec = importlib.util.spec_from_file_location("before_engine_bench", Path(src) / "benchmarks" / "engine_bench.py")
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
    else:
        from benchmarks import engine_bench as bench
    return bench.engine_throughput(store, epochs, 256, "delta")


def _ingest_before(data: str, store: str, src: str) -> dict:
    """The bench data ingested by ``src``'s library (the store format the engine before reads)."""
    import sys

    sys.path.insert(0, src)  # before anything imports roi_store
    from benchmarks.data import datasets
    from roi_store.ingest.pipeline import ingest

    for name, rel in datasets(Path(data)):
        ingest(store, name, Path(data) / rel, jobs=2)
    return {"store": store}


def _checkpoint(store: str, epochs: int) -> dict:
    """Seconds to write one full-size step's state into a run of ``store``, and an epoch's seconds."""
    from roi_store.method import backend

    backend.select_device(cpu=True)
    import numpy as np

    from benchmarks.engine_bench import _view_data
    from roi_store.method import checkpoint, engine
    from roi_store.store.run_data import put_bytes
    from roi_store.store.store import open_store

    frames, y, train, n_classes = _view_data(store)
    data = engine.ViewFrames(frames, y)
    mask = data.frame_mask(train)[:, None]
    saved = []
    s = open_store(store, mode="r+")
    group = s.zgroup.require_group("bench-checkpoints")

    def save(state: bytes) -> None:
        start = time.perf_counter()
        put_bytes(group, "state", state)
        group["state"].attrs["sha256"] = "bench"
        saved.append((time.perf_counter() - start, len(state)))

    cp = checkpoint.Checkpoint(load=lambda: None, save=save, every=0)
    res = engine.train_group(data, mask, n_classes=n_classes, dense=1024, pool="gap", mode="delta", epochs=1 + epochs,
                             batch_size=256, learning_rate=1e-3, gamma=2.0, fold_seeds=[1], eager_steps=0,
                             checkpoint=cp)
    start = time.perf_counter()
    blob = checkpoint.state(res["model"], 0, {})  # the state's bytes alone, as a checkpoint makes them
    state_s = time.perf_counter() - start
    del s.zgroup["bench-checkpoints"]
    return {"write_s": [w for w, _ in saved], "bytes": saved[0][1] if saved else len(blob), "state_s": state_s,
            "epoch_s": float(np.median(res["epoch_seconds"][1:])), "epochs": epochs}


def bench_long_runs(store: Path, out: Path, repeats: int, quick: bool) -> dict:
    """Per-fold batches' cost in training throughput, and the cost of checkpoints at the default interval."""
    from benchmarks.engine_bench import baseline_tree

    epochs = 1 if quick else 3
    figures, targets, note = {}, [], None
    tree = None if quick else baseline_tree(out, BEFORE_REF)
    if tree is not None:
        # The same frames in the store format the engine before reads (its own ingest, once).
        before_store = Path(out) / f"store-{BEFORE_REF}.zarr"
        if not (before_store / "zarr.json").exists():
            data = json.loads((Path(out) / "store.json").read_text())["data"]
            run_task("benchmarks.long_runs_bench", "ingest_before",
                     {"data": data, "store": str(before_store), "src": str(tree)})
        runs = alternate({
            "before": lambda: run_task("benchmarks.long_runs_bench", "throughput",
                                       {"store": str(before_store), "epochs": epochs, "src": str(tree)}),
            "now": lambda: run_task("benchmarks.long_runs_bench", "throughput", {"store": str(store), "epochs": epochs}),
        }, repeats)
        rate = {k: [r["train_region_frames_per_s"] for r in v] for k, v in runs.items()}
        figures["before_train_fps"] = figure(f"engine of {BEFORE_REF}: batches shared by a step's folds, Keras fit",
                                             "region frames/s", rate["before"])
        figures["now_train_fps"] = figure("engine: each fold its own batches, a loop of train_on_batch",
                                          "region frames/s", rate["now"])
        figures["per_fold_batches_cost"] = ratio("training throughput, this engine / the one before",
                                                 rate["now"], rate["before"])
        targets.append(target("per-fold batches: steady-state training throughput at one fold per step, "
                              f"this engine / {BEFORE_REF}'s (10 % at most lost)", figures, "per_fold_batches_cost",
                              ">=", 0.9))
    else:
        note = "per-fold batch cost skipped: " + ("--quick" if quick else f"no git history holding {BEFORE_REF}")
    cps = [run_task("benchmarks.long_runs_bench", "checkpoint", {"store": str(store), "epochs": epochs})
           for _ in range(repeats)]
    write = [min(c["write_s"]) if c["write_s"] else c["state_s"] for c in cps]
    # At the default interval a checkpoint is written at the first epoch end after 600 s.
    between = [max(DEFAULT_INTERVAL, c["epoch_s"]) for c in cps]
    figures["checkpoint_write_s"] = figure("one full-size step's state written into the run", "s", write)
    figures["checkpoint_mib"] = figure("one full-size step's state", "MiB", [c["bytes"] / 2**20 for c in cps])
    figures["epoch_s"] = figure("a training epoch at this scale (one fold, batch 256)", "s", [c["epoch_s"] for c in cps])
    figures["checkpoint_cost"] = figure("checkpoint seconds / training seconds between two checkpoints "
                                        "(default interval)", "fraction", [w / b for w, b in zip(write, between)])
    figures["checkpoint_cost_every_epoch"] = figure("checkpoint seconds / an epoch's seconds (--checkpoint-every 0)",
                                                    "fraction", [w / c["epoch_s"] for w, c in zip(write, cps)])
    targets.append(target("checkpoints at the default interval: at most 3 % of a CPU step's training time", figures,
                          "checkpoint_cost", "<=", 0.03))
    return {"title": "Long runs: per-fold batches and checkpoints", "figures": figures, "targets": targets,
            "details": {"epochs_timed": epochs, "before_ref": BEFORE_REF, "interval_s": DEFAULT_INTERVAL, "note": note}}


if __name__ == "__main__":
    serve({"throughput": _throughput, "checkpoint": _checkpoint, "ingest_before": _ingest_before})
