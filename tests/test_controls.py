"""Null models that keep the data's structure, head-only controls as runs of their own, repeats over
seeds, one person in two datasets, and duplicate clips."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import make_small_store, write_clip, write_manifest
from roi_store.cli.main import cli
from roi_store.method.embed import permutation_groups, permuted_labels
from roi_store.errors import ConfigError, RoiStoreError
from roi_store.method.protocols import make_folds, read_same_person
from roi_store.store.store import open_store

# One epoch, a narrow dense layer (as tests/test_method.py).
FAST = {"epochs": 1, "batch_size": 32, "cpu": True, "cnn_dense": 32}


class Clip:
    def __init__(self, dataset, subject):
        self.dataset, self.subject = dataset, subject


def _counts(labels, keys):
    return {k: Counter(lab for lab, g in zip(labels, keys) if g == k) for k in set(keys)}


@pytest.mark.parametrize("within", ["dataset", "subject"])
def test_permutation_within_keeps_each_groups_class_counts(within):
    clips = [Clip(d, f"s{i % 4}") for d in ("casme2", "samm", "smic") for i in range(30)]
    labels = [["negative", "positive", "surprise"][(i * 7 + len(c.dataset)) % 3] if c.dataset != "smic" else "negative"
              for i, c in enumerate(clips)]
    groups = permutation_groups(clips, within)
    shuffled = permuted_labels(labels, 7, groups)
    assert shuffled != labels
    assert _counts(shuffled, groups) == _counts(labels, groups)  # exactly, group by group
    assert permuted_labels(labels, 7, groups) == shuffled  # seeded
    # "all" is the earlier behaviour: one permutation across every clip.
    assert permutation_groups(clips, "all") is None
    import numpy as np

    assert permuted_labels(labels, 7) == [labels[j] for j in np.random.default_rng(7).permutation(len(labels))]


def test_same_person_subjects_share_a_fold_in_every_protocol(tmp_path):
    clips = [Clip(d, s) for d, subs in (("casme2", ["sub01", "sub02", "sub03"]), ("samm", ["006", "007"]))
             for s in subs for _ in range(3)]
    sheet = tmp_path / "persons.csv"
    sheet.write_text("dataset,subject,person\ncasme2,1,ann\nsamm,6,ann\ncasme2,sub03,bob\n")
    known = {f"{c.dataset}/{c.subject}" for c in clips}
    persons = read_same_person(sheet, known)
    assert persons == {"ann": ["casme2/sub01", "samm/006"]}  # bob has one subject: nothing to merge
    for protocol, k in (("loso", None), ("hde", None), ("kfold", 2), ("kfold", 3)):
        folds = make_folds(clips, protocol, k, seed=1, same_person=persons)
        holding = [f for f in folds if "casme2/sub01" in f["test_subjects"]]
        assert len(holding) == 1 and "samm/006" in holding[0]["test_subjects"], protocol
        tested = [s for f in folds for s in f["test_subjects"]]
        assert sorted(tested) == sorted(known)  # every subject tested exactly once
    loso = make_folds(clips, "loso", same_person=persons)
    assert [f["name"] for f in loso] == ["casme2/sub01+samm/006", "casme2/sub02", "casme2/sub03", "samm/007"]
    assert make_folds(clips, "kfold", 2, seed=1) == make_folds(clips, "kfold", 2, seed=1, same_person={})
    sheet.write_text("dataset,subject,person\ncasme2,sub09,ann\n")
    with pytest.raises(RoiStoreError, match=r"line 2: subject casme2/sub09 is not in the store"):
        read_same_person(sheet, known)


def test_audit_finds_a_clip_ingested_twice(tmp_path, face_frame):
    from roi_store.evaluation.audit import audit_store
    from roi_store.ingest.pipeline import ingest

    root = tmp_path / "lab"
    write_clip(root / "x" / "a", face_frame, range(1, 7))
    write_clip(root / "x" / "b", face_frame, range(1, 9))
    manifest = write_manifest(tmp_path / "m.csv", [
        {"dataset": "lab", "subject": "p1", "clip": "a", "folder": "x/a", "label": "happiness"},
        {"dataset": "lab", "subject": "p2", "clip": "a2", "folder": "x/a", "label": "happiness"},  # the same folder
        {"dataset": "lab", "subject": "p2", "clip": "b", "folder": "x/b", "label": "surprise"},
    ])
    store = tmp_path / "s.zarr"
    ingest(store, "manifest", root, manifest)
    report = audit_store(open_store(store))
    assert report["clips"] == 3 and report["duplicate_clips"] == 2
    (group,) = report["duplicates"]
    assert group["clips"] == ["lab/p1/a", "lab/p2/a2"] and group["same_subject"] is False
    assert group["subjects"] == ["lab/p1", "lab/p2"]
    out = CliRunner().invoke(cli, ["audit", str(store), "--json"])
    assert out.exit_code == 1 and json.loads(out.output)["duplicates"] == report["duplicates"]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """Runs R-s1 and R-s2 (LOSO, sub01 and sub02 one person) embedded and fitted, and a head-only control of R-s1."""
    from roi_store.method.head import fit_lstm
    from roi_store.method.repeats import embed_seeds, fit_lstm_seeds

    tmp = tmp_path_factory.mktemp("controls")
    store = str(make_small_store(tmp))
    sheet = tmp / "persons.csv"
    sheet.write_text("dataset,subject,person\ncasme2,sub01,ann\ncasme2,sub02,ann\n")
    docs = embed_seeds(store, "R", "1,2", protocol="loso", same_person=str(sheet), **FAST)
    fit_lstm_seeds(store, "R", [1, 2], epochs=1, cpu=True)
    s = open_store(store)
    head_dir = Path(store) / "runs" / "R-s1" / "head"
    before = {p.relative_to(head_dir): p.read_bytes() for p in sorted(head_dir.rglob("*")) if p.is_file()}
    control = fit_lstm(store, "R-s1", permute_labels=7, epochs=1, seed=1, cpu=True)
    return {"store": store, "docs": docs, "control": control, "before": before, "head_dir": head_dir, "s": s}


def test_seeds_make_one_run_per_seed_and_skip_complete_ones(seeded):
    from roi_store.method.repeats import embed_seeds
    from roi_store.store.runs import head_document, run_document

    store, s = seeded["store"], seeded["s"]
    for seed in (1, 2):
        doc = run_document(s, f"R-s{seed}")
        assert doc["state"] == "complete" and doc["settings"]["seed"] == seed
        assert head_document(s, f"R-s{seed}")["settings"]["seed"] == seed
    messages = []
    embed_seeds(store, "R", [1], protocol="loso", same_person={"ann": ["casme2/sub01", "casme2/sub02"]},
                log=messages.append, **FAST)
    assert "run R-s1 is already complete: nothing to do" in messages
    out = CliRunner().invoke(cli, ["embed", store, "--run", "R", "--seeds", "1,2", "--seed", "3", "--cpu"])
    assert out.exit_code == 1
    assert out.output.strip().splitlines()[-1].startswith("Error: --seeds and --seed exclude each other")


def test_same_person_run_tests_them_together(seeded):
    doc = seeded["docs"][0]
    assert doc["settings"]["same_person"] == {"ann": ["casme2/sub01", "casme2/sub02"]}
    assert len(doc["folds"]) == 2
    (fold,) = [f for f in doc["folds"] if "casme2/sub01" in f["test_subjects"]]
    assert fold["test_subjects"] == ["casme2/sub01", "casme2/sub02"]
    assert not {c.split("/")[1] for c in fold["cnn_train_clips"]} & {"sub01", "sub02"}


def test_head_only_control_is_a_run_of_its_own(seeded):
    from roi_store.evaluation.report import run_report
    from roi_store.store.runs import head_document, list_runs, run_document
    from roi_store.store.validate import validate_store

    s, control, head_dir = seeded["s"], seeded["control"], seeded["head_dir"]
    assert control["run"] == "R-s1-perm7h" and control["embeddings_from"] == "R-s1"
    after = {p.relative_to(head_dir): p.read_bytes() for p in sorted(head_dir.rglob("*")) if p.is_file()}
    assert after == seeded["before"]  # R-s1's head: byte for byte as it was
    real, ctrl = head_document(s, "R-s1"), head_document(s, "R-s1-perm7h")
    assert ctrl["settings"]["head_only_permutation"] == 7 and ctrl["settings"]["permute_within"] == "dataset"
    assert real["settings"]["permute_labels"] is None and real["labels_used"] == run_document(s, "R-s1")["true_labels"]
    assert ctrl["labels_used"] != real["labels_used"] and Counter(ctrl["labels_used"]) == Counter(real["labels_used"])
    assert run_document(s, "R-s1-perm7h")["settings"] == run_document(s, "R-s1")["settings"]
    listed = {r["name"]: r for r in list_runs(s)}
    assert listed["R-s1-perm7h"]["state"] == "complete" and listed["R-s1-perm7h"]["embeddings_from"] == "R-s1"
    report = validate_store(s)
    assert report.ok, report.problems
    assert [c["run"] for c in run_report(s, "R-s1", resamples=10)["controls"]] == ["R-s1-perm7h"]
    runner = CliRunner()
    out = runner.invoke(cli, ["fit-lstm", seeded["store"], "--run", "R-s1", "--permute-labels", "7", "--epochs", "1",
                              "--seed", "1"])
    assert out.exit_code == 0 and "run R-s1-perm7h (head-only control on run R-s1's embeddings)" in out.output
    assert "nothing to do" in out.output
    listing = runner.invoke(cli, ["runs", seeded["store"]]).output
    assert "[embeddings of run R-s1]" in listing and "head-only permuted 7 within dataset" in listing
    assert runner.invoke(cli, ["validate", seeded["store"]]).exit_code == 0
    from roi_store.method.embed import embed
    from roi_store.method.head import fit_lstm

    with pytest.raises(RoiStoreError, match="is a head-only control of run 'R-s1', not a run with its own embeddings"):
        embed(seeded["store"], "R-s1-perm7h", protocol="loso", seed=1, **FAST)
    with pytest.raises(ConfigError, match="is a head-only control of run 'R-s1': refit it with"):
        fit_lstm(seeded["store"], "R-s1-perm7h", epochs=1, cpu=True)
