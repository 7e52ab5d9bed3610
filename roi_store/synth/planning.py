"""What a synthetic dataset's annotations say, decided without touching a pixel.

The tables (``roi_store/data/synth_presets.json``) hold the presets, the real datasets' subject
ids, emotions, clip lengths and frame numbering, the facial actions behind each emotion's motion
and the ranges of a subject's appearance. :func:`plan` draws the clips, their emotions, frame
numbers, apex, action units and the motion recipe that rendering follows; each dataset draws
from its own random stream (:func:`stream`).
"""

from __future__ import annotations

import itertools
import json
import re
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable
from importlib import resources

import numpy as np

from roi_store.errors import ConfigError
from roi_store.ids import ClipKey, normalise_subject
from roi_store.store.labels import MEGC2019, default_views, view_label

__all__ = ["ALL_DATASETS", "CLASSES", "PRESETS", "TABLES", "plan", "stream", "subject_ids"]

ALL_DATASETS = ("casme2", "samm", "smic")
CLASSES = ("negative", "positive", "surprise")
_SMIC_ABBREV = {"negative": "ne", "positive": "po", "surprise": "sur"}


#: The parsed ``synth_presets.json``: presets, subject ids, emotions, clip lengths, frame numbering,
#: facial actions, recipes and appearance ranges; treat it as read-only.
TABLES = json.loads(resources.files("roi_store").joinpath("data/synth_presets.json").read_text())
#: The preset names :func:`roi_store.synth.generate` and :func:`plan` accept.
PRESETS = tuple(TABLES["presets"])


def stream(seed: int, *parts: object) -> np.random.Generator:
    """A random stream of its own for ``parts`` (e.g. ``"render", clip_id``) under ``seed``.

    Keyed by name rather than drawn in order, so that what one dataset, subject or clip draws
    does not depend on what else is generated beside it.

    Parameters
    ----------
    seed : int
        The generator's seed.
    *parts
        What the stream is for; joined with ``/`` into its key.

    Returns
    -------
    numpy.random.Generator
        The same stream for the same seed and parts, in every process.
    """
    key = zlib.crc32("/".join(str(p) for p in parts).encode())
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(key,)))


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
    spec = _preset(preset)
    names = [datasets] if isinstance(datasets, str) else list(datasets)
    for name in names:
        if name not in ALL_DATASETS:
            raise ConfigError(f"invalid dataset {name!r}: allowed values are {', '.join(ALL_DATASETS)}")
    if not names:
        raise ConfigError("no dataset to generate: name at least one of " + ", ".join(ALL_DATASETS))
    for name, value, low in (("subjects", subjects, 1), ("clips_per_class", clips_per_class, 1),
                             ("frames", frames, 3)):
        if value is not None and (not isinstance(value, int) or value < low):
            raise ConfigError(f"invalid value for {name!r}: expected an integer >= {low}, got {value!r}")
    balanced = spec["mode"] == "balanced" or subjects is not None or clips_per_class is not None
    view = default_views()[MEGC2019]
    ids = subject_ids(preset, subjects)
    clips: list[dict] = []
    for dataset in (d for d in ALL_DATASETS if d in names):
        rng = stream(seed, "plan", dataset)
        if balanced:
            extra = spec.get("excluded_extra", {}).get(dataset, [])
            entries = _balanced_entries(dataset, ids[dataset], clips_per_class or spec.get("clips_per_class", 1),
                                        extra, rng)
        else:
            entries = _counted_entries(dataset, spec["datasets"][dataset], rng)
        clips += _realise(dataset, entries, frames if frames is not None else spec.get("frames"),
                          spec["amplitude_px"], view, rng)
    if scale != 1.0:
        if not 0.0 < scale <= 1.0:
            raise ConfigError(f"invalid value for 'scale': expected 0 < scale <= 1, got {scale!r}")
        keep = stream(seed, "scale").random(len(clips)) < scale
        clips = [c for c, k in zip(clips, keep) if k]
    return clips


def subject_ids(preset: str, subjects: int | None = None) -> dict[str, list[str]]:
    """Every dataset's subject ids: the real ones in order, then made-up ones continuing their numbering.

    Each dataset has ``subjects`` of them, else the preset's number, else every real subject.
    """
    ids = {}
    for dataset in ALL_DATASETS:
        real = TABLES["subjects"][dataset]
        n = subjects or _preset(preset).get("subjects", len(real))
        last = _number(real[-1])
        ids[dataset] = real[:n] + [normalise_subject(dataset, last + k) for k in range(1, n - len(real) + 1)]
    return ids


def _preset(name: str) -> dict:
    presets = TABLES["presets"]
    if name not in presets:
        raise ConfigError(f"invalid preset {name!r}: allowed values are {', '.join(presets)}")
    return presets[name]


def _number(subject: str) -> int:
    return int(re.sub(r"\D", "", subject))


def _balanced_entries(dataset, subjects, per_class, extra, rng) -> list[dict]:
    table = TABLES["emotions"][dataset]
    entries = [
        {"subject": s, "emotion": str(rng.choice(table[c]))}
        for s in subjects for c in CLASSES for _ in range(per_class)
    ]
    entries += [{"subject": subjects[int(rng.integers(len(subjects)))], "emotion": e} for e in extra]
    return entries


def _counted_entries(dataset: str, spec: dict, rng: np.random.Generator) -> list[dict]:
    """Spread the preset's emotion counts over the subjects, keeping the composite's subjects.

    Every subject outside ``only_excluded`` gets one composite clip first, every subject in it
    one excluded clip first; the rest follow per-subject weights, so counts vary by subject as
    in the real data.
    """
    ids = TABLES["subjects"][dataset]
    excluded = set(TABLES["emotions"][dataset]["excluded"])
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
    used = defaultdict(set)
    for clip_id in view["datasets"].get(dataset, {}).get("exclude", {}):
        # Never give an ordinary clip a name the composite's rules single out.
        key = ClipKey.parse(clip_id)
        used[key.subject].add(_clip_slot(dataset, key.clip))
    clips = []
    for entry in entries:
        subject, emotion = entry["subject"], entry["emotion"]
        name = entry.get("clip") or _clip_name(dataset, subject, emotion, used[subject], rng)
        used[subject].add(_clip_slot(dataset, name))
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
    return sorted(clips, key=lambda c: (_number(c["subject"]), c["clip"]))


def _clip_slot(dataset: str, name: str) -> tuple:
    """What two clip names of one subject must not share (EP07_01 and EP07_01f are one slot)."""
    if dataset == "casme2":
        m = re.fullmatch(r"EP(\d+)_(\d+)f?", name)
        return (int(m.group(1)), int(m.group(2))) if m else (name,)
    return (name,)


def _clip_name(dataset: str, subject: str, emotion: str, used: set, rng: np.random.Generator) -> str:
    if dataset == "casme2":
        episode = int(rng.integers(1, 20))
        pattern = f"EP{episode:02d}_{{:02d}}" + ("f" if rng.random() < 0.6 else "")
    elif dataset == "samm":
        pattern = f"{subject}_{int(rng.integers(1, 8))}_{{}}"
    else:
        pattern = f"{subject}_{_SMIC_ABBREV[emotion]}_{{:02d}}"
    names = (pattern.format(k) for k in itertools.count(1))
    return next(name for name in names if _clip_slot(dataset, name) not in used)


def _clip_length(dataset: str, frames, rng: np.random.Generator) -> int:
    if isinstance(frames, int):
        return frames
    if frames is not None:
        return int(rng.integers(frames[0], frames[1] + 1))
    low, high, mean = TABLES["clip_frames"][dataset]
    # A beta law on [low, high] with the real mean: skewed towards short clips, as the data are.
    m = (mean - low) / (high - low)
    a = 2.5
    return low + round((high - low) * rng.beta(a, a * (1 - m) / m))


def _first_frame(dataset: str, n: int, rng: np.random.Generator) -> int:
    spec = TABLES["frame_numbers"][dataset]
    if rng.random() < spec["cross_digit_boundary"]:
        boundary = 100 if rng.random() < 0.7 else 1000
        return int(rng.integers(max(1, boundary - n + 1), boundary))
    while True:
        first = int(rng.integers(spec["first"][0], spec["first"][1] + 1))
        if len(str(first)) == len(str(first + n - 1)):
            return first


def _recipe(emotion: str, rng: np.random.Generator) -> tuple[dict[str, float], float, int]:
    """(action -> weight, amplitude scale, objective class) for one clip of ``emotion``."""
    recipes = TABLES["recipes"]
    name = emotion.lower()
    recipe = recipes["other" if name in ("other", "others") else name]
    if "mixture" in recipe:
        # Weak and varied on purpose: these clips are left out of the composite, and must not
        # be a fourth, trivially separable pattern.
        mix = recipe["mixture"]
        if rng.random() < mix["blink"]:
            return {"blink": 1.0}, mix["amplitude"], recipe["objective_class"]
        pool = sorted(a for a in TABLES["actions"] if a != "blink")
        chosen = rng.choice(pool, size=mix["actions"], replace=False)
        actions = {str(a): float(rng.uniform(*mix["weight"])) for a in chosen}
        return actions, mix["amplitude"], recipe["objective_class"]
    actions = {a: w * float(rng.uniform(0.8, 1.2)) for a, w in recipe["actions"].items()}
    return actions, 1.0, recipe["objective_class"]


def _au_code(actions: dict[str, float], rng: np.random.Generator) -> int | str:
    """The AU cell for a clip: an integer for one plain AU (as Excel stores it), else a string."""
    table = TABLES["actions"]
    parts = [str(rng.choice(table[a]["au"])) for a, w in actions.items() if w >= TABLES["au_weight"]]
    parts = parts or [str(rng.choice(table[max(actions, key=actions.get)]["au"]))]
    parts.sort(key=lambda p: int(re.search(r"\d+", p).group()))
    code = "+".join(parts)
    return int(code) if code.isdigit() else code
