"""SMIC-HS: ``HS/sN/micro/<negative|positive|surprise>/sN_xx_NN/imageKKKKKK.bmp``.

SMIC has no onset/apex/offset sheet: the whole folder is the clip, the label is the emotion
folder's name, and the middle frame on disk is the usual apex stand-in. ``non_micro`` folders
are not micro-expressions and are ignored.

Subject folders say ``s1`` where the MEGC list says ``s01``: ``1``, ``s1``, ``s01`` and ``S01``
are all the subject ``s1``, and clip names, which start with the subject, follow it
(``s01_ne_01`` is the clip ``s1_ne_01``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from roi_store.errors import AnnotationError, DatasetError
from roi_store.ids import ClipKey, SubjectSpelling, normalise_subject
from roi_store.ingest.datasets.base import ClipSpec, Skip
from roi_store.ingest.datasets.cells import normalise_emotion
from roi_store.ingest.datasets.clips import (
    Annotation,
    Item,
    emit_sorted,
    key_order,
    key_skip,
    skip_item,
)
from roi_store.ingest.datasets.paths import resolve_root, subdirs

#: The three labels, as the emotion folders are named.
EMOTIONS = frozenset({"negative", "positive", "surprise"})

#: ``s`` and the number unpadded, as the subject folders are named; clip names follow it.
SPELLING = SubjectSpelling(prefix="s", width=0, clip_follows_subject=True)

_ROOT_HINT = "the HS/ folder that holds s1, s2, ..."


class SMICReader:
    """Reader of SMIC-HS's micro-expression folders (100 fps); labels from folder names."""

    name = "smic"
    fps = 100.0
    spelling = SPELLING
    emotions = EMOTIONS

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
        items: list[Item] = []
        seen: dict[ClipKey, Path] = {}
        subjects, bad = subdirs(root, root)
        items += [_bad(b.name, "", b.path, b.reason) for b in bad]
        n_subjects = 0
        for sname, spath in subjects:
            try:
                normalise_subject("smic", sname)
            except AnnotationError:
                items.append(_bad(sname, "", spath, "is not a smic subject folder; ignored"))
                continue
            n_subjects += 1
            inner, bad = subdirs(spath, root)
            items += [_bad(sname, b.name, b.path, b.reason) for b in bad]
            micro = [p for n, p in inner if n.lower() == "micro"]  # non_micro is not ours
            if not micro:
                items.append(_bad(sname, "", spath, "holds no micro/ folder"))
                continue
            emotions, bad = subdirs(micro[0], root)
            items += [_bad(sname, b.name, b.path, b.reason) for b in bad]
            for ename, epath in emotions:
                clips, bad = subdirs(epath, root)
                items += [_bad(sname, b.name, b.path, b.reason) for b in bad]
                for cname, cpath in clips:
                    items.append(self._clip(sname, ename, cname, cpath, seen))
        if n_subjects == 0:
            raise DatasetError(f"no smic subject folders in {root}: give {_ROOT_HINT}")
        return emit_sorted(items, root, self.fps)

    def _clip(
        self, sname: str, ename: str, cname: str, cpath: Path, seen: dict[ClipKey, Path]
    ) -> Item:
        try:
            key = ClipKey.make("smic", sname, cname)
        except AnnotationError as exc:
            return _bad(sname, cname, cpath, f": {exc}")
        if key in seen:
            reason = f"folder {cpath} is the same clip as {seen[key]}; the first is used"
            return key_skip(key, reason, "folder name")
        seen[key] = cpath
        emotion, warnings = normalise_emotion(ename, EMOTIONS, "smic")
        ann = Annotation(
            emotion=emotion,
            source=f"folder name (micro/{ename}/); apex = middle frame, SMIC codes no apex",
            warnings=warnings,
            apex_from_middle=True,
        )
        return key_order(key), (key, cpath, ann)


def _bad(subject: str, clip: str, path: Path, reason: str) -> Item:
    sep = "" if reason.startswith(":") else " "
    return skip_item("smic", subject, clip, f"folder {path}{sep}{reason}", "folder name")
