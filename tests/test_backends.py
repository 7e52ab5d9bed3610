"""The engine's core tests (marked ``backend``) on Keras' other backend, JAX, on the CPU.

Keras picks its backend once per process, when it is first imported, so the marked tests run a
second time in a fresh interpreter with ``KERAS_BACKEND=jax``: stacked folds equal their exported
plain networks, a held-out clip never moves its fold's weights, a fold trains alike alone or
stacked, cross-fitting with its export, fit-lstm and report end to end. A failure there fails
this test with that run's report.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax  # noqa: F401 -- a required test dependency (the dev extra): if it cannot import, this fails

TESTS = Path(__file__).parent


def marked_modules() -> list[str]:
    """The test modules holding ``backend`` tests (the only ones the JAX run needs to collect)."""
    return sorted(str(p) for p in TESTS.glob("test_*.py") if "@pytest.mark.backend" in p.read_text())


def test_the_engines_core_tests_pass_on_jax(tmp_path):
    modules = marked_modules()
    assert {"test_method.py", "test_long_runs.py"} <= {os.path.basename(m) for m in modules}
    # XLA compiles without its costly LLVM passes: these programs are tiny and run a few steps, and
    # what the tests check (folds kept apart, exports equal) holds at any optimisation level.
    xla = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
           "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {xla}".strip()}
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "backend", "-p", "no:xdist", "-p",
                           "no:cacheprovider", "--basetemp", str(tmp_path / "jax"), *modules],
                          cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=1500)
    report = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, f"the backend tests failed on JAX:\n{report}"
    closing = proc.stdout.strip().splitlines()[-1]
    assert " passed" in closing and "skipped" not in closing and "deselected" in closing, closing
