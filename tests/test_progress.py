"""Progress of long trainings: lines and bars, the run's heartbeat, and what ``roistore runs`` makes of it."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time

import pytest
import zarr
from click.testing import CliRunner

import roi_store
from roi_store.cli.main import cli
from roi_store.errors import RunBusyError
from roi_store.method import progress
from roi_store.store import format as fmt
from roi_store.store.lock import LOCK, process_start
from roi_store.store.run_writer import RunWriter
from roi_store.store.run_data import RunData
from roi_store.store.runs import STALE_AFTER, duration, heartbeat, run_status

from conftest import TINY_RUN


def _ago(seconds: float) -> str:
    return (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds)).isoformat(timespec="seconds")


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


BEAT = {"command": "embed", "stage": "embed", "step": "CNN fold 3", "folds": [3], "epoch": 41, "epochs": 100,
        "folds_done": 4, "folds_total": 10, "rate": 2400.0, "rate_unit": "region frames/s", "eta_seconds": 7800,
        "started": "2026-01-01T00:00:00+00:00", "units_at_start": 0, "host": "gpu1", "pid": 4242}


def _run_with(store_path, name, *, owner=None, beat_age=None, lock_token="t0"):
    """Run ``name`` claimed by ``owner`` (a LOCK written by hand), with a heartbeat ``beat_age`` seconds old."""
    group = zarr.open_group(str(store_path), mode="r+")
    run = group.require_group(f"runs/{name}")
    if owner is not None:
        doc = {"pid": os.getpid(), "host": platform.node(), "user": "someone", "command": "embed",
               "since": "2026-01-01T00:00:00+00:00", "token": "t0", "process_start": process_start(os.getpid()),
               **owner}
        (store_path / "runs" / name / LOCK).write_text(json.dumps(doc))
    if beat_age is not None:
        RunData(run, name).write_heartbeat({**BEAT, "updated": _ago(beat_age), "lock": lock_token})


@pytest.mark.parametrize("seconds, words", [
    (0, "0 s"), (59.4, "59 s"), (61, "1 min"), (3600, "1 h"), (7800, "2 h 10 min"), (49 * 3600, "2 d 1 h"),
])
def test_durations_in_words(seconds, words):
    assert duration(seconds) == words


def test_runs_shows_a_running_runs_heartbeat(plain):
    _run_with(plain, "live", owner={}, beat_age=3)
    _run_with(plain, "older", owner={}, beat_age=3, lock_token="an-earlier-attempt")
    store = roi_store.open_store(plain)
    status = run_status(store, "live")
    assert status["state"] == "running" and status["heartbeat"]["step"] == "CNN fold 3"
    assert status["progress"] == ("CNN fold 3, epoch 41/100, 2,400 region frames/s; 4/10 folds done, "
                                  "ETA 2 h 10 min")
    old = run_status(store, "older")  # a heartbeat left by an earlier attempt says nothing of this one
    assert old["state"] == "running" and old["heartbeat"] is None and old["progress"] is None
    result = CliRunner().invoke(cli, ["runs", str(plain)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("live "))
    assert "running" in lines[at]
    assert lines[at + 1].strip().startswith("running: CNN fold 3, epoch 41/100, 2,400 region frames/s; 4/10 folds "
                                            "done, ETA 2 h 10 min (heartbeat ")
    assert lines[at + 2].strip().startswith(f"being written by someone@{platform.node()} (pid {os.getpid()}")
    data = json.loads(CliRunner().invoke(cli, ["runs", str(plain), "--json"]).output)
    live = next(r for r in data["runs"] if r["name"] == "live")
    assert live["heartbeat"]["eta_seconds"] == 7800 and 0 <= live["heartbeat_age"] < 60


def test_a_run_whose_heartbeat_stopped_is_stalled(plain):
    _run_with(plain, "hung", owner={}, beat_age=STALE_AFTER + 60)  # its writer (this process) lives on
    _run_with(plain, "far", owner={"host": "elsewhere", "pid": 12345}, beat_age=3 * 3600)
    _run_with(plain, "far-fresh", owner={"host": "elsewhere", "pid": 12345}, beat_age=5)
    _run_with(plain, "orphans", owner={"pid": _dead_pid()}, beat_age=5)  # the writer died, a worker beats
    _run_with(plain, "dead", owner={"pid": _dead_pid()}, beat_age=STALE_AFTER + 60)
    store = roi_store.open_store(plain)
    states = {n: run_status(store, n) for n in ("hung", "far", "far-fresh", "orphans", "dead")}
    assert {n: s["state"] for n, s in states.items()} == {
        "hung": "stalled", "far": "stalled", "far-fresh": "running", "orphans": "stalled", "dead": "incomplete"}
    assert states["hung"]["reason"] == (
        f"no heartbeat for 11 min: its writer (pid {os.getpid()} on host {platform.node()}) is alive but not "
        "training (hung?); stop it, then re-run the same command")
    assert states["far"]["reason"] == (
        "no heartbeat for 3 h: its writer (pid 12345 on host elsewhere) probably died; if so, delete runs/far/LOCK "
        "and re-run the same command")
    assert re.fullmatch(r"its writer \(pid \d+ on host .*\) died, but its heartbeat was written \d+ s ago: a worker "
                        r"may still be writing; stop it, then re-run the same command", states["orphans"]["reason"])
    assert states["dead"]["reason"].startswith("writer pid ") and states["dead"]["heartbeat"] is None
    text = CliRunner().invoke(cli, ["runs", str(plain)]).output
    assert "stalled: no heartbeat for 3 h: its writer (pid 12345 on host elsewhere) probably died" in text
    assert "last heartbeat: CNN fold 3, epoch 41/100" in text
    assert "interrupted: re-run the same 'roistore embed' command to resume it (writer pid " in text


def test_a_dead_writer_whose_workers_still_beat_keeps_its_lock(plain):
    _run_with(plain, "orphans", owner={"pid": _dead_pid()}, beat_age=5)
    store = roi_store.open_store(plain, mode="r+")
    with pytest.raises(RunBusyError, match=r"^run 'orphans' of .* was being written by someone@.*, which is gone, but "
                                           r"its heartbeat was written \d+ s ago by pid 4242 on host gpu1: its workers "
                                           r"may still be writing; wait for them, or stop them and re-run, or choose "
                                           r"another --run name$"):
        RunWriter.claim(store, "orphans", "embed")
    result = CliRunner().invoke(cli, ["fit-lstm", str(plain), "--run", "orphans", "--cpu"])
    assert result.exit_code == 1, result.exception
    [line] = result.output.strip().splitlines()
    assert line.startswith("Error: run 'orphans' of ") and "its workers may still be writing" in line
    _run_with(plain, "dead", owner={"pid": _dead_pid()}, beat_age=STALE_AFTER + 60)  # an old heartbeat: taken over
    writer = RunWriter.claim(store, "dead", "embed")
    assert writer.lock.took_over["token"] == "t0"
    writer.release()
    # A fresh heartbeat written by the dead writer itself (killed mid-training) shows no life.
    pid = _dead_pid()
    _run_with(plain, "killed", owner={"pid": pid}, beat_age=1)
    run = RunData.open(store, "killed")
    run.write_heartbeat({**run.heartbeat(), "host": platform.node(), "pid": pid})
    assert run_status(store, "killed")["state"] == "incomplete"
    writer = RunWriter.claim(store, "killed", "embed")
    assert writer.lock.took_over["pid"] == pid
    writer.release()


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _tracker(store_path, name="t", **kw):
    group = zarr.open_group(str(store_path), mode="r+").require_group(f"runs/{name}")
    options = {"stage": "embed", "folds": [4, 5], "folds_total": 10, "epochs": 100, "per_epoch": 600.0,
               "unit": "region frames/s", "lock": "t0", **kw}
    return progress.Tracker(RunData(group, name), name, **options)


def test_a_library_call_is_quiet_unless_asked(monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    assert progress.display() is None
    monkeypatch.setenv(progress.ENV, "0")
    assert progress.display() is None
    monkeypatch.setenv(progress.ENV, "60")
    shown = progress.display()
    assert isinstance(shown, progress.Lines) and shown.every == 60


def test_lines_in_a_log_and_a_bar_on_a_terminal(plain, monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    log = io.StringIO()
    with progress.printing(log, every=1e-6):
        assert os.environ[progress.ENV] == "1e-06"  # local workers started now print lines too
        tracker = _tracker(plain)
        tracker.begin()
        time.sleep(0.01)
        tracker.update(50.0, force=True)
        tracker.end()
        assert progress.echo("cnn fold 4 done (5/10)")
    assert progress.ENV not in os.environ and progress.display() is None
    lines = log.getvalue().splitlines()
    assert lines[-2].startswith("embed run t: CNN folds 4-5, epoch 50/100, ") and " region frames/s; " in lines[-2]
    assert lines[-1] == "cnn fold 4 done (5/10)"
    terminal = _Terminal()
    with progress.printing(terminal) as bar:
        assert isinstance(bar, progress.Bar)
        tracker = _tracker(plain, stage="head", folds=[7], epochs=60, unit="clips/s")
        tracker.begin()
        tracker.update(30.0, force=True)
        progress.echo("head fold 6 done (3/10)")
        tracker.end()
    shown = terminal.getvalue()
    assert "fit-lstm run t: head fold 7" in shown and "epoch 30/60" in shown and "head fold 6 done (3/10)" in shown
    with progress.reporting(None):
        assert progress.display() is None
    said = []
    with progress.reporting(said.append, every=1e-6):
        tracker = _tracker(plain)
        tracker.begin()
        time.sleep(0.01)
        tracker.update(1.0, force=True)
    assert said and said[-1].startswith("embed run t: CNN folds 4-5, epoch 1/100")


def test_the_eta_follows_this_attempts_pace(plain):
    tracker = _tracker(plain)  # folds 4-5 of 10, 100 epochs each
    tracker.folds_done = 4  # since this attempt started 100 s ago: 4 folds were done before it began
    tracker.units_at_start, tracker.started = 400.0, time.time() - 100
    beat = tracker.document(50.0)  # 2 folds x 50 epochs in 100 s: 1 fold-epoch/s; 500 to go
    assert beat["folds_done"] == 4 and beat["epoch"] == 50
    assert 480 <= beat["eta_seconds"] <= 520
    tracker.resumed_at(40)  # a step resumed from its checkpoint at epoch 40: its rate counts from there
    assert tracker.document(40.0)["rate"] is None
    fmt.validate_document({**beat, "format_version": 1}, "run.heartbeat", "test")


def test_the_keras_callback_beats_at_epoch_ends(plain):
    from roi_store.method import backend

    keras = backend.keras()
    import numpy as np

    tracker = _tracker(plain, folds=[0], folds_total=1, epochs=3, per_epoch=8.0, unit="clips/s")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    tracker.begin()
    model.fit(np.zeros((8, 2)), np.zeros((8, 1)), epochs=3, batch_size=4, verbose=0,
              callbacks=[tracker.keras_callback()])
    beat = heartbeat(roi_store.open_store(plain), "t")
    assert beat["epoch"] == 3 and beat["epochs"] == 3 and beat["rate"] > 0 and beat["lock"] == "t0"
    assert beat["pid"] == os.getpid() and beat["host"] == platform.node()


def test_a_real_embed_shows_progress_and_leaves_its_heartbeat(method_runs, tmp_path):
    path = tmp_path / "s.zarr"
    shutil.copytree(method_runs["base"], path)
    args = ["embed", str(path), "--run", "t", "--cpu"]
    for key, flag in (("protocol", "--protocol"), ("folds", "--folds"), ("epochs", "--epochs"),
                      ("batch_size", "--batch-size"), ("seed", "--seed"), ("cnn_dense", "--cnn-dense")):
        args += [flag, str(TINY_RUN[key])]
    result = CliRunner().invoke(cli, args, env={progress.ENV: "0.000001"})
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("embed run t: CNN fold ")]
    assert lines and all(", epoch " in line and "/1" in line for line in lines)
    store = roi_store.open_store(path)
    beat = heartbeat(store, "t")
    assert beat["stage"] == "embed" and beat["folds_total"] == 2 and beat["epoch"] == beat["epochs"] == 1
    assert beat["step"] in ("CNN fold 0", "CNN fold 1") and beat["rate"] > 0
    assert run_status(store, "t")["state"] == "complete" and run_status(store, "t")["heartbeat"] is None
    # ... and the head run by another process beside it wrote its own
    head = heartbeat(roi_store.open_store(method_runs["shared"]), "a")
    assert head["stage"] == "head" and head["command"] == "fit-lstm" and head["rate_unit"] == "clips/s"
