"""The one process writing a run: its claim on the run's lock, its plan, commit and failure documents.

Every document is written once and never updated in place (see :mod:`roi_store.store.runs`).
"""

from __future__ import annotations

import json
import shutil
import traceback
import warnings
from pathlib import Path

import zarr
import zarr.errors

from roi_store import killpoints
from roi_store.errors import RoiStoreError, StoreError
from roi_store.store import format as fmt
from roi_store.store import lock as locks
from roi_store.store.lock import now
from roi_store.store.run_data import RunData
from roi_store.store.runs import (COMMIT, COMPLETE, FAILED, HEAD, PLAN_KEYS, RUNS, _attrs, _run_path, commit_doc,
                                  fold_checksum, fold_docs, recent_activity, who)
from roi_store.store.store import Store


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
        # A dead writer whose workers still beat keeps its lock: they may still write the run.
        lock = locks.acquire(Path(root) / _run_path(name), f"run {name!r} of {store.where}", command,
                             activity=lambda owner: recent_activity(store, name, owner))
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
        doc = {**doc, "name": self.name, "created": now(), **who(), "format_version": fmt.FORMAT_VERSION}
        fmt.validate_document(doc, "run", f"{self.store.where} run {self.name}")
        if old is not None and not overwrite:
            if _plan(old) == _plan(doc):
                self._delete(FAILED)
                return COMPLETE if commit_doc(self.store, self.name, "embed") else "resume"
            kinds = [f"a head-only control of run {d['embeddings_from']['run']!r}" if d.get("embeddings_from")
                     else "a run with its own embeddings" for d in (old, doc)]
            if kinds[0] != kinds[1]:
                raise StoreError(f"run {self.name!r} of {self.store.where} is {kinds[0]}, not {kinds[1]}: "
                                 "choose another run name, or pass --overwrite to replace it")
            raise StoreError(f"run {self.name!r} already exists in {self.store.where}, {_differences(old, doc)}: "
                             "re-run with the same settings to resume it, choose another --run name, "
                             "or pass --overwrite")
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
        head = {**head, "created": now(), **who(), "format_version": fmt.FORMAT_VERSION}
        fmt.validate_document(head, "run.head", f"{self.store.where} run {self.name} head")
        if old is not None and not overwrite:
            if _jsonable(old["settings"]) == _jsonable(head["settings"]) and old["labels_used"] == head["labels_used"]:
                self._delete(FAILED)
                return COMPLETE if commit_doc(self.store, self.name, "head") else "resume"
            raise StoreError(f"run {self.name!r} already has a head {_differences(old, head)}: "
                             "re-run with the same settings to resume it, or pass --overwrite")
        for sub in (HEAD, "models/head", FAILED):
            self._delete(sub)
        self.group.create_group(HEAD, attributes={"head": head})
        killpoints.reached("head.planned")
        return "new"

    def embedding_arrays(self, regions: list[str], n_folds: int, n_clips: int, t_max: int, dim: int) -> None:
        """Create the run's embedding arrays that do not exist yet (a resumed run may have some)."""
        RunData(self.group, self.name).embedding_arrays(regions, n_folds, n_clips, t_max, dim)

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
            raise StoreError(f"run {self.name!r}: {stage} folds {missing} have no marker; "
                             "re-run the command to finish them")
        killpoints.reached(f"{stage}.commit")
        doc = {"stage": stage, "committed": now(), **who(), "format_version": fmt.FORMAT_VERSION,
               "folds": expected_folds, "checksum": fold_checksum(list(docs.values())), **summary}
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
