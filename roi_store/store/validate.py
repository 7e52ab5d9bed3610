"""Check a store against its schemas and every chunk against its checksum."""

from __future__ import annotations

import dataclasses

import numpy as np

from roi_store.errors import RoiStoreError
from roi_store.store import format as fmt
from roi_store.store.layout import COMPLETE, SKIPPED, array_path, chunk_keys
from roi_store.store.runs import (FAILED, HEAD, RUNS, commit_doc, digest, embeddings_source, fold_checksum, fold_docs,
                                  run_names, run_status)
from roi_store.store.features import combined_digest, feature_set_names, set_document, set_path
from roi_store.store.store import Store


@dataclasses.dataclass
class ValidationReport:
    """Outcome of :func:`validate_store`; ``ok`` is True when ``problems`` is empty."""

    store: str
    clips: int
    chunks: int
    problems: list[str]
    incomplete: list[str]  # pending clips: not a fault, a run to resume
    runs: list[dict] = dataclasses.field(default_factory=list)  # {"name", "state", "stage", "chunks"}
    features: list[dict] = dataclasses.field(default_factory=list)  # {"name", "state", "done", "clips"}

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_store(store: Store) -> ValidationReport:
    """Validate the header and every record against ``schemas/``, and read every chunk.

    Reading a chunk runs zarr's crc32c codec, which rejects any chunk whose bytes changed. A
    complete clip whose chunk is missing, and a record whose row lies outside the arrays, are
    reported too, and so are records and arrays whose metadata cannot be read. Committed runs are
    checked the same way (every embedding chunk and model against the digests of its fold
    marker); runs that are not committed are listed in ``runs`` with their state, not reported
    as problems.
    """
    records = store.records(strict=False)
    problems, chunks = list(store.damaged), 0
    arrays = {}
    for name in store.arrays:
        try:
            arrays[name] = store.array(name)
        except RoiStoreError as exc:
            problems.append(str(exc))
    for name, arr in arrays.items():
        if arr.shape[1:2] != (store.t_max,) or arr.dtype != "uint8":
            problems.append(f"{array_path(name)}: shape {arr.shape} / dtype {arr.dtype} "
                            f"does not match t_max {store.t_max}")
    stored = {name: set(store.stored_keys(f"{array_path(name)}/")) for name in arrays}
    for rec in records.values():
        if problem := fmt.document_problem(rec.data, "clip", f"clip {rec.id}"):
            problems.append(problem)
            continue
        if rec.status != COMPLETE:
            continue
        for name, arr in arrays.items():
            if rec.row is None or rec.row >= arr.shape[0]:
                problems.append(f"clip {rec.id}: row {rec.row} is outside {array_path(name)} ({arr.shape[0]} rows)")
                continue
            keys = chunk_keys(arr, rec.row, rec.n_frames)
            missing = [k for k in keys if f"{array_path(name)}/{k}" not in stored[name]]
            if missing:
                problems.append(f"clip {rec.id}: chunk {array_path(name)}/{missing[0]} is missing")
                continue
            step, past = arr.chunks[1], False
            for j, key in enumerate(keys):  # chunk by chunk, to name the damaged one
                try:
                    part = arr[rec.row, j * step:(j + 1) * step]
                except Exception as exc:  # codec errors (checksum, zstd) come as several types
                    problems.append(f"clip {rec.id}: chunk {array_path(name)}/{key} is damaged ({exc})")
                    break
                chunks += 1
                past = past or part[rec.n_frames - j * step:].any()
            else:  # past the clip's chunks: the zero fill value
                if past or arr[rec.row, len(keys) * step:].any():
                    problems.append(f"clip {rec.id}: {array_path(name)} has data past its {rec.n_frames} frames")
    rows = [r.row for r in records.values() if r.row is not None]
    if len(set(rows)) != len(rows):
        problems.append("two clip records share one array row")
    incomplete = [r.id for r in records.values() if r.status not in (COMPLETE, SKIPPED)]
    runs = []
    for name in run_names(store):
        found, n = _check_run(store, name)
        problems += found
        chunks += n
        status = run_status(store, name)
        runs.append({"name": name, "state": status["state"], "stage": status["stage"], "chunks": n})
    sets = []
    for name in feature_set_names(store):
        found, n, entry = _check_feature_set(store, name, records)
        problems += found
        chunks += n
        sets.append(entry)
    return ValidationReport(store.where, len(records), chunks, problems, incomplete, runs, sets)


def _check_feature_set(store: Store, name: str, records: dict) -> tuple[list[str], int, dict]:
    """A feature set's document against its schema, its arrays' shapes, and every done clip's chunks.

    A set still running is a state, not a fault: its done clips are checked, the rest not.
    """
    where = f"feature set {name}"
    doc = set_document(store, name)
    entry = {"name": name, "state": doc.get("state"), "done": len(doc.get("done", {})),
             "clips": len(doc.get("clips", []))}
    if problem := fmt.document_problem(doc, "features", where):
        return [problem], 0, entry
    problems, chunks = [], 0
    row = {c: k for k, c in enumerate(doc["clips"])}
    for clip, info in doc["done"].items():
        rec = records.get(clip)
        if rec is None or rec.status != COMPLETE or rec.data.get("ingested", "") != info["ingested"]:
            problems.append(f"{where}: clip {clip} is no longer the clip it was computed from (re-ingested or "
                            f"removed): recompute it with 'roistore flow {store.where} --name {name} --overwrite'")
    if doc["state"] == "complete":
        if set(doc["done"]) != set(doc["clips"]):
            problems.append(f"{where}: complete but {len(set(doc['clips']) - set(doc['done']))} clips are not done")
        elif doc["source_digest"] != combined_digest(doc):
            problems.append(f"{where}: its source digest does not match its clips' (changed after it was written)")
    want = (len(doc["clips"]), doc["size"], doc["size"], len(doc["channels"]))
    for crop in doc["crops"]:
        path = f"{set_path(name)}/{crop}"
        try:
            arr = store.zgroup[path]
        except Exception as exc:  # missing, or a damaged zarr.json
            problems.append(f"{where}: array {path} is missing or damaged ({type(exc).__name__})")
            continue
        if arr.shape != want or arr.dtype != "float32":
            problems.append(f"{where}: {path} has shape {arr.shape} / dtype {arr.dtype}, not {want} float32")
            continue
        stored = set(store.stored_keys(f"{path}/"))
        for clip in doc["done"]:
            key = arr.metadata.encode_chunk_key((row[clip], 0, 0, 0))
            if f"{path}/{key}" not in stored:
                problems.append(f"{where}: clip {clip}: chunk {path}/{key} is missing")
                continue
            try:
                arr[row[clip]]
            except Exception as exc:  # codec errors (checksum, zstd) come as several types
                problems.append(f"{where}: clip {clip}: chunk {path}/{key} is damaged ({exc})")
                continue
            chunks += 1
    return problems, chunks, entry


def _check_run(store: Store, name: str) -> tuple[list[str], int]:
    """Schema problems of a run's documents; for each committed stage, its markers and every chunk.

    A run that is not committed (running, interrupted, failed) is a state, not a fault: only its
    documents are checked, since its arrays may hold anything until a resumed run commits them.
    """
    problems: list[str] = []
    chunks = 0
    where = f"run {name}"
    path = f"{RUNS}/{name}"
    group = store.zgroup.get(path)
    doc = group.attrs.get("run") if group is not None else None
    for part, key in (("", "run"), (f"/{HEAD}", "head"), (f"/{FAILED}", "failure")):
        node = store.zgroup.get(f"{path}{part}")
        if node is not None and key in node.attrs:
            kind = "run" if key == "run" else f"run.{key}"
            if problem := fmt.document_problem(dict(node.attrs[key]), kind, where):
                problems.append(problem)
    source = embeddings_source(store, name)
    fitted, embedded = commit_doc(store, name, "head"), commit_doc(store, source, "embed")
    own_stage = (doc or {}).get("kind", "region-cnn+lstm") != "region-cnn+lstm"  # a flow method: no embed stage
    if fitted is not None and embedded is None and not own_stage:
        problems.append(f"{where}: its head is committed but its embed is not"
                        + (f" (it reuses run {source}'s embeddings)" if source != name else ""))
    elif source != name and fitted is not None and embedded["checksum"] != doc["embeddings_from"].get("checksum"):
        problems.append(f"{where}: its head was fitted on run {source}'s embeddings, which changed since (embedded "
                        f"again): refit it with 'roistore fit-lstm --run {source} --permute-labels SEED "
                        f"--control-run {name} --overwrite'")
    for stage, commit in (("embed", commit_doc(store, name, "embed")), ("head", fitted)):
        if commit is None:
            continue
        if doc is None:
            problems.append(f"{where}: committed {stage} without a plan document")
            continue
        if problem := fmt.document_problem(commit, "run.commit", f"{where} {stage} commit"):
            problems.append(problem)
            continue
        folds = fold_docs(store, name, stage)
        missing = sorted(set(range(commit["folds"])) - set(folds))
        if missing:
            problems.append(f"{where}: {stage} is committed but folds {missing} have no marker")
            continue
        if fold_checksum(list(folds.values())) != commit["checksum"]:
            problems.append(f"{where}: {stage} fold markers do not match the commit's checksum "
                            "(changed after the commit)")
        listed: dict[str, set[str]] = {}  # each embedding array's stored keys, listed once
        for k, fold in sorted(folds.items()):
            if problem := fmt.document_problem(fold, "run.fold", f"{where} {stage} fold {k}"):
                problems.append(problem)
                continue
            for kind, items in fold["digests"].items():
                for item, want in items.items():
                    if kind == "embeddings":
                        sub, label, n = f"embeddings/{item}", f"{path}/embeddings/{item}[{k}]", 1
                    else:
                        sub = f"models/cnn/{k}/{item}" if stage == "embed" else f"models/head/{k}"
                        label, n = f"{path}/{sub}", group[sub].nchunks if sub in group else 0
                    try:
                        got = digest(_embeddings(store, f"{path}/{sub}", k, listed) if kind == "embeddings"
                                     else group[sub][:].tobytes())
                    except Exception as exc:  # a missing array, or codec errors (checksum, zstd)
                        problems.append(f"{where}: {label} is missing or damaged ({type(exc).__name__}: {exc})")
                        continue
                    chunks += n
                    if got != want:
                        problems.append(f"{where}: {label} does not match its fold marker's digest")
    return problems, chunks


def _embeddings(store: Store, base: str, fold: int, listed: dict[str, set[str]]) -> np.ndarray:
    """Fold ``fold`` of the embedding array at ``base``; KeyError if its chunk was never written (not zeros)."""
    arr = store.zgroup[base]
    key = arr.metadata.encode_chunk_key((fold, 0, 0, 0))
    if base not in listed:
        listed[base] = set(store.stored_keys(f"{base}/"))
    if f"{base}/{key}" not in listed[base]:
        raise KeyError(f"chunk {key} is missing")
    return arr[fold]


__all__ = ["ValidationReport", "validate_store"]
