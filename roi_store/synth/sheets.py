"""The coding sheets of CASME II and SAMM, as the published workbooks lay them out.

The same seed gives byte-identical workbooks: their dates and zip entry times are fixed.
"""

from __future__ import annotations

import datetime
import io
import re
import zipfile
from pathlib import Path

from roi_store.synth.planning import stream

__all__ = ["write_casme2_sheet", "write_samm_sheet"]

_CASME2_HEADER = ["Subject", "Filename", None, "OnsetFrame", "ApexFrame", "OffsetFrame", None,
                  "Action Units", "Estimated Emotion", "Objective Classes"]
_SAMM_HEADER = ["Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame",
                "Duration", "Micro", "Action Units", "Estimated Emotion", "Objective Classes", "Notes"]
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


def write_casme2_sheet(path: Path, clips: list[dict], seed: int) -> None:
    """Write a CASME II coding sheet: one header row; the subject as text "01" or the number 1.

    Parameters
    ----------
    path : Path
        The workbook to write; its folder is made if missing.
    clips : list of dict
        The dataset's rows of :func:`roi_store.synth.plan`, in sheet order.
    seed : int
        The generator's seed; the sheet's own quirks draw from a stream of their own.
    """
    rng = stream(seed, "sheet", "casme2")
    rows = [_CASME2_HEADER]
    for c in clips:
        number = int(c["subject"][3:])
        # Published versions write the subject as text "01" or as the number 1: use both.
        subject = f"{number:02d}" if rng.random() < 0.5 else number
        rows.append([subject, c["clip"], None, c["onset"], c["apex"], c["offset"], None, c["aus"],
                     c["emotion"], c["objective_class"]])
    _save_workbook(path, "Sheet1", rows)


def write_samm_sheet(path: Path, clips: list[dict], seed: int) -> None:
    """Write a SAMM coding sheet: ``MICRO_ONLY``, notes above the header on row 14, ``Duration`` a formula.

    Parameters
    ----------
    path : Path
        The workbook to write; its folder is made if missing.
    clips : list of dict
        The dataset's rows of :func:`roi_store.synth.plan`, in sheet order.
    seed : int
        The generator's seed; the sheet's own quirks draw from a stream of their own.
    """
    rng = stream(seed, "sheet", "samm")
    rows = [[note] for note in _SAMM_NOTES] + [_SAMM_HEADER]
    for row, c in enumerate(clips, start=len(rows) + 1):
        note = str(rng.choice(_SAMM_CLIP_NOTES)) if rng.random() < 0.15 else None
        rows.append([c["subject"], c["clip"], int(c["clip"].split("_")[1]), c["onset"], c["apex"], c["offset"],
                     f"=F{row}-D{row}+1", "Micro - 1/2", c["aus"], c["emotion"], c["objective_class"], note])
    _save_workbook(path, "MICRO_ONLY", rows)


def _save_workbook(path: Path, title: str, rows: list[list]) -> None:
    """Save with fixed dates and zip times: openpyxl stamps the current time into both."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = title
    for row in rows:
        sheet.append(row)
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
