"""Native dataset readers on tiny fake datasets built in tmp_path (8x8 images, small sheets)."""

from __future__ import annotations

import datetime
import os
import unicodedata
from pathlib import Path

import cv2
import numpy as np
import openpyxl
import pytest

from roi_store.ingest.datasets import READERS, ClipSpec, Skip, get_reader
from roi_store.ingest.datasets.cells import parse_aus
from roi_store.ingest.datasets.frames import format_ranges
from roi_store.errors import AnnotationError, ConfigError, DatasetError

_PIXELS = np.zeros((8, 8, 3), np.uint8)


def write_frames(folder: Path, numbers, pattern: str = "img{}.jpg") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in numbers:
        assert cv2.imwrite(str(folder / pattern.format(n)), _PIXELS)


def write_xlsx(path: Path, rows, title: str = "Sheet1", extra_sheets=()) -> Path:
    wb = openpyxl.Workbook()
    for name in extra_sheets:  # sheets before the one we fill
        wb.create_sheet(name, 0)
    ws = wb.worksheets[-1] if extra_sheets else wb.active
    ws.title = title
    for row in rows:
        ws.append(list(row))
    wb.save(path)
    return path


def by_id(items) -> dict[str, ClipSpec | Skip]:
    return {item.id: item for item in items}


# ---------------------------------------------------------------------------------------------
# CASME II

CASME_HEADER = ("Subject", "Filename", None, "OnsetFrame", "ApexFrame", "OffsetFrame", None,
                "Action Units", "Estimated Emotion", "Objective Classes")


def casme_row(subject, clip, onset, apex, offset, aus="4+7+L10", emotion="disgust"):
    return (subject, clip, None, onset, apex, offset, None, aus, emotion, 3)


def make_casme(tmp_path: Path, rows, header=CASME_HEADER, sheet="CASME2-coding.xlsx") -> Path:
    base = tmp_path / "CASME2"
    root = base / "CASME2_RAW_selected"
    root.mkdir(parents=True, exist_ok=True)
    write_xlsx(base / sheet, [header, *rows])
    return root


def _digits(root):
    write_frames(root / "sub01/EP02_01f", [9, 10, 99, 100, 101, 102])


def _strays(root):
    folder = root / "sub01/EP02_01f"
    write_frames(folder, [1, 2, 3])
    for name in ("Thumbs.db", "notes.txt", ".DS_Store", "._img1.jpg"):
        (folder / name).write_bytes(b"not an image")
    write_frames(folder, [""], "cover{}.jpg")
    (folder / "sub").mkdir()


def _gaps(root):
    write_frames(root / "sub01/EP02_01f", [1, 2, 5, 6, 9])


def _partial(root):
    write_frames(root / "sub01/EP02_01f", range(46, 51))


def _few(root):
    write_frames(root / "sub01/EP02_01f", [1, 2, 3])


def _dup_number(root):
    write_frames(root / "sub01/EP02_01f", [4, 5])
    write_frames(root / "sub01/EP02_01f", ["05"])


def _empty(root):
    (root / "sub01/EP02_01f").mkdir(parents=True)
    (root / "sub01/EP02_01f/Thumbs.db").write_bytes(b"x")


def _link_out(root):
    outside = root.parent.parent / "elsewhere/EP02_01f"
    write_frames(outside, [1, 2, 3])
    (root / "sub01").mkdir(parents=True)
    os.symlink(outside, root / "sub01/EP02_01f")


def _frame_link_out(root):
    write_frames(root.parent.parent / "elsewhere", [2])
    write_frames(root / "sub01/EP02_01f", [1, 3])
    os.symlink(root.parent.parent / "elsewhere/img2.jpg", root / "sub01/EP02_01f/img2.jpg")


def _link_inside(root):
    write_frames(root / "sub02/EP09_09", [1, 2, 3])
    (root / "sub01").mkdir(parents=True)
    os.symlink(root / "sub02/EP09_09", root / "sub01/EP02_01f")


def _loop(root):
    write_frames(root / "sub01/EP02_01f", [1, 2, 3])
    os.symlink("EP_loop", root / "sub01/EP_loop")  # points at itself
    os.symlink("..", root / "sub01/EP02_01f/up")  # a cycle through the tree


def _frame_loop(root):
    write_frames(root / "sub01/EP02_01f", [1, 2, 3])
    os.symlink("img4.jpg", root / "sub01/EP02_01f/img4.jpg")  # a frame that points at itself


CASME_CASES = [
    pytest.param([casme_row("01", "EP02_01f", 99, 100, 101)], _digits, "casme2/sub01/EP02_01f",
                 {"numbers": [99, 100, 101], "names": ["img99.jpg", "img100.jpg", "img101.jpg"],
                  "apex": 100, "warnings": []}, id="casme2-digit-boundary"),
    pytest.param([casme_row("01", "EP02_01f", 1, 2, 3)], _strays, "casme2/sub01/EP02_01f",
                 {"numbers": [1, 2, 3], "warn": "with no frame number in the name: cover.jpg"},
                 id="casme2-stray-files"),
    pytest.param([casme_row("01", "EP02_01f", 1, 2, 9)], _gaps, "casme2/sub01/EP02_01f",
                 {"numbers": [1, 2, 5, 6, 9], "warn": "frames 3-4, 7-8 missing inside the clip"},
                 id="casme2-gaps"),
    pytest.param([casme_row("01", "EP02_01f", 40, 48, 52)], _partial, "casme2/sub01/EP02_01f",
                 {"numbers": [46, 47, 48, 49, 50],
                  "warn": "annotated frames 40-45, 51-52 missing on disk"}, id="casme2-partly-on-disk"),
    pytest.param([casme_row("01", "EP02_01f", 10, 11, 12)], _few, "casme2/sub01/EP02_01f",
                 {"skip": "annotated frames 10-12 not on disk (the folder holds frames 1-3)"},
                 id="casme2-range-not-on-disk"),
    pytest.param([casme_row("01", "EP02_01f", 1, "/", 3)], _few, "casme2/sub01/EP02_01f",
                 {"apex": None, "warnings": ["apex not given ('/')"]}, id="casme2-apex-slash"),
    pytest.param([casme_row("01", "EP02_01f", 1, None, 3)], _few, "casme2/sub01/EP02_01f",
                 {"apex": None, "warnings": ["apex not given (blank)"]}, id="casme2-apex-blank"),
    pytest.param([casme_row("01", "EP02_01f", 1, 7, 3)], _few, "casme2/sub01/EP02_01f",
                 {"apex": None, "warn": "apex 7 outside the annotated frames 1-3"},
                 id="casme2-apex-outside"),
    pytest.param([casme_row("01", "EP02_01f", 1, 1, 3)], _few, "casme2/sub01/EP02_01f",
                 {"apex": 1, "warnings": []}, id="casme2-apex-equals-onset"),
    pytest.param([casme_row("01", "EP02_01f", 3, 2, 1)], _few, "casme2/sub01/EP02_01f",
                 {"skip": "CASME2-coding.xlsx row 2: onset 3 > offset 1"}, id="casme2-onset-after-offset"),
    pytest.param([casme_row("01", "EP02_01f", "abc", 2, 3)], _few, "casme2/sub01/EP02_01f",
                 {"skip": "CASME2-coding.xlsx row 2: OnsetFrame holds 'abc', not a frame number"},
                 id="casme2-onset-not-a-number"),
    pytest.param([casme_row("01", "EP02_01f", 1.5, 2, 3)], _few, "casme2/sub01/EP02_01f",
                 {"skip": "row 2: OnsetFrame holds 1.5, not a whole frame number"},
                 id="casme2-onset-fraction"),
    pytest.param([casme_row(1, "EP02_01f", 1, 2, 3)], _few, "casme2/sub01/EP02_01f",
                 {"numbers": [1, 2, 3]}, id="casme2-subject-int"),
    pytest.param([casme_row(1.0, "EP02_01f", "1", "2", "3")], _few, "casme2/sub01/EP02_01f",
                 {"numbers": [1, 2, 3], "apex": 2}, id="casme2-subject-float-frames-text"),
    pytest.param([casme_row("x1", "EP02_01f", 1, 2, 3), casme_row("01", "EP02_01f", 1, 2, 3)], _few,
                 "casme2/x1/EP02_01f", {"skip": "CASME2-coding.xlsx row 2: invalid casme2 subject id 'x1'"},
                 id="casme2-bad-subject"),
    pytest.param([casme_row("01", "EP02_01f", 1, 2, 3), casme_row("02", "EP05_05", 1, 2, 3)], _few,
                 "casme2/sub02/EP05_05", {"skip": "listed in CASME2-coding.xlsx row 3 but no folder "},
                 id="casme2-sheet-not-on-disk"),
    pytest.param([], _few, "casme2/sub01/EP02_01f",
                 {"skip": "folder not in annotation sheet CASME2-coding.xlsx"}, id="casme2-disk-not-in-sheet"),
    pytest.param([casme_row("01", "EP02_01f", 1, 2, 3), casme_row(1, "EP02_01f", 1, 1, 2)], _few,
                 "casme2/sub01/EP02_01f", {"numbers": [1, 2, 3], "source": "CASME2-coding.xlsx row 2",
                                           "dup": "row 3: duplicate of row 2"}, id="casme2-duplicate-row"),
    pytest.param([casme_row("01", "EP02_01f", 1, 2, 3, emotion=" Contempt ")], _few, "casme2/sub01/EP02_01f",
                 {"emotion": "contempt", "warn": "emotion 'Contempt' is not one of the casme2 labels"},
                 id="casme2-unknown-emotion"),
    pytest.param([casme_row("01", "EP02_01f", 1, 2, 3, emotion="Others")], _few, "casme2/sub01/EP02_01f",
                 {"emotion": "others", "warnings": []}, id="casme2-emotion-case"),
    pytest.param([casme_row("01", "EP02_01f", 1, 2, 3, aus=12)], _few, "casme2/sub01/EP02_01f",
                 {"aus": ["12"], "aus_raw": "12"}, id="casme2-au-int"),
    pytest.param([casme_row("01", "EP02_01f", 1, 2, 3, aus="4+7+L10")], _few, "casme2/sub01/EP02_01f",
                 {"aus": ["4", "7", "L10"], "aus_raw": "4+7+L10"}, id="casme2-au-string"),
    pytest.param([casme_row("01", "EP02_01f", 4, 5, 5)], _dup_number, "casme2/sub01/EP02_01f",
                 {"skip": "two frame files share frame number 5: img05.jpg, img5.jpg"},
                 id="casme2-duplicate-frame-number"),
    pytest.param([casme_row("01", "EP02_01f", 1, 2, 3)], _empty, "casme2/sub01/EP02_01f",
                 {"skip": "no frame files in folder"}, id="casme2-empty-folder"),
    pytest.param([casme_row("01", "EP02_01f", 1, 2, 3)], _link_out, "casme2/sub01/EP02_01f",
                 {"skip": "outside the dataset root", "one": "CASME2-coding.xlsx row 2"},
                 id="casme2-folder-symlink-out"),
    pytest.param([casme_row("01", "EP02_01f", 1, 2, 3)], _frame_link_out, "casme2/sub01/EP02_01f",
                 {"skip": "frame img2.jpg resolves to a place outside the dataset root"},
                 id="casme2-frame-symlink-out"),
    pytest.param([casme_row("01", "EP02_01f", 1, 2, 3), casme_row("02", "EP09_09", 1, 2, 3)], _link_inside,
                 "casme2/sub01/EP02_01f", {"numbers": [1, 2, 3]}, id="casme2-symlink-inside-root"),
    pytest.param([casme_row("01", "EP02_01f", 1, 2, 3)], _loop, "casme2/sub01/EP_loop",
                 {"skip": "is a symlink loop"}, id="casme2-symlink-loop"),
    pytest.param([casme_row("01", "EP02_01f", 1, 2, 4)], _frame_loop, "casme2/sub01/EP02_01f",
                 {"numbers": [1, 2, 3], "warn": "ignored 1 image name that cannot be read as a file"},
                 id="casme2-frame-symlink-loop"),
    pytest.param([casme_row("01", "EP02_01f", 1, 2, 3, emotion=None)], _few, "casme2/sub01/EP02_01f",
                 {"emotion": "", "warnings": ["emotion not given"]}, id="casme2-emotion-blank"),
]


@pytest.mark.parametrize(("rows", "disk", "clip_id", "expect"), CASME_CASES)
def test_casme2_cases(tmp_path, rows, disk, clip_id, expect):
    root = make_casme(tmp_path, rows)
    disk(root)
    items = list(get_reader("casme2").scan(root))
    assert [_order(i) for i in items] == sorted(_order(i) for i in items)
    check(items, clip_id, expect, root)


def _order(item):
    return tuple(item.id.split("/"))


def check(items, clip_id, expect, root):
    found = [i for i in items if i.id == clip_id]
    assert found, f"{clip_id} not in {[i.id for i in items]}"
    # A duplicate shares its id with the clip that was kept: look at the kind expected.
    kind = Skip if "skip" in expect else ClipSpec
    item = next((i for i in found if isinstance(i, kind)), found[0])
    if "skip" in expect:
        assert isinstance(item, Skip), item
        assert expect["skip"] in item.reason
        assert "\n" not in item.reason
        return
    assert isinstance(item, ClipSpec), item
    for p in item.frames:  # frames are inside the root and in frame-number order
        assert Path(os.path.realpath(p)).is_relative_to(Path(os.path.realpath(root)))
    if "numbers" in expect:
        assert item.frame_numbers == expect["numbers"]
        assert [p.name for p in item.frames][: len(expect.get("names", []))] == expect.get("names", [])
    for field in ("apex", "emotion", "aus", "aus_raw", "source", "warnings"):
        if field in expect:
            assert getattr(item, field) == expect[field], field
    if "warn" in expect:
        assert any(expect["warn"] in w for w in item.warnings), item.warnings
    if "one" in expect:
        assert len(found) == 1, found
        assert item.source == expect["one"]
    if "dup" in expect:
        assert any(isinstance(i, Skip) and expect["dup"] in i.reason for i in items)


def test_casme2_full_clip(tmp_path):
    root = make_casme(tmp_path, [casme_row("01", "EP02_01f", 99, 100, 101, emotion="Happiness")])
    _digits(root)
    (clip,) = get_reader("casme2").scan(root)
    assert clip.key.id == "casme2/sub01/EP02_01f"
    assert clip.fps == 200.0
    assert (clip.onset, clip.apex, clip.offset) == (99, 100, 101)
    assert clip.emotion == "happiness"
    assert clip.aus == ["4", "7", "L10"]
    assert clip.source == "CASME2-coding.xlsx row 2"
    assert clip.folder == Path(os.path.realpath(root)) / "sub01" / "EP02_01f"


def test_casme2_columns_found_by_name(tmp_path):
    header = ("estimated emotion", "OFFSET FRAME", "filename", "Onset Frame", None, "subject",
              "action units", "apexframe")
    root = make_casme(tmp_path, [("surprise", 3, "EP02_01f", 1, None, "01", "1+2", 2)], header=header)
    _few(root)
    (clip,) = get_reader("casme2").scan(root)
    assert (clip.onset, clip.apex, clip.offset, clip.emotion, clip.aus) == (1, 2, 3, "surprise", ["1", "2"])


def test_casme2_order_is_by_key(tmp_path):
    rows = [casme_row(s, c, 1, 2, 3) for s, c in [(10, "EP01"), ("02", "EP02"), (2, "EP01"), (1, "EP03")]]
    root = make_casme(tmp_path, rows)
    for s, c in [("sub10", "EP01"), ("sub02", "EP02"), ("sub02", "EP01"), ("sub01", "EP03")]:
        write_frames(root / s / c, [1, 2, 3])
    ids = [i.id for i in get_reader("casme2").scan(root)]
    assert ids == ["casme2/sub01/EP03", "casme2/sub02/EP01", "casme2/sub02/EP02", "casme2/sub10/EP01"]


def test_casme2_missing_column_message(tmp_path):
    header = ("Subject", "Filename", None, "ApexFrame", "OffsetFrame", None, "Action Units",
              "Estimated Emotion", "Objective Classes")
    root = make_casme(tmp_path, [], header=header)
    _few(root)
    with pytest.raises(AnnotationError) as err:
        list(get_reader("casme2").scan(root))
    assert str(err.value) == (
        "CASME2-coding.xlsx: missing column 'OnsetFrame' in the header row (row 1); found: "
        "Subject, Filename, ApexFrame, OffsetFrame, Action Units, Estimated Emotion, "
        "Objective Classes; use the coding sheet published with the dataset or a manifest CSV"
    )


@pytest.mark.parametrize(
    "content",
    [pytest.param(b"this is not a zip file", id="garbage"),
     pytest.param(b"", id="empty"),
     pytest.param(b"PK\x03\x04broken", id="broken-zip")],
)
def test_casme2_unreadable_sheet(tmp_path, content):
    root = tmp_path / "CASME2/CASME2_RAW_selected"
    _few(root)
    (tmp_path / "CASME2/CASME2-coding.xlsx").write_bytes(content)
    with pytest.raises(AnnotationError) as err:
        get_reader("casme2").scan(root)
    msg = str(err.value)
    assert msg.startswith("CASME2-coding.xlsx: cannot be read as an .xlsx workbook (")
    assert "\n" not in msg


def test_casme2_explicit_sheet_of_wrong_kind(tmp_path):
    root = tmp_path / "CASME2/CASME2_RAW_selected"
    _few(root)
    csv = tmp_path / "coding.csv"
    csv.write_text("Subject,Filename\n01,EP02_01f\n")
    with pytest.raises(AnnotationError, match=r"^coding\.csv: cannot be read as an \.xlsx workbook"):
        get_reader("casme2").scan(root, csv)


def test_casme2_sheet_not_found(tmp_path):
    root = tmp_path / "CASME2/CASME2_RAW_selected"
    _few(root)
    with pytest.raises(AnnotationError, match="no annotation sheet CASME2-coding"):
        get_reader("casme2").scan(root)
    with pytest.raises(AnnotationError, match="annotation sheet not found: "):
        get_reader("casme2").scan(root, tmp_path / "nope.xlsx")


def test_casme2_newest_looking_sheet_wins(tmp_path):
    root = make_casme(tmp_path, [casme_row("01", "EP02_01f", 1, 2, 3, emotion="fear")],
                      sheet="CASME2-coding-20140508.xlsx")
    make_casme(tmp_path, [casme_row("01", "EP02_01f", 1, 2, 3, emotion="sadness")],
               sheet="CASME2-coding-20190701.xlsx")
    _few(root)
    (clip,) = get_reader("casme2").scan(root)
    assert (clip.emotion, clip.source) == ("sadness", "CASME2-coding-20190701.xlsx row 2")


def test_casme2_sheet_inside_root(tmp_path):
    root = tmp_path / "CASME2_RAW_selected"
    root.mkdir()
    write_xlsx(root / "CASME2-coding.xlsx", [CASME_HEADER, casme_row("01", "EP02_01f", 1, 2, 3)])
    _few(root)
    assert [i.id for i in get_reader("casme2").scan(root)] == ["casme2/sub01/EP02_01f"]


@pytest.mark.parametrize("make", [
    pytest.param(lambda p: None, id="missing"),
    pytest.param(lambda p: p.write_text("x"), id="a-file"),
])
def test_missing_root(tmp_path, make):
    root = tmp_path / "CASME2_RAW_selected"
    make(root)
    for name in ("casme2", "samm", "smic"):
        with pytest.raises(DatasetError, match=r"^dataset root .* (not found|is not a folder): give"):
            get_reader(name).scan(root, None if name == "smic" else tmp_path / "x.xlsx")


def test_root_without_subject_folders(tmp_path):
    # The usual slip: giving CASME2/ instead of CASME2/CASME2_RAW_selected/.
    root = make_casme(tmp_path, [casme_row("01", "EP02_01f", 1, 2, 3)])
    _few(root)
    with pytest.raises(DatasetError, match="no casme2 subject folders in .*CASME2_RAW_selected"):
        get_reader("casme2").scan(root.parent, root.parent / "CASME2-coding.xlsx")


def test_scan_never_decodes(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("a frame was decoded during scan")

    monkeypatch.setattr(cv2, "imread", boom)
    monkeypatch.setattr(cv2, "imdecode", boom)
    root = make_casme(tmp_path, [casme_row("01", "EP02_01f", 1, 2, 3)])
    _few(root)
    (root / "sub01/EP02_01f/img2.jpg").write_bytes(b"not a jpeg at all")
    (clip,) = get_reader("casme2").scan(root)
    assert clip.frame_numbers == [1, 2, 3]


# ---------------------------------------------------------------------------------------------
# SAMM

SAMM_HEADER = ("Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame",
               "Duration", "Micro", "Action Units", "Estimated Emotion", "Objective Classes", "Notes")
SAMM_NOTES = [("SAMM micro-movement FACS codes",)] + [(f"note {i}",) for i in range(2, 13)] + [()]


def samm_row(subject, clip, onset, apex, offset, aus="L12 or L14", emotion="Anger", row=15):
    return (subject, clip, 1, onset, apex, offset, f"=F{row}-D{row}", "Micro", aus, emotion, 1, None)


def make_samm(tmp_path, rows, *, notes=SAMM_NOTES, header=SAMM_HEADER, title="MICRO_ONLY",
              extra_sheets=("FACS_ALL",), name="SAMM_Micro_FACS_Codes_v2.xlsx"):
    base = tmp_path / "SAMM_data"
    root = base / "SAMM"
    root.mkdir(parents=True, exist_ok=True)
    write_xlsx(base / name, [*notes, header, *rows], title=title, extra_sheets=extra_sheets)
    return root


def _samm_frames(root, subject="006", clip="006_1_2", numbers=range(5562, 5568)):
    write_frames(root / subject / clip, numbers, f"{subject}_{{:05d}}.jpg")


def test_samm_header_after_notes(tmp_path):
    rows = [samm_row("006", "006_1_2", 5562, 5564, 5566),
            samm_row(7, "007_3_1", 100, "/", 104, aus="A1/A2", emotion="Other", row=16)]
    root = make_samm(tmp_path, rows)
    _samm_frames(root)
    _samm_frames(root, "007", "007_3_1", range(98, 106))
    items = by_id(get_reader("samm").scan(root))
    a, b = items["samm/006/006_1_2"], items["samm/007/007_3_1"]
    assert a.frame_numbers == [5562, 5563, 5564, 5565, 5566]
    assert [p.name for p in a.frames][0] == "006_05562.jpg"
    assert (a.onset, a.apex, a.offset, a.fps) == (5562, 5564, 5566, 200.0)
    assert (a.aus, a.aus_raw, a.emotion) == (["L12", "L14"], "L12 or L14", "anger")
    assert a.source == "SAMM_Micro_FACS_Codes_v2.xlsx row 15" and a.warnings == []
    assert (b.aus, b.aus_raw, b.emotion, b.apex) == (["A1", "A2"], "A1/A2", "other", None)
    assert b.warnings == ["apex not given ('/')"]


def test_samm_first_sheet_when_no_micro_only(tmp_path):
    root = make_samm(tmp_path, [samm_row("006", "006_1_2", 5562, 5564, 5566)], title="Sheet1",
                     extra_sheets=())
    _samm_frames(root)
    assert [i.id for i in get_reader("samm").scan(root)] == ["samm/006/006_1_2"]


@pytest.mark.parametrize(
    ("cell", "reason"),
    [pytest.param("=C15+5000", "Onset Frame holds a formula ('=C15+5000'); formulas are not evaluated",
                  id="samm-onset-formula"),
     pytest.param(datetime.datetime(2020, 1, 5), "Onset Frame holds a date/time", id="samm-onset-date"),
     pytest.param(None, "Onset Frame is blank", id="samm-onset-blank")],
)
def test_samm_bad_number_cells(tmp_path, cell, reason):
    root = make_samm(tmp_path, [samm_row("006", "006_1_2", cell, 5564, 5566)])
    _samm_frames(root)
    (skip,) = get_reader("samm").scan(root)
    assert isinstance(skip, Skip)
    assert skip.reason == f"SAMM_Micro_FACS_Codes_v2.xlsx row 15: {reason}" or reason in skip.reason


def test_samm_no_header_row(tmp_path):
    root = make_samm(tmp_path, [], header=("Subj", "File"))
    _samm_frames(root)
    with pytest.raises(AnnotationError) as err:
        get_reader("samm").scan(root)
    assert str(err.value) == (
        "SAMM_Micro_FACS_Codes_v2.xlsx: no header row (a row holding 'Subject' and 'Filename') "
        "in sheet 'MICRO_ONLY'; use the coding sheet published with the dataset or a manifest CSV"
    )


def test_samm_missing_column_names_row_14(tmp_path):
    header = tuple(h for h in SAMM_HEADER if h != "Apex Frame")
    root = make_samm(tmp_path, [], header=header)
    _samm_frames(root)
    with pytest.raises(AnnotationError, match=r"missing column 'Apex Frame' in the header row \(row 14\)"):
        get_reader("samm").scan(root)


def test_samm_unknown_emotion_and_subject_spellings(tmp_path):
    rows = [samm_row(6.0, "006_1_2", 5562, 5563, 5566, emotion="Confused"),
            samm_row("6", "006_1_2", 5562, 5563, 5566, row=16)]
    root = make_samm(tmp_path, rows)
    _samm_frames(root)
    clip, dup = get_reader("samm").scan(root)
    assert clip.emotion == "confused"
    assert any("'Confused' is not one of the samm labels" in w for w in clip.warnings)
    assert dup.id == "samm/006/006_1_2" and "row 16: duplicate of row 15" in dup.reason


# ---------------------------------------------------------------------------------------------
# SMIC-HS


def make_smic(tmp_path):
    root = tmp_path / "SMIC/HS"
    write_frames(root / "s1/micro/negative/s1_ne_01", range(99, 104), "image{:06d}.bmp")
    write_frames(root / "s1/micro/positive/s1_po_02", [8, 9, 10, 11], "image{:06d}.bmp")
    write_frames(root / "s1/non_micro/negative/s1_ne_09", [1, 2], "image{:06d}.bmp")
    write_frames(root / "s01x/micro/negative/s01x_ne_01", [1], "image{:06d}.bmp")
    write_frames(root / "s02/micro/surprise/s02_sur_01", [5, 6, 7], "image{:06d}.bmp")
    return root


def test_smic_labels_from_folders(tmp_path):
    root = make_smic(tmp_path)
    items = list(get_reader("smic").scan(root))
    clips = {i.id: i for i in items if isinstance(i, ClipSpec)}
    assert sorted(clips) == ["smic/s1/s1_ne_01", "smic/s1/s1_po_02", "smic/s2/s2_sur_01"]
    ne = clips["smic/s1/s1_ne_01"]
    assert (ne.emotion, ne.fps, ne.onset, ne.offset, ne.apex) == ("negative", 100.0, None, None, 101)
    assert ne.frame_numbers == [99, 100, 101, 102, 103] and ne.warnings == []
    assert "middle frame" in ne.source
    assert clips["smic/s1/s1_po_02"].apex == 10
    assert clips["smic/s2/s2_sur_01"].folder.name == "s02_sur_01"  # s02 on disk, s2 in the key
    skips = [i for i in items if isinstance(i, Skip)]
    assert [s.id for s in skips] == ["smic/s01x"]  # not a subject folder; non_micro ignored


@pytest.mark.parametrize(
    ("extra", "clip_id", "expect"),
    [pytest.param(("s01/micro/negative/s01_ne_01", "x"), "smic/s1/s1_ne_01",
                  {"skip": "is the same clip as"}, id="smic-s01-and-s1"),
     pytest.param(("s3/micro/Happy/s3_ha_01", "x"), "smic/s3/s3_ha_01",
                  {"emotion": "happy", "warn": "emotion 'Happy' is not one of the smic labels"},
                  id="smic-unknown-emotion-folder"),
     pytest.param(("s4/notes", None), "smic/s4", {"skip": "holds no micro/ folder"}, id="smic-no-micro"),
     pytest.param(("s5/micro/negative/s5_ne_01", "gap"), "smic/s5/s5_ne_01",
                  {"numbers": [1, 2, 5], "warn": "frames 3-4 missing inside the clip", "apex": 2},
                  id="smic-gap")],
)
def test_smic_cases(tmp_path, extra, clip_id, expect):
    root = make_smic(tmp_path)
    rel, kind = extra
    if kind is None:
        (root / rel).mkdir(parents=True)
    else:
        write_frames(root / rel, [1, 2, 5] if kind == "gap" else [1, 2, 3], "image{:06d}.bmp")
    items = list(get_reader("smic").scan(root))
    check(items, clip_id, expect, root)
    if "skip" in expect and "same clip" in expect["skip"]:
        assert [i.id for i in items].count("smic/s1/s1_ne_01") == 2
        assert isinstance(next(i for i in items if i.id == "smic/s1/s1_ne_01"), ClipSpec)


def test_smic_refuses_a_sheet(tmp_path):
    with pytest.raises(AnnotationError, match="smic takes no annotation sheet"):
        get_reader("smic").scan(make_smic(tmp_path), tmp_path / "x.xlsx")


def test_smic_wrong_root(tmp_path):
    root = make_smic(tmp_path)
    with pytest.raises(DatasetError, match="no smic subject folders .*give the HS/ folder"):
        get_reader("smic").scan(root.parent)


# ---------------------------------------------------------------------------------------------
# manifest

MANIFEST_HEADER = "dataset,subject,clip,folder,label,onset,apex,offset,aus,fps"


def make_manifest(tmp_path, lines, header=MANIFEST_HEADER):
    root = tmp_path / "data"
    write_frames(root / "mmew/S01/clipA", range(1, 11), "{}.png")
    write_frames(root / "casme3/spNO.1/a", [1, 2, 3])
    path = tmp_path / "manifest.csv"
    path.write_text("\n".join([header, *lines]) + "\n")
    return root, path


def _outside(tmp_path):
    write_frames(tmp_path / "secret/clip", [1, 2, 3])


MANIFEST_CASES = [
    pytest.param(["mmew,S01,clipA,mmew/S01/clipA,Happiness,3,5,6,12+L4,90"], None, "mmew/S01/clipA",
                 {"numbers": [3, 4, 5, 6], "apex": 5, "emotion": "happiness", "aus": ["12", "L4"],
                  "source": "manifest.csv row 2", "warnings": [], "fps": 90.0}, id="manifest-range"),
    pytest.param(["mmew,S01,clipA,./mmew/S01/clipA/,others,,,,,"], None, "mmew/S01/clipA",
                 {"numbers": list(range(1, 11)), "apex": None,
                  "warn": "fps not given; assumed 30", "fps": 30.0}, id="manifest-whole-folder"),
    pytest.param(["casme2,1,EP01,casme3/spNO.1/a,Others,,,,,"], None, "casme2/sub01/EP01",
                 {"fps": 200.0, "emotion": "others", "warnings": []}, id="manifest-native-dataset"),
    pytest.param(["casme2,1,EP01,casme3/spNO.1/a,joy,,,,,"], None, "casme2/sub01/EP01",
                 {"warn": "emotion 'joy' is not one of the casme2 labels"}, id="manifest-unknown-emotion"),
    pytest.param(["mmew,S01,x,../secret/clip,happy,,,,,1"], _outside, "mmew/S01/x",
                 {"skip": "manifest.csv row 2: folder '../secret/clip' contains '..'"},
                 id="manifest-dotdot"),
    pytest.param(["mmew,S01,x,{tmp}/secret/clip,happy,,,,,1"], _outside, "mmew/S01/x",
                 {"skip": "is an absolute path"}, id="manifest-absolute"),
    pytest.param(["mmew,S01,x,link,happy,,,,,1"],
                 lambda t: (_outside(t), os.symlink(t / "secret/clip", t / "data/link")), "mmew/S01/x",
                 {"skip": "resolves to a place outside the dataset root"}, id="manifest-symlink-out"),
    pytest.param(["mmew,S01,x,mmew/S01/clipA/evil,happy,,,,,1"],
                 lambda t: os.symlink(t / "secret", t / "data/mmew/S01/clipA/evil"), "mmew/S01/x",
                 {"skip": "resolves to a place outside the dataset root"}, id="manifest-dangling-symlink-out"),
    pytest.param(["mmew,S01,x,loop,happy,,,,,1"], lambda t: os.symlink("loop", t / "data/loop"), "mmew/S01/x",
                 {"skip": "is a symlink loop"}, id="manifest-symlink-loop"),
    pytest.param(["mmew,S01,x,nowhere,happy,,,,,1"], None, "mmew/S01/x",
                 {"skip": "does not exist"}, id="manifest-no-folder"),
    pytest.param(["mmew,S01,clipA,mmew/S01/clipA,happy,1,,,,1", ], None, "mmew/S01/clipA",
                 {"skip": "onset given without offset; give both or neither"}, id="manifest-onset-only"),
    pytest.param(["mmew,S01,clipA,mmew/S01/clipA,happy,8,,2,,1"], None, "mmew/S01/clipA",
                 {"skip": "manifest.csv row 2: onset 8 > offset 2"}, id="manifest-onset-after-offset"),
    pytest.param(["mmew,S01,clipA,mmew/S01/clipA,happy,,,,,-3"], None, "mmew/S01/clipA",
                 {"skip": "fps '-3' is not a positive number"}, id="manifest-bad-fps"),
    pytest.param(["mmew,S01,clipA,mmew/S01/clipA,happy,1,/,3,,1", "mmew,S01,clipA,casme3/spNO.1/a,sad,,,,,1"],
                 None, "mmew/S01/clipA",
                 {"numbers": [1, 2, 3], "warnings": ["apex not given ('/')"],
                  "dup": "manifest.csv row 3: duplicate of row 2"}, id="manifest-duplicate-row"),
    pytest.param(["mmew,..,clipA,mmew/S01/clipA,happy,,,,,1"], None, "mmew/../clipA",
                 {"skip": "manifest.csv row 2: invalid subject id '..'"}, id="manifest-bad-subject"),
    pytest.param(["mmew,S 01,clipA,mmew/S01/clipA,happy,,,,,1"], None, "mmew/S 01/clipA",
                 {"numbers": list(range(1, 11))}, id="manifest-blank-inside-a-name"),
]


@pytest.mark.parametrize(("lines", "disk", "clip_id", "expect"), MANIFEST_CASES)
def test_manifest_cases(tmp_path, lines, disk, clip_id, expect):
    root, path = make_manifest(tmp_path, [ln.replace("{tmp}", str(tmp_path)) for ln in lines])
    if disk:
        disk(tmp_path)
    items = list(get_reader("manifest").scan(root, path))
    fps = expect.pop("fps", None)
    check(items, clip_id, expect, root)
    if fps is not None:
        assert next(i for i in items if i.id == clip_id).fps == fps


def test_manifest_required_and_columns(tmp_path):
    root, path = make_manifest(tmp_path, [])
    with pytest.raises(AnnotationError, match="the manifest reader needs the manifest CSV"):
        get_reader("manifest").scan(root)
    with pytest.raises(AnnotationError, match="manifest not found"):
        get_reader("manifest").scan(root, tmp_path / "nope.csv")
    path.write_text("Dataset,Subject,Clip,Label\nmmew,S01,clipA,happy\n")
    with pytest.raises(AnnotationError) as err:
        get_reader("manifest").scan(root, path)
    assert str(err.value) == (
        "manifest.csv: missing column 'folder' in the header row (row 1); found: Dataset, Subject, "
        "Clip, Label; a manifest needs the columns dataset, subject, clip, folder, label "
        "(optional: onset, apex, offset, aus, fps)"
    )
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(AnnotationError, match="manifest.csv: cannot be read as a UTF-8 CSV file"):
        get_reader("manifest").scan(root, path)


def test_manifest_semicolons_bom_and_order(tmp_path):
    root, path = make_manifest(tmp_path, [])
    path.write_text("\ufeffdataset;subject;clip;folder;label\n"
                    "mmew;S01;z;mmew/S01/clipA;happy\n\nmmew;S01;a;casme3/spNO.1/a;sad\n", encoding="utf-8")
    items = list(get_reader("manifest").scan(root, path))
    assert [(i.id, i.source) for i in items] == [("mmew/S01/a", "manifest.csv row 4"),
                                                ("mmew/S01/z", "manifest.csv row 2")]


# ---------------------------------------------------------------------------------------------
# names in any script; one Skip per refused clip


def test_casme2_unicode_clip_folder(tmp_path):
    root = make_casme(tmp_path, [casme_row("01", "EP02_03é", 1, 2, 3)])
    write_frames(root / "sub01/EP02_03é", [1, 2, 3])
    (clip,) = get_reader("casme2").scan(root)
    assert isinstance(clip, ClipSpec)
    assert clip.id == "casme2/sub01/EP02_03é"
    assert clip.frame_numbers == [1, 2, 3] and clip.source == "CASME2-coding.xlsx row 2"


def test_casme2_decomposed_folder_name_matches_the_sheet(tmp_path):
    # A folder copied from macOS spells é as e + a combining accent; the sheet types it composed.
    root = make_casme(tmp_path, [casme_row(1, "EP02_03é", 1, 2, 3)])
    write_frames(root / "sub01" / unicodedata.normalize("NFD", "EP02_03é"), [1, 2, 3])
    (clip,) = get_reader("casme2").scan(root)
    assert isinstance(clip, ClipSpec) and clip.id == "casme2/sub01/EP02_03é"


def test_manifest_chinese_names(tmp_path):
    root, path = make_manifest(tmp_path, ["实验室,被试1,表情01,表情/01,高兴,,,,,30",
                                          "casme2,1,表情02,表情/01,Others,,,,,"])
    write_frames(root / "表情/01", [1, 2, 3])
    items = by_id(get_reader("manifest").scan(root, path))
    assert sorted(items) == ["casme2/sub01/表情02", "实验室/被试1/表情01"]
    lab = items["实验室/被试1/表情01"]
    assert isinstance(lab, ClipSpec) and (lab.emotion, lab.frame_numbers) == ("高兴", [1, 2, 3])
    assert items["casme2/sub01/表情02"].fps == 200.0


_ALLOWED = ("rename it (a name may use letters, digits, blanks and punctuation of any script, but no "
            "'/', '\\' or control characters, and may not be '.' or '..')")


@pytest.mark.parametrize(
    ("cell", "shown", "why"),
    [pytest.param("a/b", "a/b", "the name holds '/', a path separator", id="slash"),
     pytest.param("..", "..", "'..' is a relative path, not a name", id="dotdot"),
     pytest.param("a\x07b", "a\\x07b", "the name holds the control character U+0007",
                  id="control-character")],
)
def test_manifest_refused_names(tmp_path, cell, shown, why):
    root, path = make_manifest(tmp_path, [f"lab,p1,{cell},mmew/S01/clipA,happy,,,,,30"])
    (skip,) = get_reader("manifest").scan(root, path)
    assert isinstance(skip, Skip) and skip.id == f"lab/p1/{shown}"
    assert skip.reason == f"manifest.csv row 2: invalid clip name '{shown}': {why}; {_ALLOWED}"


def test_casme2_refused_clip_is_one_skip_under_the_canonical_id(tmp_path):
    # The folder says sub01, the sheet says 1: both are the clip casme2/sub01/EP02_04\.
    rows = [casme_row(1, "EP02_01f", 1, 2, 3), casme_row(1, "EP02_04\\", 1, 2, 3),
            casme_row("01", "EP05_\\x", 1, 2, 3)]
    root = make_casme(tmp_path, rows)
    for name in ("EP02_01f", "EP02_04\\", "EP09\x01"):
        write_frames(root / "sub01" / name, [1, 2, 3])
    items = list(get_reader("casme2").scan(root))
    assert [i.id for i in items] == ["casme2/sub01/EP02_01f", "casme2/sub01/EP02_04\\",
                                     "casme2/sub01/EP05_\\x", "casme2/sub01/EP09\\x01"]
    both, row_only, folder_only = items[1:]
    assert isinstance(both, Skip) and both.source == "CASME2-coding.xlsx row 3"
    assert both.reason.startswith(f"folder {root.resolve()}/sub01/EP02_04\\: invalid clip name")
    assert row_only.reason.startswith("CASME2-coding.xlsx row 4: invalid clip name 'EP05_\\x'")
    assert folder_only.source == "folder name"
    assert folder_only.reason.endswith(
        f"EP09\\x01: invalid clip name 'EP09\\x01': the name holds the control character U+0001; {_ALLOWED}"
    )


def test_smic_refused_clip_is_named_by_the_canonical_subject(tmp_path):
    root = make_smic(tmp_path)
    write_frames(root / "s02/micro/negative/s02_ne\x0101", [1, 2], "image{:06d}.bmp")
    skips = [i for i in get_reader("smic").scan(root) if isinstance(i, Skip)]
    assert [s.id for s in skips] == ["smic/s01x", "smic/s2/s2_ne\\x0101"]


# ---------------------------------------------------------------------------------------------
# registry and shared helpers


def test_registry():
    assert sorted(READERS) == ["casme2", "manifest", "samm", "smic"]
    assert {n: r.fps for n, r in READERS.items() if n != "manifest"} == {
        "casme2": 200.0, "samm": 200.0, "smic": 100.0}
    assert all(r.name == n for n, r in READERS.items())
    assert get_reader(" CASME2 ") is READERS["casme2"]
    with pytest.raises(ConfigError) as err:
        get_reader("x")
    assert str(err.value) == "unknown dataset 'x': allowed values are casme2, manifest, samm, smic"


@pytest.mark.parametrize(
    ("cell", "aus"),
    [pytest.param(12, ["12"], id="int"), pytest.param(12.0, ["12"], id="float"),
     pytest.param("4+7+L10", ["4", "7", "L10"], id="plus"),
     pytest.param("L12 or L14", ["L12", "L14"], id="or"), pytest.param("A1/A2", ["A1", "A2"], id="slash"),
     pytest.param(" (R14A) + 12 ", ["R14A", "12"], id="brackets"),
     pytest.param(None, [], id="blank"), pytest.param("12+12", ["12"], id="repeat")],
)
def test_parse_aus(cell, aus):
    assert parse_aus(cell)[0] == aus


def test_format_ranges():
    assert format_ranges([(40, 45), (50, 50)]) == "40-45, 50"
    assert format_ranges([(i, i) for i in range(10)], limit=3) == "0, 1, 2, and 7 more"
