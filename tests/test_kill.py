"""Crash safety: SIGKILL at 23 write boundaries of ingest, embed and fit-lstm.

Each step starts the command in a fresh process (``fresh.py``: Keras imported, nothing run) with ``ROISTORE_TEST_KILL_AT=<label>:<n>``,
which makes the process SIGKILL itself the n-th time it passes that write boundary. After
every kill the store must validate; the next step re-runs the same command on what the kill
left (resuming it) and is killed further on; a last uninterrupted re-run must finish with
arrays identical to an uninterrupted run's (the ``method_runs`` fixture; same seed).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

import roi_store
from roi_store import killpoints
from roi_store.method.embed import embed
from roi_store.method.head import fit_lstm
from roi_store.ingest.pipeline import ingest
from roi_store.store.runs import head_document, run_status
from roi_store.store.validate import validate_store

import fresh
from conftest import TINY_HEAD, TINY_RUN, method_script

#: (kill point, run state expected after the kill)
EMBED_STEPS = [
    ("run.claimed:1", "incomplete"),    # the lock exists, nothing else
    ("embed.planned:1", "incomplete"),  # the plan, no arrays
    ("embed.arrays:3", "incomplete"),   # three of six embedding arrays
    ("embed.model:2", "incomplete"),    # fold 0: two regions' chunks and models, no marker
    ("embed.fold:1", "incomplete"),     # fold 0 redone and marked
    ("embed.chunk:1", "incomplete"),    # fold 1 (fold 0 skipped): one chunk
    ("embed.commit:1", "incomplete"),   # every fold marked, no commit
    ("run.committed:1", "complete"),    # committed; the lock of a dead process is left behind
]
HEAD_STEPS = [
    ("run.claimed:1", "incomplete"),    # a fit-lstm claim, no head plan yet
    ("head.planned:1", "incomplete"),
    ("head.model:1", "incomplete"),     # fold 0's model, no marker
    ("head.fold:1", "incomplete"),      # fold 0 redone and marked
    ("head.model:1", "incomplete"),     # fold 1's model (fold 0 skipped), no marker
    ("head.commit:1", "incomplete"),    # both folds marked, no commit
    ("run.committed:1", "complete"),
]
INGEST_STEPS = [
    "store.create:1",   # the store built beside its place, not yet renamed into it
    "store.resize:3",   # three region arrays grown, three not; no records
    "ingest.pending:4",
    "ingest.chunk:8",   # the second clip half written
    "ingest.record:2",
    "ingest.chunk:1",
    "ingest.record:4",
    "ingest.header:1",  # every clip complete, the ingest log not yet written
]


def _killed(code: str, point: str) -> None:
    env = {**os.environ, killpoints.ENV: point, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = fresh.run(code, env=env)
    assert proc.returncode == -signal.SIGKILL, f"{point} was not reached (exit {proc.returncode}):\n{proc.stderr[-3000:]}"


def _frames(path) -> dict:
    store = roi_store.open_store(path)
    return {(c.id, r): store.frames(c.id, r) for c in store.clips for r in store.regions}


def _valid(path, point: str) -> roi_store.Store:
    store = roi_store.open_store(path)
    report = validate_store(store)
    assert report.ok, f"after a kill at {point}: {report.problems}"
    return store


#: Passes kill point ``embed.fold`` twice, saying so after each pass.
_PASS_TWICE = """
from roi_store import killpoints
for n in (1, 2):
    killpoints.reached("embed.fold")
    print("passed", n, flush=True)
"""


@pytest.mark.parametrize(
    ("setting", "returncode", "printed"),
    [
        pytest.param(None, 0, ["passed 1", "passed 2"], id="unset"),
        pytest.param("", 0, ["passed 1", "passed 2"], id="empty"),
        pytest.param("ingest.chunk:1", 0, ["passed 1", "passed 2"], id="another-label"),
        pytest.param("embed.fold:3", 0, ["passed 1", "passed 2"], id="count-not-reached"),
        pytest.param("embed.fold:1", -signal.SIGKILL, [], id="first-pass"),
        pytest.param("embed.fold:2", -signal.SIGKILL, ["passed 1"], id="second-pass"),
    ],
)
def test_a_process_is_killed_only_at_the_named_label_and_pass(setting, returncode, printed):
    env = {k: v for k, v in os.environ.items() if k != killpoints.ENV}
    if setting is not None:
        env[killpoints.ENV] = setting
    proc = subprocess.run([sys.executable, "-c", _PASS_TWICE], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == returncode, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == printed


def test_ingest_killed_at_eight_points_resumes_to_the_same_arrays(method_runs, tmp_path):
    path = tmp_path / "k.zarr"
    code = f"from roi_store.ingest.pipeline import ingest; ingest({str(path)!r}, 'casme2', {str(method_runs['root'])!r})"
    for point in INGEST_STEPS:
        _killed(code, point)
        if point == "store.create:1":
            assert not path.exists() and list(tmp_path.glob(".k.zarr.creating-*"))
            continue
        store = _valid(path, point)
        assert store.summary()["pending"] or point in ("store.resize:3", "ingest.header:1")
    ingest(path, "casme2", method_runs["root"])
    assert not list(tmp_path.glob(".k.zarr.creating-*"))
    reference, after = _frames(method_runs["base"]), _frames(path)
    assert after.keys() == reference.keys() and all(np.array_equal(reference[k], after[k]) for k in reference)
    skipped = {r.id for r in roi_store.open_store(path).records().values() if r.status == "skipped"}
    assert skipped == {r.id for r in roi_store.open_store(method_runs["base"]).records().values() if r.status == "skipped"}
    _valid(path, "the end")


@pytest.fixture(scope="module")
def killed_embed(method_runs, tmp_path_factory):
    """Run ``a`` made on a copy of the store by a chain of killed embed processes, then re-run."""
    path = tmp_path_factory.mktemp("kill") / "k.zarr"
    shutil.copytree(method_runs["base"], path)
    code = method_script(path, "a", stages=("embed",))
    for point, state in EMBED_STEPS:
        _killed(code, point)
        status = run_status(_valid(path, point), "a")
        assert (status["stage"], status["state"]) == ("embed", state), point
    doc = embed(str(path), "a", **TINY_RUN)
    assert doc["state"] == "complete"
    return path


def test_embed_killed_at_eight_points_resumes_to_the_same_embeddings(killed_embed, method_runs):
    store, reference = roi_store.open_store(killed_embed), roi_store.open_store(method_runs["shared"])
    for region in store.regions:
        got = store.zgroup[f"runs/a/embeddings/{region}"][:]
        assert np.array_equal(got, reference.zgroup[f"runs/a/embeddings/{region}"][:]), region
    assert not (killed_embed / "runs" / "a" / "LOCK").exists()  # the dead process's lock was taken over and released


def test_fit_lstm_killed_at_seven_points_resumes_to_the_same_predictions(killed_embed, method_runs):
    code = method_script(killed_embed, "a", stages=("fit-lstm",))
    for point, state in HEAD_STEPS:
        _killed(code, point)
        status = run_status(_valid(killed_embed, point), "a")
        assert (status["stage"], status["state"]) == ("head", state), point
    fit_lstm(str(killed_embed), "a", **TINY_HEAD)
    got = head_document(roi_store.open_store(killed_embed), "a")
    want = head_document(roi_store.open_store(method_runs["shared"]), "a")
    assert [p["id"] for p in got["predictions"]] == [p["id"] for p in want["predictions"]]
    assert np.array_equal(np.array([p["probs"] for p in got["predictions"]]),
                          np.array([p["probs"] for p in want["predictions"]]))
    assert got["predictions"] == want["predictions"]
    _valid(killed_embed, "the end")
