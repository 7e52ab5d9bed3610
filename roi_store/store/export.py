"""``export``: a run's embeddings, labels, folds and predictions as one HDF5 or NPZ file.

For analysis outside roistore (NumPy, MATLAB, R). Both formats hold the same names (see the
docs' "Store format", "Export files"); indices are 0-based, strings are UTF-8 (variable-length strings in
HDF5, which MATLAB's ``h5read`` returns as text), masks are ``uint8`` 0/1.

Embeddings are written unpadded: per region one ``(embedding folds, total frames, 20)`` array
holding every clip's frames one after the other, clip ``i`` at
``offsets[i] : offsets[i] + n_frames[i]``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from roi_store._version import __version__
from roi_store.errors import ConfigError
from roi_store.ids import ClipKey
from roi_store.store.runs import (commit_doc, embedding_fold, embeddings_source, head_document, not_ready,
                                  run_document, run_group, run_status)
from roi_store.store.share import atomic_file, check_output
from roi_store.store.store import Store

FORMATS = ("hdf5", "npz")
EXPORT_NAME = "roistore-export"
EXPORT_VERSION = 1


def export_run(store: Store, run: str, out: str | Path, fmt: str = "hdf5", *, overwrite: bool = False) -> dict:
    """Write run ``run`` of ``store`` to ``out`` as HDF5 or NPZ.

    The file is written under a temporary name beside ``out`` and renamed into place when
    complete. The store may be a folder, a zip or a URL (it is only read).

    Parameters
    ----------
    store : Store
        An open store.
    run : str
        The run's name; its embeddings must be complete (``roistore embed`` finished).
    out : path
        The file to write.
    fmt : {"hdf5", "npz"}
        HDF5 (h5py) or NumPy's compressed ``.npz``.
    overwrite : bool
        Replace an existing ``out``.

    Returns
    -------
    dict
        What was written: ``out``, ``format``, ``clips``, ``folds``, ``frames``, ``predictions``
        (whether the head's predictions were included), ``arrays`` (names).

    Raises
    ------
    RoiStoreError
        If the run does not exist or has no complete embeddings, ``fmt`` is unknown, or ``out``
        exists (without ``overwrite``).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"invalid export format {fmt!r}: allowed values are {', '.join(FORMATS)}")
    out = Path(out)
    check_output(out, overwrite)
    arrays, meta, embeddings = _collect(store, run)
    with atomic_file(out) as tmp:
        (_write_hdf5 if fmt == "hdf5" else _write_npz)(tmp, arrays, meta, embeddings)
    return {"out": str(out), "format": fmt, "clips": len(arrays["clip_ids"]), "folds": len(arrays["fold_names"]),
            "frames": int(arrays["n_frames"].sum()), "predictions": "pred" in arrays,
            "arrays": sorted([*arrays, "meta", *(f"embeddings/{r}" for r in meta["regions"])])}


def _collect(store: Store, run: str):
    """The export's arrays (small ones), its metadata and a reader of each region's embeddings."""
    source = embeddings_source(store, run)
    group = run_group(store, source)  # a head-only control: its source's embeddings
    # A method on a flow feature set (STSTNet) has no embeddings: its one stage is written as a head.
    method = ((group.attrs.get("run") or {}).get("settings") or {}).get("method")
    if commit_doc(store, source, "head" if method else "embed") is None:
        raise not_ready(store, run, run_status(store, run))
    doc = run_document(store, run)
    head = head_document(store, run) if commit_doc(store, run, "head") is not None else None
    ids = list(doc["clips"])
    index = {c: i for i, c in enumerate(ids)}
    classes = list(doc["classes"])
    keys = [ClipKey.parse(c) for c in ids]
    lengths = np.array([store.clip(c).n_frames for c in ids], dtype=np.int64)
    folds = sorted(doc["folds"], key=lambda f: f["index"])
    head_folds = {f["index"]: f for f in head["folds"]} if head else {}
    used = head["labels_used"] if head else doc["labels"]

    def mask(members) -> np.ndarray:
        return np.isin(ids, list(members)).astype(np.uint8)

    fold_test = np.array([mask(f["test_clips"]) for f in folds])
    # A fold's head trains on the run's clips outside its test clips (recorded by fit-lstm).
    fold_train = np.array([mask(head_folds[f["index"]]["head_train_clips"]) if f["index"] in head_folds
                           else 1 - mask(f["test_clips"]) for f in folds])
    fold_cnn = np.array([mask(f.get("cnn_train_clips", [])) for f in folds])
    test_fold = np.full(len(ids), -1, dtype=np.int64)
    for k, f in enumerate(folds):
        test_fold[fold_test[k] == 1] = f["index"]
    arrays = {
        "clip_ids": _text(ids),
        "datasets": _text([k.dataset for k in keys]),
        "subjects": _text([k.subject for k in keys]),
        "classes": _text(classes),
        "labels": _text(doc["true_labels"]),
        "label_index": np.array([classes.index(v) for v in doc["true_labels"]], dtype=np.int64),
        # The head's labels: a head-only control shuffles them after the embed.
        "train_labels": _text(used),
        "train_label_index": np.array([classes.index(v) for v in used], dtype=np.int64),
        "n_frames": lengths,
        "offsets": np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
        "fold_names": _text([f["name"] for f in folds]),
        # The CNN group whose embeddings each fold's head used, as the run records it (a cross-fitted
        # run's group that held the fold's test subject out; never the fold's own index there).
        "embedding_fold": np.array([embedding_fold(doc, f) for f in folds], dtype=np.int64),
        "test_fold": test_fold,
        "fold_test": fold_test,
        "fold_train": fold_train,
        "fold_cnn_train": fold_cnn,
    }
    if head:
        pred = [""] * len(ids)
        probs = np.full((len(ids), len(classes)), np.nan, dtype=np.float32)
        for p in head["predictions"]:
            i = index[p["id"]]
            pred[i] = p["pred"]
            probs[i] = p["probs"]
        arrays["pred"] = _text(pred)
        arrays["pred_index"] = np.array([classes.index(v) if v else -1 for v in pred], dtype=np.int64)
        arrays["probs"] = probs
    regions = list(doc["regions"])
    n_emb, _, _, dim = group[f"embeddings/{regions[0]}"].shape if regions else (0, 0, 0, 0)
    meta = {
        "format": EXPORT_NAME, "export_version": EXPORT_VERSION, "writer": f"roistore {__version__}",
        "store": store.where, "store_format_version": store.header["format_version"], "run": run,
        "state": doc.get("state"), "view": doc["settings"]["view"], "protocol": doc["settings"]["protocol"],
        "cnn_scope": doc["settings"].get("cnn_scope"), "leakage": bool(doc.get("leakage")),
        "method": method or "region-cnn+lstm", "features": doc["settings"].get("features"),
        "permuted": (head["settings"] if head else doc["settings"]).get("permute_labels") is not None,
        "regions": regions, "embedding_dim": int(dim), "embedding_folds": int(n_emb),
        "settings": {"embed": doc["settings"], "head": head["settings"] if head else None},
        "fitted": head is not None,
    }

    def embeddings(region: str):
        """Yield (embedding fold, its unpadded (total frames, dim) float16 block), fold by fold."""
        arr = group[f"embeddings/{region}"]
        for e in range(arr.shape[0]):
            block = arr[e]
            yield e, np.concatenate([block[i, :n] for i, n in enumerate(lengths)])

    return arrays, meta, embeddings


def _text(values) -> np.ndarray:
    # Fixed-width unicode in NumPy (never an object array: it would need pickle to load).
    return np.array([str(v) for v in values], dtype=np.str_)


def _write_npz(path: str, arrays: dict, meta: dict, embeddings) -> None:
    data = {**arrays, "meta": np.array(json.dumps(meta))}
    for region in meta["regions"]:
        data[f"embeddings/{region}"] = np.stack([block for _, block in embeddings(region)])
    with open(path, "wb") as fh:  # a file object: savez would append '.npz' to a name
        np.savez_compressed(fh, **data)


def _write_hdf5(path: str, arrays: dict, meta: dict, embeddings) -> None:
    import h5py

    text = h5py.string_dtype("utf-8")
    frames = int(arrays["n_frames"].sum())
    with h5py.File(path, "w") as f:
        for key in ("format", "export_version", "writer", "run", "store"):
            f.attrs[key] = meta[key]
        f.create_dataset("meta", data=json.dumps(meta), dtype=text)
        for name, value in arrays.items():
            utf8 = value.dtype.kind == "U"
            f.create_dataset(name, data=value.astype(object) if utf8 else value, dtype=text if utf8 else None)
        for region in meta["regions"]:
            shape = (meta["embedding_folds"], frames, meta["embedding_dim"])
            ds = f.create_dataset(f"embeddings/{region}", shape=shape, dtype="float16",
                                  chunks=(1, min(frames, 65536), shape[2]), compression="gzip", shuffle=True)
            for e, block in embeddings(region):
                ds[e] = block


__all__ = ["EXPORT_VERSION", "FORMATS", "export_run"]


def export_features(store: Store, name: str, out: str | Path, fmt: str = "hdf5", *, overwrite: bool = False) -> dict:
    """Write feature set ``name`` of ``store`` to ``out`` as HDF5 or NPZ, with the leak-free folds.

    Names in the file: ``clip_ids``, ``datasets``, ``subjects`` (``dataset/subject``), ``face``
    and ``regions/<R>`` (float32 ``(clips, size, size, 3)``: u, v, strain), ``onset_frame``,
    ``apex_frame``, ``apex_source``; per view ``labels/<view>`` (``""`` where the view leaves a
    clip out) and the method's LOSO folds, ``folds/<view>/test_fold`` (the fold that tests each
    clip, -1 outside the view) and ``folds/<view>/fold_names``; ``meta`` (JSON: the set's
    settings). Other protocols: :meth:`roi_store.store.features.FeatureSet.folds`.

    Returns
    -------
    dict
        ``out``, ``format``, ``clips``, ``arrays`` (names).

    Raises
    ------
    RoiStoreError
        If the set does not exist or is not complete, ``fmt`` is unknown, or ``out`` exists
        (without ``overwrite``).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"invalid export format {fmt!r}: allowed values are {', '.join(FORMATS)}")
    out = Path(out)
    check_output(out, overwrite)
    fset = store.features(name)
    apex = fset.apex
    arrays = {"clip_ids": _text(fset.clips), "datasets": _text(fset.datasets), "subjects": _text(fset.subjects),
              "onset_frame": apex["onset"], "apex_frame": apex["frame"], "apex_source": _text(apex["source"]),
              "face": fset.face}
    for region in fset.attrs["crops"][1:]:
        arrays[f"regions/{region}"] = fset.region(region)
    for view in store.views:
        labels = fset.labels(view)
        arrays[f"labels/{view}"] = _text([v or "" for v in labels])
        if not any(labels):
            continue
        plan = fset.folds(view, "loso")
        test_fold = np.full(len(labels), -1, dtype=np.int64)
        for fold in plan:
            test_fold[fold["test_index"]] = fold["index"]
        arrays[f"folds/{view}/test_fold"] = test_fold
        arrays[f"folds/{view}/fold_names"] = _text([f["name"] for f in plan])
    meta = {"format": EXPORT_NAME, "export_version": EXPORT_VERSION, "writer": f"roistore {__version__}",
            "store": store.where, "store_format_version": store.header["format_version"], "feature_set": name,
            **fset.attrs}
    with atomic_file(out) as tmp:
        if fmt == "npz":
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays, meta=np.array(json.dumps(meta)))
        else:
            import h5py

            text = h5py.string_dtype("utf-8")
            with h5py.File(tmp, "w") as f:
                for key in ("format", "export_version", "writer", "feature_set", "store"):
                    f.attrs[key] = meta[key]
                f.create_dataset("meta", data=json.dumps(meta), dtype=text)
                for key, value in arrays.items():
                    utf8 = value.dtype.kind == "U"
                    f.create_dataset(key, data=value.astype(object) if utf8 else value, dtype=text if utf8 else None,
                                     compression=None if utf8 or value.ndim < 2 else "gzip")
    return {"out": str(out), "format": fmt, "clips": len(fset.clips), "arrays": sorted([*arrays, "meta"])}
