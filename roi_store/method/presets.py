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
    if name not in presets():
        raise ConfigError(f"invalid --preset {name!r}: allowed values are {', '.join(presets())}")
    base = presets()[name][stage]
    out = dict(base)
    overridden = []
    for key, value in given.items():
        if value is None:
            continue
        if key in base and base[key] != value:
            overridden.append(key)
        out[key] = value
    return out, name, sorted(overridden)
