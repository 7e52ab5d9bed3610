"""The writer lock: takeovers raced by real processes, owners in other containers or boots, file systems
that refuse locks, and ``LOCK.takeover`` kept out of packs."""

from __future__ import annotations

import errno
import json
import os
import platform
import subprocess
import sys
import time
import zipfile

import pytest

from roi_store.errors import RunBusyError, StoreError
from roi_store.store import lock as locks
from roi_store.store.share import pack_store


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def _stale(folder, **owner) -> None:
    """A lock left by a dead process of this host (or the owner given)."""
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"pid": _dead_pid(), "host": platform.node(), "user": "someone", "command": "embed",
           "since": "2026-01-01T00:00:00+00:00", "token": "t0", "process_start": "1",
           "boot_id": locks.boot_id(), "pid_ns": locks.pid_namespace(), **owner}
    (folder / locks.LOCK).write_text(json.dumps(doc))


_TAKE = """
import pathlib, sys, time
from roi_store.errors import RunBusyError
from roi_store.store import lock
folder, sync, me = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
(sync / f"ready{me}").touch()
while not (sync / "go").exists():
    time.sleep(0.002)
try:
    held = lock.acquire(folder, "run 'r' of S", "embed")
    out = f"won {held.took_over['token'] if held.took_over else None}"
except RunBusyError as exc:
    out = f"busy {exc}"
(sync / f"out{me}").write_text(out)
deadline = time.time() + 60  # keep a won claim alive until the other contender has tried
while len(list(sync.glob("out*"))) < 2 and time.time() < deadline:
    time.sleep(0.01)
"""


def test_two_processes_taking_over_one_stale_lock_one_wins(tmp_path):
    folder, sync = tmp_path / "runs" / "r", tmp_path / "sync"
    sync.mkdir()
    _stale(folder)
    procs = [subprocess.Popen([sys.executable, "-c", _TAKE, str(folder), str(sync), str(i)]) for i in range(2)]
    deadline = time.time() + 60
    while len(list(sync.glob("ready*"))) < 2 and time.time() < deadline:
        time.sleep(0.01)
    (sync / "go").touch()
    assert all(p.wait(timeout=60) == 0 for p in procs)
    outs = sorted((sync / f"out{i}").read_text() for i in range(2))
    assert outs[1] == "won t0"  # the stale owner's lock was taken over, once
    busy = outs[0]
    assert busy.startswith("busy run 'r' of S is being written by ") and "\n" not in busy
    assert "wait for it to finish and re-run" in busy
    assert (folder / locks.TAKEOVER).exists()  # left for the next takeover: deleting it would race


@pytest.mark.parametrize("owner, ours, alive", [
    pytest.param({"pid_ns": "pid:[4026532999]"}, {}, None, id="another-container-same-host-name"),
    pytest.param({"boot_id": "another-boot", "pid_ns": "pid:[4026532999]"}, {"pid_ns": "pid:[4026533000]"}, None,
                 id="another-boot-in-a-container"),
    pytest.param({"boot_id": "another-boot", "pid_ns": locks.INIT_PID_NAMESPACE},
                 {"pid_ns": locks.INIT_PID_NAMESPACE}, False, id="this-machine-rebooted"),
    pytest.param({"boot_id": None, "pid_ns": None}, {}, False, id="old-lock-without-namespace"),
])
def test_an_owner_whose_pids_are_not_ours_is_never_taken_over(tmp_path, monkeypatch, owner, ours, alive):
    monkeypatch.setattr(locks, "boot_id", lambda: "this-boot")
    monkeypatch.setattr(locks, "pid_namespace", lambda: ours.get("pid_ns", "pid:[4026531000]"))
    folder = tmp_path / "r"
    _stale(folder, **owner)
    held = locks.read_owner(folder / locks.LOCK)
    assert locks.owner_alive(held) is alive
    if alive is None:
        with pytest.raises(RunBusyError) as err:
            locks.acquire(folder, "run 'r' of S", "embed")
        assert str(err.value) == (
            f"run 'r' of S is locked by someone@{platform.node()} (pid {held['pid']}, embed since "
            f"2026-01-01T00:00:00+00:00) in another container or boot of host {platform.node()}: wait for it to "
            f"finish; if that process is gone, delete {folder / locks.LOCK} and re-run")
    else:
        claim = locks.acquire(folder, "run 'r' of S", "embed")
        assert claim.took_over["token"] == "t0" and claim.owner["boot_id"] == "this-boot"
        claim.release()


def test_a_lock_records_its_boot_and_pid_namespace(tmp_path):
    claim = locks.acquire(tmp_path / "r", "run 'r' of S", "embed")
    try:
        written = json.loads((tmp_path / "r" / locks.LOCK).read_text())
    finally:
        claim.release()
    if sys.platform == "linux":
        assert written["boot_id"] == locks.boot_id() and written["pid_ns"] == os.readlink("/proc/self/ns/pid")
    assert locks.owner_alive(written) is True  # this process: its pid, start, boot and namespace match
    assert not (tmp_path / "r" / locks.LOCK).exists()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file locks")
def test_a_file_system_that_refuses_locks_is_one_line(tmp_path, monkeypatch):
    import fcntl

    def refuse(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "lockf", refuse)
    folder = tmp_path / "r"
    _stale(folder)
    with pytest.raises(StoreError) as err:
        locks.acquire(folder, "run 'r' of S", "embed")
    assert str(err.value) == (
        f"cannot lock {folder / locks.TAKEOVER} to take over the stale lock of run 'r' of S (No locks available; "
        f"a network file system without file locking?): if its owner is gone, delete {folder / locks.LOCK} by hand "
        "and re-run")
    assert json.loads((folder / locks.LOCK).read_text())["token"] == "t0"  # nothing taken over


def test_a_takeover_guard_that_cannot_be_opened_is_one_line(tmp_path):
    folder = tmp_path / "r"
    _stale(folder)
    (folder / locks.TAKEOVER).mkdir()  # a folder where the file should be: open(2) fails
    with pytest.raises(StoreError, match=r"^cannot open .*LOCK\.takeover to take over the stale lock of run 'r' of "
                                         r"S \(Is a directory\): make the folder writable, or if its owner is gone"):
        locks.acquire(folder, "run 'r' of S", "embed")


def test_a_dead_owner_whose_work_still_beats_keeps_its_lock(tmp_path):
    folder = tmp_path / "r"
    _stale(folder)
    with pytest.raises(RunBusyError) as err:
        locks.acquire(folder, "run 'r' of S", "embed", activity=lambda owner: "its heartbeat was written 3 s ago")
    message = str(err.value)
    assert message.startswith("run 'r' of S was being written by someone@") and "\n" not in message
    assert message.endswith("which is gone, but its heartbeat was written 3 s ago: its workers may still be "
                            "writing; wait for them, or stop them and re-run, or choose another --run name")
    claim = locks.acquire(folder, "run 'r' of S", "embed", activity=lambda owner: None)  # silent: taken over
    assert claim.took_over["token"] == "t0"
    claim.release()


def test_pack_leaves_the_takeover_file_out(plain, tmp_path):
    (plain / locks.TAKEOVER).write_text("")
    (plain / locks.LOCK).write_text("{}")
    out = tmp_path / "s.zip"
    pack_store(plain, out, force=True)
    names = zipfile.ZipFile(out).namelist()
    assert "zarr.json" in names and not any(n.rsplit("/", 1)[-1].startswith(locks.LOCK) for n in names)
