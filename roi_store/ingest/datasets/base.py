"""What every dataset reader yields: clip specifications and recorded skips."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from roi_store.ids import ClipKey, SubjectSpelling
from roi_store.ids import printable

#: File suffixes taken as frames (lower case). Anything else in a clip folder is ignored.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})

_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")


@dataclasses.dataclass
class ClipSpec:
    """One clip as found on disk, before any pixel is read.

    ``frames`` are absolute paths inside the dataset root, already in true temporal order
    (sorted by the number in the file name, never as text).
    """

    key: ClipKey
    folder: Path
    frames: list[Path]
    frame_numbers: list[int]
    fps: float
    emotion: str
    aus: list[str] = dataclasses.field(default_factory=list)
    onset: int | None = None
    apex: int | None = None
    offset: int | None = None
    source: str = ""  # where the annotation came from, e.g. "CASME2-coding.xlsx row 5"
    warnings: list[str] = dataclasses.field(default_factory=list)
    #: The AU cell as written ("L12 or L14"); ``aus`` flattens it to every AU mentioned.
    aus_raw: str = ""

    @property
    def id(self) -> str:
        return self.key.id


@dataclasses.dataclass
class Skip:
    """A clip (or folder, or sheet row) that a reader could not turn into a ClipSpec."""

    id: str
    reason: str
    source: str = ""

    def __post_init__(self) -> None:
        # Folder names need not be UTF-8; what is printed and stored must be.
        self.id, self.reason, self.source = map(printable, (self.id, self.reason, self.source))


class DatasetReader(Protocol):
    """A reader of one dataset's native layout; registered by ``name``.

    ``spelling`` is how the dataset spells subject ids (None: as given), registered for
    :class:`~roi_store.ids.ClipKey`; ``emotions`` are its labels, lower case (None: any), which
    the manifest reader also uses for rows that name the dataset.
    """

    name: str
    fps: float
    spelling: SubjectSpelling | None
    emotions: frozenset[str] | None

    def scan(self, root: Path, annotations: Path | None = None) -> Iterator[ClipSpec | Skip]:
        """Yield every clip of the dataset under ``root`` (or a Skip saying why not)."""


def frame_number(path: Path) -> int | None:
    """The last run of digits in a file's stem (``img100.jpg`` -> 100), or None."""
    m = _LAST_NUMBER.search(path.stem)
    return int(m.group(1)) if m else None


def one_line(text: object) -> str:
    """``text`` with each run of blanks and line breaks made one space: messages stay one line."""
    return " ".join(str(text).split())
