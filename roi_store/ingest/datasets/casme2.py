"""CASME II: ``CASME2_RAW_selected/subNN/EPxx_yy[f]/imgK.jpg`` and ``CASME2-coding*.xlsx``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from roi_store.ingest.datasets.base import ClipSpec, Skip
from roi_store.ingest.datasets.common import CodedLayout, scan_coded_dataset

#: The seven labels of the published sheets, lower case.
EMOTIONS = frozenset(
    {"others", "disgust", "happiness", "surprise", "repression", "sadness", "fear"}
)

LAYOUT = CodedLayout(
    dataset="casme2",
    fps=200.0,
    sheet_glob="CASME2-coding*.xlsx",
    columns={
        "subject": "Subject",
        "clip": "Filename",
        "onset": "OnsetFrame",
        "apex": "ApexFrame",
        "offset": "OffsetFrame",
        "aus": "Action Units",
        "emotion": "Estimated Emotion",
    },
    known_emotions=EMOTIONS,
    root_hint="the CASME2_RAW_selected/ folder that holds sub01, sub02, ...",
    # One header row in every published version, but the columns move between versions
    # (blank columns come and go), so they are found by name.
    find_header=False,
)


class CASME2Reader:
    """Reader of CASME II's raw frame folders (200 fps) and coding sheet."""

    name = "casme2"
    fps = LAYOUT.fps

    def scan(self, root: Path, annotations: Path | None = None) -> Iterator[ClipSpec | Skip]:
        """Yield every coded clip under ``root`` in ClipKey order, or a Skip saying why not.

        Parameters
        ----------
        root : Path
            ``CASME2_RAW_selected/`` (the folder holding ``sub01``, ``sub02``, ...).
        annotations : Path, optional
            The coding sheet; default: the newest-looking ``CASME2-coding*.xlsx`` in the
            parent of ``root`` or in ``root``.

        Yields
        ------
        ClipSpec or Skip

        Raises
        ------
        DatasetError
            If ``root`` is missing or holds no subject folder.
        AnnotationError
            If the sheet is missing, unreadable or lacks a required column.
        """
        return scan_coded_dataset(LAYOUT, root, annotations)
