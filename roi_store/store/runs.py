"""Model runs inside a store: their lifecycle (claim, plan, fold markers, commit) and documents.

Layout (see ``schemas/FORMAT.rst``)::

    runs/<name>                      attrs["run"]: the plan (settings, clips, folds), written once
    runs/<name>/LOCK                 the writing process's claim (a plain file, not a Zarr node)
    runs/<name>/embeddings/<region>  float16 (embedding folds, clips, t_max, 20); one chunk per fold
    runs/<name>/models/cnn/<fold>/<region>   uint8: a .keras file
    runs/<name>/folds/<k>            attrs["fold"]: CNN fold k is done (written after its chunks, models)
    runs/<name>/commit               attrs["commit"]: the embed is complete (written last)
    runs/<name>/head                 attrs["head"]: the head's plan (settings, labels used)
    runs/<name>/models/head/<fold>   uint8: a .keras file
    runs/<name>/head/folds/<k>       attrs["fold"]: head fold k is done, with its predictions
    runs/<name>/head/commit          attrs["commit"]: the head is complete, pooled predictions (last)
    runs/<name>/failed               attrs["failure"]: why the last attempt failed

A head-only control (``fit-lstm --run R --permute-labels S``) is a run whose plan is R's plus ``embeddings_from``
(R and its embed checksum); it has no embeddings, CNN models or embed commit: it reads R's.

Every document is written once by one process and never updated in place: several people can
write different runs of one store at once, and a run is complete only when its commit exists.
Only the process holding a run's lock writes its plan, commit and failure; fold workers write
their own fold's chunks, models and marker, which nobody else touches.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import platform
import re
import shutil
import traceback
import warnings
from pathlib import Path

import numpy as np
import zarr
import zarr.codecs
import zarr.errors
from zarr.core.sync import sync

from roi_store.store import format as fmt
from roi_store import killpoints
from roi_store.store import lock as locks
from roi_store.errors import RoiStoreError, StoreError
from roi_store.store.store import Store, compressors, now

RUNS = "runs"
FOLDS, COMMIT, HEAD, FAILED = "folds", "commit", "head", "failed"
#: What ``roistore runs`` and ``validate`` call a run.
COMPLETE, RUNNING, INCOMPLETE, FAILED_STATE = "complete", "running", "incomplete", "failed"
#: The parts of a run's plan that must match for a re-run to resume it.
PLAN_KEYS = ("kind", "settings", "classes", "cnn_classes", "regions", "clips", "labels", "true_labels", "folds",
             "leakage", "embedding_folds", "embeddings_from")
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


def digest(data: bytes | np.ndarray) -> str:
    """sha256 of an array's bytes (C order) or of a file's bytes."""
    raw = np.ascontiguousarray(data).tobytes() if isinstance(data, np.ndarray) else data
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def fold_checksum(fold_docs: list[dict]) -> str:
    """The commit's checksum: over every fold marker's digests, in fold order."""
    return digest(json.dumps([d["digests"] for d in sorted(fold_docs, key=lambda d: d["index"])],
                             sort_keys=True).encode())


# --- reading -------------------------------------------------------------------------------
def _run_path(name: str) -> str:
    return f"{RUNS}/{check_run_name(name)}"


def _children(store: Store, path: str) -> list[str]:
    """Names directly under ``path`` in the store (nodes or not), without Zarr's stray-object warnings."""
    return sorted(sync(_collect(store.zgroup.store.list_dir(f"{path}/"))))


async def _collect(agen) -> list:
    return [x async for x in agen]


def _attrs(store: Store, path: str, key: str) -> dict | None:
    """``attrs[key]`` of the group at ``path``, or None if there is no such group (yet)."""
    if path not in store.zgroup:
        return None
    node = store.zgroup[path]
    doc = node.attrs.get(key) if isinstance(node, zarr.Group) else None
    return dict(doc) if doc is not None else None


def run_names(store: Store) -> list[str]:
    """Every run folder of the store, including runs claimed but not yet planned."""
    if RUNS not in store.zgroup:
        return []
    zstore = store.zgroup.store
    return [n for n in _children(store, RUNS) if n != "zarr.json" and _NAME.match(n)
            and (sync(zstore.exists(f"{RUNS}/{n}/zarr.json")) or sync(zstore.exists(f"{RUNS}/{n}/{locks.LOCK}")))]


def run_group(store: Store, name: str) -> zarr.Group:
    path = _run_path(name)
    if path not in store.zgroup:
        raise StoreError(f"no run {name!r} in {store.where}: run 'roistore embed {store.where} --run {name}' first")
    return store.zgroup[path]


def fold_docs(store: Store, name: str, stage: str) -> dict[int, dict]:
    """The fold markers of ``stage`` ("embed" or "head"), by fold index."""
    base = f"{_run_path(name)}/{FOLDS}" if stage == "embed" else f"{_run_path(name)}/{HEAD}/{FOLDS}"
    if base not in store.zgroup:
        return {}
    out = {}
    for child in _children(store, base):
        doc = _attrs(store, f"{base}/{child}", "fold") if child.isdigit() else None
        if doc is not None:
            out[int(child)] = doc
    return out


def commit_doc(store: Store, name: str, stage: str) -> dict | None:
    path = f"{_run_path(name)}/{COMMIT}" if stage == "embed" else f"{_run_path(name)}/{HEAD}/{COMMIT}"
    return _attrs(store, path, "commit")


def lock_owner(store: Store, name: str) -> dict | None:
    """Who holds the run's lock (or held it, if that process died), or None."""
    root = getattr(store.zgroup.store, "root", None)
    return locks.read_owner(Path(root) / _run_path(name) / locks.LOCK) if root is not None else None


def embeddings_source(store: Store, name: str) -> str:
    """The run whose embeddings and CNN models ``name`` uses: itself, or the run a head-only control reuses."""
    return ((_attrs(store, _run_path(name), "run") or {}).get("embeddings_from") or {}).get("run") or name


def run_status(store: Store, name: str) -> dict:
    """A run's state, who and when, settings, fold progress and scores (what ``roistore runs`` lists).

    ``state`` is about the run's latest stage (``embed``, or ``head`` once a head fit started):
    ``complete`` (committed), ``running`` (a live process holds its lock), ``failed`` (the last
    attempt raised; ``reason`` says why) or ``incomplete`` (interrupted: re-run the same command).
    """
    path = _run_path(name)
    doc = _attrs(store, path, "run") or {}
    head = _attrs(store, f"{path}/{HEAD}", "head")
    failure = _attrs(store, f"{path}/{FAILED}", "failure")
    owner = lock_owner(store, name)
    source = embeddings_source(store, name)
    embedded, fitted = commit_doc(store, source, "embed"), commit_doc(store, name, "head")
    stage = "head" if head is not None or source != name or (owner or {}).get("command") == "fit-lstm" else "embed"
    committed = fitted if stage == "head" else embedded
    alive = locks.owner_alive(owner) if owner else False
    if committed is not None:
        state = COMPLETE
    elif owner and alive is not False:
        state = RUNNING
    elif failure is not None and failure.get("stage") == stage:
        state = FAILED_STATE
    else:
        state = INCOMPLETE
    n_emb = doc.get("embedding_folds") or 0
    out = {"name": name, "state": state, "stage": stage,
           "reason": failure["reason"] if state == FAILED_STATE else None,
           "user": doc.get("user", (owner or {}).get("user")), "host": doc.get("host", (owner or {}).get("host")),
           "created": doc.get("created"), "finished": (committed or {}).get("committed"),
           "writer": owner if state == RUNNING else None,
           "settings": doc.get("settings"), "head_settings": (head or {}).get("settings"),
           "leakage": bool(doc.get("leakage")), "clips": len(doc.get("clips", [])),
           "embeddings_from": source if source != name else None,
           "folds": {"embed": [len(fold_docs(store, source, "embed")), n_emb],
                     "head": [len(fold_docs(store, name, "head")), len(doc.get("folds", []))] if head else None},
           "scores": None}
    if fitted is not None:
        from roi_store.evaluation.report import scores

        full = scores(fitted["predictions"], head["classes"])["FULL"]
        out["scores"] = {"UF1": full["UF1"], "UAR": full["UAR"]}
    return out


def list_runs(store: Store) -> list[dict]:
    """:func:`run_status` of every run of the store, by name."""
    return [run_status(store, n) for n in run_names(store)]


def embedding_fold(doc: dict, fold: dict) -> int:
    """Which CNN fold's embeddings a fold's head uses (runs made before cross-fitting name none)."""
    if "embedding_fold" in fold:
        return fold["embedding_fold"]
    return fold["index"] if doc["settings"]["cnn_scope"] == "fold" else 0


def run_document(store: Store, name: str) -> dict:
    """The run's plan with its state, fold records, device and timings (readers' view of a run)."""
    doc = _attrs(store, _run_path(name), "run")
    if doc is None:
        run_group(store, name)  # no such run: one-line error
        raise StoreError(f"run {name!r} in {store.where} was claimed but never planned: re-run its embed command")
    status = run_status(store, name)
    source = embeddings_source(store, name)
    folds = fold_docs(store, source, "embed")
    commit = commit_doc(store, source, "embed") or {}
    for fold in doc["folds"]:
        record = folds.get(embedding_fold(doc, fold))
        if record:
            fold["cnn"] = record["cnn"]
    return {**doc, "state": status["state"], "stage": status["stage"], "embedded": commit.get("committed"),
            "cnn_tasks": doc.get("embedding_folds"), "device": commit.get("device"),
            "backend": commit.get("backend"), "timings": commit.get("timings", {})}


def head_document(store: Store, name: str) -> dict:
    """The fitted head: settings, per-fold clip lists, pooled predictions, timings (committed heads only)."""
    commit = commit_doc(store, name, "head")
    if commit is None:
        raise not_ready(store, name, run_status(store, name))
    head = _attrs(store, f"{_run_path(name)}/{HEAD}", "head")
    folds = [{k: v for k, v in d.items() if k not in ("predictions", "digests")}
             for _, d in sorted(fold_docs(store, name, "head").items())]
    return {**head, "folds": folds, "predictions": commit["predictions"], "timings": commit["timings"],
            "fitted": commit["committed"]}


def not_ready(store: Store, name: str, status: dict) -> RoiStoreError:
    """The one-line error for a run whose embed, or head, is not committed (``status``: :func:`run_status`)."""
    source = embeddings_source(store, name)
    if commit_doc(store, source, "embed") is None:
        return RoiStoreError(f"run {source!r} has no complete embed ({status['state']}): re-run the same "
                             f"'roistore embed {store.where} --run {source}' command to resume it")
    return RoiStoreError(f"run {name!r} has no fitted head ({status['stage']} {status['state']}): run "
                         f"'roistore fit-lstm {store.where} --run {name}' (the same command resumes an interrupted fit)")


# --- writing -------------------------------------------------------------------------------
class RunWriter:
    """The one process writing a run: it holds the run's lock from :meth:`claim` to :meth:`release`."""

    def __init__(self, store: Store, name: str, lock: locks.Lock):
        self.store, self.name, self.lock = store, name, lock
        self.path = _run_path(name)
        self.folder = lock.path.parent

    @classmethod
    def claim(cls, store: Store, name: str, command: str) -> RunWriter:
        """Lock ``runs/<name>`` for this process (taking over a stale lock of a dead local process).

        Raises
        ------
        RunBusyError
            If another process is writing the run.
        """
        root = getattr(store.zgroup.store, "root", None)
        if root is None or store.mode == "r":
            raise StoreError(f"{store.where} is not a writable folder store: runs are written to a local store folder")
        if RUNS not in store.zgroup:
            try:  # every writer writes the same empty group: a race between two is harmless
                store.zgroup.create_group(RUNS)
            except zarr.errors.ContainsGroupError:
                pass
        lock = locks.acquire(Path(root) / _run_path(name), f"run {name!r} of {store.where}", command,
                             who()["user"])
        killpoints.reached("run.claimed")
        return cls(store, name, lock)

    def release(self) -> None:
        self.lock.release()

    @property
    def group(self) -> zarr.Group:
        return self.store.zgroup[self.path]

    def _delete(self, sub: str) -> None:
        target = self.folder / sub
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)

    def _clear(self) -> None:
        """Delete everything of the run but its plan document and the lock (``--overwrite``)."""
        for child in self.folder.iterdir():
            if child.name != "zarr.json" and not child.name.startswith(locks.LOCK):
                self._delete(child.name)

    def plan_embed(self, doc: dict, overwrite: bool) -> str:
        """Write the run's plan, or check it against an existing one.

        Returns ``"new"``, ``"resume"`` (an unfinished run with the same plan) or ``"complete"``.

        Raises
        ------
        StoreError
            If the run exists with another plan and ``overwrite`` is false.
        """
        old = _attrs(self.store, self.path, "run")
        doc = {**doc, "name": self.name, "created": now(), **who()}
        fmt.validate_document(doc, "run", f"{self.store.where} run {self.name}")
        if old is not None and _plan(old) == _plan(doc) and not overwrite:
            self._delete(FAILED)
            return COMPLETE if commit_doc(self.store, self.name, "embed") else "resume"
        kinds = [f"a head-only control of run {d['embeddings_from']['run']!r}" if d.get("embeddings_from")
                 else "a run with its own embeddings" for d in (old or {}, doc)]
        if old is not None and not overwrite and kinds[0] != kinds[1]:
            raise StoreError(f"run {self.name!r} of {self.store.where} is {kinds[0]}, not {kinds[1]}: "
                             "choose another run name, or pass --overwrite to replace it")
        if old is not None and not overwrite:
            raise StoreError(f"run {self.name!r} already exists in {self.store.where}, {_differences(old, doc)}: "
                             "re-run with the same settings to resume it, choose another --run name, or pass --overwrite")
        self._clear()  # an overwritten run, or leftovers of an attempt killed before its plan was written
        if self.path in self.store.zgroup:
            self.group.attrs["run"] = doc
        else:
            self.store.zgroup.create_group(self.path, attributes={"run": doc})
        killpoints.reached("embed.planned")
        return "new"

    def plan_head(self, head: dict, overwrite: bool) -> str:
        """As :meth:`plan_embed`, for the head's plan under ``runs/<name>/head``."""
        old = _attrs(self.store, f"{self.path}/{HEAD}", "head")
        head = {**head, "created": now(), **who()}
        fmt.validate_document(head, "run.head", f"{self.store.where} run {self.name} head")
        same = old is not None and _jsonable(old["settings"]) == _jsonable(head["settings"]) \
            and old["labels_used"] == head["labels_used"]
        if same and not overwrite:
            self._delete(FAILED)
            return COMPLETE if commit_doc(self.store, self.name, "head") else "resume"
        if old is not None and not overwrite:
            raise StoreError(f"run {self.name!r} already has a head {_differences(old, head)}: "
                             "re-run with the same settings to resume it, or pass --overwrite")
        self._delete(HEAD)
        self._delete("models/head")
        self._delete(FAILED)
        self.group.create_group(HEAD, attributes={"head": head})
        killpoints.reached("head.planned")
        return "new"

    def embedding_arrays(self, regions: list[str], n_folds: int, n_clips: int, t_max: int, dim: int) -> None:
        """Create the run's embedding arrays that do not exist yet (a resumed run may have some)."""
        create_embedding_arrays(self.group, regions, n_folds, n_clips, t_max, dim)

    def commit(self, stage: str, expected_folds: int, summary: dict) -> dict:
        """Write the stage's commit marker last: a summary with the checksum over its fold markers.

        Raises
        ------
        StoreError
            If a fold marker is missing (nothing is committed then).
        """
        docs = fold_docs(self.store, self.name, stage)
        missing = sorted(set(range(expected_folds)) - set(docs))
        if missing:
            raise StoreError(f"run {self.name!r}: {stage} folds {missing} have no marker; re-run the command to finish them")
        killpoints.reached(f"{stage}.commit")
        doc = {"stage": stage, "committed": now(), **who(), "folds": expected_folds,
               "checksum": fold_checksum(list(docs.values())), **summary}
        fmt.validate_document(doc, "run.commit", f"{self.store.where} run {self.name} commit")
        path = COMMIT if stage == "embed" else f"{HEAD}/{COMMIT}"
        self.group.create_group(path, overwrite=True, attributes={"commit": doc})
        killpoints.reached("run.committed")
        return doc

    def fail(self, stage: str, exc: BaseException) -> None:
        """Record why this attempt failed (the run stays resumable); never raises over ``exc``."""
        lines = (str(exc) or type(exc).__name__).strip().splitlines() or [type(exc).__name__]
        reason = lines[0] if isinstance(exc, RoiStoreError) else f"{type(exc).__name__}: {lines[0]}"
        if not isinstance(exc, (RoiStoreError, KeyboardInterrupt)):
            frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
            reason += "".join(f" (at {Path(f.filename).name}:{f.lineno})" for f in frame)
        doc = {"stage": stage, "reason": reason[:500], "at": now(), **who()}
        try:
            self.group.create_group(FAILED, overwrite=True, attributes={"failure": doc})
        except Exception as err:  # the original error matters more
            warnings.warn(f"could not record the failure of run {self.name!r}: {err}", stacklevel=2)


def create_embedding_arrays(group: zarr.Group, regions: list[str], n_folds: int, n_clips: int, t_max: int,
                            dim: int) -> None:
    """``embeddings/<region>`` float16 (folds, clips, t_max, dim) under ``group``, one chunk per fold; existing ones kept."""
    for r in regions:
        if f"embeddings/{r}" in group:
            continue
        group.create_array(f"embeddings/{r}", shape=(n_folds, n_clips, t_max, dim), chunks=(1, n_clips, t_max, dim),
                           dtype="float16", fill_value=0, compressors=compressors(),
                           dimension_names=("fold", "clip", "frame", "feature"))
        killpoints.reached("embed.arrays")


def write_fold_marker(group: zarr.Group, stage: str, index: int, doc: dict) -> None:
    """Mark fold ``index`` of ``stage`` done: after its chunks and models, one document, written once."""
    fmt.validate_document(doc, "run.fold", f"run fold {index}")
    path = f"{FOLDS}/{index}" if stage == "embed" else f"{HEAD}/{FOLDS}/{index}"
    group.create_group(path, overwrite=True, attributes={"fold": doc})
    killpoints.reached(f"{stage}.fold")


def _jsonable(x):
    return json.loads(json.dumps(x))


def _plan(doc: dict) -> dict:
    return _jsonable({k: doc.get(k) for k in PLAN_KEYS})


def _differences(old: dict, new: dict) -> str:
    """'made with epochs 3, not 1; seed 0, not 2' (the stored value first), for a refusal message."""
    a, b = _jsonable(old.get("settings", {})), _jsonable(new.get("settings", {}))
    # Which settings overrode a preset follows from the settings themselves: not worth a line.
    diff = [f"{k} {a.get(k)!r}, not {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and k != "preset_overrides"]
    if diff:
        return f"made with {'; '.join(diff[:4])}"
    if _jsonable(old.get("embeddings_from")) != _jsonable(new.get("embeddings_from")):
        return "fitted on embeddings of its source run that have changed since (it was embedded again)"
    return "made from other clips or labels (the store changed since)"


def put_bytes(group: zarr.Group, path: str, data: bytes) -> str:
    """Store a file's bytes as a checksummed uint8 array (models; never pickled objects); its digest."""
    arr = np.frombuffer(data, dtype=np.uint8)
    # Trained weights do not compress: checksum only, in 8 MiB chunks.
    a = group.create_array(path, shape=arr.shape, chunks=(min(len(arr), 1 << 23),), dtype="uint8",
                           compressors=[zarr.codecs.Crc32cCodec()], overwrite=True)
    a[:] = arr
    return digest(data)


def get_bytes(group: zarr.Group, path: str) -> bytes:
    if path not in group:
        raise StoreError(f"model {path} is missing from run {group.attrs.get('run', {}).get('name')}: re-run the command that makes it")
    return group[path][:].tobytes()
