"""Clip identity: one value object that normalises subject and clip names once, at the edge.

A clip is ``dataset/subject/clip``. Names may be written in any script (``表情01``,
``EP02_03é``); a name is refused only when it would not survive as a store path or a one-line
message: empty, ``.`` or ``..``, a ``/`` or ``\\``, a control character, bytes that are not
UTF-8, or the store's own ``zarr.json``. Blanks around a name are stripped (spreadsheet cells
often carry them), and names are kept in Unicode NFC form, so that a sheet and a file system
that compose ``é`` differently name the same clip.

A dataset whose subjects have a house spelling declares it as a :class:`SubjectSpelling` in its
reader module, and the reader registry registers it here (:func:`register_spelling`): ``1``,
``01`` and ``sub1`` are then all CASME II's ``sub01``. A dataset with no declared spelling keeps
its subject ids as given, stripped of surrounding blanks.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata

from roi_store.errors import AnnotationError, ConfigError

_INT = re.compile(r"^\d+(?:\.0+)?$")
_LINE_BREAKS = re.compile("[\u2028\u2029]")

#: Names the store's Zarr layout gives its own files; an id part spelled so (in any case, for
#: case-insensitive file systems) would collide with the metadata of the group above it.
_RESERVED = frozenset({"zarr.json"})

_ALLOWED = (
    "a name may use letters, digits, blanks and punctuation of any script, but no '/', '\\' or "
    "control characters, and may not be '.' or '..'"
)


def _q(text: object) -> str:
    # Quoted like repr, but a name that is not UTF-8 shows its bytes as \xNN, as ids do; the
    # line and paragraph separators, which would break the line, show as \uNNNN, as repr does.
    return "'" + printable(_LINE_BREAKS.sub(lambda m: f"\\u{ord(m.group()):04x}", str(text))) + "'"


def _why_not(text: str) -> str | None:
    """Why ``text`` cannot be an id part, or None when it can."""
    if not text:
        return "the name is empty"
    if text in (".", ".."):
        return f"{text!r} is a relative path, not a name"
    for sep in ("/", "\\"):
        if sep in text:
            return f"the name holds '{sep}', a path separator"
    for char in text:
        kind = unicodedata.category(char)
        if kind == "Cs":  # how Python carries file-name bytes that are not UTF-8
            return "the name is not valid UTF-8 text"
        if kind == "Cc" or kind in ("Zl", "Zp"):  # a line break would split one-line messages
            return f"the name holds the control character U+{ord(char):04X}"
    if text.lower() in _RESERVED:
        return "the name is reserved by the store format"
    return None


def check_name(value: object, what: str) -> str:
    """``value`` as an id part: stripped of surrounding blanks, in NFC form, and checked.

    Parameters
    ----------
    value : object
        The raw name (a folder name, a sheet or CSV cell).
    what : str
        What the name is, for the message: ``"clip name"``, ``"subject id"``, ...

    Returns
    -------
    str

    Raises
    ------
    AnnotationError
        One line naming the value, why it is refused and what a name may be.
    """
    text = _text(value)
    if why := _why_not(text):
        raise AnnotationError(f"invalid {what} {_q(text)}: {why}; rename it ({_ALLOWED})")
    return text


def _text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a sheet's subject 1 arrives as 1.0
    return unicodedata.normalize("NFC", "" if value is None else str(value).strip())


@dataclasses.dataclass(frozen=True)
class SubjectSpelling:
    """How one dataset spells its subject ids, declared by the dataset's reader module.

    Parameters
    ----------
    prefix : str
        Lower-case text before the number (``"sub"``, ``"s"``, ``""``); matched in any case and
        optional in what is accepted, always written in the canonical form.
    width : int
        Zero-pad the number to this many digits (0: no padding).
    clip_follows_subject : bool
        Clip names start with the subject (``s01_ne_01``) and take its canonical spelling
        (``s1_ne_01``).
    """

    prefix: str = ""
    width: int = 0
    clip_follows_subject: bool = False

    def subject(self, value: object, dataset: str) -> str:
        """The canonical subject id for a raw value (``1``, ``01``, ``1.0``, ``Sub1``, ...).

        Raises
        ------
        AnnotationError
            If the value is not a number with or without the prefix.
        """
        text = _text(value)
        low = text.lower().removeprefix(self.prefix)
        if not _INT.match(low):
            hint = f" or {self.prefix}01" if self.prefix else ""
            raise AnnotationError(f"invalid {dataset} subject id {_q(text)}: expected a number such as 1, 01{hint}")
        return self._spell(int(float(low)))

    def clip(self, text: str) -> str:
        """``text`` with a leading subject respelled canonically, when clip names follow it."""
        if not self.clip_follows_subject or text[: len(self.prefix)].lower() != self.prefix:
            return text
        m = re.match(r"^0*(\d+)(_.*)$", text[len(self.prefix):])
        return self._spell(int(m.group(1))) + m.group(2) if m else text

    def _spell(self, number: int) -> str:
        return self.prefix + str(number).zfill(self.width)


_SPELLINGS: dict[str, SubjectSpelling] = {}

#: A dataset with no declared spelling keeps its names as given.
_AS_GIVEN = SubjectSpelling()


def register_spelling(dataset: str, spelling: SubjectSpelling) -> None:
    """Make ``spelling`` the subject spelling of ``dataset`` (the reader registry calls this).

    Raises
    ------
    ConfigError
        If ``dataset`` already has a different spelling: ids already in stores would change.
    """
    known = _SPELLINGS.setdefault(dataset, spelling)
    if known != spelling:
        raise ConfigError(
            f"dataset {dataset!r} already spells its subjects as {known}; a second spelling "
            f"({spelling}) would change existing ids: keep one reader per dataset"
        )


def normalise_subject(dataset: str, value: object) -> str:
    """Canonical subject id for ``dataset``: its registered spelling, or the name as given.

    Raises
    ------
    AnnotationError
        If the value is not a subject id of that dataset.
    """
    spelling = _SPELLINGS.get(dataset)
    return spelling.subject(value, dataset) if spelling else check_name(value, "subject id")


def loose_parts(dataset: object, subject: object, clip: object = "") -> tuple[str, ...]:
    """The id of something that may not be a valid clip, spelled as near canonical as it goes.

    Readers name what they skip with it, so that a refused clip reads ``casme2/sub01/x`` whether
    its sheet said ``01`` or its folder said ``sub01``, and sorts beside the clips it belongs to.

    Returns
    -------
    tuple of str
        ``(dataset, subject)``, or ``(dataset, subject, clip)`` when ``clip`` is not empty; for a
        valid clip, exactly ``(key.dataset, key.subject, key.clip)``.
    """
    ds = _text(dataset).lower()
    try:
        subj = normalise_subject(ds, subject)
    except AnnotationError:
        subj = _text(subject)
    name = _SPELLINGS.get(ds, _AS_GIVEN).clip(_text(clip))
    return (ds, subj, name) if name else (ds, subj)


@dataclasses.dataclass(frozen=True, order=True)
class ClipKey:
    """A clip's validated identity ``dataset/subject/clip`` (e.g. ``casme2/sub01/EP02_01f``)."""

    dataset: str
    subject: str
    clip: str

    @classmethod
    def make(cls, dataset: str, subject: object, clip: object) -> ClipKey:
        """Build a key from raw values in any spelling the datasets use."""
        dataset = check_name(_text(dataset).lower(), "dataset name")
        subj = normalise_subject(dataset, subject)
        return cls(dataset, subj, check_name(_SPELLINGS.get(dataset, _AS_GIVEN).clip(_text(clip)), "clip name"))

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


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str) -> str:
    """``text`` safe to print and to store as UTF-8 JSON.

    A file name that is not valid UTF-8 reaches Python with lone surrogates (byte ``0xff`` as
    ``"\\udcff"``), which neither a terminal nor a UTF-8 JSON document can hold. Those bytes and
    control characters are written as ``\\xNN`` escapes: ``b"EP\\xff"`` -> ``"EP\\\\xff"``.
    """
    if text.isprintable():
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that no file name produced
        raw = text.encode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", raw.decode("utf-8", "backslashreplace"))
