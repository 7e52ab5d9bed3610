"""Uncertainty, repeats and comparisons of pooled MEGC 2019 scores, by subject (METHOD.md §7).

The clips of one subject share a face, a session and a camera: they are not independent draws.
Every interval and test here therefore resamples or permutes whole subjects (a cluster
bootstrap; a paired permutation within subjects), never single clips.

Everything works on per-subject confusion counts, an ``(S, C, C)`` array: a resample is a
weight vector over the subjects (how often each was drawn), so the pooled confusion matrices of
all resamples are one matrix product and UF1/UAR follow, vectorised, from
:func:`roi_store.evaluation.metrics.scores_from_confusion`. Where the number of possible resamples or sign
patterns is at most the number asked for, they are enumerated exactly instead of drawn.
"""

from __future__ import annotations

import itertools
import re

import numpy as np

from roi_store.errors import RoiStoreError, RunMismatchError
from roi_store.evaluation.metrics import scores_from_confusion
from roi_store.store.runs import head_document, run_document, run_names, run_status

METRICS = ("UF1", "UAR")


# --- per-subject counts ----------------------------------------------------------------------
def subject_of(clip_id: str) -> str:
    """``dataset/subject`` of a clip id ``dataset/subject/clip``."""
    return clip_id.rsplit("/", 1)[0]


def groups_of(predictions: list[dict]) -> dict[str, list[dict]]:
    """``FULL`` and each dataset (in order of first appearance) -> its predictions."""
    groups = {"FULL": list(predictions)}
    for p in predictions:
        groups.setdefault(p["id"].split("/")[0], []).append(p)
    return groups


def subject_counts(predictions: list[dict], classes: list[str],
                   subjects: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Per-subject confusion counts of a list of predictions.

    Parameters
    ----------
    predictions : list of dict
        ``{"id", "true", "pred", ...}`` with class names.
    classes : list of str
        The class order of the counts.
    subjects : list of str, optional
        The subjects (``dataset/subject``) and their order; those of the predictions in natural
        order (``s2`` before ``s10``) if None.

    Returns
    -------
    (list of str, ndarray)
        The subjects and their ``(S, C, C)`` int64 counts (rows true, columns predicted).
    """
    index = {c: i for i, c in enumerate(classes)}
    if subjects is None:
        subjects = sorted({subject_of(p["id"]) for p in predictions}, key=natural_key)
    row = {s: i for i, s in enumerate(subjects)}
    counts = np.zeros((len(subjects), len(classes), len(classes)), dtype=np.int64)
    if predictions:
        s = np.array([row[subject_of(p["id"])] for p in predictions])
        t = np.array([index[p["true"]] for p in predictions])
        y = np.array([index[p["pred"]] for p in predictions])
        np.add.at(counts, (s, t, y), 1)
    return subjects, counts


def subject_table(predictions: list[dict], classes: list[str]) -> list[dict]:
    """Per subject: clips, correct, accuracy, recall (mean recall over the subject's classes), folds.

    Parameters
    ----------
    predictions : list of dict
        ``{"id", "fold", "true", "pred"}`` with class names.
    classes : list of str
        The run's classes.

    Returns
    -------
    list of dict
        ``{"subject", "dataset", "clips", "correct", "accuracy", "recall", "folds"}`` by subject.
    """
    subjects, counts = subject_counts(predictions, classes)
    _, recall = scores_from_confusion(counts)
    folds: dict[str, set] = {}
    for p in predictions:
        folds.setdefault(subject_of(p["id"]), set()).add(p.get("fold"))
    out = []
    for s, m, r in zip(subjects, counts, recall):
        clips, correct = int(m.sum()), int(np.trace(m))
        out.append({"subject": s, "dataset": s.split("/")[0], "clips": clips, "correct": correct,
                    "accuracy": correct / clips, "recall": float(r),
                    "folds": sorted(f for f in folds[s] if f is not None)})
    return out


# --- resampling ------------------------------------------------------------------------------
def _weights(n: int, resamples: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """(B, n) draw counts of n subjects resampled with replacement; all n**n draws when that is fewer."""
    exact = n ** n <= resamples
    if exact:
        idx = np.array(list(itertools.product(range(n), repeat=n)), dtype=np.int64).reshape(-1, n)
    else:
        idx = rng.integers(0, n, size=(resamples, n))
    b = len(idx)
    w = np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n)
    return w.astype(float), exact


def _pooled(weights: np.ndarray, counts: np.ndarray) -> np.ndarray:
    s, c, _ = counts.shape
    return (weights @ counts.reshape(s, c * c)).reshape(-1, c, c)


def _interval(values: np.ndarray, level: float) -> list[float]:
    lo, hi = np.nanquantile(values, [(1 - level) / 2, 1 - (1 - level) / 2])
    return [float(lo), float(hi)]


def bootstrap(counts: np.ndarray, *, resamples: int = 2000, seed: int = 0, level: float = 0.95,
              convention: str = "present") -> dict:
    """Percentile interval of pooled UF1 and UAR by a subject-level (cluster) bootstrap.

    Each resample draws ``S`` subjects with replacement and pools all their clips; the
    interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles (numpy's linear
    interpolation) of the resampled scores.

    Parameters
    ----------
    counts : ndarray
        ``(S, C, C)`` per-subject confusion counts (:func:`subject_counts`).
    resamples : int
        Number of resamples; all ``S**S`` ordered draws instead when that is not more.
    seed : int
        Seed of the draws.
    level : float
        Coverage of the interval.
    convention : {"present", "challenge"}
        How a class absent from a resample's truth counts (:mod:`roi_store.evaluation.metrics`).

    Returns
    -------
    dict
        ``{"UF1": [lo, hi], "UAR": [lo, hi], "subjects": S, "resamples": B, "exact": bool}``.
    """
    w, exact = _weights(len(counts), resamples, np.random.default_rng(seed))
    uf1, uar = scores_from_confusion(_pooled(w, counts), convention)
    return {"UF1": _interval(uf1, level), "UAR": _interval(uar, level), "subjects": len(counts),
            "resamples": len(w), "exact": exact}


def paired_bootstrap(counts_a: np.ndarray, counts_b: np.ndarray, *, resamples: int = 2000, seed: int = 0,
                     level: float = 0.95, convention: str = "present") -> dict:
    """Percentile interval of the difference A - B in UF1 and UAR, resampling subjects for both at once.

    Parameters
    ----------
    counts_a, counts_b : ndarray
        ``(S, C, C)`` per-subject counts of the two runs, subjects in the same order.
    resamples, seed, level, convention
        As :func:`bootstrap`.

    Returns
    -------
    dict
        ``{"UF1": [lo, hi], "UAR": [lo, hi], "resamples": B, "exact": bool}``.
    """
    w, exact = _weights(len(counts_a), resamples, np.random.default_rng(seed))
    fa, ra = scores_from_confusion(_pooled(w, counts_a), convention)
    fb, rb = scores_from_confusion(_pooled(w, counts_b), convention)
    return {"UF1": _interval(fa - fb, level), "UAR": _interval(ra - rb, level), "resamples": len(w),
            "exact": exact}


def paired_permutation(counts_a: np.ndarray, counts_b: np.ndarray, *, permutations: int = 10000, seed: int = 0,
                       convention: str = "present") -> dict:
    """Two-sided p-value of the difference A - B in UF1 and UAR, swapping the runs within subjects.

    Under the null hypothesis the two runs are exchangeable for each subject: each pattern
    swaps A's and B's predictions of some subjects. With all ``2**S`` patterns enumerated the
    p-value is the share of patterns with ``|d*| >= |d|`` (the identity among them); with
    ``P`` random patterns it is ``(1 + #{|d*| >= |d|}) / (1 + P)``.

    Parameters
    ----------
    counts_a, counts_b : ndarray
        ``(S, C, C)`` per-subject counts of the two runs, subjects in the same order.
    permutations : int
        Random swap patterns; all ``2**S`` instead when that is not more.
    seed : int
        Seed of the patterns.
    convention : {"present", "challenge"}
        As :func:`bootstrap`.

    Returns
    -------
    dict
        ``{"UF1": p, "UAR": p, "permutations": P, "exact": bool}``.
    """
    s, c, _ = counts_a.shape
    exact = 2 ** s <= permutations  # then all 2**S 0/1 swap patterns, else P random ones
    if exact:
        flips = ((np.arange(2 ** s)[:, None] >> np.arange(s)) & 1).astype(float)
    else:
        flips = np.random.default_rng(seed).integers(0, 2, size=(permutations, s)).astype(float)
    delta = (counts_b - counts_a).reshape(s, c * c).astype(float)
    moved = (flips @ delta).reshape(-1, c, c)
    total_a, total_b = counts_a.sum(axis=0), counts_b.sum(axis=0)
    fa, ra = scores_from_confusion(total_a + moved, convention)
    fb, rb = scores_from_confusion(total_b - moved, convention)
    obs_f, obs_r = (a - b for a, b in zip(scores_from_confusion(total_a, convention),
                                          scores_from_confusion(total_b, convention)))
    out = {"permutations": len(flips), "exact": exact}
    for name, d, obs in (("UF1", fa - fb, obs_f), ("UAR", ra - rb, obs_r)):
        hits = int(np.sum(np.abs(d) >= abs(obs) - 1e-12))  # ties within rounding count as extreme
        out[name] = hits / len(flips) if exact else (1 + hits) / (1 + len(flips))
    return out


def null_p_value(observed: float, null: list[float]) -> float | None:
    """Empirical p-value ``(1 + #{null >= observed}) / (1 + N)``; None without null runs."""
    if not null:
        return None
    return (1 + sum(v >= observed - 1e-12 for v in null)) / (1 + len(null))


def intervals(predictions: list[dict], classes: list[str], *, resamples: int = 2000, seed: int = 0,
              level: float = 0.95) -> dict:
    """:func:`bootstrap` of FULL and of each dataset (its subjects only), as ``report`` shows them.

    Returns
    -------
    dict
        ``{"method", "level", "resamples", "seed", "intervals": {group: bootstrap result}}``.
    """
    out = {name: bootstrap(subject_counts(preds, classes)[1], resamples=resamples, seed=seed, level=level)
           for name, preds in groups_of(predictions).items()}
    return {"method": "subject-level (cluster) bootstrap of the pooled predictions, percentile interval",
            "level": level, "resamples": resamples, "seed": seed, "intervals": out}


# --- two runs ---------------------------------------------------------------------------------
def compare_runs(store, run_a: str, run_b: str, *, resamples: int = 2000, permutations: int = 10000,
                 seed: int = 0, level: float = 0.95) -> dict:
    """Difference A - B of two fitted runs over the same clips, with a paired interval and p-value.

    Parameters
    ----------
    store : Store
        The store holding both runs.
    run_a, run_b : str
        Run names.
    resamples, permutations, seed, level
        Of :func:`paired_bootstrap` and :func:`paired_permutation`.

    Returns
    -------
    dict
        ``{"runs", "view", "clips", "subjects", "method", "scores": {group: {"UF1": {"a", "b",
        "difference", "interval", "p"}, "UAR": {...}, "subjects", "exact"}}}``.

    Raises
    ------
    RunMismatchError
        If the runs differ in view, classes, clips or ground truth.
    """
    doc_a, head_a = run_document(store, run_a), head_document(store, run_a)
    doc_b, head_b = run_document(store, run_b), head_document(store, run_b)
    va, vb = doc_a["settings"]["view"], doc_b["settings"]["view"]
    what = f"cannot compare runs {run_a!r} and {run_b!r}"
    if va != vb:
        raise RunMismatchError(f"{what}: view {va!r} is not view {vb!r}; compare runs of one view")
    if head_a["classes"] != head_b["classes"]:
        raise RunMismatchError(f"{what}: classes {head_a['classes']} are not {head_b['classes']}")
    pa = {p["id"]: p for p in head_a["predictions"]}
    pb = {p["id"]: p for p in head_b["predictions"]}
    if set(pa) != set(pb):
        only_a, only_b = sorted(set(pa) - set(pb)), sorted(set(pb) - set(pa))
        raise RunMismatchError(f"{what}: they score different clips ({len(only_a)} only in {run_a!r}, "
                               f"{len(only_b)} only in {run_b!r}, e.g. {(only_a or only_b)[0]}); compare runs over "
                               "the same clips")
    wrong = sorted(i for i in pa if pa[i]["true"] != pb[i]["true"])
    if wrong:
        raise RunMismatchError(f"{what}: they score {len(wrong)} clips against other labels (e.g. {wrong[0]}: "
                               f"{pa[wrong[0]]['true']} vs {pb[wrong[0]]['true']}); a permutation control is scored "
                               "against its shuffled labels, and a store re-ingested with other labels changes them")
    classes = head_a["classes"]
    preds_a = sorted(pa.values(), key=lambda p: p["id"])
    groups_b = groups_of([pb[p["id"]] for p in preds_a])
    out = {}
    for name, ga in groups_of(preds_a).items():
        subjects, ca = subject_counts(ga, classes)
        _, cb = subject_counts(groups_b[name], classes, subjects)
        (fa, ra), (fb, rb) = scores_from_confusion(ca.sum(0)), scores_from_confusion(cb.sum(0))
        ci = paired_bootstrap(ca, cb, resamples=resamples, seed=seed, level=level)
        test = paired_permutation(ca, cb, permutations=permutations, seed=seed)
        out[name] = {"subjects": len(subjects), "clips": len(ga), "exact_bootstrap": ci["exact"],
                     "exact_permutation": test["exact"], "permutations": test["permutations"]}
        for metric, a, b in (("UF1", fa, fb), ("UAR", ra, rb)):
            out[name][metric] = {"a": float(a), "b": float(b), "difference": float(a - b),
                                 "interval": ci[metric], "p": test[metric]}
    return {"runs": [run_a, run_b], "view": va, "classes": classes, "clips": len(preds_a),
            "subjects": out["FULL"]["subjects"],
            "method": {"interval": "paired subject-level bootstrap, percentile", "level": level,
                       "resamples": resamples, "test": "paired permutation within subjects, two-sided",
                       "permutations": permutations, "seed": seed},
            "scores": out}


def format_comparison(cmp: dict) -> str:
    """The text of ``roistore compare``."""
    a, b = cmp["runs"]
    pct = round(cmp["method"]["level"] * 100)
    lines = [f"{a} - {b}: view {cmp['view']}, {cmp['clips']} clips, {cmp['subjects']} subjects; "
             f"{pct} % interval: {cmp['method']['interval']}; p: {cmp['method']['test']}",
             f"{'':<8}{'':<5}{a[:10]:>10}{b[:10]:>10}{'A - B':>10}  {str(pct) + ' % interval':<22}{'p':>8}"]
    for name, g in cmp["scores"].items():
        for metric in METRICS:
            m = g[metric]
            lo, hi = m["interval"]
            lines.append(f"{name if metric == 'UF1' else '':<8}{metric:<5}{m['a']:>10.4f}{m['b']:>10.4f}"
                         f"{m['difference']:>+10.4f}  [{lo:+.4f}, {hi:+.4f}]    {m['p']:>8.4f}")
        note = "exact enumeration" if g["exact_permutation"] else f"{g['permutations']} random swaps"
        lines.append(f"{'':<8}{g['subjects']} subjects, {g['clips']} clips; p by {note}")
    return "\n".join(lines)


# --- repeats over seeds -------------------------------------------------------------------------
def group_names(store, prefix: str) -> list[str]:
    """Runs of the store whose name starts with ``prefix``, in natural order (run2 before run10)."""
    return sorted((n for n in run_names(store) if n.startswith(prefix)), key=natural_key)


def natural_key(name: str) -> list:
    """Sort key that orders the numbers inside names by value (s2 before s10)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def repeats(store, names: list[str], *, skip_unfinished: bool = False) -> dict:
    """Mean, standard deviation (n - 1) and range over runs, beside each run's pooled scores.

    Parameters
    ----------
    store : Store
        The store holding the runs.
    names : list of str
        The runs (e.g. :func:`group_names`).
    skip_unfinished : bool
        Leave out (and list under ``skipped``) runs without a fitted head and permutation
        controls, instead of raising (for a group chosen by name prefix).

    Returns
    -------
    dict
        ``{"runs": [{"run", "seed", "head_seed", "scores": {group: {"UF1", "UAR"}}}], "summary":
        {group: {metric: {"n", "mean", "sd", "min", "max"}}}, "varies": [...], "skipped": [...]}``.

    Raises
    ------
    RoiStoreError
        If a run has no fitted head (unless ``skip_unfinished``), or no run is left.
    """
    from roi_store.evaluation.report import head_scores

    runs, skipped, settings = [], [], []
    for name in names:
        if skip_unfinished:
            status = run_status(store, name)
            if not status["fitted"]:
                skipped.append({"run": name, "reason": f"{status['stage']} {status['state']}, no fitted head"})
                continue
            if (status["head_settings"] or {}).get("permute_labels") is not None:
                skipped.append({"run": name, "reason": "permutation control"})
                continue
        doc, head = run_document(store, name), head_document(store, name)
        runs.append({"run": name, "seed": doc["settings"].get("seed"), "head_seed": head["settings"].get("seed"),
                     "scores": head_scores(head)})
        settings.append({**{f"embed.{k}": v for k, v in doc["settings"].items()},
                         **{f"head.{k}": v for k, v in head["settings"].items()}})
    if not runs:
        raise RoiStoreError(f"no fitted run among {', '.join(names) or 'the names given'}: fit their heads first")
    varies = [k for k in sorted({k for s in settings for k in s}) if len({repr(s.get(k)) for s in settings}) > 1]
    summary = {}
    for g in runs[0]["scores"]:
        summary[g] = {}
        for m in METRICS:
            v = np.array([r["scores"][g][m] for r in runs if g in r["scores"]], dtype=float)
            summary[g][m] = {"n": len(v), "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else None,
                             "min": float(v.min()), "max": float(v.max())}
    return {"runs": runs, "summary": summary, "varies": varies, "skipped": skipped}


def format_repeats(rep: dict) -> str:
    """The text of a run group: each run's pooled scores, then mean, sd and range."""
    cols = list(rep["summary"])
    lines = [f"{len(rep['runs'])} runs" + (f" (settings that differ: {', '.join(rep['varies'])})" if rep["varies"]
                                             else " (identical settings)"),
             f"{'':<16}" + "".join(f"{c:>16}" for c in cols),
             f"{'':<16}" + "".join(f"{'UF1':>8}{'UAR':>8}" for _ in cols)]
    for r in rep["runs"]:
        lines.append(f"{r['run'][:15]:<16}" + "".join(
            f"{r['scores'][c]['UF1']:>8.4f}{r['scores'][c]['UAR']:>8.4f}" if c in r["scores"] else f"{'-':>16}"
            for c in cols))
    for stat in ("mean", "sd", "min", "max"):
        values = [rep["summary"][c][m][stat] for c in cols for m in METRICS]
        lines.append(f"{stat:<16}" + "".join(f"{v:>8.4f}" if v is not None else f"{'-':>8}" for v in values))
    lines.append("sd: sample standard deviation (n - 1); min/max: the range over the runs")
    lines += [f"skipped {s['run']}: {s['reason']}" for s in rep["skipped"]]
    return "\n".join(lines)
