"""A corpus of malformed datasets, sheets and stores, each run through the real command line.

Every case builds a small broken input under ``tmp_path`` and runs ``roistore`` on it. What must
hold, always: no traceback; either a one-line ``Error: ...`` naming the file or row and what to
do (exit 1), or a recorded skip with its reason in ``roistore info --json``; good clips beside
the bad ones are ingested, and clips already in the store are never lost. Ingest cases append
to a copy of one small store made once (clip ``lab/p0/base``, ``t_max`` 20), so a case that
fails as a whole shows the store unharmed, and a case that skips shows the good clips added.

Most bad inputs fail before any face detection (tiny 8x8 frames); good clips use the
astronaut frame of ``conftest.py`` and two frames each.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import openpyxl
import pytest
from click.testing import CliRunner, Result

import roi_store
from roi_store.cli.main import cli
from roi_store.errors import StoreError
from roi_store.ingest.pipeline import ingest

from conftest import write_clip, write_manifest

T_MAX = 20
BASE = "lab/p0/base"
_TINY = np.zeros((8, 8, 3), np.uint8)


# ---------------------------------------------------------------------------------------------
# running the command line


def invoke(*args) -> Result:
    """Run ``roistore ARGS`` in-process; no traceback, no exception but a clean exit."""
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def assert_one_line_error(result, *parts: str) -> str:
    """Exit 1 and exactly one ``Error:`` line, the last one, holding every part."""
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("Error:")]
    assert len(errors) == 1 and errors[0] == lines[-1], result.output
    for part in parts:
        assert part in errors[0], (part, errors[0])
    return errors[0]


def info(store: Path) -> dict:
    result = invoke("info", store, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


# ---------------------------------------------------------------------------------------------
# writing small files


def encode(image: np.ndarray, suffix: str = ".jpg") -> bytes:
    ok, data = cv2.imencode(suffix, image)
    assert ok
    return data.tobytes()


def put(path: Path | bytes, data: bytes) -> None:
    """Write bytes at ``path`` (a bytes path may hold names that are not UTF-8)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


def tiny_frames(folder: Path, numbers, pattern: str = "img{n}.jpg") -> None:
    for n in numbers:
        put(folder / pattern.format(n=n), encode(_TINY, Path(pattern).suffix))


def face_clip(folder: Path, face: np.ndarray, numbers=(1, 2), pattern: str = "img{n}.jpg") -> None:
    if Path(pattern).suffix.lower() in (".jpg", ".jpeg"):
        write_clip(folder, face, numbers, pattern=pattern)
    else:
        for n in numbers:
            put(folder / pattern.format(n=n), encode(face, Path(pattern).suffix))


def write_xlsx(path: Path, rows, *, title: str = "Sheet1", edit: Callable | None = None) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = title
    for row in rows:
        ws.append(list(row))
    if edit:
        edit(wb)
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    return path


# ---------------------------------------------------------------------------------------------
# the four layouts, each with one good clip


@dataclasses.dataclass
class Case:
    """What a builder made, and what ingesting it must give."""

    dataset: str
    root: Path
    annotations: Path | None = None
    good: tuple[str, ...] = ()  # complete after the ingest
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)  # id -> part of the reason
    warned: dict[str, str] = dataclasses.field(default_factory=dict)  # good id -> part of a warning
    error: tuple[str, ...] = ()  # parts of the one-line error (the ingest fails as a whole)
    secret: str = ""  # text of a file outside the dataset, which must show up nowhere


@dataclasses.dataclass
class Ctx:
    tmp: Path
    face: np.ndarray
    monkeypatch: pytest.MonkeyPatch


CASME_HEADER = ("Subject", "Filename", None, "OnsetFrame", "ApexFrame", "OffsetFrame", None,
                "Action Units", "Estimated Emotion")
CASME_GOOD = ("01", "EP01_01", None, 1, 1, 2, None, "12", "happiness")


def casme(ctx: Ctx, rows=(), header=CASME_HEADER, good=True, **kw) -> Case:
    root = ctx.tmp / "CASME2" / "CASME2_RAW_selected"
    root.mkdir(parents=True)
    body = [header, *([CASME_GOOD] if good else []), *rows]
    sheet = write_xlsx(ctx.tmp / "CASME2" / "CASME2-coding.xlsx", body, **kw)
    if good:
        face_clip(root / "sub01" / "EP01_01", ctx.face)
    return Case("casme2", root, sheet, good=("casme2/sub01/EP01_01",) if good else ())


def casme_row(clip, onset=1, apex=1, offset=2, subject="02", emotion="disgust", aus="4"):
    return (subject, clip, None, onset, apex, offset, None, aus, emotion)


SAMM_HEADER = ("Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame",
               "Duration", "Micro", "Action Units", "Estimated Emotion")


def samm(ctx: Ctx, rows=()) -> Case:
    root = ctx.tmp / "SAMM_data" / "SAMM"
    notes = [("SAMM micro-movement FACS codes",), ("note",), ()]
    good = ("006", "006_1_2", 1, 100, 100, 101, "=F5-D5", "Micro", "12", "Happiness")
    sheet = write_xlsx(ctx.tmp / "SAMM_data" / "SAMM_Micro_FACS_Codes_v2.xlsx",
                       [*notes, SAMM_HEADER, good, *rows], title="MICRO_ONLY")
    face_clip(root / "006" / "006_1_2", ctx.face, (100, 101), "006_{n:05d}.jpg")
    return Case("samm", root, sheet, good=("samm/006/006_1_2",))


def smic(ctx: Ctx) -> Case:
    root = ctx.tmp / "SMIC" / "HS"
    face_clip(root / "s1" / "micro" / "positive" / "s1_po_01", ctx.face, (1, 2), "image{n:06d}.bmp")
    return Case("smic", root, good=("smic/s1/s1_po_01",))


MANIFEST_FIELDS = ["dataset", "subject", "clip", "folder", "label", "onset", "apex", "offset", "aus", "fps"]


def manifest(ctx: Ctx, rows=(), good=True, text: str | None = None) -> Case:
    """A manifest dataset; ``rows`` are dicts (or a raw ``text`` replaces the whole file)."""
    root = ctx.tmp / "data"
    root.mkdir(parents=True, exist_ok=True)
    path = ctx.tmp / "manifest.csv"
    listed = ([{"dataset": "lab", "subject": "p1", "clip": "good", "folder": "p1/good", "label": "happy",
                "fps": "30"}] if good else []) + list(rows)
    if good:
        face_clip(root / "p1" / "good", ctx.face)
    if text is None:
        lines = [",".join(MANIFEST_FIELDS)]
        lines += [",".join(str(r.get(k, "")) for k in MANIFEST_FIELDS) for r in listed]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return Case("manifest", root, path, good=("lab/p1/good",) if good else ())


def row(clip, folder=None, **kw):
    return {"dataset": "lab", "subject": "p2", "clip": clip, "folder": folder or f"p2/{clip}",
            "label": "sad", "fps": "30", **kw}


# ---------------------------------------------------------------------------------------------
# frames


def _frame_damage(ctx, data: bytes | Callable[[bytes], bytes], reason: str, suffix=".jpg") -> Case:
    c = manifest(ctx, [row("bad")])
    folder = c.root / "p2" / "bad"
    face_clip(folder, ctx.face, (1, 2, 3), f"img{{n}}{suffix}")
    frame = folder / f"img2{suffix}"
    put(frame, data(frame.read_bytes()) if callable(data) else data)
    c.skipped["lab/p2/bad"] = reason
    return c


def truncated_jpeg(ctx):
    return _frame_damage(ctx, lambda b: b[: len(b) // 3], "img2.jpg is truncated (no JPEG end marker)")


def truncated_png(ctx):
    return _frame_damage(ctx, lambda b: b[: len(b) // 3], "img2.png is not a decodable image", ".png")


def zero_byte_frame(ctx):
    return _frame_damage(ctx, b"", "img2.jpg is empty (0 bytes): restore it")


def text_file_as_jpeg(ctx):
    return _frame_damage(ctx, b"just some notes\n", "img2.jpg is not a JPEG image")


def html_as_png(ctx):
    return _frame_damage(ctx, b"<html><body>404 Not Found</body></html>", "img2.png is not a decodable image",
                         ".png")


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def huge_frame_dimensions(ctx):
    # 100000 x 100000 declared in 100 bytes: a decompression bomb must be refused, not allocated.
    return _frame_damage(ctx, _png_header_only(100_000, 100_000), "img2.png is too large to decode", ".png")


def sliver_frames(ctx):
    # 1 x 5000 pixels: no face, and nothing may fail while looking for one.
    c = manifest(ctx, [row("sliver")])
    for n in (1, 2):
        put(c.root / "p2" / "sliver" / f"img{n}.png", encode(np.full((1, 5000), 128, np.uint8), ".png"))
    c.skipped["lab/p2/sliver"] = "no face found on the first frame of lab/p2/sliver (img1.png)"
    return c


def permission_denied_frame(ctx):
    c = _frame_damage(ctx, lambda b: b, "img2.jpg: Permission denied")
    denied = c.root / "p2" / "bad" / "img2.jpg"
    denied.chmod(0)
    real = Path.read_bytes

    def read_bytes(self):  # root reads anything: say what a normal user's read would say
        if self == denied:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    ctx.monkeypatch.setattr(Path, "read_bytes", read_bytes)
    return c


def mixed_frame_sizes(ctx):
    c = manifest(ctx, [row("bad")])
    face_clip(c.root / "p2" / "bad", ctx.face, (1, 2))
    put(c.root / "p2" / "bad" / "img3.jpg", encode(cv2.resize(ctx.face, (320, 240))))
    c.skipped["lab/p2/bad"] = "mixed frame sizes in one clip"
    return c


def huge_clip(ctx):
    c = manifest(ctx, [row("long")])
    tiny_frames(c.root / "p2" / "long", range(1, T_MAX + 6))
    c.skipped["lab/p2/long"] = f"has {T_MAX + 5} frames, more than the store's t_max of {T_MAX}"
    return c


def frame_gap(ctx):
    c = manifest(ctx, [row("gap")])
    face_clip(c.root / "p2" / "gap", ctx.face, (1, 2, 5))
    c.good += ("lab/p2/gap",)
    c.warned["lab/p2/gap"] = "frames 3-4 missing inside the clip"
    return c


def empty_clip_folder(ctx):
    c = manifest(ctx, [row("empty")])
    (c.root / "p2" / "empty").mkdir(parents=True)
    c.skipped["lab/p2/empty"] = "no frame files in folder"
    return c


def only_non_image_files(ctx):
    c = manifest(ctx, [row("junk")])
    for name in ("Thumbs.db", "notes.txt", ".DS_Store", "._img1.jpg"):
        put(c.root / "p2" / "junk" / name, b"not a frame")
    c.skipped["lab/p2/junk"] = "no frame files in folder"
    return c


def unnumbered_frames(ctx):
    c = manifest(ctx, [row("names")])
    tiny_frames(c.root / "p2" / "names", ("first", "second"), "{n}.jpg")
    c.skipped["lab/p2/names"] = "no frame files in folder (ignored 2 image files with no frame number"
    return c


def duplicate_frame_numbers(ctx):
    c = manifest(ctx, [row("dup")])
    tiny_frames(c.root / "p2" / "dup", (1, 2))
    tiny_frames(c.root / "p2" / "dup", ("02",))
    c.skipped["lab/p2/dup"] = "two frame files share frame number 2: img02.jpg, img2.jpg; keep one"
    return c


def uppercase_extensions(ctx):
    c = manifest(ctx, [row("upper")])
    face_clip(c.root / "p2" / "upper", ctx.face, (1, 2), "IMG{n}.JPG")
    c.good += ("lab/p2/upper",)
    return c


def grey_and_colour_mixed(ctx):
    c = manifest(ctx, [row("mixed")])
    face_clip(c.root / "p2" / "mixed", ctx.face, (1, 2))
    put(c.root / "p2" / "mixed" / "img3.jpg", encode(cv2.cvtColor(ctx.face, cv2.COLOR_BGR2GRAY)))
    c.good += ("lab/p2/mixed",)
    return c


def png_16_bit(ctx):
    c = manifest(ctx, [row("deep")])
    put(c.root / "p2" / "deep" / "img1.png", encode(ctx.face.astype(np.uint16) * 257, ".png"))
    put(c.root / "p2" / "deep" / "img2.png", encode(ctx.face, ".png"))
    c.good += ("lab/p2/deep",)
    return c


def cmyk_jpeg(ctx):
    from PIL import Image

    c = manifest(ctx, [row("cmyk")])
    folder = c.root / "p2" / "cmyk"
    face_clip(folder, ctx.face, (1, 2))
    Image.fromarray(cv2.cvtColor(ctx.face, cv2.COLOR_BGR2RGB)).convert("CMYK").save(folder / "img3.jpg")
    c.good += ("lab/p2/cmyk",)
    return c


def jpeg_and_png_in_one_clip(ctx):
    # Large frames make ingest decode JPEGs at reduced size; the PNG must come out the same size.
    c = manifest(ctx, [row("png")])
    big = cv2.resize(ctx.face, (1920, 1440), interpolation=cv2.INTER_CUBIC)
    face_clip(c.root / "p2" / "png", big, (1, 2))
    put(c.root / "p2" / "png" / "img3.png", encode(big, ".png"))
    c.good += ("lab/p2/png",)
    return c


def directory_named_like_a_frame(ctx):
    c = manifest(ctx, [row("dirframe")])
    face_clip(c.root / "p2" / "dirframe", ctx.face, (1, 2))
    (c.root / "p2" / "dirframe" / "img3.jpg").mkdir()
    c.good += ("lab/p2/dirframe",)
    c.warned["lab/p2/dirframe"] = "ignored 1 image name that cannot be read as a file"
    return c


def fifo_named_like_a_frame(ctx):
    # Reading a FIFO would block for ever: it must be left alone, never opened.
    c = manifest(ctx, [row("fifo")])
    face_clip(c.root / "p2" / "fifo", ctx.face, (1, 2))
    os.mkfifo(c.root / "p2" / "fifo" / "img3.jpg")
    c.good += ("lab/p2/fifo",)
    c.warned["lab/p2/fifo"] = "ignored 1 image name that cannot be read as a file"
    return c


def empty_dataset_root(ctx):
    c = casme(ctx, good=False)
    (c.root / "notes").mkdir()  # not a subject folder either
    c.error = ("no casme2 subject folders in", "CASME2_RAW_selected", "give the CASME2_RAW_selected/ folder")
    return c


def frame_folder_is_a_file(ctx):
    c = manifest(ctx, [row("file")])
    put(c.root / "p2" / "file", b"not a folder")
    c.skipped["lab/p2/file"] = "p2/file is not a folder"
    return c


def non_utf8_names(ctx):
    c = smic(ctx)
    micro = os.fsencode(c.root / "s1" / "micro")
    put(micro + b"/negative/s1_ne_\xff1/image000001.bmp", encode(_TINY, ".bmp"))  # a clip folder
    put(micro + b"/surprise/s1_sur_01/image000001.bmp", encode(ctx.face, ".bmp"))  # a good clip with
    put(micro + b"/surprise/s1_sur_01/imag\xe9000002.bmp", encode(ctx.face, ".bmp"))  # a Latin-1 frame name
    c.good += ("smic/s1/s1_sur_01",)
    c.skipped["smic/s1/s1_ne_\\xff1"] = "invalid clip name 's1_ne_\\xff1'"
    return c


def unicode_and_spaces_in_folders(ctx):
    c = manifest(ctx, [row("clip 1", folder="données brutes/p 2/clip 1"),
                       {**row("ok"), "subject": "Ünïcode", "folder": "données brutes/p 2/clip 1"}])
    face_clip(c.root / "données brutes" / "p 2" / "clip 1", ctx.face)
    c.good += ("lab/p2/clip 1", "lab/Ünïcode/ok")  # names in any script, blanks inside them too
    return c


def subject_folders_with_spaces_and_unicode(ctx):
    c = casme(ctx)
    tiny_frames(c.root / "sub 02" / "EP02_01", (1, 2))
    tiny_frames(c.root / "süb03" / "EP03_01", (1, 2))
    c.skipped["casme2/sub 02"] = "is not a casme2 subject folder"
    c.skipped["casme2/süb03"] = "is not a casme2 subject folder"
    return c


# ---------------------------------------------------------------------------------------------
# paths that lead out of the dataset


def _outside(ctx) -> Path:
    secret = ctx.tmp / "secret" / "clip"
    face_clip(secret, ctx.face)
    return secret


def dotdot_in_manifest(ctx):
    _outside(ctx)
    c = manifest(ctx, [row("dots", folder="p2/../../secret/clip")])
    c.skipped["lab/p2/dots"] = "contains '..'; give a path inside the root"
    return c


def absolute_path_in_manifest(ctx):
    c = manifest(ctx, [row("abs", folder=str(_outside(ctx)))])
    c.skipped["lab/p2/abs"] = "is an absolute path; give it relative to the root"
    return c


def windows_drive_in_manifest(ctx):
    c = manifest(ctx, [row("win", folder="C:\\data\\clip")])
    c.skipped["lab/p2/win"] = "is an absolute path"
    return c


def path_like_ids_in_manifest(ctx):
    # Ids become store paths: none may climb out of the store.
    c = manifest(ctx, [{**row("x"), "dataset": "../../evil"}, {**row("x"), "subject": ".."},
                       {**row("x"), "clip": "../../x"}])
    c.skipped["../../evil/p2/x"] = "invalid dataset name"
    c.skipped["lab/../x"] = "invalid subject id '..'"
    c.skipped["lab/p2/../../x"] = "invalid clip name '../../x'"
    return c


def ids_named_like_store_metadata(ctx):
    # A clip, subject or dataset called zarr.json would land on the metadata file of its parent group.
    c = manifest(ctx, [row("zarr.json", folder="p1/good"), {**row("x", folder="p1/good"), "subject": "ZARR.JSON"},
                       {**row("x", folder="p1/good"), "dataset": "zarr.json"}])
    c.skipped["lab/p2/zarr.json"] = "invalid clip name 'zarr.json': the name is reserved by the store format; rename"
    c.skipped["lab/ZARR.JSON/x"] = "invalid subject id 'ZARR.JSON': the name is reserved"
    c.skipped["zarr.json/p2/x"] = "invalid dataset name 'zarr.json': the name is reserved"
    return c


def symlink_clip_out_of_root(ctx):
    c = casme(ctx, [casme_row("EP02_01")])
    (c.root / "sub02").mkdir()
    os.symlink(_outside(ctx), c.root / "sub02" / "EP02_01")
    c.skipped["casme2/sub02/EP02_01"] = "resolves to a place outside the dataset root"
    return c


def symlink_frame_out_of_root(ctx):
    c = casme(ctx, [casme_row("EP02_01")])
    face_clip(c.root / "sub02" / "EP02_01", ctx.face, (1,))
    os.symlink(_outside(ctx) / "img2.jpg", c.root / "sub02" / "EP02_01" / "img2.jpg")
    c.skipped["casme2/sub02/EP02_01"] = "frame img2.jpg resolves to a place outside the dataset root"
    return c


def symlink_subject_out_of_root(ctx):
    c = smic(ctx)
    outside = ctx.tmp / "elsewhere" / "s2"
    tiny_frames(outside / "micro" / "negative" / "s2_ne_01", (1, 2), "image{n:06d}.bmp")
    os.symlink(outside, c.root / "s2")
    c.skipped["smic/s2"] = "resolves to a place outside the dataset root"
    return c


def symlink_loops(ctx):
    c = casme(ctx, [casme_row("EP02_01")])
    (c.root / "sub02").mkdir()
    os.symlink("EP02_01", c.root / "sub02" / "EP02_01")  # points at itself
    os.symlink("..", c.root / "sub01" / "EP01_01" / "up")  # a cycle through the tree
    c.skipped["casme2/sub02/EP02_01"] = "is a symlink loop"
    return c


def manifest_folder_through_symlink_out(ctx):
    c = manifest(ctx, [row("link", folder="p2/link")])
    (c.root / "p2").mkdir()
    os.symlink(_outside(ctx).parent, c.root / "p2" / "link")
    c.skipped["lab/p2/link"] = "resolves to a place outside the dataset root"
    return c


# ---------------------------------------------------------------------------------------------
# sheets


def _sheet_error(ctx, content: bytes, *parts: str) -> Case:
    c = casme(ctx)
    c.annotations.write_bytes(content)
    c.good, c.error = (), ("CASME2-coding.xlsx", *parts)
    return c


def garbage_sheet(ctx):
    return _sheet_error(ctx, b"\x00\x01garbage", "cannot be read as an .xlsx workbook", "re-save it as .xlsx")


def zero_byte_sheet(ctx):
    return _sheet_error(ctx, b"", "cannot be read as an .xlsx workbook", "re-save it as .xlsx")


def csv_renamed_xlsx(ctx):
    text = ",".join(h or "" for h in CASME_HEADER) + "\n01,EP01_01,,1,1,2,,12,happiness\n"
    return _sheet_error(ctx, text.encode(), "cannot be read as an .xlsx workbook", "re-save it as .xlsx")


def html_renamed_xlsx(ctx):
    return _sheet_error(ctx, b"<html><table><tr><td>Subject</td></tr></table></html>",
                        "cannot be read as an .xlsx workbook", "re-save it as .xlsx")


def encrypted_xlsx(ctx):
    # Password-protected workbooks are OLE compound files, not zips.
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 504
    return _sheet_error(ctx, ole, "password-protected or an old .xls", "save it unprotected as .xlsx")


def corrupt_xlsx_zip(ctx):
    c = casme(ctx)
    data = c.annotations.read_bytes()
    with zipfile.ZipFile(c.annotations, "w") as z:  # a zip, but no workbook in it
        z.writestr("[Content_Types].xml", b"<Types/>")
        z.writestr("notes.txt", data[:50])
    c.good, c.error = (), ("CASME2-coding.xlsx", "cannot be read as an .xlsx workbook")
    return c


def truncated_xlsx_zip(ctx):
    c = casme(ctx)
    data = c.annotations.read_bytes()
    c.annotations.write_bytes(data[: len(data) // 2])
    c.good, c.error = (), ("CASME2-coding.xlsx", "cannot be read as an .xlsx workbook")
    return c


def edit_sheet_xml(path: Path, change: Callable[[str], str]) -> None:
    """Rewrite the first worksheet's XML inside an .xlsx (what openpyxl cannot write)."""
    with zipfile.ZipFile(path) as z:
        parts = {name: z.read(name) for name in z.namelist()}
    parts["xl/worksheets/sheet1.xml"] = change(parts["xl/worksheets/sheet1.xml"].decode()).encode()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in parts.items():
            z.writestr(name, data)


def formula_with_cached_value(ctx):
    # What Excel saves: the formula and its last result. Neither is evaluated nor trusted.
    c = casme(ctx, [casme_row("EP02_01", onset="=F3-1")])
    tiny_frames(c.root / "sub02" / "EP02_01", (1, 2))
    edit_sheet_xml(c.annotations, lambda xml: re.sub(r'(<c r="D3"[^>]*><f>[^<]*</f>)<v ?/>', r"\1<v>1</v>", xml))
    c.skipped["casme2/sub02/EP02_01"] = "row 3: OnsetFrame holds a formula ('=F3-1'); formulas are not evaluated"
    return c


def external_entity_in_sheet(ctx):
    # XXE: a DOCTYPE that would pull a local file into a cell. The XML parser must refuse it.
    c = casme(ctx)
    secret = ctx.tmp / "secret.txt"
    secret.write_text("TOP-SECRET-TEXT")
    doctype = f'<!DOCTYPE worksheet [<!ENTITY x SYSTEM "{secret.as_uri()}">]><worksheet'
    edit_sheet_xml(c.annotations, lambda xml: re.sub(
        r'<c r="I2"[^>]*>.*?</c>', '<c r="I2" t="inlineStr"><is><t>&x;</t></is></c>',
        xml.replace("<worksheet", doctype, 1)))
    c.good, c.error, c.secret = (), ("CASME2-coding.xlsx: cannot be read as an .xlsx workbook", "entity"), \
        "TOP-SECRET-TEXT"
    return c


def wrong_header_row(ctx):
    header = ("Subject", "File name", "Onset", "ApexFrame", "Offset", "Action Units", "Estimated Emotion")
    c = casme(ctx, header=header)
    c.good, c.error = (), ("CASME2-coding.xlsx: missing columns 'OnsetFrame', 'OffsetFrame' in the header row (row 1)",
                           "found: Subject, File name, Onset", "use the coding sheet published")
    return c


def title_row_above_header(ctx):
    c = casme(ctx)
    wb = openpyxl.load_workbook(c.annotations)
    wb.active.insert_rows(1)
    wb.active["A1"] = "CASME II coding, revised"
    wb.save(c.annotations)
    c.good, c.error = (), ("missing columns 'Subject', 'Filename'", "(row 1); found: CASME II coding, revised")
    return c


def empty_sheet(ctx):
    c = casme(ctx, good=False, header=())
    face_clip(c.root / "sub01" / "EP01_01", ctx.face)
    c.error = ("CASME2-coding.xlsx: missing columns 'Subject'", "found: (nothing)")
    return c


def sheet_with_only_a_header(ctx):
    c = casme(ctx, good=False)
    tiny_frames(c.root / "sub01" / "EP01_01", (1, 2))
    c.skipped["casme2/sub01/EP01_01"] = "folder not in annotation sheet CASME2-coding.xlsx"
    return c


def hidden_first_sheet(ctx):
    def hide(wb):
        junk = wb.create_sheet("Lookup", 0)
        junk.append(["code", "meaning"])
        junk.sheet_state = "hidden"

    return casme(ctx, edit=hide)


def merged_subject_cells(ctx):
    # Subject 02 written once over two rows: openpyxl reads the second row's cell as blank.
    def merge(wb):
        wb.active.merge_cells("A3:A4")

    c = casme(ctx, [casme_row("EP02_01"), casme_row("EP02_02")], edit=merge)
    face_clip(c.root / "sub02" / "EP02_01", ctx.face)
    tiny_frames(c.root / "sub02" / "EP02_02", (1, 2))
    c.good += ("casme2/sub02/EP02_01",)
    c.skipped["casme2//EP02_02"] = "CASME2-coding.xlsx row 4: Subject is blank"
    c.skipped["casme2/sub02/EP02_02"] = "folder not in annotation sheet"
    return c


def formula_cells(ctx):
    c = casme(ctx, [casme_row("EP02_01", onset="=F3-1"), casme_row("EP02_02", subject='=HYPERLINK("x")')])
    tiny_frames(c.root / "sub02" / "EP02_01", (1, 2))
    c.skipped["casme2/sub02/EP02_01"] = "row 3: OnsetFrame holds a formula ('=F3-1'); formulas are not evaluated"
    c.skipped['casme2/=HYPERLINK("x")/EP02_02'] = "row 4: invalid casme2 subject id"
    return c


def date_in_number_column(ctx):
    c = samm(ctx, [("007", "007_1_1", 1, datetime.datetime(2020, 1, 5), 3, 4, None, "Micro", "4", "Anger")])
    tiny_frames(c.root / "007" / "007_1_1", (3, 4), "007_{n:05d}.jpg")
    c.skipped["samm/007/007_1_1"] = "row 6: Onset Frame holds a date/time (2020-01-05 00:00:00)"
    return c


def duplicate_rows(ctx):
    c = casme(ctx, [CASME_GOOD])
    c.skipped["casme2/sub01/EP01_01"] = "row 3: duplicate of row 2 for the same clip; the first row is used"
    return c


def duplicate_ids_in_other_spellings(ctx):
    c = samm(ctx, [(6, "006_1_2", 1, 100, 100, 101, None, "Micro", "4", "Anger"),
                   ("6.0", "006_1_2", 1, 100, 100, 101, None, "Micro", "4", "Anger")])
    c.skipped["samm/006/006_1_2"] = "row 6: duplicate of row 5"
    return c


def unknown_label(ctx):
    c = casme(ctx, [casme_row("EP02_01", emotion="Joy ")])
    face_clip(c.root / "sub02" / "EP02_01", ctx.face)
    c.good += ("casme2/sub02/EP02_01",)
    c.warned["casme2/sub02/EP02_01"] = "emotion 'Joy' is not one of the casme2 labels"
    return c


def unknown_label_folder(ctx):
    c = smic(ctx)
    face_clip(c.root / "s1" / "micro" / "Happy" / "s1_ha_01", ctx.face, (1, 2), "image{n:06d}.bmp")
    c.good += ("smic/s1/s1_ha_01",)
    c.warned["smic/s1/s1_ha_01"] = "emotion 'Happy' is not one of the smic labels"
    return c


def numbers_as_text_with_blanks(ctx):
    c = casme(ctx, [casme_row("EP02_01", onset=" 1 ", apex="1", offset="2.0 ")])
    face_clip(c.root / "sub02" / "EP02_01", ctx.face)
    c.good += ("casme2/sub02/EP02_01",)
    return c


def negative_frame_numbers(ctx):
    c = casme(ctx, [casme_row("EP02_01", onset=-5, apex=1, offset=2), casme_row("EP02_02", onset="-1", offset=2)])
    tiny_frames(c.root / "sub02" / "EP02_01", (1, 2))
    tiny_frames(c.root / "sub02" / "EP02_02", (1, 2))
    c.skipped["casme2/sub02/EP02_01"] = "row 3: OnsetFrame holds -5, not a frame number (frame numbers are 0 or more)"
    c.skipped["casme2/sub02/EP02_02"] = "row 4: OnsetFrame holds -1, not a frame number"
    return c


def float_and_nan_frame_numbers(ctx):
    c = manifest(ctx, [row("half", onset="1.5", offset="2"), row("nan", onset="nan", offset="2"),
                       row("inf", onset="1", offset="inf")])
    for clip in ("half", "nan", "inf"):
        tiny_frames(c.root / "p2" / clip, (1, 2))
    c.skipped["lab/p2/half"] = "onset/offset holds '1.5', not a frame number"
    c.skipped["lab/p2/nan"] = "onset/offset holds 'nan', not a frame number"
    c.skipped["lab/p2/inf"] = "onset/offset holds 'inf', not a frame number"
    return c


def onset_after_offset_and_huge_numbers(ctx):
    c = casme(ctx, [casme_row("EP02_01", onset=9, offset=3), casme_row("EP02_02", onset=10**12, offset=10**12 + 5)])
    tiny_frames(c.root / "sub02" / "EP02_01", (1, 2))
    tiny_frames(c.root / "sub02" / "EP02_02", (1, 2))
    c.skipped["casme2/sub02/EP02_01"] = "row 3: onset 9 > offset 3"
    c.skipped["casme2/sub02/EP02_02"] = "annotated frames 1000000000000-1000000000005 not on disk"
    return c


def row_without_folder_and_folder_without_row(ctx):
    c = casme(ctx, [casme_row("EP02_09")])
    tiny_frames(c.root / "sub02" / "EP02_01", (1, 2))
    c.skipped["casme2/sub02/EP02_09"] = "listed in CASME2-coding.xlsx row 3 but no folder"
    c.skipped["casme2/sub02/EP02_01"] = "folder not in annotation sheet CASME2-coding.xlsx"
    return c


def clip_folder_is_a_file(ctx):
    c = casme(ctx, [casme_row("EP02_01")])
    put(c.root / "sub02" / "EP02_01", b"a file where a folder should be")
    c.skipped["casme2/sub02/EP02_01"] = "listed in CASME2-coding.xlsx row 3 but no folder"
    return c


# ---------------------------------------------------------------------------------------------
# manifests


def manifest_with_bom_and_semicolons(ctx):
    text = ("\ufeffdataset;subject;clip;folder;label;fps\n"
            "lab;p1;good;p1/good;happy;30\n")
    return manifest(ctx, text=text)


def manifest_missing_columns(ctx):
    c = manifest(ctx, text="dataset,subject,clip,label\nlab,p1,good,happy\n")
    c.good, c.error = (), ("manifest.csv: missing column 'folder' in the header row (row 1)",
                           "a manifest needs the columns")
    return c


def manifest_not_utf8(ctx):
    c = manifest(ctx, text="dataset,subject,clip,folder,label\nlab,p1,good,p1/good,été\n".encode("latin-1"))
    c.good, c.error = (), ("manifest.csv: cannot be read as a UTF-8 CSV file", "save the manifest as CSV (UTF-8)")
    return c


def manifest_empty(ctx):
    c = manifest(ctx, text="")
    c.good, c.error = (), ("manifest.csv: no header in row 1",)
    return c


def manifest_is_an_xlsx(ctx):
    c = manifest(ctx)
    write_xlsx(c.annotations, [MANIFEST_FIELDS])
    c.good, c.error = (), ("manifest.csv: cannot be read as a UTF-8 CSV file",)
    return c


def manifest_ragged_rows(ctx):
    c = manifest(ctx, text=("dataset,subject,clip,folder,label,fps\n"
                            "lab,p1,good,p1/good,happy,30,extra,cells\n"
                            "lab,p2,short\n"))
    c.skipped["lab/p2/short"] = "row 3: folder is blank"
    return c


def manifest_nul_bytes(ctx):
    c = manifest(ctx, text=("dataset,subject,clip,folder,label,fps\n"
                            "lab,p1,good,p1/good,happy,30\n"
                            "lab,p2,n\0ul,p2/x,sad,30\n"))
    c.skipped["lab/p2/n\\x00ul"] = "row 3: invalid clip name"
    return c


def manifest_nul_and_overlong_folders(ctx):
    c = manifest(ctx, text=("dataset,subject,clip,folder,label,fps\n"
                            "lab,p1,good,p1/good,happy,30\n"
                            "lab,p2,nul,p2/a\0b,sad,30\n"
                            f"lab,p2,long,{'x' * 5000},sad,30\n"))
    c.skipped["lab/p2/nul"] = "row 3: folder 'p2/a\\x00b' contains a NUL character; fix the manifest cell"
    c.skipped["lab/p2/long"] = "row 4: folder"
    return c


def manifest_bad_fps_and_half_range(ctx):
    c = manifest(ctx, [row("fps", fps="-25"), row("half", onset="1")])
    tiny_frames(c.root / "p2" / "fps", (1, 2))
    tiny_frames(c.root / "p2" / "half", (1, 2))
    c.skipped["lab/p2/fps"] = "fps '-25' is not a positive number"
    c.skipped["lab/p2/half"] = "onset given without offset; give both or neither"
    return c


INGEST_CASES = [pytest.param(f, id=f.__name__.replace("_", "-")) for f in (
    truncated_jpeg, truncated_png, zero_byte_frame, text_file_as_jpeg, html_as_png, huge_frame_dimensions,
    sliver_frames, permission_denied_frame, mixed_frame_sizes, huge_clip, frame_gap, empty_clip_folder,
    empty_dataset_root, only_non_image_files, unnumbered_frames, duplicate_frame_numbers, uppercase_extensions,
    grey_and_colour_mixed, png_16_bit, cmyk_jpeg, directory_named_like_a_frame, fifo_named_like_a_frame,
    frame_folder_is_a_file, non_utf8_names, unicode_and_spaces_in_folders, subject_folders_with_spaces_and_unicode,
    dotdot_in_manifest, absolute_path_in_manifest, windows_drive_in_manifest, path_like_ids_in_manifest,
    ids_named_like_store_metadata, symlink_clip_out_of_root, symlink_frame_out_of_root, symlink_subject_out_of_root,
    symlink_loops, manifest_folder_through_symlink_out, garbage_sheet, zero_byte_sheet, csv_renamed_xlsx,
    html_renamed_xlsx, encrypted_xlsx, corrupt_xlsx_zip, truncated_xlsx_zip, external_entity_in_sheet,
    wrong_header_row, title_row_above_header, empty_sheet, sheet_with_only_a_header, hidden_first_sheet,
    merged_subject_cells, formula_cells, date_in_number_column, duplicate_rows, duplicate_ids_in_other_spellings,
    unknown_label, unknown_label_folder, numbers_as_text_with_blanks, negative_frame_numbers,
    float_and_nan_frame_numbers, formula_with_cached_value, onset_after_offset_and_huge_numbers,
    row_without_folder_and_folder_without_row, clip_folder_is_a_file, manifest_with_bom_and_semicolons,
    manifest_missing_columns, manifest_not_utf8, manifest_empty, manifest_is_an_xlsx, manifest_ragged_rows,
    manifest_nul_bytes, manifest_nul_and_overlong_folders, manifest_bad_fps_and_half_range,
)]


# ---------------------------------------------------------------------------------------------
# the store every ingest case appends to


@pytest.fixture(scope="module")
def base_store(tmp_path_factory, face_frame) -> Path:
    """A store holding one complete clip, ``lab/p0/base``, with ``t_max`` 20 (made once)."""
    tmp = tmp_path_factory.mktemp("base")
    write_clip(tmp / "data" / "p0" / "base", face_frame, (1, 2, 3))
    listed = write_manifest(tmp / "m.csv", [{"dataset": "lab", "subject": "p0", "clip": "base",
                                            "folder": "p0/base", "label": "happy"}])
    report = ingest(tmp / "s.zarr", "manifest", tmp / "data", listed, t_max=T_MAX)
    assert report.added == 1
    return tmp / "s.zarr"


@pytest.fixture
def store(tmp_path, base_store) -> Path:
    path = tmp_path / "s.zarr"
    shutil.copytree(base_store, path)
    return path


def _files_outside(tmp: Path, store: Path) -> set[Path]:
    return {p for p in tmp.rglob("*") if store not in p.parents and p != store}


@pytest.mark.parametrize("build", INGEST_CASES)
def test_bad_input_is_refused_or_skipped_and_good_clips_survive(tmp_path, store, face_frame, monkeypatch, build):
    case = build(Ctx(tmp_path, face_frame, monkeypatch))
    before = _files_outside(tmp_path, store)
    args = ["ingest", store, "--dataset", case.dataset, "--root", case.root, "--no-progress"]
    if case.annotations is not None:
        args += ["--annotations", case.annotations]
    result = invoke(*args)
    assert _files_outside(tmp_path, store) == before  # nothing written outside the store

    summary = info(store)
    complete = {c.id for c in roi_store.open_store(store).clips}
    if case.secret:
        assert case.secret not in result.output + json.dumps(summary)
    if case.error:
        error = assert_one_line_error(result, *case.error)
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert "\n" not in error
        assert complete == {BASE}  # the store is as it was
    else:
        assert result.exit_code == 0, result.output
        assert complete == {BASE, *case.good}
        assert summary["clips"] == 1 + len(case.good)
        reasons: dict[str, list[str]] = {}
        for item in summary["skipped"]:
            reasons.setdefault(item["id"], []).append(item["reason"])
            assert "\n" not in item["reason"]
        for clip_id, part in case.skipped.items():
            assert clip_id in reasons, (clip_id, reasons)
            assert any(part in r for r in reasons[clip_id]), (part, reasons[clip_id])
            assert f"skipped {clip_id}: " in result.output
        rec = roi_store.open_store(store)
        for clip_id, part in case.warned.items():
            assert any(part in w for w in rec.clip(clip_id)["warnings"]), rec.clip(clip_id)["warnings"]
    assert summary["pending"] == []
    check = invoke("validate", store)
    assert check.exit_code == 0, check.output


def test_good_clips_read_back_from_odd_files(tmp_path, store, face_frame, monkeypatch):
    """16-bit, CMYK, greyscale and PNG-among-JPEG frames decode to the same picture as the others."""
    for build in (png_16_bit, cmyk_jpeg, grey_and_colour_mixed, jpeg_and_png_in_one_clip):
        sub = tmp_path / build.__name__
        sub.mkdir()
        case = build(Ctx(sub, face_frame, monkeypatch))
        assert invoke("ingest", store, "--dataset", "manifest", "--root", case.root, "--annotations",
                      case.annotations, "--no-progress").exit_code == 0
    s = roi_store.open_store(store)
    assert roi_store.open_store(store).clip("lab/p2/png")["decode_factor"] > 1
    for clip_id in ("lab/p2/deep", "lab/p2/cmyk", "lab/p2/mixed", "lab/p2/png"):
        frames = s.frames(clip_id, "R5").astype(int)
        assert np.abs(frames[-1] - frames[0]).mean() < 6, clip_id  # no inverted or blank frame


# ---------------------------------------------------------------------------------------------
# damaged stores


def _chunk(store: Path, clip_id: str = BASE, region: str = "R5") -> Path:
    row = roi_store.open_store(store).clip(clip_id).row
    return store / "regions" / region / "c" / str(row) / "0" / "0" / "0"


def _header(store: Path, **changes) -> None:
    doc = json.loads((store / "zarr.json").read_text())
    doc["attributes"]["roistore"].update(changes)
    (store / "zarr.json").write_text(json.dumps(doc))


def _clip_json(store: Path) -> Path:
    return store / "clips" / "lab" / "p0" / "base" / "zarr.json"


def _record(store: Path, **changes) -> None:
    path = _clip_json(store)
    doc = json.loads(path.read_text())
    doc["attributes"]["record"].update(changes)
    path.write_text(json.dumps(doc))


STORE_CASES = [
    pytest.param(lambda s: _header(s, format_version=3),
                 [(("info",), 1, ["uses roistore format version 3, newer than", "upgrade roistore"]),
                  (("validate",), 1, ["upgrade roistore"])], id="future-format-version"),
    pytest.param(lambda s: _header(s, format_version=0),
                 [(("info",), 1, ["format version 0, which this roistore", "no longer reads", "re-ingest"])],
                 id="unknown-old-format-version"),
    pytest.param(lambda s: _header(s, format_version="1"),
                 [(("info",), 1, ["format_version '1' is not an integer: the store header is damaged"])],
                 id="format-version-as-text"),
    pytest.param(lambda s: _header(s, t_max="twenty"),
                 [(("info",), 1, ["store document does not match its schema at t_max"])], id="header-off-schema"),
    pytest.param(lambda s: _chunk(s).write_bytes(_chunk(s).read_bytes()[:25]),
                 [(("validate",), 1, ["problem: clip lab/p0/base: chunk regions/R5/", "is damaged", "INVALID"]),
                  (("preview", BASE, "-o", "{tmp}/p.png"), 1,
                   ["clip lab/p0/base: region R5 of", "is damaged", "roistore validate", "restore the store"]),
                  (("info",), 0, ["1 clips, 1 subjects"])], id="truncated-chunk"),
    pytest.param(lambda s: _chunk(s, region="R0").unlink(),
                 [(("validate",), 1, ["chunk regions/R0/", "is missing"]),
                  (("preview", BASE, "-o", "{tmp}/p.png"), 1, ["clip lab/p0/base: region R0 of", "is missing"])],
                 id="missing-chunk"),
    pytest.param(lambda s: (s / "zarr.json").write_text("{not json"),
                 [(("info",), 1, ["is not a readable Zarr v3 store"]),
                  (("validate",), 1, ["is not a readable Zarr v3 store"])], id="corrupted-root-zarr-json"),
    pytest.param(lambda s: (s / "zarr.json").write_bytes(b""),
                 [(("info",), 1, ["is not a readable Zarr v3 store"])], id="zero-byte-root-zarr-json"),
    pytest.param(lambda s: _clip_json(s).write_text('{"zarr_format": 3, "node_type": "gro'),
                 [(("info",), 1, ["clips/lab/p0/base/zarr.json", "is damaged", "roistore validate"]),
                  (("validate",), 1, ["clips/lab/p0/base/zarr.json", "is damaged"])],
                 id="corrupted-clip-zarr-json"),
    pytest.param(lambda s: (s / "clips" / "zarr.json").write_text("{"),
                 [(("info",), 1, ["s.zarr: clips/zarr.json is damaged (JSONDecodeError)", "roistore validate"]),
                  (("validate",), 1, ["problem: clips/zarr.json is damaged"])], id="corrupted-clips-group-zarr-json"),
    pytest.param(lambda s: (s / "regions" / "R0" / "zarr.json").write_text("[]"),
                 [(("validate",), 1, ["array regions/R0 is damaged"]),
                  (("preview", BASE, "-o", "{tmp}/p.png"), 1, ["array regions/R0 is damaged"])],
                 id="corrupted-array-zarr-json"),
    pytest.param(lambda s: _record(s, n_frames="three"),
                 [(("validate",), 1, ["clip lab/p0/base: clip document does not match its schema at n_frames"]),
                  (("info",), 1, ["clip lab/p0/base", "does not match its schema at n_frames", "roistore validate"])],
                 id="clip-record-off-schema"),
    pytest.param(lambda s: shutil.rmtree(s / "regions" / "R3"),
                 [(("validate",), 1, ["regions/R3 is missing"]),
                  (("preview", BASE, "-o", "{tmp}/p.png"), 1, ["regions/R3 is missing"])],
                 id="missing-region-array"),
]


@pytest.mark.parametrize(("damage", "checks"), STORE_CASES)
def test_damaged_store(tmp_path, store, damage, checks):
    damage(store)
    for command, code, parts in checks:
        args = [a.format(tmp=tmp_path) for a in command]
        result = invoke(args[0], store, *args[1:], *(["--no-progress"] if args[0] == "ingest" else []))
        if code == 1 and args[0] != "validate":
            assert_one_line_error(result, *parts)
        else:
            assert result.exit_code == code, result.output
            for part in parts:
                assert part in result.output, (part, result.output)
    assert not (tmp_path / "p.png").exists()


def test_reads_of_a_damaged_chunk_fail_with_one_line(store):
    _chunk(store).write_bytes(_chunk(store).read_bytes()[:25])
    s = roi_store.open_store(store)
    assert s.frames(BASE, "R0").shape[0] == 3  # other regions still read
    with pytest.raises(StoreError, match=r"^clip lab/p0/base: region R5 of .* is damaged") as err:
        s.frames(BASE, "R5")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda p: p.mkdir() or (p / "notes.txt").write_text("hello"), id="folder-that-is-not-a-store"),
        pytest.param(lambda p: p.mkdir(), id="empty-folder"),
        pytest.param(lambda p: p.write_bytes(b"PK\x03\x04 not really a zip"), id="broken-zip"),
        pytest.param(lambda p: zipfile.ZipFile(p, "w").writestr("readme.txt", "a zip, not a store"),
                     id="zip-that-is-not-a-store"),
        pytest.param(lambda p: p.write_text("plain text"), id="text-file"),
    ],
)
def test_not_a_store(tmp_path, make):
    path = tmp_path / "thing.zip"
    make(path)
    for command in ("info", "validate"):
        result = invoke(command, path)
        assert result.exit_code != 0
        assert result.output.strip().splitlines()[-1].startswith("Error:")
        assert "thing.zip" in result.output.strip().splitlines()[-1]


def test_ingest_into_something_that_is_not_a_store(tmp_path, face_frame):
    c = manifest(Ctx(tmp_path, face_frame, None))
    target = tmp_path / "occupied"
    target.mkdir()
    (target / "thesis.tex").write_text("do not lose me")
    result = invoke("ingest", target, "--dataset", "manifest", "--root", c.root, "--annotations", c.annotations)
    assert_one_line_error(result, f"{target} exists and is not empty: choose a new store path")
    assert [p.name for p in target.iterdir()] == ["thesis.tex"]


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        pytest.param(b"casme2,1,EP01,7\n", ["view.csv row 1: invalid label '7'"], id="view-unknown-label"),
        pytest.param(b"casme2,1\n", ["view.csv row 1: expected 4 columns"], id="view-short-row"),
        pytest.param("casme2,1,EP\u00e9,0\n".encode("latin-1"), ["view.csv", "UTF-8"], id="view-not-utf8"),
        pytest.param(b"", ["view file", "lists no clips"], id="view-empty"),
    ],
)
def test_bad_view_file(tmp_path, face_frame, text, parts):
    c = manifest(Ctx(tmp_path, face_frame, None))
    view = tmp_path / "view.csv"
    view.write_bytes(text)
    result = invoke("ingest", tmp_path / "new.zarr", "--dataset", "manifest", "--root", c.root,
                    "--annotations", c.annotations, "--view-file", view, "--no-progress")
    assert_one_line_error(result, *parts)
    assert not (tmp_path / "new.zarr").exists()


# ---------------------------------------------------------------------------------------------
# the installed command, in a real process


def roistore(*args, cwd=None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("roistore")
    # A strict UTF-8 terminal: printing a name that is not UTF-8 as it is would fail.
    env = {**os.environ, "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8:strict"}
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, errors="strict", env=env,
                          cwd=cwd, timeout=120, check=False)


def test_real_process_non_utf8_names_and_bad_stores(tmp_path, store, face_frame, monkeypatch):
    case = non_utf8_names(Ctx(tmp_path, face_frame, monkeypatch))
    run = roistore("ingest", store, "--dataset", "smic", "--root", case.root, "--no-progress")
    assert run.returncode == 0, run.stderr
    assert "skipped smic/s1/s1_ne_\\xff1: " in run.stdout and "Traceback" not in run.stderr
    text = roistore("info", store)
    assert text.returncode == 0 and "smic/s1/s1_ne_\\xff1" in text.stdout, text.stderr
    rec = roi_store.open_store(store).clip("smic/s1/s1_sur_01")
    assert rec["frames"] == ["image000001.bmp", "imag\\xe9000002.bmp"]
    for doc in store.rglob("zarr.json"):  # the store's JSON is plain UTF-8 with no lone surrogates
        json.dumps(json.loads(doc.read_bytes().decode("utf-8")), ensure_ascii=False).encode("utf-8")

    _header(store, format_version=99)
    run = roistore("info", store)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines() == [
        f"Error: {store} uses roistore format version 99, newer than this roistore ({roi_store.__version__}) reads "
        "(up to 2): upgrade roistore (pip install --upgrade roistore)"]


def test_real_process_preview_from_and_to_paths_that_are_not_utf8(tmp_path, store):
    # cv2.imread / imwrite crash the interpreter on such paths; preview must not use them.
    base_root = Path(roi_store.open_store(store).header["ingests"][0]["root"])
    odd = os.fsencode(tmp_path) + b"/data\xff"
    os.symlink(base_root, odd)
    out = os.fsencode(tmp_path) + b"/prev\xe9w.png"
    run = roistore("preview", store, BASE, "-o", os.fsdecode(out), "--root", os.fsdecode(odd))
    assert run.returncode == 0, run.stderr
    with open(out, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
