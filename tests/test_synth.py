"""The synthetic dataset generator: layouts, sheets, determinism, faces, motion, presets."""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import openpyxl
import pytest

from roi_store import synth
from roi_store.errors import ConfigError
from roi_store.ingest.faces import find_face
from roi_store.synth.faces import load_face_sources
from roi_store.synth.sheets import write_casme2_sheet

SMALL = {"subjects": 2, "clips_per_class": 1, "frames": 8}
FRAME_NAME = {
    "casme2": re.compile(r"img(\d+)\.jpg"),
    "samm": re.compile(r"(\d{3})_(\d{5})\.jpg"),
    "smic": re.compile(r"image(\d{6})\.bmp"),
}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "data"
    return out, synth.generate(out, "tiny", seed=3, **SMALL)


def _frames(root: Path, clip: dict) -> list[Path]:
    files = [p for p in (root / clip["folder"]).iterdir()]
    return sorted(files, key=lambda p: int(re.findall(r"\d+", p.stem)[-1]))


def _grey(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)


def _detect(grey: np.ndarray):
    """Detect as ingest does: big frames shrunk to 800 px on their long side first."""
    scale = max(1.0, max(grey.shape) / 800)
    if scale > 1:
        grey = cv2.resize(grey, (round(grey.shape[1] / scale), round(grey.shape[0] / scale)),
                          interpolation=cv2.INTER_AREA)
    face = find_face(grey, upsample=1)
    return None if face is None else face.landmarks * scale


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- layout ------------------------------------------------------------------------------------


def test_small_generation_has_every_dataset_class_and_an_excluded_clip(small):
    _, truth = small
    for dataset in synth.ALL_DATASETS:
        summary = truth["datasets"][dataset]
        assert summary["composite"] == {"negative": 2, "positive": 2, "surprise": 2, "clips": 6, "subjects": 2}
        assert summary["clips"] == (6 if dataset == "smic" else 7)
    assert truth["frames"] == 8 * len(truth["clips"]) == 160
    assert truth["faces_note"] is None and len(truth["faces"]) == 8


@pytest.mark.parametrize(
    ("dataset", "shape", "magic"),
    [
        pytest.param("casme2", (480, 640, 3), b"\xff\xd8", id="casme2-colour-jpeg"),
        pytest.param("samm", (1088, 2040), b"\xff\xd8", id="samm-grey-jpeg"),
        pytest.param("smic", (480, 640, 3), b"BM", id="smic-colour-bmp"),
    ],
)
def test_frames_follow_the_native_layout(small, dataset, shape, magic):
    root, truth = small
    clips = [c for c in truth["clips"] if c["dataset"] == dataset]
    for clip in clips:
        layout = {"casme2": f"CASME2/CASME2_RAW_selected/{clip['subject']}/{clip['clip']}",
                  "samm": f"SAMM/SAMM/{clip['subject']}/{clip['clip']}",
                  "smic": f"SMIC/HS/{clip['subject']}/micro/{clip['emotion']}/{clip['clip']}"}[dataset]
        assert clip["folder"] == layout
        frames = _frames(root, clip)
        numbers = [int(FRAME_NAME[dataset].fullmatch(p.name).groups()[-1]) for p in frames]
        assert numbers == list(range(clip["onset"], clip["offset"] + 1))
        first = cv2.imread(str(frames[0]), cv2.IMREAD_UNCHANGED)
        assert first.shape == shape and frames[0].read_bytes()[:2] == magic
        if len(shape) == 3:  # a colour frame, not grey stored in three channels
            assert np.abs(first[:, :, 0].astype(int) - first[:, :, 2]).mean() > 3
    if dataset == "smic":
        assert {c["clip"].split("_")[1] for c in clips} == {"ne", "po", "sur"}
        assert all(c["apex"] == c["motion_apex"] for c in clips)
    if dataset == "samm":
        assert all(FRAME_NAME["samm"].fullmatch(_frames(root, c)[0].name).group(1) == c["subject"]
                   for c in clips)


def test_casme2_sheet_has_one_header_row_and_the_published_columns(small):
    root, truth = small
    sheet = openpyxl.load_workbook(root / "CASME2/CASME2-coding.xlsx").active
    rows = list(sheet.iter_rows(values_only=True))
    assert list(rows[0]) == ["Subject", "Filename", None, "OnsetFrame", "ApexFrame", "OffsetFrame", None,
                             "Action Units", "Estimated Emotion", "Objective Classes"]
    clips = {(c["subject"], c["clip"]): c for c in truth["clips"] if c["dataset"] == "casme2"}
    assert len(rows) - 1 == len(clips)
    for row in rows[1:]:
        clip = clips[f"sub{int(row[0]):02d}", row[1]]
        assert (row[3], row[4], row[5], row[7], row[8]) == (
            clip["onset"], clip["apex"], clip["offset"], clip["aus"], clip["emotion"])
        assert row[8] == row[8].lower()


def test_samm_sheet_has_notes_then_header_on_row_14_and_a_duration_formula(small):
    root, truth = small
    book = openpyxl.load_workbook(root / "SAMM/SAMM_Micro_FACS_Codes_v2.xlsx")
    sheet = book["MICRO_ONLY"]
    assert isinstance(sheet.cell(1, 1).value, str)
    assert all(sheet.cell(r, c).value is None for r in range(1, 14) for c in range(2, 13))
    assert [sheet.cell(14, c).value for c in range(1, 13)] == [
        "Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame", "Duration",
        "Micro", "Action Units", "Estimated Emotion", "Objective Classes", "Notes"]
    clips = {c["clip"]: c for c in truth["clips"] if c["dataset"] == "samm"}
    assert sheet.max_row == 14 + len(clips)
    for r in range(15, sheet.max_row + 1):
        subject, name = sheet.cell(r, 1).value, sheet.cell(r, 2).value
        clip = clips[name]
        assert subject == clip["subject"] and isinstance(subject, str) and len(subject) == 3
        assert sheet.cell(r, 3).value == int(name.split("_")[1])
        assert [sheet.cell(r, c).value for c in (4, 5, 6)] == [clip["onset"], clip["apex"], clip["offset"]]
        assert sheet.cell(r, 7).value == f"=F{r}-D{r}+1"
        assert sheet.cell(r, 8).value == "Micro - 1/2"
        assert sheet.cell(r, 10).value == clip["emotion"] and clip["emotion"][0].isupper()


def test_megc2019_sheets_carry_the_published_quirks(tmp_path):
    clips = synth.plan("megc2019", seed=0, datasets=["casme2"])
    write_casme2_sheet(tmp_path / "c.xlsx", clips, seed=0)
    rows = list(openpyxl.load_workbook(tmp_path / "c.xlsx").active.iter_rows(min_row=2, values_only=True))
    assert {type(r[0]) for r in rows} == {str, int}  # "01" and 1 both occur
    assert {type(r[7]) for r in rows} == {str, int}  # AU 12 and "4+7+L10" both occur
    by_id = {(f"sub{int(r[0]):02d}", r[1]): r for r in rows}
    assert by_id["sub04", "EP12_01f"][4] == "/"
    assert by_id["sub05", "EP09_05f"][4] == by_id["sub05", "EP09_05f"][3]
    assert all(("sub24", c) in by_id for c in ("EP07_01", "EP07_04f", "EP10_03"))


# --- determinism -------------------------------------------------------------------------------


def test_same_seed_gives_identical_files_whatever_the_number_of_jobs(small, tmp_path):
    root, truth = small
    again = synth.generate(tmp_path / "again", "tiny", seed=3, jobs=2, **SMALL)
    assert again == truth
    assert _tree(tmp_path / "again") == _tree(root)


def test_another_seed_gives_other_frames_and_sheets(small, tmp_path):
    root, _ = small
    synth.generate(tmp_path / "other", "tiny", seed=4, datasets=["casme2"], **SMALL)
    mine, theirs = _tree(root), _tree(tmp_path / "other")
    assert mine["CASME2/CASME2-coding.xlsx"] != theirs["CASME2/CASME2-coding.xlsx"]
    frames = [k for k in theirs if k.endswith(".jpg")]
    assert frames and all(mine.get(k) != theirs[k] for k in frames)


def test_plan_is_deterministic_and_seed_dependent():
    assert synth.plan("megc2019", seed=1) == synth.plan("megc2019", seed=1)
    assert synth.plan("megc2019", seed=1) != synth.plan("megc2019", seed=2)
    # a dataset's table does not depend on which others are planned beside it
    alone = synth.plan("tiny", seed=1, datasets=["samm"])
    assert alone == [c for c in synth.plan("tiny", seed=1) if c["dataset"] == "samm"]


# --- faces and motion --------------------------------------------------------------------------


def test_a_face_is_found_on_the_first_frame_of_every_clip(small):
    root, truth = small
    for clip in truth["clips"]:
        landmarks = _detect(_grey(_frames(root, clip)[0]))
        assert landmarks is not None, clip["id"]
        width = landmarks[16, 0] - landmarks[0, 0]
        assert abs(width / clip["face_width_px"] - 1) < 0.15, clip["id"]


def _region_change(root: Path, clip: dict) -> dict[str, float]:
    frames = _frames(root, clip)
    onset = _grey(frames[0]).astype(np.float32)
    apex = _grey(frames[clip["motion_apex"] - clip["onset"]]).astype(np.float32)
    points = _detect(onset.astype(np.uint8))
    change = np.abs(apex - onset)
    width = points[16, 0] - points[0, 0]

    def around(indices, pad=0.08):
        x0, y0 = (points[indices].min(0) - pad * width).astype(int)
        x1, y1 = (points[indices].max(0) + pad * width).astype(int)
        return float(change[max(y0, 0):y1, max(x0, 0):x1].mean())

    h, w = change.shape
    return {
        "brows": around(list(range(17, 27))),
        "mouth": around(list(range(48, 68))),
        "background": float(change[: h // 8, : w // 8].mean()),
        "global": float(apex.mean() - onset.mean()),
    }


def test_motion_sits_where_the_class_moves_and_nowhere_else(small):
    root, truth = small
    for clip in truth["clips"]:
        if clip["label"] is None:
            continue
        change = _region_change(root, clip)
        noise = change["background"]
        assert noise < 3.0, (clip["id"], change)  # sensor noise only
        assert abs(change["global"]) < 0.5, (clip["id"], change)  # no brightness change
        if clip["label"] == "surprise":
            assert change["brows"] > 1.5 * change["mouth"], (clip["id"], change)
        if clip["label"] == "positive":
            assert change["mouth"] > 1.5 * change["brows"], (clip["id"], change)
        if clip["label"] == "negative":
            assert change["brows"] > 2 * noise, (clip["id"], change)


def test_without_insightface_every_subject_uses_the_astronaut(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "insightface" else real(name, *a))
    faces, note = load_face_sources()
    assert [f.name for f in faces] == ["skimage:astronaut"]
    assert "insightface" in note


def test_progress_reports_every_clip(tmp_path):
    calls = []
    truth = synth.generate(tmp_path / "p", "tiny", seed=0, datasets=["smic"], subjects=1, clips_per_class=1,
                           frames=3, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 3) for i in range(1, 4)]
    assert json.loads((tmp_path / "p" / "synth.json").read_text()) == truth


# --- presets -----------------------------------------------------------------------------------


def _composite(clips: list[dict], dataset: str) -> tuple[Counter, set]:
    rows = [c for c in clips if c["dataset"] == dataset and c["label"] is not None]
    return Counter(c["label"] for c in rows), {c["subject"] for c in rows}


def test_megc2019_plan_reproduces_the_composite():
    clips = synth.plan("megc2019", seed=0)
    expected = {
        "casme2": (255, 26, {"negative": 88, "positive": 32, "surprise": 25}, 24),
        "samm": (159, 32, {"negative": 92, "positive": 26, "surprise": 15}, 28),
        "smic": (164, 16, {"negative": 70, "positive": 51, "surprise": 43}, 16),
    }
    for dataset, (n, subjects, classes, composite_subjects) in expected.items():
        rows = [c for c in clips if c["dataset"] == dataset]
        counts, members = _composite(clips, dataset)
        assert len(rows) == n and len({c["subject"] for c in rows}) == subjects
        assert dict(counts) == classes and len(members) == composite_subjects
    assert Counter(c["emotion"] for c in clips if c["dataset"] == "casme2") == {
        "others": 99, "disgust": 63, "happiness": 32, "surprise": 28, "repression": 27, "sadness": 4, "fear": 2}
    assert Counter(c["emotion"] for c in clips if c["dataset"] == "samm") == {
        "Anger": 57, "Other": 26, "Happiness": 26, "Surprise": 15, "Contempt": 12, "Disgust": 9, "Fear": 8,
        "Sadness": 6}
    assert _composite(clips, "casme2")[1].isdisjoint({"sub10", "sub18"})
    assert _composite(clips, "samm")[1].isdisjoint({"008", "025", "027", "029"})
    ids = {c["id"]: c for c in clips}
    for name in ("sub04/EP12_01f", "sub05/EP09_05f", "sub24/EP07_01", "sub24/EP07_04f", "sub24/EP10_03"):
        assert ids[f"casme2/{name}"]["label"] is None
    assert ids["casme2/sub04/EP12_01f"]["apex"] == "/"
    assert ids["casme2/sub05/EP09_05f"]["apex"] == ids["casme2/sub05/EP09_05f"]["onset"]
    assert {c["subject"] for c in clips if c["dataset"] == "smic"} == {
        "s1", "s2", "s3", "s4", "s5", "s6", "s8", "s9", "s11", "s12", "s13", "s14", "s15", "s18", "s19", "s20"}
    assert len(ids) == len(clips)


@pytest.mark.parametrize(
    ("dataset", "low", "high", "mean"),
    [pytest.param("casme2", 30, 140, 65, id="casme2"), pytest.param("samm", 30, 110, 70, id="samm"),
     pytest.param("smic", 15, 55, 34, id="smic")],
)
def test_megc2019_clip_lengths_look_like_the_real_data(dataset, low, high, mean):
    lengths = np.array([c["n_frames"] for c in synth.plan("megc2019", seed=0) if c["dataset"] == dataset])
    assert lengths.min() >= low and lengths.max() <= high
    assert abs(lengths.mean() - mean) < 0.12 * mean


def test_megc2019_casme2_frame_names_cross_digit_boundaries():
    clips = [c for c in synth.plan("megc2019", seed=0) if c["dataset"] == "casme2"]
    crossing = sum(len(str(c["onset"])) != len(str(c["offset"])) for c in clips)
    assert 0.45 < crossing / len(clips) < 0.75
    apexes = [c for c in clips if c["quirk"] is None]
    assert all(c["onset"] < c["apex"] < c["offset"] for c in apexes)


def test_tiny_plan_is_balanced_with_one_excluded_clip_in_casme2_and_samm():
    clips = synth.plan("tiny", seed=0)
    for dataset, subjects in (("casme2", ["sub01", "sub02", "sub03", "sub04"]),
                              ("samm", ["006", "007", "008", "009"]), ("smic", ["s1", "s2", "s3", "s4"])):
        rows = [c for c in clips if c["dataset"] == dataset]
        assert sorted({c["subject"] for c in rows}, key=lambda s: int(re.sub(r"\D", "", s))) == subjects
        composite = [c for c in rows if c["label"] is not None]
        assert Counter((c["subject"], c["label"]) for c in composite) == {
            (s, k): 2 for s in subjects for k in ("negative", "positive", "surprise")}
        assert len(rows) - len(composite) == (0 if dataset == "smic" else 1)
        assert all(9 <= c["n_frames"] <= 11 for c in rows)
    assert {c["emotion"] for c in clips if c["label"] is None} == {"others", "Other"}


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"preset": "huge"}, "invalid preset 'huge': allowed values are tiny, megc2019", id="preset"),
        pytest.param({"datasets": ["casme3"]}, "invalid dataset 'casme3': allowed values are casme2, samm, smic",
                     id="dataset"),
        pytest.param({"frames": 2}, "invalid value for 'frames': expected an integer >= 3, got 2", id="frames"),
    ],
)
def test_invalid_arguments_say_what_is_allowed(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        synth.plan(**kwargs)


def test_generate_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(ConfigError, match="is not empty"):
        synth.generate(tmp_path)
