"""SMIC-HS: ``HS/sN/micro/<negative|positive|surprise>/sN_xx_NN/imageKKKKKK.bmp``.

SMIC has no onset/apex/offset sheet: the whole folder is the clip, the label is the emotion
folder's name, and the middle frame on disk is the usual apex stand-in. ``non_micro`` folders
are not micro-expressions and are ignored.

Subject folders say ``s1`` where the MEGC list says ``s01``: ``1``, ``s1``, ``s01`` and ``S01``
are all the subject ``s1``, and clip names, which start with the subject, follow it
(``s01_ne_01`` is the clip ``s1_ne_01``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from roi_store.errors import AnnotationError
from roi_store.ids import ClipKey, SubjectSpelling
from roi_store.ingest.datasets.base import ClipSpec, Skip
from roi_store.ingest.datasets.cells import normalise_emotion
from roi_store.ingest.datasets.clips import emit_sorted, walk_clip_folders
from roi_store.ingest.datasets.paths import resolve_root

_ROOT_HINT = "the HS/ folder that holds s1, s2, ..."


class SMICReader:
    """Reader of SMIC-HS's micro-expression folders (100 fps); labels from folder names."""

    name = "smic"
    #: Records' ``apex`` is the middle frame standing in, not an annotation (``flow --apex annotated`` refuses it).
    apex_annotated = False
    fps = 100.0
    #: ``s`` and the number unpadded, as the subject folders are named; clip names follow it.
    spelling = SubjectSpelling(prefix="s", width=0, clip_follows_subject=True)
    #: The three labels, as the emotion folders are named.
    emotions = frozenset({"negative", "positive", "surprise"})

    def scan(self, root: Path, annotations: Path | None = None) -> Iterator[ClipSpec | Skip]:
        """Yield every micro clip under ``root`` in ClipKey order, or a Skip saying why not.

        Parameters
        ----------
        root : Path
            ``HS/`` (the folder holding ``s1``, ``s2``, ...). ``non_micro`` folders are ignored.
        annotations : None
            SMIC has no sheet; passing one is an error rather than being silently ignored.

        Returns
        -------
        iterator of ClipSpec or Skip
            ``onset``/``offset`` are None (the folder is the clip); ``apex`` is the middle
            frame's number, as ``source`` says.

        Raises
        ------
        AnnotationError
            If ``annotations`` is given.
        DatasetError
            If ``root`` is missing or holds no subject folder.
        """
        if annotations is not None:
            raise AnnotationError(
                f"smic takes no annotation sheet (got {str(annotations)!r}): labels come from "
                "the emotion folders; use a manifest CSV to label clips yourself"
            )
        root = resolve_root(root, expected=_ROOT_HINT)
        items = walk_clip_folders(root, self.name, _ROOT_HINT, _emotion_folders, self._clip)[1]
        return emit_sorted(items, root, apex_from_middle=True)

    def _clip(self, key: ClipKey, folder: Path, emotion_folder: str) -> ClipSpec:
        emotion, warnings = normalise_emotion(emotion_folder, self.emotions, self.name)
        source = f"folder name (micro/{emotion_folder}/); apex = middle frame, SMIC codes no apex"
        return ClipSpec(key, folder, [], [], self.fps, emotion, source=source, warnings=warnings)


def _emotion_folders(subject: str, folder: Path, dirs: Callable, skip: Callable) -> list[tuple[str, Path]]:
    """A subject's ``micro/<emotion>`` folders, by emotion; ``non_micro`` is not ours."""
    micro = [p for n, p in dirs(folder, subject) if n.lower() == "micro"]
    if not micro:
        skip(subject, "", f"folder {folder} holds no micro/ folder")
        return []
    return dirs(micro[0], subject)
