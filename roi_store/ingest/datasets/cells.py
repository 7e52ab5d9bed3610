"""Cell values: frame numbers, apex, action units and emotion labels, from a sheet or CSV cell.

Formulas are never evaluated and dates never taken for numbers; a cell that does not hold
what its column needs raises :class:`BadCell` (or, for the lenient columns, gives a warning),
with a message that shows the cell.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable

from roi_store.ingest.datasets.base import one_line


class BadCell(ValueError):
    """A sheet cell that does not hold what its column needs (the message says why)."""


def is_blank(value: object) -> bool:
    """True for an empty cell: None or text made of blanks only."""
    return value is None or (isinstance(value, str) and not value.strip())


def _show(value: object) -> str:
    text = one_line(value)
    return repr(text if len(text) <= 40 else text[:37] + "...")


_WHOLE = re.compile(r"^[+-]?\d+(?:\.0*)?$")


def cell_int(value: object) -> int:
    """A frame number from a cell: int, integral float, or digits as text; never negative.

    Raises
    ------
    BadCell
        For a blank cell, a formula (never evaluated), a date, a negative number, or anything
        not whole.
    """
    if is_blank(value):
        raise BadCell("is blank")
    if isinstance(value, bool):
        raise BadCell(f"holds {value!r}, not a frame number")
    if isinstance(value, int):
        return _not_negative(value)
    if isinstance(value, float):
        if value.is_integer():
            return _not_negative(int(value))
        raise BadCell(f"holds {value!r}, not a whole frame number")
    if isinstance(value, (datetime.date, datetime.time, datetime.timedelta)):
        raise BadCell(f"holds a date/time ({value}), not a frame number")
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("="):
            raise BadCell(f"holds a formula ({_show(text)}); formulas are not evaluated")
        if _WHOLE.match(text):
            return _not_negative(int(float(text)))
        raise BadCell(f"holds {_show(text)}, not a frame number")
    raise BadCell(f"holds {_show(value)} ({type(value).__name__}), not a frame number")


def _not_negative(number: int) -> int:
    if number < 0:
        raise BadCell(f"holds {number}, not a frame number (frame numbers are 0 or more)")
    return number


def parse_apex(
    value: object, onset: int | None, offset: int | None, column: str
) -> tuple[int | None, list[str]]:
    """The apex frame, or None with a warning when it is not given or unusable.

    Parameters
    ----------
    value : object
        The cell.
    onset, offset : int or None
        The clip's annotated range; an apex outside it is dropped. None: no range to check.
    column : str
        The column's name, for the warning.

    Returns
    -------
    (int or None, list of str)
    """
    if is_blank(value):
        return None, ["apex not given (blank)"]
    if isinstance(value, str) and value.strip() == "/":
        return None, ["apex not given ('/')"]
    try:
        apex = cell_int(value)
    except BadCell as exc:
        return None, [f"apex not usable: {column} {exc}"]
    if onset is not None and offset is not None and not onset <= apex <= offset:
        return None, [f"apex {apex} outside the annotated frames {onset}-{offset}; apex not used"]
    return apex, []


def parse_aus(value: object) -> tuple[list[str], str]:
    """Action units from a cell, as a flat list of strings, and the cell's raw text.

    ``12`` -> ``["12"]``; ``"4+7+L10"`` -> ``["4", "7", "L10"]``; alternatives are kept, all of
    them: ``"L12 or L14"`` -> ``["L12", "L14"]``, ``"A1/A2"`` (``/`` means "or") ->
    ``["A1", "A2"]``.

    Returns
    -------
    (list of str, str)
        The AUs in order of mention without repeats, and the raw text (``""`` if blank).
    """
    if is_blank(value):
        return [], ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    raw = one_line(value)
    aus: list[str] = []
    for token in re.split(r"[+,;/&\s]+", raw):
        token = token.strip("()[]{}?*")
        if token and token.lower() not in {"or", "and"} and token not in aus:
            aus.append(token)
    return aus, raw


def normalise_emotion(
    value: object, known: Iterable[str] | None, dataset: str
) -> tuple[str, list[str]]:
    """An emotion label stripped and lower-cased, with a warning when it is not a known one.

    Parameters
    ----------
    value : object
        The cell or folder name.
    known : iterable of str or None
        The dataset's labels (lower case); None accepts anything silently.
    dataset : str
        For the warning.

    Returns
    -------
    (str, list of str)
        ``"Happiness "`` -> ``"happiness"``; unknown labels are kept as given (lower-cased).
    """
    given = "" if value is None else " ".join(str(value).split())
    text = given.lower()  # "Others"/"others" and "Happiness"/"happiness" must compare equal
    if not text:
        return "", ["emotion not given"]
    labels = sorted(known) if known is not None else None
    if labels is not None and text not in labels:
        return text, [
            f"emotion {given!r} is not one of the {dataset} labels ({', '.join(labels)}); "
            f"kept as {text!r}"
        ]
    return text, []

