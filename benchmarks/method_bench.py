"""Method stages: data path, CNN throughput, fit-lstm masked vs the paper's padded batches."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from benchmarks.harness import run_python, stats

_DATA_PATH = """
import json, time
from pathlib import Path
import numpy as np
import roi_store
from roi_store.datasets import get_reader
from roi_store.datasets.base import ClipSpec
from roi_store.ingest import cut_clip
store = roi_store.open_store({store!r})
data = Path({data!r})
roots = {{"casme2": "CASME2/CASME2_RAW_selected", "samm": "SAMM/SAMM", "smic": "SMIC/HS"}}
specs = {{s.id: s for name, rel in roots.items() for s in get_reader(name).scan(data / rel) if isinstance(s, ClipSpec)}}
clips = [c for c in store.view_clips()][:{n}]
work = {{"t_max": store.t_max, "scheme": store.header["region_scheme"], "layout": store.header["layout"],
        "landmarks_model": None}}
out = {{"clips": len(clips), "store": [], "source": []}}
for _ in range({repeats}):
    t = time.perf_counter()
    for c in clips:
        for r in store.regions:
            store.frames(c.id, r)
    out["store"].append(len(clips) / (time.perf_counter() - t))
    t = time.perf_counter()
    for c in clips:
        cut_clip(specs[c.id], work)
    out["source"].append(len(clips) / (time.perf_counter() - t))
print(json.dumps(out))
"""


def data_path(store: Path, data: Path, n: int = 40, repeats: int = 3) -> dict:
    """Clips/s reading a fold's six region clips from the store vs decoding and cutting the source frames."""
    r = run_python(_DATA_PATH.format(store=str(store), data=str(data), n=n, repeats=repeats))
    ratios = [s / d for s, d in zip(r["store"], r["source"])]
    return {"clips": r["clips"], "store_clips_per_s": stats(r["store"]), "source_clips_per_s": stats(r["source"]),
            "ratio": stats(ratios)}


_FIT = """
import json, shutil, sys, time
sys.argv = ["x"]
from roi_store.fusion import fit_lstm
from roi_store.report import run_report
import roi_store
rows = []
for masked in ({order}):
    t = time.perf_counter()
    head = fit_lstm({store!r}, {run!r}, epochs={epochs}, seed=1, masked=masked, cpu=True, overwrite=True)
    seconds = time.perf_counter() - t
    rep = run_report(roi_store.open_store({store!r}), {run!r})
    rows.append({{"masked": masked, "seconds_per_fold": head["timings"]["seconds_per_fold"],
                 "UF1": rep["scores"]["FULL"]["UF1"], "UAR": rep["scores"]["FULL"]["UAR"]}})
print(json.dumps(rows))
"""


def fit_lstm_masked_vs_padded(store: Path, run: str, epochs: int, repeats: int = 2) -> dict:
    """Seconds per fold: masked length-aware batches vs the paper's zero padding to t_max (alternated)."""
    masked, padded = [], []
    for i in range(repeats):
        order = "True, False" if i % 2 == 0 else "False, True"
        rows = json.loads(json.dumps(run_python(_FIT.format(store=str(store), run=run, epochs=epochs, order=order))))
        for row in rows:
            (masked if row["masked"] else padded).append(row)
    ratio = [p["seconds_per_fold"] / m["seconds_per_fold"] for m, p in zip(masked, padded)]
    return {"masked": masked, "padded": padded, "speedup": stats(ratio)}


def copy_store(src: Path, dst: Path) -> Path:
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    return dst


_EMBED = """
import json, time
from roi_store.embed import embed
t = time.perf_counter()
doc = embed({store!r}, {run!r}, protocol="kfold", folds={folds}, epochs={epochs}, seed=1, cpu=True, overwrite=True)
print(json.dumps({{"seconds": time.perf_counter() - t, "timings": doc["timings"], "device": doc["device"],
                  "train_frames": sum(sum(v["train_frames"] for v in f["cnn"].values()) for f in doc["folds"]),
                  "folds": len(doc["folds"])}}))
"""


def cnn_throughput(store: Path, run: str, folds: int, epochs: int) -> dict:
    """Train and embed frames/s of the region CNNs (all six regions together), from one embed run."""
    return run_python(_EMBED.format(store=str(store), run=run, folds=folds, epochs=epochs))


def loso_projection(frames_total: int, clips_total: int, subjects: int, cnn: dict, head_seconds_per_fold: float,
                    head_epochs_measured: int, cnn_epochs: int = 100, head_epochs: int = 60) -> dict:
    """Projected wall time of the full per-fold LOSO from measured throughputs (seconds)."""
    train_frame_steps = frames_total * (subjects - 1) / subjects * cnn_epochs * 6 * subjects
    embed_frames = frames_total * 6 * subjects
    t = cnn["timings"]
    per_region_train = t["cnn_train_frames_per_s"]
    per_region_embed = t["embed_frames_per_s"]
    return {
        "folds": subjects,
        "cnn_train_s": train_frame_steps / per_region_train,
        "embed_s": embed_frames / per_region_embed,
        "fit_lstm_s": head_seconds_per_fold * head_epochs / head_epochs_measured * subjects,
        "assumptions": f"{subjects} folds, {cnn_epochs} CNN epochs on all training frames, {head_epochs} head epochs, "
                       f"{frames_total} frames in {clips_total} clips, throughput measured on {cnn['device']}",
    }
