"""Fresh processes for the tests, started in about a second rather than seven.

The crash-safety and long-run tests run roistore's commands in processes of their own (killed on
purpose, or run beside each other). Importing Keras and TensorFlow takes about 7 s on a 2-core
machine, most of what such a short process costs. Here every process is forked from one server
process (``multiprocessing``'s forkserver) that imported Keras and roistore once and never ran an
operation: each process starts with those modules imported and nothing else shared (TensorFlow's
runtime, its threads and any model are created in the process itself, as in a new interpreter).
A process runs Python source as ``python -c`` would, with its own environment, and ends like one:
exit status 1 on an uncaught exception (its traceback on stderr), ``-SIGKILL`` when killed.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile

#: What the server imports once. Keras's backend is the one chosen when the server starts.
PRELOAD = ["keras", "roi_store.method.embed", "roi_store.method.head", "roi_store.method.engine",
           "roi_store.ingest.pipeline", "roi_store.store.runs"]

_context = None
_backend = None


def _server():
    global _context, _backend
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
        _backend = os.environ.get("KERAS_BACKEND")
    return _context


def _main(code: str, env: dict, out: str, err: str) -> None:
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):  # what C code writes too, as a subprocess's pipes would get it
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    sys.argv = ["-c"]
    exec(compile(code, "<string>", "exec"), {"__name__": "__main__"})
    sys.stdout.flush(), sys.stderr.flush()


class Process:
    """A running fresh process, used as :class:`subprocess.Popen` is (``communicate``, ``returncode``)."""

    def __init__(self, code: str, env: dict | None = None):
        env = dict(os.environ if env is None else env)
        ctx = _server()
        if env.get("KERAS_BACKEND") != _backend:
            raise ValueError("a fresh process keeps the Keras backend its server imported: use subprocess")
        self._dir = tempfile.TemporaryDirectory(prefix="fresh-")
        self._out, self._err = (os.path.join(self._dir.name, n) for n in ("out", "err"))
        # Not a daemon: it may start worker processes of its own (``--jobs``), as a command does.
        self._proc = ctx.Process(target=_main, args=(code, env, self._out, self._err))
        self._proc.start()
        self.returncode: int | None = None

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self._proc.join(timeout)
        if self._proc.exitcode is None:
            self._proc.kill()
            self._proc.join()
            raise subprocess.TimeoutExpired("fresh process", timeout)
        self.returncode = self._proc.exitcode
        texts = []
        for path in (self._out, self._err):
            try:
                with open(path, errors="replace") as fh:
                    texts.append(fh.read())
            except FileNotFoundError:  # killed before it redirected its output
                texts.append("")
        self._dir.cleanup()
        return texts[0], texts[1]


def run(code: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh process to its end (``subprocess.run(..., capture_output=True, text=True)``)."""
    proc = Process(code, env)
    out, err = proc.communicate(timeout)
    return subprocess.CompletedProcess(["fresh", "-c", code], proc.returncode, out, err)
