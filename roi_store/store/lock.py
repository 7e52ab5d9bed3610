"""One writer at a time: a ``LOCK`` file created exclusively, holding who owns it.

Ingests lock the store folder itself (``STORE/LOCK``: one ingest at a time writes the header,
the records and the region arrays); a run's writer locks the run's folder (``runs/<name>/LOCK``).
Both follow the same rules:

The claim is made by linking a fully written temporary file to ``LOCK`` (``link(2)`` is an
atomic create-if-absent on local and network file systems), so a lock is never seen half
written. A lock whose owner is a dead process of this host (its pid is gone, or now belongs to
a process started later) is stale and may be taken over; takeovers are serialised by an
exclusive lock on ``LOCK.takeover``, a file opened for writing (what NFS needs for an
exclusive lock), so two resumers cannot both take the same stale lock.

A lock held on another host, or in another pid namespace of this host (another container of the
same host name, whose pids are not ours), is never taken over automatically: only its owner
knows it is gone. Nor is a lock whose owner died while the work it started still reports
progress (a run's heartbeat, see :mod:`roi_store.method.progress`): its workers may still write.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import getpass
import json
import os
import platform
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from roi_store.errors import RunBusyError, StoreError

LOCK = "LOCK"
#: The file whose exclusive lock serialises takeovers of a stale ``LOCK`` (never part of a pack).
TAKEOVER = "LOCK.takeover"
#: Seconds a takeover waits for another process's takeover of the same lock to end.
TAKEOVER_WAIT = 30.0
#: ``/proc/self/ns/pid`` of the host's own (initial) pid namespace: a fixed number in Linux.
INIT_PID_NAMESPACE = "pid:[4026531836]"


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


def boot_id() -> str | None:
    """This boot of the machine (Linux: ``/proc/sys/kernel/random/boot_id``), or None where the OS has none."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def pid_namespace() -> str | None:
    """The pid namespace of this process (Linux: ``pid:[4026531836]``), or None where the OS has none."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except (OSError, AttributeError):
        return None


def owner_alive(owner: dict) -> bool | None:
    """True/False if the lock's owner process is alive on this host; None if nobody here can tell.

    None for an owner on another host, and for one of this host name whose pids are not ours: in
    another pid namespace (another container), or in another boot unless both ran in the host's
    own namespace (then this machine rebooted since, and the owner is gone). Old locks without a
    boot id or namespace are judged by host and pid alone.
    """
    if owner.get("host") != platform.node():
        return None
    their_ns, our_ns = owner.get("pid_ns"), pid_namespace()
    their_boot, our_boot = owner.get("boot_id"), boot_id()
    if their_boot and our_boot and their_boot != our_boot:
        return False if their_ns == our_ns == INIT_PID_NAMESPACE else None
    if their_ns and our_ns and their_ns != our_ns:
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
def _takeover_guard(folder: Path, what: str, busy: type[Exception]):
    """Serialise takeovers of ``folder/LOCK``: an exclusive POSIX lock on ``folder/LOCK.takeover``.

    A file opened for writing, because NFS grants an exclusive lock on nothing else: its locks
    are ``fcntl`` locks held by the server's lock service (Linux turns ``flock`` into one there),
    and an exclusive ``fcntl`` lock needs a descriptor open for writing, which a folder never
    is. Any OS error here is one line: the stale lock cannot be taken over safely.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path = folder / TAKEOVER
    manual = f"if its owner is gone, delete {folder / LOCK} by hand and re-run"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise StoreError(f"cannot open {path} to take over the stale lock of {what} ({exc.strerror or exc}): "
                         f"make the folder writable, or {manual}") from None
    try:
        deadline = time.monotonic() + TAKEOVER_WAIT
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except (BlockingIOError, PermissionError):  # EAGAIN/EACCES: another process is taking it over
                if time.monotonic() > deadline:
                    raise busy(f"{what}: another process has been taking over its stale lock for "
                               f"{TAKEOVER_WAIT:.0f} s ({path} is locked): wait and re-run, or {manual}") from None
                time.sleep(0.02)
            except OSError as exc:  # ENOLCK: an NFS mount without its lock service, and the like
                raise StoreError(f"cannot lock {path} to take over the stale lock of {what} "
                                 f"({exc.strerror or exc}; a network file system without file locking?): "
                                 f"{manual}") from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


def acquire(folder: Path, what: str, command: str, *, busy: type[Exception] = RunBusyError,
            hint: str = "or choose another --run name",
            activity: Callable[[dict], str | None] | None = None) -> Lock:
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
    activity : callable, optional
        Given the owner of a lock that looks stale, says what of its work still shows signs of
        life (``"its heartbeat is 12 s old"``), or None: such a lock is not taken over.

    Raises
    ------
    busy
        If another live process (or one that nobody here can tell is dead) holds the lock.
    StoreError
        If a stale lock cannot be taken over safely (the file system refuses file locks).
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    owner = {"pid": os.getpid(), "host": platform.node(), "user": user(), "command": command,
             "since": now(), "token": uuid.uuid4().hex, "process_start": process_start(os.getpid()),
             "boot_id": boot_id(), "pid_ns": pid_namespace()}
    if _create(path, owner):
        return Lock(path, owner)
    with _takeover_guard(folder, what, busy):
        held = read_owner(path)
        if held is None and _create(path, owner):
            return Lock(path, owner)
        if held is not None and owner_alive(held) is False:
            alive = activity(held) if activity is not None and held else None
            if alive:
                raise busy(f"{what} was being written by {describe(held)}, which is gone, but {alive}: its workers "
                           f"may still be writing; wait for them, or stop them and re-run, {hint}")
            # Replaced in one rename, never deleted then made: a claim racing the takeover finds the
            # lock there all the while (only takeovers, serialised here, ever replace one).
            tmp = path.with_name(f"{path.name}.{owner['token']}.tmp")
            tmp.write_text(json.dumps(owner))
            os.replace(tmp, path)
            return Lock(path, owner, took_over=held)
        held = read_owner(path) or {}
    if held and owner_alive(held) is None:
        where = ("on another host" if held.get("host") != platform.node()
                 else f"in another container or boot of host {held.get('host')}")
        raise busy(f"{what} is locked by {describe(held)} {where}: wait for it to finish; "
                   f"if that process is gone, delete {path} and re-run")
    raise busy(f"{what} is being written by {describe(held)}: wait for it to finish and re-run, {hint}")

