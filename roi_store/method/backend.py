"""Choosing the device and seeding, before and after the deep-learning framework starts.

Keras (and through it TensorFlow, JAX or PyTorch) is imported only by the functions that train
or run models, never at module import: ``roistore --help``, ``info`` and ``ingest`` stay light.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from pathlib import Path

from roi_store import parallel
from roi_store.errors import ConfigError, RoiStoreError


def cores() -> int:
    """CPU cores this process may use (the affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def map_tasks(fn, calls: list[tuple], jobs: int, say, label: str, *, scheduler: str | None = None,
              gpu: bool = False, shared: tuple[str, ...] = ()) -> None:
    """``fn(*args)`` for each call, where :func:`roi_store.parallel.run_tasks` puts it; ``say`` a line as each ends.

    Local workers (``jobs`` > 1) start with Keras and ``fn``'s module imported, from a process that
    imported them once (a worker otherwise spends seconds importing the framework).
    """
    tasks = parallel.run_tasks(fn, calls, jobs=jobs, scheduler=scheduler, gpu=gpu, shared=shared,
                               preload=("keras", fn.__module__))
    for k, res in enumerate(tasks, 1):
        say(f"{label} {res['index']} done ({k}/{len(calls)})")


def select_device(gpu: int | None = None, cpu: bool = False, threads: int | None = None) -> None:
    """Make only GPU ``gpu`` visible (or none with ``cpu``) and set the CPU threads (default: every core).

    Must run before Keras is imported; later calls in the same process change nothing there.
    Picks the Keras backend that is installed when ``KERAS_BACKEND`` is not set (TensorFlow,
    else JAX, else PyTorch).
    """
    threads = threads or cores()
    if "KERAS_BACKEND" not in os.environ:
        import importlib.util

        name = next((n for n in ("tensorflow", "jax", "torch") if importlib.util.find_spec(n) is not None), None)
        if name:
            os.environ["KERAS_BACKEND"] = name
    if gpu is not None and cpu:
        raise ConfigError("--gpu and --cpu exclude each other: pass one")
    if cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    elif gpu is not None:
        if gpu < 0:
            raise ConfigError(f"invalid --gpu {gpu}: give a GPU index such as 0")
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    # Every op runs on one thread, and independent ops (the six region CNNs of a step) run
    # side by side on ``threads``: an op's arithmetic, hence every result, is then the same
    # whatever the number of jobs or cores.
    os.environ.update(TF_NUM_INTRAOP_THREADS="1", OMP_NUM_THREADS="1", TF_NUM_INTEROP_THREADS=str(threads))
    # TensorFlow's oneDNN kernels on every x86 CPU (TensorFlow turns them on by default for some
    # Intel CPUs only): on a 2-core AMD EPYC a region CNN's 5x5 convolution ran 6x faster with
    # them, a compiled training step 4x (docs: Long runs, "Choosing a backend").
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def keras():
    """Import Keras (starting its backend), with an install hint if it is missing."""
    try:
        import keras as k
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RoiStoreError(
            f"Keras is not installed ({exc}): pip install roistore (TensorFlow included; 'roistore[gpu]' for NVIDIA "
            "GPUs), or JAX/PyTorch with KERAS_BACKEND set"
        ) from None
    return k


def device_name() -> str:
    """The device the backend computes on, in words (e.g. 'cpu' or 'gpu: <card name>')."""
    backend = keras().backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                return f"gpu: {details.get('device_name', gpus[0].name)}"
        elif backend == "jax":
            import jax

            dev = jax.devices()[0]
            if dev.platform != "cpu":
                return f"gpu: {getattr(dev, 'device_kind', dev.platform)}"
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                return f"gpu: {torch.cuda.get_device_name(0)}"
    except Exception:  # device queries are informative only
        pass
    return "cpu"


def free_gpu_memory(gpu: int) -> int | None:
    """Bytes free on GPU ``gpu`` (nvidia-smi, else JAX's allocator), or None where no figure is to be had."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits",
                                  "-i", str(gpu)], capture_output=True, text=True, timeout=30, check=True).stdout
            return int(float(out.split()[0])) * 2**20
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            pass
    if keras().backend.backend() == "jax":
        import jax

        stats = jax.local_devices()[0].memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return None


def auto_folds_per_step(shapes: dict, batch_size: int, dense: int, pool: str, n_classes: int, gpu: int | None,
                        n_folds: int, free: int | None = None) -> tuple[int, dict]:
    """``--folds-per-step auto``: the CNN folds one training step holds, and why.

    On a CPU, 1: there a step of two folds costs what the two cost alone (docs: Long runs,
    "Choosing a backend"), so stacking gains nothing. On a GPU, as many folds as 80 % of its free memory holds
    by :func:`roi_store.method.engine.fold_memory` (never more than the run has, at least 1).
    ``free`` overrides the measured free bytes. Returns ``(folds, {"device", "free_bytes",
    "fold_bytes", "folds_per_step"})`` for the run's plan.
    """
    if gpu is None:
        return 1, {"device": "cpu", "free_bytes": None, "fold_bytes": None, "folds_per_step": 1}
    from roi_store.method import engine

    need = engine.fold_memory(shapes, batch_size, dense, pool, n_classes)
    free = free_gpu_memory(gpu) if free is None else free
    folds = 1 if free is None else max(1, min(n_folds, int(0.8 * free) // need))
    return folds, {"device": f"gpu {gpu}", "free_bytes": free, "fold_bytes": need, "folds_per_step": folds}


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and the backend; ask TensorFlow for deterministic kernels."""
    k = keras()
    k.utils.set_random_seed(int(seed))
    if k.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def model_to_bytes(model) -> bytes:
    """A model in Keras' native ``.keras`` format, as bytes (to store as a checksummed array)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        return Path(path).read_bytes()


def model_from_bytes(data: bytes):
    """Load a ``.keras`` model with safe mode on: no lambda or pickled code is ever run."""
    k = keras()
    from roi_store.method import models  # noqa: F401 - registers the custom loss for deserialisation

    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise RoiStoreError("a stored model is not a .keras archive: the store is damaged; re-run the command that "
                            "made it")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        Path(path).write_bytes(data)
        return k.saving.load_model(path, compile=False, safe_mode=True)
