"""Where the six facial regions are cut, and the cutting itself.

Boxes are decided once per clip from the first frame's 68 landmarks, then the same boxes are cut
from every frame, so a micro-motion stays inside its box instead of being tracked away
(METHOD.md §4). The region layout is data (``roi_store/data/regions.json``), recorded in every
store; this module only interprets it.

A region's placement is a :class:`Cut`: a source rectangle in frame pixels, a rectangle outside
which the frame counts as black (the face box for the canvas schemes), and the region's fixed
output size.
"""

from __future__ import annotations

import dataclasses
import json
import math
from importlib import resources

import cv2
import numpy as np

from roi_store.errors import ConfigError
from roi_store.store.layout import FACE

#: A frame size larger than any frame: only the cuts themselves bound their window.
_ANY = 1 << 40


def default_layout() -> dict:
    """The packaged region layout (schemes, canvas, six regions with boxes and landmarks)."""
    return json.loads(resources.files("roi_store").joinpath("data/regions.json").read_text())


def check_scheme(scheme: str, layout: dict) -> None:
    """Raise :class:`ConfigError` unless ``layout`` offers the placement ``scheme``."""
    if scheme not in layout["schemes"]:
        raise ConfigError(
            f"invalid region scheme {scheme!r}: allowed values are {', '.join(sorted(layout['schemes']))}"
        )


@dataclasses.dataclass(frozen=True)
class Cut:
    """How one region is cut from a frame (all coordinates in the frame's pixels)."""

    name: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 of the source rectangle
    valid: tuple[float, float, float, float] | None  # pixels outside are black (None: whole frame)
    size: tuple[int, int]  # output width, height

    def scaled(self, factor: float) -> Cut:
        """The same cut for a frame decoded at 1/factor of full size."""
        f = 1.0 / factor
        return Cut(self.name, tuple(v * f for v in self.box),
                   None if self.valid is None else tuple(v * f for v in self.valid), self.size)


def region_size(region: dict) -> tuple[int, int]:
    x0, y0, x1, y1 = region["box"]
    return int(x1 - x0), int(y1 - y0)


def face_box(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """The authors' face box: x from point 17 to 26, y from min(18.y, 25.y) to 8.y."""
    x0, x1 = landmarks[17, 0], landmarks[26, 0]
    y0, y1 = min(landmarks[18, 1], landmarks[25, 1]), landmarks[8, 1]
    if x1 <= x0 or y1 <= y0:
        raise ConfigError("degenerate landmarks: the face box has no area")
    return float(x0), float(y0), float(x1), float(y1)


#: The whole-face crop of format 2 stores: its side in pixels, and the margin added on every side
#: of the 68 landmarks' bounding box (a fraction of its longer side). 112 px covers the flow
#: resolutions in use (28 to 112 px); the margin keeps the brows' and chin's motion inside.
FACE_SIZE, FACE_MARGIN = 112, 0.1


def face_cut(landmarks: np.ndarray, size: int = FACE_SIZE, margin: float = FACE_MARGIN) -> Cut:
    """The aligned whole-face crop: a square around the 68 landmarks of the clip's face frame.

    The same box is cut from every frame (as the regions are), so the face stays registered to
    its first frame and a micro-motion is not tracked away.
    """
    (x0, y0), (x1, y1) = landmarks.min(axis=0), landmarks.max(axis=0)
    side = max(x1 - x0, y1 - y0, 1.0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return Cut(FACE, (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), None, (int(size), int(size)))


def _landmark_cut(region: dict, landmarks: np.ndarray) -> Cut:
    w, h = region_size(region)
    pts = landmarks[region["landmarks"]]
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    bw, bh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    ml, mt, mr, mb = region["margin"]
    x0, x1 = x0 - ml * bw, x1 + mr * bw
    y0, y1 = y0 - mt * bh, y1 + mb * bh
    # Grow the short side so the source has the output's aspect ratio: no distortion.
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    bw, bh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    if bw / bh < w / h:
        bw = bh * w / h
    else:
        bh = bw * h / w
    return Cut(region["name"], (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2), None, (w, h))


def _canvas_cuts(layout: dict, landmarks: np.ndarray, centred: bool) -> list[Cut]:
    cw, ch = layout["canvas"]
    fx0, fy0, fx1, fy1 = face_box(landmarks)
    fw, fh = fx1 - fx0, fy1 - fy0
    s = min(cw / fw, ch / fh)  # "contain": the whole face fits the canvas
    ox = (cw - fw * s) / 2 if centred else 0.0
    oy = (ch - fh * s) / 2 if centred else 0.0
    cuts = []
    for region in layout["regions"]:
        bx0, by0, bx1, by1 = region["box"]
        box = (fx0 + (bx0 - ox) / s, fy0 + (by0 - oy) / s, fx0 + (bx1 - ox) / s, fy0 + (by1 - oy) / s)
        cuts.append(Cut(region["name"], box, (fx0, fy0, fx1, fy1), region_size(region)))
    return cuts


def plan_cuts(landmarks: np.ndarray, scheme: str, layout: dict | None = None) -> list[Cut]:
    """The six cuts of a clip, in frame pixels, from its first frame's landmarks.

    Parameters
    ----------
    landmarks : ndarray, shape (68, 2)
        x, y of the 68 points in full-resolution frame pixels.
    scheme : {"landmarks", "centred", "authors"}
        Box placement (see ``regions.json``).
    layout : dict, optional
        Region layout; the packaged default if omitted.
    """
    layout = layout or default_layout()
    check_scheme(scheme, layout)
    if scheme == "landmarks":
        return [_landmark_cut(r, landmarks) for r in layout["regions"]]
    return _canvas_cuts(layout, landmarks, centred=(scheme == "centred"))


def decode_factor(cuts: list[Cut]) -> int:
    """The largest JPEG reduction (1/2, 1/4, 1/8) that still never upsamples a region."""
    room = min(min((c.box[2] - c.box[0]) / c.size[0], (c.box[3] - c.box[1]) / c.size[1]) for c in cuts)
    return next((k for k in (8, 4, 2) if room >= k), 1)


def _span(c: Cut, h: int, w: int) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """The whole pixel rectangle of ``c`` and the part of it that is read from an (h, w) frame."""
    x0, y0 = math.floor(c.box[0]), math.floor(c.box[1])
    x1, y1 = max(math.ceil(c.box[2]), x0 + 1), max(math.ceil(c.box[3]), y0 + 1)
    vx0, vy0, vx1, vy1 = c.valid or (0, 0, w, h)
    read = (max(x0, 0, round(vx0)), max(y0, 0, round(vy0)), min(x1, w, round(vx1)), min(y1, h, round(vy1)))
    return (x0, y0, x1, y1), read


def source_window(cuts: list[Cut]) -> tuple[int, int, int, int] | None:
    """The smallest rectangle (x0, y0, x1, y1) holding every pixel the ``cuts`` read from a frame
    of any size (clip it to the frame); None if they read none (every ``valid`` box is empty)."""
    parts = [s for s in (_span(c, _ANY, _ANY)[1] for c in cuts) if s[2] > s[0] and s[3] > s[1]]
    if not parts:
        return None
    return (min(p[0] for p in parts), min(p[1] for p in parts), max(p[2] for p in parts), max(p[3] for p in parts))


def cut(frame: np.ndarray, c: Cut, origin: tuple[int, int] = (0, 0),
        shape: tuple[int, int] | None = None) -> np.ndarray:
    """Cut one region from a greyscale frame: black outside the frame (and ``valid``), resized.

    ``frame`` may be only a window of the frame: its top-left pixel is the frame's ``origin``
    (x, y) and the whole frame is ``shape`` (h, w); the window must hold
    :func:`source_window` of the clip's cuts.
    """
    h, w = shape or frame.shape
    (x0, y0, x1, y1), (sx0, sy0, sx1, sy1) = _span(c, h, w)
    ox, oy = origin
    if x0 == sx0 and y0 == sy0 and x1 == sx1 and y1 == sy1:
        src = frame[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
    else:
        src = np.zeros((y1 - y0, x1 - x0), dtype=frame.dtype)
        if sx1 > sx0 and sy1 > sy0:
            src[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = frame[sy0 - oy : sy1 - oy, sx0 - ox : sx1 - ox]
    out_w, out_h = c.size
    if src.shape == (out_h, out_w):
        return np.ascontiguousarray(src)
    interp = cv2.INTER_AREA if src.shape[1] > out_w else cv2.INTER_LINEAR
    return cv2.resize(src, (out_w, out_h), interpolation=interp)
