"""Evaluation: intervals, p-values, the MEGC 2019 log, view conformance, repeats, comparisons.

Expected numbers are worked out apart from roi_store.evaluation.metrics: by hand in the docstrings, or by the
scorer below (the challenge's definition) over an exact enumeration of resamples or swap patterns.
"""

from __future__ import annotations

import itertools
import json
import types

import numpy as np
import pytest
from click.testing import CliRunner

import roi_store.evaluation.stats as ev
import roi_store.evaluation.report as rp
from roi_store.cli.main import cli
from roi_store.evaluation.megc import compare_view, megc_log, score_log
from roi_store.evaluation.metrics import uf1_uar

CLASSES = ["negative", "positive", "surprise"]
CODE = {c: i for i, c in enumerate(CLASSES)}


# --- an independent scorer (the challenge's definition) ---------------------------------------
def challenge_scores(pairs, n_classes=3, convention="challenge"):
    """UF1/UAR from (true, pred) index pairs: TP/FP/FN per class over all pairs, then the class mean.

    ``challenge``: UF1 over classes in the truth or predicted (a predicted-but-absent class has
    F1 0), UAR over classes in the truth. ``present``: both over classes in the truth.
    """
    f1s, recalls = [], []
    for c in range(n_classes):
        tp = sum(1 for t, p in pairs if t == c and p == c)
        fp = sum(1 for t, p in pairs if t != c and p == c)
        fn = sum(1 for t, p in pairs if t == c and p != c)
        in_truth = tp + fn > 0
        if in_truth or (convention == "challenge" and fp > 0):
            f1s.append(2 * tp / (2 * tp + fp + fn))
        if in_truth:
            recalls.append(tp / (tp + fn))
    return sum(f1s) / len(f1s), sum(recalls) / len(recalls)


def parse_log(text):
    """The challenge's log read back: {(database, subject): [(video, truth, prediction)]}."""
    blocks, current = {}, None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            current = blocks.setdefault(tuple(parts), [])
        else:
            current.append((parts[0], int(parts[1]), int(parts[2])))
    return blocks


def P(clip_id, true, pred, fold=0):  # noqa: N802 - a short constructor for hand-made predictions
    return {"id": clip_id, "fold": fold, "true": true, "pred": pred, "probs": [1 / 3] * 3}


def pairs_of(preds):
    return [(CODE[p["true"]], CODE[p["pred"]]) for p in preds]


# --- metrics --------------------------------------------------------------------------------------
def test_conventions_for_a_class_absent_from_the_truth_and_full_precision():
    """Truth neg, neg, pos; predicted neg, sur, pos. F1: neg 2/3, pos 1, sur 0 (2TP+FP+FN = 1).
    Present: UF1 = (2/3 + 1) / 2 = 5/6; challenge: (2/3 + 1 + 0) / 3 = 5/9. UAR: (1/2 + 1) / 2 = 3/4."""
    assert uf1_uar([0, 0, 1], [0, 2, 1], 3) == pytest.approx((5 / 6, 3 / 4))
    assert uf1_uar([0, 0, 1], [0, 2, 1], 3, convention="challenge") == pytest.approx((5 / 9, 3 / 4))
    assert challenge_scores([(0, 0), (0, 2), (1, 1)]) == pytest.approx((5 / 9, 3 / 4))
    # the same clips in a report's casme2 column, with full precision
    preds = [P("casme2/sub01/a", "negative", "negative"), P("casme2/sub01/b", "negative", "surprise"),
             P("casme2/sub02/c", "positive", "positive"), P("samm/006/d", "surprise", "negative"),
             P("samm/006/e", "negative", "negative")]
    sc = rp.scores(preds, CLASSES)
    assert sc["casme2"]["UF1"] == pytest.approx(5 / 6, rel=1e-12) and sc["casme2"]["UF1"] != round(5 / 6, 4)
    assert sc["casme2"]["absent"] == ["surprise"]
    assert sc["casme2"]["challenge"] == {"UF1": pytest.approx(5 / 9), "UAR": pytest.approx(3 / 4)}
    assert (sc["FULL"]["UF1"], sc["FULL"]["UAR"]) == pytest.approx(challenge_scores(pairs_of(preds)))
    assert sc["FULL"]["UAR"] == pytest.approx((2 / 3 + 1 + 0) / 3) and sc["FULL"]["absent"] == []


# --- bootstrap ------------------------------------------------------------------------------------
def test_bootstrap_by_hand_two_subjects():
    """X right on both clips, Y wrong on both. Resamples XX (1), XY, YX (each a and b 1 TP, 1 FP,
    1 FN: F1 1/2), YY (0): sorted 0, .5, .5, 1; linear quantiles at 2.5 % and 97.5 % of 4 values:
    0 + .075 * .5 = .0375 and .5 + .925 * .5 = .9625."""
    preds = [P("casme2/sub01/a", "negative", "negative"), P("casme2/sub01/b", "positive", "positive"),
             P("casme2/sub02/c", "negative", "positive"), P("casme2/sub02/d", "positive", "negative")]
    _, counts = ev.subject_counts(preds, CLASSES)
    out = ev.bootstrap(counts, resamples=2000)
    assert out["exact"] and out["resamples"] == 4 and out["subjects"] == 2
    assert out["UF1"] == pytest.approx([0.0375, 0.9625]) and out["UAR"] == pytest.approx([0.0375, 0.9625])


TINY = [P("casme2/sub01/a", "negative", "negative"), P("casme2/sub01/b", "negative", "positive"),
        P("casme2/sub01/c", "surprise", "surprise"), P("casme2/sub02/d", "positive", "positive"),
        P("casme2/sub03/e", "negative", "surprise"), P("casme2/sub03/f", "positive", "positive"),
        P("casme2/sub03/g", "surprise", "negative"), P("casme2/sub03/h", "negative", "negative")]


def test_bootstrap_resamples_subjects_exactly_enumerated_or_seeded():
    """All 3**3 ordered draws of the three subjects, pooled clip by clip and scored independently."""
    by_subject = {}
    for p in TINY:
        by_subject.setdefault(ev.subject_of(p["id"]), []).append(p)
    subjects = sorted(by_subject)
    values = [challenge_scores([x for s in draw for x in pairs_of(by_subject[s])], convention="present")
              for draw in itertools.product(subjects, repeat=3)]
    uf1, uar = np.array(values).T
    out = ev.bootstrap(ev.subject_counts(TINY, CLASSES)[1], resamples=27)
    assert out["exact"] and out["resamples"] == 27
    assert out["UF1"] == pytest.approx(list(np.quantile(uf1, [0.025, 0.975])))
    assert out["UAR"] == pytest.approx(list(np.quantile(uar, [0.025, 0.975])))
    # Resampling clips instead would give another interval: the subjects' clusters matter.
    clip_values = [challenge_scores(pairs_of(d), convention="present") for d in itertools.product(TINY[:5], repeat=5)]
    assert list(np.quantile(np.array(clip_values)[:, 0], [0.025, 0.975])) != pytest.approx(out["UF1"])
    # random draws: seeded, near the exact interval (all 5**5 draws of 5 subjects)
    preds = [P(f"samm/{s:03d}/c{j}", CLASSES[(s + j) % 3], CLASSES[(s * j) % 3]) for s in range(5) for j in range(4)]
    counts = ev.subject_counts(preds, CLASSES)[1]
    exact = ev.bootstrap(counts, resamples=5 ** 5)
    drawn = ev.bootstrap(counts, resamples=3000, seed=4)
    assert exact["exact"] and not drawn["exact"] and drawn == ev.bootstrap(counts, resamples=3000, seed=4)
    assert drawn["UF1"] == pytest.approx(exact["UF1"], abs=0.04)


# --- paired tests ---------------------------------------------------------------------------------
def test_paired_permutation_by_hand():
    """A right on all four clips of X and Y, B wrong on all: d = 1 - 0. Swapping one subject gives
    each run one right and one wrong subject (d = 0), swapping both d = -1: 2 of 4 patterns have
    |d| >= 1, p = 1/2. The paired bootstrap of d: XX, YY: 1; XY, YX: 1; interval [1, 1]."""
    a = [P("smic/s1/a", "negative", "negative"), P("smic/s1/b", "positive", "positive"),
         P("smic/s2/c", "negative", "negative"), P("smic/s2/d", "positive", "positive")]
    b = [{**p, "pred": "positive" if p["true"] == "negative" else "negative"} for p in a]
    subjects, ca = ev.subject_counts(a, CLASSES)
    _, cb = ev.subject_counts(b, CLASSES, subjects)
    test = ev.paired_permutation(ca, cb)
    assert test["exact"] and test["permutations"] == 4 and test["UF1"] == 0.5 and test["UAR"] == 0.5
    assert ev.paired_bootstrap(ca, cb)["UF1"] == pytest.approx([1.0, 1.0])


def test_paired_permutation_exactly_enumerated():
    """All 2**3 within-subject swap patterns of TINY against another run, scored independently."""
    other = [{**p, "pred": CLASSES[(CODE[p["pred"]] + (i % 2)) % 3]} for i, p in enumerate(TINY)]
    subjects = sorted({ev.subject_of(p["id"]) for p in TINY})

    def d(swapped, metric):
        ra = [y if ev.subject_of(x["id"]) in swapped else x for x, y in zip(TINY, other)]
        rb = [x if ev.subject_of(x["id"]) in swapped else y for x, y in zip(TINY, other)]
        return (challenge_scores(pairs_of(ra), convention="present")[metric]
                - challenge_scores(pairs_of(rb), convention="present")[metric])

    _, ca = ev.subject_counts(TINY, CLASSES, subjects)
    _, cb = ev.subject_counts(other, CLASSES, subjects)
    test = ev.paired_permutation(ca, cb, permutations=8)
    for metric, name in ((0, "UF1"), (1, "UAR")):
        observed = d(set(), metric)
        patterns = [set(c) for k in range(4) for c in itertools.combinations(subjects, k)]
        expected = sum(abs(d(s, metric)) >= abs(observed) - 1e-12 for s in patterns) / 8
        assert test[name] == pytest.approx(expected)
    drawn = ev.paired_permutation(ca, cb, permutations=5, seed=1)
    assert not drawn["exact"] and round(drawn["UF1"] * 6) == drawn["UF1"] * 6  # (1 + hits) / (1 + 5)


def composite_predictions(seed=0, accuracy=0.7):
    """442 predictions of 68 subjects (16 SMIC, 24 CASME II, 28 SAMM), as the composite has."""
    rng = np.random.default_rng(seed)
    subjects = ([f"smic/s{i}" for i in range(1, 17)] + [f"casme2/sub{i:02d}" for i in range(1, 25)]
                + [f"samm/{i:03d}" for i in range(6, 34)])
    preds = []
    for k, s in enumerate(subjects):
        for j in range(7 if k < 34 else 6):
            t = CLASSES[rng.integers(3)]
            y = t if rng.random() < accuracy else CLASSES[rng.integers(3)]
            preds.append(P(f"{s}/c{j}", t, y, fold=k))
    return preds


def test_composite_sized_bootstrap_and_permutation():
    """The size the report works at (442 predictions, 68 subjects); timed in the final report, not here."""
    a, b = composite_predictions(0, 0.7), composite_predictions(0, 0.5)
    assert len(a) == 442
    subjects, ca = ev.subject_counts(a, CLASSES)
    _, cb = ev.subject_counts(b, CLASSES, subjects)
    boot = ev.bootstrap(ca)
    full = rp.scores(a, CLASSES)["FULL"]
    assert len(subjects) == 68 and boot["resamples"] == 2000 and not boot["exact"]
    assert boot["UF1"][0] < full["UF1"] < boot["UF1"][1] and boot["UAR"][0] < full["UAR"] < boot["UAR"][1]
    test = ev.paired_permutation(ca, cb)
    assert test["permutations"] == 10000 and test["UF1"] < 0.01


# --- MEGC 2019 log ----------------------------------------------------------------------------------
LOG_PREDS = [P("casme2/sub01/EP02_01f", "positive", "positive", 0), P("casme2/sub01/EP19_05f", "negative", "surprise", 0),
             P("samm/006/006_1_2", "negative", "negative", 1), P("samm/006/006_1_10", "surprise", "negative", 1),
             P("samm/006/006_1_3", "surprise", "surprise", 1),
             P("smic/s2/s2_po_01", "positive", "negative", 3), P("smic/s1/s1_ne_01", "negative", "negative", 2),
             P("smic/s1/s1_sur_02", "surprise", "positive", 2)]


def test_megc_log_spelling_order_and_scores(tmp_path):
    text = megc_log(LOG_PREDS, CLASSES)
    assert text.splitlines()[:3] == ["casme2 sub01", "EP02_01f 1 1", "EP19_05f 0 2"]
    blocks = parse_log(text)
    assert list(blocks) == [("casme2", "sub01"), ("samm", "006"), ("smic", "s01"), ("smic", "s02")]
    assert blocks[("samm", "006")] == [("006_1_2", 0, 0), ("006_1_3", 2, 2), ("006_1_10", 2, 0)]
    assert blocks[("smic", "s01")] == [("s01_ne_01", 0, 0), ("s01_sur_02", 2, 1)]
    pairs = [(t, y) for rows in blocks.values() for _, t, y in rows]
    full = rp.scores(LOG_PREDS, CLASSES)["FULL"]
    assert challenge_scores(pairs) == pytest.approx((full["UF1"], full["UAR"]))
    assert score_log(text) == {"UF1": pytest.approx(full["UF1"]), "UAR": pytest.approx(full["UAR"]), "folds": 4,
                               "clips": 8}
    from roi_store.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot write a MEGC 2019 log for run 'x': its classes happy have no code"):
        megc_log([], ["negative", "happy"], "x")


# --- view conformance ---------------------------------------------------------------------------------
def composite_records():
    """442 clip records with the published counts (SAMM 032_3_1 among them) and a few excluded clips."""
    from roi_store.evaluation.megc import PUBLISHED

    emotion = {"casme2": {"negative": "disgust", "positive": "happiness", "surprise": "surprise"},
               "samm": {"negative": "Anger", "positive": "Happiness", "surprise": "Surprise"},
               "smic": {"negative": "negative", "positive": "positive", "surprise": "surprise"}}
    subject = {"casme2": lambda i: f"sub{i % 24 + 1:02d}", "samm": lambda i: f"{i % 28 + 6:03d}",
               "smic": lambda i: f"s{i % 16 + 1}"}
    recs = []
    for d, row in PUBLISHED.items():
        for i, c in enumerate(c for c, n in row.items() for _ in range(n)):
            s = subject[d](i)
            recs.append((f"{d}/{s}/{s}_{c[:2]}_{i:03d}" if d != "casme2" else f"{d}/{s}/EP{i:03d}", emotion[d][c], c))
    recs[[r[0] for r in recs].index("samm/032/032_ne_026")] = ("samm/032/032_3_1", "Fear", "negative")
    recs += [("casme2/sub04/EP12_01f", "disgust", None), ("samm/007/007_9_9", "Other", None)]
    return [types.SimpleNamespace(id=i, dataset=i.split("/")[0], subject=i.split("/")[1], clip=i.split("/")[2],
                                  status="complete", emotion=e, data={}, label=lab) for i, e, lab in recs]


def write_view(path, records, drop=(), relabel=None):
    """The challenge's format: SAMM subjects as integers, SMIC as s01 and s01_xx_NNN."""
    rows = []
    for r in records:
        if r.label is None or r.id in drop:
            continue
        label = (relabel or {}).get(r.id, r.label)
        subject = str(int(r.subject)) if r.dataset == "samm" else r.subject.replace("s", "s0") \
            if r.dataset == "smic" and len(r.subject) == 2 else r.subject
        clip = r.clip.replace(r.subject + "_", subject + "_", 1) if r.dataset == "smic" else r.clip
        rows.append(f"{r.dataset},{subject},{clip},{CODE[label]}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_view_file_conforms_variant_and_differences(tmp_path, monkeypatch):
    from roi_store.store.labels import read_view_file

    recs = composite_records()
    listed = read_view_file(write_view(tmp_path / "gt.csv", recs), CLASSES)["entries"]
    check = compare_view(listed, recs)
    assert check["conforms"] and check["clips"] == 442 and check["rules_clips"] == 442
    assert check["variant"] is None and check["counts"]["differences"] == []

    listed = read_view_file(write_view(tmp_path / "v.csv", recs, drop={"samm/032/032_3_1"}), CLASSES)["entries"]
    check = compare_view(listed, recs)
    assert check["clips"] == 441 and check["only_variant"] and "441-clip variant" in check["variant"]
    assert check["differences"] == [{"id": "samm/032/032_3_1", "kind": "missing", "file": None, "rules": "negative",
                                     "reason": None}]

    smic = next(r.id for r in recs if r.dataset == "smic" and r.label == "positive")
    listed = read_view_file(write_view(tmp_path / "x.csv", recs, relabel={smic: "surprise"}), CLASSES)["entries"]
    listed["casme2/sub04/EP12_01f"] = "negative"
    listed["lab/p1/x"] = "positive"
    check = compare_view(listed, recs)
    diffs = {d["id"]: (d["kind"], d["file"], d["rules"]) for d in check["differences"]}
    assert diffs == {smic: ("label", "surprise", "positive"),
                     "casme2/sub04/EP12_01f": ("extra", "negative", None), "lab/p1/x": ("extra", "positive", None)}
    reasons = {d["id"]: d["reason"] for d in check["differences"]}
    assert "broken apex" in reasons["casme2/sub04/EP12_01f"] and reasons["lab/p1/x"] == "not in the store"
    assert not check["conforms"] and check["variant"] is None

    fake = types.SimpleNamespace(records=lambda strict=True: {r.id: r for r in recs})
    monkeypatch.setattr("roi_store.store.store.open_store", lambda where, mode="r": fake)
    bad = write_view(tmp_path / "b.csv", recs, drop={"smic/s1/s1_ne_000"})
    runner = CliRunner()
    out = runner.invoke(cli, ["check-view", "S", "--view-file", str(tmp_path / "gt.csv")])
    assert out.exit_code == 0 and "conforms" in out.output and "counts match the published composite" in out.output
    out = runner.invoke(cli, ["check-view", "S", "--view-file", str(tmp_path / "v.csv")])
    assert out.exit_code == 0 and "recognised: the known 441-clip variant" in out.output
    assert "samm/032/032_3_1: in the rules, not in the file (negative)" in out.output
    out = runner.invoke(cli, ["check-view", "S", "--view-file", str(bad), "--json"])
    assert out.exit_code == 1 and json.loads(out.output)["differences"][0]["id"] == "smic/s1/s1_ne_000"


# --- reports over hand-made runs ------------------------------------------------------------------------
EMBED = {"view": "megc2019", "protocol": "loso", "folds": None, "epochs": 1, "batch_size": 32, "seed": 0,
         "cnn_scope": "fold", "input": "delta", "cnn_dense": 32, "relabel": "default", "permute_labels": None,
         "gamma": 2.0, "optimizer": "adam", "learning_rate": 1e-3, "preset": "paper"}
HEAD = {"epochs": 2, "batch_size": 244, "seed": 0, "masked": True, "permute_labels": None,
        "head_only_permutation": None, "optimizer": "adam", "learning_rate": 1e-3, "gamma": 2.0, "preset": "paper"}


@pytest.fixture
def fake_runs(monkeypatch):
    """Runs of a pretend store: name -> (embed settings, head settings, predictions)."""
    runs = {}
    run_doc = lambda store, name: {"settings": runs[name][0], "folds": [{}] * 3, "state": "complete",  # noqa: E731
                                   "leakage": False, "device": "cpu", "timings": {}}
    head_doc = lambda store, name: {"classes": CLASSES, "settings": runs[name][1],  # noqa: E731
                                    "predictions": runs[name][2], "timings": {}}
    status = lambda store, name: {"name": name, "settings": runs[name][0], "head_settings": runs[name][1],  # noqa: E731
                                  "state": "complete", "stage": "head", "fitted": True}
    for module in (rp, ev):
        monkeypatch.setattr(module, "run_document", run_doc)
        monkeypatch.setattr(module, "head_document", head_doc)
    monkeypatch.setattr(rp, "list_runs", lambda store: [status(store, n) for n in sorted(runs)])
    monkeypatch.setattr(ev, "run_status", status)
    monkeypatch.setattr(ev, "run_names", lambda store: sorted(runs))
    monkeypatch.setattr("roi_store.store.store.open_store", lambda where, mode="r": object())
    return runs


def swapped(preds, k):
    """Every k-th clip predicted as the next class."""
    return [{**p, "pred": CLASSES[(CODE[p["pred"]] + 1) % 3]} if i % k == 0 else p for i, p in enumerate(preds)]


def test_report_null_runs_intervals_subjects_and_preset(fake_runs):
    """Null runs: perm1 (another permutation seed) and permw (also permute_within) match; perm2 (head
    epochs 3) and other (not permuted) do not. p-value: observed .6, null .5 .6 .7 .4: (1 + 2) / (1 + 4)."""
    assert ev.null_p_value(0.6, [0.5, 0.6, 0.7, 0.4]) == pytest.approx(0.6) and ev.null_p_value(0.6, []) is None
    main = [P("casme2/sub01/a", "negative", "negative"), P("casme2/sub01/b", "positive", "positive"),
            P("casme2/sub02/c", "surprise", "surprise"), P("casme2/sub02/d", "negative", "positive")]
    fake_runs["main"] = (EMBED, HEAD, main)
    fake_runs["perm1"] = ({**EMBED, "permute_labels": 1}, {**HEAD, "permute_labels": 1}, swapped(main, 2))
    fake_runs["permw"] = ({**EMBED, "permute_labels": 3, "permute_within": "dataset"},
                          {**HEAD, "permute_labels": 3}, swapped(main, 4))
    fake_runs["perm2"] = ({**EMBED, "permute_labels": 2}, {**HEAD, "permute_labels": 2, "epochs": 3}, main)
    fake_runs["other"] = ({**EMBED, "seed": 1}, HEAD, main)
    rep = rp.run_report(None, "main")
    assert [c["run"] for c in rep["controls"]] == ["perm1", "permw"]
    full = rep["scores"]["FULL"]
    nulls = [c["scores"]["FULL"]["UF1"] for c in rep["controls"]]
    expected = (1 + sum(v >= full["UF1"] for v in nulls)) / 3
    assert rep["null"]["runs"] == 2 and rep["null"]["p"]["UF1"] == pytest.approx(expected)
    # pooled: neg F1 2/3, pos 2/3, sur 1 -> UF1 7/9 at full precision
    assert full["UF1"] == pytest.approx(7 / 9, rel=1e-12) and rep["preset"] == "paper"
    assert rep["uncertainty"]["intervals"]["FULL"]["exact"] and rep["uncertainty"]["intervals"]["FULL"]["resamples"] == 4
    assert rep["subjects"] == [
        {"subject": "casme2/sub01", "dataset": "casme2", "clips": 2, "correct": 2, "accuracy": 1.0, "recall": 1.0,
         "folds": [0]},
        {"subject": "casme2/sub02", "dataset": "casme2", "clips": 2, "correct": 1, "accuracy": 0.5, "recall": 0.5,
         "folds": [0]}]
    text = rp.format_report(rep)
    assert text.startswith("run main (preset paper)") and "preset paper, protocol loso" in text
    assert "UF1 95%" in text and "null model: 2 permutation control run(s)" in text
    assert "(control run permw)" in text and "casme2/sub02" in text


def test_report_cli_group_megc_log_and_plots(fake_runs, tmp_path):
    base = composite_predictions(1, 0.7)[:60]
    for k in (1, 2, 10):
        fake_runs[f"seedrun{k}"] = ({**EMBED, "seed": k}, HEAD, swapped(base, k + 2))
    fake_runs["seedrun3"] = ({**EMBED, "permute_labels": 5}, {**HEAD, "permute_labels": 5}, base)
    runner = CliRunner()
    out = runner.invoke(cli, ["report", "S", "--run-group", "seedrun", "--json"])
    assert out.exit_code == 0, out.output
    group = json.loads(out.output)["group"]
    assert [r["run"] for r in group["runs"]] == ["seedrun1", "seedrun2", "seedrun10"]
    assert group["skipped"] == [{"run": "seedrun3", "reason": "permutation control"}] and group["varies"] == ["embed.seed"]
    values = [r["scores"]["FULL"]["UF1"] for r in group["runs"]]
    s = group["summary"]["FULL"]["UF1"]
    assert s["mean"] == pytest.approx(np.mean(values)) and s["sd"] == pytest.approx(np.std(values, ddof=1))
    assert (s["min"], s["max"]) == (min(values), max(values))
    out = runner.invoke(cli, ["report", "S", "--runs", "seedrun10,seedrun2"])
    assert out.exit_code == 0 and "settings that differ: embed.seed" in out.output and "mean" in out.output
    log = tmp_path / "log.txt"
    out = runner.invoke(cli, ["report", "S", "--run", "seedrun1", "--megc-log", str(log), "--plot",
                              str(tmp_path / "plots"), "--resamples", "200"])
    assert out.exit_code == 0, out.output
    blocks = parse_log(log.read_text())
    assert len(blocks) == 9 and list(blocks)[0] == ("smic", "s01")
    rep = rp.scores(fake_runs["seedrun1"][2], CLASSES)["FULL"]
    assert challenge_scores([(t, y) for rows in blocks.values() for _, t, y in rows]) == pytest.approx(
        (rep["UF1"], rep["UAR"]))
    assert f"UF1 {rep['UF1']:.4f}, UAR {rep['UAR']:.4f}" in out.output
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {f"seedrun1_{n}.png" for n in
                                                                ("confusion", "datasets", "intervals", "subjects")}
    out = runner.invoke(cli, ["report", "S"])
    assert out.exit_code == 2 and "give --run NAME, --run-group PREFIX or --runs A,B,C" in out.output


def test_compare_command_and_its_refusals(fake_runs):
    base = composite_predictions(2, 0.8)[:70]
    fake_runs["a"] = (EMBED, HEAD, base)
    fake_runs["b"] = ({**EMBED, "seed": 1}, HEAD, swapped(base, 3))
    fake_runs["c"] = (EMBED, HEAD, base[:-1])
    fake_runs["d"] = ({**EMBED, "view": "mine"}, HEAD, base)
    runner = CliRunner()
    out = runner.invoke(cli, ["compare", "S", "a", "b", "--json", "--permutations", "2000"])
    assert out.exit_code == 0, out.output
    cmp = json.loads(out.output)
    full_a, full_b = rp.scores(base, CLASSES)["FULL"], rp.scores(swapped(base, 3), CLASSES)["FULL"]
    assert cmp["scores"]["FULL"]["UF1"]["difference"] == pytest.approx(full_a["UF1"] - full_b["UF1"])
    lo, hi = cmp["scores"]["FULL"]["UF1"]["interval"]
    assert lo <= cmp["scores"]["FULL"]["UF1"]["difference"] <= hi and cmp["subjects"] == 10
    assert cmp["scores"]["smic"]["exact_permutation"] and cmp["scores"]["smic"]["permutations"] == 2 ** 10
    assert "a - b" in runner.invoke(cli, ["compare", "S", "a", "b"]).output
    out = runner.invoke(cli, ["compare", "S", "a", "c"])
    assert out.exit_code == 1 and out.output.startswith("Error: cannot compare runs 'a' and 'c': they score different "
                                                        "clips (1 only in 'a', 0 only in 'c', e.g. ")
    assert len(out.output.strip().splitlines()) == 1
    out = runner.invoke(cli, ["compare", "S", "a", "d"])
    assert out.exit_code == 1 and "view 'megc2019' is not view 'mine'" in out.output


# --- end to end, on real runs (two short Keras fits) ------------------------------------------------------
@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, small_loso):
    """The session's small store with run ``main`` (kfold 2, seed 3) and the LOSO run ``main-loso`` (seed 3)."""
    from conftest import copy_fitted

    return copy_fitted(small_loso, tmp_path_factory.mktemp("evaluation"))


def test_report_log_group_and_compare_on_real_runs(two_runs, tmp_path):
    runner = CliRunner()
    log = tmp_path / "megc.txt"
    out = runner.invoke(cli, ["report", str(two_runs), "--run", "main-loso", "--megc-log", str(log), "--json"])
    assert out.exit_code == 0, out.output
    rep, blocks = json.loads(out.output), parse_log(log.read_text())
    assert list(blocks) == [("casme2", "sub01"), ("casme2", "sub02"), ("casme2", "sub03")]
    pairs = [(t, y) for rows in blocks.values() for _, t, y in rows]
    assert len(pairs) == 9 == len(rep["predictions"]) and challenge_scores(pairs) == pytest.approx(
        (rep["scores"]["FULL"]["challenge"]["UF1"], rep["scores"]["FULL"]["challenge"]["UAR"]))
    assert [s["clips"] for s in rep["subjects"]] == [3, 3, 3] and (rep["null"]["runs"], rep["null"]["p"]) == (0, None)
    out = runner.invoke(cli, ["report", str(two_runs), "--run-group", "main"])
    assert out.exit_code == 0 and "2 runs (settings that differ: " in out.output and "embed.protocol" in out.output
    cmp = json.loads(runner.invoke(cli, ["compare", str(two_runs), "main-loso", "main", "--json"]).output)
    assert cmp["clips"] == 9 and cmp["scores"]["FULL"]["exact_permutation"] and cmp["scores"]["FULL"]["permutations"] == 8


def test_challenge_folds_of_a_megc2019_loso():
    """68 folds of one subject each (16 SMIC, 24 CASME II, 28 SAMM) conform; a merged person or a missing subject does not."""
    folds = ([{"test_subjects": [f"smic/s{i}"]} for i in range(1, 17)]
             + [{"test_subjects": [f"casme2/sub{i:02d}"]} for i in range(1, 25)]
             + [{"test_subjects": [f"samm/{i:03d}"]} for i in range(6, 34)])
    assert rp.challenge_folds(folds)["conformant"] and rp.challenge_folds(folds)["folds"] == 68
    merged = folds[1:16] + [{"test_subjects": ["smic/s1", "casme2/sub01"]}] + folds[17:]
    assert not rp.challenge_folds(merged)["conformant"]
    assert rp.challenge_folds(folds[:-1])["subjects"] == {"smic": 16, "casme2": 24, "samm": 27}
