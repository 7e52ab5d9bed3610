"""Method stages: region CNN throughput, fit-lstm masked vs the paper's padding, predict latency,
and the whole LOSO's wall time per stage with its projection to the full 68-fold composite.

Each model step runs in a fresh interpreter through the library (``roi_store.method.embed.embed``,
``roi_store.method.head.fit_lstm``, ``roi_store.method.predict.load_predictor``), on run ``bench`` of the
benchmark store: a task of :mod:`benchmarks.method_tasks`, started by :func:`benchmarks.harness.run_task`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from benchmarks.harness import alternate, figure, ratio, run_task, target

RUN = "bench"


def _task(name: str, **args) -> dict:
    """Run ``benchmarks.method_tasks``' task ``name`` in a fresh interpreter (its memory its own)."""
    return run_task("benchmarks.method_tasks", name, args)


def embed_once(store: Path, run: str, cfg: dict, gpu: int | None) -> dict:
    """One ``embed`` (all folds, six regions) in a fresh interpreter; its recorded throughput."""
    return _task("embed", store=str(store), run=run, folds=cfg["folds"], epochs=cfg["cnn_epochs"],
                 cnn_dense=cfg["cnn_dense"], batch_size=cfg["cnn_batch"], gpu=gpu, cpu=gpu is None)


def bench_cnn(store: Path, cfg: dict, repeats: int, gpus: list[str]) -> dict:
    """Train and embed frames/s per region on this CPU, and on GPU 0 when one is available (alternated)."""
    contenders = {"cpu": lambda: embed_once(store, RUN, cfg, None)}
    if gpus:
        contenders["gpu"] = lambda: embed_once(store, RUN + "-gpu", cfg, 0)
    runs = alternate(contenders, repeats)
    figures = {}
    for dev, rs in runs.items():
        name = rs[0]["device"]
        figures[f"{dev}_train_frames_per_s"] = figure(f"CNN training per region ({name})", "frames/s",
                                                      [r["timings"]["cnn_train_frames_per_s"] for r in rs])
        figures[f"{dev}_embed_frames_per_s"] = figure(f"CNN embedding per region ({name})", "frames/s",
                                                      [r["timings"]["embed_frames_per_s"] for r in rs])
        figures[f"{dev}_embed_seconds"] = figure(f"whole embed, {cfg['folds']} folds x 6 regions ({name})", "s",
                                                 [r["seconds"] for r in rs])
    if gpus and runs["gpu"][0]["device"] == "cpu":
        figures.pop("gpu_train_frames_per_s"), figures.pop("gpu_embed_frames_per_s"), figures.pop("gpu_embed_seconds")
        note = f"GPU present ({gpus[0]}) but the Keras backend did not use it"
    else:
        note = None if gpus else "no GPU on this machine: CPU figures only"
    first = runs["cpu"][0]
    return {"title": f"Region CNNs ({cfg['folds']} folds, {cfg['cnn_epochs']} epochs, dense {cfg['cnn_dense']})",
            "figures": figures, "targets": [],
            "details": {"device": first["device"], "backend": first["backend"], "note": note,
                        "train_frames_per_fold_per_region": first["train_frames_per_fold"],
                        "settings": {k: cfg[k] for k in ("folds", "cnn_epochs", "cnn_dense", "cnn_batch")}}}


def bench_fit_lstm(store: Path, cfg: dict, repeats: int, seed: int = 0) -> dict:
    """Seconds per fold: masked length-aware batches vs the paper's zero padding to t_max, alternated.

    Measured twice: on the run's own folds at this scale (with their UF1), and on one fold the
    size of a LOSO fold of the full composite (its planned clips, lengths and labels, values
    from the run's embeddings). Both fits of a repeat share one interpreter; the order flips
    every repeat so that neither always pays the backend's start-up.
    """
    masked, padded, full_masked, full_padded = [], [], [], []
    for i in range(repeats):
        order = [True, False] if i % 2 == 0 else [False, True]
        for row in _task("fit-lstm", store=str(store), run=RUN, epochs=cfg["head_epochs"], order=order)["rows"]:
            (masked if row["masked"] else padded).append(row)
        for row in _task("full-fold", store=str(store), run=RUN, epochs=cfg["full_fold_epochs"], order=order,
                         seed=seed, limit=cfg["full_fold_clips"])["rows"]:
            (full_masked if row["masked"] else full_padded).append(row)
    full = full_masked[0]
    figures = {
        "masked_seconds_per_fold": figure("masked, length-bucketed batches (roistore)", "s/fold",
                                          [r["seconds_per_fold"] for r in masked]),
        "padded_seconds_per_fold": figure("padded to t_max, unmasked (the paper; baseline)", "s/fold",
                                          [r["seconds_per_fold"] for r in padded]),
        "speedup": ratio("padded / masked seconds per fold", [r["seconds_per_fold"] for r in padded],
                         [r["seconds_per_fold"] for r in masked]),
        "masked_uf1": figure("UF1, masked", "UF1", [r["UF1"] for r in masked]),
        "padded_uf1": figure("UF1, padded", "UF1", [r["UF1"] for r in padded]),
        "uf1_masked_minus_padded": figure("UF1 masked - UF1 padded", "UF1", [m["UF1"] - p["UF1"] for m, p in zip(masked, padded)]),
        "full_masked_seconds": figure(f"full-size fold ({full['train_clips']} clips, {cfg['full_fold_epochs']} epochs): "
                                      "masked, length-bucketed", "s/fold", [r["seconds"] for r in full_masked]),
        "full_padded_seconds": figure("full-size fold: padded to t_max (baseline)", "s/fold",
                                      [r["seconds"] for r in full_padded]),
        "full_speedup": ratio("full-size fold: padded / masked", [r["seconds"] for r in full_padded],
                              [r["seconds"] for r in full_masked]),
    }
    return {"title": f"fit-lstm ({cfg['head_epochs']} epochs, {masked[0]['train_clips_per_fold']:.0f} training clips a fold; "
                     f"and one full-size fold)",
            "figures": figures,
            "targets": [target("fit-lstm on a full-size fold, masked vs padded to 500", figures, "full_speedup", ">=", 3.0),
                        target("UF1 not lower than with padding", figures, "uf1_masked_minus_padded", ">=", 0.0)],
            "details": {"masked": masked, "padded": padded, "epochs": cfg["head_epochs"],
                        "full_fold": {"masked": full_masked, "padded": full_padded, "epochs": cfg["full_fold_epochs"],
                                      "note": ("one LOSO fold of the full megc2019 composite (first subject left out): "
                                               "planned clip lengths and labels; values are the run's embeddings "
                                               "of clips with the same label, repeated to length. Timing only: "
                                               "its UF1 is not measured")}}}


def clip_of(store: Path, data: Path, frames: int, work: Path) -> tuple[Path, str]:
    """A ``frames``-frame clip folder made from the first megc2019 clip's source frames (cycled)."""
    import roi_store

    from benchmarks.data import specs

    first = roi_store.open_store(store).view_clips()[0].id
    spec = next(s for s in specs(data) if s.id == first)
    folder = work / f"predict-clip-{frames}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for k in range(frames):
        src = spec.frames[k % len(spec.frames)]
        shutil.copyfile(src, folder / f"img{k + 1}{src.suffix}")
    return folder, first


def bench_predict(store: Path, data: Path, work: Path, cfg: dict, repeats: int) -> dict:
    """Milliseconds per 100-frame clip with the run's models loaded: face, regions, CNNs and LSTM heads."""
    folder, source = clip_of(store, data, cfg["predict_frames"], work)
    r = _task("predict", store=str(store), run=RUN, clip=str(folder), repeats=max(repeats, 3),
              epochs=cfg["head_epochs"])
    figures = {
        "ms_per_clip": figure(f"predict one {r['n_frames']}-frame clip, models loaded "
                              f"(ensemble of {r['models']} folds)", "ms", r["ms"]),
        "model_load_seconds": figure("loading the run's models once (not in the figure above)", "s", r["load_seconds"]),
    }
    return {"title": "predict (CPU)", "figures": figures, "targets": [],
            "details": {"clip": source, "frames": r["n_frames"], "fold_models": r["models"]}}


def full_composite(seed: int = 0) -> dict:
    """Clips, subjects and frames of the full megc2019 preset and of its composite (planned, not rendered)."""
    from roi_store.synth import plan

    clips = plan("megc2019", seed)
    view = [c for c in clips if c["label"] is not None]
    return {"clips": len(clips), "frames": sum(c["n_frames"] for c in clips), "view_clips": len(view),
            "view_frames": sum(c["n_frames"] for c in view),
            "subjects": len({(c["dataset"], c["subject"]) for c in view})}


def bench_loso(store: Path, results: dict, prepared_seconds: float | None, seed: int = 0) -> dict:
    """Wall time per stage at this scale, and the projected full 68-fold LOSO from measured throughputs.

    Throughputs come from this run's stages where they ran, else from the timings the library
    recorded with run ``bench`` and the benchmark store.
    """
    r = _task("report", store=str(store), run=RUN)
    stages = results.get("stages", {})
    full = full_composite(seed)
    folds_full = full["subjects"]
    cnn_epochs_full, head_epochs_full = 100, 60

    def median(stage, name, default):
        fig = stages.get(stage, {}).get("figures", {}).get(name)
        return fig["median"] if fig else default

    ingest_fps = median("ingest", "ingest_2_frames_per_s", None)
    if prepared_seconds is None:
        stamp = store.parent / "store.json"
        prepared_seconds = json.loads(stamp.read_text()).get("ingest_seconds") if stamp.exists() else None
    ingest_s_here = prepared_seconds
    s = r["settings"]
    head_epochs = r["head_settings"]["epochs"]
    train_fps = median("cnn", "cpu_train_frames_per_s", r["timings"]["cnn_train_frames_per_s"])
    embed_fps = median("cnn", "cpu_embed_frames_per_s", r["timings"]["embed_frames_per_s"])
    head_s_fold = median("fit-lstm", "masked_seconds_per_fold", r["head_timings"]["seconds_per_fold"])
    # A full-size fold measured in this run is the better base: it holds the full fold's clips and
    # lengths, and its graph building is not scaled up with them.
    full_fold = stages.get("fit-lstm", {}).get("details", {}).get("full_fold")
    full_fold_s = median("fit-lstm", "full_masked_seconds", None) if full_fold else None
    figures = {
        "embed_seconds": figure(f"embed at this scale ({r['folds']} folds, {s['epochs']} epochs)", "s",
                                r["timings"]["embed_seconds"]),
        "fit_lstm_seconds": figure(f"fit-lstm at this scale ({r['folds']} folds, {head_epochs} epochs)", "s",
                                   r["head_timings"]["fit_seconds"]),
        "report_seconds": figure("report at this scale", "s", r["report_seconds"]),
    }
    if ingest_s_here:
        figures["ingest_seconds"] = figure("ingest at this scale, 2 jobs", "s", ingest_s_here)
    train_frames_full = full["view_frames"] * (folds_full - 1) / folds_full
    head_clips_full = full["view_clips"] * (folds_full - 1) / folds_full

    def projection(dev: str, train, embed) -> dict:
        p = {
            "cnn_train_s": train_frames_full * cnn_epochs_full * 6 * folds_full / train,
            "embed_s": full["view_frames"] * 6 * folds_full / embed,
            # A fold's head time grows with its training clips and its epochs.
            "fit_lstm_s": (full_fold_s * head_epochs_full / full_fold["epochs"] * head_clips_full
                           / full_fold["masked"][0]["train_clips"] * folds_full if full_fold_s else
                           head_s_fold * head_epochs_full / head_epochs * head_clips_full / r["head_train_clips"] * folds_full),
        }
        if ingest_fps:
            p["ingest_s"] = full["frames"] / ingest_fps
        p["total_s"] = sum(p.values())
        for k, v in p.items():
            figures[f"projected_{dev}_{k}"] = figure(f"projected full LOSO on {dev}: {k[:-2].replace('_', ' ')}", "s", v)
        return p

    proj = {"cpu": projection("cpu", train_fps, embed_fps)}
    gpu_train = median("cnn", "gpu_train_frames_per_s", None)
    if gpu_train:
        proj["gpu"] = projection("gpu", gpu_train, median("cnn", "gpu_embed_frames_per_s", None))
    return {"title": "Whole LOSO: wall time per stage here, projected to the full composite", "figures": figures,
            "targets": [],
            "details": {"full": full, "folds": folds_full, "cnn_epochs": cnn_epochs_full, "head_epochs": head_epochs_full,
                        "assumptions": (f"{folds_full} folds, CNN {cnn_epochs_full} epochs on each fold's training "
                                        f"frames, head {head_epochs_full} epochs (time per fold: "
                                        + ("the full-size fold's, scaled by epochs and clips" if full_fold_s else
                                           "this scale's, scaled by training clips and epochs")
                                        + f"), {full['view_clips']} clips / {full['view_frames']} frames in the "
                                        f"composite, {full['frames']} frames ingested; fit-lstm on this CPU"),
                        "projection_s": proj, "measured_on": r["device"]}}


def has_run(store: Path) -> bool:
    """True if the benchmark run has its embeddings."""
    import roi_store

    from roi_store.store.runs import commit_doc, run_names

    s = roi_store.open_store(store)
    return RUN in run_names(s) and commit_doc(s, RUN, "embed") is not None


def has_head(store: Path) -> bool:
    """True if the benchmark run has a fitted head."""
    import roi_store

    from roi_store.store.runs import commit_doc

    return has_run(store) and commit_doc(roi_store.open_store(store), RUN, "head") is not None
