"""Native dataset readers, one module per dataset, registered by name in :data:`READERS`.

>>> from roi_store.ingest.datasets import get_reader
>>> items = list(get_reader("casme2").scan(Path("CASME2/CASME2_RAW_selected")))  # doctest: +SKIP

Each reader yields :class:`ClipSpec` (a clip's frames in temporal order plus its annotation) or
:class:`Skip` (why a clip, folder or sheet row was not used), sorted by clip key. Scanning only
lists files and reads sheets; frames are decoded later, by ingest.

A dataset module declares everything about its dataset: folder layout, sheet columns, labels,
frame rate and subject spelling. Adding a dataset is one module and one line in
:data:`NATIVE_READERS`; registering it here also registers its subject spelling for
:class:`~roi_store.ids.ClipKey`, so ids are spelled the same wherever they are made.
"""

from __future__ import annotations

from roi_store.errors import ConfigError
from roi_store.ids import register_spelling
from roi_store.ingest.datasets.base import IMAGE_SUFFIXES, ClipSpec, DatasetReader, Skip, frame_number
from roi_store.ingest.datasets.casme2 import CASME2Reader
from roi_store.ingest.datasets.manifest import ManifestReader
from roi_store.ingest.datasets.samm import SAMMReader
from roi_store.ingest.datasets.smic import SMICReader

#: The readers of each dataset's own layout, one module each.
NATIVE_READERS: tuple[DatasetReader, ...] = (CASME2Reader(), SAMMReader(), SMICReader())

#: Every reader by name; the CLI's ``--dataset`` choices are these keys.
READERS: dict[str, DatasetReader] = {r.name: r for r in (*NATIVE_READERS, ManifestReader(natives=NATIVE_READERS))}

# ClipKey lives below the readers (the store uses it) and cannot import them: they hand it
# their spellings. ``import roi_store`` imports this module, so no id is made before this ran.
for _reader in NATIVE_READERS:
    register_spelling(_reader.name, _reader.spelling)


def get_reader(name: str) -> DatasetReader:
    """The registered reader called ``name`` (case and surrounding blanks ignored).

    Parameters
    ----------
    name : str
        One of the keys of :data:`READERS`.

    Returns
    -------
    DatasetReader

    Raises
    ------
    ConfigError
        If no reader has that name.
    """
    if (reader := READERS.get(str(name).strip().lower())) is None:
        raise ConfigError(f"unknown dataset {name!r}: allowed values are {', '.join(sorted(READERS))}")
    return reader


__all__ = [
    "IMAGE_SUFFIXES", "NATIVE_READERS", "READERS", "CASME2Reader", "ClipSpec", "DatasetReader", "ManifestReader",
    "SAMMReader", "SMICReader", "Skip", "frame_number", "get_reader",
]
