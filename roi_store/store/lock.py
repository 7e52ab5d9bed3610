"""One writer at a time: a ``LOCK`` file created exclusively, holding who owns it.

Ingests lock the store folder itself (``STORE/LOCK``: one ingest at a time writes the header,
the records and the region arrays); a run's writer locks the run's folder (``runs/<name>/LOCK``).
Both follow the same rules:

The claim is made by linking a fully written temporary file to ``LOCK`` (``link(2)`` is an
atomic create-if-absent on local and network file systems), so a lock is never seen half
written. A lock whose owner is a dead process of this host (its pid is gone, or now belongs to
a process started later) is stale and may be taken over; takeovers on one host are serialised
by an advisory lock on the folder, so two resumers cannot both take the same stale lock. A
lock held on another host is never taken over automatically: only its owner knows it is gone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import getpass
import json
import os
import platform
import uuid
from pathlib import Path

from roi_store.errors import RunBusyError

LOCK = "LOCK"


def now() -> str:
    """The current UTC time, to the second, as ISO 8601 (every timestamp the store records)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 -- no user name in some containers
        return "unknown"


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (Linux), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def process_start(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks since boot (tells a reused pid apart), or None."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def pid_alive(pid: int | str) -> bool:
    """Whether a process ``pid`` exists on this host (the signal test: a reused pid passes)."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # alive, owned by another user
        pass
    return True


def owner_alive(owner: dict) -> bool | None:
    """True/False if the lock's owner process is alive on this host; None if it ran on another host."""
    if owner.get("host") != platform.node():
        return None
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0 or not pid_alive(pid):
        return False
    fields = _proc_stat(pid)
    if fields is None:
        return True  # no /proc: trust the signal test
    if fields[0] == "Z":
        return False  # killed, not yet reaped
    started = owner.get("process_start")
    return started is None or started == process_start(pid)


def read_owner(path: Path) -> dict | None:
    """The owner recorded in lock file ``path``; None if there is none; {} if it is unreadable."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        owner = json.loads(data)
    except ValueError:
        return {}
    return owner if isinstance(owner, dict) else {}


def describe(owner: dict) -> str:
    return (f"{owner.get('user', '?')}@{owner.get('host', '?')} (pid {owner.get('pid', '?')}, "
            f"{owner.get('command', '?')} since {owner.get('since', '?')})")


@dataclasses.dataclass
class Lock:
    """A claim held by this process; :meth:`release` removes it if it is still ours."""

    path: Path
    owner: dict
    took_over: dict | None = None  # the stale owner this claim replaced

    def release(self) -> None:
        held = read_owner(self.path)
        if held and held.get("token") == self.owner["token"]:
            self.path.unlink(missing_ok=True)


def _create(path: Path, owner: dict) -> bool:
    """Create ``path`` holding ``owner`` if it does not exist; False if it does."""
    tmp = path.with_name(f"{path.name}.{owner['token']}.tmp")
    tmp.write_text(json.dumps(owner))
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: exclusive create, then write
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(owner))
        return True
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _takeover_guard(folder: Path):
    """Serialise stale-lock takeovers of this host (an advisory lock on the folder itself)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the advisory lock


def acquire(folder: Path, what: str, command: str, *, busy: type[Exception] = RunBusyError,
            hint: str = "or choose another --run name") -> Lock:
    """Claim ``folder/LOCK`` for this process, taking over a stale lock of a dead local process.

    Parameters
    ----------
    folder : Path
        The folder to lock (made if missing).
    what : str
        What the folder is, for messages (``run 'a' of STORE``, ``store STORE``).
    command : str
        The command holding the lock, recorded for whoever finds it held.
    busy : exception type
        Raised when another process holds the lock.
    hint : str
        What else the user can do than wait, ending the message.

    Raises
    ------
    busy
        If another live process (or a process on another host) holds the lock.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    owner = {"pid": os.getpid(), "host": platform.node(), "user": user(), "command": command,
             "since": now(), "token": uuid.uuid4().hex, "process_start": process_start(os.getpid())}
    if _create(path, owner):
        return Lock(path, owner)
    with _takeover_guard(folder):
        held = read_owner(path)
        if held is None and _create(path, owner):
            return Lock(path, owner)
        if held is not None and owner_alive(held) is False:
            path.unlink(missing_ok=True)
            if _create(path, owner):
                return Lock(path, owner, took_over=held)
        held = read_owner(path) or {}
    if held and owner_alive(held) is None:
        raise busy(f"{what} is locked by {describe(held)} on another host: wait for it to finish; "
                   f"if that process is gone, delete {path} and re-run")
    raise busy(f"{what} is being written by {describe(held)}: wait for it to finish and re-run, {hint}")

