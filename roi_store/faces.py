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


@functools.lru_cache(maxsize=4)
def _models(predictor: str):
    import dlib  # imported here: dlib is only needed by ingest and synth

    return dlib.get_frontal_face_detector(), dlib.shape_predictor(predictor)


def find_face(gray: np.ndarray, landmarks_model: str | Path | None = None, upsample: int = 1) -> Face | None:
    """Detect faces in a greyscale uint8 image and return the best one with its landmarks.

    Several faces: the largest wins, ties broken by detector score. None if no face is found.
    """
    import dlib

    model = str(landmarks_model) if landmarks_model else str(default_predictor_path())
    if not Path(model).is_file():
        raise FaceError(f"landmark model {model} does not exist: pass an existing --landmarks-model file")
    detector, predictor = _models(model)
    image = np.ascontiguousarray(gray, dtype=np.uint8)
    rects, scores, _ = detector.run(image, upsample, 0.0)
    if not rects:
        return None
    best = max(range(len(rects)), key=lambda i: (rects[i].area(), scores[i]))
    r = rects[best]
    shape = predictor(image, r)
    pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
    return Face(
        box=(r.left(), r.top(), r.right(), r.bottom()),
        score=float(scores[best]),
        landmarks=pts,
        n_faces=len(rects),
    )


def landmark_model_id(landmarks_model: str | Path | None) -> str:
    """A short, stable description of the landmark model for the store's records."""
    path = Path(landmarks_model) if landmarks_model else default_predictor_path()
    return path.name
