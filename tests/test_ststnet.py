"""STSTNet on a flow feature set: the network, folds trained together, and its runs read like the paper's.

One tiny CASME II store (3 subjects, 9 composite clips) with a flow set, shared by the module:
STSTNet runs (LOSO, a permutation control, seeds) and a paper-method run on the same folds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import keras  # noqa: F401 -- required: if it cannot import, these tests fail rather than skip
import roi_store  # noqa: E402
from conftest import copy_fitted  # noqa: E402
from roi_store.cli.main import cli  # noqa: E402
from roi_store.method import ststnet as st  # noqa: E402
from roi_store.store.runs import fold_docs, head_document, run_document  # noqa: E402

#: Two epochs: the chain end to end in seconds (the published 500 are measured by the benchmark).
FIT = ["--features", "flow28", "--epochs", "2", "--seed", "1"]


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


@pytest.fixture(scope="module")
def flow_store(tmp_path_factory, small_loso):
    """The tiny store with flow set ``flow28`` and a fitted STSTNet run ``st`` (LOSO, the default);
    it holds the session's runs of the paper's method too (conftest.small_loso)."""
    tmp = tmp_path_factory.mktemp("ststnet")
    store = copy_fitted(small_loso, tmp)
    out = invoke("flow", store, "--name", "flow28", "--no-progress")
    assert out.exit_code == 0, out.output
    out = invoke("fit", store, "--run", "st", "--method", "ststnet", *FIT)
    assert out.exit_code == 0, out.output
    return store, tmp


@pytest.fixture(scope="module")
def paper_run(flow_store):
    """The paper's method on the same store and folds (LOSO, one epoch each stage): run ``main-loso``."""
    store, _ = flow_store
    assert run_document(roi_store.open_store(store), "main-loso")["settings"]["protocol"] == "loso"
    return store


def test_parameter_count_is_the_published_architecture():
    model = st.ststnet()
    # convolutions 3, 5 and 8 filters of 3x3x3 (+ bias) = 448; dense 5x5x16 -> 3 = 1,203
    assert model.count_params() == st.PARAMETERS == 1651
    assert tuple(model.get_layer("concat").output.shape[1:]) == (10, 10, 16)
    assert tuple(model.get_layer("avgpool").output.shape[1:]) == (5, 5, 16)
    assert [model.get_layer(f"stream{k}_conv").filters for k in range(3)] == [3, 5, 8]


def test_stacked_folds_train_as_each_fold_alone():
    rng = np.random.default_rng(0)
    x = rng.random((24, 28, 28, 3)).astype("float32")
    y = rng.integers(0, 3, 24)
    train = np.ones((24, 3), dtype=bool)
    train[:4, 0] = train[4:10, 1] = train[10:12, 2] = False  # folds of different sizes
    kw = {"n_classes": 3, "epochs": 3, "batch_size": 8, "learning_rate": 1e-3}
    together = st.train_group(x, y, train, seeds=[5, 6, 7], **kw)
    alone = st.train_group(x, y, train[:, 1:2], seeds=[6], **kw)
    p_together = st.predict_folds(together["plain"], x)
    p_alone = st.predict_folds(alone["plain"], x)
    np.testing.assert_allclose(p_together[:, 1], p_alone[:, 0], atol=1e-5)
    # the stacked model's fold is the plain network that was exported from it
    p_stacked = np.asarray(together["model"].predict(np.stack([st.patches(x)] * 3, axis=1), verbose=0))
    np.testing.assert_allclose(p_stacked[:, 0], p_together[:, 0], atol=1e-5)


def test_learns_a_class_dependent_flow():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 20)
    x = rng.normal(0, 0.3, (60, 28, 28, 3)).astype("float32")
    for c, (r0, c0) in enumerate([(2, 2), (2, 16), (16, 8)]):  # each class moves another patch
        x[y == c, r0:r0 + 9, c0:c0 + 9, c] += 3.0
    test = np.zeros(60, dtype=bool)
    test[::5] = True
    res = st.train_group(st.clip_input(x), y, ~test[:, None], n_classes=3, epochs=60, batch_size=16,
                         learning_rate=1e-2, seeds=[3])
    pred = st.predict_folds(res["plain"], st.clip_input(x))[:, 0].argmax(1)
    assert np.mean(pred[test] == y[test]) >= 0.9


def test_clip_input_scales_each_clip_and_channel():
    x = np.zeros((2, 4, 4, 3), dtype=np.float32)
    x[0, ..., 0] = np.arange(16).reshape(4, 4)
    x[1, ..., 1] = -5.0
    out = st.clip_input(x)
    assert out[0, ..., 0].min() == 0 and out[0, ..., 0].max() == 1
    assert not out[1].any()  # a flat channel becomes zeros, never a division by zero


def test_fit_writes_a_run_the_papers_readers_read(flow_store):
    store, tmp = flow_store
    s = roistore_open(store)
    doc, head = run_document(s, "st"), head_document(s, "st")
    assert doc["kind"] == "ststnet" and doc["settings"]["features"] == "flow28"
    assert doc["settings"]["learning_rate"] == 5e-5 and doc["settings"]["batch_size"] == 256
    assert len(doc["folds"]) == 3  # LOSO over three subjects
    for fold in head["folds"]:
        subjects = {c.rsplit("/", 1)[0] for c in fold["test_clips"]}
        assert len(subjects) == 1 and not subjects & {c.rsplit("/", 1)[0] for c in fold["head_train_clips"]}
    assert sorted(p["id"] for p in head["predictions"]) == sorted(doc["clips"])
    assert {tuple(d["trained_with"]) for d in fold_docs(s, "st", "head").values()} == {(0, 1, 2)}  # one step

    out = invoke("report", store, "--run", "st", "--megc-log", tmp / "st.log")
    assert out.exit_code == 0, out.output
    assert "method ststnet on flow set flow28, protocol loso (3 folds)" in out.output
    assert (tmp / "st.log").read_text().startswith("casme2 sub01\n")
    out = invoke("runs", store)
    assert out.exit_code == 0 and "ststnet on flow set flow28" in out.output
    out = invoke("export", store, tmp / "st.npz", "--run", "st", "--format", "npz")
    assert out.exit_code == 0, out.output
    with np.load(tmp / "st.npz") as z:
        assert json.loads(str(z["meta"]))["method"] == "ststnet" and len(z["pred"]) == 9
    out = invoke("validate", store)
    assert out.exit_code == 0, out.output


def roistore_open(store):
    return roi_store.open_store(store)


def test_fit_resumes_and_refuses_other_settings(flow_store):
    store, _ = flow_store
    out = invoke("fit", store, "--run", "st", *FIT)
    assert out.exit_code == 0 and "run st is already complete: nothing to do" in out.output
    out = invoke("fit", store, "--run", "st", "--features", "flow28", "--epochs", "3", "--seed", "1")
    assert out.exit_code == 1
    assert out.output.strip().splitlines()[-1] == (
        f"Error: run 'st' already exists in {store}, made with epochs 2, not 3: re-run with the same settings to "
        "resume it, choose another --run name, or pass --overwrite")


@pytest.mark.parametrize(("args", "message"), [
    pytest.param(["--features", "nope"], "no feature set 'nope' in {store} (it has: flow28): make one with "
                 "'roistore flow {store} --name nope'", id="missing-set"),
    pytest.param(["--features", "flow28", "--permute-within", "subject"],
                 "--permute-within subject shapes a permutation control: give --permute-labels SEED too",
                 id="within-without-permutation"),
])
def test_fit_mistakes_are_one_line(flow_store, args, message):
    store, _ = flow_store
    out = invoke("fit", store, "--run", "bad", *args)
    assert out.exit_code == 1
    assert out.output.strip().splitlines()[-1] == "Error: " + message.format(store=store)


def test_fit_lstm_on_an_ststnet_run_says_what_it_is(flow_store):
    store, _ = flow_store
    out = invoke("fit-lstm", store, "--run", "st", "--cpu")
    assert out.exit_code == 1
    assert out.output.strip().splitlines()[-1] == (
        "Error: run 'st' was made by 'roistore fit --method ststnet': it has no embeddings to fit an LSTM head on; "
        "fit-lstm fits runs made by 'roistore embed'")


def test_permutation_control_is_the_reports_null_model(flow_store):
    store, _ = flow_store
    out = invoke("fit", store, "--run", "st-perm7", *FIT, "--permute-labels", "7")
    assert out.exit_code == 0, out.output
    out = invoke("report", store, "--run", "st", "--json")
    rep = json.loads(out.output)
    assert [c["run"] for c in rep["controls"]] == ["st-perm7"] and rep["null"]["p"]["UF1"] is not None


def test_seeds_and_same_person(flow_store, tmp_path):
    store, _ = flow_store
    out = invoke("fit", store, "--run", "rep", "--features", "flow28", "--epochs", "1", "--seeds", "1,2")
    assert out.exit_code == 0, out.output
    out = invoke("report", store, "--run-group", "rep-s")
    assert out.exit_code == 0 and "2 runs" in out.output
    persons = tmp_path / "persons.csv"
    persons.write_text("dataset,subject,person\ncasme2,sub01,p\ncasme2,sub02,p\n")
    out = invoke("fit", store, "--run", "same", *FIT, "--same-person", persons)
    assert out.exit_code == 0, out.output
    folds = run_document(roistore_open(store), "same")["folds"]
    assert [f["test_subjects"] for f in folds] == [["casme2/sub01", "casme2/sub02"], ["casme2/sub03"]]


def test_methods_side_by_side(flow_store, paper_run):
    store, _ = flow_store
    out = invoke("report", store, "--runs", "main-loso,st")
    assert out.exit_code == 0, out.output
    text = out.output
    assert "methods side by side: 9 clips, 3 subjects, the same folds (loso, 3 folds)" in text
    assert "main-loso" in text and "ststnet (flow28)" in text and "st - main-loso" in text
    out = invoke("report", store, "--runs", "main-loso,st", "--json")
    table = json.loads(out.output)["methods"]
    assert [r["method"] for r in table["runs"]] == ["region-cnn+lstm", "ststnet"]
    cmp = table["comparisons"][0]["scores"]["FULL"]["UF1"]
    assert 0 <= cmp["p"] <= 1 and cmp["interval"][0] <= cmp["difference"] <= cmp["interval"][1]
    out = invoke("compare", store, "main-loso", "st")
    assert out.exit_code == 0 and out.output.startswith("main-loso - st: view megc2019, 9 clips, 3 subjects")


def test_predict_a_new_clip_with_every_folds_network(flow_store):
    store, tmp = flow_store
    clip = next((tmp / "data" / "CASME2" / "CASME2_RAW_selected" / "sub01").iterdir())
    out = invoke("predict", store, "--run", "st", clip, "--json")
    assert out.exit_code == 0, out.output
    res = json.loads(out.output)
    assert res["models"] == 3 and res["model"] == "folds" and res["apex"]["source"] == "estimated"
    assert sum(res["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    out = invoke("predict", store, "--run", "st", clip, "--models", "final")
    assert out.exit_code == 1
    assert out.output.strip().splitlines()[-1] == ("Error: run 'st' (ststnet) has no final model: predict averages "
                                                   "its fold networks (--models folds)")
