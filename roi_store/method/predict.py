"""``predict``: the whole chain on a new clip (a frame folder or a video file) with a run's models.

Every stored model is checked against the digest its run recorded when it was written before
any model is loaded: a model changed or damaged since is refused without being deserialised.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from roi_store.errors import DatasetError, FrameError, RoiStoreError, ValidationError
from roi_store.ids import ClipKey
from roi_store.ingest.cut import CutSettings, cut_clip
from roi_store.ingest.datasets.base import ClipSpec
from roi_store.ingest.datasets.frames import ClipProblem, list_frames
from roi_store.ingest.decode import VIDEO_SUFFIXES, decode_video
from roi_store.method import backend
from roi_store.method.embed import cnn_input
from roi_store.method.presets import check_choice
from roi_store.store.run_data import RunData
from roi_store.store.runs import (commit_doc, digest, embedding_fold, embeddings_source, fold_checksum, fold_docs,
                                  head_document, run_document)
from roi_store.store.store import open_store

__all__ = ["MODEL_CHOICES", "VIDEO_SUFFIXES", "FlowPredictor", "Predictor", "load_predictor", "predict_clip"]


def _spec(source: Path, tmp: Path, t_max: int) -> tuple[ClipSpec, bool]:
    """The new clip as a ClipSpec, and whether it is a video (its frames then decoded into ``tmp``)."""
    video = False
    if source.is_dir():
        try:
            listing = list_frames(source, source.resolve())
        except ClipProblem as exc:
            raise DatasetError(f"{source}: {exc}") from None
        frames, numbers, warnings, fps = listing.paths, listing.numbers, listing.warnings, 1.0
        if len(frames) > t_max:
            raise FrameError(f"{source} has {len(frames)} frames, more than the store's t_max of {t_max}: "
                             f"predict on a folder of at most {t_max} of them")
    elif source.suffix.lower() in VIDEO_SUFFIXES and source.is_file():
        decoded = decode_video(source, tmp, t_max)
        if decoded.more:
            longest = t_max / decoded.fps
            raise FrameError(f"{source} is longer than the store's t_max of {t_max} frames ({longest:.2f} s at "
                             f"{decoded.fps:g} fps): cut the video to at most {longest:.2f} s around the expression")
        frames, fps, video = decoded.paths, decoded.fps, True
        numbers, warnings = list(range(len(frames))), []
    else:
        raise DatasetError(f"{source} is neither a frame folder nor a video file ({', '.join(VIDEO_SUFFIXES)})")
    spec = ClipSpec(key=ClipKey("new", "new", "clip"), folder=source, frames=list(frames),
                    frame_numbers=list(numbers), fps=fps, emotion="", warnings=list(warnings))
    return spec, video


MODEL_CHOICES = ("auto", "final", "folds")


class Predictor:
    """A run's models, loaded once, to predict any number of new clips.

    Made by :func:`load_predictor`; :meth:`predict` runs face, regions, CNN embeddings and
    head on one clip: with the final model, or each fold's models averaged.
    """

    def __init__(self, store, run: str, doc: dict, head: dict, embedders: dict, heads: list, landmarks_model,
                 model: str):
        self.store, self.run, self.doc, self.head = store, run, doc, head
        self.model = model  # "final" or "folds"
        self._embedders = embedders  # cnn fold -> [embedding model per region]
        self._heads = heads  # [(fold index, cnn fold, head model)]
        self._work = CutSettings.of(store, landmarks_model)

    def predict(self, source: str | Path) -> dict:
        """Class probabilities of one clip (a frame folder or a video file), as :func:`predict_clip`.

        ``face`` in the result says which frame the landmarks were taken from: ``frame`` (its
        index), ``time`` (seconds into a video; None for a folder) and ``file`` (a folder's frame
        file; None for a video). A video's face is searched for through its first
        :data:`roi_store.ingest.cut.VIDEO_FACE_SECONDS` seconds.
        """
        from roi_store.method.head import pad_batch

        with tempfile.TemporaryDirectory() as tmp:
            spec, video = _spec(Path(source), Path(tmp), self.store.t_max)
            blocks, meta = cut_clip(spec, self._work, name=str(source), video=video)
        face = meta["face"]["frame"]
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
                "face": {"frame": face, "time": round(face / spec.fps, 3) if video else None,
                         "file": None if video else spec.frames[face].name},
                "leakage": bool(self.doc.get("leakage")), "warnings": meta["warnings"]}


@dataclasses.dataclass(frozen=True)
class _StoredModel:
    group: RunData  # the run (or its final model) holding it
    path: str
    recorded: str | None
    run: str  # the run it belongs to
    label: str  # "head model of fold 3"
    redo: str  # what the user runs to write it again


def _recorded(marker: dict, key: str) -> str | None:
    return ((marker.get("digests") or {}).get("models") or {}).get(key)


def _checked_markers(store, name: str, stage: str) -> dict[int, dict]:
    """A stage's fold markers, checked against its commit's checksum (a marker edited after the commit)."""
    docs = fold_docs(store, name, stage)
    commit = commit_doc(store, name, stage)
    if commit is not None and fold_checksum(list(docs.values())) != commit["checksum"]:
        raise ValidationError(f"run {name}: its {stage} fold markers do not match their commit's checksum (changed "
                              f"after the commit): run 'roistore validate {store.where}' to see what changed")
    return docs


def _read_checked(store, item: _StoredModel) -> bytes:
    where = f"run {item.run}: the stored {item.label}"
    check = f"run 'roistore validate {store.where}' to see what else changed, then {item.redo}"
    if not item.group.has(item.path):
        raise ValidationError(f"{where} is missing: {check}")
    if not item.recorded:
        raise ValidationError(f"{where} has no recorded digest to check it against (its fold marker is missing or "
                              f"incomplete): {check}")
    try:
        data = item.group.model(item.path)
    except Exception as exc:  # zarr's checksum and codec errors on a damaged chunk
        raise ValidationError(f"{where} cannot be read ({type(exc).__name__}: {_first_line(exc)}): {check}") from None
    if digest(data) != item.recorded:
        raise ValidationError(f"{where} does not match its recorded digest (changed or damaged): {check}")
    return data


def _load(item: _StoredModel, data: bytes, embedding: bool = False):
    from roi_store.method import models as nets

    try:
        model = backend.model_from_bytes(data)
        return nets.embedding_model(model) if embedding else model
    except Exception as exc:
        version = getattr(backend.keras(), "__version__", "?")
        raise RoiStoreError(
            f"run {item.run}: the stored {item.label} matches its recorded digest but cannot be loaded by Keras "
            f"{version} ({type(exc).__name__}: {_first_line(exc)}): use the Keras version that made the run, "
            f"or {item.redo}") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else "no message"


def load_predictor(store_path: str | Path, run: str, *, models: str = "auto", landmarks_model: str | None = None,
                   gpu: int | None = None, cpu: bool = False) -> Predictor | FlowPredictor:
    """Load a run's CNN embedding models and heads once, for :meth:`Predictor.predict`.

    ``models``: ``final`` uses the model fitted on all subjects (``fit-lstm --final``), ``folds``
    averages every fold's CNNs and head, ``auto`` takes the final model when the run has one.
    Uses the store's recorded region layout, scheme and t_max, so new clips are cut exactly as
    the training clips were. Every model's bytes are checked against the digest recorded in the
    run's fold markers before the first one is deserialised.

    Raises
    ------
    RoiStoreError
        If the run has no fitted head (or no final model with ``models="final"``).
    ValidationError
        If a stored model is missing, damaged or changed since it was written.
    """
    check_choice("--models", models, MODEL_CHOICES, RoiStoreError)
    backend.select_device(gpu, cpu)
    store = open_store(store_path)
    group = RunData.open(store, run)
    doc = run_document(store, run)
    if doc["settings"].get("method"):  # a method on a flow feature set (STSTNet): its fold networks
        return _flow_predictor(store, run, doc, group, models, landmarks_model)
    from roi_store.method.final import FINAL

    final = group.document("final", FINAL)  # None without a (finished) final model
    if models == "final" and final is None:
        raise RoiStoreError(f"run {run!r} has no final model: fit one with 'roistore fit-lstm {store.where} --run "
                            f"{run} --final'")
    use_final = final is not None and models != "folds"
    where = store.where
    if use_final:
        head = {"folds": [{"index": 0}], "settings": final["settings"]["head"], "classes": doc["classes"]}
        final_group = group.part(FINAL)
        redo = f"re-fit it with 'roistore fit-lstm {where} --run {run} --final'"
        # A global-scope run's final CNNs are byte copies of its one CNN: the run recorded their digests.
        cnn_marker = (_checked_markers(store, run, "embed").get(0, {}) if final["cnn_source"] == "global"
                      else final_group.fold_marker("embed", 0))
        head_marker = final_group.fold_marker("head", 0)
        cnns = {0: [_StoredModel(final_group, f"models/cnn/0/{r}", _recorded(cnn_marker, r), run,
                                 f"final {r} CNN model", redo) for r in doc["regions"]]}
        heads = [(0, 0, _StoredModel(final_group, "models/head/0", _recorded(head_marker, "head"), run,
                                     "final head model", redo))]
    else:
        head = head_document(store, run)  # committed heads only
        # A head-only control's CNNs are those of the run whose embeddings it reuses.
        source = embeddings_source(store, run)
        cnn_group, cnn_markers = RunData.open(store, source), _checked_markers(store, source, "embed")
        head_markers = _checked_markers(store, run, "head")
        cnn_redo = f"embed run {source} again (its 'roistore embed' command with --overwrite) and re-fit its head"
        redo = f"re-fit it with 'roistore fit-lstm {where} --run {run} --overwrite'"
        emb_fold = {f["index"]: embedding_fold(doc, f) for f in doc["folds"]}
        cnns, heads = {}, []
        for fold in head["folds"]:
            k, c = fold["index"], emb_fold[fold["index"]]
            if c not in cnns:
                cnns[c] = [_StoredModel(cnn_group, f"models/cnn/{c}/{r}", _recorded(cnn_markers.get(c, {}), r), source,
                                        f"{r} CNN model of fold {c}", cnn_redo) for r in doc["regions"]]
            heads.append((k, c, _StoredModel(group, f"models/head/{k}", _recorded(head_markers.get(k, {}), "head"),
                                             run, f"head model of fold {k}", redo)))
    # Every model is checked before any is deserialised: a changed file is never handed to Keras.
    cnn_bytes = {c: [_read_checked(store, item) for item in items] for c, items in cnns.items()}
    head_bytes = [_read_checked(store, item) for _, _, item in heads]
    embedders = {c: [_load(item, data, embedding=True) for item, data in zip(cnns[c], cnn_bytes[c])] for c in cnns}
    loaded = [(k, c, _load(item, data)) for (k, c, item), data in zip(heads, head_bytes)]
    return Predictor(store, run, doc, head, embedders, loaded, landmarks_model, "final" if use_final else "folds")


class FlowPredictor:
    """A flow method's run (STSTNet), loaded once: face, onset-to-apex flow, every fold's network averaged.

    The new clip's onset is its first frame; its apex follows the run's flow set: the middle
    frame for ``middle``, else the frame of largest flow from the onset (a new clip has no
    annotated apex), as ``roistore flow --apex max-flow`` finds it.
    """

    def __init__(self, store, run: str, doc: dict, head: dict, nets: list, landmarks_model):
        self.store, self.run, self.doc, self.head = store, run, doc, head
        self.model = "folds"
        self._nets = nets
        self._work = CutSettings.of(store, landmarks_model, face=True)

    def predict(self, source: str | Path) -> dict:
        """Class probabilities of one clip (a frame folder or a video file), as :meth:`Predictor.predict`,
        with ``apex`` (the frame used and how it was chosen)."""
        from roi_store.ingest.flow import onset_apex_flow, search_apex
        from roi_store.method.ststnet import clip_input

        attrs = self.doc["settings"]["features_attrs"]
        with tempfile.TemporaryDirectory() as tmp:
            spec, video = _spec(Path(source), Path(tmp), self.store.t_max)
            blocks, meta = cut_clip(spec, self._work, name=str(source), video=video)
        n = meta["n_frames"]
        face_frames = blocks[-1][:n]  # the whole-face crop comes last
        if attrs.get("apex_rule") == "middle" or n < 2:
            apex, how = n // 2, "middle"
        else:
            apex, how = search_apex(face_frames, 0), "estimated"
        x = clip_input(onset_apex_flow(face_frames[0], face_frames[apex], attrs["size"], attrs["estimator"])[None])
        probs = [np.asarray(net.predict_on_batch(x))[0] for net in self._nets]
        mean = np.mean(probs, axis=0)
        classes = self.head["classes"]
        face = meta["face"]["frame"]
        return {"source": str(source), "run": self.run, "n_frames": n, "classes": classes,
                "probabilities": {c: round(float(p), 4) for c, p in zip(classes, mean)},
                "prediction": classes[int(np.argmax(mean))], "models": len(probs), "model": self.model,
                "face": {"frame": face, "time": round(face / spec.fps, 3) if video else None,
                         "file": None if video else spec.frames[face].name},
                "apex": {"onset": 0, "frame": int(apex), "source": how},
                "leakage": False, "warnings": meta["warnings"]}


def _flow_predictor(store, run: str, doc: dict, group: RunData, models: str, landmarks_model) -> FlowPredictor:
    s = doc["settings"]
    if models == "final":
        raise RoiStoreError(f"run {run!r} ({s['method']}) has no final model: predict averages its fold networks "
                            "(--models folds)")
    head = head_document(store, run)  # committed runs only
    markers = _checked_markers(store, run, "head")
    redo = (f"re-fit it with 'roistore fit {store.where} --run {run} --method {s['method']} --features "
            f"{s['features']} --overwrite'")
    items = [_StoredModel(group, f"models/head/{f['index']}", _recorded(markers.get(f["index"], {}), "head"), run,
                          f"{s['method']} model of fold {f['index']}", redo) for f in head["folds"]]
    data = [_read_checked(store, item) for item in items]  # every model checked before any is loaded
    return FlowPredictor(store, run, doc, head, [_load(item, d) for item, d in zip(items, data)], landmarks_model)


def predict_clip(store_path: str, run: str, source: str | Path, *, models: str = "auto",
                 landmarks_model: str | None = None, gpu: int | None = None, cpu: bool = False) -> dict:
    """Class probabilities of a new clip: face, regions, CNN embeddings and fusion head.

    See :func:`load_predictor` for ``models`` and :meth:`Predictor.predict` for the result. To
    predict many clips, load the models once with :func:`load_predictor`.
    """
    return load_predictor(store_path, run, models=models, landmarks_model=landmarks_model, gpu=gpu,
                          cpu=cpu).predict(source)
