"""``fit-lstm``: the LSTM fusion head per fold, on the run's embeddings; pooled predictions.

Nothing of a fold's test subjects is used to fit its head: no early stopping, no model
selection, no normalisation statistics; the focal loss's class weights come from the fold's
training clips. Padded time steps are masked by default (``masked=False`` feeds the paper's
zero padding to 500 frames as data).

A head-only permutation control (``permute_labels`` on a run embedded with true labels) is
written as a run of its own (:func:`control_name`, or ``control_run``) whose plan is the
source run's plus ``embeddings_from``; its head is fitted on the source run's embeddings, and
the source run's own head is never touched.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from roi_store import killpoints, parallel
from roi_store.errors import ConfigError, RoiStoreError
from roi_store.method import backend, presets, progress
from roi_store.method.embed import PERMUTE_WITHIN, permutation_groups, permuted_labels
from roi_store.method.presets import check_choice
from roi_store.store.run_writer import RunWriter
from roi_store.store.run_data import RunData
from roi_store.store.runs import (COMPLETE, PLAN_KEYS, check_run_name, commit_doc, embedding_fold, embeddings_source,
                                  fold_docs, head_document, not_ready, run_document, run_status)
from roi_store.store.store import now, open_store

#: Masked batches are padded to a multiple of this many steps: few distinct shapes to compile.
LENGTH_BUCKET = 16


def pad_batch(seqs: list[np.ndarray], masked: bool, t_max: int) -> np.ndarray:
    """Stack variable-length (n, 20) sequences: masked -> PAD_VALUE to a bucketed length; else zeros to t_max."""
    from roi_store.method.models import PAD_VALUE

    length = int(np.ceil(max(len(s) for s in seqs) / LENGTH_BUCKET) * LENGTH_BUCKET) if masked else t_max
    return backend.keras().utils.pad_sequences(seqs, maxlen=length, dtype="float32", padding="post",
                                               value=PAD_VALUE if masked else 0.0)


def _batches(indices, lengths, batch_size, rng, masked):
    """Training batches of clip indices: shuffled, then (masked) grouped by length so padding is small."""
    order = rng.permutation(indices)
    if masked:
        # Sort within windows of a few batches: similar lengths share a batch, order still varies.
        window = batch_size * 4
        order = np.concatenate([sorted(order[i:i + window], key=lambda j: lengths[j])
                                for i in range(0, len(order), window)])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def fit_lstm(store_path: str, run: str, *, epochs: int | None = None, batch_size: int | None = None, seed: int = 0,
             masked: bool | None = None, permute_labels: int | None = None, permute_within: str | None = None,
             control_run: str | None = None, preset: str | None = None, jobs: int = 1, gpu: int | None = None,
             cpu: bool = False, overwrite: bool = False, scheduler: str | None = None,
             log: Callable[[str], None] | None = None) -> dict:
    """Fit the fusion head of every fold of ``run`` and store pooled test predictions.

    Like ``embed``: one writer per run, the head's plan written once, a marker per fitted fold
    (with its predictions), the head's commit marker last. Re-running with the same settings
    resumes an interrupted fit; other settings replace a head only with ``overwrite``.
    Fold tasks run here, in ``jobs`` local processes, or on the workers of the dask
    ``scheduler`` (GPU workers only when ``gpu`` is given); see :mod:`roi_store.parallel`.
    ``epochs``, ``batch_size`` and ``masked`` left None come from ``preset`` (default
    ``"roistore"``; ``"paper"``: unmasked zero padding), see :mod:`roi_store.method.presets`.

    Parameters
    ----------
    permute_labels : int, optional
        On a run embedded with ``permute_labels``: that seed (its own labels). On a run embedded
        with true labels: a head-only control, fitted on labels shuffled with this seed and
        written as the run ``control_run`` (default :func:`control_name`), never in place of
        ``run``'s head.
    permute_within : {"dataset", "subject", "all"}, optional
        Where a head-only control shuffles (default ``"dataset"``); for a run embedded with
        ``permute_labels`` it must be the run's own (the default).
    control_run : str, optional
        The head-only control's run name.

    Returns
    -------
    dict
        The head document (:func:`roi_store.store.runs.head_document`): settings, per-fold clip lists
        and timings, pooled predictions; ``run`` names the run written (the control's, for a
        head-only control).

    Raises
    ------
    RunBusyError
        If another process is writing the run.
    RoiStoreError
        If the run's embed is not complete, or its head was fitted with other settings and
        ``overwrite`` is false.
    """
    chosen, preset, overridden = presets.resolve("head", preset, {"epochs": epochs, "batch_size": batch_size,
                                                                  "masked": masked})
    epochs, batch_size, masked = chosen["epochs"], chosen["batch_size"], chosen["masked"]
    if epochs < 1 or batch_size < 1:
        raise ConfigError("--epochs and --batch-size must be positive")
    backend.select_device(gpu, cpu, max(1, backend.cores() // jobs))
    parallel.check(jobs, scheduler, gpu is not None)
    say = log or (lambda msg: None)
    store = open_store(store_path, mode="r+")
    source = run
    planned = RunData.open(store, run).document("run") or {}  # a missing run: one line, before anything is claimed
    method = (planned.get("settings") or {}).get("method")
    if method:
        raise ConfigError(f"run {run!r} was made by 'roistore fit --method {method}': it has no embeddings to fit an "
                          "LSTM head on; fit-lstm fits runs made by 'roistore embed'")
    if planned.get("embeddings_from"):
        source = embeddings_source(store, run)
        raise ConfigError(f"run {run!r} is a head-only control of run {source!r}: refit it with 'roistore fit-lstm "
                          f"{store.where} --run {source} --permute-labels SEED --control-run {run} --overwrite'")
    head_only = permute_labels is not None and bool(planned) and planned["settings"].get("permute_labels") is None
    if control_run is not None and not head_only:
        raise ConfigError("--control-run names a head-only permutation control: give --permute-labels SEED, on a run "
                          "embedded with true labels")
    if head_only:
        run = check_run_name(control_run or control_name(source, permute_labels, permute_within))
        if run == source:
            raise ConfigError(f"--control-run {run} is the run whose embeddings it reuses: choose another name")
    before = run_status(store, source)
    writer = RunWriter.claim(store, run, "fit-lstm")
    try:
        if commit_doc(store, source, "embed") is None:
            raise not_ready(store, source, before)
        doc = run_document(store, source)
        if head_only:  # the control's plan: the source run's, and where its embeddings are
            plan_doc = {k: v for k, v in planned.items() if k in PLAN_KEYS}
            plan_doc["embeddings_from"] = {"run": source, "checksum": commit_doc(store, source, "embed")["checksum"]}
            writer.plan_embed(plan_doc, overwrite)
        labels, settings = _head_settings(doc, source, epochs, batch_size, seed, masked, permute_labels,
                                          permute_within)
        settings |= {"preset": preset, "preset_overrides": overridden}
        ids = doc["clips"]
        for fold in doc["folds"] if doc["settings"]["cnn_scope"] == "fold" else []:
            leaked = set(fold["test_clips"]) & set(fold.get("cnn_train_clips", []))
            if leaked:
                raise RoiStoreError(f"fold {fold['name']}: test clips {sorted(leaked)[:3]} trained its CNNs; the run "
                                    "is damaged")
        plan = {"settings": settings, "classes": doc["classes"], "labels_used": labels}
        if writer.plan_head(plan, overwrite) == COMPLETE:
            say(f"run {run}: its head is already fitted with these settings: nothing to do")
            return {**head_document(store, run), "run": run, "embeddings_from": source if source != run else None}
        work = HeadWork(parallel.store_location(store_path), run, source, settings, labels, ids, doc["classes"],
                        doc["regions"], store.t_max, [store.clip(i).n_frames for i in ids])
        started = time.perf_counter()
        try:
            done = fold_docs(store, run, "head")
            if done:
                say(f"resuming the head of run {run}: folds {sorted(done)} are done")
            with progress.reporting(log):  # progress lines of the folds fitted here go to ``log`` too
                backend.map_tasks(head_task, [({**f, "embedding_fold": embedding_fold(doc, f)}, work)
                                              for f in doc["folds"] if f["index"] not in done], jobs, say,
                                  "head fold", scheduler=scheduler, gpu=gpu is not None, shared=(work.store,))
            results = fold_docs(store, run, "head")
            order = {c: i for i, c in enumerate(ids)}
            predictions = sorted((p for r in results.values() for p in r["predictions"]), key=lambda p: order[p["id"]])
            timings = {"fit_seconds": round(time.perf_counter() - started, 2),
                       "seconds_per_fold": round(float(np.mean([r["seconds"] for r in results.values()])), 3)}
            writer.commit("head", len(doc["folds"]), {"predictions": predictions, "timings": timings})
        except BaseException as exc:
            writer.fail("head", exc)
            raise
    finally:
        writer.release()
    return {**head_document(store, run), "run": run, "embeddings_from": source if source != run else None}


def control_name(run: str, permute_labels: int, permute_within: str | None = None) -> str:
    """The default run name of a head-only control of ``run``: ``R-perm7h``, ``R-perm7h-subject``."""
    within = permute_within or "dataset"
    return f"{run}-perm{permute_labels}h" + ("" if within == "dataset" else f"-{within}")


def _head_settings(doc: dict, run: str, epochs, batch_size, seed, masked, permute_labels,
                   permute_within=None) -> tuple[list, dict]:
    labels = list(doc["labels"])
    run_perm = doc["settings"].get("permute_labels")
    # Controls embedded before --permute-within existed shuffled across every clip.
    run_within = doc["settings"].get("permute_within", "all") if run_perm is not None else None
    if permute_within is not None:
        check_choice("--permute-within", permute_within, PERMUTE_WITHIN)
    head_perm, within = None, run_within
    if permute_labels is not None and permute_labels != run_perm:
        if run_perm is not None:
            raise ConfigError(f"run {run!r} was embedded with --permute-labels {run_perm}; fit its head with the "
                              "same seed")
        within = permute_within or "dataset"  # a head-only control on true-label features
        labels = permuted_labels(labels, permute_labels, permutation_groups(doc["clips"], within))
        head_perm = permute_labels
    elif run_perm is not None and permute_within not in (None, run_within):
        raise ConfigError(f"run {run!r} was embedded with --permute-within {run_within}; fit its head with the same")
    elif run_perm is None and permute_within is not None:
        raise ConfigError(f"--permute-within {permute_within} shapes a permutation control: give --permute-labels "
                          "SEED too")
    settings = {"epochs": epochs, "batch_size": batch_size, "seed": seed, "masked": masked,
                "permute_labels": permute_labels if permute_labels is not None else run_perm,
                "permute_within": within, "head_only_permutation": head_perm, "optimizer": "adam",
                "learning_rate": 1e-3, "gamma": 2.0}
    return labels, settings


def load_sequences(data: RunData, regions, emb_fold: int, lengths) -> list[list[np.ndarray]]:
    """Per region, the list of each clip's unpadded (n, 20) float32 embeddings."""
    blocks = (data.embeddings(r, emb_fold) for r in regions)
    return [[block[i, :n].astype("float32") for i, n in enumerate(lengths)] for block in blocks]


#: Compiled fusion heads of this process, by structure: every fold of a run (and of later runs
#: alike) trains one model, its weights, random seeds and optimiser state set afresh per fold (as
#: :mod:`roi_store.method.engine` does for the CNNs). A head compiled anew for each fold cost about
#: 8 s on a 2-core CPU, and about 60 MiB that the process never gave back.
_HEADS: dict = {}


def _head(regions: list[str], n_classes: int, settings: dict, eager: bool):
    """This process's compiled head of that structure. Its loss has no class weights: the fold's
    ``alpha`` scales its one-hot targets (the same focal loss), so no fold constant is compiled in."""
    from roi_store.method import models

    key = (tuple(regions), n_classes, settings["masked"], settings["learning_rate"], settings["gamma"], eager)
    if key not in _HEADS:
        # Seeded (its weights are replaced per fold): building it draws nothing from Python's `random`.
        model = models.fusion_head(regions, n_classes=n_classes, masked=settings["masked"], seed=0)
        model.compile(optimizer=backend.keras().optimizers.Adam(settings["learning_rate"]),
                      loss=models.FocalLoss([1.0] * n_classes, settings["gamma"]), run_eagerly=eager)
        _HEADS[key] = model
    return _HEADS[key]


def train_head(seqs: list[list[np.ndarray]], y: np.ndarray, train_idx: np.ndarray, lengths: list[int],
               regions: list[str], n_classes: int, settings: dict, t_max: int, seed: int,
               on_epoch: Callable[[int], None] | None = None):
    """Fit one fusion head on the clips ``train_idx`` (of ``seqs``: per region, each clip's (n, 20)).

    ``settings`` holds ``epochs``, ``batch_size``, ``masked``, ``learning_rate`` and ``gamma``;
    ``seed`` fixes the weights, dropout and batch order. ``on_epoch`` hears the epochs done after
    each one (progress). Returns ``(model, epoch losses, seconds of training)``: the model is this
    process's head of that structure (:func:`_head`), valid until the next call trains it.
    """
    from roi_store.method import models

    backend.seed_everything(seed)
    rng = np.random.default_rng(seed)
    counts = np.bincount(y[train_idx], minlength=n_classes)
    steps = int(np.ceil(len(train_idx) / settings["batch_size"])) * settings["epochs"]
    model = _head(regions, n_classes, settings, models.run_eagerly(steps))
    fresh = models.fusion_head(regions, n_classes=n_classes, masked=settings["masked"], seed=seed)
    for var, value in zip(model.variables, fresh.variables, strict=True):  # the seed's weights and dropout seeds
        var.assign(value)
    models.reset_optimizer(model, settings["learning_rate"])
    alpha = np.asarray(models.inverse_frequency_alpha(counts), dtype="float32")
    targets = np.eye(n_classes, dtype="float32") * alpha  # row c: class c's one-hot target, times its alpha
    start = time.perf_counter()
    losses = []
    for done in range(1, settings["epochs"] + 1):
        epoch = []
        for b in _batches(train_idx, lengths, settings["batch_size"], rng, settings["masked"]):
            xs = [pad_batch([seqs[r][i] for i in b], settings["masked"], t_max) for r in range(len(seqs))]
            epoch.append(float(model.train_on_batch(xs, targets[y[b]])))
        losses.append(float(np.mean(epoch)))
        if on_epoch is not None:
            on_epoch(done)
    return model, losses, time.perf_counter() - start


@dataclasses.dataclass(frozen=True)
class HeadWork:
    """What every head task of a run needs: small values only (a task may run on a cluster worker)."""

    store: str  # the store's absolute path or URL
    run: str
    embeddings: str  # the run whose embeddings the head reads (itself, or the run a control reuses)
    settings: dict  # the head's settings
    labels: list[str]  # each clip's label, as the head trains on it
    ids: list[str]
    classes: list[str]
    regions: list[str]
    t_max: int
    lengths: list[int]
    part: str | None = None  # a group below the run to write into (the final model's)


def head_task(fold: dict, work: HeadWork) -> dict:
    """Fit one fold's head on its training clips and predict its test clips."""
    store = open_store(work.store, mode="r+")
    run = RunData.open(store, work.run)
    # A head-only control reads the embeddings of the run it controls, and writes only its own group.
    source = RunData.open(store, work.embeddings) if work.embeddings != work.run else run
    if work.part:  # the final model's arrays (``roistore fit-lstm --final``)
        run = source = run.part(work.part)
    s = work.settings
    ids, classes, lengths = work.ids, work.classes, work.lengths
    index = fold["index"]
    seqs = load_sequences(source, work.regions, fold.get("embedding_fold", 0), lengths)
    y = np.array([classes.index(lab) for lab in work.labels])
    is_test = np.isin(ids, fold["test_clips"])
    test_idx, train_idx = np.flatnonzero(is_test), np.flatnonzero(~is_test)
    seed = s["seed"] * 1000003 + index * 101 + 7
    counts = np.bincount(y[train_idx], minlength=len(classes))
    with progress.training(store, work.run, stage="final-head" if work.part else "head", folds=[index],
                           epochs=s["epochs"], per_epoch=len(train_idx), unit="clips/s") as tracker:
        model, losses, seconds = train_head(seqs, y, train_idx, lengths, work.regions, len(classes), s,
                                            work.t_max, seed, on_epoch=tracker.epoch_end)
    probs = []
    if len(test_idx):  # the final model (all subjects) has no test clips
        xs = [pad_batch([seqs[r][i] for i in test_idx], s["masked"], work.t_max) for r in range(len(seqs))]
        probs = np.asarray(model.predict_on_batch(xs))
    model_digest = run.put_model(f"models/head/{index}", backend.model_to_bytes(model))
    killpoints.reached("head.model")
    preds = [{"id": ids[i], "fold": index, "true": work.labels[i], "pred": classes[int(np.argmax(p))],
              "probs": [round(float(v), 6) for v in p]} for i, p in zip(test_idx, probs)]
    record = {"index": index, "name": fold["name"], "test_clips": [ids[i] for i in test_idx],
              "head_train_clips": [ids[i] for i in train_idx], "head_val_clips": [],
              "cnn_train_clips": fold.get("cnn_train_clips", []), "class_counts": counts.tolist(),
              "final_loss": round(losses[-1], 5), "seconds": round(seconds, 3), "predictions": preds,
              "finished": now(), "digests": {"models": {"head": model_digest}}}
    run.mark_fold("head", index, record)  # last: the fold is done
    return record
