"""``fit-lstm --final``: one model of a run fitted on every clip of its view, for ``predict``.

The folds of a run measure how well the method generalises; the final model is what a lab
deploys on new clips. It is trained on all subjects with the run's settings (the six region
CNNs, or the run's single CNN when it was embedded with ``cnn_scope="global"``, then the fusion
head) and is never scored: every clip trained it. Layout (``schemas/FORMAT.rst``)::

    runs/<name>/final                       attrs["final"], written last: what trained it
    runs/<name>/final/embeddings/<region>   float16 (1, clips, t_max, 20)
    runs/<name>/final/models/cnn/0/<region>, runs/<name>/final/models/head/0
"""

from __future__ import annotations

import time
from collections.abc import Callable

from roi_store.method import backend, progress
from roi_store.store import format as fmt
from roi_store.method.embed import EMBED_DIM, CnnWork, cnn_task, run_targets
from roi_store.errors import ConfigError, RoiStoreError
from roi_store.method.head import HeadWork, head_task
from roi_store.method.protocols import subject_of
from roi_store.store.run_writer import RunWriter
from roi_store.store.run_data import RunData
from roi_store.store.runs import commit_doc, embeddings_source, not_ready, run_document, run_status
from roi_store.store.store import now, open_store

FINAL = "final"


def fit_final(store_path: str, run: str, *, epochs: int = 60, batch_size: int = 244, seed: int = 0, masked: bool = True,
              cnn_epochs: int | None = None, gpu: int | None = None, cpu: bool = False,
              log: Callable[[str], None] | None = None) -> dict:
    """Fit the run's CNNs and fusion head on every clip of its view; store them under ``final``.

    ``cnn_epochs`` defaults to the run's CNN epochs. Returns the ``final`` document.
    """
    if epochs < 1 or batch_size < 1 or (cnn_epochs is not None and cnn_epochs < 1):
        raise RoiStoreError("--epochs, --batch-size and the CNN epochs must be positive")
    backend.select_device(gpu, cpu)
    say = log or (lambda msg: None)
    store = open_store(store_path, mode="r+")
    group = RunData.open(store, run)  # a missing run: one line, before anything is claimed
    if embeddings_source(store, run) != run:
        raise ConfigError(f"run {run!r} is a head-only permutation control: it has no final model; fit one for "
                          f"run {embeddings_source(store, run)!r}")
    before = run_status(store, run)
    writer = RunWriter.claim(store, run, "fit-lstm --final")  # one writer per run
    try:
        if commit_doc(store, run, "embed") is None:
            raise not_ready(store, run, before)
        doc = run_document(store, run)
        s = doc["settings"]
        ids, labels, regions = list(doc["clips"]), list(doc["labels"]), list(doc["regions"])
        records = store.records()
        clips = [records[i] for i in ids]
        final = group.part(FINAL, fresh=True)  # a re-fit (or a killed one) replaces the whole final group
        final.embedding_arrays(regions, 1, len(ids), store.t_max, EMBED_DIM)
        started = time.perf_counter()
        cnn_settings = {**s, "epochs": cnn_epochs or s["epochs"]}
        if s["cnn_scope"] == "global":
            # The run's one CNN already saw every clip: reuse it and its embeddings.
            for r in regions:
                final.write_embeddings(r, 0, group.embeddings(r, 0))
                final.put_model(f"models/cnn/0/{r}", group.model(f"models/cnn/0/{r}"))
            cnn, source, device = {}, "global", None
        else:
            say(f"final CNNs: {len(regions)} regions on {len(ids)} clips")
            targets = run_targets(store, clips, s["view"], labels, s["relabel"], s.get("permute_labels") is not None)
            with progress.reporting(log):  # progress lines of the training go to ``log`` too
                res = cnn_task([0], [ids], CnnWork(str(store_path), run, cnn_settings, ids, targets,
                                                   doc["cnn_classes"], regions, part=FINAL))
            cnn, source, device = res["cnn"], "trained", res["device"]
        say("final head")
        head_settings = {"epochs": epochs, "batch_size": batch_size, "seed": seed, "masked": masked,
                         "permute_labels": s.get("permute_labels"), "permute_within": s.get("permute_within"),
                         "head_only_permutation": None, "optimizer": "adam", "learning_rate": 1e-3, "gamma": 2.0}
        with progress.reporting(log):
            head = head_task({"index": 0, "name": FINAL, "test_clips": []},
                             HeadWork(str(store_path), run, run, head_settings, labels, ids, doc["classes"], regions,
                                      store.t_max, [c.n_frames for c in clips], part=FINAL))
        out = {"run": run, "trained_on": ids, "subjects": len({subject_of(c) for c in clips}), "cnn_source": source,
               "settings": {"cnn_epochs": cnn_settings["epochs"], "head": head_settings}, "cnn": cnn,
               "head": {"class_counts": head["class_counts"], "final_loss": head["final_loss"]},
               "timings": {"seconds": round(time.perf_counter() - started, 2)},
               "fitted": now(), "device": device or backend.device_name()}
        fmt.validate_document(out, "final", f"{store.where} run {run} final model")
        final.write_document("final", out)  # written last: a final group without it is an interrupted fit
    finally:
        writer.release()
    return out
