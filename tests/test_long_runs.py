"""Long runs: folds stacked in a step train as they would alone; steps checkpoint and resume exactly.

The paper's full LOSO is hours of training. What a lab must be able to trust: ``--folds-per-step``
changes the speed, not a fold's batches or seeds; a run killed anywhere (at an epoch's checkpoint,
between two fold markers of a step) and resumed ends bit-identical, on the CPU, to a run never
interrupted; ``auto`` never stacks more folds than the device holds.
"""

from __future__ import annotations

import os
import shutil
import signal

import numpy as np
import pytest
from click.testing import CliRunner

import roi_store
from roi_store import killpoints
from roi_store.cli.main import cli
from roi_store.method import backend, engine
from roi_store.store.run_data import RunData
from roi_store.store.runs import commit_doc, fold_docs, head_document, run_document

import fresh
from conftest import TINY_HEAD

#: Two kfold CNN folds in one step, three epochs of one batch, a checkpoint at every epoch end.
STACKED = {"protocol": "kfold", "folds": 2, "epochs": 3, "batch_size": 32, "seed": 9, "cpu": True, "cnn_dense": 32,
           "folds_per_step": 2, "checkpoint_every": 0}


def _view(rng, n_clips=6, frames=5):
    shapes = {"R3": (12, 12)}  # one small region: what is tested is per fold, not per region
    clips = {r: [rng.integers(0, 255, (frames, *s), dtype=np.uint8) for _ in range(n_clips)] for r, s in shapes.items()}
    return engine.ViewFrames(clips, rng.integers(0, 4, (n_clips, len(shapes))).tolist())


def _fold_weights(res, data, f):
    return [engine.export_fold(res["model"], r, f, res["plain"][r]).get_weights() for r in data.names]


def _largest_difference(a, b) -> float:
    return max(float(np.max(np.abs(x - y))) for wa, wb in zip(a, b) for x, y in zip(wa, wb))


@pytest.mark.backend
def test_a_fold_trains_alike_alone_or_beside_another():
    """A fold sees the same batches in the same order, alone (F = 1) or stacked (F = 2, in either
    place, beside a fold that ends earlier or later), and ends with the same weights up to the
    rounding of grouped kernels: measured 2.4e-6 at most here (weights of order 0.1 to 1)."""
    import keras

    assert keras.backend.backend() == os.environ.get("KERAS_BACKEND", "tensorflow")  # `make test` runs both
    data = _view(np.random.default_rng(0))
    a, b = data.frame_mask([1, 1, 1, 1, 0, 0]), data.frame_mask([0, 1, 1, 0, 1, 0])  # 20 and 15 frames
    kw = dict(n_classes=4, dense=8, pool="gap", mode="delta", epochs=2, batch_size=8, learning_rate=1e-2, gamma=2.0,
              eager_steps=0)  # compiled, as a real run: one compile for one fold, one for two
    alpha = np.full((1, 2, 4), 0.25)
    alone = engine.FoldBatches(data, a[:, None], "delta", alpha[:, :1], 8, [11], 2)
    stacked = engine.FoldBatches(data, np.stack([b, a], axis=1), "delta", alpha, 8, [22, 11], 2)
    assert stacked.steps == alone.steps == 6 and stacked.ends == [4, 6]  # b: 15 frames, 2 batches an epoch
    for g in range(alone.steps):
        (i1, v1), (i2, v2) = alone.indices(g), stacked.indices(g)
        assert np.array_equal(i1[:, 0], i2[:, 1]) and np.array_equal(v1[:, 0], v2[:, 1])
    assert not np.array_equal(alone.indices(0)[0][:, 0], alone.indices(3)[0][:, 0])  # each epoch reshuffled

    w = {}
    for name, train, seeds, f in (("a alone", a[:, None], [11], 0), ("a first", np.stack([a, b], 1), [11, 22], 0),
                                  ("a second", np.stack([b, a], 1), [22, 11], 1), ("b alone", b[:, None], [22], 0)):
        res = engine.train_group(data, train, fold_seeds=seeds, **kw)
        w[name] = _fold_weights(res, data, f)
        if name == "a first":
            w["b beside a"] = _fold_weights(res, data, 1)  # b ends 2 steps before a: its own last step's weights
    assert _largest_difference(w["a alone"], w["a first"]) < 1e-5
    assert _largest_difference(w["a alone"], w["a second"]) < 1e-5
    assert _largest_difference(w["b alone"], w["b beside a"]) < 1e-5
    assert _largest_difference(w["a alone"], w["b alone"]) > 1e-2  # the folds did train, differently


@pytest.mark.backend
def test_on_a_cpu_each_folds_group_is_convolved_on_its_own_as_one_grouped_convolution_would():
    """Stacked folds' grouped convolutions run group by group on a CPU (XLA's grouped kernels took
    6 s a step there): the same kernel variable, sliced, gives what one grouped convolution gives."""
    import keras

    assert engine.split_groups()  # the tests run on the CPU
    x = np.random.default_rng(0).normal(size=(3, 9, 11, 4)).astype("float32")  # 2 folds x 2 channels
    split = engine.FoldConv2D(6, 3, padding="same", groups=2)
    whole = keras.layers.Conv2D(6, 3, padding="same", groups=2)
    split.build(x.shape), whole.build(x.shape)
    whole.set_weights([np.random.default_rng(1).normal(size=w.shape).astype("float32") for w in whole.get_weights()])
    split.set_weights(whole.get_weights())
    np.testing.assert_allclose(np.asarray(split(x)), np.asarray(whole(x)), rtol=1e-5, atol=1e-5)
    # fold 0's outputs (channels 0..2) depend on fold 0's inputs (channels 0, 1) alone
    moved = x.copy()
    moved[..., 2:] += 1.0
    np.testing.assert_array_equal(np.asarray(split(moved))[..., :3], np.asarray(split(x))[..., :3])


def _killed(code: str, point: str) -> None:
    env = {**os.environ, killpoints.ENV: point, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = fresh.run(code, env=env)
    assert proc.returncode == -signal.SIGKILL, f"{point} was not reached (exit {proc.returncode}):\n{proc.stderr[-3000:]}"


def _run_arrays(path, run: str) -> dict:
    store = roi_store.open_store(path)
    data = RunData.open(store, run)
    out = {f"emb/{r}": store.zgroup[f"runs/{run}/embeddings/{r}"][:] for r in store.regions}
    for k in fold_docs(store, run, "embed"):
        for r in store.regions:
            out[f"cnn/{k}/{r}"] = backend.model_from_bytes(data.model(f"models/cnn/{k}/{r}")).get_weights()
    return out


@pytest.fixture(scope="module")
def stacked_runs(tmp_path_factory):
    """Run ``s`` (F = 2) made uninterrupted, and the same run killed at an epoch's checkpoint, then between
    the two fold markers of its step, then resumed; both fitted by the head. On a store of 6 clips of
    4 frames (2 subjects): stacked folds train slowly on a CPU, and what is tested is the bookkeeping."""
    from roi_store.ingest.pipeline import ingest
    from roi_store.synth import generate

    tmp = tmp_path_factory.mktemp("stacked")
    generate(tmp / "data", preset="tiny", seed=2, datasets=("casme2",), subjects=2, clips_per_class=1, frames=4)
    clean, killed = tmp / "clean.zarr", tmp / "killed.zarr"
    ingest(clean, "casme2", tmp / "data" / "CASME2" / "CASME2_RAW_selected")
    shutil.copytree(clean, killed)
    # Every run in a fresh process, as a user's commands run (and as the kill tests compare them).
    embed_code = {p: f"from roi_store.method.embed import embed\nembed({str(p)!r}, 's', **{STACKED!r})"
                  for p in (clean, killed)}
    whole = {p: embed_code[p] + f"\nfrom roi_store.method.head import fit_lstm\nfit_lstm({str(p)!r}, 's', **{TINY_HEAD!r})"
             for p in (clean, killed)}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    reference = fresh.Process(whole[clean], env=env)
    _killed(embed_code[killed], "train.epoch:2")  # after epoch 2's checkpoint
    store = roi_store.open_store(killed)
    assert RunData.open(store, "s").checkpoint("checkpoints/cnn/0-1") is not None and not fold_docs(store, "s", "embed")
    _killed(embed_code[killed], "embed.fold:1")  # resumed from epoch 3; fold 0 marked, fold 1 not
    store = roi_store.open_store(killed)
    assert sorted(fold_docs(store, "s", "embed")) == [0] and commit_doc(store, "s", "embed") is None
    resumed = fresh.run(whole[killed], env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err[-3000:]
    return clean, killed, {p: run_document(roi_store.open_store(p), "s") for p in (clean, killed)}


def test_a_stacked_run_killed_and_resumed_equals_one_never_interrupted(stacked_runs):
    clean, killed, docs = stacked_runs
    assert docs[clean]["cnn_steps"] == docs[killed]["cnn_steps"] == [[0, 1]]
    want, got = _run_arrays(clean, "s"), _run_arrays(killed, "s")
    assert want.keys() == got.keys() and len(want) == 6 + 2 * 6
    for key in want:
        w, g = want[key], got[key]
        if key.startswith("emb/"):
            assert np.array_equal(w, g), key
        else:
            assert all(np.array_equal(x, y) for x, y in zip(w, g)), key
    a, b = (head_document(roi_store.open_store(p), "s")["predictions"] for p in (clean, killed))
    assert a == b
    store = roi_store.open_store(killed)
    assert not RunData.open(store, "s").has("checkpoints/cnn/0-1")  # spent once the step's folds were marked
    assert commit_doc(store, "s", "embed")["reproducible"] is True


def test_auto_folds_per_step_through_the_command(stacked_runs, tmp_path):
    """``--folds-per-step auto`` on the CPU stacks nothing, and the plan records why; on a GPU it takes
    as many folds as 80 % of the free memory holds, never more than the run has."""
    clean, _, _ = stacked_runs
    result = CliRunner().invoke(cli, ["embed", str(clean), "--run", "auto", "--cpu", "--protocol", "kfold",
                                      "--folds", "2", "--epochs", "1", "--batch-size", "16", "--cnn-dense", "32",
                                      "--folds-per-step", "auto", "--checkpoint-every", "0", "--seed", "9"])
    assert result.exit_code == 0, result.output
    doc = run_document(roi_store.open_store(clean), "auto")
    assert doc["cnn_steps"] == [[0], [1]] and doc["settings"]["folds_per_step"] == "auto"
    assert doc["cnn_step_memory"]["device"] == "cpu"
    bad = CliRunner().invoke(cli, ["embed", str(clean), "--run", "x", "--cpu", "--folds-per-step", "two"])
    assert bad.exit_code == 2 and "'two' is neither a positive number nor auto" in bad.output

    shapes = {"R1": (80, 100), "R6": (60, 160)}
    need = engine.fold_memory(shapes, 64, 1024, "gap", 4)
    assert 10 * 2**20 < need < 2 * 2**30  # tens to hundreds of MB a fold, not bytes nor the whole card
    folds, why = backend.auto_folds_per_step(shapes, 64, 1024, "gap", 4, gpu=0, n_folds=68, free=10 * need)
    assert folds == 8 and why == {"device": "gpu 0", "free_bytes": 10 * need, "fold_bytes": need, "folds_per_step": 8}
    assert backend.auto_folds_per_step(shapes, 64, 1024, "gap", 4, gpu=0, n_folds=5, free=100 * need)[0] == 5
    assert backend.auto_folds_per_step(shapes, 64, 1024, "gap", 4, gpu=0, n_folds=5, free=need // 2)[0] == 1
