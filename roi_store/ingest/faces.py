"""Face detection and 68-point landmarks (dlib HOG detector + shape predictor).

The 68-point predictor ships inside the ``face-recognition-models`` package; it is located
with :mod:`importlib` (its own helper imports ``pkg_resources``, which recent setuptools
removed). The model was trained on iBUG 300-W, whose licence excludes commercial use; pass
another predictor file with ``landmarks_model`` / ``--landmarks-model``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from pathlib import Path

import numpy as np

from roi_store.errors import FaceError

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
#: Detection passes, cheapest first: (longest image side, dlib upsampling). Faces in ME data
#: fill much of the frame, so a small image usually suffices; the landmarks are then fitted on
#: the full-resolution image, so precision does not depend on the pass that found the face.
DETECT_PASSES = ((400, 0), (800, 0), (800, 1))


def default_predictor_path() -> Path:
    """Path of the 68-point predictor inside the installed ``face_recognition_models``.

    Raises
    ------
    FaceError
        If the package is not installed.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FaceError(
            "the 68-point landmark model is missing: install 'face-recognition-models' "
            "or pass --landmarks-model PATH"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / PREDICTOR_FILE
    if not path.is_file():
        raise FaceError(f"landmark model not found at {path}: reinstall 'face-recognition-models'")
    return path


@dataclasses.dataclass(frozen=True)
class Face:
    """One detected face: box (left, top, right, bottom), detector score, 68 landmarks (x, y)."""

    box: tuple[int, int, int, int]
    score: float
    landmarks: np.ndarray  # (68, 2) float64, image coordinates
    n_faces: int  # how many faces the detector saw in the image


@functools.cache
def _models(predictor: str):
    """The detector and the landmark model of ``predictor``, loaded once per process.

    Building dlib's detector takes about half a second (it is decoded from a string compiled
    into dlib): once per process, and forked workers inherit it (:func:`preload`).
    """
    import dlib  # imported here: dlib is only needed by ingest and synth

    return dlib.get_frontal_face_detector(), dlib.shape_predictor(predictor)


def _model_path(landmarks_model: str | Path | None) -> str:
    return str(landmarks_model or default_predictor_path())


def preload(landmarks_model: str | Path | None = None) -> None:
    """Load the detector and the landmark model now (worker processes forked after this share them)."""
    model = _model_path(landmarks_model)
    if Path(model).is_file():
        _models(model)


def find_face(gray: np.ndarray, landmarks_model: str | Path | None = None, upsample: int | None = None) -> Face | None:
    """Detect faces in a greyscale uint8 image and return the best one with its 68 landmarks.

    Passes run cheapest first until one finds a face. Several faces: the largest wins, ties
    broken by detector score. None if no pass finds a face. ``upsample`` replaces the passes by
    one full-resolution pass with that much upsampling.
    """
    import cv2
    import dlib

    model = _model_path(landmarks_model)
    if not Path(model).is_file():
        raise FaceError(f"landmark model {model} does not exist: pass an existing --landmarks-model file")
    detector, predictor = _models(model)
    image = np.ascontiguousarray(gray, dtype=np.uint8)
    passes = DETECT_PASSES if upsample is None else ((max(image.shape), upsample),)
    for side, upsample in passes:
        scale = max(1.0, max(image.shape) / side)
        # max(1, ...): a sliver of a frame (1 x 5000) must shrink to a pixel, not to an empty image.
        small = image if scale == 1.0 else cv2.resize(
            image, (max(1, round(image.shape[1] / scale)), max(1, round(image.shape[0] / scale))),
            interpolation=cv2.INTER_AREA)
        rects, scores, _ = detector.run(small, upsample, 0.0)
        if rects:
            break
    else:
        return None
    best = max(range(len(rects)), key=lambda i: (rects[i].area(), scores[i]))
    r = rects[best]
    box = tuple(int(round(v * scale)) for v in (r.left(), r.top(), r.right(), r.bottom()))
    shape = predictor(image, dlib.rectangle(*box))
    pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
    return Face(box=box, score=float(scores[best]), landmarks=pts, n_faces=len(rects))


def landmark_model_id(landmarks_model: str | Path | None) -> str:
    """A short, stable description of the landmark model for the store's records."""
    return Path(_model_path(landmarks_model)).name
