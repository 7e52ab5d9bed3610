"""The roistore store: region clips, clip records and the settings they were made with, in Zarr v3.

Layout (see ``schemas/FORMAT.rst``)::

    STORE/                      root group; attrs["roistore"] = header (format, settings, log)
    STORE/regions/R0 .. R5      uint8 (rows, t_max, h, w); one chunk per clip row, zero-padded
    STORE/clips/<ds>/<subj>/<clip>   one group per clip; attrs["record"] = the clip's record

Only the coordinating process writes the header and the records; ingest workers write nothing
but their own clip's chunks. A record is written after its chunks, so a clip whose record does
not say ``complete`` is never read as data.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import shutil
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import zarr
import zarr.codecs

from roi_store import format as fmt
from roi_store import killpoints
from roi_store.errors import StoreError
from roi_store.ids import ClipKey
from roi_store.labels import MEGC2019

REGIONS = "regions"
CLIPS = "clips"
COMPLETE, PENDING, SKIPPED = "complete", "pending", "skipped"


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def compressors():
    """Codecs of every region array: zstd, then a crc32c checksum over each stored chunk."""
    return [zarr.codecs.ZstdCodec(level=3), zarr.codecs.Crc32cCodec()]


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


def _members(group: zarr.Group):
    """Every node below ``group``, quietly passing over files that are not nodes.

    A process killed while writing a document leaves its temporary file beside it; Zarr warns
    about each such file, but it is neither data nor damage.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Object at .* is not recognized", category=UserWarning)
        return list(group.members(max_depth=None))


def _clip_path(key: ClipKey) -> str:
    return f"{CLIPS}/{key.dataset}/{key.subject}/{key.clip}"


class Store:
    """An open roistore store. Use :func:`open_store` or :func:`create_store` to get one."""

    def __init__(self, group: zarr.Group, where: str, mode: str):
        self._group = group
        self.where = where
        self.mode = mode
        self.header = fmt.check(dict(group.attrs), where)
        self._records: dict[str, ClipRecord] | None = None

    # --- settings recorded in the store ---------------------------------------------------
    @property
    def regions(self) -> list[str]:
        """Region names, in order."""
        return [r["name"] for r in self.header["layout"]["regions"]]

    @property
    def t_max(self) -> int:
        return int(self.header["t_max"])

    @property
    def views(self) -> dict:
        return self.header["views"]

    # --- records --------------------------------------------------------------------------
    def records(self) -> dict[str, ClipRecord]:
        """Every clip record in the store (complete, pending or skipped), by clip id."""
        if self._records is None:
            found: dict[str, ClipRecord] = {}
            if CLIPS in self._group:
                for _, node in _members(self._group[CLIPS]):
                    doc = node.attrs.get("record") if isinstance(node, zarr.Group) else None
                    if doc:
                        rec = ClipRecord.from_doc(doc)
                        found[rec.id] = rec
            self._records = dict(sorted(found.items()))
        return self._records

    @property
    def clips(self) -> list[ClipRecord]:
        """Complete clips, sorted by id."""
        return [r for r in self.records().values() if r.status == COMPLETE]

    def clip(self, clip_id: str) -> ClipRecord:
        """The complete clip ``clip_id``; StoreError with a hint if it is not in the store."""
        key = ClipKey.parse(clip_id)
        rec = self.records().get(key.id)
        if rec is None or rec.status != COMPLETE:
            state = "not in the store" if rec is None else f"{rec.status}"
            raise StoreError(f"clip {key.id} is {state} in {self.where}: list the clips with 'roistore info --json'")
        return rec

    def frames(self, clip_id: str, region: str) -> np.ndarray:
        """The clip's unpadded frames of one region, uint8, shape (n_frames, h, w), in time order."""
        rec = self.clip(clip_id)
        if region not in self.regions:
            raise StoreError(f"invalid region {region!r}: allowed values are {', '.join(self.regions)}")
        return self._group[f"{REGIONS}/{region}"][rec.row, : rec.n_frames]

    @property
    def zgroup(self) -> zarr.Group:
        """The underlying Zarr root group (for roistore's own modules)."""
        return self._group

    def view_clips(self, view: str = MEGC2019) -> list[ClipRecord]:
        """Complete clips that have a label in ``view``, sorted by id."""
        if view not in self.views:
            raise StoreError(f"invalid view {view!r}: this store defines {', '.join(sorted(self.views))}")
        return [c for c in self.clips if c.labels.get(view)]

    def array(self, region: str) -> zarr.Array:
        """The padded region array itself (rows are clip records' ``row``)."""
        return self._group[f"{REGIONS}/{region}"]

    # --- writing (coordinator only) ---------------------------------------------------------
    def _require_writable(self) -> None:
        if self.mode == "r":
            raise StoreError(f"{self.where} is open read-only")

    def update_header(self, **changes) -> None:
        """Rewrite the header with ``changes`` (only the coordinating process calls this)."""
        self._require_writable()
        header = fmt.stamp({**self.header, **changes})
        fmt.validate_document(header, "store", self.where)
        self._group.attrs[fmt.ATTRS_KEY] = header
        self.header = header

    def write_record(self, doc: dict) -> ClipRecord:
        """Create or replace a clip's record (validated against the clip schema)."""
        self._require_writable()
        fmt.validate_document(doc, "clip", f"{self.where} clip {doc.get('id')}")
        key = ClipKey.parse(doc["id"])
        path = _clip_path(key)
        if path in self._group:
            self._group[path].attrs["record"] = doc
        else:
            self._group.create_group(path, attributes={"record": doc})
        rec = ClipRecord.from_doc(doc)
        if self._records is not None:
            self._records[rec.id] = rec
        return rec

    def reserve_rows(self, n: int) -> list[int]:
        """Grow every region array by ``n`` rows; return the new row numbers."""
        self._require_writable()
        # Rows follow the highest row any record holds, so a resumed run reuses nothing twice.
        used = [r.row for r in self.records().values() if r.row is not None]
        start = max(used, default=-1) + 1
        stop = start + n
        for name in self.regions:
            arr = self.array(name)
            if arr.shape[0] < stop:
                arr.resize((stop, *arr.shape[1:]))
                killpoints.reached("store.resize")
        return list(range(start, stop))

    # --- summary ----------------------------------------------------------------------------
    def summary(self) -> dict:
        """What ``roistore info --json`` prints (a stable interface; see README)."""
        clips = self.clips
        out: dict = {
            "store": self.where,
            "format_version": self.header["format_version"],
            "clips": len(clips),
            "subjects": len({(c.dataset, c.subject) for c in clips}),
            "frames": int(sum(c.n_frames for c in clips)),
            "region_scheme": self.header["region_scheme"],
            "regions": self.regions,
            "t_max": self.t_max,
            "datasets": {},
            "views": {},
            "skipped": [],
            "pending": [r.id for r in self.records().values() if r.status == PENDING],
        }
        by_ds = defaultdict(list)
        for c in clips:
            by_ds[c.dataset].append(c)
        for ds, items in sorted(by_ds.items()):
            out["datasets"][ds] = {
                "clips": len(items),
                "subjects": len({c.subject for c in items}),
                "frames": int(sum(c.n_frames for c in items)),
                "emotions": dict(sorted(Counter(c.emotion for c in items).items())),
            }
        for name, view in self.views.items():
            members = [c for c in clips if c.labels.get(name)]
            vds = {}
            for ds in sorted({c.dataset for c in members}):
                sub = [c for c in members if c.dataset == ds]
                vds[ds] = _view_counts(sub, name, view["classes"])
            out["views"][name] = {**_view_counts(members, name, view["classes"]), "datasets": vds}
        for r in self.records().values():
            if r.status == SKIPPED:
                out["skipped"].append({"id": r.id, "reason": r.data.get("reason", ""), "source": r.data.get("source", "")})
        for items in self.header.get("skipped", {}).values():
            out["skipped"].extend(items)
        return out


def _view_counts(clips: list[ClipRecord], view: str, classes: list[str]) -> dict:
    counts = Counter(c.labels[view] for c in clips)
    return {
        "clips": len(clips),
        "subjects": len({(c.dataset, c.subject) for c in clips}),
        "classes": {k: counts.get(k, 0) for k in classes},
    }


def open_store(path: str | Path, mode: str = "r") -> Store:
    """Open an existing store.

    Parameters
    ----------
    path : str or Path
        The store's folder.
    mode : {"r", "r+"}
        Read-only (default) or read-write.

    Raises
    ------
    StoreError
        If there is no store at ``path`` or it is not a roistore store.
    FormatVersionError
        If the store's format is newer than this roistore reads.
    """
    if mode not in ("r", "r+"):
        raise StoreError(f"invalid mode {mode!r}: allowed values are 'r' and 'r+'")
    where = str(path)
    if not (Path(path) / "zarr.json").is_file():
        raise StoreError(f"no roistore store at {where}: create one with 'roistore ingest {where} --dataset ... --root ...'")
    try:
        group = zarr.open_group(where, mode=mode)
    except Exception as exc:  # zarr raises a variety of types for a damaged zarr.json
        raise StoreError(f"{where} is not a readable Zarr v3 store ({type(exc).__name__}: {exc})") from None
    return Store(group, where, mode)


def create_store(path: str | Path, settings: dict) -> Store:
    """Create an empty store with ``settings`` (t_max, region_scheme, layout, views, relabel, ...).

    Raises
    ------
    StoreError
        If something already exists at ``path``.
    """
    where = str(path)
    final = Path(path)
    if final.exists() and any(final.iterdir()):
        raise StoreError(f"{where} exists and is not empty: choose a new store path")
    header = fmt.stamp({**settings, "created": now(), "ingests": [], "skipped": {}})
    fmt.validate_document(header, "store", where)
    # Built beside its place and renamed into it: a process killed while creating leaves no
    # half-store at ``path``, only a hidden folder that the next create removes.
    final.parent.mkdir(parents=True, exist_ok=True)
    for old in final.parent.glob(f".{final.name}.creating-*"):
        if not _pid_alive(old.name.rpartition("-")[2]):
            shutil.rmtree(old, ignore_errors=True)
    building = final.parent / f".{final.name}.creating-{os.getpid()}"
    group = zarr.open_group(str(building), mode="w")
    t_max = int(settings["t_max"])
    for region in settings["layout"]["regions"]:
        x0, y0, x1, y1 = region["box"]
        h, w = int(y1 - y0), int(x1 - x0)
        group.create_array(
            f"{REGIONS}/{region['name']}", shape=(0, t_max, h, w), chunks=(1, t_max, h, w),
            dtype="uint8", fill_value=0, compressors=compressors(),
            dimension_names=("clip", "frame", "y", "x"),
        )
    group.require_group(CLIPS)
    group.attrs[fmt.ATTRS_KEY] = header
    killpoints.reached("store.create")
    try:
        if final.exists():
            final.rmdir()  # empty (checked above)
        os.rename(building, final)
    except OSError as exc:
        shutil.rmtree(building, ignore_errors=True)
        raise StoreError(f"{where} was created by another process meanwhile ({exc.strerror}): re-run to append to it") from None
    return Store(zarr.open_group(where, mode="r+"), where, "r+")


def _pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
