"""The ststnet stage: a whole STSTNet LOSO run (``roistore fit --method ststnet``), end to end.

On the benchmark's store (the megc2019 preset at ``--scale``): a flow set of every clip (TV-L1,
28 px, middle apex so that SMIC's clips have one; computed once, timed apart), then the STSTNet
LOSO run at the published 500 epochs (``--quick``: 2), in a fresh interpreter, timed from the
call to the committed run: reading the set, every step of folds, writing models and markers.
The full composite (scale 1) has 68 LOSO folds in 4 steps of 17.

``python -m benchmarks.ststnet_bench TASK JSON-ARGS`` runs one measured step (see
:func:`benchmarks.harness.run_task`).
"""

from __future__ import annotations

import time

from benchmarks.harness import figure, run_task, serve

FEATURES = "ststnet28"
EPOCHS = {False: 500, True: 2}
#: Whole runs timed, at most (``--repeats`` caps it too).
FIT_REPEATS = 1


def flow_task(store: str) -> dict:
    """The flow set the stage trains on; made once (a complete set of the same options is kept)."""
    from roi_store.ingest.flow import compute_flow

    start = time.perf_counter()
    rep = compute_flow(store, FEATURES, estimator="tvl1", size=28, apex="middle", jobs=2)
    return {"seconds": time.perf_counter() - start, "clips": rep.clips, "computed": rep.computed}


def fit_task(store: str, epochs: int, run: str) -> dict:
    """One STSTNet LOSO run of every fold, replacing an earlier one of the same name."""
    from roi_store.method.ststnet import fit

    start = time.perf_counter()
    doc = fit(store, run, features=FEATURES, epochs=epochs, cpu=True, overwrite=True)
    seconds = time.perf_counter() - start
    from roi_store.evaluation.report import head_scores

    return {"seconds": seconds, "folds": len(doc["folds"]), "clips": len(doc["predictions"]),
            "steps": doc["timings"]["steps"], "train_seconds": doc["timings"]["train_seconds"],
            "device": doc["timings"]["device"], "scores": head_scores(doc)["FULL"]}


def bench_ststnet(store, repeats: int, quick: bool) -> dict:
    """Time whole STSTNet LOSO runs (at most ``repeats`` and :data:`FIT_REPEATS`, each in a fresh
    interpreter) after one flow set."""
    flow = run_task("benchmarks.ststnet_bench", "flow", {"store": str(store)})
    epochs = EPOCHS[quick]
    # A whole run at the published 500 epochs takes minutes on two cores: FIT_REPEATS of them.
    runs = [run_task("benchmarks.ststnet_bench", "fit", {"store": str(store), "epochs": epochs, "run": "bench-ststnet"})
            for _ in range(min(repeats, FIT_REPEATS))]
    first = runs[0]
    figures = {
        "fit_seconds": figure(f"STSTNet LOSO, {first['folds']} folds x {epochs} epochs, end to end", "s",
                              [r["seconds"] for r in runs]),
        "train_seconds": figure("of which training steps", "s", [r["train_seconds"] for r in runs]),
        "seconds_per_fold": figure("seconds per fold (end to end / folds)", "s",
                                   [r["seconds"] / r["folds"] for r in runs]),
        "clip_epochs_per_s": figure("training clips x epochs per second, summed over folds", "clips/s",
                                    [r["clips"] * (r["folds"] - 1) * epochs / r["train_seconds"]
                                     for r in runs]),
        "peak_mib": figure("peak memory of the run", "MiB", [r["peak_rss_mib"] for r in runs]),
    }
    return {
        "title": f"STSTNet LOSO on a flow set of {first['clips']} clips: {first['folds']} folds in {first['steps']} "
                 f"step(s), {epochs} epochs, {first['device']}",
        "figures": figures,
        "targets": [],
        "details": {"note": f"flow set ({flow['clips']} clips, TV-L1 28 px, middle apex) "
                            + (f"made in {flow['seconds']:.0f} s" if flow["computed"] else "computed earlier")
                            + " before the clock; each run trains every fold from scratch "
                            "(--overwrite) in a fresh interpreter; the full composite is 442 clips, 68 folds",
                    "uf1_uar_full": [r["scores"] for r in runs]},
    }


if __name__ == "__main__":
    serve({"flow": flow_task, "fit": fit_task})
