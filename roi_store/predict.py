"""``predict``: the whole chain on a new clip (a frame folder or a video file) with a run's models."""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np

from roi_store import backend
from roi_store.datasets.base import ClipSpec
from roi_store.embed import cnn_input
from roi_store.datasets.common import ClipProblem, list_frames
from roi_store.errors import DatasetError
from roi_store.ids import ClipKey
from roi_store.ingest import cut_clip
from roi_store.runs import get_bytes, head_document, run_document, run_group
from roi_store.store import open_store

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


def predict_clip(store_path: str, run: str, source: str | Path, *, landmarks_model: str | None = None,
                 gpu: int | None = None, cpu: bool = False) -> dict:
    """Class probabilities of a new clip: face, regions, each fold's CNN embeddings and head, averaged.

    Uses the store's recorded region layout, scheme and t_max, so the clip is cut exactly as
    the training clips were.
    """
    backend.select_device(gpu, cpu)
    store = open_store(store_path)
    group = run_group(store, run)
    doc = run_document(store, run)
    head = head_document(store, run)  # committed heads only
    work = {"t_max": store.t_max, "scheme": store.header["region_scheme"], "layout": store.header["layout"],
            "landmarks_model": landmarks_model}
    with tempfile.TemporaryDirectory() as tmp:
        spec = _spec(Path(source), Path(tmp))
        blocks, meta = cut_clip(spec, work)
    n = meta["n_frames"]
    regions = doc["regions"]
    per_fold_cnn = doc["settings"]["cnn_scope"] == "fold"
    from roi_store import models
    from roi_store.fusion import pad_batch

    probs = []
    for fold in head["folds"]:
        k = fold["index"]
        cnn_fold = k if per_fold_cnn else 0
        seqs = []
        for region, block in zip(regions, blocks):
            cnn = backend.model_from_bytes(get_bytes(group, f"models/cnn/{cnn_fold}/{region}"))
            emb = models.embedding_model(cnn)
            x = cnn_input(block[:n], doc["settings"].get("input", "frames")).astype("float32")[..., None]
            seqs.append(pad_batch([np.asarray(emb([x], training=False))], head["settings"]["masked"], store.t_max))
        model = backend.model_from_bytes(get_bytes(group, f"models/head/{k}"))
        probs.append(np.asarray(model.predict_on_batch(seqs))[0])
    mean = np.mean(probs, axis=0)
    classes = head["classes"]
    return {"source": str(source), "run": run, "n_frames": n, "classes": classes,
            "probabilities": {c: round(float(p), 4) for c, p in zip(classes, mean)},
            "prediction": classes[int(np.argmax(mean))], "models": len(probs),
            "leakage": bool(doc.get("leakage")), "warnings": meta["warnings"]}
