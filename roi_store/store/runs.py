"""Model runs inside a store: their layout, documents and state (their arrays and models:
:class:`roi_store.store.run_data.RunData`).

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
    runs/<name>/heartbeat            attrs["heartbeat"]: the latest progress of training (rewritten)

A head-only control (``fit-lstm --run R --permute-labels S``) is a run whose plan is R's plus ``embeddings_from``
(R and its embed checksum); it has no embeddings, CNN models or embed commit: it reads R's.

Every document is written once by one process and never updated in place: several people can
write different runs of one store at once, and a run is complete only when its commit exists.
Only the process holding a run's lock writes its plan, commit and failure
(:class:`roi_store.store.run_writer.RunWriter`); fold workers write their own fold's chunks,
models and marker through :class:`~roi_store.store.run_data.RunData`, which nobody else touches.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import re
from pathlib import Path

import numpy as np
import zarr
import zarr.codecs
import zarr.errors

from roi_store.errors import FormatVersionError, RoiStoreError, StoreError
from roi_store.store import format as fmt
from roi_store.store import lock as locks
from roi_store.store.store import Store

RUNS = "runs"
FOLDS, COMMIT, HEAD, FAILED = "folds", "commit", "head", "failed"
#: What ``roistore runs`` and ``validate`` call a run.
COMPLETE, RUNNING, INCOMPLETE, FAILED_STATE = "complete", "running", "incomplete", "failed"
#: A run whose lock is held but whose writing shows no life (see :func:`run_status`).
STALLED = "stalled"
#: The group of a run's heartbeat: the one document rewritten in place (:meth:`~roi_store.store.run_data.RunData.write_heartbeat`).
HEARTBEAT = "heartbeat"
#: Seconds after which a heartbeat is old: training writes one at least every few seconds, and
#: what happens between trainings (reading frames, embedding clips) takes minutes at most.
STALE_AFTER = 600.0
#: The parts of a run's plan that must match for a re-run to resume it.
PLAN_KEYS = ("kind", "settings", "classes", "cnn_classes", "regions", "clips", "labels", "true_labels", "folds",
             "leakage", "embedding_folds", "embeddings_from")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def check_run_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise StoreError(f"invalid run name {name!r}: use up to 64 letters, digits, '_', '-', '.'")
    return name


def who() -> dict:
    return {"user": locks.user(), "host": platform.node()}


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


def _attrs(store: Store, path: str, key: str) -> dict | None:
    """``attrs[key]`` of the group at ``path``, or None if there is no such group (yet).

    A document written by a newer run format than this roistore reads raises FormatVersionError.
    """
    node = store.zgroup.get(path)
    doc = node.attrs.get(key) if isinstance(node, zarr.Group) else None
    if doc is None:
        return None
    version = doc.get("format_version", 1) if isinstance(doc, dict) else 1
    if isinstance(version, int) and version > fmt.FORMAT_VERSION:
        raise FormatVersionError(f"{store.where}: {path} was written by run format version {version}, newer than this "
                                 f"roistore reads (up to {fmt.FORMAT_VERSION}): upgrade roistore "
                                 "(pip install --upgrade roistore)")
    return dict(doc)


def run_names(store: Store) -> list[str]:
    """Every run folder of the store, including runs claimed but not yet planned."""
    parts = [key.split("/") for key in store.stored_keys(f"{RUNS}/")]  # runs/<name>/<file>
    return sorted({p[1] for p in parts if len(p) == 3 and p[2] in ("zarr.json", locks.LOCK) and _NAME.match(p[1])})


def run_group(store: Store, name: str) -> zarr.Group:
    path = _run_path(name)
    if path not in store.zgroup:
        raise StoreError(f"no run {name!r} in {store.where}: run 'roistore embed {store.where} --run {name}' first")
    return store.zgroup[path]


def fold_docs(store: Store, name: str, stage: str) -> dict[int, dict]:
    """The fold markers of ``stage`` ("embed" or "head"), by fold index."""
    base = f"{_run_path(name)}/{FOLDS}" if stage == "embed" else f"{_run_path(name)}/{HEAD}/{FOLDS}"
    # The names below base, nodes or not, from one listing (without Zarr's stray-object warnings).
    children = sorted({key[len(base) + 1:].split("/", 1)[0] for key in store.stored_keys(f"{base}/")})
    docs = {int(c): _attrs(store, f"{base}/{c}", "fold") for c in children if c.isdigit()}
    return {k: doc for k, doc in docs.items() if doc is not None}


def commit_doc(store: Store, name: str, stage: str) -> dict | None:
    path = f"{_run_path(name)}/{COMMIT}" if stage == "embed" else f"{_run_path(name)}/{HEAD}/{COMMIT}"
    return _attrs(store, path, "commit")


def embeddings_source(store: Store, name: str) -> str:
    """The run whose embeddings and CNN models ``name`` uses: itself, or the run a head-only control reuses."""
    return ((_attrs(store, _run_path(name), "run") or {}).get("embeddings_from") or {}).get("run") or name


# --- heartbeat -----------------------------------------------------------------------------
def lock_owner(store: Store, name: str) -> dict:
    """Who holds (or held, if that process died) the run's lock; {} if nobody does or the store is no folder."""
    root = getattr(store.zgroup.store, "root", None)
    return (locks.read_owner(Path(root) / _run_path(name) / locks.LOCK) if root is not None else None) or {}


def heartbeat(store: Store, name: str) -> dict | None:
    """The run's latest heartbeat document, or None (none written, or unreadable: it is optional)."""
    try:
        node = store.zgroup.get(f"{_run_path(name)}/{HEARTBEAT}")
        doc = node.attrs.get(HEARTBEAT) if isinstance(node, zarr.Group) else None
    except Exception:  # noqa: BLE001 -- a heartbeat being replaced, or damaged: readers do without it
        return None
    return dict(doc) if isinstance(doc, dict) else None


def heartbeat_age(beat: dict, now: _dt.datetime | None = None) -> float | None:
    """Seconds since the heartbeat was written (None if it has no readable time)."""
    try:
        updated = _dt.datetime.fromisoformat(beat["updated"])
    except (KeyError, TypeError, ValueError):
        return None
    return max(0.0, ((now or _dt.datetime.now(_dt.timezone.utc)) - updated).total_seconds())


def attempt_heartbeat(store: Store, name: str, owner: dict) -> dict | None:
    """The heartbeat of the attempt holding (or that held) the lock ``owner``; None if it wrote none.

    A heartbeat names the lock of its attempt; one left by an earlier attempt is not this one's.
    """
    beat = heartbeat(store, name)
    if beat is None or not owner:
        return None
    if beat.get("lock") is not None:
        return beat if beat["lock"] == owner.get("token") else None
    return beat if str(beat.get("updated", "")) >= str(owner.get("since", "")) else None


def _beating(beat: dict | None) -> float | None:
    """The age of a fresh heartbeat whose writer may still live (on another host, or alive here), else None.

    A heartbeat written by a process of this host that is gone (the killed writer itself, most
    often) shows no life, however fresh.
    """
    age = heartbeat_age(beat) if beat else None
    if age is None or age >= STALE_AFTER:
        return None
    return None if locks.owner_alive({"host": beat.get("host"), "pid": beat.get("pid")}) is False else age


def recent_activity(store: Store, name: str, owner: dict) -> str | None:
    """For a lock whose owner looks dead: what still shows life (a fresh heartbeat of its attempt written by a
    process that may live), or None."""
    beat = attempt_heartbeat(store, name, owner)
    age = _beating(beat)
    if age is None:
        return None
    return (f"its heartbeat was written {duration(age)} ago by pid {beat.get('pid', '?')} on host "
            f"{beat.get('host', '?')}")


def duration(seconds: float) -> str:
    """A span of time in words: ``35 s``, ``4 min``, ``2 h 10 min``, ``3 d 4 h``."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s} s"
    m = s // 60
    if m < 60:
        return f"{m} min"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(h, 24)
    return f"{d} d {h} h" if h else f"{d} d"


def progress_text(beat: dict, step: bool = True) -> str:
    """A heartbeat in words: ``CNN fold 3, epoch 41/100, 2,400 region frames/s; 4/10 folds done, ETA 2 h 10 min``.

    ``step`` False leaves out the step and its epoch (a bar shows them).
    """
    parts = []
    if step:
        parts.append(beat.get("step") or beat.get("stage", "?"))
        if beat.get("epochs"):
            parts.append(f"epoch {beat.get('epoch', 0)}/{beat['epochs']}")
    if beat.get("rate"):
        parts.append(f"{beat['rate']:,.0f} {beat.get('rate_unit', 'items/s')}")
    text = ", ".join(parts)
    tail = []
    if (beat.get("folds_total") or 0) > 1:
        tail.append(f"{beat.get('folds_done', 0)}/{beat['folds_total']} folds done")
    if beat.get("eta_seconds") is not None:
        tail.append(f"ETA {duration(beat['eta_seconds'])}")
    return "; ".join(t for t in (text, ", ".join(tail)) if t)


def run_status(store: Store, name: str) -> dict:
    """A run's state, who and when, settings and fold progress (what ``roistore runs`` lists, with scores).

    ``state`` is about the run's latest stage (``embed``, or ``head`` once a head fit started):
    ``complete`` (committed), ``running`` (a live process holds its lock, or one on another host
    or container, and its heartbeat, if any, is fresh), ``stalled`` (the lock is held but the
    writing shows no life: no heartbeat for :data:`STALE_AFTER` seconds, or the writer died while
    its workers still write; ``reason`` says which), ``failed`` (the last attempt raised;
    ``reason`` says why) or ``incomplete`` (interrupted: re-run the same command; ``reason``
    names the writer that died, if its lock is left). ``heartbeat`` is the latest heartbeat of a
    running or stalled attempt (``heartbeat_age`` its age in seconds, ``progress`` it in words).
    """
    path = _run_path(name)
    doc = _attrs(store, path, "run") or {}
    head = _attrs(store, f"{path}/{HEAD}", "head")
    failure = _attrs(store, f"{path}/{FAILED}", "failure")
    owner = lock_owner(store, name)  # who holds the lock (or held it, if that process died)
    source = embeddings_source(store, name)
    embedded, fitted = commit_doc(store, source, "embed"), commit_doc(store, name, "head")
    # A flow method's run (kind "ststnet") has one stage, written as a head: its predictions.
    stage = ("head" if head is not None or source != name or owner.get("command") in ("fit-lstm", "fit")
             or doc.get("kind", "region-cnn+lstm") != "region-cnn+lstm" else "embed")
    committed = fitted if stage == "head" else embedded
    state, reason, beat, age = None, None, None, None
    if committed is not None:
        state = COMPLETE
    elif owner:
        alive = locks.owner_alive(owner)
        beat = attempt_heartbeat(store, name, owner)
        age = heartbeat_age(beat) if beat else None
        writer = f"its writer (pid {owner.get('pid', '?')} on host {owner.get('host', '?')})"
        if alive is False and _beating(beat) is not None:
            state, reason = STALLED, (f"{writer} died, but its heartbeat was written {duration(age)} ago: a worker "
                                      "may still be writing; stop it, then re-run the same command")
        elif alive is False:
            reason = f"writer pid {owner.get('pid', '?')} on host {owner.get('host', '?')} died"
        elif age is not None and age >= STALE_AFTER:
            state, reason = STALLED, f"no heartbeat for {duration(age)}: " + (
                f"{writer} is alive but not training (hung?); stop it, then re-run the same command" if alive else
                f"{writer} probably died; if so, delete {path}/{locks.LOCK} and re-run the same command")
        else:
            state = RUNNING
    if state is None:
        if failure is not None and failure.get("stage") == stage:
            state, reason = FAILED_STATE, failure["reason"]
        else:
            state = INCOMPLETE
    shown = beat if state in (RUNNING, STALLED) else None
    return {"name": name, "state": state, "stage": stage, "reason": reason,
            "user": doc.get("user", owner.get("user")), "host": doc.get("host", owner.get("host")),
            "created": doc.get("created"), "finished": (committed or {}).get("committed"),
            "writer": owner if state in (RUNNING, STALLED) else None,
            "heartbeat": shown, "heartbeat_age": round(age, 1) if shown and age is not None else None,
            "progress": progress_text(shown) if shown else None,
            "settings": doc.get("settings"), "head_settings": (head or {}).get("settings"),
            "leakage": bool(doc.get("leakage")), "clips": len(doc.get("clips", [])),
            "embeddings_from": source if source != name else None,
            "folds": {"embed": [len(fold_docs(store, source, "embed")), doc.get("embedding_folds") or 0],
                      "head": [len(fold_docs(store, name, "head")), len(doc.get("folds", []))] if head else None},
            "fitted": fitted is not None}


def list_runs(store: Store) -> list[dict]:
    """:func:`run_status` of every run of the store, by name."""
    return [run_status(store, n) for n in run_names(store)]


def embedding_fold(doc: dict, fold: dict) -> int:
    """Which CNN fold's embeddings a fold's head uses (runs made before cross-fitting name none)."""
    if "embedding_fold" in fold:
        return fold["embedding_fold"]
    return fold["index"] if doc["settings"].get("cnn_scope", "fold") == "fold" else 0


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
    plan = _attrs(store, _run_path(name), "run") or {}
    if plan.get("kind", "region-cnn+lstm") != "region-cnn+lstm":
        s = plan.get("settings") or {}
        return RoiStoreError(f"run {name!r} has no complete fit ({status['state']}): re-run the same 'roistore fit "
                             f"{store.where} --run {name} --method {s.get('method')} --features {s.get('features')}' "
                             "command to resume it")
    if commit_doc(store, source, "embed") is None:
        return RoiStoreError(f"run {source!r} has no complete embed ({status['state']}): re-run the same "
                             f"'roistore embed {store.where} --run {source}' command to resume it")
    return RoiStoreError(f"run {name!r} has no fitted head ({status['stage']} {status['state']}): run "
                         f"'roistore fit-lstm {store.where} --run {name}' "
                         "(the same command resumes an interrupted fit)")
