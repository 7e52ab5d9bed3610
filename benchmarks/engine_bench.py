"""The region-CNN training engine against the one it replaced, and the full LOSO it makes possible.

- ``throughput``: region frames trained per second on every frame of the bench store's view,
  steady state (after a warm-up epoch that compiles): the engine (the paper's network,
  six regions in one step) against a copy of the engine it replaced (:func:`main_engine`: one
  region at a time, the flattening network, float16 inputs), both with batch 256, and the engine
  at the paper's batch 64 on raw frames (what ``--preset paper`` trains; it feeds the projection).
- ``embed``: a whole ``embed`` (kfold 2, 5 epochs, batch 256, CPU) with this checkout's library
  against the same command with the library of :data:`BASELINE_REF` (a git worktree of it).
- a projection of the full 68-fold LOSO with the paper's settings on this CPU, with per-fold CNNs
  and with ``--cnn-folds 5``.

Each measurement runs in a fresh interpreter (``python -m benchmarks.engine_bench ...``); the
contenders alternate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness import ROOT, alternate, figure, ratio, target

#: The commit of main before the engine: the baseline of the whole-embed figure.
BASELINE_REF = "e1cf783"
EMBED_FLAGS = {"protocol": "kfold", "folds": 2, "epochs": 5, "batch_size": 256, "seed": 1}
DAY = 86_400.0


# --- measured in a fresh interpreter ---------------------------------------------------------
def _view_data(store: str, seed: int = 1):
    """The view's clips, per-region CNN targets and which clips train: every clip of the view (enough
    batches per epoch at small scales that a step's cost, not an epoch's start, is measured)."""
    import numpy as np

    from roi_store.method.embed import plan_run, run_targets
    from roi_store.store.labels import MEGC2019
    from roi_store.store.store import open_store

    s = open_store(store)
    clips, labels, _ = plan_run(s, MEGC2019, "kfold", 2, seed, None)
    targets = run_targets(s, clips, MEGC2019, labels, "au", False)
    cnn_classes = [*s.views[MEGC2019]["classes"], s.header["relabel"]["not_me"]]
    ids = [c.id for c in clips]
    train = np.ones(len(ids), dtype=bool)
    frames = {r: s.clips_frames(ids, r) for r in s.regions}
    y = [[cnn_classes.index(t) for t in per_clip] for per_clip in targets]
    return frames, y, train, len(cnn_classes)


def engine_throughput(store: str, epochs: int, batch: int, mode: str, pool: str = "gap") -> dict:
    """Region frames/s of the engine training one fold's six region CNNs in one step."""
    from roi_store.method import backend

    backend.select_device(cpu=True)
    from roi_store.method import engine

    frames, y, train, n_classes = _view_data(store)
    data = engine.ViewFrames(frames, y)
    mask = data.frame_mask(train)[:, None]
    # The first epoch compiles the step: the steady state is the epochs after it.
    res = engine.train_group(data, mask, n_classes=n_classes, dense=1024, pool=pool, mode=mode, epochs=1 + epochs,
                             batch_size=batch, learning_rate=1e-3, gamma=2.0, fold_seeds=[1], eager_steps=0)
    seconds = sum(res["epoch_seconds"][1:])
    start = time.perf_counter()
    engine.embed_all(res["model"], data, mode)
    embed_seconds = time.perf_counter() - start
    n = int(mask.sum())
    return {"train_region_frames_per_s": n * len(data.names) * epochs / seconds,
            "embed_region_frames_per_s": data.n_frames * len(data.names) / embed_seconds, "train_frames": n}


def main_engine(store: str, epochs: int, batch: int) -> dict:
    """The engine this one replaced, as main ran it: a Keras fit per region, on float16 frame-minus-first
    inputs, with the network that flattens a 2x2 average pool into dense 1024 (TensorFlow's own threads)."""
    os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    import keras
    import numpy as np

    from roi_store.method import models

    frames, y, train, n_classes = _view_data(store)
    total, n = 0.0, 0
    for r_i, (region, clips) in enumerate(frames.items()):
        x = np.concatenate([((c.astype(np.float32) - c[:1].astype(np.float32)) / 64.0).astype(np.float16)
                            for c, m in zip(clips, train) if m])
        t = np.concatenate([np.full(len(c), y[i][r_i]) for i, (c, m) in enumerate(zip(clips, train)) if m])
        counts = np.bincount(t, minlength=n_classes)
        cnn = models.region_cnn(*x.shape[1:], n_classes=n_classes, pool="flatten", seed=r_i)
        cnn.compile(optimizer=keras.optimizers.Adam(1e-3),
                    loss=models.FocalLoss(models.inverse_frequency_alpha(counts), 2.0), metrics=["accuracy"])
        cnn.fit(_MainBatches(x, t, batch, 0, n_classes), epochs=1, shuffle=False, verbose=0)  # compiles
        start = time.perf_counter()
        cnn.fit(_MainBatches(x, t, batch, 0, n_classes), epochs=epochs, shuffle=False, verbose=0)
        total += time.perf_counter() - start
        n = len(x)
        keras.backend.clear_session()
    return {"train_region_frames_per_s": n * len(frames) * epochs / total, "train_frames": n}


class _MainBatches:
    """The replaced engine's batches (a Keras PyDataset made on first use: Keras starts with it)."""

    def __new__(cls, frames, y, batch_size, seed, n_classes):
        import keras
        import numpy as np

        class Batches(keras.utils.PyDataset):
            def __init__(self):
                super().__init__()
                self.rng = np.random.default_rng(seed)
                self.order = self.rng.permutation(len(frames))

            def __len__(self):
                return int(np.ceil(len(frames) / batch_size))

            def __getitem__(self, i):
                idx = np.sort(self.order[i * batch_size:(i + 1) * batch_size])
                return frames[idx].astype("float32")[..., None], np.eye(n_classes, dtype="float32")[y[idx]]

            def on_epoch_end(self):
                self.order = self.rng.permutation(len(frames))

        return Batches()


def whole_embed(store: str, run: str) -> dict:
    """A whole ``embed`` with :data:`EMBED_FLAGS` on the CPU, through whichever ``roi_store`` is first on the path."""
    from roi_store.method.embed import embed

    start = time.perf_counter()
    doc = embed(store, run, cpu=True, overwrite=True, **EMBED_FLAGS)
    return {"seconds": time.perf_counter() - start, "timings": doc["timings"],
            "settings": {k: doc["settings"].get(k) for k in ("epochs", "batch_size", "cnn_dense", "cnn_pool", "input")}}


# --- the stage -----------------------------------------------------------------------------------
def _fresh(args: list[str], src: Path | None = None, timeout: float = 7200) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if src is not None:
        env["ROISTORE_BENCH_SRC"] = str(src)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.engine_bench", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark step failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def baseline_tree(out: Path, ref: str = BASELINE_REF) -> Path | None:
    """A worktree of ``ref`` under ``out`` whose ``roi_store`` imports as installed (None without git history)."""
    tree = out / f"baseline-{ref}"
    if not (tree / "roi_store").is_dir():
        done = subprocess.run(["git", "worktree", "add", "--force", "--detach", str(tree), ref], cwd=ROOT,
                              capture_output=True, text=True)
        if done.returncode != 0:
            return None
    for name in ("schemas", "cli"):  # mapped into the package by setup.cfg when installed
        link = tree / "roi_store" / name
        if not link.exists():
            link.symlink_to(Path("..") / name)
    return tree


def bench_engine(store: Path, out: Path, results: dict, repeats: int, quick: bool, seed: int = 0) -> dict:
    """Training throughput against the replaced engine, whole embed against the baseline commit, projections."""
    epochs = 1 if quick else 3
    runs = alternate({
        "main": lambda: _fresh(["throughput", str(store), "--engine", "main", "--epochs", str(epochs), "--batch", "256"]),
        "new": lambda: _fresh(["throughput", str(store), "--engine", "new", "--epochs", str(epochs), "--batch", "256"]),
        "paper": lambda: _fresh(["throughput", str(store), "--engine", "new", "--epochs", str(epochs), "--batch", "64",
                                 "--input", "frames"]),
    }, repeats)
    rate = {k: [r["train_region_frames_per_s"] for r in v] for k, v in runs.items()}
    figures = {
        "main_train_fps": figure("replaced engine: flatten network, one region at a time, batch 256", "region frames/s",
                                 rate["main"]),
        "new_train_fps": figure("engine: the paper's network, six regions in one step, batch 256", "region frames/s",
                                rate["new"]),
        "paper_train_fps": figure("engine at the paper's batch 64 on raw frames", "region frames/s", rate["paper"]),
        "new_embed_fps": figure("engine: embedding every frame", "region frames/s",
                                [r["embed_region_frames_per_s"] for r in runs["new"]]),
        "train_speedup": ratio("training throughput, engine / replaced engine", rate["new"], rate["main"]),
    }
    targets = [target("CNN training throughput, engine (paper's network) / replaced engine (its network)", figures,
                      "train_speedup", ">=", 3.0)]
    note = None
    tree = None if quick else baseline_tree(out)
    if tree is not None:
        embeds = alternate({
            "main": lambda: _fresh(["embed", str(store), "--run", "bench-embed-main"], src=tree),
            "new": lambda: _fresh(["embed", str(store), "--run", "bench-embed-new"]),
        }, repeats)
        figures["main_embed_seconds"] = figure(f"whole embed with {BASELINE_REF} (kfold 2, 5 epochs, batch 256)", "s",
                                               [r["seconds"] for r in embeds["main"]])
        figures["new_embed_seconds"] = figure("whole embed with this checkout (same flags)", "s",
                                              [r["seconds"] for r in embeds["new"]])
        figures["embed_speedup"] = ratio("whole embed, baseline / this checkout",
                                         [r["seconds"] for r in embeds["main"]], [r["seconds"] for r in embeds["new"]])
        targets.append(target(f"whole embed (kfold 2, 5 epochs, batch 256, CPU), {BASELINE_REF} / this checkout",
                              figures, "embed_speedup", ">=", 2.5))
    else:
        note = "whole-embed comparison skipped: " + ("--quick" if quick else f"no git history holding {BASELINE_REF}")
    proj = projections(results, figures["paper_train_fps"]["median"], figures["new_embed_fps"]["median"], seed)
    for name, p in proj.items():
        for k, v in p.items():
            figures[f"projected_{name}_{k}"] = figure(f"projected full LOSO, paper settings, {name}: {k[:-2]}", "s", v)
    targets.append(target("projected full 68-fold LOSO with --cnn-folds 5 (paper settings, this CPU), in seconds",
                          figures, "projected_cnn_folds_5_total_s", "<=", DAY))
    return {"title": "Training engine: throughput, whole embed, projected full LOSO", "figures": figures,
            "targets": targets,
            "details": {"epochs_timed": epochs, "baseline_ref": BASELINE_REF, "note": note,
                        "train_frames": runs["new"][0]["train_frames"], "embed_settings": EMBED_FLAGS,
                        "assumptions": "full composite planned by the megc2019 preset; CNN 100 epochs at the paper's "
                                       "batch 64 on raw frames (this run's figure); embedding every view frame per "
                                       "CNN; head 60 epochs, unmasked on 500 padded steps, from the fit-lstm "
                                       "stage's full-size padded fold scaled by epochs (its masked fold if absent)"}}


def projections(results: dict, train_fps: float, embed_fps: float, seed: int = 0) -> dict:
    """Seconds of the full LOSO with the paper's settings: per-fold CNNs, and cross-fitted on 5 groups."""
    from benchmarks.method_bench import full_composite

    full = full_composite(seed)
    folds = full["subjects"]
    fit = results.get("stages", {}).get("fit-lstm", {})
    fold = fit.get("details", {}).get("full_fold")
    head_s = None
    for name in ("full_padded_seconds", "full_masked_seconds"):
        fig = fit.get("figures", {}).get(name)
        if fig and fold:
            head_s = fig["median"] * 60 / fold["epochs"] * folds
            break
    out = {}
    for name, trainings, share in (("per_fold", folds, (folds - 1) / folds), ("cnn_folds_5", 5, 4 / 5)):
        p = {"cnn_train_s": full["view_frames"] * share * 100 * 6 * trainings / train_fps,
             "embed_s": full["view_frames"] * 6 * trainings / embed_fps}
        if head_s is not None:
            p["fit_lstm_s"] = head_s
        p["total_s"] = sum(p.values())
        out[name] = p
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.engine_bench", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("store")
    t.add_argument("--engine", choices=["new", "main"], required=True)
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--batch", type=int, default=256)
    t.add_argument("--input", default="delta", choices=["delta", "frames"])
    e = sub.add_parser("embed")
    e.add_argument("store")
    e.add_argument("--run", required=True)
    a = ap.parse_args(argv)
    if a.what == "throughput":
        res = (engine_throughput(a.store, a.epochs, a.batch, a.input) if a.engine == "new"
               else main_engine(a.store, a.epochs, a.batch))
    else:
        src = os.environ.get("ROISTORE_BENCH_SRC")
        if src:
            sys.path.insert(0, src)  # the baseline commit's library, before anything imports roi_store
        res = whole_embed(a.store, a.run)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
