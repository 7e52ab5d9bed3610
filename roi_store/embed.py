"""``embed``: train the six region CNNs per fold and store every clip's 20-d per-frame embeddings.

Leakage by construction (METHOD.md §7): with the default ``cnn_scope="fold"`` each fold trains
its own CNNs on the fold's training subjects only, and embeds every clip of the view with them;
the fusion head of that fold later sees only those embeddings. So no test subject ever shapes
the features its predictions are made from. ``cnn_scope="global"`` (one CNN on every clip, as
the paper appears to do) is available for comparison and is flagged as leaky wherever shown.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from roi_store import backend, killpoints, parallel
from roi_store.errors import ConfigError
from roi_store.labels import MEGC2019, relabel_vectors
from roi_store.protocols import make_folds, subject_of
from roi_store.runs import COMPLETE, RunWriter, digest, fold_docs, put_bytes, run_document, write_fold_marker
from roi_store.store import Store, now, open_store

EMBED_DIM = 20
CNN_SCOPES = ("fold", "global")
#: What a region CNN sees of a frame. "frames": the grey frame (the paper). "delta": the frame
#: minus the clip's first frame, so a motion of a few pixels stands out from who the subject is.
INPUTS = ("delta", "frames")


def cnn_input(frames: np.ndarray, mode: str) -> np.ndarray:
    """A clip's (n, h, w) uint8 region frames as (n, h, w) float16 network input."""
    if mode == "frames":
        return (frames.astype(np.float32) / 255.0).astype(np.float16)
    if mode == "delta":
        return ((frames.astype(np.float32) - frames[:1].astype(np.float32)) / 64.0).astype(np.float16)
    raise ConfigError(f"invalid --input {mode!r}: allowed values are {', '.join(INPUTS)}")
RELABEL_VARIANTS = ("au", "default")


def permuted_labels(labels: list[str], seed: int) -> list[str]:
    """Labels shuffled across clips (the permutation control): clip i gets clip perm[i]'s label."""
    perm = np.random.default_rng(seed).permutation(len(labels))
    return [labels[j] for j in perm]


def run_targets(store: Store, clips, view: str, labels: list[str], variant: str, permuted: bool) -> list[list[str]]:
    """Per clip, per region 4-class CNN targets ("not me" relabelling) for the labels in use."""
    if variant not in RELABEL_VARIANTS:
        raise ConfigError(f"invalid relabel variant {variant!r}: allowed values are {', '.join(RELABEL_VARIANTS)}")
    out = []
    for c, label in zip(clips, labels):
        if permuted:
            vec = relabel_vectors(label, c["aus"], store.header["relabel"], store.regions)
        else:
            vec = c["relabel"][view]
        out.append(vec[variant])
    return out


def plan_run(store: Store, view: str, protocol: str, folds: int | None, seed: int,
             permute_labels: int | None) -> tuple[list, list[str], list[dict]]:
    """The view's clips, the labels in use (shuffled for a control) and the folds with their clip lists."""
    clips = store.view_clips(view)
    if not clips:
        raise ConfigError(f"view {view!r} of {store.where} has no clips: ingest datasets first")
    true = [c.labels[view] for c in clips]
    labels = permuted_labels(true, permute_labels) if permute_labels is not None else true
    plan = make_folds(clips, protocol, folds, seed)
    for fold in plan:
        test = set(fold["test_subjects"])
        fold["test_clips"] = [c.id for c in clips if subject_of(c) in test]
        fold["train_clips"] = [c.id for c in clips if subject_of(c) not in test]
    return clips, labels, plan


def embed(
    store_path: str,
    run: str,
    *,
    view: str = MEGC2019,
    protocol: str = "loso",
    folds: int | None = None,
    epochs: int = 100,
    batch_size: int = 256,
    seed: int = 0,
    cnn_scope: str = "fold",
    cnn_input_mode: str = "delta",
    cnn_dense: int = 1024,
    relabel: str = "au",
    permute_labels: int | None = None,
    jobs: int = 1,
    gpu: int | None = None,
    cpu: bool = False,
    scheduler: str | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train region CNNs and write per-frame embeddings under ``runs/<run>``.

    The run is claimed first (one writer per run name), its plan written once, then each fold
    writes its chunks and models and, last, its fold marker; the run's commit marker is written
    after every fold. Re-running with the same settings resumes an interrupted or failed run
    (folds with a marker are kept) and does nothing to a complete one.
    Fold tasks run here, in ``jobs`` local processes, or on the workers of the dask
    ``scheduler`` (GPU workers only when ``gpu`` is given); see :mod:`roi_store.parallel`.

    Returns
    -------
    dict
        The run's document (:func:`roi_store.runs.run_document`): the plan (settings, folds with
        the clips that trained each CNN), state, per-fold CNN records, device, timings.

    Raises
    ------
    RunBusyError
        If another process is writing a run of this name.
    StoreError
        If the run exists with other settings and ``overwrite`` is false.
    """
    if cnn_scope not in CNN_SCOPES:
        raise ConfigError(f"invalid --cnn-scope {cnn_scope!r}: allowed values are {', '.join(CNN_SCOPES)}")
    if epochs < 1 or batch_size < 1 or cnn_dense < 1:
        raise ConfigError("--epochs, --batch-size and --cnn-dense must be positive")
    if cnn_input_mode not in INPUTS:
        raise ConfigError(f"invalid --input {cnn_input_mode!r}: allowed values are {', '.join(INPUTS)}")
    threads = None if jobs <= 1 else max(1, backend.cores() // jobs)
    backend.select_device(gpu, cpu, threads)
    parallel.check(jobs, scheduler, gpu is not None)
    say = log or (lambda msg: None)
    store = open_store(store_path, mode="r+")
    clips, labels, plan = plan_run(store, view, protocol, folds, seed, permute_labels)
    targets = run_targets(store, clips, view, labels, relabel, permute_labels is not None)
    classes = list(store.views[view]["classes"])
    cnn_classes = [*classes, store.header["relabel"]["not_me"]]
    everyone = [c.id for c in clips]
    for fold in plan:
        fold["cnn_train_clips"] = fold.pop("train_clips") if cnn_scope == "fold" else everyone
    # One CNN training per fold, or one on every clip (index 0) for the global scope.
    tasks = [(f["index"], f["cnn_train_clips"]) for f in plan] if cnn_scope == "fold" else [(0, everyone)]
    settings = {"view": view, "protocol": protocol, "folds": folds, "epochs": epochs, "batch_size": batch_size,
                "seed": seed, "cnn_scope": cnn_scope, "input": cnn_input_mode, "cnn_dense": cnn_dense, "relabel": relabel, "permute_labels": permute_labels,
                "gamma": 2.0, "optimizer": "adam", "learning_rate": 1e-3}
    doc = {"kind": "region-cnn+lstm", "settings": settings, "classes": classes, "cnn_classes": cnn_classes,
           "regions": store.regions, "clips": everyone, "labels": labels,
           "true_labels": [c.labels[view] for c in clips],
           "folds": plan, "leakage": cnn_scope == "global", "embedding_folds": len(tasks)}
    writer = RunWriter.claim(store, run, "embed")
    try:
        if writer.plan_embed(doc, overwrite) == COMPLETE:
            say(f"run {run} is already complete: nothing to do")
            return run_document(store, run)
        work = {"store": parallel.store_location(store_path), "run": run, "settings": settings, "clips": everyone,
                "targets": targets, "cnn_classes": cnn_classes, "regions": store.regions}
        started = time.perf_counter()
        try:
            writer.embedding_arrays(store.regions, len(tasks), len(clips), store.t_max, EMBED_DIM)
            done = fold_docs(store, run, "embed")
            if done:
                say(f"resuming run {run}: CNN folds {sorted(done)} are done")
            backend.map_tasks(cnn_task, [(i, train, work) for i, train in tasks if i not in done], jobs, say,
                              "cnn fold", scheduler=scheduler, gpu=gpu is not None, shared=(work["store"],))
            records = list(fold_docs(store, run, "embed").values())
            timings = {"embed_seconds": round(time.perf_counter() - started, 2),
                       "cnn_train_frames_per_s": _rate(records, "train_frames", "train_seconds"),
                       "embed_frames_per_s": _rate(records, "embed_frames", "embed_seconds")}
            writer.commit("embed", len(tasks), {"device": records[0]["device"], "backend": records[0]["backend"],
                                                "timings": timings})
        except BaseException as exc:
            writer.fail("embed", exc)
            raise
    finally:
        writer.release()
    return run_document(store, run)


def _rate(results, frames_key, seconds_key):
    frames = sum(r["totals"][frames_key] for r in results)
    seconds = sum(r["totals"][seconds_key] for r in results)
    return round(frames / seconds, 1) if seconds else None


def _frame_batches(frames, y, batch_size, seed, n_classes):
    """Shuffled float16 network inputs -> float32 batches with one-hot targets (a keras PyDataset).

    Defined inside a function because Keras may only be imported once the device is chosen.
    """
    keras = backend.keras()

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(frames))

        def __len__(self):
            return int(np.ceil(len(frames) / batch_size))

        def __getitem__(self, i):
            idx = np.sort(self.order[i * batch_size:(i + 1) * batch_size])
            x = frames[idx].astype("float32")[..., None]
            return x, np.eye(n_classes, dtype="float32")[y[idx]]

        def on_epoch_end(self):
            self.order = self.rng.permutation(len(frames))

    return Batches()


def embed_frames(emb_model, frames: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """(n, h, w) float16 network inputs -> (n, 20) embeddings, in compiled batches."""
    return np.concatenate([
        np.asarray(emb_model.predict_on_batch(frames[i:i + batch_size].astype("float32")[..., None]))
        for i in range(0, len(frames), batch_size)])


def cnn_task(index: int, train_ids: list[str], work: dict) -> dict:
    """Train the six CNNs of one fold on ``train_ids`` and embed every clip of the run.

    Writes only this fold's embedding chunks, CNN model arrays and, last, its fold marker. The
    result depends only on the run's settings and ``index`` (every seed is derived from the
    two), so a fold redone by a resumed run equals the fold an uninterrupted run makes.
    """
    keras = backend.keras()
    from roi_store import models
    from roi_store.runs import run_group

    store = open_store(work["store"], mode="r+")
    group = run_group(store, work["run"])
    if work.get("subgroup"):  # the final model's arrays (``roistore fit-lstm --final``)
        group = group[work["subgroup"]]
    settings = work["settings"]
    ids = work["clips"]
    train = set(train_ids)
    cnn_classes = work["cnn_classes"]
    cls_index = {c: i for i, c in enumerate(cnn_classes)}
    record = {"index": index, "cnn": {}, "device": None, "backend": keras.backend.backend(),
              "totals": {"train_frames": 0, "train_seconds": 0.0, "embed_frames": 0, "embed_seconds": 0.0}}
    digests = {"embeddings": {}, "models": {}}
    for r_i, region in enumerate(work["regions"]):
        clips = [cnn_input(f, settings["input"]) for f in store.clips_frames(ids, region)]
        lengths = np.array([len(c) for c in clips])
        train_mask = np.array([cid in train for cid in ids])
        x_train = np.concatenate([c for c, m in zip(clips, train_mask) if m])
        y_train = np.concatenate([np.full(len(c), cls_index[work["targets"][i][r_i]])
                                  for i, (c, m) in enumerate(zip(clips, train_mask)) if m])
        counts = np.bincount(y_train, minlength=len(cnn_classes))
        seed = settings["seed"] * 1000003 + index * 101 + r_i
        backend.seed_everything(seed)
        h, w = clips[0].shape[1:]
        cnn = models.region_cnn(h, w, n_classes=len(cnn_classes), dense=settings["cnn_dense"], name=f"cnn_{region}",
                                 seed=seed)
        cnn.compile(optimizer=keras.optimizers.Adam(settings["learning_rate"]),
                    loss=models.FocalLoss(models.inverse_frequency_alpha(counts), settings["gamma"]),
                    metrics=["accuracy"],
                    run_eagerly=int(np.ceil(len(x_train) / settings["batch_size"])) * settings["epochs"] <= models.EAGER_STEPS)
        start = time.perf_counter()
        # The batches shuffle themselves from ``seed``; Keras' own shuffle draws from Python's global random.
        hist = cnn.fit(_frame_batches(x_train, y_train, settings["batch_size"], seed, len(cnn_classes)),
                       epochs=settings["epochs"], shuffle=False, verbose=0)
        record["totals"]["train_seconds"] += time.perf_counter() - start
        record["totals"]["train_frames"] += len(x_train) * settings["epochs"]
        emb_model = models.embedding_model(cnn)
        start = time.perf_counter()
        every = np.concatenate(clips)
        feats = embed_frames(emb_model, every)
        record["totals"]["embed_seconds"] += time.perf_counter() - start
        record["totals"]["embed_frames"] += len(every)
        block = np.zeros((len(ids), store.t_max, EMBED_DIM), dtype=np.float16)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        for i in range(len(ids)):
            block[i, :lengths[i]] = feats[offsets[i]:offsets[i + 1]]
        group[f"embeddings/{region}"][index] = block
        killpoints.reached("embed.chunk")
        digests["embeddings"][region] = digest(block)
        digests["models"][region] = put_bytes(group, f"models/cnn/{index}/{region}", backend.model_to_bytes(cnn))
        killpoints.reached("embed.model")
        record["cnn"][region] = {"train_frames": int(len(x_train)), "class_counts": counts.tolist(),
                                 "final_loss": round(float(hist.history["loss"][-1]), 5),
                                 "final_accuracy": round(float(hist.history["accuracy"][-1]), 4)}
        keras.backend.clear_session()
    record["device"] = backend.device_name()
    record["totals"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in record["totals"].items()}
    record["finished"] = now()
    record["digests"] = digests
    # The fold's marker goes last: a fold without it is redone by a resumed run.
    write_fold_marker(group, "embed", index, record)
    return record
