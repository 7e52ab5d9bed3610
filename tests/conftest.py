"""Shared test helpers: small synthetic clips on a real face photo (scikit-image's astronaut)."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from roi_store.method import backend

# Keras' backend reads its device and thread settings once, when a test module first imports it:
# give it roistore's own (the CPU; one thread per op, so results do not depend on the thread count).
backend.select_device(cpu=True)


@pytest.fixture(scope="session")
def face_frame() -> np.ndarray:
    """A 640x480 BGR frame with one real face (~200 px wide) on a grey background."""
    img = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    face = cv2.resize(img[40:260, 120:320], (400, 440), interpolation=cv2.INTER_CUBIC)
    frame = np.full((480, 640, 3), 90, dtype=np.uint8)
    frame[20:460, 120:520] = face
    return frame


def write_clip(folder: Path, frame: np.ndarray, numbers, *, pattern="img{n}.jpg", motion=True) -> None:
    """Write frames named by ``numbers``; frame k is brightened by k so time order is visible."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, n in enumerate(numbers):
        image = cv2.add(frame, np.full_like(frame, 2 * k)) if motion else frame
        cv2.imwrite(str(folder / pattern.format(n=n)), image, [cv2.IMWRITE_JPEG_QUALITY, 95])


#: This process's pristine small store and its source folder, copied by :func:`make_small_store`.
_SMALL: dict = {}


def make_small_store(tmp: Path) -> Path:
    """CASME II layout, 3 subjects x 1 clip per class, 6 frames: 9 composite clips, in ``tmp/s.zarr``
    (its source frames in ``tmp/data``). Generated and ingested once per process, then copied: a
    copy is what a fresh ingest of the same frames writes (the ingest tests check that)."""
    from roi_store.ingest.pipeline import ingest
    from roi_store.synth import generate

    if "base" not in _SMALL:
        base = tmp.parent / f"{tmp.name}-pristine"  # beside the first caller's folder, never handed out
        generate(base / "data", preset="tiny", seed=2, datasets=("casme2",), subjects=3, clips_per_class=1, frames=6)
        ingest(base / "s.zarr", "casme2", base / "data" / "CASME2" / "CASME2_RAW_selected", progress=False)
        _SMALL["base"] = base
    return copy_fitted(_SMALL["base"], tmp)


@pytest.fixture
def plain(tmp_path):
    """A directory store without runs: tests/data/format-v1-row-chunks.zip, unpacked as the errors say."""
    with zipfile.ZipFile(Path(__file__).parent / "data" / "format-v1-row-chunks.zip") as zf:
        zf.extractall(tmp_path / "v1.zarr")
    return tmp_path / "v1.zarr"


def write_manifest(path: Path, rows: list[dict]) -> Path:
    fields = ["dataset", "subject", "clip", "folder", "label", "onset", "apex", "offset", "aus"]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for row in rows:
            w.writerow({k: row.get(k, "") for k in fields})
    return path


@pytest.fixture
def manifest_dataset(tmp_path, face_frame):
    """Three clips of a 'lab' dataset described by a manifest; clip a crosses img99 -> img100."""
    root = tmp_path / "lab"
    write_clip(root / "p1" / "a", face_frame, range(95, 105))
    write_clip(root / "p1" / "b", face_frame, range(1, 7))
    write_clip(root / "p2" / "c", face_frame, range(10, 18))
    manifest = write_manifest(tmp_path / "manifest.csv", [
        {"dataset": "lab", "subject": "p1", "clip": "a", "folder": "p1/a", "label": "happiness", "aus": "12"},
        {"dataset": "lab", "subject": "p1", "clip": "b", "folder": "p1/b", "label": "surprise"},
        {"dataset": "lab", "subject": "p2", "clip": "c", "folder": "p2/c", "label": "disgust", "aus": "4+9"},
    ])
    return root, manifest


#: The small store's shared run ``main`` (:func:`small_fitted`): kfold 2, one epoch, a narrow dense layer.
FAST = {"epochs": 1, "batch_size": 32, "seed": 3, "cpu": True, "cnn_dense": 32}
MAIN_HEAD = {"epochs": 1, "seed": 3, "cpu": True}


@pytest.fixture(scope="session")
def small_fitted(tmp_path_factory) -> Path:
    """A folder holding the small store ``s.zarr`` (:func:`make_small_store`) with run ``main``
    embedded (kfold 2, :data:`FAST`) and fitted (:data:`MAIN_HEAD`), and its frames ``data``:
    built once for all workers of a session. Copy it (:func:`copy_fitted`); never write it."""
    return Path(built_once(tmp_path_factory, "fitted", _small_fitted))


def _small_fitted(tmp: Path) -> str:
    from roi_store.method.embed import embed
    from roi_store.method.head import fit_lstm

    store = make_small_store(tmp)
    embed(str(store), "main", protocol="kfold", folds=2, **FAST)
    fit_lstm(str(store), "main", **MAIN_HEAD)
    return str(tmp)


@pytest.fixture(scope="session")
def small_loso(tmp_path_factory, small_fitted) -> Path:
    """:func:`small_fitted`'s folder with a LOSO run ``main-loso`` too (3 folds, :data:`FAST` and
    :data:`MAIN_HEAD`, seed 3): built once for all workers of a session. Copy it; never write it."""
    return Path(built_once(tmp_path_factory, "loso", lambda tmp: _small_loso(small_fitted, tmp)))


def _small_loso(fitted: Path, tmp: Path) -> str:
    from roi_store.method.embed import embed
    from roi_store.method.head import fit_lstm

    store = copy_fitted(fitted, tmp)
    embed(str(store), "main-loso", protocol="loso", **FAST)
    fit_lstm(str(store), "main-loso", **MAIN_HEAD)
    return str(tmp)


def copy_fitted(source: Path, tmp: Path) -> Path:
    """A copy of a small store ``s.zarr`` and its frames ``data`` (:func:`make_small_store`'s,
    :func:`small_fitted`'s, :func:`small_loso`'s) in ``tmp``; returns ``tmp/s.zarr``."""
    import shutil

    shutil.copytree(source / "data", tmp / "data")
    shutil.copytree(source / "s.zarr", tmp / "s.zarr")
    return tmp / "s.zarr"


#: The smallest method run that still has two folds: one epoch, a narrow dense layer, one batch.
TINY_RUN = {"protocol": "kfold", "folds": 2, "epochs": 1, "batch_size": 256, "seed": 3, "cpu": True, "cnn_dense": 32}
TINY_HEAD = {"epochs": 1, "seed": 3, "cpu": True}


def method_script(store, run: str, stages=("embed", "fit-lstm")) -> str:
    """Python source that runs the tiny embed and/or fit-lstm of ``run`` on ``store`` (for subprocesses)."""
    lines = ["from roi_store.method.embed import embed", "from roi_store.method.head import fit_lstm"]
    if "embed" in stages:
        lines.append(f"embed({str(store)!r}, {run!r}, **{TINY_RUN!r})")
    if "fit-lstm" in stages:
        lines.append(f"fit_lstm({str(store)!r}, {run!r}, **{TINY_HEAD!r})")
    return "\n".join(lines)


def built_once(tmp_path_factory, name: str, build):
    """``build(folder)``'s JSON-able result, built once per test session in a new folder, also when
    pytest-xdist runs the tests in several workers: the first worker builds it under this session's
    temporary root while the others wait on a lock, then read what it built (never write it)."""
    import fcntl
    import json
    import os

    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return build(tmp_path_factory.mktemp(name))
    root = tmp_path_factory.getbasetemp().parent  # this session's, shared by its workers
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = root / f"{name}.json"
        if not done.exists():
            (root / name).mkdir()
            done.write_text(json.dumps(build(root / name)))
        return json.loads(done.read_text())


@pytest.fixture(scope="session")
def method_runs(tmp_path_factory):
    """A tiny CASME II store (9 composite clips), and a copy on which two processes wrote runs
    ``a`` and ``b`` (same settings) at the same time: the uninterrupted reference of the run
    lifecycle tests (built once for all workers of a session; read it, copy it, never write it)."""
    made = built_once(tmp_path_factory, "runs", _method_runs)
    paths = {k: Path(v) for k, v in made.items() if k in ("root", "base", "shared", "tmp")}
    return {**made, **paths, "results": {run: tuple(r) for run, r in made["results"].items()}}


def _method_runs(tmp: Path) -> dict:
    import os
    import shutil
    import time

    import fresh
    base = make_small_store(tmp)
    root = tmp / "data" / "CASME2" / "CASME2_RAW_selected"
    shared = tmp / "shared.zarr"
    shutil.copytree(base, shared)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    started = time.perf_counter()
    procs = {run: fresh.Process(method_script(shared, run), env=env) for run in ("a", "b")}
    results = {}
    for run, p in procs.items():
        _, err = p.communicate(timeout=600)
        results[run] = (p.returncode, err)
    return {"root": str(root), "base": str(base), "shared": str(shared), "tmp": str(tmp), "results": results,
            "seconds": time.perf_counter() - started}


#: Modules that take longest, started first so that the two workers of ``make test`` (pytest-xdist,
#: a module's tests on one worker) end together; the rest keep their order.
SLOW_FIRST = ("test_backends.py", "test_long_runs.py", "test_method.py", "test_docs.py", "test_evaluation.py",
              "test_kill.py", "test_progress.py", "test_dask.py", "test_controls.py", "test_share.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: within a module, as written
