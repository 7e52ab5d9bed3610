"""Feature sets: per-clip arrays computed from a store's crops and kept beside them (``features/<name>``).

A feature set (today: onset-apex optical flow, made by ``roistore flow``) holds one float32
array per crop, ``face`` and the six regions, each ``(n_clips, size, size, channels)`` with one
chunk per clip, and a document (``attrs["feature_set"]``, ``schemas/features.schema.json``)
that records how it was made and which clips are done. Workers write only their clips' chunks;
the coordinating process alone writes the document, after the chunks, so a clip listed as done
always has its data. See ``schemas/FORMAT.rst``, section "Feature sets".
"""

from __future__ import annotations

import hashlib

import numpy as np
import zarr

from roi_store.errors import ConfigError, FormatVersionError, StoreError
from roi_store.store import format as fmt
from roi_store.store.folds import make_folds, subject_of
from roi_store.store.layout import compressors
from roi_store.store.store import Store

FEATURES = "features"
DOC_KEY = "feature_set"
RUNNING, COMPLETE = "running", "complete"
CHANNELS = ("u", "v", "strain")


def check_name(name: str) -> str:
    """``name`` if it can name a feature set (a folder name), else ConfigError."""
    ok = bool(name) and name[0].isalnum() and all(c.isalnum() or c in "_.-" for c in name) and name.isascii()
    if not ok:
        raise ConfigError(f"invalid feature set name {name!r}: use letters, digits, '_', '.' and '-', "
                          "starting with a letter or digit")
    return name


def set_path(name: str) -> str:
    return f"{FEATURES}/{name}"


def feature_set_names(store: Store) -> list[str]:
    """Names of the feature sets in ``store`` (complete or not), sorted."""
    group = store.zgroup.get(FEATURES)
    if group is None:
        return []
    return sorted(name for name, node in group.groups() if DOC_KEY in node.attrs)


def set_document(store: Store, name: str) -> dict | None:
    """The document of feature set ``name``, or None if there is none.

    Raises
    ------
    FormatVersionError
        If a newer roistore wrote it (its ``format_version`` is past this release's).
    """
    node = store.zgroup.get(set_path(name))
    doc = dict(node.attrs[DOC_KEY]) if node is not None and DOC_KEY in node.attrs else None
    if doc is not None and isinstance(doc.get("format_version"), int) and doc["format_version"] > fmt.FORMAT_VERSION:
        raise FormatVersionError(f"feature set {name!r} of {store.where} was written by format version "
                                 f"{doc['format_version']}, newer than this roistore reads: upgrade roistore")
    return doc


def feature_summary(store: Store) -> dict:
    """What ``roistore info`` lists of each feature set: state, estimator, size, apex rule, clips done."""
    out = {}
    for name in feature_set_names(store):
        doc = set_document(store, name)
        out[name] = {"state": doc["state"], "estimator": doc["estimator"], "size": doc["size"],
                     "apex": doc["apex_rule"], "clips": len(doc["clips"]), "done": len(doc["done"])}
    return out


def create_set(store: Store, doc: dict) -> zarr.Group:
    """Write a new feature set's arrays (empty) and its first document; return its group."""
    fmt.validate_document(doc, "features", f"{store.where} feature set {doc['name']}")
    group = store.zgroup.require_group(set_path(doc["name"]))
    n, size, depth = len(doc["clips"]), doc["size"], len(doc["channels"])
    for crop in doc["crops"]:
        group.create_array(crop, shape=(n, size, size, depth), chunks=(1, size, size, depth), dtype="float32",
                           fill_value=0.0, compressors=compressors(), dimension_names=("clip", "y", "x", "channel"),
                           overwrite=True)
    group.attrs[DOC_KEY] = doc
    return group


def write_document(store: Store, doc: dict) -> None:
    """Replace a feature set's document (the coordinating process only), checked against its schema."""
    doc = fmt.json_safe(doc)
    fmt.validate_document(doc, "features", f"{store.where} feature set {doc['name']}")
    store.zgroup[set_path(doc["name"])].attrs[DOC_KEY] = doc


def delete_set(store: Store, name: str) -> None:
    """Remove feature set ``name`` (``--overwrite``)."""
    if set_path(name) in store.zgroup:
        del store.zgroup[set_path(name)]


def combined_digest(doc: dict) -> str:
    """SHA-256 over the per-clip digests of the crops a set was computed from, in the set's clip order."""
    h = hashlib.sha256()
    for clip in doc["clips"]:
        h.update(doc["done"][clip]["source_digest"].encode())
    return h.hexdigest()


class FeatureSet:
    """A complete feature set of a store, as arrays a user can train on (``open_store(p).features(name)``).

    The contract other code relies on:

    - ``name``; ``attrs``: a dict with ``estimator``, ``size``, ``apex_rule``, ``parameters``,
      ``versions`` (library versions), ``source_digest`` (SHA-256 of the crops it came from),
      ``crops``, ``channels`` and ``apex_error`` (max-flow sets: how far the estimate lands from
      the annotated apex, per dataset);
    - ``clips``: clip ids ``"dataset/subject/clip"`` in the store's clip order (sorted ids);
    - ``subjects`` and ``datasets``: per clip, the subject key ``"dataset/subject"`` (the unit
      folds are made of) and the dataset;
    - ``labels(view)``: per clip, its label in ``view`` (``"megc2019"``: the composite), None where
      the view leaves the clip out;
    - ``face``: float32 ``(n_clips, size, size, 3)``, channels ``(u, v, strain)``;
      ``region(name)``: the same for region ``R0`` .. ``R5``;
    - ``apex``: a dict of per-clip arrays: ``"frame"`` (the apex frame's index in the clip),
      ``"onset"`` (the onset frame's index) and ``"source"`` (``annotated``, ``middle`` or
      ``estimated``);
    - ``folds(view, protocol="loso", folds=None, seed=0, same_person=None)``: the method's folds
      of the view (:func:`roi_store.store.folds.make_folds`, as ``roistore embed`` plans them),
      each a dict with ``index``, ``name``, ``test_subjects``, ``test_clips``, ``train_clips``
      and ``test_index`` / ``train_index`` (int arrays of rows of this set).
    """

    def __init__(self, store: Store, name: str):
        doc = set_document(store, check_name(name))
        if doc is None:
            known = ", ".join(feature_set_names(store)) or "none"
            raise StoreError(f"no feature set {name!r} in {store.where} (it has: {known}): make one with "
                             f"'roistore flow {store.where} --name {name}'")
        if doc["state"] != COMPLETE:
            raise StoreError(f"feature set {name!r} of {store.where} is not complete ({len(doc['done'])} of "
                             f"{len(doc['clips'])} clips): resume it with 'roistore flow {store.where} --name {name}' "
                             "and the options it was started with")
        self.store, self.name, self._doc = store, name, doc
        records = store.records()
        missing = [c for c in doc["clips"] if c not in records]
        if missing:
            raise StoreError(f"feature set {name!r} of {store.where} lists clip {missing[0]}, which the store no "
                             f"longer holds: recompute it with 'roistore flow ... --name {name} --overwrite'")
        self._records = [records[c] for c in doc["clips"]]

    @property
    def attrs(self) -> dict:
        keep = ("kind", "estimator", "size", "apex_rule", "parameters", "versions", "source_digest", "crops",
                "channels", "apex_error", "created", "finished", "writer")
        return {k: self._doc[k] for k in keep if k in self._doc}

    @property
    def clips(self) -> list[str]:
        return list(self._doc["clips"])

    @property
    def subjects(self) -> list[str]:
        return [subject_of(r) for r in self._records]

    @property
    def datasets(self) -> list[str]:
        return [r.dataset for r in self._records]

    def labels(self, view: str) -> list[str | None]:
        if view not in self.store.views:
            raise StoreError(f"invalid view {view!r}: this store defines {', '.join(sorted(self.store.views))}")
        return [r.labels.get(view) for r in self._records]

    def _array(self, crop: str) -> np.ndarray:
        if crop not in self._doc["crops"]:
            held = ", ".join(self._doc["crops"])
            raise StoreError(f"invalid region {crop!r}: feature set {self.name!r} holds {held}")
        return np.asarray(self.store.zgroup[f"{set_path(self.name)}/{crop}"][:], dtype=np.float32)

    @property
    def face(self) -> np.ndarray:
        return self._array("face")

    def region(self, name: str) -> np.ndarray:
        return self._array(name)

    @property
    def apex(self) -> dict:
        done = [self._doc["done"][c] for c in self._doc["clips"]]
        return {"frame": np.array([d["apex"] for d in done], dtype=np.int64),
                "onset": np.array([d["onset"] for d in done], dtype=np.int64),
                "source": [d["apex_source"] for d in done]}

    def folds(self, view: str, protocol: str = "loso", folds: int | None = None, seed: int = 0,
              same_person: dict[str, list[str]] | None = None) -> list[dict]:
        """The folds of ``view`` that ``roistore embed`` would use with these options, over this set's rows.

        Raises
        ------
        StoreError
            If the view has clips this set lacks (the store gained clips since): recompute the set.
        ConfigError
            For an unknown protocol or an impossible ``folds``.
        """
        clips = self.store.view_clips(view)
        row = {c: i for i, c in enumerate(self._doc["clips"])}
        lacking = [c.id for c in clips if c.id not in row]
        if lacking:
            raise StoreError(f"feature set {self.name!r} lacks {len(lacking)} clips of view {view} (first "
                             f"{lacking[0]}): recompute it with 'roistore flow ... --name {self.name} --overwrite'")
        plan = make_folds(clips, protocol, folds, seed, same_person)
        for fold in plan:
            test = set(fold["test_subjects"])
            fold["test_clips"] = [c.id for c in clips if subject_of(c) in test]
            fold["train_clips"] = [c.id for c in clips if subject_of(c) not in test]
            fold["test_index"] = np.array([row[c] for c in fold["test_clips"]], dtype=np.int64)
            fold["train_index"] = np.array([row[c] for c in fold["train_clips"]], dtype=np.int64)
        return plan


__all__ = ["FeatureSet", "feature_set_names"]
