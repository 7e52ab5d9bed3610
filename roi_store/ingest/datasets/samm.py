"""SAMM: ``SAMM/NNN/NNN_x_y/NNN_KKKKK.jpg`` and the ``SAMM_Micro_FACS_Codes*.xlsx`` sheet.

Everything roistore knows about SAMM's layout is declared here; the sheet/folder join is
:mod:`~roi_store.ingest.datasets.coded`'s.

* Subjects are folders ``006`` .. ``037``; ``6``, ``06``, ``006`` and ``6.0`` are all the
  subject ``006``.
* Clips are folders ``006_1_2`` named as in the sheet's ``Filename`` column; frames are
  ``006_05562.jpg``, numbered with zero padding (200 fps).
* The published sheet has 13 note rows above its header (row 14), so the header is found by
  its ``Subject`` and ``Filename`` cells; micro-expressions are on sheet ``MICRO_ONLY`` when
  the workbook has it. Its ``Duration`` column may be a formula and is never read (the clip's
  length comes from onset and offset).
* AUs keep every alternative (``"L12 or L14"`` -> ``["L12", "L14"]``); the cell as written is
  in ``ClipSpec.aus_raw``.
"""

from __future__ import annotations

from roi_store.ids import SubjectSpelling
from roi_store.ingest.datasets.coded import CodedReader


class SAMMReader(CodedReader):
    """Reader of SAMM's frame folders (200 fps) and FACS code sheet (micro-expressions)."""

    name = "samm"
    fps = 200.0
    #: Three digits, no prefix, as the subject folders are named.
    spelling = SubjectSpelling(prefix="", width=3)
    #: The eight labels of the published sheet, lower case (SAMM says "Other", not "Others").
    emotions = frozenset({"anger", "other", "happiness", "surprise", "contempt", "disgust", "fear", "sadness"})
    sheet_glob = "SAMM_Micro_FACS_Codes*.xlsx"
    columns = {
        "subject": "Subject",
        "clip": "Filename",
        "onset": "Onset Frame",
        "apex": "Apex Frame",
        "offset": "Offset Frame",
        "aus": "Action Units",
        "emotion": "Estimated Emotion",
    }
    root_hint = "the SAMM/ folder that holds 006, 007, ..."
    sheet = "MICRO_ONLY"
    find_header = True
