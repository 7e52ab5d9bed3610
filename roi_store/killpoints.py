"""Named write boundaries, where the crash-safety tests kill a process on purpose.

``reached(label)`` does nothing unless the environment variable ``ROISTORE_TEST_KILL_AT`` is
``<label>:<n>``: then the ``n``-th time this process reaches ``label`` it sends itself SIGKILL,
which no handler can catch: exactly what a power cut or an out-of-memory kill leaves behind.
Labels sit between two writes (see ``tests/test_kill.py`` for the list).
"""

import os
import signal
from collections import Counter

ENV = "ROISTORE_TEST_KILL_AT"
_seen: Counter = Counter()


def reached(label: str) -> None:
    target, _, count = os.environ.get(ENV, "").rpartition(":")
    if target == label:
        _seen[label] += 1
        if _seen[label] == int(count):
            os.kill(os.getpid(), signal.SIGKILL)
