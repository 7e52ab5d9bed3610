"""Timing helpers, machine facts and the shape of a stage's results, shared by the benchmarks.

A stage returns ``{"title", "figures", "targets", "details"}``. A figure is a dict with its
``label`` and ``unit`` and, when measured more than once, ``min`` / ``median`` / ``max`` and the
raw ``runs``. A target names a figure, a comparison and a threshold; ``met`` is computed from
the measured median, never asserted.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def stats(values: list[float]) -> dict:
    """min / median / max of repeated measurements (and the raw values)."""
    values = [float(v) for v in values]
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "runs": values}


def figure(label: str, unit: str, values: list[float] | float) -> dict:
    """A named, unit-carrying measurement: a single value or the statistics of repeats."""
    values = values if isinstance(values, list) else [values]
    return {"label": label, "unit": unit, **stats(values)}


def ratio(label: str, numerator: list[float], denominator: list[float]) -> dict:
    """Per-repeat ratios of two figures measured alternately in the same run (A,B,A,B...)."""
    if len(numerator) != len(denominator):
        raise ValueError("a ratio needs the same number of runs on both sides")
    return figure(label, "x", [a / b for a, b in zip(numerator, denominator)])


OPS = {">=": lambda v, t: v >= t, "<=": lambda v, t: v <= t}


def target(what: str, figures: dict, name: str, op: str, threshold: float) -> dict:
    """A target on a figure's median; ``met`` says whether this run's measurement reached it."""
    value = figures[name]["median"]
    return {"what": what, "figure": name, "op": op, "threshold": threshold, "value": value,
            "met": bool(OPS[op](value, threshold))}


def alternate(contenders: dict, repeats: int) -> dict[str, list]:
    """Call each contender in turn, ``repeats`` rounds (A,B,A,B...); each one's results in order."""
    runs = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            runs[name].append(fn())
    return runs


def peak_memory() -> dict:
    """This interpreter's peak resident memory and its largest finished worker's, in MiB."""
    import resource

    return {"__peak_rss_mib__": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "__peak_rss_children_mib__": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def run_task(module: str, task: str, args: dict, env: dict | None = None, timeout: float | None = None) -> dict:
    """Run task ``task`` of benchmark module ``module`` in a fresh interpreter.

    Runs ``python -m module task JSON`` from the repository root; the module hands its tasks to
    :func:`serve`, which calls the task with ``args`` as keyword arguments.

    Parameters
    ----------
    module : str
        A module under ``benchmarks`` whose ``__main__`` block calls :func:`serve`.
    task : str
        The task's name in that module's table.
    args : dict
        JSON-ready keyword arguments of the task.
    env : dict, optional
        Environment variables added to this process's.
    timeout : float, optional
        Seconds before the interpreter is killed.

    Returns
    -------
    dict
        The task's result, with ``peak_rss_mib`` (the interpreter's own peak memory, MiB) and
        ``peak_rss_children_mib`` (its largest worker's) added.

    Raises
    ------
    RuntimeError
        If the interpreter fails; with the end of its error output.
    """
    proc = subprocess.run([sys.executable, "-m", module, task, json.dumps(args)], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark step failed:\n{proc.stderr[-3000:]}")
    # Only JSON lines count: the library and its backends may print progress to stdout.
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith(("{", "["))]
    out, peak = json.loads(lines[-2]), json.loads(lines[-1])
    if isinstance(out, dict):
        out["peak_rss_mib"] = peak["__peak_rss_mib__"]
        out["peak_rss_children_mib"] = peak["__peak_rss_children_mib__"]
    return out


def serve(tasks: dict[str, Callable[..., dict]], argv: list[str] | None = None) -> None:
    """A task module's entry point: run the task ``argv`` names, print its result and peak memory.

    Parameters
    ----------
    tasks : dict
        Task name -> function returning a JSON-ready dict.
    argv : list of str, optional
        ``[task, json_args]``; the command line's by default.
    """
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in tasks:
        raise SystemExit(f"usage: TASK JSON-ARGS, with TASK one of {', '.join(tasks)}")
    print(json.dumps(tasks[argv[0]](**json.loads(argv[1]))))
    print(json.dumps(peak_memory()))


def gpu_names() -> list[str]:
    """The NVIDIA GPUs ``nvidia-smi`` lists (empty if none or no driver)."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [ln.split(":", 1)[1].split("(")[0].strip() for ln in out.stdout.splitlines() if ln.startswith("GPU")]


# OpenCV under either wheel's name: results measured before roistore took the contrib wheel name the other.
_DISTS = ("roistore", "numpy", "zarr", "numcodecs", "opencv-contrib-python-headless", "opencv-python-headless",
          "dlib-bin", "keras", "tensorflow", "tensorflow-cpu", "jax", "torch", "joblib")


def machine() -> dict:
    """Cores, memory, CPU model, GPUs, Python and library versions, for the results' header.

    Read from the system and package metadata only: nothing heavy is imported.
    """
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    versions = {}
    for dist in _DISTS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu or "unknown", "cores": os.cpu_count() or 1, "usable_cores": usable, "memory_gib": mem,
            "gpus": gpu_names(), "python": platform.python_version(), "platform": platform.platform(),
            "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow"), "versions": versions}


def table(header: list[str], rows: list[list]) -> str:
    """A markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def tree_bytes(path: Path) -> int:
    """Bytes of every file under ``path``."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
