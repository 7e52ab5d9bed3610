"""A measured slice of the full per-fold LOSO on one device, and its projection to all 68 folds.

No store and no dataset is needed: the six region clips of the megc2019 composite are made on
the device's host at their real sizes and planned clip lengths (``roi_store.synth.plan``; the
pixels are random, which does not change the arithmetic), the composite's subjects are split
into LOSO folds, and the first ``--folds-per-step`` folds train together in the engine's one
compiled step (``roi_store.method.engine``), each fold on its own batches of its own training frames::

    python -m benchmarks.model_throughput --gpu 0 --folds-per-step 8 --epochs 3 --out slice.json
    python -m benchmarks.model_throughput --cpu --scale 0.05 --folds-per-step 2 --epochs 1   # a smoke run

It prints what is installed first, then one JSON object: the device in words, the Keras backend,
the compile (first epoch) and steady-state epoch times, training and embedding region frames/s,
one full-size head fold (masked and, with ``--padded-head``, the paper's 500 padded steps), and
the projected wall time of the 68 folds with the paper's settings (100 CNN epochs, head 60).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

REGION_SIZES = {"R0": (80, 100), "R1": (80, 100), "R2": (80, 120), "R3": (60, 60), "R4": (60, 60), "R5": (60, 160)}


def installed() -> dict:
    """Versions of what the measurement depends on (printed before anything is imported)."""
    out = {"python": platform.python_version()}
    for dist in ("keras", "jax", "jaxlib", "tensorflow", "tensorflow-cpu", "torch", "numpy", "roistore"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def composite(scale: float, seed: int = 0) -> tuple[list[dict], list[str]]:
    """The composite's planned clips (scaled) and their subjects, ``dataset/subject``."""
    from roi_store.synth import plan

    clips = [c for c in plan("megc2019", seed, scale=scale) if c["label"] is not None]
    return clips, [f"{c['dataset']}/{c['subject']}" for c in clips]


def measure(scale: float, folds_per_step: int, epochs: int, batch: int, mode: str, gpu: int | None,
            head_epochs: int, padded_head: bool, seed: int = 0) -> dict:
    from roi_store.method import backend

    backend.select_device(gpu, gpu is None)
    import numpy as np

    from roi_store.method import engine

    rng = np.random.default_rng(seed)
    clips, subjects = composite(scale, seed)
    lengths = [c["n_frames"] for c in clips]
    frames = {r: [rng.integers(0, 256, (n, h, w), dtype=np.uint8) for n in lengths] for r, (h, w) in REGION_SIZES.items()}
    targets = rng.integers(0, 4, (len(clips), len(REGION_SIZES))).tolist()
    data = engine.ViewFrames(frames, targets)
    people = sorted(set(subjects))
    f = min(folds_per_step, len(people))
    test = np.array([[s == people[k] for s in subjects] for k in range(f)]).T  # (clips, F)
    train = np.stack([data.frame_mask(~test[:, k]) for k in range(f)], axis=1)
    # The first epoch compiles the step: the steady state is the epochs after it.
    res = engine.train_group(data, train, n_classes=4, dense=1024, pool="gap", mode=mode, epochs=1 + epochs,
                             batch_size=batch, learning_rate=1e-3, gamma=2.0, fold_seeds=[k * 101 for k in range(f)],
                             eager_steps=0)
    first_epoch = res["epoch_seconds"][0]
    epoch_s = sum(res["epoch_seconds"][1:]) / epochs
    start = time.perf_counter()
    engine.embed_all(res["model"], data, mode)
    embed_s = time.perf_counter() - start
    fold_frames = int(train[:, 0].sum())
    out = {"device": backend.device_name(), "backend": backend.keras().backend.backend(), "scale": scale,
           "clips": len(clips), "subjects": len(people), "frames": data.n_frames, "folds_per_step": f,
           "batch": batch, "input": mode, "epochs_timed": epochs, "first_epoch_s": first_epoch, "epoch_s": epoch_s,
           "train_region_frames_per_s": fold_frames * f * len(REGION_SIZES) / epoch_s,
           "embed_s": embed_s, "embed_region_frames_per_s": data.n_frames * f * len(REGION_SIZES) / embed_s}
    out["head"] = head_fold(data, lengths, subjects, people[0], head_epochs, padded_head, seed)
    groups = -(-len(people) // f)  # ceil: fold groups of F for every subject
    scale_up = 1.0 / scale
    cnn_s = groups * (first_epoch + 99 * epoch_s) * scale_up + groups * embed_s * scale_up
    head_key = "padded_s_per_epoch" if padded_head else "masked_s_per_epoch"
    head_s = len(people) * 60 * out["head"][head_key] * scale_up
    out["projection"] = {"folds": len(people), "cnn_epochs": 100, "head_epochs": 60, "cnn_s": cnn_s, "head_s": head_s,
                         "total_s": cnn_s + head_s, "head": head_key,
                         "note": "scaled linearly from the measured share of the composite; 68 folds at scale 1"}
    return out


def head_fold(data, lengths, subjects, test_subject, epochs: int, padded: bool, seed: int) -> dict:
    """Seconds per epoch of one LOSO fold's fusion head on random 20-d sequences of the composite's lengths."""
    import numpy as np

    from roi_store.method.head import train_head

    rng = np.random.default_rng(seed)
    seqs = [[rng.random((n, 20)).astype("float32") for n in lengths] for _ in REGION_SIZES]
    y = rng.integers(0, 3, len(lengths))
    idx = np.array([i for i, s in enumerate(subjects) if s != test_subject])
    out = {"train_clips": int(len(idx)), "epochs": epochs}
    for name, masked in (("masked", True), ("padded", False)):
        if name == "padded" and not padded:
            continue
        settings = {"epochs": epochs, "batch_size": 244, "masked": masked, "learning_rate": 1e-3, "gamma": 2.0}
        start = time.perf_counter()
        train_head(seqs, y, idx, lengths, list(REGION_SIZES), 3, settings, 500, seed)
        out[f"{name}_s_per_epoch"] = (time.perf_counter() - start) / epochs
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpu", type=int, default=None, help="GPU index")
    p.add_argument("--cpu", action="store_true", help="run on the CPU")
    p.add_argument("--scale", type=float, default=1.0, help="share of the composite (1: 442 clips, 68 subjects)")
    p.add_argument("--folds-per-step", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2, help="steady-state epochs timed after the first")
    p.add_argument("--batch", type=int, default=64, help="the paper's 64 by default")
    p.add_argument("--input", default="frames", choices=["frames", "delta"])
    p.add_argument("--head-epochs", type=int, default=2)
    p.add_argument("--padded-head", action="store_true", help="also time the paper's unmasked head (500 steps)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    a = p.parse_args(argv)
    print(json.dumps({"installed": installed()}), flush=True)
    res = measure(a.scale, a.folds_per_step, a.epochs, a.batch, a.input, None if a.cpu else a.gpu, a.head_epochs,
                  a.padded_head)
    res["installed"] = installed()
    text = json.dumps(res, indent=1)
    if a.out:
        Path(a.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
