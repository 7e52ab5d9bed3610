"""The base faces subjects are made from: real photos shipped with installed packages.

Each face is cut from its photo with hair, chin and some neck, levelled, and given the 68
landmarks the ingest's predictor finds on it and a soft mask of the head.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
from pathlib import Path

import cv2
import numpy as np

from roi_store.errors import FaceError
from roi_store.ingest.faces import default_predictor_path, find_face

__all__ = ["FaceSource", "face_sources", "load_face_sources"]


@dataclasses.dataclass(frozen=True)
class FaceSource:
    """A face cut from a photo with a generous margin, its landmarks and a soft head mask."""

    name: str
    image: np.ndarray  # BGR uint8
    landmarks: np.ndarray  # (68, 2), crop coordinates
    mask: np.ndarray  # float32 in [0, 1]: head, hair and neck


def load_face_sources() -> tuple[tuple[FaceSource, ...], str | None]:
    """Every face available from installed packages, and a note on what is missing.

    Returns
    -------
    faces : tuple of FaceSource
        scikit-image's astronaut first, then, when the ``insightface`` wheel is installed, each
        face of its group photo (left to right) and its portrait. The wheel's image files are
        read; the package is never imported.
    note : str or None
        Why only the astronaut is available, or None when every face is.

    Raises
    ------
    FaceError
        If no face is found in a packaged photo.
    """
    import skimage.data

    astronaut = np.ascontiguousarray(skimage.data.astronaut()[:, :, ::-1])
    faces = [_single_face("skimage:astronaut", astronaut)]
    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        return tuple(faces), "insightface is not installed: every subject uses the astronaut face"
    images = Path(next(iter(spec.submodule_search_locations))) / "data" / "images"
    group = cv2.imread(str(images / "t1.jpg"), cv2.IMREAD_COLOR)
    portrait = cv2.imread(str(images / "Tom_Hanks_54745.png"), cv2.IMREAD_COLOR)
    if group is None or portrait is None:
        return tuple(faces), f"insightface's sample images are missing from {images}: astronaut only"
    faces += _group_faces("insightface:t1", group)
    faces.append(_single_face("insightface:Tom_Hanks_54745", portrait))
    return tuple(faces), None


#: :func:`load_face_sources`, cut once per process: every clip of a subject shares them.
face_sources = functools.cache(load_face_sources)


def _single_face(name: str, image: np.ndarray) -> FaceSource:
    face = find_face(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    if face is None:
        raise FaceError(f"no face found in the packaged photo {name}: reinstall the package that ships it")
    return _cut(name, image, face.landmarks)


def _group_faces(name: str, image: np.ndarray) -> list[FaceSource]:
    # find_face keeps the best face only; the group photo is worth all of them.
    import dlib

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(default_predictor_path()))
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    rects, _, _ = detector.run(gray, 0, 0.0)
    faces = []
    for i, rect in enumerate(sorted(rects, key=lambda r: (r.left(), r.top()))):
        points = np.array([(p.x, p.y) for p in predictor(gray, rect).parts()], dtype=np.float64)
        faces.append(_cut(f"{name}#{i}", image, points))
    return faces


def _cut(name: str, image: np.ndarray, points: np.ndarray) -> FaceSource:
    """Level the eyes, crop hair, chin and some neck around the face, draw the head's soft mask."""
    eyes = points[42:48].mean(0) - points[36:42].mean(0)
    centre = points.mean(0)
    # Upright like the datasets' seated participants; the subjects' own tilt is added later.
    matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])),
                                     math.degrees(math.atan2(eyes[1], eyes[0])), 1.0)
    image = cv2.warpAffine(image, matrix, (image.shape[1], image.shape[0]), flags=cv2.INTER_CUBIC,
                           borderMode=cv2.BORDER_REPLICATE)
    points = points @ matrix[:, :2].T + matrix[:, 2]
    width = points[16, 0] - points[0, 0]
    cx = (points[0, 0] + points[16, 0]) / 2
    brow, chin = min(points[19, 1], points[24, 1]), points[8, 1]
    h, w = image.shape[:2]
    x0, x1 = max(0, round(cx - 1.0 * width)), min(w, round(cx + 1.0 * width))
    y0, y1 = max(0, round(brow - 0.8 * width)), min(h, round(chin + 0.5 * width))
    crop = np.ascontiguousarray(image[y0:y1, x0:x1])
    pts = points - (x0, y0)
    cx, brow, chin = cx - x0, brow - y0, chin - y0

    rows, cols = np.arange(crop.shape[0], dtype=np.float32), np.arange(crop.shape[1], dtype=np.float32)
    mask = np.zeros(crop.shape[:2], np.float32)
    top, bottom = brow - 0.55 * width, chin + 0.06 * width
    cv2.ellipse(mask, (round(cx), round((top + bottom) / 2)), (round(0.6 * width), round((bottom - top) / 2)),
                0, 0, 360, 1.0, -1)
    neck = np.clip(1 - (rows - chin) / (0.45 * width), 0, 1)[:, None] * (np.abs(cols - cx) < 0.3 * width)
    mask = np.maximum(mask, neck.astype(np.float32))
    # Taper towards the crop's own edges, where a tight crop would leave a hard seam.
    edge = max(2.0, 0.06 * width)
    ramp_y = np.clip(np.minimum(rows, rows[::-1]) / edge, 0, 1)
    ramp_x = np.clip(np.minimum(cols, cols[::-1]) / edge, 0, 1)
    mask = cv2.GaussianBlur(mask, (0, 0), 0.05 * width) * ramp_y[:, None] * ramp_x[None, :]
    return FaceSource(name, crop, pts, mask.astype(np.float32))
