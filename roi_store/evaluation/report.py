"""``report``: MEGC 2019 tables from a run's pooled predictions (METHOD.md §7)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from roi_store.evaluation.metrics import scores_from_confusion
from roi_store.evaluation.stats import METRICS, groups_of, intervals, null_p_value, subject_counts, subject_table
from roi_store.store.runs import head_document, list_runs, run_document
from roi_store.store.store import Store

LEAKAGE_WARNING = ("LEAKAGE: the region CNNs were trained on every clip, test subjects included "
                   "(--cnn-scope global); these scores are optimistic")
CONVENTION = ("a class absent from a column's truth is left out of its UF1 and UAR (roistore's convention); "
              "the challenge's scoring counts such a class with F1 0 in UF1 when it is predicted")
#: Subjects of each dataset in the MEGC 2019 composite: its LOSO protocol has one fold per subject.
CHALLENGE_SUBJECTS = {"smic": 16, "casme2": 24, "samm": 28}
#: Settings in which a null (permutation-control) run may differ from the run it controls.
PERMUTATION_KEYS = ("permute_labels", "permute_within", "head_only_permutation")


def scores(predictions: list[dict], classes: list[str]) -> dict:
    """UF1/UAR for FULL and per dataset, each computed once on the pooled predictions.

    Parameters
    ----------
    predictions : list of dict
        ``{"id", "true", "pred", ...}`` with class names.
    classes : list of str
        The run's classes.

    Returns
    -------
    dict
        Group (``FULL``, then each dataset) -> ``{"UF1", "UAR", "clips", "recall": {class:
        recall or None}, "absent": [classes absent from the truth], "challenge": {"UF1",
        "UAR"}}``, at full precision; ``challenge`` is scored with the challenge's convention
        (:mod:`roi_store.evaluation.metrics`), equal to UF1/UAR when no class is absent.
    """
    out = {}
    for name, preds in groups_of(predictions).items():
        m = subject_counts(preds, classes)[1].sum(axis=0)
        n = m.sum(axis=1)
        uf1, uar = scores_from_confusion(m)
        cf1, car = scores_from_confusion(m, "challenge")
        out[name] = {"UF1": float(uf1), "UAR": float(uar), "clips": len(preds),
                     "recall": {c: float(m[i, i] / n[i]) if n[i] else None for i, c in enumerate(classes)},
                     "absent": [c for c, k in zip(classes, n) if k == 0],
                     "challenge": {"UF1": float(cf1), "UAR": float(car)}}
    return out


def head_scores(head: dict) -> dict:
    """UF1 and UAR of FULL and each dataset (:func:`scores`) of a head document's predictions."""
    return {g: {m: v[m] for m in METRICS} for g, v in scores(head["predictions"], head["classes"]).items()}


def _without_permutation(settings: dict | None) -> dict:
    """Settings to match null runs on: a setting left unset (None) equals one that a run made
    before that setting existed does not carry."""
    return {k: v for k, v in (settings or {}).items() if k not in PERMUTATION_KEYS and v is not None}


def null_runs(store: Store, run: str, embed_settings: dict, head_settings: dict) -> list[dict]:
    """The fitted permutation controls of ``run``: every embed and head setting equal but the permutation's.

    Returns
    -------
    list of dict
        ``{"run", "permute_labels", "permute_within", "scores": {group: {"UF1", "UAR"}}}`` by run name.
    """
    out = []
    for other in list_runs(store):
        hs = other.get("head_settings") or {}
        if other["name"] == run or not other["fitted"] or hs.get("permute_labels") is None:
            continue
        if _without_permutation(other["settings"]) != _without_permutation(embed_settings) or \
                _without_permutation(hs) != _without_permutation(head_settings):
            continue
        out.append({"run": other["name"], "permute_labels": hs["permute_labels"],
                    "permute_within": hs.get("permute_within") or (other["settings"] or {}).get("permute_within"),
                    "scores": head_scores(head_document(store, other["name"]))})
    return out


def scored_runs(store: Store) -> list[dict]:
    """Every run's :func:`~roi_store.store.runs.run_status`, with ``scores``: FULL UF1 and UAR once its head is
    fitted."""
    return [{**r, "scores": head_scores(head_document(store, r["name"]))["FULL"] if r["fitted"] else None}
            for r in list_runs(store)]


def run_report(store: Store, run: str, *, resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Scores, intervals, per-subject table, confusion matrix, settings, null runs and predictions of a fitted run.

    Parameters
    ----------
    store : Store
        The store holding the run.
    run : str
        The run's name.
    resamples, seed, level
        Of the subject-level bootstrap (:func:`roi_store.evaluation.stats.intervals`).

    Returns
    -------
    dict
        What ``roistore report --json`` prints (the docs: Command reference, report).

    Raises
    ------
    RoiStoreError
        If the run has no fitted head.
    """
    doc, head = run_document(store, run), head_document(store, run)
    classes, preds = head["classes"], head["predictions"]
    e, h = doc["settings"], head["settings"]
    out = {
        "run": run,
        "state": doc.get("state"),
        "classes": classes,
        "scores": scores(preds, classes),
        "confusion": subject_counts(preds, classes)[1].sum(axis=0).tolist(),
        "predictions": [{"id": p["id"], "fold": p["fold"], "true": p["true"], "pred": p["pred"], "probs": p["probs"]}
                        for p in preds],
        "leakage": bool(doc.get("leakage")),
        "permuted": h.get("permute_labels") is not None,
        "settings": {"embed": e, "head": h},
        "preset": e.get("preset") or h.get("preset"),
        "folds": len(doc["folds"]),
        "device": doc.get("device") or head.get("timings", {}).get("device"),
        "timings": {**doc.get("timings", {}), **head.get("timings", {})},
        "convention": {"used": "present", "text": CONVENTION},
        "uncertainty": intervals(preds, classes, resamples=resamples, seed=seed, level=level),
        "subjects": subject_table(preds, classes),
        "controls": [],
        "null": {"runs": 0, "p": None},
    }
    if out["leakage"]:
        out["warning"] = LEAKAGE_WARNING
    if e["protocol"] == "loso" and e["view"] == "megc2019":
        out["megc2019_folds"] = challenge_folds(doc["folds"])
    if not out["permuted"]:
        out["controls"] = null_runs(store, run, e, h)
        full = out["scores"]["FULL"]
        out["null"] = {"runs": len(out["controls"]),
                       "matching": "every embed and head setting equal except " + ", ".join(PERMUTATION_KEYS),
                       "p": {m: null_p_value(full[m], [c["scores"]["FULL"][m] for c in out["controls"]])
                             for m in METRICS} if out["controls"] else None}
    return out


def challenge_folds(folds: list[dict]) -> dict:
    """Whether a LOSO run of the megc2019 view has the challenge's 68 folds (16 SMIC, 24 CASME II, 28 SAMM)."""
    tested = [s for fold in folds
              for s in fold.get("test_subjects") or sorted({c.rsplit("/", 1)[0] for c in fold.get("test_clips", [])})]
    subjects = dict(Counter(s.split("/")[0] for s in tested))
    return {"folds": len(folds), "subjects": subjects, "challenge": dict(CHALLENGE_SUBJECTS),
            "conformant": len(folds) == sum(CHALLENGE_SUBJECTS.values()) and subjects == CHALLENGE_SUBJECTS}


def _cell(v: float | None, width: int = 8) -> str:
    return f"{v:>{width}.4f}" if v is not None and v == v else f"{'-':>{width}}"


def format_report(rep: dict) -> str:
    """A Table-2-style text table with intervals, recall, confusion matrix, settings, null runs and subjects."""
    cols = ["FULL"] + [d for d in ("smic", "casme2", "samm") if d in rep["scores"]] + \
        sorted(k for k in rep["scores"] if k not in ("FULL", "smic", "casme2", "samm"))
    lines = [f"!! {rep['warning']}", ""] if rep.get("warning") else []
    lines += [f"run {rep['run']}" + (f" (preset {rep['preset']})" if rep.get("preset") else "")
              + (" (permutation control)" if rep["permuted"] else ""),
              f"{'':<10}" + "".join(f"{c:>16}" for c in cols),
              f"{'':<10}" + "".join(f"{'UF1':>8}{'UAR':>8}" for _ in cols),
              f"{'method':<10}" + "".join(_cell(rep["scores"][c]["UF1"]) + _cell(rep["scores"][c]["UAR"])
                                          for c in cols)]
    unc = rep.get("uncertainty")
    if unc:
        pct = f"{round(unc['level'] * 100)}%"
        for m in METRICS:
            cells = ("[{:.3f},{:.3f}]".format(*unc["intervals"][c][m]) for c in cols)
            lines.append(f"{m + ' ' + pct:<10}" + "".join(f"{cell:>16}" for cell in cells))
    for ctrl in rep.get("controls", []):
        lines.append(f"{'perm ' + str(ctrl['permute_labels']):<10}" + "".join(
            _cell(ctrl["scores"][c]["UF1"]) + _cell(ctrl["scores"][c]["UAR"]) if c in ctrl["scores"] else f"{'-':>16}"
            for c in cols) + f"   (control run {ctrl['run']})")
    lines.append(f"{'clips':<10}" + "".join(f"{rep['scores'][c]['clips']:>16}" for c in cols))
    if unc:
        lines.append(f"{'subjects':<10}" + "".join(f"{unc['intervals'][c]['subjects']:>16}" for c in cols))
        exact = [f"{c} {unc['intervals'][c]['resamples']}" for c in cols if unc["intervals"][c]["exact"]]
        lines.append(f"intervals: {unc['method']}, {unc['resamples']} resamples, seed {unc['seed']}"
                     + (f" (all possible draws enumerated instead: {', '.join(exact)})" if exact else ""))
    null = rep.get("null")
    if null and null["runs"]:
        lines.append(f"null model: {null['runs']} permutation control run(s) of the same settings; p (FULL) = "
                     f"(1 + #null >= observed) / (1 + N): UF1 {null['p']['UF1']:.4f}, UAR {null['p']['UAR']:.4f}")
    elif null is not None and not rep["permuted"]:
        make = ("fit" if rep["settings"]["embed"].get("method") else "embed and fit-lstm")
        lines.append(f"null model: no permutation control run with the same settings ({make} with the "
                     "same settings and --permute-labels SEED make one)")
    for c in cols:
        sc = rep["scores"][c]
        if sc.get("absent"):
            lines.append(f"{c}: no {', '.join(sc['absent'])} clips; UF1/UAR above leave the absent class out "
                         f"(roistore's convention); the challenge's convention (a predicted-but-absent class counts "
                         f"with F1 0): UF1 {sc['challenge']['UF1']:.4f}, UAR {sc['challenge']['UAR']:.4f}")
    width = max(len(c) for c in rep["classes"]) + 2
    lines += ["", "recall per class (FULL): " + ", ".join(
        f"{k} {v:.3f}" if v is not None else f"{k} -" for k, v in rep["scores"]["FULL"]["recall"].items()),
        "confusion (rows true, columns predicted):", " " * width + "".join(f"{c:>{width}}" for c in rep["classes"])]
    for c, row in zip(rep["classes"], rep["confusion"]):
        lines.append(f"{c:<{width}}" + "".join(f"{v:>{width}}" for v in row))
    e, h = rep["settings"]["embed"], rep["settings"]["head"]
    folds = f"protocol {e['protocol']}{' K=' + str(e['folds']) if e.get('folds') else ''} ({rep['folds']} folds), "
    if e.get("method"):  # a method on a flow feature set (STSTNet): one network per fold, no head
        lines += ["", f"method {e['method']} on flow set {e['features']}, " + folds
                  + f"view {e['view']}, epochs {e['epochs']}, batch {e['batch_size']}, learning rate "
                  f"{e['learning_rate']:g}, seed {e['seed']}, device {rep.get('device')}"]
    else:
        lines += ["", ("preset " + str(rep["preset"]) + ", " if rep.get("preset") else "") + folds
                  + f"view {e['view']}, cnn scope {e['cnn_scope']}, relabel {e['relabel']}, cnn epochs {e['epochs']}, "
                  f"head epochs {h['epochs']}, masked {h['masked']}, seed {e['seed']}/{h['seed']}, "
                  f"device {rep.get('device')}"]
    if rep.get("subjects"):
        lines += ["", "per subject (recall: mean over the subject's classes):",
                  f"{'subject':<16}{'folds':>8}{'clips':>7}{'correct':>9}{'accuracy':>10}{'recall':>8}"]
        for s in rep["subjects"]:
            folds = ",".join(str(f) for f in s["folds"])
            lines.append(f"{s['subject']:<16}{folds:>8}{s['clips']:>7}{s['correct']:>9}{s['accuracy']:>10.3f}"
                         f"{s['recall']:>8.3f}")
    folds = rep.get("megc2019_folds")
    if folds and not folds["conformant"]:
        have = ", ".join(f"{d} {folds['subjects'].get(d, 0)}" for d in CHALLENGE_SUBJECTS)
        lines += ["", f"note: LOSO on the megc2019 view with {folds['folds']} folds ({have} subjects), not the "
                      f"challenge's 68 (smic 16, casme2 24, samm 28): not comparable with MEGC 2019 results"]
    if rep.get("megc_log"):
        log = rep["megc_log"]
        lines += ["", f"wrote MEGC 2019 log {log['path']}: {log['folds']} folds, {log['clips']} clips; scored from "
                      f"the file as the challenge does: UF1 {log['UF1']:.4f}, UAR {log['UAR']:.4f}"]
    return "\n".join(lines)


def write_plots(rep: dict, out_dir: str | Path) -> list[Path]:
    """Confusion matrix, per-dataset UF1/UAR bars, intervals and per-subject chart as PNG files in ``out_dir``.

    Parameters
    ----------
    rep : dict
        :func:`run_report`'s result.
    out_dir : path
        Folder to write into (made if needed).

    Returns
    -------
    list of Path
        The files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from roi_store.evaluation import figures

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = rep["run"]

    def write(name: str, png: bytes) -> Path:
        path = out / f"{run}_{name}.png"
        path.write_bytes(png)
        return path

    # The HTML report's figures, as files.
    paths = [write("confusion", figures.confusion_figure(rep["confusion"], rep["classes"],
                                                         f"{run}: confusion (pooled)"))]
    names = list(rep["scores"])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(names))
    ax.bar(x - 0.2, [rep["scores"][n]["UF1"] for n in names], 0.4, label="UF1")
    ax.bar(x + 0.2, [rep["scores"][n]["UAR"] for n in names], 0.4, label="UAR")
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title(f"{run}: UF1 / UAR per dataset")
    paths.append(_save(fig, plt, out / f"{run}_datasets.png"))
    if rep.get("uncertainty"):
        paths.append(write("intervals", figures.scores_figure(rep)))
    if rep.get("subjects"):
        paths.append(write("subjects", figures.subjects_figure(rep["subjects"])))
    return paths


def _save(fig, plt, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
