"""Clip identity: one value object that normalises subject and clip names once, at the edge.

Canonical forms (what the datasets' folders say):

=========  ===========  =====================================================
dataset    subject      accepted spellings
=========  ===========  =====================================================
casme2     ``sub01``    ``1``, ``01``, ``1.0``, ``sub1``, ``sub01``, ``Sub01``
samm       ``006``      ``6``, ``06``, ``006``, ``6.0``
smic       ``s1``       ``1``, ``s1``, ``s01``, ``S01``
other      as given     stripped of surrounding blanks
=========  ===========  =====================================================

SMIC clip names follow the subject: ``s01_ne_01`` becomes ``s1_ne_01``.
"""

from __future__ import annotations

import dataclasses
import re

from roi_store.errors import AnnotationError
from roi_store.store.format import printable

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\-]*$")
_INT = re.compile(r"^\d+(?:\.0+)?$")


#: Names the store's Zarr layout gives its own files; an id part spelled so (in any case, for
#: case-insensitive file systems) would collide with the metadata of the group above it.
_RESERVED = frozenset({"zarr.json"})


def _not_reserved(text: str, what: str) -> str:
    if text.lower() in _RESERVED:
        raise AnnotationError(f"invalid {what} {_q(text)}: the name is reserved by the store format; rename it")
    return text


def _q(text: object) -> str:
    # Quoted like repr, but a name that is not UTF-8 shows its bytes as \xNN, as ids do.
    return f"'{printable(str(text))}'"


def _subject_number(value: object, prefix: str, dataset: str) -> int:
    text = str(value).strip()
    if isinstance(value, float) and value.is_integer():
        text = str(int(value))
    low = text.lower()
    if prefix and low.startswith(prefix):
        low = low[len(prefix):]
    if not _INT.match(low):
        raise AnnotationError(
            f"invalid {dataset} subject id {_q(text)}: expected a number such as 1, 01"
            + (f" or {prefix}01" if prefix else "")
        )
    return int(float(low))


def normalise_subject(dataset: str, value: object) -> str:
    """Canonical subject id for ``dataset`` (see the module table).

    Raises
    ------
    AnnotationError
        If the value is not a subject id of that dataset.
    """
    if dataset == "casme2":
        return f"sub{_subject_number(value, 'sub', dataset):02d}"
    if dataset == "samm":
        return f"{_subject_number(value, '', dataset):03d}"
    if dataset == "smic":
        return f"s{_subject_number(value, 's', dataset)}"
    text = str(value).strip()
    if isinstance(value, float) and value.is_integer():
        text = str(int(value))
    if not _NAME.match(text):
        raise AnnotationError(
            f"invalid subject id {_q(text)} for dataset {_q(dataset)}: use letters, digits, '_', '-', '.'"
        )
    return _not_reserved(text, "subject id")


def normalise_clip(dataset: str, subject: str, value: object) -> str:
    """Canonical clip name; SMIC names take the subject's unpadded form."""
    text = str(value).strip()
    if dataset == "smic":
        m = re.match(r"^[sS]0*(\d+)(_.*)$", text)
        if m:
            text = f"s{int(m.group(1))}{m.group(2)}"
    if not _NAME.match(text):
        raise AnnotationError(
            f"invalid clip name {_q(text)} for {dataset}/{subject}: "
            "use letters, digits, '_', '-', '.', '+' (no path separators)"
        )
    return _not_reserved(text, "clip name")


@dataclasses.dataclass(frozen=True, order=True)
class ClipKey:
    """A clip's validated identity ``dataset/subject/clip`` (e.g. ``casme2/sub01/EP02_01f``)."""

    dataset: str
    subject: str
    clip: str

    @classmethod
    def make(cls, dataset: str, subject: object, clip: object) -> ClipKey:
        """Build a key from raw values in any spelling the datasets use."""
        dataset = str(dataset).strip().lower()
        if not _NAME.match(dataset):
            raise AnnotationError(f"invalid dataset name {_q(dataset)}: use letters, digits, '_', '-'")
        _not_reserved(dataset, "dataset name")
        subj = normalise_subject(dataset, subject)
        return cls(dataset, subj, normalise_clip(dataset, subj, clip))

    @classmethod
    def parse(cls, clip_id: str) -> ClipKey:
        """Parse ``dataset/subject/clip``."""
        parts = str(clip_id).strip().split("/")
        if len(parts) != 3:
            raise AnnotationError(
                f"invalid clip id {_q(clip_id)}: expected dataset/subject/clip, e.g. casme2/sub01/EP02_01f"
            )
        return cls.make(*parts)

    @property
    def id(self) -> str:
        return f"{self.dataset}/{self.subject}/{self.clip}"

    def __str__(self) -> str:
        return self.id
