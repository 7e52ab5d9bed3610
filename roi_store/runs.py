"""Model runs inside a store: settings, fold records, embeddings, models and predictions.

Layout (see ``schemas/FORMAT.rst``)::

    runs/<name>                      attrs["run"]: settings, clips, folds, state, timings
    runs/<name>/embeddings/<region>  float16 (embedding folds, clips, t_max, 20); one chunk per fold
    runs/<name>/models/cnn/<fold>/<region>   uint8: a .keras file
    runs/<name>/head                 attrs["head"]: head settings, folds, predictions
    runs/<name>/models/head/<fold>   uint8: a .keras file

Only the coordinating process writes attributes; fold workers write their own chunks and
model arrays, which no other worker touches.
"""

from __future__ import annotations

import getpass
import platform
import re

import numpy as np
import zarr
import zarr.codecs

from roi_store import format as fmt
from roi_store.errors import StoreError
from roi_store.store import Store, compressors, now

RUNS = "runs"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def check_run_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise StoreError(f"invalid run name {name!r}: use up to 64 letters, digits, '_', '-', '.'")
    return name


def who() -> dict:
    try:
        user = getpass.getuser()
    except Exception:  # no user name in some containers
        user = "unknown"
    return {"user": user, "host": platform.node()}


def run_group(store: Store, name: str) -> zarr.Group:
    path = f"{RUNS}/{check_run_name(name)}"
    if path not in store.zgroup:
        raise StoreError(f"no run {name!r} in {store.where}: run 'roistore embed {store.where} --run {name}' first")
    return store.zgroup[path]


def run_info(store: Store, name: str) -> dict:
    """The run's attributes document."""
    return dict(run_group(store, name).attrs["run"])


def list_runs(store: Store) -> list[dict]:
    if RUNS not in store.zgroup:
        return []
    out = []
    for _name, node in sorted(store.zgroup[RUNS].groups()):
        doc = node.attrs.get("run")
        if doc:
            out.append(dict(doc))
    return out


def create_run(store: Store, name: str, doc: dict, overwrite: bool = False) -> zarr.Group:
    """Create ``runs/<name>`` with its attributes; refuse to touch an existing run unless ``overwrite``."""
    path = f"{RUNS}/{check_run_name(name)}"
    if path in store.zgroup:
        if not overwrite:
            state = store.zgroup[path].attrs.get("run", {}).get("state", "unknown")
            raise StoreError(f"run {name!r} already exists in {store.where} ({state}): choose another --run name or pass --overwrite")
        del store.zgroup[path]
    doc = {**doc, "name": name, "state": "running", "created": now(), **who()}
    fmt.validate_document(doc, "run", f"{store.where} run {name}")
    return store.zgroup.create_group(path, attributes={"run": doc})


def update_run(group: zarr.Group, **changes) -> dict:
    """Rewrite the run document with ``changes`` (coordinating process only), validated."""
    doc = {**group.attrs["run"], **changes}
    fmt.validate_document(doc, "run", f"run {doc.get('name')}")
    group.attrs["run"] = doc
    return doc


def embedding_arrays(group: zarr.Group, regions: list[str], n_folds: int, n_clips: int, t_max: int, dim: int):
    for r in regions:
        group.create_array(f"embeddings/{r}", shape=(n_folds, n_clips, t_max, dim), chunks=(1, n_clips, t_max, dim),
                           dtype="float16", fill_value=0, compressors=compressors(),
                           dimension_names=("fold", "clip", "frame", "feature"))


def put_bytes(group: zarr.Group, path: str, data: bytes) -> None:
    """Store a file's bytes as a checksummed uint8 array (models; never pickled objects)."""
    arr = np.frombuffer(data, dtype=np.uint8)
    # Trained weights do not compress: checksum only, in 8 MiB chunks.
    a = group.create_array(path, shape=arr.shape, chunks=(min(len(arr), 1 << 23),), dtype="uint8",
                           compressors=[zarr.codecs.Crc32cCodec()], overwrite=True)
    a[:] = arr


def get_bytes(group: zarr.Group, path: str) -> bytes:
    if path not in group:
        raise StoreError(f"model {path} is missing from run {group.attrs.get('run', {}).get('name')}: re-run the command that makes it")
    return group[path][:].tobytes()
