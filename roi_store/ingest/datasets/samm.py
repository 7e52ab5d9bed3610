"""SAMM: ``SAMM/NNN/NNN_x_y/NNN_KKKKK.jpg`` and the ``SAMM_Micro_FACS_Codes*.xlsx`` sheet.

The published sheet has 13 note rows above its header (row 14) and a ``Duration`` column that
may be a formula; the header is found by its ``Subject`` and ``Filename`` cells, and
``Duration`` is never read (the clip's length comes from onset and offset).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from roi_store.ingest.datasets.base import ClipSpec, Skip
from roi_store.ingest.datasets.common import CodedLayout, scan_coded_dataset

#: The eight labels of the published sheet, lower case (SAMM says "Other", not "Others").
EMOTIONS = frozenset(
    {"anger", "other", "happiness", "surprise", "contempt", "disgust", "fear", "sadness"}
)

LAYOUT = CodedLayout(
    dataset="samm",
    fps=200.0,
    sheet_glob="SAMM_Micro_FACS_Codes*.xlsx",
    columns={
        "subject": "Subject",
        "clip": "Filename",
        "onset": "Onset Frame",
        "apex": "Apex Frame",
        "offset": "Offset Frame",
        "aus": "Action Units",
        "emotion": "Estimated Emotion",
    },
    known_emotions=EMOTIONS,
    root_hint="the SAMM/ folder that holds 006, 007, ...",
    sheet="MICRO_ONLY",
    find_header=True,
)


class SAMMReader:
    """Reader of SAMM's frame folders (200 fps) and FACS code sheet (micro-expressions)."""

    name = "samm"
    fps = LAYOUT.fps

    def scan(self, root: Path, annotations: Path | None = None) -> Iterator[ClipSpec | Skip]:
        """Yield every coded clip under ``root`` in ClipKey order, or a Skip saying why not.

        Parameters
        ----------
        root : Path
            ``SAMM/`` (the folder holding ``006``, ``007``, ...).
        annotations : Path, optional
            The code sheet (sheet ``MICRO_ONLY`` if present, else the first); default: the
            newest-looking ``SAMM_Micro_FACS_Codes*.xlsx`` in the parent of ``root`` or in
            ``root``.

        Yields
        ------
        ClipSpec or Skip
            AUs keep every alternative (``"L12 or L14"`` -> ``["L12", "L14"]``); the cell as
            written is in ``ClipSpec.aus_raw``.

        Raises
        ------
        DatasetError
            If ``root`` is missing or holds no subject folder.
        AnnotationError
            If the sheet is missing, unreadable, has no header row or lacks a column.
        """
        return scan_coded_dataset(LAYOUT, root, annotations)
