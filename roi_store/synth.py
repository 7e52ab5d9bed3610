"""Synthetic micro-expression datasets in the native layouts of CASME II, SAMM and SMIC-HS.

The licensed datasets cannot be shipped, so tests and demos run on look-alikes: real face photos
from installed packages (scikit-image's astronaut; the group photo and portrait that the
``insightface`` wheel ships, read as image files, the package is never imported), placed on a
background with per-subject appearance, and animated with small class-dependent motions around
the facial landmarks that rise from the onset to the apex and fade by the offset. Frames, folder
names, frame numbering and coding sheets follow the real datasets (see ``METHOD.md`` section 2),
quirks included, and ``synth.json`` beside them holds the ground truth.

:func:`plan` decides what the annotations say (clips, emotions, frame numbers, action units, the
motion recipe) without touching pixels; :func:`generate` renders the frames and writes the sheets.
Both are deterministic for a given seed: every dataset, subject and clip draws from its own
random stream, keyed by name, so a clip looks the same whatever else is generated beside it.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import importlib.util
import io
import json
import math
import re
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from roi_store._version import __version__
from roi_store.errors import ConfigError, FaceError
from roi_store.ingest.faces import default_predictor_path, find_face
from roi_store.ids import ClipKey, normalise_subject
from roi_store.store.labels import MEGC2019, default_views, view_label

__all__ = ["ALL_DATASETS", "PRESETS", "generate", "plan"]

ALL_DATASETS = ("casme2", "samm", "smic")
CLASSES = ("negative", "positive", "surprise")
GROUND_TRUTH = "synth.json"
JPEG_QUALITY = 90


@dataclasses.dataclass(frozen=True)
class _Layout:
    """How one dataset stores its frames (facts of the real datasets)."""

    fps: int
    size: tuple[int, int]  # width, height
    colour: bool
    root: str  # frame root, relative to the output folder
    folder: str  # clip folder under the root, a format string
    frame: str  # frame file name, a format string
    sheet: str | None  # coding sheet, relative to the output folder


_LAYOUTS = {
    "casme2": _Layout(200, (640, 480), True, "CASME2/CASME2_RAW_selected", "{subject}/{clip}",
                      "img{n}.jpg", "CASME2/CASME2-coding.xlsx"),
    "samm": _Layout(200, (2040, 1088), False, "SAMM/SAMM", "{subject}/{clip}",
                    "{subject}_{n:05d}.jpg", "SAMM/SAMM_Micro_FACS_Codes_v2.xlsx"),
    "smic": _Layout(100, (640, 480), True, "SMIC/HS", "{subject}/micro/{emotion}/{clip}",
                    "image{n:06d}.bmp", None),
}
_SMIC_ABBREV = {"negative": "ne", "positive": "po", "surprise": "sur"}

_CASME2_HEADER = ["Subject", "Filename", None, "OnsetFrame", "ApexFrame", "OffsetFrame", None,
                  "Action Units", "Estimated Emotion", "Objective Classes"]
_SAMM_HEADER = ["Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame",
                "Duration", "Micro", "Action Units", "Estimated Emotion", "Objective Classes", "Notes"]
_SAMM_HEADER_ROW = 14
_SAMM_NOTES = [
    "SAMM micro-movement FACS codes: SYNTHETIC look-alike written by roistore synth",
    "Frames are numbered as in the video they were cut from.",
    "Onset, Apex and Offset are absolute frame numbers.",
    "Duration counts frames from the onset to the offset, both included.",
    "Action Units: L = left, R = right, A = asymmetric; 'or' and '/' give alternatives.",
    "Estimated Emotion is the coders' estimate from the AUs and the inducement.",
    "Objective Classes follow Davison et al. (2018).",
    "Inducement Code is the stimulus number.",
    None,
    "Faces: real photographs shipped with scikit-image and insightface, animated synthetically.",
    "Ground truth: synth.json in the generated folder.",
    None,
    "MICRO_ONLY: micro-movements only.",
]
_SAMM_CLIP_NOTES = ["Blink", "Head movement", "Eye gaze change", "Mouth movement before onset"]
# Fixed workbook dates and zip entry times, so that the same seed gives byte-identical sheets.
_SHEET_TIME = datetime.datetime(2019, 7, 1)
_ZIP_TIME = (2019, 7, 1, 0, 0, 0)

# iBUG 68-point mirror: index i of a face becomes _MIRROR[i] after a horizontal flip.
_MIRROR = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65]
)


@functools.lru_cache(maxsize=1)
def _config() -> dict:
    return json.loads(resources.files("roi_store").joinpath("data/synth_presets.json").read_text())


#: The preset names :func:`generate` and :func:`plan` accept.
PRESETS = tuple(_config()["presets"])


def _key(*parts: object) -> int:
    return zlib.crc32("/".join(str(p) for p in parts).encode())


def _rng(seed: int, *parts: object) -> np.random.Generator:
    """A random stream of its own for ``parts`` (e.g. ``"render", clip_id``) under ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_key(*parts),)))


# --------------------------------------------------------------------------------------------
# Plan: what the annotations say
# --------------------------------------------------------------------------------------------


def plan(
    preset: str = "tiny",
    seed: int = 0,
    *,
    datasets: Iterable[str] = ALL_DATASETS,
    subjects: int | None = None,
    clips_per_class: int | None = None,
    frames: int | None = None,
    scale: float = 1.0,
) -> list[dict]:
    """The clip table of a synthetic dataset, without rendering a frame.

    Parameters
    ----------
    preset : str
        ``"tiny"`` (balanced, a few subjects, short clips) or ``"megc2019"`` (the real clip
        counts, emotions, subjects and quirks behind the MEGC 2019 composite).
    seed : int
        Seed; the same seed gives the same table.
    datasets : iterable of str
        Which of ``casme2``, ``samm``, ``smic`` to plan.
    subjects, clips_per_class : int, optional
        Override the preset with a balanced table: the first ``subjects`` subject ids of each
        dataset, ``clips_per_class`` clips of each class per subject, plus the preset's extra
        excluded clips (tiny: one "others"/"Other" clip in CASME II and SAMM).
    frames : int, optional
        Every clip gets exactly this many frames (at least 3).
    scale : float
        Keep a seeded random share of the clips (0 < scale <= 1), e.g. to benchmark on a
        quarter of the composite; 1 keeps the preset's exact shape.

    Returns
    -------
    list of dict
        One dict per clip: ``id``, ``dataset``, ``subject``, ``clip``, ``emotion`` (as the
        dataset writes it), ``label`` (MEGC 2019 class, None when the composite excludes the
        clip), ``onset``, ``apex`` (as the sheet writes it: an int, or ``"/"``), ``offset``,
        ``motion_apex`` (the frame where the motion peaks), ``n_frames``, ``aus`` (as the sheet
        writes it), ``objective_class``, ``actions`` (facial action -> weight), ``amplitude``
        (peak displacement in pixels on a face 200 px wide) and ``quirk`` (None or a name).

    Raises
    ------
    ConfigError
        If the preset, a dataset name or an override is not allowed.
    """
    cfg = _config()
    spec = _preset(preset)
    names = _check_datasets(datasets)
    for name, value, low in (("subjects", subjects, 1), ("clips_per_class", clips_per_class, 1),
                             ("frames", frames, 3)):
        if value is not None and (not isinstance(value, int) or value < low):
            raise ConfigError(f"invalid value for {name!r}: expected an integer >= {low}, got {value!r}")
    balanced = spec["mode"] == "balanced" or subjects is not None or clips_per_class is not None
    view = default_views()[MEGC2019]
    clips: list[dict] = []
    for dataset in names:
        rng = _rng(seed, "plan", dataset)
        if balanced:
            entries = _balanced_entries(
                dataset,
                _subject_ids(dataset, subjects or spec.get("subjects", len(cfg["subjects"][dataset]))),
                clips_per_class or spec.get("clips_per_class", 1),
                spec.get("excluded_extra", {}).get(dataset, []),
                rng,
            )
        else:
            entries = _counted_entries(dataset, spec["datasets"][dataset], rng)
        clips += _realise(dataset, entries, frames if frames is not None else spec.get("frames"),
                          spec["amplitude_px"], view, rng)
    if scale != 1.0:
        if not 0.0 < scale <= 1.0:
            raise ConfigError(f"invalid value for 'scale': expected 0 < scale <= 1, got {scale!r}")
        keep = _rng(seed, "scale").random(len(clips)) < scale
        clips = [c for c, k in zip(clips, keep) if k]
    return clips


def _preset(name: str) -> dict:
    presets = _config()["presets"]
    if name not in presets:
        raise ConfigError(f"invalid preset {name!r}: allowed values are {', '.join(presets)}")
    return presets[name]


def _check_datasets(datasets: Iterable[str]) -> list[str]:
    names = [datasets] if isinstance(datasets, str) else list(datasets)
    for name in names:
        if name not in _LAYOUTS:
            raise ConfigError(f"invalid dataset {name!r}: allowed values are {', '.join(ALL_DATASETS)}")
    if not names:
        raise ConfigError("no dataset to generate: name at least one of " + ", ".join(ALL_DATASETS))
    return [d for d in ALL_DATASETS if d in names]


def _subject_ids(dataset: str, n: int) -> list[str]:
    """The first ``n`` subject ids of ``dataset``, continuing the real numbering past its end."""
    ids = list(_config()["subjects"][dataset][:n])
    number = int(re.sub(r"\D", "", ids[-1]))
    while len(ids) < n:
        number += 1
        ids.append(normalise_subject(dataset, number))
    return ids


def _balanced_entries(dataset, subject_ids, per_class, extra, rng) -> list[dict]:
    table = _config()["emotions"][dataset]
    entries = [
        {"subject": s, "emotion": str(rng.choice(table[c]))}
        for s in subject_ids for c in CLASSES for _ in range(per_class)
    ]
    entries += [{"subject": subject_ids[int(rng.integers(len(subject_ids)))], "emotion": e} for e in extra]
    return entries


def _counted_entries(dataset: str, spec: dict, rng: np.random.Generator) -> list[dict]:
    """Spread the preset's emotion counts over the subjects, keeping the composite's subjects.

    Every subject outside ``only_excluded`` gets one composite clip first, every subject in it
    one excluded clip first; the rest follow per-subject weights, so counts vary by subject as
    in the real data.
    """
    ids = _config()["subjects"][dataset]
    excluded = set(_config()["emotions"][dataset]["excluded"])
    entries = [dict(e) for e in spec["named"]]
    left = Counter(spec["counts"])
    left.subtract(e["emotion"] for e in entries)
    pool = list(rng.permutation(sorted(left.elements())))
    composite = [str(e) for e in pool if e not in excluded]
    others = [str(e) for e in pool if e in excluded]
    only = [s for s in ids if s in spec["only_excluded"]]
    eligible = [s for s in ids if s not in spec["only_excluded"]]
    weights = dict(zip(ids, rng.gamma(2.0, 1.0, len(ids)), strict=True))

    def spread(emotions: list[str], first: list[str], among: list[str]) -> None:
        p = np.array([weights[s] for s in among])
        for i, emotion in enumerate(emotions):
            subject = first[i] if i < len(first) else among[int(rng.choice(len(among), p=p / p.sum()))]
            entries.append({"subject": subject, "emotion": emotion})

    spread(composite, eligible, eligible)
    spread(others, only, ids)
    return entries


def _realise(dataset, entries, frames, amplitude_px, view, rng) -> list[dict]:
    """Name the clips and draw their frame numbers, apex, action units and motion."""
    used: dict[str, set] = {}
    for clip_id in view["datasets"].get(dataset, {}).get("exclude", {}):
        # Never give an ordinary clip a name the composite's rules single out.
        key = ClipKey.parse(clip_id)
        used.setdefault(key.subject, set()).add(_clip_slot(dataset, key.clip))
    clips = []
    for entry in entries:
        subject, emotion = entry["subject"], entry["emotion"]
        name = entry.get("clip") or _clip_name(dataset, subject, emotion, used.setdefault(subject, set()), rng)
        used.setdefault(subject, set()).add(_clip_slot(dataset, name))
        n = _clip_length(dataset, frames, rng)
        onset = _first_frame(dataset, n, rng)
        peak = onset + int(np.clip(round(rng.uniform(0.3, 0.6) * (n - 1)), 1, n - 2))
        quirk = entry.get("quirk")
        apex = {"apex-slash": "/", "apex-equals-onset": onset}.get(quirk, peak)
        actions, scale, objective = _recipe(emotion, rng)
        key = ClipKey.make(dataset, subject, name)
        clips.append({
            "id": key.id, "dataset": dataset, "subject": subject, "clip": name, "emotion": emotion,
            "label": view_label(view, key, emotion)[0],
            "onset": onset, "apex": apex, "offset": onset + n - 1, "motion_apex": peak, "n_frames": n,
            "aus": _au_code(actions, rng), "objective_class": objective,
            "actions": {a: round(w, 4) for a, w in actions.items()},
            "amplitude": round(float(rng.uniform(*amplitude_px)) * scale, 4),
            "quirk": quirk,
        })
    return sorted(clips, key=lambda c: (int(re.sub(r"\D", "", c["subject"])), c["clip"]))


def _clip_slot(dataset: str, name: str) -> tuple:
    """What two clip names of one subject must not share (EP07_01 and EP07_01f are one slot)."""
    if dataset == "casme2":
        m = re.fullmatch(r"EP(\d+)_(\d+)f?", name)
        return (int(m.group(1)), int(m.group(2))) if m else (name,)
    return (name,)


def _clip_name(dataset: str, subject: str, emotion: str, used: set, rng: np.random.Generator) -> str:
    def first_free(make) -> str:
        k = 1
        while _clip_slot(dataset, make(k)) in used:
            k += 1
        return make(k)

    if dataset == "casme2":
        episode = int(rng.integers(1, 20))
        suffix = "f" if rng.random() < 0.6 else ""
        return first_free(lambda k: f"EP{episode:02d}_{k:02d}{suffix}")
    if dataset == "samm":
        stimulus = int(rng.integers(1, 8))
        return first_free(lambda k: f"{subject}_{stimulus}_{k}")
    return first_free(lambda k: f"{subject}_{_SMIC_ABBREV[emotion]}_{k:02d}")


def _clip_length(dataset: str, frames, rng: np.random.Generator) -> int:
    if isinstance(frames, int):
        return frames
    if frames is not None:
        return int(rng.integers(frames[0], frames[1] + 1))
    low, high, mean = _config()["clip_frames"][dataset]
    # A beta law on [low, high] with the real mean: skewed towards short clips, as the data are.
    m = (mean - low) / (high - low)
    a = 2.5
    return low + round((high - low) * rng.beta(a, a * (1 - m) / m))


def _first_frame(dataset: str, n: int, rng: np.random.Generator) -> int:
    spec = _config()["frame_numbers"][dataset]
    if rng.random() < spec["cross_digit_boundary"]:
        boundary = 100 if rng.random() < 0.7 else 1000
        return int(rng.integers(max(1, boundary - n + 1), boundary))
    while True:
        first = int(rng.integers(spec["first"][0], spec["first"][1] + 1))
        if len(str(first)) == len(str(first + n - 1)):
            return first


def _recipe(emotion: str, rng: np.random.Generator) -> tuple[dict[str, float], float, int]:
    """(action -> weight, amplitude scale, objective class) for one clip of ``emotion``."""
    recipes = _config()["recipes"]
    name = emotion.lower()
    recipe = recipes["other" if name in ("other", "others") else name]
    if "mixture" in recipe:
        # Weak and varied on purpose: these clips are left out of the composite, and must not
        # be a fourth, trivially separable pattern.
        mix = recipe["mixture"]
        if rng.random() < mix["blink"]:
            return {"blink": 1.0}, mix["amplitude"], recipe["objective_class"]
        pool = sorted(a for a in _config()["actions"] if a != "blink")
        chosen = rng.choice(pool, size=mix["actions"], replace=False)
        actions = {str(a): float(rng.uniform(*mix["weight"])) for a in chosen}
        return actions, mix["amplitude"], recipe["objective_class"]
    actions = {a: w * float(rng.uniform(0.8, 1.2)) for a, w in recipe["actions"].items()}
    return actions, 1.0, recipe["objective_class"]


def _au_code(actions: dict[str, float], rng: np.random.Generator) -> int | str:
    """The AU cell for a clip: an integer for one plain AU (as Excel stores it), else a string."""
    table = _config()["actions"]
    parts = [str(rng.choice(table[a]["au"])) for a, w in actions.items() if w >= _config()["au_weight"]]
    parts = parts or [str(rng.choice(table[max(actions, key=actions.get)]["au"]))]
    parts.sort(key=lambda p: int(re.search(r"\d+", p).group()))
    code = "+".join(parts)
    return int(code) if code.isdigit() else code


# --------------------------------------------------------------------------------------------
# Faces
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _FaceSource:
    """A face cut from a photo with a generous margin, its landmarks and a soft head mask."""

    name: str
    image: np.ndarray  # BGR uint8
    landmarks: np.ndarray  # (68, 2), crop coordinates
    mask: np.ndarray  # float32 in [0, 1]: head, hair and neck


@functools.lru_cache(maxsize=1)
def _face_sources() -> tuple[tuple[_FaceSource, ...], str | None]:
    """Every face available from installed packages, and a note on what is missing."""
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


def _single_face(name: str, image: np.ndarray) -> _FaceSource:
    face = find_face(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    if face is None:
        raise FaceError(f"no face found in the packaged photo {name}: reinstall the package that ships it")
    return _cut(name, image, face.landmarks)


def _group_faces(name: str, image: np.ndarray) -> list[_FaceSource]:
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


def _cut(name: str, image: np.ndarray, points: np.ndarray) -> _FaceSource:
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
    return _FaceSource(name, crop, pts, mask.astype(np.float32))


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _identity(dataset: str, subject: str, face: int, seed: int) -> dict:
    """A subject's appearance: base face, pose, placement, lighting, tint, noise, background."""
    spec = _config()["identity"]
    rng = _rng(seed, "identity", dataset, subject)
    return {
        "face": face,
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


def _render_clip(out: Path, clip: dict, identity: dict, face: _FaceSource, seed: int) -> dict:
    """Write one clip's frames; return what the ground truth records about its rendering."""
    layout = _LAYOUTS[clip["dataset"]]
    rng = _rng(seed, "render", clip["id"])
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


def _compose(face: _FaceSource, identity: dict, layout: _Layout, rng: np.random.Generator):
    """The clip's still frame (uint8), its 68 landmarks and the face width, in frame pixels."""
    spec = _config()["identity"]
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


def _background(identity: dict, layout: _Layout) -> np.ndarray:
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
    table = _config()["actions"]
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


# --------------------------------------------------------------------------------------------
# Sheets
# --------------------------------------------------------------------------------------------


def _write_casme2_sheet(path: Path, clips: list[dict], seed: int) -> None:
    from openpyxl import Workbook

    rng = _rng(seed, "sheet", "casme2")
    book = Workbook()
    sheet = book.active
    sheet.title = "Sheet1"
    sheet.append(_CASME2_HEADER)
    for c in clips:
        number = int(c["subject"][3:])
        # Published versions write the subject as text "01" or as the number 1: use both.
        subject = f"{number:02d}" if rng.random() < 0.5 else number
        sheet.append([subject, c["clip"], None, c["onset"], c["apex"], c["offset"], None, c["aus"],
                      c["emotion"], c["objective_class"]])
    _save_workbook(book, path)


def _write_samm_sheet(path: Path, clips: list[dict], seed: int) -> None:
    from openpyxl import Workbook

    rng = _rng(seed, "sheet", "samm")
    book = Workbook()
    sheet = book.active
    sheet.title = "MICRO_ONLY"
    for row, note in enumerate(_SAMM_NOTES, start=1):
        sheet.cell(row=row, column=1, value=note)
    for column, name in enumerate(_SAMM_HEADER, start=1):
        sheet.cell(row=_SAMM_HEADER_ROW, column=column, value=name)
    for row, c in enumerate(clips, start=_SAMM_HEADER_ROW + 1):
        note = str(rng.choice(_SAMM_CLIP_NOTES)) if rng.random() < 0.15 else None
        values = [c["subject"], c["clip"], int(c["clip"].split("_")[1]), c["onset"], c["apex"], c["offset"],
                  f"=F{row}-D{row}+1", "Micro - 1/2", c["aus"], c["emotion"], c["objective_class"], note]
        for column, value in enumerate(values, start=1):
            sheet.cell(row=row, column=column, value=value)
    _save_workbook(book, path)


def _save_workbook(book, path: Path) -> None:
    """Save with fixed dates and zip times: openpyxl stamps the current time into both."""
    book.properties.created = _SHEET_TIME
    buffer = io.BytesIO()
    book.save(buffer)
    stamp = _SHEET_TIME.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == "docProps/core.xml":
                data = re.sub(rb"(<dcterms:modified[^>]*>)[^<]*(</dcterms:modified>)",
                              rb"\g<1>" + stamp + rb"\g<2>", data)
            target.writestr(zipfile.ZipInfo(info.filename, date_time=_ZIP_TIME), data,
                            compress_type=zipfile.ZIP_DEFLATED)


# --------------------------------------------------------------------------------------------
# Generate
# --------------------------------------------------------------------------------------------


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
    faces, faces_note = _face_sources()
    identities = _identities(clips, preset, seed, subjects, len(faces))
    for c in clips:
        c["folder"] = f"{_LAYOUTS[c['dataset']].root}/{_LAYOUTS[c['dataset']].folder.format(**c)}"
        c["face"] = faces[identities[c["dataset"], c["subject"]]["face"]].name

    from joblib import Parallel, delayed

    tasks = (
        delayed(_render_clip)(out, c, identities[c["dataset"], c["subject"]],
                              faces[identities[c["dataset"], c["subject"]]["face"]], seed)
        for c in clips
    )
    results = Parallel(n_jobs=jobs, return_as="generator")(tasks)
    for done, (clip, result) in enumerate(zip(clips, results, strict=True), start=1):
        clip.update(result)
        if progress is not None:
            progress(done, len(clips))

    writers = {"casme2": _write_casme2_sheet, "samm": _write_samm_sheet}
    summary = {}
    for dataset in dict.fromkeys(c["dataset"] for c in clips):
        rows = [c for c in clips if c["dataset"] == dataset]
        layout = _LAYOUTS[dataset]
        if layout.sheet:
            writers[dataset](out / layout.sheet, rows, seed)
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


def _identities(clips: Sequence[dict], preset: str, seed: int, subjects: int | None, n_faces: int) -> dict:
    """Each subject's appearance; base faces go round in a fixed order over all datasets."""
    cfg = _config()
    spec = _preset(preset)
    counts = {d: subjects or spec.get("subjects") or len(cfg["subjects"][d]) for d in ALL_DATASETS}
    offset = {d: sum(counts[e] for e in ALL_DATASETS[:i]) for i, d in enumerate(ALL_DATASETS)}
    identities = {}
    for c in clips:
        key = c["dataset"], c["subject"]
        if key not in identities:
            position = _subject_ids(c["dataset"], max(counts[c["dataset"]], 1)).index(c["subject"])
            identities[key] = _identity(*key, (offset[c["dataset"]] + position) % n_faces, seed)
    return identities


def _dataset_summary(layout: _Layout, rows: list[dict]) -> dict:
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
