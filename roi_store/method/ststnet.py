"""STSTNet (Liong et al., FG 2019) on a flow feature set: a second method beside the region CNNs + LSTM.

The network (METHOD.md §8): the 28x28x3 onset-to-apex flow of a clip's face (u, v, optical
strain) into three parallel streams of 3x3 convolutions with 3, 5 and 8 filters (ReLU, 'same'
padding), each max-pooled 3x3 with stride 3 ('same'), concatenated (16 channels), average-pooled
2x2 with stride 2, flattened (400 values) into one dense softmax layer: 1,651 weights for three
classes (:data:`PARAMETERS`).

Training as the authors published it (their ``main.m``, christy1206/STSTNet): Adam, learning
rate 5e-5, batch 256, 500 epochs, cross-entropy, a fixed number of epochs (no epoch is ever
chosen on a test subject). Each clip's three channels are scaled to [0, 1] on their own
(:func:`clip_input`), as the authors' flow images are: no statistic crosses clips, so none
carries a test subject into training.

Several folds train side by side in one compiled step, each as it would alone: the network and
its training engine are :mod:`roi_store.method.ststnet_net`.

A run is written like a fitted head of the paper's method (:mod:`roi_store.store.runs`): the
plan (``kind`` ``"ststnet"``), the head's plan, one marker per fold with its test predictions,
the model of fold k at ``models/head/<k>``, the commit last; so ``report``, ``compare``,
``runs``, ``export`` and ``--megc-log`` read it as they read the paper's runs.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from roi_store import killpoints, parallel
from roi_store.errors import ConfigError
from roi_store.ids import ClipKey
from roi_store.method import backend
from roi_store.method.embed import control_within, permutation_groups, permuted_labels
from roi_store.method.presets import check_choice
from roi_store.method.protocols import PROTOCOLS, make_folds, read_same_person
from roi_store.method.ststnet_net import (  # noqa: F401 -- the network, by its usual names
    CHANNELS, KIND, PARAMETERS, SIZE, STREAMS, FoldBatches, clip_input, copy_fold, patches, predict_folds, ststnet,
    stacked_ststnet, train_group)
from roi_store.store.format import json_safe
from roi_store.store.labels import MEGC2019
from roi_store.store.run_writer import RunWriter
from roi_store.store.run_data import RunData
from roi_store.store.runs import COMPLETE, fold_docs, head_document
from roi_store.store.store import now, open_store

#: The authors' training settings (their main.m: trainingOptions('adam', 'InitialLearnRate',
#: 0.00005, 'MaxEpochs', 500, 'MiniBatchSize', 256); MATLAB's classification layer is cross-entropy).
PUBLISHED = {"epochs": 500, "batch_size": 256, "learning_rate": 5e-5}
INPUT = "clip-minmax"
#: Folds trained together by default: a 68-fold LOSO in 4 steps. A step's memory grows with its
#: folds (a batch of 256 clips holds 256 x F x 28 x 28 x 27 input values: 1.5 GB at F 68).
FOLDS_PER_STEP = 17


# --- a run -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Clip:
    """What the folds need of a clip: its dataset and subject (:func:`make_folds`)."""

    id: str
    dataset: str
    subject: str


def _feature_set(store, name: str):
    """The store's flow feature set ``name`` (``roistore flow`` makes them); one-line StoreError if missing."""
    return store.features(name)


def plan(store, features: str, view: str, protocol: str, folds: int | None, seed: int, permute_labels: int | None,
         permute_within: str | None, same_person: dict | None):
    """The feature set's clips of ``view`` (sorted by id), the labels in use and the folds with their test clips.

    Folds come from :func:`roi_store.method.protocols.make_folds` over the same clips, so a
    run of the paper's method on the same view and protocol has the same folds.
    """
    fs = _feature_set(store, features)
    labels_of = dict(zip(fs.clips, fs.labels(view)))
    ids = sorted(c for c, label in labels_of.items() if label)
    if not ids:
        raise ConfigError(f"flow set {features!r} of {store.where} has no clip of view {view!r}: compute it with "
                          f"'roistore flow {store.where} --name {features}' after ingesting the view's datasets")
    keys = [ClipKey.parse(c) for c in ids]
    clips = [Clip(k.id, k.dataset, k.subject) for k in keys]
    labels = [labels_of[c] for c in ids]
    if permute_labels is not None:
        labels = permuted_labels(labels, permute_labels, permutation_groups(ids, permute_within or "dataset"))
    folds_plan = make_folds(clips, protocol, folds, seed, same_person)
    for fold in folds_plan:
        test = set(fold["test_subjects"])
        fold["test_clips"] = [c.id for c in clips if f"{c.dataset}/{c.subject}" in test]
    return fs, ids, [labels_of[c] for c in ids], labels, folds_plan


def fit(store_path: str, run: str, *, features: str, view: str = MEGC2019, protocol: str = "loso",
        folds: int | None = None, epochs: int | None = None, batch_size: int | None = None,
        learning_rate: float | None = None, seed: int = 0, folds_per_step: int | None = None,
        permute_labels: int | None = None, permute_within: str | None = None, same_person: str | dict | None = None,
        jobs: int = 1, gpu: int | None = None, cpu: bool = False, scheduler: str | None = None,
        overwrite: bool = False, log: Callable[[str], None] | None = None) -> dict:
    """Train STSTNet per fold on the flow feature set ``features`` and store pooled test predictions.

    Like ``embed`` and ``fit-lstm``: one writer per run name, the plan written once, one marker
    per fold (its predictions and the digest of its model), the commit last. Re-running with the
    same settings resumes an interrupted run and does nothing to a complete one; other settings
    replace a run only with ``overwrite``. ``folds_per_step`` folds train together in one
    compiled step (default :data:`FOLDS_PER_STEP`); steps run here, in ``jobs`` local processes,
    or on the workers of the dask ``scheduler`` (:mod:`roi_store.parallel`).

    Parameters
    ----------
    store_path : str
        The store folder.
    run : str
        The run's name.
    features : str
        The flow feature set (``roistore flow STORE --name NAME``).
    view, protocol, folds, seed
        The class view and the folds, as for ``embed`` (LOSO by default; ``seed`` also fixes
        the weights and batches).
    epochs, batch_size, learning_rate : optional
        Default: the published 500, 256 and 5e-5 (:data:`PUBLISHED`), fixed for every fold.
    permute_labels : int, optional
        Make a permutation control: train and score on labels shuffled with this seed.
    permute_within : {"dataset", "subject", "all"}, optional
        Where a control's labels are shuffled (default ``"dataset"``); only with ``permute_labels``.
    same_person : str or dict, optional
        A same-person CSV or its person -> subjects dict: one person's subjects are tested together.

    Returns
    -------
    dict
        The head document (:func:`roi_store.store.runs.head_document`) with ``run``: settings, per-fold
        clip lists and timings, pooled predictions.

    Raises
    ------
    RunBusyError
        If another process is writing the run.
    StoreError
        If the run exists with other settings and ``overwrite`` is false, or the feature set is missing.
    ConfigError
        For a setting out of range.
    """
    epochs = PUBLISHED["epochs"] if epochs is None else epochs
    batch_size = PUBLISHED["batch_size"] if batch_size is None else batch_size
    learning_rate = PUBLISHED["learning_rate"] if learning_rate is None else float(learning_rate)
    if epochs < 1 or batch_size < 1 or (folds_per_step is not None and folds_per_step < 1) or not learning_rate > 0:
        raise ConfigError("--epochs, --batch-size, --folds-per-step and --learning-rate must be positive")
    check_choice("--protocol", protocol, PROTOCOLS)
    permute_within = control_within(permute_labels, permute_within)
    backend.select_device(gpu, cpu, max(1, backend.cores() // max(1, jobs)))
    parallel.check(jobs, scheduler, gpu is not None)
    say = log or (lambda msg: None)
    store = open_store(store_path, mode="r+")
    if same_person is not None and not isinstance(same_person, dict):
        same_person = read_same_person(same_person, {f"{c.dataset}/{c.subject}" for c in store.clips})
    fs, ids, true_labels, labels, folds_plan = plan(store, features, view, protocol, folds, seed, permute_labels,
                                                    permute_within, None)
    subjects = {f"{k.dataset}/{k.subject}" for k in map(ClipKey.parse, ids)}
    same_person = {p: [s for s in m if s in subjects] for p, m in (same_person or {}).items()}
    same_person = {p: m for p, m in same_person.items() if len(m) > 1} or None  # only merges that matter here
    if same_person:
        fs, ids, true_labels, labels, folds_plan = plan(store, features, view, protocol, folds, seed,
                                                        permute_labels, permute_within, same_person)
    classes = list(store.views[view]["classes"])
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise ConfigError(f"flow set {features!r} labels clips {unknown[0]!r}, not a class of view {view!r} "
                          f"({', '.join(classes)}): compute the flow set again")
    settings = {"method": KIND, "features": features, "features_attrs": json_safe(dict(fs.attrs)), "view": view,
                "protocol": protocol, "folds": folds, "epochs": epochs, "batch_size": batch_size,
                "learning_rate": learning_rate, "optimizer": "adam", "loss": "cross-entropy", "input": INPUT,
                "seed": seed, "permute_labels": permute_labels,
                "permute_within": permute_within, "same_person": same_person}
    doc = {"kind": KIND, "settings": settings, "classes": classes, "regions": [], "clips": ids, "labels": labels,
           "true_labels": true_labels, "folds": folds_plan, "leakage": False}
    writer = RunWriter.claim(store, run, "fit")
    try:
        writer.plan_embed(doc, overwrite)
        if writer.plan_head({"settings": settings, "classes": classes, "labels_used": labels}, overwrite) == COMPLETE:
            say(f"run {run} is already complete: nothing to do")
            return {**head_document(store, run), "run": run}
        work = FoldWork(parallel.store_location(store_path), run, features, settings, ids, labels, classes)
        started = time.perf_counter()
        try:
            done = fold_docs(store, run, "head")
            if done:
                say(f"resuming run {run}: folds {sorted(done)} are done")
            todo = [{"index": f["index"], "name": f["name"], "test_clips": f["test_clips"]}
                    for f in folds_plan if f["index"] not in done]
            # Which folds share a step changes the speed only: each fold trains as it would alone.
            step = folds_per_step or FOLDS_PER_STEP
            groups = [todo[i:i + step] for i in range(0, len(todo), step)]
            backend.map_tasks(fold_task, [(g, work) for g in groups], jobs, say, "ststnet step", scheduler=scheduler,
                              gpu=gpu is not None, shared=(work.store,))
            results = fold_docs(store, run, "head")
            order = {c: i for i, c in enumerate(ids)}
            predictions = sorted((p for r in results.values() for p in r["predictions"]), key=lambda p: order[p["id"]])
            steps = {tuple(r["trained_with"]): r["step_seconds"] for r in results.values()}
            timings = {"fit_seconds": round(time.perf_counter() - started, 2),
                       "train_seconds": round(sum(steps.values()), 2), "steps": len(steps),
                       "seconds_per_fold": round(float(np.mean([r["seconds"] for r in results.values()])), 3)}
            timings["device"] = next(iter(results.values()))["device"]
            writer.commit("head", len(folds_plan), {"predictions": predictions, "timings": timings})
        except BaseException as exc:
            writer.fail("head", exc)
            raise
    finally:
        writer.release()
    return {**head_document(store, run), "run": run}


@dataclasses.dataclass(frozen=True)
class FoldWork:
    """What every step of a run needs: small values only (a step may run on a cluster worker)."""

    store: str  # the store's absolute path or URL
    run: str
    features: str
    settings: dict
    ids: list[str]  # the run's clips, in its order
    labels: list[str]  # each clip's label, as the network trains on it
    classes: list[str]


def fold_task(group: list[dict], work: FoldWork) -> dict:
    """Train the folds ``group`` (``{"index", "name", "test_clips"}``) together; write each one's model and marker.

    A fold's result depends only on the run's settings, its index and the folds it shares its
    step with (every seed is derived from them), so a fold redone by a resumed run equals the
    fold an uninterrupted run makes.
    """
    keras = backend.keras()
    store = open_store(work.store, mode="r+")
    out = RunData.open(store, work.run)
    s, ids, classes = work.settings, work.ids, work.classes
    fs = _feature_set(store, work.features)
    row = {c: i for i, c in enumerate(fs.clips)}
    x = clip_input(np.asarray(fs.face)[[row[c] for c in ids]])
    cls = {c: i for i, c in enumerate(classes)}
    y = np.array([cls[label] for label in work.labels], dtype=np.int64)
    test = np.stack([np.isin(ids, f["test_clips"]) for f in group], axis=1)  # (clips, F)
    train = ~test
    base = s["seed"] * 1000003
    indices = [f["index"] for f in group]
    backend.seed_everything(base + indices[0] * 101)
    res = train_group(x, y, train, n_classes=len(classes), epochs=s["epochs"], batch_size=s["batch_size"],
                      learning_rate=s["learning_rate"], seeds=[base + k * 101 + 7 for k in indices])
    probs = predict_folds(res["plain"], x)  # (clips, F, classes)
    from roi_store.method.fold_layers import FoldFocalLoss

    records = []
    for f, fold in enumerate(group):
        index = fold["index"]
        train_idx, test_idx = np.flatnonzero(train[:, f]), np.flatnonzero(test[:, f])
        model_digest = out.put_model(f"models/head/{index}", backend.model_to_bytes(res["plain"][f]))
        killpoints.reached("head.model")
        p = probs[train_idx, f]
        targets = np.eye(len(classes), dtype=np.float32)[y[train_idx]][:, None, :]
        loss = float(FoldFocalLoss(0.0)(targets, p[:, None, :])) if len(train_idx) else 0.0
        preds = [{"id": ids[i], "fold": index, "true": work.labels[i], "pred": classes[int(np.argmax(probs[i, f]))],
                  "probs": [round(float(v), 6) for v in probs[i, f]]} for i in test_idx]
        record = {"index": index, "name": fold["name"], "test_clips": [ids[i] for i in test_idx],
                  "head_train_clips": [ids[i] for i in train_idx], "head_val_clips": [],
                  "class_counts": np.bincount(y[train_idx], minlength=len(classes)).tolist(),
                  "final_loss": round(loss, 5),
                  "final_accuracy": round(float(np.mean(p.argmax(1) == y[train_idx])) if len(train_idx) else 0.0, 4),
                  # A step shared by several folds is timed once: each fold carries its share.
                  "seconds": round(res["seconds"] / len(group), 3), "step_seconds": round(res["seconds"], 3),
                  "trained_with": indices, "device": backend.device_name(), "backend": keras.backend.backend(),
                  "predictions": preds, "finished": now(), "digests": {"models": {"head": model_digest}}}
        out.mark_fold("head", index, record)  # last: the fold is done
        records.append(record)
    return {"index": indices[0] if len(indices) == 1 else indices, "records": records}


def parameter_count(size: int = SIZE, n_classes: int = 3) -> int:
    """Trainable weights of :func:`ststnet` (builds the network)."""
    return int(ststnet(size, n_classes).count_params())


def fit_seeds(store_path: str, run: str, seeds, *, seed: int | None = None,
              log: Callable[[str], None] | None = None, **options) -> list[dict]:
    """:func:`fit` once per seed, as runs ``<run>-s<seed>`` (see :mod:`roi_store.method.repeats`)."""
    from roi_store.method.repeats import _each_seed

    return _each_seed(fit, "fit", store_path, run, seeds, seed, log, options)
