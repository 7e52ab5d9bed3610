"""The store's layout: where region arrays and clip records lie, how chunks are cut and coded, what a record holds."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zarr
import zarr.api.asynchronous
import zarr.codecs

from roi_store import killpoints
from roi_store.store import format as fmt
from roi_store.ids import ClipKey
from roi_store.store.labels import MEGC2019

COMPLETE, PENDING, SKIPPED = "complete", "pending", "skipped"
REGIONS = "regions"
#: zstd level of every region chunk: level 1 compresses these crops to about 1.4x (level 3:
#: 1.7x) at half the CPU time, and ingest spends more time compressing than decoding JPEGs.
ZSTD_LEVEL = 1
#: Frames per chunk along time: a clip's frames fill ceil(n_frames / TIME_CHUNK) chunks per region,
#: and the padding past them is never written (nor compressed, nor read).
TIME_CHUNK = 64
CLIPS = "clips"
#: The whole-face crops of format 2 (uint8 (rows, t_max, size, size), rows as the regions'),
#: beside ``regions`` because they are no region of the layout.
FACE = "face"


def array_path(name: str) -> str:
    """Where the clip array ``name`` lies: a region's under ``regions/``, the face crops at ``face``."""
    return FACE if name == FACE else f"{REGIONS}/{name}"


def compressors():
    """Codecs of every region array: zstd, then a crc32c checksum over each stored chunk."""
    return [zarr.codecs.ZstdCodec(level=ZSTD_LEVEL), zarr.codecs.Crc32cCodec()]


def chunk_keys(arr: zarr.Array, row: int, n_frames: int) -> list[str]:
    """The keys (below the array's own) of the chunks that hold frames ``0 .. n_frames-1`` of clip row ``row``.

    Chunks past a clip's last frame are never written (they read as the zero fill value). The
    time chunk is the array's own: 64 frames, or ``t_max`` in stores made with one chunk per
    row (both are format 1).
    """
    step = arr.chunks[1]
    return [arr.metadata.encode_chunk_key((row, j, 0, 0)) for j in range(max(1, -(-n_frames // step)))]


def clip_path(key: ClipKey) -> str:
    return f"{CLIPS}/{key.dataset}/{key.subject}/{key.clip}"


@dataclasses.dataclass(frozen=True)
class ClipRecord:
    """One clip of the store, as recorded at ingest (see ``schemas/clip.schema.json``)."""

    id: str
    dataset: str
    subject: str
    clip: str
    status: str
    row: int | None
    n_frames: int
    emotion: str
    labels: dict
    data: dict  # the whole record document

    @property
    def megc2019(self) -> str | None:
        """The clip's MEGC 2019 3-class label, or None if the composite excludes it."""
        return self.labels.get(MEGC2019)

    def __getitem__(self, name: str):
        return self.data[name]

    @classmethod
    def from_doc(cls, doc: dict) -> ClipRecord:
        return cls(
            id=doc["id"], dataset=doc["dataset"], subject=doc["subject"], clip=doc["clip"],
            status=doc["status"], row=doc.get("row"), n_frames=doc.get("n_frames", 0),
            emotion=doc.get("emotion", ""), labels=dict(doc.get("labels", {})), data=doc,
        )


def record_problem(doc: object, path: str) -> str | None:
    """None for a record this module can use; else why not (the schema's first complaint)."""
    if isinstance(doc, dict) and _usable(doc):
        return None
    where = f"clip {doc.get('id', path) if isinstance(doc, dict) else path}"
    return fmt.document_problem(doc, "clip", where) or f"{path}: record is damaged"


def _usable(doc: dict) -> bool:
    # The fields ClipRecord and summary() rely on, checked cheaply: full schema validation of
    # every record on every open would cost more than reading them.
    def whole(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    if not all(isinstance(doc.get(k), str) for k in ("id", "dataset", "subject", "clip")):
        return False
    if doc.get("status") not in (COMPLETE, PENDING, SKIPPED):
        return False
    if doc.get("row") is not None and not whole(doc["row"]):
        return False
    if doc["status"] == COMPLETE:
        return (whole(doc.get("row")) and whole(doc.get("n_frames")) and isinstance(doc.get("labels"), dict)
                and isinstance(doc.get("emotion"), str))
    return True


def summary(store) -> dict:
    """What ``roistore info --json`` prints for ``store`` (a stable interface; see the docs, Command reference)."""
    clips = store.clips
    records = store.records().values()
    out: dict = {
        "store": store.where,
        "format_version": store.header["format_version"],
        "clips": len(clips),
        "subjects": len({(c.dataset, c.subject) for c in clips}),
        "frames": int(sum(c.n_frames for c in clips)),
        "region_scheme": store.header["region_scheme"],
        "regions": store.regions,
        "t_max": store.t_max,
        "datasets": {},
        "views": {},
        "skipped": [{"id": r.id, "reason": r.data.get("reason", ""), "source": r.data.get("source", "")}
                    for r in records if r.status == SKIPPED],
        "pending": [r.id for r in records if r.status == PENDING],
    }
    for ds in sorted({c.dataset for c in clips}):
        items = [c for c in clips if c.dataset == ds]
        out["datasets"][ds] = {
            "clips": len(items),
            "subjects": len({c.subject for c in items}),
            "frames": int(sum(c.n_frames for c in items)),
            "emotions": dict(sorted(Counter(c.emotion for c in items).items())),
        }
    for name, view in store.views.items():
        members = [c for c in clips if c.labels.get(name)]
        vds = {ds: _view_counts([c for c in members if c.dataset == ds], name, view["classes"])
               for ds in sorted({c.dataset for c in members})}
        out["views"][name] = {**_view_counts(members, name, view["classes"]), "datasets": vds}
    for items in store.header.get("skipped", {}).values():
        out["skipped"].extend(items)
    from roi_store.store.features import feature_summary  # features builds on the store, which uses this module

    out["feature_sets"] = feature_summary(store)
    return out


def _view_counts(clips: list[ClipRecord], view: str, classes: list[str]) -> dict:
    counts = Counter(c.labels[view] for c in clips)
    return {
        "clips": len(clips),
        "subjects": len({(c.dataset, c.subject) for c in clips}),
        "classes": {k: counts.get(k, 0) for k in classes},
    }


def run_async(coroutine):
    """The result of a coroutine of Zarr's asynchronous API, run to its end from synchronous code.

    It runs on an event loop of its own in a worker thread, so that it works the same from a
    script and from a notebook whose own loop is running.
    """
    with ThreadPoolExecutor(1) as worker:
        return worker.submit(asyncio.run, coroutine).result()


#: This process's open region arrays (an ingest worker writes many clips): by store path and
#: the root ``zarr.json``'s identity, which a new store at the same path changes.
_WRITE_ARRAYS: dict[tuple, dict[str, zarr.AsyncArray]] = {}


def write_clip_frames(store_path: str, row: int, blocks: dict[str, np.ndarray]) -> None:
    """Write one clip's region blocks (region -> (n_frames, h, w) uint8) at ``row``: an ingest worker's only write.

    Only the chunks that hold frames are written, each whole (zero-padded past the last frame),
    so nothing on disk is read back and merged: a resumed clip replaces a half-written chunk.
    The six regions go to Zarr in one call of its asynchronous API, which encodes and writes
    their chunks concurrently: six calls one after the other took about a quarter of a one-job
    ingest (7.4 s of 26.9 s at the benchmark's 0.3 scale). The arrays are opened once per
    process, and again when ``row`` lies past them (the coordinator grew them since).
    """
    stat = os.stat(Path(store_path, "zarr.json"))
    key = (store_path, stat.st_ino, stat.st_mtime_ns)

    async def write() -> None:
        arrays = _WRITE_ARRAYS.get(key)
        if arrays is None or any(n not in arrays for n in blocks) or any(row >= a.shape[0] for a in arrays.values()):
            group = await zarr.api.asynchronous.open_group(store_path, mode="r+")
            _WRITE_ARRAYS.clear()
            arrays = _WRITE_ARRAYS[key] = {n: await group.getitem(array_path(n)) for n in blocks}
        writes = []
        for name, block in blocks.items():
            arr = arrays[name]
            span = min(-(-len(block) // arr.chunks[1]) * arr.chunks[1], arr.shape[1])
            writes.append(arr.setitem((row, slice(0, span)), np.pad(block, ((0, span - len(block)), (0, 0), (0, 0)))))
        await asyncio.gather(*writes)

    with zarr.config.set({"array.write_empty_chunks": True}):
        run_async(write())
    for _ in blocks:
        killpoints.reached("ingest.chunk")
