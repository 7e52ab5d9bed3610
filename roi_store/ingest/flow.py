"""Onset-apex optical flow feature sets (``roistore flow``): u, v and optical strain per crop.

For every complete clip, the flow from its onset frame to its apex frame is computed on the
aligned whole face (the store's ``face`` crops, format 2) and on each of the six regions: both
frames are resized to ``size`` x ``size`` (area interpolation) and the flow is estimated at that
size, as STSTNet's 28 x 28 input is made (METHOD.md §8). Optical strain is the magnitude of the
strain tensor, ``sqrt(ux^2 + vy^2 + 0.5 (uy + vx)^2)``, from central differences of (u, v).

The coordinating process locks the set, writes its document (settings, clips) and hands clips
to workers (:func:`roi_store.parallel.run_tasks`, the ingest's task runner, local or dask); a
worker reads its clip's crops and writes its own chunks; the coordinator then lists the clip as
done. A killed run resumes where it stopped when run again with the same options.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import time
from pathlib import Path

import numpy as np

from roi_store import parallel
from roi_store._version import __version__
from roi_store.errors import ConfigError, StoreBusyError, StoreError
from roi_store.store import features as fs
from roi_store.store import format as fmt
from roi_store.store import lock as locks
from roi_store.store.layout import FACE
from roi_store.store.store import Store, local_store_path, now, open_store

ESTIMATORS = ("tvl1", "farneback")
APEX_RULES = ("annotated", "middle", "max-flow")
#: OpenCV's TV-L1 defaults (Zach, Pock, Bischof 2007; cv2.optflow.DualTVL1OpticalFlow_create),
#: written down so that a set records what it was computed with, whatever a later OpenCV defaults to.
TVL1 = {"tau": 0.25, "lambda": 0.15, "theta": 0.3, "scales": 3, "warps": 5, "epsilon": 0.01,
        "inner_iterations": 30, "outer_iterations": 10, "scale_step": 0.8, "gamma": 0.0, "median_filtering": 5}
#: Farneback's settings for crops of 28 to 112 px: two pyramid levels and a 5 px window (OpenCV's
#: usual 15 px window would span half of a 28 px crop).
FARNEBACK = {"pyr_scale": 0.5, "levels": 2, "winsize": 5, "iterations": 3, "poly_n": 5, "poly_sigma": 1.1}
#: How ``--apex max-flow`` searches: Farneback at this size on the face, from the onset to every
#: later frame; the frame of largest mean flow magnitude is the apex. Farneback, whatever the
#: set's estimator, because the search runs once per frame (a clip has tens to hundreds).
APEX_SEARCH = {"estimator": "farneback", "size": 64, "crop": FACE}
#: Results between two writes of the set's document (a killed run recomputes at most these).
SAVE_EVERY = 32


@dataclasses.dataclass
class FlowReport:
    """What one ``flow`` call did."""

    store: str
    name: str
    clips: int  # clips in the set
    computed: int  # clips computed by this call
    already: int  # clips done before this call (a resumed set)
    apex_sources: dict  # {"annotated" | "middle" | "estimated": clips}
    apex_error: dict  # max-flow: {dataset: {"clips", "median", "q1", "q3"}} distance to the annotated apex, frames
    seconds: float


def settings(estimator: str, size: int, apex: str) -> dict:
    """The document fields that decide a set's values; a resumed set must match them."""
    if estimator not in ESTIMATORS:
        raise ConfigError(f"invalid --estimator {estimator!r}: allowed values are {', '.join(ESTIMATORS)}")
    if apex not in APEX_RULES:
        raise ConfigError(f"invalid --apex {apex!r}: allowed values are {', '.join(APEX_RULES)}")
    if not 4 <= size <= 512:
        raise ConfigError(f"invalid --size {size}: use 4 to 512 pixels (28 is STSTNet's)")
    params = {"tvl1": TVL1, "farneback": FARNEBACK}[estimator]
    extra = {"apex_search": APEX_SEARCH} if apex == "max-flow" else {}
    return {"estimator": estimator, "size": int(size), "apex_rule": apex,
            "parameters": {estimator: dict(params), **extra, "resize": "area", "strain": "central differences"}}


def versions() -> dict:
    import cv2

    return {"roistore": __version__, "opencv": cv2.__version__, "numpy": np.__version__}


# --- the computation ------------------------------------------------------------------------
@functools.cache
def _tvl1():
    import cv2

    if not hasattr(cv2, "optflow"):
        raise ConfigError("TV-L1 needs OpenCV's contrib module (cv2.optflow): pip uninstall opencv-python-headless "
                          "&& pip install opencv-contrib-python-headless, or use --estimator farneback")
    t = TVL1
    # Positional: OpenCV spells one keyword "innnerIterations", which a fixed release may correct.
    return cv2.optflow.DualTVL1OpticalFlow_create(
        t["tau"], t["lambda"], t["theta"], t["scales"], t["warps"], t["epsilon"], t["inner_iterations"],
        t["outer_iterations"], t["scale_step"], t["gamma"], t["median_filtering"])


def flow(a: np.ndarray, b: np.ndarray, estimator: str) -> np.ndarray:
    """Dense flow from greyscale uint8 ``a`` to ``b`` (same shape): float32 (h, w, 2), (u, v) in pixels."""
    import cv2

    if estimator == "tvl1":
        return _tvl1().calc(a, b, None)
    f = FARNEBACK
    return cv2.calcOpticalFlowFarneback(a, b, None, f["pyr_scale"], f["levels"], f["winsize"], f["iterations"],
                                        f["poly_n"], f["poly_sigma"], 0)


def strain(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Optical strain magnitude ``sqrt(ux^2 + vy^2 + 0.5 (uy + vx)^2)`` (central differences)."""
    uy, ux = np.gradient(u)
    vy, vx = np.gradient(v)
    return np.sqrt(ux ** 2 + vy ** 2 + 0.5 * (uy + vx) ** 2)


def resized(frame: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)


def onset_apex_flow(onset: np.ndarray, apex: np.ndarray, size: int, estimator: str) -> np.ndarray:
    """u, v and strain from ``onset`` to ``apex`` (uint8 crops of any size), at ``size`` px: float32 (size, size, 3)."""
    uv = flow(resized(onset, size), resized(apex, size), estimator)
    u, v = uv[..., 0], uv[..., 1]
    return np.stack([u, v, strain(u, v)], axis=-1).astype(np.float32)


def onset_index(rec) -> int:
    """The onset frame's index in the clip: the sheet's onset where it names a frame of the clip, else 0."""
    numbers = rec["frame_numbers"]
    return numbers.index(rec["onset"]) if rec.data.get("onset") in numbers else 0


def stand_in_datasets(store: Store) -> set[str]:
    """Datasets whose records hold a stand-in apex, not an annotated one: those of readers that
    take the middle frame (SMIC's), as the store's ingest log names them."""
    from roi_store.ingest.datasets import get_reader

    names = {log["dataset"] for log in store.header["ingests"]}
    return {n for n in names if not getattr(get_reader(n), "apex_annotated", True)}


def annotated_apex(rec, stand_in: set[str] = frozenset()) -> int | None:
    """The sheet's apex as an index in the clip, or None (no apex, a stand-in of a dataset in
    ``stand_in``, or an apex that is not after the onset)."""
    numbers = rec["frame_numbers"]
    if rec.dataset in stand_in or rec.data.get("apex") not in numbers:
        return None
    k = numbers.index(rec["apex"])
    return k if k > onset_index(rec) else None


def search_apex(face: np.ndarray, onset: int) -> int:
    """The frame after ``onset`` whose flow from it (:data:`APEX_SEARCH`) has the largest mean magnitude."""
    size = APEX_SEARCH["size"]
    base = resized(face[onset], size)
    best, where = -1.0, min(onset + 1, len(face) - 1)
    for k in range(onset + 1, len(face)):
        uv = flow(base, resized(face[k], size), APEX_SEARCH["estimator"])
        magnitude = float(np.sqrt((uv ** 2).sum(axis=-1)).mean())
        if magnitude > best:
            best, where = magnitude, k
    return where


#: This process's open store and set arrays (a worker computes many clips): by store, set, and
#: the set's creation time and size, which a replaced set (``--overwrite``) changes.
_OPEN: dict[tuple, tuple] = {}


def _opened(location: str, job: dict):
    key = (location, job["name"], job["created"], job["size"])
    if key not in _OPEN:
        import zarr

        store = open_store(location)
        group = zarr.open_group(location, mode="r+")  # the store's reader opens read-only; the set's rows are ours
        _OPEN.clear()
        _OPEN[key] = (store, {c: group[f"{fs.set_path(job['name'])}/{c}"] for c in job["crops"]})
    return _OPEN[key]


def flow_clip(i: int, location: str, clip_id: str, row: int, job: dict) -> tuple[int, dict]:
    """Compute clip ``clip_id``'s flow for every crop of a set and write it at ``row``; return ``i``, its entry.

    ``job`` holds the set's ``name``, ``created``, ``crops``, ``size``, ``estimator`` and ``apex_rule``,
    and ``stand_in`` (:func:`stand_in_datasets`).
    """
    store, arrays = _opened(location, job)
    rec = store.clip(clip_id)
    onset = onset_index(rec)
    h = hashlib.sha256()
    annotated = annotated_apex(rec, set(job["stand_in"]))
    if job["apex_rule"] == "annotated":
        apex, source = annotated, "annotated"
    elif job["apex_rule"] == "middle" or rec.n_frames - onset < 2:
        apex, source = onset + (rec.n_frames - onset) // 2, "middle"
    else:
        face = store.frames(clip_id, FACE)
        h.update(face.tobytes())  # the search read every frame: all of them are the set's source
        apex, source = search_apex(face, onset), "estimated"
    for crop in job["crops"]:
        frames = store.frames(clip_id, crop)
        pair = frames[[onset, apex]]
        h.update(pair.tobytes())
        arrays[crop][row] = onset_apex_flow(pair[0], pair[1], job["size"], job["estimator"])
    return i, {"onset": onset, "apex": int(apex), "apex_source": source, "annotated_apex": annotated,
               "source_digest": h.hexdigest(), "ingested": rec.data.get("ingested", "")}


def _setup(jobs: int) -> None:
    import cv2

    if jobs > 1:
        cv2.setNumThreads(1)  # each worker on one core: OpenCV's own threads would fight the other workers


# --- the command ----------------------------------------------------------------------------
def compute_flow(store_path: str | Path, name: str, *, estimator: str = "tvl1", size: int = 28,
                 apex: str = "annotated", jobs: int = 1, scheduler: str | None = None, overwrite: bool = False,
                 progress: bool = False) -> FlowReport:
    """Compute (or resume) the onset-apex flow feature set ``name`` of every complete clip of a store.

    Parameters
    ----------
    store_path : path
        A store folder of format 2 (``roistore upgrade`` makes a format 1 store one).
    name : str
        The set's name (``features/<name>`` in the store); several sets live side by side.
    estimator : {"tvl1", "farneback"}
        TV-L1 (OpenCV contrib) or Farneback.
    size : int
        Side of the flow maps in pixels (both frames are resized to it first).
    apex : {"annotated", "middle", "max-flow"}
        The sheet's apex (clips without one are refused, listed); the middle frame; or the frame
        of largest flow magnitude from the onset (recorded as ``estimated``).
    jobs : int
        Worker processes (1: in this process).
    scheduler : str, optional
        Compute on this dask.distributed scheduler's workers (they must see the store's path).
    overwrite : bool
        Replace an existing set of this name (its settings or the store's clips changed).
    progress : bool
        A progress bar on stderr.

    Returns
    -------
    FlowReport

    Raises
    ------
    RoiStoreError
        Unusable options, a store without face crops, clips without an annotated apex under
        ``apex="annotated"``, a set of this name made otherwise, or a busy set.
    """
    started = time.perf_counter()
    fs.check_name(name)
    wanted = settings(estimator, size, apex)
    store_path = local_store_path(store_path)
    parallel.check(jobs, scheduler)
    store = open_store(store_path, mode="r+")
    if FACE not in store.arrays:
        raise StoreError(f"{store.where} is a format {store.header['format_version']} store without face crops: "
                         f"run 'roistore upgrade {store.where}' (it reads the source frames again), then 'flow'")
    clips = store.clips
    if not clips:
        raise StoreError(f"{store.where} has no complete clips: ingest a dataset first")
    stand_in = stand_in_datasets(store)
    if apex == "annotated":
        lacking = [c.id for c in clips if annotated_apex(c, stand_in) is None]
        if lacking:
            shown = ", ".join(lacking[:8]) + (f", ... ({len(lacking)} in all)" if len(lacking) > 8 else "")
            raise ConfigError(f"--apex annotated: {len(lacking)} clips have no annotated apex after their onset "
                              f"({shown}): use --apex middle or --apex max-flow")
    lock = locks.acquire(store_path / fs.FEATURES / name, f"feature set {name!r} of {store.where}",
                         f"roistore flow --name {name}", busy=StoreBusyError, hint="or choose another --name")
    try:
        doc = _start(store, name, wanted, [c.id for c in clips], overwrite)
        return _run(store, doc, {c.id: c for c in clips}, sorted(stand_in), jobs, scheduler, progress, started)
    finally:
        lock.release()


def _start(store: Store, name: str, wanted: dict, clip_ids: list[str], overwrite: bool) -> dict:
    """The set's document: the existing one to resume, or a new set's (created here)."""
    doc = fs.set_document(store, name)
    if doc is not None and not overwrite:
        same = {k: doc[k] for k in wanted} == fmt.json_safe(wanted)
        if not same:
            was = f"--estimator {doc['estimator']} --size {doc['size']} --apex {doc['apex_rule']}"
            raise ConfigError(f"feature set {name!r} of {store.where} was made with {was}: resume it with those "
                              "options, choose another --name, or pass --overwrite to replace it")
        if doc["clips"] != clip_ids:
            raise ConfigError(f"feature set {name!r} of {store.where} was made from {len(doc['clips'])} clips; the "
                              f"store now holds {len(clip_ids)} others or more: pass --overwrite to recompute it")
        return doc
    if doc is not None:
        fs.delete_set(store, name)
    doc = {"name": name, "kind": "onset-apex-flow", "state": fs.RUNNING, "format_version": fmt.FORMAT_VERSION,
           "created": now(), "finished": None, "writer": f"roistore {__version__}", **wanted,
           "versions": versions(), "crops": [FACE, *store.regions], "channels": list(fs.CHANNELS),
           "clips": clip_ids, "done": {}, "source_digest": None}
    doc = fmt.json_safe(doc)
    fs.create_set(store, doc)
    return doc


def _run(store: Store, doc: dict, records: dict, stand_in: list[str], jobs: int, scheduler: str | None,
         progress: bool, started: float) -> FlowReport:
    from tqdm import tqdm

    already = len(doc["done"])
    todo = [(k, c) for k, c in enumerate(doc["clips"]) if c not in doc["done"]]
    location = parallel.store_location(store.where)
    job = {**{k: doc[k] for k in ("name", "created", "crops", "size", "estimator", "apex_rule")}, "stand_in": stand_in}
    calls = [(i, location, c, k, job) for i, (k, c) in enumerate(todo)]
    bar = tqdm(total=len(todo), unit="clip", desc=f"flow {doc['name']}", dynamic_ncols=True, disable=not progress)
    last = time.monotonic()
    try:
        results = parallel.run_tasks(flow_clip, calls, jobs=jobs, scheduler=scheduler, shared=[location],
                                     setup=functools.partial(_setup, jobs))
        for n, (i, entry) in enumerate(results, start=1):
            doc["done"][todo[i][1]] = entry
            bar.update(1)
            if n % SAVE_EVERY == 0 or time.monotonic() - last > 10:
                fs.write_document(store, doc)
                last = time.monotonic()
    finally:
        bar.close()
        if todo:
            fs.write_document(store, doc)  # what finished is kept for a resumed run
    errors = apex_error(doc, records)
    if doc["state"] != fs.COMPLETE:
        doc.update(state=fs.COMPLETE, finished=now(), source_digest=fs.combined_digest(doc), apex_error=errors)
        fs.write_document(store, doc)
    sources: dict[str, int] = {}
    for entry in doc["done"].values():
        sources[entry["apex_source"]] = sources.get(entry["apex_source"], 0) + 1
    return FlowReport(store.where, doc["name"], len(doc["clips"]), len(todo), already, dict(sorted(sources.items())),
                      errors, round(time.perf_counter() - started, 3))


def apex_error(doc: dict, records: dict) -> dict:
    """How far estimated apexes land from annotated ones, in frames: per dataset and over all.

    ``{dataset: {"clips", "median", "q1", "q3"}}`` over the clips whose apex was estimated and
    whose sheet has an apex; empty when there are none (a middle or annotated set, or SMIC).
    """
    by: dict[str, list[int]] = {}
    for clip, entry in doc["done"].items():
        if entry["apex_source"] == "estimated" and entry.get("annotated_apex") is not None:
            d = abs(entry["apex"] - entry["annotated_apex"])
            by.setdefault(records[clip].dataset if clip in records else clip.split("/")[0], []).append(d)
    if not by:
        return {}
    by["all"] = [d for ds in sorted(by) for d in by[ds]]
    out = {}
    for ds, dists in by.items():
        q1, med, q3 = np.percentile(dists, [25, 50, 75])
        out[ds] = {"clips": len(dists), "median": float(med), "q1": float(q1), "q3": float(q3)}
    return out


__all__ = ["FlowReport", "compute_flow", "onset_apex_flow", "strain"]
