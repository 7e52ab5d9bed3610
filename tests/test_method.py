"""Region CNNs, fusion head, evaluation and prediction on a tiny synthetic store (CPU, fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import roi_store
from conftest import FAST, MAIN_HEAD, copy_fitted, make_small_store
from roi_store.cli.main import cli
from roi_store.method.embed import embed
from roi_store.method.head import fit_lstm
from roi_store.method.protocols import make_folds
from roi_store.evaluation.report import run_report
from roi_store.store.runs import fold_docs, head_document, run_document

# Runs of one epoch and a narrow dense layer (conftest.FAST): the chain end to end in seconds (the real
# width is tested by the demo).


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, small_fitted):
    """CASME II layout, 3 subjects x 1 clip per class, 6 frames: 9 composite clips; with the session's
    run ``main`` (kfold 2, conftest.FAST and MAIN_HEAD), copied for this module's runs."""
    tmp = tmp_path_factory.mktemp("method")
    return copy_fitted(small_fitted, tmp), tmp


@pytest.fixture(scope="module")
def fitted(small_store):
    return small_store[0]


def test_folds_hold_whole_subjects(fitted):
    store = roi_store.open_store(fitted)
    doc = run_document(store, "main")
    head = head_document(store, "main")
    assert len(doc["folds"]) == 2
    for fold in head["folds"]:
        test = set(fold["test_clips"])
        assert test and not test & set(fold["head_train_clips"]) and not test & set(fold["cnn_train_clips"])
        subjects = {c.split("/")[1] for c in test}
        trained = {c.split("/")[1] for c in fold["cnn_train_clips"] + fold["head_train_clips"]}
        assert not subjects & trained
    assert sorted(p["id"] for p in head["predictions"]) == sorted(doc["clips"])


def test_report_equals_scikit_learn_on_pooled_predictions(fitted):
    from sklearn.metrics import balanced_accuracy_score, f1_score

    rep = run_report(roi_store.open_store(fitted), "main")
    true = [p["true"] for p in rep["predictions"]]
    pred = [p["pred"] for p in rep["predictions"]]
    labels = sorted(set(true))
    assert rep["scores"]["FULL"]["UF1"] == pytest.approx(f1_score(true, pred, labels=labels, average="macro"), abs=1e-4)
    assert rep["scores"]["FULL"]["UAR"] == pytest.approx(balanced_accuracy_score(true, pred), abs=1e-4)
    assert np.array(rep["confusion"]).sum() == 9 and rep["leakage"] is False


def test_same_seed_same_predictions(fitted, small_store):
    store, _ = small_store
    embed(str(store), "again", protocol="kfold", folds=2, **FAST)
    fit_lstm(str(store), "again", **MAIN_HEAD)
    s = roi_store.open_store(store)
    a = head_document(s, "main")["predictions"]
    b = head_document(s, "again")["predictions"]
    assert a == b


def test_permutation_control_and_leaky_scope_are_flagged(small_store):
    store, _ = small_store
    embed(str(store), "perm", protocol="kfold", folds=2, permute_labels=7, **FAST)
    fit_lstm(str(store), "perm", epochs=1, seed=3, cpu=True)
    embed(str(store), "leaky", protocol="kfold", folds=2, cnn_scope="global", **FAST)
    fit_lstm(str(store), "leaky", epochs=1, seed=3, cpu=True)
    s = roi_store.open_store(store)
    perm = run_report(s, "perm")
    assert perm["permuted"]
    doc = run_document(s, "perm")
    assert doc["labels"] != doc["true_labels"] and sorted(doc["labels"]) == sorted(doc["true_labels"])
    leaky = run_report(s, "leaky")
    assert leaky["leakage"] and "LEAKAGE" in leaky["warning"]


def test_cli_report_json_and_predict(fitted, small_store):
    _, tmp = small_store
    runner = CliRunner()
    out = runner.invoke(cli, ["report", str(fitted), "--run", "main", "--json", "--plot", str(tmp / "plots")])
    assert out.exit_code == 0, out.output
    rep = json.loads(out.output)
    assert set(rep["scores"]) >= {"FULL", "casme2"} and {"UF1", "UAR"} <= set(rep["scores"]["FULL"])
    assert (tmp / "plots" / "main_confusion.png").is_file()
    clip = next((tmp / "data" / "CASME2" / "CASME2_RAW_selected").glob("sub01/*"))
    out = runner.invoke(cli, ["predict", str(fitted), "--run", "main", str(clip), "--json"])
    assert out.exit_code == 0, out.output
    pred = json.loads(out.output)
    assert pred["models"] == 2 and sum(pred["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)


def test_existing_run_name_is_refused(fitted):
    result = CliRunner().invoke(cli, ["embed", str(fitted), "--run", "main", "--cpu", "--epochs", "1"])
    assert result.exit_code == 1
    assert "run 'main' already exists" in result.output and "--overwrite" in result.output


def test_kfold_splits_subjects_deterministically():
    class C:
        def __init__(self, d, s):
            self.dataset, self.subject = d, s

    clips = [C("casme2", f"sub{i:02d}") for i in range(1, 11) for _ in range(i)]
    a = make_folds(clips, "kfold", 4, seed=1)
    assert a == make_folds(clips, "kfold", 4, seed=1)
    subjects = [s for f in a for s in f["test_subjects"]]
    assert sorted(subjects) == sorted({f"casme2/{c.subject}" for c in clips})


def test_folds_run_in_parallel_workers(small_store):
    store, _ = small_store
    doc = embed(str(store), "par", protocol="kfold", folds=2, jobs=2, **FAST)
    head = fit_lstm(str(store), "par", **MAIN_HEAD, jobs=2)
    s = roi_store.open_store(store)
    assert doc["state"] == "complete" and doc["stage"] == "embed" and [f["index"] for f in doc["folds"]] == [0, 1]
    assert run_document(s, "par")["state"] == "complete" and run_document(s, "par")["stage"] == "head"
    assert sorted(p["id"] for p in head["predictions"]) == sorted(doc["clips"])
    emb = s.zgroup["runs/par/embeddings/R5"][:]
    assert emb.shape[:2] == (2, len(doc["clips"])) and np.abs(emb).sum() > 0


#: A script whose two calls of four tasks run in two local workers; each task reports its worker.
_WORKERS = """
import os, sys
from roi_store import parallel

def task(k):
    return os.getpid(), os.getppid(), os.environ.get("ROISTORE_PROBE"), "xml.dom.minidom" in sys.modules

if __name__ == "__main__":
    seen = []
    for probe in ("first", "second"):
        os.environ["ROISTORE_PROBE"] = probe
        seen.append(list(parallel.run_tasks(task, [(k,) for k in range(4)], jobs=2, preload=["xml.dom.minidom"])))
    print(repr((os.getpid(), "xml.dom.minidom" in sys.modules, seen)))
"""


def test_local_workers_start_with_the_preloaded_modules_and_the_callers_environment(tmp_path):
    """Fold tasks' workers (``--jobs``) are forked from one server that imported ``preload`` (Keras,
    in a run) once, and each takes the caller's environment as it is at the call (its device and
    thread settings), not as it was when the server started."""
    import ast
    import subprocess
    import sys

    script = tmp_path / "workers.py"
    script.write_text(_WORKERS)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    caller, imported_here, (first, second) = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    assert not imported_here  # only the workers' server imported it
    for results, probe in ((first, "first"), (second, "second")):
        assert len(results) == 4 and {r[2] for r in results} == {probe} and all(r[3] for r in results)
    workers = {r[0] for r in first + second}
    servers = {r[1] for r in first + second}
    assert caller not in workers and len(servers) == 1 and caller not in servers  # forked from one server, not here
    assert {r[0] for r in first}.isdisjoint({r[0] for r in second})  # new workers for each call

def test_same_seed_same_predictions_whatever_the_jobs(fitted, small_store):
    """Two worker processes of one thread each give what one process on every core gives."""
    store, _ = small_store
    if "par" not in roi_store.open_store(store).zgroup["runs"]:
        test_folds_run_in_parallel_workers(small_store)
    s = roi_store.open_store(store)
    for r in s.regions:
        np.testing.assert_array_equal(s.zgroup[f"runs/par/embeddings/{r}"][:], s.zgroup[f"runs/main/embeddings/{r}"][:])
    assert head_document(s, "par")["predictions"] == head_document(s, "main")["predictions"]


def test_final_model_trains_on_every_clip_and_predicts(fitted, small_store):
    _, tmp = small_store
    runner = CliRunner()
    out = runner.invoke(cli, ["fit-lstm", str(fitted), "--run", "main", "--final", "--epochs", "2", "--cnn-epochs", "1",
                              "--seed", "3"])
    assert out.exit_code == 0, out.output
    s = roi_store.open_store(fitted)
    group = s.zgroup["runs/main"]
    final = group["final"].attrs["final"]
    assert sorted(final["trained_on"]) == sorted(group.attrs["run"]["clips"]) and final["subjects"] == 3
    assert final["cnn_source"] == "trained" and set(final["cnn"]) == set(s.regions)
    emb = group["final/embeddings/R0"][:]
    assert emb.shape[0] == 1 and np.abs(emb).sum() > 0
    # The folds' results are untouched: the final model is never scored.
    assert len(run_report(s, "main")["predictions"]) == 9
    clip = next((tmp / "data" / "CASME2" / "CASME2_RAW_selected").glob("sub02/*"))
    out = runner.invoke(cli, ["predict", str(fitted), "--run", "main", str(clip), "--json"])
    assert out.exit_code == 0, out.output
    pred = json.loads(out.output)
    assert pred["model"] == "final" and pred["models"] == 1
    assert sum(pred["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    out = runner.invoke(cli, ["predict", str(fitted), "--run", "main", str(clip), "--models", "folds", "--json"])
    assert json.loads(out.output)["model"] == "folds"


def test_final_model_is_asked_for_before_it_exists(small_fitted, tmp_path):
    store = copy_fitted(small_fitted, tmp_path)  # run main, fitted, without a final model
    assert "final" not in roi_store.open_store(store).zgroup["runs/main"]
    clip = next((tmp_path / "data" / "CASME2" / "CASME2_RAW_selected").glob("sub01/*"))
    out = CliRunner().invoke(cli, ["predict", str(store), "--run", "main", str(clip), "--models", "final"])
    assert out.exit_code == 1 and "--final" in out.output and "Traceback" not in out.output


def test_loaded_predictor_matches_one_shot_predict(fitted, small_store):
    from roi_store.method.predict import load_predictor, predict_clip

    _, tmp = small_store
    clips = sorted((tmp / "data" / "CASME2" / "CASME2_RAW_selected").glob("sub0*/*"))[:2]
    predictor = load_predictor(str(fitted), "main", cpu=True)
    for clip in clips:
        assert predictor.predict(clip) == predict_clip(str(fitted), "main", clip, cpu=True)


@pytest.mark.parametrize("epochs", [1, 9], ids=["eager", "compiled"])
def test_a_head_trains_alike_first_or_after_other_folds(epochs):
    """One compiled head serves every fold of a process: a fold trained after another (its weights,
    dropout seeds and optimiser state set afresh) ends exactly as when trained first."""
    from roi_store.method import head, models

    rng = np.random.default_rng(0)
    regions = ["R0", "R1"]
    seqs = [[rng.random((n, models.EMBED_DIM)).astype("float32") for n in (3, 5, 4, 6, 5, 3, 4, 2)] for _ in regions]
    lengths, y = [len(s) for s in seqs[0]], np.array([0, 1, 2, 0, 1, 2, 0, 1])
    settings = {"epochs": epochs, "batch_size": 2, "masked": True, "learning_rate": 1e-2, "gamma": 2.0}
    x = [head.pad_batch(seqs[r], True, 16) for r in range(len(regions))]

    def fold(train, seed):
        model, losses, _ = head.train_head(seqs, y, np.array(train), lengths, regions, 3, settings, 16, seed)
        return [np.array(w) for w in model.get_weights()], np.asarray(model.predict_on_batch(x)), losses

    head._HEADS.clear()
    first = fold([0, 1, 2, 3, 4, 5], 1)  # 3 batches an epoch: 27 steps compile (run_eagerly), 3 do not
    other = fold([2, 3, 4, 5, 6, 7], 2)
    again = fold([0, 1, 2, 3, 4, 5], 1)
    assert len(head._HEADS) == 1  # one model, trained three times
    for a, b in zip(first[0], again[0]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first[1], again[1])
    assert first[2] == again[2] and not np.array_equal(first[1], other[1])


def test_last_step_head_equals_a_masked_lstm():
    """The masked head picks each clip's last real LSTM step: the same numbers as Keras masking."""
    import keras

    from roi_store.method import models
    from roi_store.method.head import pad_batch

    rng = np.random.default_rng(0)
    seqs = [rng.random((n, models.EMBED_DIM)).astype("float32") for n in (3, 11, 7)]
    x = pad_batch(seqs, True, 500)
    inp = keras.Input((None, models.EMBED_DIM))
    masked_lstm = keras.layers.LSTM(8)
    reference = keras.Model(inp, masked_lstm(keras.layers.Masking(mask_value=models.PAD_VALUE)(inp)))
    seq_lstm = keras.layers.LSTM(8, return_sequences=True)
    picked = keras.Model(inp, models.LastStep()(seq_lstm(inp), inp))
    seq_lstm.set_weights(masked_lstm.get_weights())
    np.testing.assert_allclose(np.asarray(picked(x)), np.asarray(reference(x)), rtol=1e-5, atol=1e-6)
    alone = [np.asarray(reference(s[None]))[0] for s in seqs]  # each clip on its own, no padding at all
    np.testing.assert_allclose(np.asarray(picked(x)), np.stack(alone), rtol=1e-5, atol=1e-6)


def test_paper_network_has_the_papers_parameter_count():
    """Six region CNNs (global average pool, dense 1024) and the head: the paper's 1,093,531 within 0.5 %."""
    from roi_store.method import models

    sizes = [(80, 100), (80, 100), (80, 120), (60, 60), (60, 60), (60, 160)]
    cnns = [models.region_cnn(h, w, name=f"cnn{i}") for i, (h, w) in enumerate(sizes)]
    head = models.fusion_head([f"R{i}" for i in range(6)], masked=False)
    total = sum(m.count_params() for m in cnns) + head.count_params()
    assert cnns[0].count_params() == 106_552 and head.count_params() == 6 * 67_680 + 46_144 + 195
    assert abs(total - 1_093_531) / 1_093_531 < 0.005
    assert models.region_cnn(80, 100, pool="flatten").count_params() > 40 * cnns[0].count_params() / 6


def _view_frames(rng, n_clips=4, frames=5):
    from roi_store.method import engine

    shapes = {"R0": (16, 20), "R3": (12, 12)}
    clips = {r: [rng.integers(0, 255, (frames, *s), dtype=np.uint8) for _ in range(n_clips)] for r, s in shapes.items()}
    targets = rng.integers(0, 4, (n_clips, len(shapes))).tolist()
    return engine.ViewFrames(clips, targets)


@pytest.mark.backend
@pytest.mark.parametrize("pool", ["gap", "flatten"])
def test_stacked_folds_export_the_plain_networks(pool):
    """Each fold of a step, copied out, is the plain region CNN giving the same embeddings."""
    from roi_store.method import engine
    from roi_store.method import models
    from roi_store.method.embed import cnn_input

    data = _view_frames(np.random.default_rng(0))
    train = np.stack([data.frame_mask([1, 1, 0, 1]), data.frame_mask([0, 1, 1, 1])], axis=1)
    res = engine.train_group(data, train, n_classes=4, dense=8, pool=pool, mode="delta", epochs=2, batch_size=8,
                             learning_rate=1e-3, gamma=2.0, fold_seeds=[1, 3])
    embs, probs = engine.embed_all(res["model"], data, "delta")
    for f in range(2):
        for r in data.names:
            plain = engine.export_fold(res["model"], r, f, res["plain"][r])
            x = cnn_input(data.frames[r], "delta", data.frames[r][data.first])
            np.testing.assert_allclose(np.asarray(models.embedding_model(plain).predict_on_batch(x)), embs[r][:, f],
                                       rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(np.asarray(plain.predict_on_batch(x)), probs[r][:, f], rtol=1e-4, atol=1e-5)


@pytest.mark.backend
def test_a_folds_held_out_frames_never_shape_its_cnns():
    """Fold 0 does not train on clip 0: changing that clip's pixels and labels leaves fold 0's weights as they were."""
    from roi_store.method import engine

    def fold0_weights(data):
        train = np.stack([data.frame_mask([0, 1, 1, 1]), data.frame_mask([1, 1, 1, 0])], axis=1)
        res = engine.train_group(data, train, n_classes=4, dense=8, pool="gap", mode="frames", epochs=3, batch_size=6,
                                 learning_rate=1e-2, gamma=2.0, fold_seeds=[1, 3])
        return [engine.export_fold(res["model"], r, 0, res["plain"][r]).get_weights() for r in data.names], \
            [engine.export_fold(res["model"], r, 1, res["plain"][r]).get_weights() for r in data.names]

    a = _view_frames(np.random.default_rng(1))
    b = _view_frames(np.random.default_rng(1))
    for r in b.names:
        b.frames[r][:5] = 255 - b.frames[r][:5]  # clip 0 is frames 0..4
    b.targets[:5] = (b.targets[:5] + 1) % 4
    (a0, a1), (b0, b1) = fold0_weights(a), fold0_weights(b)
    for wa, wb in zip(a0, b0):
        for x, y in zip(wa, wb):
            np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for wa, wb in zip(a1, b1) for x, y in zip(wa, wb))  # fold 1 trains on it


@pytest.mark.backend
def test_cross_fitted_cnns_never_saw_the_test_subject(tmp_path):
    """Two cross-fitted CNN groups, trained together in one step, each fold's head on the group that held it out."""
    store = make_small_store(tmp_path)  # without run main: on JAX, this module's other fixtures are never built
    doc = embed(str(store), "xfit", protocol="loso", cnn_folds=2, folds_per_step=2, **FAST)
    s = roi_store.open_store(store)
    assert doc["embedding_folds"] == 2 and len(doc["folds"]) == 3 and doc["leakage"] is False
    markers = fold_docs(s, "xfit", "embed")
    assert sorted(markers) == [0, 1] and all(m["trained_with"] == [0, 1] for m in markers.values())
    assert s.zgroup["runs/xfit/embeddings/R0"].shape[0] == 2
    for fold in doc["folds"]:
        assert fold["embedding_fold"] in (0, 1)
        assert not set(fold["test_clips"]) & set(fold["cnn_train_clips"]) and fold["cnn_train_clips"]
    head = fit_lstm(str(store), "xfit", epochs=1, seed=3, cpu=True)
    assert sorted(p["id"] for p in head["predictions"]) == sorted(doc["clips"])
    # The export names, for every fold, the CNN group that held its test subject out (as the run records it).
    for fmt_name, suffix in (("npz", ".npz"), ("hdf5", ".h5")):
        out = store.parent / f"xfit{suffix}"
        result = CliRunner().invoke(cli, ["export", str(store), "--run", "xfit", "--format", fmt_name, str(out)])
        assert result.exit_code == 0, result.output
        if fmt_name == "npz":
            got = dict(np.load(out))
        else:
            import h5py

            with h5py.File(out) as f:
                got = {k: f[k][()] for k in ("embedding_fold", "fold_test", "clip_ids", "subjects")}
        recorded = [f["embedding_fold"] for f in sorted(doc["folds"], key=lambda f: f["index"])]
        assert got["embedding_fold"].tolist() == recorded and set(recorded) <= {0, 1}
        strs = lambda a: [v.decode() if isinstance(v, bytes) else str(v) for v in a]  # noqa: E731
        subject_of = dict(zip(strs(got["clip_ids"]), strs(got["subjects"])))
        group_clips = {f["embedding_fold"]: f["cnn_train_clips"] for f in doc["folds"]}  # what each CNN group saw
        for k, e in enumerate(got["embedding_fold"]):
            held = set(np.array(strs(got["subjects"]))[got["fold_test"][k] == 1])
            assert held and group_clips[e] and not {subject_of[c] for c in group_clips[e]} & held
    folds = run_report(s, "xfit")["megc2019_folds"]  # a LOSO of the megc2019 view: checked against the challenge's
    assert folds == {"folds": 3, "subjects": {"casme2": 3}, "challenge": {"smic": 16, "casme2": 24, "samm": 28},
                     "conformant": False}
    text = CliRunner().invoke(cli, ["report", str(store), "--run", "xfit"]).output
    assert "LOSO on the megc2019 view with 3 folds (smic 0, casme2 3, samm 0 subjects), not the challenge's 68" in text
    result = CliRunner().invoke(cli, ["embed", str(store), "--run", "xfit2", "--cpu", "--protocol", "kfold",
                                      "--folds", "2", "--cnn-folds", "2"])
    assert result.exit_code == 1 and "--cnn-folds cross-fits the CNNs of a LOSO run" in result.output


def test_paper_preset_end_to_end(small_store):
    store, _ = small_store
    runner = CliRunner()
    out = runner.invoke(cli, ["embed", str(store), "--run", "paper", "--cpu", "--preset", "paper", "--protocol", "kfold",
                              "--folds", "2", "--epochs", "1", "--cnn-dense", "32", "--seed", "3"])
    assert out.exit_code == 0, out.output
    # The paper's head (unmasked, 500 zero-padded steps) is slow to run eagerly: masked here, as an override.
    out = runner.invoke(cli, ["fit-lstm", str(store), "--run", "paper", "--preset", "paper", "--epochs", "1", "--masked"])
    assert out.exit_code == 0, out.output
    s = roi_store.open_store(store)
    doc, head = run_document(s, "paper"), head_document(s, "paper")
    e = doc["settings"]
    assert (e["preset"], e["input"], e["batch_size"], e["relabel"], e["cnn_pool"]) == ("paper", "frames", 64, "default", "gap")
    assert e["preset_overrides"] == ["cnn_dense", "epochs"]
    assert head["settings"]["preset"] == "paper" and head["settings"]["masked"] is True
    assert head["settings"]["batch_size"] == 244 and head["settings"]["preset_overrides"] == ["epochs", "masked"]
    from roi_store.method.presets import resolve

    assert resolve("head", "paper", {"epochs": None, "masked": None}) == (
        {"epochs": 60, "batch_size": 244, "masked": False}, "paper", [])
    text = runner.invoke(cli, ["report", str(store), "--run", "paper"]).output
    assert "preset paper" in text
    default = run_document(s, "main")["settings"]  # run main (conftest.FAST) gave no preset
    assert (default["preset"], default["input"], default["cnn_pool"], default["batch_size"]) == ("roistore", "delta", "gap", 32)
