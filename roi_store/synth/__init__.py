"""Synthetic micro-expression datasets in the native layouts of CASME II, SAMM and SMIC-HS.

The licensed datasets cannot be shipped, so tests and demos run on look-alikes: real face photos
from installed packages (scikit-image's astronaut; the group photo and portrait that the
``insightface`` wheel ships, read as image files, the package is never imported), placed on a
background with per-subject appearance, and animated with small class-dependent motions around
the facial landmarks that rise from the onset to the apex and fade by the offset. Frames, folder
names, frame numbering and coding sheets follow the real datasets (see ``METHOD.md`` section 2),
quirks included, and ``synth.json`` beside them holds the ground truth.

:func:`plan` (:mod:`~roi_store.synth.planning`) decides what the annotations say (clips, emotions,
frame numbers, action units, the motion recipe) without touching pixels; :func:`generate` renders
the frames from the base faces (:mod:`~roi_store.synth.faces`) and writes the sheets
(:mod:`~roi_store.synth.sheets`). Both are deterministic for a given seed: every dataset, subject
and clip draws from its own random stream, keyed by name, so a clip looks the same whatever else
is generated beside it.

A clip's motion is a displacement field of Gaussian bumps around the landmarks, in face axes so
that flips and rotations carry it with the face, scaled by a raised cosine from the onset to the
apex and back by the offset; sensor noise is added to every frame.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np

from roi_store._version import __version__
from roi_store.errors import ConfigError
from roi_store.synth.faces import FaceSource, face_sources
from roi_store.synth.planning import ALL_DATASETS, CLASSES, PRESETS, TABLES, plan, stream, subject_ids
from roi_store.synth.sheets import write_casme2_sheet, write_samm_sheet

__all__ = ["ALL_DATASETS", "CLASSES", "GROUND_TRUTH", "PRESETS", "generate", "plan"]

#: The ground truth's file name, beside the datasets.
GROUND_TRUTH = "synth.json"
JPEG_QUALITY = 90

# iBUG 68-point mirror: index i of a face becomes _MIRROR[i] after a horizontal flip.
_MIRROR = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65]
)


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one dataset stores its frames (facts of the real datasets: ``METHOD.md`` section 2)."""

    fps: int
    size: tuple[int, int]  # width, height
    colour: bool
    root: str  # frame root, relative to the output folder
    folder: str  # clip folder under the root, a format string
    frame: str  # frame file name, a format string
    sheet: str | None  # coding sheet, relative to the output folder


LAYOUTS = {
    "casme2": Layout(200, (640, 480), True, "CASME2/CASME2_RAW_selected", "{subject}/{clip}",
                     "img{n}.jpg", "CASME2/CASME2-coding.xlsx"),
    "samm": Layout(200, (2040, 1088), False, "SAMM/SAMM", "{subject}/{clip}",
                   "{subject}_{n:05d}.jpg", "SAMM/SAMM_Micro_FACS_Codes_v2.xlsx"),
    "smic": Layout(100, (640, 480), True, "SMIC/HS", "{subject}/micro/{emotion}/{clip}",
                   "image{n:06d}.bmp", None),
}
_SHEET_WRITERS = {"casme2": write_casme2_sheet, "samm": write_samm_sheet}


def generate(
    out: Path,
    preset: str = "tiny",
    seed: int = 0,
    *,
    datasets: Iterable[str] = ALL_DATASETS,
    subjects: int | None = None,
    clips_per_class: int | None = None,
    frames: int | None = None,
    scale: float = 1.0,
    jobs: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write a synthetic dataset in the native layouts, with its ground truth.

    Writes, under ``out``:

    - ``CASME2/CASME2_RAW_selected/subNN/EPxx_yy[f]/imgK.jpg`` (640x480 colour JPEG, 200 fps)
      and ``CASME2/CASME2-coding.xlsx`` (one header row);
    - ``SAMM/SAMM/NNN/NNN_x_y/NNN_KKKKK.jpg`` (2040x1088 greyscale JPEG, 200 fps) and
      ``SAMM/SAMM_Micro_FACS_Codes_v2.xlsx`` (sheet ``MICRO_ONLY``, notes in rows 1-13,
      header in row 14, ``Duration`` as a formula);
    - ``SMIC/HS/sN/micro/<class>/sN_xx_NN/imageKKKKKK.bmp`` (640x480 colour BMP, 100 fps);
    - ``synth.json``: the ground truth (the returned dict).

    Parameters
    ----------
    out : Path
        Output folder; it must not exist or be empty.
    preset, seed, datasets, subjects, clips_per_class, frames, scale
        As for :func:`plan`.
    jobs : int
        Parallel worker processes (joblib); -1 uses every core.
    progress : callable, optional
        Called as ``progress(clips_done, clips_total)`` after each clip.

    Returns
    -------
    dict
        ``preset``, ``seed``, ``overrides``, ``faces`` (the base faces used), ``faces_note``
        (why fewer faces were available, or None), ``datasets`` (layout and counts per
        dataset), ``frames`` (total) and ``clips``: the rows of :func:`plan`, each with
        ``folder`` (relative to ``out``), ``face``, ``face_width_px`` and ``amplitude_px``
        (peak displacement in pixels).

    Raises
    ------
    ConfigError
        If an argument is not allowed or ``out`` is not empty.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"output folder {out} is not empty: name a new folder or remove it first")
    clips = plan(preset, seed, datasets=datasets, subjects=subjects, clips_per_class=clips_per_class,
                 frames=frames, scale=scale)
    faces, faces_note = face_sources()
    # Base faces go round in a fixed order over the subjects of every dataset, planned or not.
    order = [(d, s) for d, ids in subject_ids(preset, subjects).items() for s in ids]
    face_of = {key: faces[i % len(faces)] for i, key in enumerate(order)}
    for c in clips:
        c["folder"] = f"{LAYOUTS[c['dataset']].root}/{LAYOUTS[c['dataset']].folder.format(**c)}"
        c["face"] = face_of[c["dataset"], c["subject"]].name

    from joblib import Parallel, delayed

    tasks = (delayed(_render_clip)(out, c, face_of[c["dataset"], c["subject"]], seed) for c in clips)
    results = Parallel(n_jobs=jobs, return_as="generator")(tasks)
    for done, (clip, result) in enumerate(zip(clips, results, strict=True), start=1):
        clip.update(result)
        if progress is not None:
            progress(done, len(clips))

    summary = {}
    for dataset in dict.fromkeys(c["dataset"] for c in clips):
        rows = [c for c in clips if c["dataset"] == dataset]
        layout = LAYOUTS[dataset]
        if layout.sheet:
            _SHEET_WRITERS[dataset](out / layout.sheet, rows, seed)
        summary[dataset] = _dataset_summary(layout, rows)
    truth = {
        "generator": f"roistore {__version__} synth",
        "preset": preset,
        "seed": seed,
        "overrides": {"subjects": subjects, "clips_per_class": clips_per_class, "frames": frames, "scale": scale},
        "faces": [f.name for f in faces],
        "faces_note": faces_note,
        "datasets": summary,
        "frames": sum(c["n_frames"] for c in clips),
        "clips": clips,
    }
    (out / GROUND_TRUTH).write_text(json.dumps(truth, indent=1) + "\n")
    return truth


def _dataset_summary(layout: Layout, rows: list[dict]) -> dict:
    composite = [c for c in rows if c["label"] is not None]
    return {
        "root": layout.root,
        "sheet": layout.sheet,
        "fps": layout.fps,
        "size": list(layout.size),
        "colour": layout.colour,
        "file_type": Path(layout.frame).suffix,
        "clips": len(rows),
        "subjects": len({c["subject"] for c in rows}),
        "frames": sum(c["n_frames"] for c in rows),
        "emotions": dict(Counter(c["emotion"] for c in rows).most_common()),
        "composite": {
            **{k: sum(c["label"] == k for c in composite) for k in CLASSES},
            "clips": len(composite),
            "subjects": len({c["subject"] for c in composite}),
        },
    }


def _identity(dataset: str, subject: str, seed: int) -> dict:
    """A subject's appearance: pose, placement, lighting, tint, noise, background."""
    spec = TABLES["identity"]
    rng = stream(seed, "identity", dataset, subject)
    return {
        "flip": bool(rng.random() < 0.5),
        "face_width": float(rng.uniform(*spec["face_width"][dataset])),
        "rotation": float(rng.uniform(*spec["rotation_deg"])),
        "centre": [float(rng.uniform(-j, j)) for j in spec["centre_jitter"]],
        "contrast": float(rng.uniform(*spec["contrast"])),
        "brightness": float(rng.uniform(*spec["brightness"])),
        "tint": [float(rng.uniform(*spec["tint"])) for _ in range(3)],
        "noise": int(rng.integers(spec["noise"][0], spec["noise"][1] + 1)),
        "background": [[float(v) for v in rng.uniform(60, 200) + rng.uniform(-25, 25, 3)] for _ in range(2)],
        "background_angle": float(rng.uniform(0, 2 * math.pi)),
        "background_seed": int(rng.integers(2**31)),
    }


def _render_clip(out: Path, clip: dict, face: FaceSource, seed: int) -> dict:
    """Write one clip's frames; return what the ground truth records about its rendering."""
    layout = LAYOUTS[clip["dataset"]]
    identity = _identity(clip["dataset"], clip["subject"], seed)
    rng = stream(seed, "render", clip["id"])
    base, points, width = _compose(face, identity, layout, rng)
    k = identity["noise"]
    # Noise is added with a saturating add of values 0..2k: subtract its mean from the still once.
    base = cv2.subtract(base, np.full_like(base, k))
    spread = ((np.arange(256) * (2 * k + 1)) >> 8).astype(np.uint8)
    amplitude = clip["amplitude"] * width / 200.0
    (x0, y0, x1, y1), field = _displacement(points, clip["actions"], width, base.shape)
    field *= amplitude
    gy, gx = np.mgrid[0:y1 - y0, 0:x1 - x0].astype(np.float32)
    roi = base[y0:y1, x0:x1]

    folder = out / clip["folder"]
    folder.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if layout.frame.endswith(".jpg") else []
    peak = clip["motion_apex"] - clip["onset"]
    for i in range(clip["n_frames"]):
        # Random bytes through a lookup table: twice as fast as integers() on SAMM's frames.
        noise = cv2.LUT(np.frombuffer(rng.bytes(base.size), np.uint8).reshape(base.shape), spread)
        frame = cv2.add(base, noise)
        a = _profile(i, peak, clip["n_frames"] - 1)
        if a > 1e-4:
            moved = cv2.remap(roi, gx - a * field[0], gy - a * field[1], cv2.INTER_CUBIC,
                              borderMode=cv2.BORDER_REFLECT)
            frame[y0:y1, x0:x1] = cv2.add(moved, noise[y0:y1, x0:x1])
        path = folder / layout.frame.format(subject=clip["subject"], n=clip["onset"] + i)
        if not cv2.imwrite(str(path), frame, params):
            raise OSError(f"cannot write frame {path}")
    return {"face_width_px": round(width, 1), "amplitude_px": round(amplitude, 2)}


def _profile(i: int, peak: int, last: int) -> float:
    """Raised cosine: 0 at the onset, 1 at the apex, back to 0 at the offset."""
    if i <= peak:
        return 0.5 * (1 - math.cos(math.pi * i / peak))
    return 0.5 * (1 + math.cos(math.pi * (i - peak) / (last - peak)))


def _compose(face: FaceSource, identity: dict, layout: Layout, rng: np.random.Generator):
    """The clip's still frame (uint8), its 68 landmarks and the face width, in frame pixels."""
    spec = TABLES["identity"]
    width, height = layout.size
    image, points, mask = face.image, face.landmarks, face.mask
    if identity["flip"]:
        image, mask = image[:, ::-1], mask[:, ::-1]
        points = points[_MIRROR] * (-1, 1) + (image.shape[1] - 1, 0)
    if not layout.colour:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2GRAY)
    face_width = identity["face_width"]
    scale = face_width / np.linalg.norm(points[16] - points[0])
    angle = identity["rotation"] + rng.uniform(-1, 1) * spec["clip_rotation_deg"]
    source_centre = (points.min(0) + points.max(0)) / 2
    matrix = cv2.getRotationMatrix2D((float(source_centre[0]), float(source_centre[1])), angle, scale)
    placed = points @ matrix[:, :2].T + matrix[:, 2]
    shift = rng.uniform(-1, 1, 2) * spec["clip_shift"] * face_width
    target = np.array([width * (0.5 + identity["centre"][0]), height * (0.5 + identity["centre"][1])]) + shift
    low, high = placed.min(0) - source_centre, placed.max(0) - source_centre
    # Keep the whole face, some forehead and the chin inside the frame.
    lo_bound = np.array([0.08, 0.3]) * face_width - low
    hi_bound = np.array([width, height]) - np.array([0.08, 0.05]) * face_width - high
    target = np.where(lo_bound <= hi_bound, np.clip(target, lo_bound, hi_bound), (lo_bound + hi_bound) / 2)
    matrix[:, 2] += target - source_centre
    points = points @ matrix[:, :2].T + matrix[:, 2]

    # Warp the crop into its own bounding box only: SAMM's frames are mostly background.
    h, w = image.shape[:2]
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], np.float64) @ matrix[:, :2].T + matrix[:, 2]
    bx0, by0 = np.maximum(np.floor(corners.min(0)), 0).astype(int)
    bx1, by1 = np.minimum(np.ceil(corners.max(0)), (width, height)).astype(int)
    local = matrix.copy()
    local[:, 2] -= (bx0, by0)
    size = (int(bx1 - bx0), int(by1 - by0))
    warped = cv2.warpAffine(np.ascontiguousarray(image), local, size, flags=cv2.INTER_CUBIC,
                            borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    alpha = cv2.warpAffine(np.ascontiguousarray(mask), local, size, flags=cv2.INTER_LINEAR)
    warped = (warped - 128) * identity["contrast"] + 128 + identity["brightness"]
    frame = _background(identity, layout)
    if layout.colour:
        warped *= np.array(identity["tint"], np.float32)
        alpha = alpha[:, :, None]
    box = frame[by0:by1, bx0:bx1]
    frame[by0:by1, bx0:bx1] = alpha * warped + (1 - alpha) * box
    return np.clip(frame + 0.5, 0, 255).astype(np.uint8), points, float(face_width)


def _background(identity: dict, layout: Layout) -> np.ndarray:
    """A smooth two-colour gradient with low-frequency blotches (float32, the subject's room)."""
    width, height = layout.size
    rng = np.random.default_rng(identity["background_seed"])
    # Smooth by construction, so drawn at 1/8 scale and enlarged.
    sw, sh = width // 8, height // 8
    ys, xs = np.mgrid[0:sh, 0:sw].astype(np.float32)
    angle = identity["background_angle"]
    t = math.cos(angle) * xs / sw + math.sin(angle) * ys / sh
    t = ((t - t.min()) / max(float(t.max() - t.min()), 1e-6))[:, :, None]
    first, second = (np.array(c, np.float32) for c in identity["background"])
    if not layout.colour:
        first, second = first.mean(keepdims=True), second.mean(keepdims=True)
    blotches = cv2.resize(rng.normal(0, 8, (6, 8, first.size)).astype(np.float32), (sw, sh),
                          interpolation=cv2.INTER_CUBIC).reshape(sh, sw, first.size)
    small = first * (1 - t) + second * t + blotches
    background = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    return background if layout.colour else np.ascontiguousarray(background.reshape(height, width))


def _displacement(points: np.ndarray, actions: dict[str, float], face_width: float, shape):
    """The clip's displacement field at the apex, normalised to a peak of 1 pixel.

    Returns the face's region of interest (x0, y0, x1, y1), which holds all of the motion, and
    the field over it as an array (2, h, w): Gaussian bumps centred on landmarks, their vectors
    given in face axes, so that flips and rotations carry the motion with the face.
    """
    table = TABLES["actions"]
    pad = 0.3 * face_width
    x0, y0 = np.maximum(np.floor(points.min(0) - pad), 0).astype(int)
    x1 = int(min(math.ceil(points[:, 0].max() + pad), shape[1]))
    y1 = int(min(math.ceil(points[:, 1].max() + pad), shape[0]))
    field = np.zeros((2, y1 - y0, x1 - x0), np.float32)
    up = points[27] - points[8]
    up /= np.linalg.norm(up)
    right = np.array([-up[1], up[0]])
    midline = points[27:31].mean(0)
    for action, weight in actions.items():
        for bump in table[action]["bumps"]:
            sigma = bump["sigma"] * face_width
            reach = 3.5 * sigma
            for p in bump["points"]:
                centre = points[p].mean(0) if isinstance(p, list) else points[p]
                side = float(np.dot(centre - midline, right))
                side = 0.0 if abs(side) < 0.02 * face_width else math.copysign(1.0, side)
                vector = weight * (bump["out"] * side * right + bump["up"] * up)
                cx, cy = centre[0] - x0, centre[1] - y0
                bx0, by0 = max(0, int(cx - reach)), max(0, int(cy - reach))
                bx1, by1 = min(field.shape[2], int(cx + reach) + 1), min(field.shape[1], int(cy + reach) + 1)
                if bx0 >= bx1 or by0 >= by1:
                    continue
                ys, xs = np.mgrid[by0:by1, bx0:bx1].astype(np.float32)
                g = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
                field[0, by0:by1, bx0:bx1] += vector[0] * g
                field[1, by0:by1, bx0:bx1] += vector[1] * g
    magnitude = np.hypot(field[0], field[1])
    peak = float(magnitude.max())
    if peak == 0:
        return (int(x0), int(y0), int(x0), int(y0)), field[:, :0, :0]
    # Remap only where something moves (a thousandth of the peak is far below a grey level).
    rows = np.flatnonzero(magnitude.max(1) > 1e-3 * peak)
    cols = np.flatnonzero(magnitude.max(0) > 1e-3 * peak)
    field = np.ascontiguousarray(field[:, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]) / peak
    return (int(x0 + cols[0]), int(y0 + rows[0]), int(x0 + cols[-1] + 1), int(y0 + rows[-1] + 1)), field
