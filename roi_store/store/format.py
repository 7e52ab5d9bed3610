"""The on-disk format's name and version: written here, and only here; checked on every open.

See ``schemas/FORMAT.rst`` for the rules a store follows and ``schemas/*.schema.json`` for the
documents' JSON Schemas.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

import jsonschema
import jsonschema_rs
import numpy as np

from roi_store._version import __version__
from roi_store.ids import printable
from roi_store.errors import FormatVersionError, StoreError, ValidationError

FORMAT_NAME = "roistore"
FORMAT_VERSION = 2
#: Versions this release reads. Format 2 added the aligned whole-face crops (array ``face``) that
#: flow feature sets are computed from; a format 1 store reads as before, and
#: ``roistore upgrade`` (:func:`roi_store.ingest.upgrade.upgrade_store`) cuts its face crops
#: from the source frames and makes it format 2 in place.
READABLE_VERSIONS = frozenset({1, 2})
#: The first format version whose stores hold the whole-face crops.
FACE_VERSION = 2
ATTRS_KEY = "roistore"


def stamp(header: dict) -> dict:
    """Return ``header`` with the format's name, version and writer set (the one writer of these).

    A header that names its version keeps it: appending to a format 1 store must not make it
    claim format 2's face crops. Only a new store, or an upgrade that sets the version itself,
    gets :data:`FORMAT_VERSION`.
    """
    version = header.get("format_version", FORMAT_VERSION)
    return {**header, "format": FORMAT_NAME, "format_version": version, "writer": f"roistore {__version__}"}


def check(attrs: dict, where: str) -> dict:
    """Check a store's root attributes and return its roistore header.

    Raises
    ------
    StoreError
        If the group is not a roistore store.
    FormatVersionError
        If the store was written by a format version this release cannot read.
    """
    header = attrs.get(ATTRS_KEY)
    if not isinstance(header, dict):
        raise StoreError(f"{where} is a Zarr group but not a roistore store (no '{ATTRS_KEY}' header): "
                         "create one with 'roistore ingest'")
    if header.get("format") != FORMAT_NAME:
        raise FormatVersionError(f"{where}: its header names format {header.get('format')!r}, not {FORMAT_NAME!r}, "
                                 f"which this roistore ({__version__}) cannot read: open it with the tool that wrote "
                                 "it, or re-ingest the dataset")
    version = header.get("format_version")
    if not isinstance(version, int):
        raise StoreError(f"{where}: format_version {version!r} is not an integer: the store header is damaged")
    if version > FORMAT_VERSION:
        raise FormatVersionError(f"{where} uses roistore format version {version}, newer than this roistore "
                                 f"({__version__}) reads (up to {FORMAT_VERSION}): upgrade roistore "
                                 "(pip install --upgrade roistore)")
    if version not in READABLE_VERSIONS:
        raise FormatVersionError(f"{where} uses roistore format version {version}, which this roistore "
                                 f"({__version__}) no longer reads: re-ingest the dataset, or open it with the "
                                 "roistore release that wrote it")
    validate_document(header, "store", where)
    return header


def schema(name: str) -> dict:
    """The JSON Schema ``schemas/<name>.schema.json`` shipped with the package."""
    return json.loads(resources.files("roi_store.schemas").joinpath(f"{name}.schema.json").read_text())


@functools.lru_cache(maxsize=None)
def _schema_of(name: str) -> dict:
    # "run.commit" names the definition "commit" of run.schema.json (a run's smaller documents
    # live beside its plan).
    file, _, part = name.partition(".")
    doc = schema(file)
    return {"$schema": doc["$schema"], "$defs": doc["$defs"], "$ref": f"#/$defs/{part}"} if part else doc


@functools.lru_cache(maxsize=None)
def _validators(name: str) -> tuple:
    # Built once per process: ingest validates every record it writes. jsonschema-rs says whether
    # a document is valid about 250 times faster than jsonschema (1.4 ms against 348 ms for the
    # 174 records of the benchmark's 0.3-scale ingest, where jsonschema alone took a tenth of the
    # coordinating process's share of a 2-job ingest); jsonschema then names the problem of an
    # invalid one, in the words the errors have always used.
    return jsonschema_rs.validator_for(_schema_of(name)), jsonschema.Draft202012Validator(_schema_of(name))


def document_problem(doc: dict, name: str, where: str) -> str | None:
    """Why ``doc`` does not match schema ``name`` (one line naming the first problem), or None."""
    quick, stock = _validators(name)
    if quick.is_valid(doc):
        return None
    error = min(stock.iter_errors(doc), key=lambda e: list(e.absolute_path), default=None)
    if error is None:
        return None
    at = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    return f"{where}: {name} document does not match its schema at {at}: {error.message}"


def validate_document(doc: dict, name: str, where: str) -> None:
    """Validate ``doc`` against schema ``name``; one-line ValidationError naming the first problem."""
    problem = document_problem(doc, name, where)
    if problem:
        raise ValidationError(problem)


def json_safe(doc):
    """``doc`` with every string in it, keys included, passed through :func:`printable`, and every
    NumPy number made the Python number it equals (JSON knows no other)."""
    if isinstance(doc, str):
        return printable(doc)
    if isinstance(doc, np.generic):
        return doc.item()
    if isinstance(doc, dict):
        return {json_safe(k): json_safe(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        kinds = set(map(type, doc))
        if kinds <= _KEPT or (kinds == {str} and all(map(str.isprintable, doc))):
            return list(doc)  # nothing to change (frames, frame numbers): one pass in C, not one call each
        return [json_safe(v) for v in doc]
    return doc


#: Types :func:`json_safe` returns as they are.
_KEPT = {int, float, bool, type(None)}
