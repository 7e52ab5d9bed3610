"""The measured steps of the method stages, each run in a fresh interpreter by ``method_bench``.

``python -m benchmarks.method_tasks TASK JSON-ARGS`` calls one task with the JSON object's
items as keyword arguments and prints its result as JSON, then the interpreter's peak memory
(see :func:`benchmarks.harness.run_task`). Each task imports the library only inside itself, so
that an interpreter holds nothing but what its own measurement needs.
"""

from __future__ import annotations

import time

from benchmarks.harness import serve


def embed_task(store: str, run: str, folds: int, epochs: int, cnn_dense: int, batch_size: int,
               gpu: int | None, cpu: bool) -> dict:
    """One k-fold ``embed`` (all folds, six regions), overwriting ``run``.

    Parameters
    ----------
    store, run : str
        The store's path and the run to (re)write.
    folds, epochs, cnn_dense, batch_size : int
        As for :func:`roi_store.method.embed.embed`.
    gpu : int or None
        The GPU to train on, or None.
    cpu : bool
        Keep the backend off every GPU.

    Returns
    -------
    dict
        ``seconds`` (wall time of the call), the run's recorded ``timings``, ``device``,
        ``backend``, ``folds`` and ``train_frames_per_fold`` (per region).
    """
    from roi_store.method.embed import embed

    start = time.perf_counter()
    doc = embed(store, run, protocol="kfold", folds=folds, epochs=epochs, cnn_dense=cnn_dense,
                batch_size=batch_size, seed=1, gpu=gpu, cpu=cpu, overwrite=True)
    return {"seconds": time.perf_counter() - start, "timings": doc["timings"], "device": doc["device"],
            "backend": doc.get("backend"), "folds": len(doc["folds"]),
            "train_frames_per_fold": [sum(v["train_frames"] for v in f["cnn"].values()) / 6 for f in doc["folds"]]}


def fit_lstm_task(store: str, run: str, epochs: int, order: list[bool]) -> dict:
    """``fit-lstm`` on the run's own folds, once per entry of ``order`` (masked or padded), on the CPU.

    Parameters
    ----------
    store, run : str
        The store's path and a run with embeddings; its head is overwritten.
    epochs : int
        Head epochs.
    order : list of bool
        ``masked`` for each fit, in the order they run.

    Returns
    -------
    dict
        ``rows``: per fit, ``masked``, ``seconds``, ``seconds_per_fold``, ``UF1``, ``UAR`` (the
        whole view) and ``train_clips_per_fold``.
    """
    import roi_store
    from roi_store.evaluation.report import run_report
    from roi_store.method.head import fit_lstm

    rows = []
    for masked in order:
        start = time.perf_counter()
        head = fit_lstm(store, run, epochs=epochs, seed=1, masked=masked, cpu=True, overwrite=True)
        seconds = time.perf_counter() - start
        report = run_report(roi_store.open_store(store), run)
        rows.append({"masked": masked, "seconds": seconds, "seconds_per_fold": head["timings"]["seconds_per_fold"],
                     "UF1": report["scores"]["FULL"]["UF1"], "UAR": report["scores"]["FULL"]["UAR"],
                     "train_clips_per_fold": sum(len(f["head_train_clips"]) for f in head["folds"]) / len(head["folds"])})
    return {"rows": rows}


def full_fold_task(store: str, run: str, epochs: int, order: list[bool], seed: int, limit: int | None) -> dict:
    """Train one head on a fold the size of a LOSO fold of the full megc2019 composite.

    Every planned clip but the first subject's, at its planned length and label; each clip's
    values are a real embedded clip of its label from ``run``, repeated to length.

    Parameters
    ----------
    store, run : str
        The store's path and a run with embeddings.
    epochs : int
        Head epochs.
    order : list of bool
        ``masked`` for each training, in the order they run.
    seed : int
        Seed of the megc2019 plan.
    limit : int or None
        Train on at most this many clips (a smoke run), or on all of them.

    Returns
    -------
    dict
        ``rows``: per training, ``masked``, ``seconds``, ``train_clips``, ``frames`` and ``longest``.
    """
    import numpy as np

    import roi_store
    from roi_store.method.head import load_sequences, train_head
    from roi_store.store.run_data import RunData
    from roi_store.store.runs import run_document
    from roi_store.synth import plan

    opened = roi_store.open_store(store)
    doc = run_document(opened, run)
    regions, classes = doc["regions"], doc["classes"]
    lengths = [opened.clip(i).n_frames for i in doc["clips"]]
    real = load_sequences(RunData.open(opened, run), regions, 0, lengths)
    by_label = {c: [i for i, lab in enumerate(doc["labels"]) if lab == c] for c in classes}
    view = [c for c in plan("megc2019", seed) if c["label"] is not None]
    left_out = min((c["dataset"], c["subject"]) for c in view)
    train = [c for c in view if (c["dataset"], c["subject"]) != left_out][:limit]
    seqs = [[np.resize(real[r][by_label[c["label"]][k % len(by_label[c["label"]])]], (c["n_frames"], real[r][0].shape[1]))
             for k, c in enumerate(train)] for r in range(len(regions))]
    y = np.array([classes.index(c["label"]) for c in train])
    rows = []
    for masked in order:
        settings = {"epochs": epochs, "batch_size": 244, "masked": masked, "learning_rate": 1e-3, "gamma": 2.0}
        _, _, seconds = train_head(seqs, y, np.arange(len(train)), [c["n_frames"] for c in train], regions,
                                   len(classes), settings, opened.t_max, seed=1)
        rows.append({"masked": masked, "seconds": seconds, "train_clips": len(train),
                     "frames": int(sum(c["n_frames"] for c in train)), "longest": max(c["n_frames"] for c in train)})
    return {"rows": rows}


def predict_task(store: str, run: str, clip: str, repeats: int, epochs: int) -> dict:
    """Load the run's predictor once, then time ``repeats`` predictions of one clip folder (CPU).

    A run whose head is the padded one is refitted masked first (the default head, what
    ``predict`` serves), with ``epochs`` epochs.

    Parameters
    ----------
    store, run : str
        The store's path and a run with a fitted head.
    clip : str
        A folder of frames.
    repeats : int
        Timed predictions, after one untimed call that builds the models' graphs.
    epochs : int
        Head epochs of a refit.

    Returns
    -------
    dict
        ``load_seconds``, ``ms`` (each prediction), ``n_frames`` and ``models`` (fold models).
    """
    import roi_store
    from roi_store.method.head import fit_lstm

    from roi_store.store.run_data import RunData

    opened = roi_store.open_store(store)
    if not RunData.open(opened, run).document("head", "head")["settings"]["masked"]:
        fit_lstm(store, run, epochs=epochs, seed=1, masked=True, cpu=True, overwrite=True)
    from roi_store.method.predict import load_predictor

    start = time.perf_counter()
    predictor = load_predictor(store, run, cpu=True)
    load = time.perf_counter() - start
    predictor.predict(clip)  # untimed: the first call builds the models' graphs
    ms = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = predictor.predict(clip)
        ms.append((time.perf_counter() - start) * 1000)
    return {"load_seconds": load, "ms": ms, "n_frames": out["n_frames"], "models": out["models"]}


def report_task(store: str, run: str) -> dict:
    """Time ``run_report`` on the run; return it with what the run recorded of its own stages.

    Parameters
    ----------
    store, run : str
        The store's path and a run with a fitted head.

    Returns
    -------
    dict
        ``report_seconds``; the run's ``timings``, ``device``, ``folds``, ``settings``; its
        head's ``head_settings``, ``head_timings`` and ``head_train_clips`` (a fold's mean);
        ``cnn_train_frames`` (a fold's and region's mean), ``view_frames`` and ``view_clips``.
    """
    import roi_store
    from roi_store.evaluation.report import run_report

    start = time.perf_counter()
    run_report(roi_store.open_store(store), run)
    seconds = time.perf_counter() - start
    from roi_store.store.runs import head_document, run_document

    opened = roi_store.open_store(store)
    doc = run_document(opened, run)
    head = head_document(opened, run)
    return {"report_seconds": seconds, "timings": doc["timings"], "device": doc["device"],
            "folds": len(doc["folds"]), "settings": doc["settings"], "head_settings": head["settings"],
            "head_timings": head["timings"],
            "head_train_clips": sum(len(f["head_train_clips"]) for f in head["folds"]) / len(head["folds"]),
            "cnn_train_frames": sum(sum(v["train_frames"] for v in f["cnn"].values()) / 6
                                    for f in doc["folds"]) / len(doc["folds"]),
            "view_frames": sum(c.n_frames for c in opened.view_clips()), "view_clips": len(opened.view_clips())}


#: Task name -> function, as ``method_bench`` names them.
TASKS = {"embed": embed_task, "fit-lstm": fit_lstm_task, "full-fold": full_fold_task, "predict": predict_task,
         "report": report_task}

if __name__ == "__main__":
    serve(TASKS)
