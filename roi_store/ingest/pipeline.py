"""Ingest: native dataset folders -> region clips and clip records in a store.

The coordinating process locks the store (one ingest at a time: a second one stops with a line
naming the holder), scans the dataset, writes a ``pending`` record (with its reserved array row)
for every clip still to do, and hands clips to workers (:func:`roi_store.parallel.run_tasks`). A
worker finds the face on the clip's first frame, decides the six cuts, decodes and cuts every
frame and writes its own chunks; only then does the coordinator mark the record ``complete``. A
killed run therefore leaves pending records, never a clip that looks complete but is not, and
re-running picks up exactly the clips that are not complete.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

from tqdm import tqdm

from roi_store import killpoints, parallel
from roi_store.errors import ConfigError, RoiStoreError, StoreBusyError, StoreError
from roi_store.ingest import regions as rg
from roi_store.ingest.cut import CutSettings, cut_clip
from roi_store.ingest.datasets import get_reader
from roi_store.ingest.datasets.base import ClipSpec, Skip
from roi_store.ingest import faces
from roi_store.store import lock as locks
from roi_store.ids import printable
from roi_store.store.labels import default_relabel, default_views, read_view_file, relabel_vectors, view_label
from roi_store.store.layout import write_clip_frames
from roi_store.store.store import COMPLETE, PENDING, SKIPPED, create_store, local_store_path, now, open_store

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


def settings_for(t_max: int, scheme: str, landmarks_model: str | Path | None, view_file: str | Path | None) -> dict:
    """The store settings an ingest with these options needs (recorded in the store header)."""
    layout = rg.default_layout()
    rg.check_scheme(scheme, layout)
    if t_max < 1:
        raise ConfigError(f"invalid --t-max {t_max}: it must be a positive number of frames")
    views = default_views()
    if view_file:
        views = {"megc2019": read_view_file(Path(view_file), views["megc2019"]["classes"])}
    return {"t_max": int(t_max), "region_scheme": scheme, "layout": layout, "views": views,
            "relabel": default_relabel(), "landmarks_model": faces.landmark_model_id(landmarks_model),
            "face": {"size": rg.FACE_SIZE, "margin": rg.FACE_MARGIN}}


def _open_checked(path: Path, settings: dict, explicit: set):
    store = open_store(path, mode="r+")
    if "face" not in store.header:
        raise ConfigError(f"{path} is a format {store.header['format_version']} store, without the whole-face crops "
                          f"new clips get: run 'roistore upgrade {path}' first, then append")
    # Appending must not mix clips cut with different settings in one store.
    for key, option in (("t_max", "--t-max"), ("region_scheme", "--scheme"), ("landmarks_model", "--landmarks-model")):
        if store.header[key] != settings[key] and (key in explicit or key == "landmarks_model"):
            raise ConfigError(
                f"{path} was built with {option} {store.header[key]}, not {settings[key]}: "
                f"use the same {option} to append, or choose a new store"
            )
    if "views" in explicit and store.views != settings["views"]:
        raise ConfigError(
            f"{path} already defines its megc2019 view differently: drop --view-file or choose a new store")
    return store


def ingest(store_path: str | Path, dataset: str, root: str | Path, annotations: str | Path | None = None, *,
           jobs: int = 1, scheduler: str | None = None, t_max: int | None = None, scheme: str | None = None,
           landmarks_model: str | Path | None = None, view_file: str | Path | None = None,
           progress: bool = False) -> IngestReport:
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
    progress : bool
        True for a progress bar on stderr.

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
                            landmarks_model, view_file)
    model = os.path.abspath(landmarks_model) if landmarks_model else None  # as workers load it
    items = list(reader.scan(root, Path(annotations) if annotations else None))
    if scheduler is None:
        faces.preload(model)  # a damaged model stops the ingest before anything is written
    if not (store_path / "zarr.json").exists():
        try:
            create_store(store_path, settings).close()
        except StoreError:
            if not (store_path / "zarr.json").exists():
                raise
            # another ingest created it meanwhile: append to it as to any existing store
    lock = locks.acquire(store_path, f"store {store_path}", f"roistore ingest --dataset {reader.name}",
                         busy=StoreBusyError, hint="or ingest into another store")
    try:
        store = _open_checked(store_path, settings, explicit)
        return _ingest(store, reader, items, root, annotations, model, jobs, scheduler, progress)
    finally:
        lock.release()


def _ingest(store, reader, items: list, root: Path, annotations, model: str | None, jobs: int,
            scheduler: str | None, progress) -> IngestReport:
    """Ingest the scanned ``items`` into ``store``, which this process has locked."""
    started = now()
    records = store.records()
    specs = [i for i in items if isinstance(i, ClipSpec)]
    reader_skips = [{"id": i.id, "reason": i.reason, "source": i.source} for i in items if isinstance(i, Skip)]
    todo = [s for s in specs if records.get(s.id) is None or records[s.id].status != COMPLETE]
    already = len(specs) - len(todo)

    # Reserve rows and write pending records before any pixel is written.
    need = [s for s in todo if records.get(s.id) is None or records[s.id].row is None]
    rows = {s.id: records[s.id].row for s in todo if s.id in records}
    rows.update(zip((s.id for s in need), store.reserve_rows(len(need))))
    for s in todo:
        store.write_record({**_base_record(s, root), "status": PENDING, "row": rows[s.id]})
        killpoints.reached("ingest.pending")

    location, cut = parallel.store_location(store.where), CutSettings.of(store, model, face=True)
    shared = [location, str(root), *([model] if model else [])]
    order = largest_first(todo)
    calls = [(i, spec, rows[spec.id], location, cut) for i, spec in enumerate(order)]
    added, frames, failed = 0, 0, []
    bar = tqdm(total=len(todo), unit="clip", desc=f"ingest {reader.name}", dynamic_ncols=True, disable=not progress)
    try:
        results = parallel.run_tasks(process_clip, calls, jobs=jobs, scheduler=scheduler, shared=shared,
                                     setup=functools.partial(_load_models, model, jobs))
        for i, result in results:
            spec = order[i]
            base = {**_base_record(spec, root), "row": rows[spec.id]}
            if result["status"] == COMPLETE:
                store.write_record({**base, **_labelled(result, spec, store)})
                added += 1
                frames += result["n_frames"]
            else:
                store.write_record({**base, "status": SKIPPED, "reason": result["reason"], "warnings": spec.warnings})
                failed.append({"id": spec.id, "reason": result["reason"], "source": spec.source})
            killpoints.reached("ingest.record")
            bar.update(1)
    finally:
        bar.close()
    log = {"dataset": reader.name, "root": str(root.resolve()),
           "annotations": str(Path(annotations).resolve()) if annotations else None,
           "started": started, "finished": now(), "added": added, "skipped": len(failed) + len(reader_skips),
           "writer": store.header["writer"]}
    killpoints.reached("ingest.header")
    store.update_header(ingests=[*store.header["ingests"], log],
                        skipped={**store.header["skipped"], reader.name: reader_skips})
    return IngestReport(store.where, reader.name, len(specs), added, already, reader_skips + failed, frames)


def _load_models(model: str | None, jobs: int) -> None:
    """Load the face models (once per process); workers of several jobs decode on one core each."""
    faces.preload(model)
    if jobs > 1:
        import cv2

        cv2.setNumThreads(1)


def largest_first(specs: list[ClipSpec]) -> list[ClipSpec]:
    """Clips in decreasing order of work (frames x bytes of the first frame), so that workers
    finish together: a large clip handed out last would leave the other workers idle."""

    def work(spec: ClipSpec) -> int:
        try:
            return len(spec.frames) * spec.frames[0].stat().st_size
        except (OSError, IndexError):
            return 0  # an unreadable clip is quick: it is skipped

    return sorted(specs, key=work, reverse=True)


def _base_record(spec: ClipSpec, root: Path) -> dict:
    return {"id": spec.id, "dataset": spec.key.dataset, "subject": spec.key.subject, "clip": spec.key.clip,
            "source": spec.source, "folder": os.path.relpath(spec.folder, root).replace(os.sep, "/")}


def _labelled(result: dict, spec: ClipSpec, store) -> dict:
    labels, excluded, relabel = {}, {}, {}
    for name, view in store.views.items():
        label, reason = view_label(view, spec.key, spec.emotion)
        labels[name] = label
        if reason:
            excluded[name] = reason
        relabel[name] = relabel_vectors(label, spec.aus, store.header["relabel"], store.regions)
    return {**result, "labels": labels, "excluded": excluded, "relabel": relabel}


def process_clip(i: int, spec: ClipSpec, row: int, store: str, cut: CutSettings) -> tuple[int, dict]:
    """Cut clip ``i`` and write its region chunks at ``row`` of ``store``; return ``i`` and its record fields.

    Data problems (unreadable frames, no face, too long) come back as
    ``{"status": "skipped", "reason": ...}`` so that one bad clip never stops the others.
    """
    try:
        blocks, meta = cut_clip(spec, cut)
        names = [*meta["cuts"], *([rg.FACE] if cut.face else [])]
        write_clip_frames(store, row, dict(zip(names, blocks)))
        return i, meta
    except RoiStoreError as exc:
        return i, {"status": SKIPPED, "reason": printable(str(exc))}
