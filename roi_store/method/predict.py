"""``predict``: the whole chain on a new clip (a frame folder or a video file) with a run's models."""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np

from roi_store.method import backend
from roi_store.ingest.datasets.base import ClipSpec
from roi_store.method.embed import cnn_input
from roi_store.ingest.datasets.common import ClipProblem, list_frames
from roi_store.errors import DatasetError, RoiStoreError
from roi_store.ids import ClipKey
from roi_store.ingest.cut import cut_clip
from roi_store.store.runs import embedding_fold, embeddings_source, get_bytes, head_document, run_document, run_group
from roi_store.store.store import open_store

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


def _video_frames(video: Path, folder: Path) -> tuple[list[Path], float]:
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise DatasetError(f"cannot open video {video}: give a frame folder or a video OpenCV can read")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    paths = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        path = folder / f"frame{len(paths):06d}.png"  # lossless: the cut sees what the video holds
        cv2.imwrite(str(path), frame)
        paths.append(path)
    cap.release()
    if not paths:
        raise DatasetError(f"video {video} has no readable frames")
    return paths, float(fps)


def _spec(source: Path, tmp: Path) -> ClipSpec:
    if source.is_dir():
        try:
            listing = list_frames(source, source.resolve())
        except ClipProblem as exc:
            raise DatasetError(f"{source}: {exc}") from None
        frames, numbers, warnings, fps = listing.paths, listing.numbers, listing.warnings, 0.0
    elif source.suffix.lower() in VIDEO_SUFFIXES and source.is_file():
        frames, fps = _video_frames(source, tmp)
        numbers, warnings = list(range(len(frames))), []
    else:
        raise DatasetError(f"{source} is neither a frame folder nor a video file ({', '.join(VIDEO_SUFFIXES)})")
    return ClipSpec(key=ClipKey("new", "new", "clip"), folder=source, frames=list(frames),
                    frame_numbers=list(numbers), fps=fps or 1.0, emotion="", warnings=list(warnings))


MODEL_CHOICES = ("auto", "final", "folds")


class Predictor:
    """A run's models, loaded once, to predict any number of new clips.

    Made by :func:`load_predictor`; :meth:`predict` runs face, regions, CNN embeddings and
    head on one clip: with the final model, or each fold's models averaged.
    """

    def __init__(self, store, run: str, doc: dict, head: dict, embedders: dict, heads: list, landmarks_model,
                 model: str):
        self.store = store
        self.run = run
        self.doc = doc
        self.head = head
        self.model = model  # "final" or "folds"
        self._embedders = embedders  # cnn fold -> [embedding model per region]
        self._heads = heads  # [(fold index, cnn fold, head model)]
        self._work = {"t_max": store.t_max, "scheme": store.header["region_scheme"],
                      "layout": store.header["layout"], "landmarks_model": landmarks_model}

    def predict(self, source: str | Path) -> dict:
        """Class probabilities of one clip (a frame folder or a video file), as :func:`predict_clip`."""
        from roi_store.method.head import pad_batch

        with tempfile.TemporaryDirectory() as tmp:
            spec = _spec(Path(source), Path(tmp))
            blocks, meta = cut_clip(spec, self._work)
        n = meta["n_frames"]
        mode = self.doc["settings"].get("input", "frames")
        inputs = [cnn_input(block[:n], mode) for block in blocks]
        masked = self.head["settings"]["masked"]
        probs = []
        for _, cnn_fold, model in self._heads:
            seqs = [pad_batch([np.asarray(emb([x], training=False))], masked, self.store.t_max)
                    for emb, x in zip(self._embedders[cnn_fold], inputs)]
            probs.append(np.asarray(model.predict_on_batch(seqs))[0])
        mean = np.mean(probs, axis=0)
        classes = self.head["classes"]
        return {"source": str(source), "run": self.run, "n_frames": n, "classes": classes,
                "probabilities": {c: round(float(p), 4) for c, p in zip(classes, mean)},
                "prediction": classes[int(np.argmax(mean))], "models": len(probs), "model": self.model,
                "leakage": bool(self.doc.get("leakage")), "warnings": meta["warnings"]}


def load_predictor(store_path: str | Path, run: str, *, models: str = "auto", landmarks_model: str | None = None,
                   gpu: int | None = None, cpu: bool = False) -> Predictor:
    """Load a run's CNN embedding models and heads once, for :meth:`Predictor.predict`.

    ``models``: ``final`` uses the model fitted on all subjects (``fit-lstm --final``), ``folds``
    averages every fold's CNNs and head, ``auto`` takes the final model when the run has one.
    Uses the store's recorded region layout, scheme and t_max, so new clips are cut exactly as
    the training clips were.

    Raises
    ------
    RoiStoreError
        If the run has no fitted head (or no final model with ``models="final"``), or a stored
        model is damaged.
    """
    if models not in MODEL_CHOICES:
        raise RoiStoreError(f"invalid --models {models!r}: allowed values are {', '.join(MODEL_CHOICES)}")
    backend.select_device(gpu, cpu)
    store = open_store(store_path)
    group = run_group(store, run)
    doc = run_document(store, run)
    from roi_store.method import models as nets
    from roi_store.method.final import FINAL, final_info

    final = final_info(group)
    if models == "final" and final is None:
        raise RoiStoreError(f"run {run!r} has no final model: fit one with 'roistore fit-lstm {store.where} --run {run} --final'")
    use_final = final is not None and models != "folds"
    if use_final:
        group = group[FINAL]
        head = {"folds": [{"index": 0}], "settings": final["settings"]["head"], "classes": doc["classes"]}
    else:
        head = head_document(store, run)  # committed heads only
    # A head-only control's CNNs are those of the run whose embeddings it reuses.
    cnn_group = group if use_final else run_group(store, embeddings_source(store, run))
    emb_fold = {f["index"]: embedding_fold(doc, f) for f in doc["folds"]}
    embedders, heads = {}, []
    for fold in head["folds"]:
        k = fold["index"]
        cnn_fold = 0 if use_final else emb_fold[k]
        if cnn_fold not in embedders:
            embedders[cnn_fold] = [
                nets.embedding_model(backend.model_from_bytes(get_bytes(cnn_group, f"models/cnn/{cnn_fold}/{region}")))
                for region in doc["regions"]]
        heads.append((k, cnn_fold, backend.model_from_bytes(get_bytes(group, f"models/head/{k}"))))
    return Predictor(store, run, doc, head, embedders, heads, landmarks_model, "final" if use_final else "folds")


def predict_clip(store_path: str, run: str, source: str | Path, *, models: str = "auto",
                 landmarks_model: str | None = None, gpu: int | None = None, cpu: bool = False) -> dict:
    """Class probabilities of a new clip: face, regions, CNN embeddings and fusion head.

    See :func:`load_predictor` for ``models``. To predict many clips, load the models once with
    :func:`load_predictor`.
    """
    return load_predictor(store_path, run, models=models, landmarks_model=landmarks_model, gpu=gpu,
                          cpu=cpu).predict(source)
