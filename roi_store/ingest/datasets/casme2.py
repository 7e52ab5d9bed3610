"""CASME II: ``CASME2_RAW_selected/subNN/EPxx_yy[f]/imgK.jpg`` and ``CASME2-coding*.xlsx``.

Everything roistore knows about CASME II's layout is declared here; the sheet/folder join is
:mod:`~roi_store.ingest.datasets.coded`'s.

* Subjects are folders ``sub01`` .. ``sub26``; the sheet's ``Subject`` column says ``1`` or
  ``01`` (a number cell may read ``1.0``). ``1``, ``01``, ``1.0``, ``sub1``, ``sub01`` and
  ``Sub01`` are all the subject ``sub01``.
* Clips are folders ``EP02_01f`` named as in the sheet's ``Filename`` column; frames are
  ``img46.jpg`` .. ``img100.jpg``, numbered without zero padding (200 fps).
* The sheet has one header row in every published version, but its columns move between
  versions (blank columns come and go), so they are found by name.
"""

from __future__ import annotations

from roi_store.ids import SubjectSpelling
from roi_store.ingest.datasets.coded import CodedReader


class CASME2Reader(CodedReader):
    """Reader of CASME II's raw frame folders (200 fps) and coding sheet."""

    name = "casme2"
    fps = 200.0
    #: ``sub`` and two digits, as the subject folders are named.
    spelling = SubjectSpelling(prefix="sub", width=2)
    #: The seven labels of the published sheets, lower case.
    emotions = frozenset({"others", "disgust", "happiness", "surprise", "repression", "sadness", "fear"})
    sheet_glob = "CASME2-coding*.xlsx"
    columns = {
        "subject": "Subject",
        "clip": "Filename",
        "onset": "OnsetFrame",
        "apex": "ApexFrame",
        "offset": "OffsetFrame",
        "aus": "Action Units",
        "emotion": "Estimated Emotion",
    }
    root_hint = "the CASME2_RAW_selected/ folder that holds sub01, sub02, ..."
