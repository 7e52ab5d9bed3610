"""Methods side by side: runs of different methods (the paper's region CNNs + LSTM, STSTNet) on one table.

Each run's pooled UF1 and UAR with its subject-bootstrap interval, and each later run against
the first: the difference, its paired subject-bootstrap interval and the paired permutation
p-value (:func:`roi_store.evaluation.stats.compare_runs`). The runs must score the same clips
against the same labels; whether their folds test the same subjects is said beside the table.
"""

from __future__ import annotations

from roi_store.evaluation import stats
from roi_store.evaluation.stats import METRICS, compare_runs, intervals
from roi_store.evaluation.report import scores
from roi_store.store.runs import head_document, run_document


def method_of(doc: dict) -> str:
    """A run's method: ``settings.method`` of a flow-method run (``ststnet``), else its ``kind``."""
    return (doc.get("settings") or {}).get("method") or doc.get("kind", "region-cnn+lstm")


def methods_of(store, names: list[str]) -> dict[str, str]:
    """Each run's method (:func:`method_of`), read from its status as ``roistore runs`` reads it."""
    return {n: (stats.run_status(store, n)["settings"] or {}).get("method") or "region-cnn+lstm" for n in names}


def side_by_side(store, names: list[str], *, resamples: int = 2000, permutations: int = 10000, seed: int = 0,
                 level: float = 0.95) -> dict:
    """Scores with intervals of each run, and each run against the first with a paired interval and p-value.

    Parameters
    ----------
    store : Store
        The store holding the runs.
    names : list of str
        Two or more fitted runs over the same clips; the first is the reference.
    resamples, permutations, seed, level
        Of the subject bootstrap and the paired permutation test.

    Returns
    -------
    dict
        ``{"runs": [{"run", "method", "features", "protocol", "folds", "permuted", "scores": {group: {"UF1",
        "UAR", "clips"}}, "intervals": {group: {"UF1": [lo, hi], "UAR": [lo, hi], "subjects"}}}],
        "comparisons": [compare_runs(first, run) for each later run], "same_folds": bool,
        "clips", "subjects", "level"}``.

    Raises
    ------
    RunMismatchError
        If two runs score different clips, views, classes or labels.
    RoiStoreError
        If a run is not fitted.
    """
    rows, fold_sets = [], []
    for name in names:
        doc, head = run_document(store, name), head_document(store, name)
        sc = scores(head["predictions"], head["classes"])
        ci = intervals(head["predictions"], head["classes"], resamples=resamples, seed=seed, level=level)
        rows.append({"run": name, "method": method_of(doc), "features": doc["settings"].get("features"),
                     "protocol": doc["settings"]["protocol"], "folds": len(doc["folds"]),
                     "permuted": head["settings"].get("permute_labels") is not None,
                     "scores": {g: {m: v[m] for m in (*METRICS, "clips")} for g, v in sc.items()},
                     "intervals": {g: {m: v[m] for m in (*METRICS, "subjects")} for g, v in ci["intervals"].items()}})
        fold_sets.append(sorted(sorted(f["test_subjects"]) for f in doc["folds"]))
    comparisons = [compare_runs(store, names[0], other, resamples=resamples, permutations=permutations, seed=seed,
                                level=level) for other in names[1:]]
    full = rows[0]["intervals"]["FULL"]
    return {"runs": rows, "comparisons": comparisons, "same_folds": all(f == fold_sets[0] for f in fold_sets),
            "clips": rows[0]["scores"]["FULL"]["clips"], "subjects": full["subjects"], "level": level,
            "method": {"interval": "subject-level (cluster) bootstrap, percentile", "resamples": resamples,
                       "test": "paired permutation within subjects, two-sided", "permutations": permutations,
                       "seed": seed}}


def format_side_by_side(table: dict) -> str:
    """The text of ``report --runs A,B`` for runs of different methods: one block per column (FULL, datasets)."""
    pct = f"{round(table['level'] * 100)}%"
    first = table["runs"][0]
    folds = "the same folds" if table["same_folds"] else "DIFFERENT folds (compare with care)"
    lines = [f"methods side by side: {table['clips']} clips, {table['subjects']} subjects, {folds} "
             f"({first['protocol']}, {first['folds']} folds); {pct} intervals: {table['method']['interval']}; "
             f"p: {table['method']['test']}"]
    width = max(12, *(len(r["run"]) + 2 for r in table["runs"]), *(len(r["run"]) + len(first["run"]) + 5
                                                                   for r in table["runs"][1:]))
    for group in first["scores"]:
        sc, ci = first["scores"][group], first["intervals"][group]
        lines += ["", f"{group} ({sc['clips']} clips, {ci['subjects']} subjects)",
                  f"  {'run':<{width}}{'method':<18}" + "".join(f"{m:>8}  {pct + ' interval':<18}" for m in METRICS)]
        for r in table["runs"]:
            if group not in r["scores"]:
                continue
            method = r["method"] + (f" ({r['features']})" if r["features"] else "") + (" PERM" if r["permuted"] else "")
            cells = "".join("{:>8.4f}  [{:.3f}, {:.3f}]    ".format(r["scores"][group][m], *r["intervals"][group][m])
                            for m in METRICS)
            lines.append(f"  {r['run']:<{width}}{method[:17]:<18}{cells}")
        for cmp in table["comparisons"]:
            g = cmp["scores"].get(group)
            if g is None:
                continue
            a, b = cmp["runs"]
            cells = "".join("{:>+8.4f}  [{:+.3f}, {:+.3f}] p {:.4f}  ".format(g[m]["difference"] * -1,
                                                                            *(-v for v in g[m]["interval"][::-1]),
                                                                            g[m]["p"]) for m in METRICS)
            lines.append(f"  {b + ' - ' + a:<{width}}{'':<18}{cells}")
    lines += ["", "differences: later run minus the first, paired over subjects; p: two-sided, "
                  + ("exact (every swap pattern)" if all(c["scores"]["FULL"]["exact_permutation"]
                                                         for c in table["comparisons"])
                     else f"{table['method']['permutations']} random within-subject swaps")]
    return "\n".join(line.rstrip() for line in lines)
