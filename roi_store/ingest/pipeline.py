"""Ingest: native dataset folders -> region clips and clip records in a store.

The coordinating process scans the dataset, writes a ``pending`` record (with its reserved
array row) for every clip still to do, and hands clips to workers. A worker finds the face on the
clip's first frame, decides the six cuts, decodes and cuts every frame and writes its own chunks;
only then does the coordinator mark the record ``complete``. A killed run therefore leaves
pending records, never a clip that looks complete but is not, and re-running picks up exactly
the clips that are not complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from roi_store import killpoints, parallel
from roi_store.ingest import regions as rg
from roi_store.ingest.datasets import get_reader
from roi_store.ingest.datasets.base import ClipSpec, Skip
from roi_store.ingest.cut import cut_clip
from roi_store.errors import ConfigError, DatasetError, RoiStoreError, StoreError
from roi_store.ingest.faces import landmark_model_id
from roi_store.store.format import printable
from roi_store.store.labels import default_relabel, default_views, read_view_file, relabel_vectors, view_label
from roi_store.store.store import COMPLETE, PENDING, REGIONS, SKIPPED, create_store, local_store_path, now, open_store

DEFAULT_T_MAX = 500


@dataclasses.dataclass
class IngestReport:
    """What one ``ingest`` call did."""

    store: str
    dataset: str
    found: int  # clips the reader found (complete or not)
    added: int  # clips completed by this call
    already: int  # clips that were complete before this call
    skipped: list[dict]  # {"id", "reason", "source"}: reader skips and clips that failed
    frames: int  # frames decoded and cut by this call


def settings_for(t_max: int, scheme: str, landmarks_model: str | None, view_file: str | None) -> dict:
    """The store settings an ingest with these options needs (recorded in the store header)."""
    layout = rg.default_layout()
    if scheme not in layout["schemes"]:
        raise ConfigError(f"invalid region scheme {scheme!r}: allowed values are {', '.join(sorted(layout['schemes']))}")
    if t_max < 1:
        raise ConfigError(f"invalid --t-max {t_max}: it must be a positive number of frames")
    views = default_views()
    if view_file:
        classes = views["megc2019"]["classes"]
        views = {"megc2019": read_view_file(Path(view_file), classes)}
    return {
        "t_max": int(t_max),
        "region_scheme": scheme,
        "layout": layout,
        "views": views,
        "relabel": default_relabel(),
        "landmarks_model": landmark_model_id(landmarks_model),
    }


def _open_or_create(path: Path, settings: dict, explicit: dict):
    if not (path / "zarr.json").exists():
        return create_store(path, settings)
    store = open_store(path, mode="r+")
    # Appending must not mix clips cut with different settings in one store.
    for key, option in (("t_max", "--t-max"), ("region_scheme", "--scheme"), ("landmarks_model", "--landmarks-model")):
        if store.header[key] != settings[key] and (key in explicit or key == "landmarks_model"):
            raise ConfigError(
                f"{path} was built with {option} {store.header[key]}, not {settings[key]}: "
                f"use the same {option} to append, or choose a new store"
            )
    if "views" in explicit and store.views != settings["views"]:
        raise ConfigError(f"{path} already defines its megc2019 view differently: drop --view-file or choose a new store")
    return store


def ingest(
    store_path: str | Path,
    dataset: str,
    root: str | Path,
    annotations: str | Path | None = None,
    *,
    jobs: int = 1,
    scheduler: str | None = None,
    t_max: int | None = None,
    scheme: str | None = None,
    landmarks_model: str | Path | None = None,
    view_file: str | Path | None = None,
    progress: Callable[[int], None] | bool = False,
) -> IngestReport:
    """Append one dataset's clips to a store (created if needed); safe to re-run.

    Parameters
    ----------
    store_path : path
        The store folder.
    dataset : str
        A registered reader name (``casme2``, ``samm``, ``smic``, ``manifest``).
    root : path
        The folder holding the dataset's subject folders.
    annotations : path, optional
        The annotation sheet or manifest; the reader's default location if omitted.
    jobs : int
        Worker processes (1: in this process).
    scheduler : str, optional
        Cut the clips on the workers of this dask.distributed scheduler (``tcp://host:8786``)
        instead; they must see ``store_path``, ``root`` and ``landmarks_model`` at the same paths.
    t_max : int, optional
        Padded clip length (default 500; must match an existing store).
    scheme : {"landmarks", "centred", "authors"}, optional
        Region box placement (default ``landmarks``; must match an existing store).
    landmarks_model : path, optional
        A 68-point dlib shape predictor file (default: the one of ``face-recognition-models``).
    view_file : path, optional
        A clip list in the MEGC 2019 file format that defines the megc2019 view.
    progress : bool or callable
        True for a progress bar on stderr; a callable gets the number of clips done.

    Returns
    -------
    IngestReport

    Raises
    ------
    RoiStoreError
        For unusable options, sheets or stores (clips that fail are recorded, not raised).
    """
    store_path = local_store_path(store_path)  # a zip or a URL is refused before any work
    reader = get_reader(dataset)
    root = Path(root)
    if not root.is_dir():
        raise StoreError(f"dataset root {root} is not a folder: pass the folder that holds the subject folders")
    parallel.check(jobs, scheduler)
    root = root.absolute()  # frame paths travel to workers, whose working folder may differ
    explicit = {k for k, v in (("t_max", t_max), ("region_scheme", scheme), ("views", view_file)) if v is not None}
    settings = settings_for(t_max or DEFAULT_T_MAX, scheme or rg.default_layout()["default_scheme"],
                            str(landmarks_model) if landmarks_model else None,
                            str(view_file) if view_file else None)
    model = os.path.abspath(landmarks_model) if landmarks_model else None  # as workers load it
    items = _scan(reader, root, Path(annotations) if annotations else None, jobs, scheduler, model)
    store = _open_or_create(store_path, settings, explicit)
    started = now()
    records = store.records()
    specs = [i for i in items if isinstance(i, ClipSpec)]
    reader_skips = [{"id": i.id, "reason": i.reason, "source": i.source} for i in items if isinstance(i, Skip)]
    todo = [s for s in specs if records.get(s.id) is None or records[s.id].status != COMPLETE]
    already = len(specs) - len(todo)

    # Reserve rows and write pending records before any pixel is written.
    need = [s for s in todo if records.get(s.id) is None or records[s.id].row is None]
    rows = dict(zip((s.id for s in need), store.reserve_rows(len(need))))
    for s in todo:
        row = rows.get(s.id, records[s.id].row if s.id in records else None)
        store.write_record({**_base_record(s, root), "status": PENDING, "row": row})
        killpoints.reached("ingest.pending")
    rows = {s.id: store.records()[s.id].row for s in todo}

    work = {
        "store": parallel.store_location(store_path),
        "t_max": store.t_max,
        "scheme": store.header["region_scheme"],
        "layout": store.header["layout"],
        "landmarks_model": model,
    }
    shared = [work["store"], str(root), *([work["landmarks_model"]] if landmarks_model else [])]
    added, frames, failed = 0, 0, []
    bar = _progress_bar(progress, len(todo), dataset)
    try:
        for spec, result in _run(todo, rows, work, jobs, scheduler, shared):
            base = {**_base_record(spec, root), "row": rows[spec.id]}
            if result["status"] == COMPLETE:
                store.write_record({**base, **_labelled(result, spec, store)})
                added += 1
                frames += result["n_frames"]
            else:
                store.write_record({**base, "status": SKIPPED, "reason": result["reason"], "warnings": spec.warnings})
                failed.append({"id": spec.id, "reason": result["reason"], "source": spec.source})
            killpoints.reached("ingest.record")
            bar(1)
    finally:
        bar(None)
    log = {"dataset": reader.name, "root": str(root.resolve()),
           "annotations": str(Path(annotations).resolve()) if annotations else None,
           "started": started, "finished": now(), "added": added, "skipped": len(failed) + len(reader_skips),
           "writer": store.header["writer"]}
    killpoints.reached("ingest.header")
    store.update_header(
        ingests=[*store.header["ingests"], log],
        skipped={**store.header["skipped"], reader.name: reader_skips},
    )
    return IngestReport(str(store_path), reader.name, len(specs), added, already, reader_skips + failed, frames)


def _scan(reader, root: Path, annotations: Path | None, jobs: int, scheduler: str | None, landmarks_model) -> list:
    """The reader's clips and skips, read while the face models load when there are cores for both.

    Local workers are forked once this process has loaded the face models, so that they share
    them. Loading takes about a second, all of it holding the GIL; reading the sheets and
    listing the folders takes a good part of that again. With ``jobs`` > 1 (so more than one
    core to use) and the models not loaded yet, the dataset is therefore read in a forked child
    while this process loads the models. Errors come back as the same exceptions.
    """
    from roi_store.ingest.faces import loaded, preload

    fork = _fork_context() if scheduler is None and jobs > 1 else None
    if fork is None or loaded(landmarks_model):
        return list(reader.scan(root, annotations))
    import warnings

    receive, send = fork.Pipe(duplex=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*fork\(\) may lead to deadlocks", category=DeprecationWarning)
        child = fork.Process(target=_scan_child, args=(reader, root, annotations, send), daemon=True)
        child.start()
    send.close()
    try:
        preload(landmarks_model)
        ok, answer = receive.recv()
    except EOFError:
        child.join()
        raise DatasetError(
            f"reading the {reader.name} dataset at {root} stopped without an answer (its process ended with "
            f"code {child.exitcode}): re-run with --jobs 1 to see the problem"
        ) from None
    finally:
        receive.close()
        child.join()
    if not ok:
        raise answer
    return answer


def _scan_child(reader, root: Path, annotations: Path | None, send) -> None:
    import traceback

    try:
        answer = (True, list(reader.scan(root, annotations)))
    except BaseException as exc:  # noqa: BLE001 -- every error goes back to the parent, which raises it
        if not isinstance(exc, RoiStoreError):  # a bug: keep where it happened
            exc.add_note("".join(traceback.format_exception(exc)).rstrip())
        answer = (False, exc)
    try:
        send.send(answer)
    except OSError:
        pass  # the parent stopped listening: it failed itself, and says why
    except Exception as exc:  # noqa: BLE001 -- an answer that cannot be pickled
        with contextlib.suppress(OSError):
            send.send((False, RuntimeError(f"{type(exc).__name__} sending the scan's answer: {exc}")))
    finally:
        send.close()


def _progress_bar(progress, total: int, dataset: str):
    if callable(progress):
        done = [0]

        def update(n):
            if n:
                done[0] += n
                progress(done[0])

        return update
    if not progress:
        return lambda n: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="clip", desc=f"ingest {dataset}", dynamic_ncols=True)
    return lambda n: bar.update(n) if n else bar.close()


def _run(todo: list[ClipSpec], rows: dict, work: dict, jobs: int, scheduler: str | None, shared: list[str]):
    if scheduler is None and jobs > 1 and len(todo) > 1:
        fork = _fork_context()
        if fork is not None:
            yield from _run_forked(todo, rows, work, jobs, fork)
            return
    calls = [(i, spec, rows[spec.id], work) for i, spec in enumerate(todo)]
    for i, result in parallel.run_tasks(_process_indexed, calls, jobs=jobs, scheduler=scheduler, shared=shared):
        yield todo[i], result


def _fork_context():
    """The fork start method where it is safe to use (Linux), else None."""
    import multiprocessing
    import sys

    if sys.platform != "linux" or "fork" not in multiprocessing.get_all_start_methods():
        return None
    return multiprocessing.get_context("fork")


def _run_forked(todo: list[ClipSpec], rows: dict, work: dict, jobs: int, fork):
    """Clip workers forked from this process once the face models are loaded; results as they finish.

    A forked worker starts in milliseconds with the detector and the 100 MB landmark model
    already in memory (shared, copy-on-write); a fresh interpreter would spend a second or more
    importing and loading them, which is much of a small ingest. Zarr resets its I/O thread in
    a forked child, and OpenCV's thread pool is off while forking (each worker is one core).
    """
    import warnings
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import cv2

    from roi_store.ingest.faces import preload

    preload(work["landmarks_model"])
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=fork)
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns about forking a process that has threads (Zarr's I/O loop, reset above).
            warnings.filterwarnings("ignore", message=r".*fork\(\) may lead to deadlocks", category=DeprecationWarning)
            futures = {pool.submit(process_clip, spec, rows[spec.id], work): spec for spec in largest_first(todo)}
        for future in as_completed(futures):
            yield futures[future], future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        cv2.setNumThreads(threads)


def largest_first(specs: list[ClipSpec]) -> list[ClipSpec]:
    """Clips in decreasing order of work (frames x bytes of the first frame), so that workers
    finish together: a large clip handed out last would leave the other workers idle."""

    def work(spec: ClipSpec) -> int:
        try:
            return len(spec.frames) * spec.frames[0].stat().st_size
        except (OSError, IndexError):
            return 0  # an unreadable clip is quick: it is skipped

    return sorted(specs, key=work, reverse=True)


def _process_indexed(i: int, spec: ClipSpec, row: int, work: dict):
    return i, process_clip(spec, row, work)


def _base_record(spec: ClipSpec, root: Path) -> dict:
    return {
        "id": spec.id, "dataset": spec.key.dataset, "subject": spec.key.subject, "clip": spec.key.clip,
        "source": spec.source, "folder": os.path.relpath(spec.folder, root).replace(os.sep, "/"),
    }


def _labelled(result: dict, spec: ClipSpec, store) -> dict:
    labels, excluded, relabel = {}, {}, {}
    for name, view in store.views.items():
        label, reason = view_label(view, spec.key, spec.emotion)
        labels[name] = label
        if reason:
            excluded[name] = reason
        relabel[name] = relabel_vectors(label, spec.aus, store.header["relabel"], store.regions)
    return {**result, "labels": labels, "excluded": excluded, "relabel": relabel}


def process_clip(spec: ClipSpec, row: int, work: dict) -> dict:
    """Cut one clip and write its region chunks at ``row``; return its record fields.

    Data problems (unreadable frames, no face, too long) come back as
    ``{"status": "skipped", "reason": ...}`` so that one bad clip never stops the others.
    """
    try:
        return _process(spec, row, work)
    except RoiStoreError as exc:
        return {"status": SKIPPED, "reason": printable(str(exc))}




def _process(spec: ClipSpec, row: int, work: dict) -> dict:
    blocks, meta = cut_clip(spec, work)
    _write_blocks(work["store"], row, list(meta["cuts"]), blocks)
    return meta




def _write_blocks(store_path: str, row: int, names: list[str], blocks: list[np.ndarray]) -> None:
    import zarr

    from roi_store.store import chunkio
    from roi_store.store.store import ZSTD_LEVEL

    arrays = _region_arrays(store_path, names)
    # Only the chunks that hold frames are written, each one whole (zero-padded past the last
    # frame), so nothing already on disk is read back and merged: a resumed clip replaces a
    # half-written chunk. In a store folder the chunk files are written directly (chunkio);
    # elsewhere through Zarr, whose empty-chunk test would scan every chunk for nothing.
    with zarr.config.set({"array.write_empty_chunks": True}):
        for name, block in zip(names, blocks):
            arr = arrays[name]
            folder = chunkio.plain_folder(arr)
            if folder is not None:
                chunkio.write_clip(arr, folder, row, block, ZSTD_LEVEL)
            else:
                step = arr.chunks[1]
                span = min(-(-len(block) // step) * step, arr.shape[1])
                if span != len(block):
                    block = np.concatenate([block, np.zeros((span - len(block), *block.shape[1:]), block.dtype)])
                arr[row, :span] = block
            killpoints.reached("ingest.chunk")


#: This process's open region arrays: store path -> (the arrays' metadata file stats, arrays).
_ARRAYS: dict[str, tuple[tuple, dict]] = {}


def _region_arrays(store_path: str, names: list[str]) -> dict:
    """The store's region arrays, opened once per process while their metadata files are unchanged.

    Opening them costs about 3 ms each through Zarr, more than writing a small clip. The cache
    holds only arrays whose chunks are written directly (their shape is never used); any change
    of a metadata file (a resize, a new store at the same path) opens them afresh, and so does
    every other kind of store: the coordinator may have grown the arrays since a worker started.
    """
    import zarr

    from roi_store.store import chunkio

    try:
        key = tuple((st.st_mtime_ns, st.st_size, st.st_ino)
                    for st in (os.stat(Path(store_path, REGIONS, n, "zarr.json")) for n in names))
    except (OSError, TypeError, ValueError):
        key = None
    cached = _ARRAYS.get(store_path)
    if key is not None and cached is not None and cached[0] == key:
        return cached[1]
    group = zarr.open_group(store_path, mode="r+")
    arrays = {n: group[f"{REGIONS}/{n}"] for n in names}
    if key is not None and all(chunkio.plain_folder(a) is not None for a in arrays.values()):
        _ARRAYS[store_path] = (key, arrays)
    return arrays
