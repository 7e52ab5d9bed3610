"""CNN and fusion-head throughput of one machine, on an existing store, with any Keras backend.

Runs ``embed`` (per-fold CNNs, K folds) and ``fit-lstm`` masked and padded to t_max, and prints
one JSON object: the device in words, the Keras backend, training and embedding frames/s per
region and seconds per head fold. Use it to measure a GPU (``--gpu 0``) or the CPU (``--cpu``)::

    python -m benchmarks.model_throughput STORE --gpu 0 --folds 2 --epochs 5 --out gpu.json

Each stage is timed twice in the same process (a warm-up run, whose compilation is reported
separately, then a measured run), so compile time does not hide the steady-state rate.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path


def steady_state(store: str, frames: int = 8192, epochs: int = 3, batch_size: int = 256, cnn_dense: int = 1024) -> dict:
    """Frames/s of one compiled region CNN per region: training epochs and embedding, compile excluded.

    Uses the store's real region frames (every view clip, repeated up to ``frames``).
    """
    import numpy as np

    import roi_store
    from roi_store import backend, models
    from roi_store.embed import _frame_batches, cnn_input, embed_frames

    keras = backend.keras()
    s = roi_store.open_store(store)
    out = {}
    for region in s.regions:
        x = np.concatenate([cnn_input(s.frames(c.id, region), "delta") for c in s.view_clips()])
        x = np.resize(x, (frames, *x.shape[1:]))
        y = np.random.default_rng(0).integers(0, 4, len(x))
        cnn = models.region_cnn(*x.shape[1:], n_classes=4, dense=cnn_dense, name=f"cnn_{region}")
        cnn.compile(optimizer=keras.optimizers.Adam(1e-3),
                    loss=models.FocalLoss(models.inverse_frequency_alpha(np.bincount(y, minlength=4)), 2.0))
        cnn.fit(_frame_batches(x[:batch_size * 2], y[:batch_size * 2], batch_size, 0, 4), epochs=1, verbose=0)
        t = time.perf_counter()
        cnn.fit(_frame_batches(x, y, batch_size, 0, 4), epochs=epochs, verbose=0)
        train = len(x) * epochs / (time.perf_counter() - t)
        emb = models.embedding_model(cnn)
        embed_frames(emb, x[:1024])
        t = time.perf_counter()
        embed_frames(emb, x)
        out[region] = {"size": list(x.shape[1:]), "train_frames_per_s": round(train, 1),
                       "embed_frames_per_s": round(len(x) / (time.perf_counter() - t), 1)}
        keras.backend.clear_session()
    return out


def measure(store: str, gpu: int | None, folds: int, epochs: int, head_epochs: int, cnn_dense: int,
            batch_size: int) -> dict:
    from roi_store import backend

    backend.select_device(gpu, gpu is None)
    from roi_store.embed import embed
    from roi_store.fusion import fit_lstm
    from roi_store.report import run_report
    import roi_store

    out = {"steady_state": steady_state(store, cnn_dense=cnn_dense, batch_size=batch_size)}
    out |= {"store": store, "folds": folds, "cnn_epochs": epochs, "head_epochs": head_epochs, "cnn_dense": cnn_dense,
           "batch_size": batch_size, "python": platform.python_version(), "embed": [], "fit_lstm": []}
    for attempt in ("warm-up", "measured"):
        t = time.perf_counter()
        doc = embed(store, f"bench-{attempt}", protocol="kfold", folds=folds, epochs=epochs, seed=1, gpu=gpu,
                    cpu=gpu is None, cnn_dense=cnn_dense, batch_size=batch_size, overwrite=True)
        out["embed"].append({"run": attempt, "seconds": round(time.perf_counter() - t, 2), **doc["timings"]})
        out["device"], out["backend"] = doc["device"], doc.get("backend")
    run = "bench-measured"
    for masked in (True, False, True, False):
        head = fit_lstm(store, run, epochs=head_epochs, seed=1, masked=masked, gpu=gpu, cpu=gpu is None)
        rep = run_report(roi_store.open_store(store), run)
        out["fit_lstm"].append({"masked": masked, "seconds_per_fold": head["timings"]["seconds_per_fold"],
                                "UF1": rep["scores"]["FULL"]["UF1"], "UAR": rep["scores"]["FULL"]["UAR"]})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("store")
    p.add_argument("--gpu", type=int, default=None, help="GPU index (default: the CPU)")
    p.add_argument("--folds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--head-epochs", type=int, default=20)
    p.add_argument("--cnn-dense", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--copy", action="store_true", help="work on a copy of the store (left beside it)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    a = p.parse_args(argv)
    store = a.store
    if a.copy:
        store = str(Path(a.store).with_suffix(".bench.zarr"))
        shutil.rmtree(store, ignore_errors=True)
        shutil.copytree(a.store, store)
    res = measure(store, a.gpu, a.folds, a.epochs, a.head_epochs, a.cnn_dense, a.batch_size)
    text = json.dumps(res, indent=1)
    if a.out:
        Path(a.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
