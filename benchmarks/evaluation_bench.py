"""Evaluation statistics at the full composite's size: the subject-level bootstrap of a run's
pooled scores and the paired permutation test of ``compare``, on 442 predictions of 68 subjects
made from the megc2019 preset's planned clips (true labels as planned, predictions right with a
fixed probability). Target: each under 2 s on the machine measured."""

from __future__ import annotations

import time

from benchmarks.harness import figure, target

CLASSES = ["negative", "positive", "surprise"]


def composite_predictions(accuracy: float, seed: int = 0) -> list[dict]:
    """Predictions of the full composite's clips (ids ``dataset/subject/clip``), right with probability ``accuracy``."""
    import numpy as np

    from roi_store.synth import plan

    rng = np.random.default_rng(seed)
    out = []
    for c in plan("megc2019", seed):
        if c["label"] is None:
            continue
        pred = c["label"] if rng.random() < accuracy else CLASSES[int(rng.integers(3))]
        out.append({"id": f"{c['dataset']}/{c['subject']}/{c['clip']}", "fold": 0, "true": c["label"], "pred": pred})
    return out


def bench_evaluation(repeats: int, seed: int = 0) -> dict:
    """Seconds of a 2,000-resample bootstrap and of a 10,000-permutation paired test."""
    from roi_store.evaluation import stats as ev

    a, b = composite_predictions(0.7, seed), composite_predictions(0.5, seed + 1)
    times = {"counts": [], "bootstrap": [], "permutation": []}
    for _ in range(repeats):
        start = time.perf_counter()
        subjects, ca = ev.subject_counts(a, CLASSES)
        _, cb = ev.subject_counts(b, CLASSES, subjects)
        times["counts"].append(time.perf_counter() - start)
        start = time.perf_counter()
        boot = ev.bootstrap(ca, resamples=2000, seed=seed)
        times["bootstrap"].append(time.perf_counter() - start)
        start = time.perf_counter()
        ev.paired_permutation(ca, cb, permutations=10000, seed=seed)
        times["permutation"].append(time.perf_counter() - start)
    figures = {"counts_seconds": figure("per-subject confusion counts of two runs", "s", times["counts"]),
               "bootstrap_seconds": figure("subject-level bootstrap, 2,000 resamples", "s", times["bootstrap"]),
               "permutation_seconds": figure("paired permutation test, 10,000 permutations", "s", times["permutation"])}
    return {"title": f"Evaluation statistics on the full composite ({len(a)} predictions, {len(subjects)} subjects)",
            "figures": figures,
            "targets": [target("subject-level bootstrap of 442 predictions, 2,000 resamples", figures,
                               "bootstrap_seconds", "<=", 2.0),
                        target("paired permutation test of 442 predictions, 10,000 permutations", figures,
                               "permutation_seconds", "<=", 2.0)],
            "details": {"predictions": len(a), "subjects": len(subjects), "interval_UF1": boot["UF1"]}}
