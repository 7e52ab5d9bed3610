"""The store's layout: where region arrays and clip records lie, how chunks are cut and coded, what a record holds."""

from __future__ import annotations

import dataclasses
from collections import Counter

import zarr
import zarr.codecs

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
    """What ``roistore info --json`` prints for ``store`` (a stable interface; see README)."""
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
    return out


def _view_counts(clips: list[ClipRecord], view: str, classes: list[str]) -> dict:
    counts = Counter(c.labels[view] for c in clips)
    return {
        "clips": len(clips),
        "subjects": len({(c.dataset, c.subject) for c in clips}),
        "classes": {k: counts.get(k, 0) for k in classes},
    }
