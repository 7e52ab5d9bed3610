"""Named sets of method settings (``--preset``), kept as data in ``roi_store/data/presets.json``.

``roistore`` holds the defaults; ``paper`` every setting the paper states, so that a reproduction
is one flag. A setting given explicitly wins over the preset's, and the run records both the
preset's name and which of its settings were overridden.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from roi_store.errors import ConfigError

DEFAULT = "roistore"
STAGES = ("embed", "head")


def check_choice(what: str, value, allowed, error: type[Exception] = ConfigError) -> None:
    """Raise ``error`` naming the allowed values when ``value`` is not one of ``allowed``."""
    if value not in allowed:
        raise error(f"invalid {what} {value!r}: allowed values are {', '.join(allowed)}")


@cache
def presets() -> dict:
    """Every preset: name -> {"description", "embed": {...}, "head": {...}}."""
    return json.loads(resources.files("roi_store").joinpath("data/presets.json").read_text(encoding="utf-8"))


def resolve(stage: str, preset: str | None, given: dict) -> tuple[dict, str, list[str]]:
    """The settings of ``stage`` ("embed" or "head"): the preset's, with the non-None values of ``given`` over them.

    Returns ``(settings, preset name, overridden keys)``.

    Raises
    ------
    ConfigError
        For an unknown preset.
    """
    name = preset or DEFAULT
    check_choice("--preset", name, presets())
    base = presets()[name][stage]
    given = {key: value for key, value in given.items() if value is not None}
    return {**base, **given}, name, sorted(key for key, value in given.items() if key in base and base[key] != value)
