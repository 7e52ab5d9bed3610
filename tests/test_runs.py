"""Run lifecycle: concurrent writers, one writer per run name, states, resume rules, validation."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

import roi_store
from roi_store.cli.main import cli
from roi_store.method.embed import embed
from roi_store.errors import RoiStoreError, RunBusyError, StoreError
from roi_store.method.head import fit_lstm
from roi_store.store.lock import LOCK, process_start
from roi_store.evaluation.report import run_report
from roi_store.store.run_writer import RunWriter
from roi_store.store.runs import head_document, list_runs, run_status
from roi_store.store.validate import validate_store

from conftest import TINY_HEAD, TINY_RUN


def _copy(method_runs, tmp_path, name="s.zarr"):
    dst = tmp_path / name
    shutil.copytree(method_runs["shared"], dst)
    return dst


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def _write_lock(store_path, run, **owner):
    folder = store_path / "runs" / run
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"pid": os.getpid(), "host": platform.node(), "user": "someone", "command": "embed",
           "since": "2026-01-01T00:00:00+00:00", "token": "t0", "process_start": process_start(os.getpid()), **owner}
    (folder / LOCK).write_text(json.dumps(doc))


def test_two_processes_write_two_runs_of_one_store_at_once(method_runs):
    for run, (code, err) in method_runs["results"].items():
        assert code == 0, f"writer of run {run} failed:\n{err[-3000:]}"
    store = roi_store.open_store(method_runs["shared"])
    states = {r["name"]: (r["state"], r["stage"]) for r in list_runs(store)}
    assert states == {"a": ("complete", "head"), "b": ("complete", "head")}
    report = validate_store(store)
    assert report.ok, report.problems
    assert {r["name"]: r["state"] for r in report.runs} == {"a": "complete", "b": "complete"}
    # Same settings, written side by side: both runs are whole and identical.
    for region in store.regions:
        a, b = (store.zgroup[f"runs/{r}/embeddings/{region}"][:] for r in "ab")
        assert np.abs(a).sum() > 0 and np.array_equal(a, b)
    assert head_document(store, "a")["predictions"] == head_document(store, "b")["predictions"]
    assert store.header == roi_store.open_store(method_runs["base"]).header  # the root document is untouched
    assert not list((method_runs["shared"] / "runs").glob("*/LOCK"))


def test_a_second_writer_of_the_same_run_gets_one_line(method_runs, tmp_path):
    path = _copy(method_runs, tmp_path)
    store = roi_store.open_store(path, mode="r+")
    writer = RunWriter.claim(store, "busy", "embed")
    try:
        result = CliRunner().invoke(cli, ["embed", str(path), "--run", "busy", "--cpu", "--epochs", "1"])
        assert result.exit_code == 1
        [line] = result.output.strip().splitlines()  # one line, no traceback
        assert line.startswith("Error: run 'busy' of ") and f"is being written by {writer.lock.owner['user']}@" in line
        assert f"pid {os.getpid()}, embed since" in line and "wait for it to finish" in line
        assert run_status(store, "busy")["state"] == "running"
    finally:
        writer.release()
    assert not (path / "runs" / "busy" / LOCK).exists()
    holder = RunWriter.claim(store, "a", "fit-lstm")
    try:
        with pytest.raises(RunBusyError, match="run 'a' of .* is being written by .*fit-lstm since"):
            fit_lstm(str(path), "a", **TINY_HEAD)
    finally:
        holder.release()


_CLAIM = """
import pathlib, sys, time
import roi_store
from roi_store.errors import RunBusyError
from roi_store.store.run_writer import RunWriter
d = pathlib.Path(sys.argv[2])
store = roi_store.open_store(sys.argv[1], mode="r+")
(d / f"ready{sys.argv[3]}").touch()
while not (d / "go").exists():
    time.sleep(0.005)
try:
    RunWriter.claim(store, "race", "embed")
    out = "won"
except RunBusyError:
    out = "busy"
(d / f"{out}{sys.argv[3]}").touch()
deadline = time.time() + 60  # keep a won claim alive until every contender has tried
while len(list(d.glob("won*")) + list(d.glob("busy*"))) < 4 and time.time() < deadline:
    time.sleep(0.01)
"""


def test_only_one_of_four_simultaneous_claims_wins(method_runs, tmp_path):
    path = _copy(method_runs, tmp_path)
    sync = tmp_path / "sync"
    sync.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", _CLAIM, str(path), str(sync), str(i)]) for i in range(4)]
    deadline = time.time() + 120
    while len(list(sync.glob("ready*"))) < 4 and time.time() < deadline:
        time.sleep(0.01)
    (sync / "go").touch()
    assert all(p.wait(timeout=120) == 0 for p in procs)
    assert len(list(sync.glob("won*"))) == 1 and len(list(sync.glob("busy*"))) == 3


def test_a_stale_lock_of_a_dead_process_is_taken_over_but_not_one_of_another_host(method_runs, tmp_path):
    path = _copy(method_runs, tmp_path)
    store = roi_store.open_store(path, mode="r+")
    _write_lock(path, "stale", pid=_dead_pid())
    assert run_status(store, "stale")["state"] == "incomplete"
    writer = RunWriter.claim(store, "stale", "embed")
    assert writer.lock.took_over["token"] == "t0"
    writer.release()
    _write_lock(path, "reused", process_start="1")  # a live pid that now belongs to another process
    RunWriter.claim(store, "reused", "embed").release()
    _write_lock(path, "far", host="elsewhere", pid=12345)
    assert run_status(store, "far")["state"] == "running"
    with pytest.raises(RunBusyError, match=r"locked by someone@elsewhere \(pid 12345.*on another host.*delete .*LOCK"):
        RunWriter.claim(store, "far", "embed")


def _boom(*args):
    raise RuntimeError("out of memory in fold 0\nsecond line")


def test_runs_lists_states_who_settings_and_scores(method_runs, tmp_path, monkeypatch):
    path = _copy(method_runs, tmp_path)
    monkeypatch.setattr("roi_store.method.embed.cnn_task", _boom)
    with pytest.raises(RuntimeError):
        embed(str(path), "broken", **TINY_RUN)
    _write_lock(path, "half", pid=_dead_pid())
    store = roi_store.open_store(path, mode="r+")
    live = RunWriter.claim(store, "live", "embed")
    try:
        result = CliRunner().invoke(cli, ["runs", str(path), "--json"])
        assert result.exit_code == 0, result.output
        runs = {r["name"]: r for r in json.loads(result.output)["runs"]}
        text = CliRunner().invoke(cli, ["runs", str(path)]).output
    finally:
        live.release()
    assert {n: r["state"] for n, r in runs.items()} == {
        "a": "complete", "b": "complete", "broken": "failed", "half": "incomplete", "live": "running"}
    assert runs["broken"]["reason"].startswith("RuntimeError: out of memory in fold 0 (at test_runs.py:")
    assert runs["broken"]["folds"]["embed"] == [0, 2] and runs["broken"]["settings"]["seed"] == 3
    assert runs["live"]["writer"]["pid"] == os.getpid() and runs["half"]["settings"] is None
    rep = run_report(store, "a")
    assert runs["a"]["scores"] == {m: rep["scores"]["FULL"][m] for m in ("UF1", "UAR")}
    assert runs["a"]["settings"]["epochs"] == 1 and runs["a"]["head_settings"]["masked"] is True
    assert runs["a"]["user"] and runs["a"]["host"] == platform.node() and runs["a"]["created"]
    assert "failed: RuntimeError: out of memory in fold 0" in text
    assert "interrupted: re-run the same 'roistore embed' command to resume it" in text
    assert "being written by " in text and f"(pid {os.getpid()}, embed since" in text
    line_a = next(line for line in text.splitlines() if line.startswith("a "))
    assert "complete" in line_a and f"{rep['scores']['FULL']['UF1']:.4f}" in line_a and "kfold 2, seed 3" in line_a
    # Not committed runs are states, not faults; the failed embed cannot be fitted.
    report = validate_store(store)
    assert report.ok, report.problems
    assert {r["name"]: r["state"] for r in report.runs}["broken"] == "failed"
    with pytest.raises(RoiStoreError, match=r"run 'broken' has no complete embed \(failed\): re-run the same "
                                            r"'roistore embed .* --run broken' command to resume it"):
        fit_lstm(str(path), "broken", **TINY_HEAD)
    with pytest.raises(RoiStoreError, match=r"run 'broken' has no complete embed \(failed\)"):
        run_report(store, "broken")


def test_runs_command_does_not_start_tensorflow(method_runs):
    code = ("import sys; from roi_store.cli.main import cli\n"
            f"try:\n    cli([ 'runs', {str(method_runs['shared'])!r}])\nexcept SystemExit:\n    pass\n"
            "assert not any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules), 'framework imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "complete" in proc.stdout


def test_a_complete_run_is_kept_and_other_settings_are_refused(method_runs, tmp_path):
    path = _copy(method_runs, tmp_path)
    before = (path / "runs" / "a" / "commit" / "zarr.json").read_bytes()
    doc = embed(str(path), "a", **TINY_RUN)  # same settings: nothing to do, nothing imported or trained
    assert doc["state"] == "complete" and (path / "runs" / "a" / "commit" / "zarr.json").read_bytes() == before
    result = CliRunner().invoke(cli, ["embed", str(path), "--run", "a", "--cpu", "--epochs", "1"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"Error: run 'a' already exists in {path}, made with cnn_dense 32, not 1024; folds 2, not None; "
        "protocol 'kfold', not 'loso'; seed 3, not 0: re-run with the same settings to resume it, "
        "choose another --run name, or pass --overwrite")
    with pytest.raises(StoreError, match=r"run 'a' already has a head made with epochs 1, not 2: .*--overwrite"):
        fit_lstm(str(path), "a", epochs=2, seed=3, cpu=True)
    assert fit_lstm(str(path), "a", **TINY_HEAD)["predictions"] == head_document(
        roi_store.open_store(method_runs["shared"]), "a")["predictions"]


def test_validate_checks_every_chunk_of_committed_runs_only(method_runs, tmp_path):
    path = _copy(method_runs, tmp_path)
    group = zarr.open_group(str(path), mode="r+")
    emb = group["runs/b/embeddings/R3"]
    emb[1] = emb[1] + np.float16(1)  # a valid chunk (checksum and all) with other numbers
    model = path / "runs" / "a" / "models" / "cnn" / "0" / "R2" / "c" / "0"
    model.write_bytes(model.read_bytes()[:-9] + b"corrupted")
    report = validate_store(roi_store.open_store(path))
    assert any("run b: runs/b/embeddings/R3[1] does not match its fold marker's digest" in p for p in report.problems)
    assert any("run a: runs/a/models/cnn/0/R2 is missing or damaged" in p for p in report.problems)
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 1 and "INVALID" in result.output
    # The chunks of a run that is not committed may hold anything: not a fault.
    shutil.rmtree(path / "runs" / "a" / "commit")
    shutil.rmtree(path / "runs" / "a" / "head" / "commit")
    shutil.rmtree(path / "runs" / "b" / "head" / "commit")
    report = validate_store(roi_store.open_store(path))
    assert not any("runs/a/" in p for p in report.problems)
    assert any("runs/b/embeddings/R3[1]" in p for p in report.problems)  # b's embed is still committed
    assert {r["name"]: (r["stage"], r["state"]) for r in report.runs} == {
        "a": ("head", "incomplete"), "b": ("head", "incomplete")}
