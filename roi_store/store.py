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
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import zarr
import zarr.codecs
from zarr.core.sync import sync

from roi_store import format as fmt
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


def chunk_key(arr: zarr.Array, row: int) -> str:
    """The store key of a region array's chunk for clip row ``row`` (one chunk per row)."""
    return f"{arr.store_path.path}/c/{row}/0/0/0"


async def _list_keys(store, prefix: str) -> list[str]:
    return [key async for key in store.list_prefix(prefix)]


def _record_problem(doc: object, path: str) -> str | None:
    """None for a record this module can use; else why not (the schema's first complaint)."""
    if isinstance(doc, dict) and _usable(doc):
        return None
    try:
        fmt.validate_document(doc, "clip", f"clip {doc.get('id', path) if isinstance(doc, dict) else path}")
    except StoreError as exc:
        return str(exc)
    return f"{path}: record is damaged"


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
        #: Records that could not be read (filled by :meth:`records`), for ``roistore validate``.
        self.damaged: list[str] = []

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
    def records(self, *, strict: bool = True) -> dict[str, ClipRecord]:
        """Every clip record in the store (complete, pending or skipped), by clip id.

        Parameters
        ----------
        strict : bool
            True: a damaged record (unreadable ``zarr.json``, a record that does not match
            ``clip.schema.json``) raises. False: damaged records are left out and listed in
            :attr:`damaged` (``roistore validate`` reports them).

        Raises
        ------
        StoreError
            If ``strict`` and a record is damaged (one line, with what to do).
        """
        if self._records is None:
            found: dict[str, ClipRecord] = {}
            damaged: list[str] = []
            for path, node in self._clip_nodes(damaged):
                doc = node.attrs.get("record") if isinstance(node, zarr.Group) else None
                if not doc:
                    continue
                problem = _record_problem(doc, f"{CLIPS}/{path}")
                if problem:
                    damaged.append(problem)
                    continue
                rec = ClipRecord.from_doc(doc)
                found[rec.id] = rec
            self._records = dict(sorted(found.items()))
            self.damaged = damaged
        if strict and self.damaged:
            more = f" (and {len(self.damaged) - 1} more)" if len(self.damaged) > 1 else ""
            raise StoreError(
                f"{self.where}: {self.damaged[0]}{more}: run 'roistore validate {self.where}' to list the "
                "damage; restore the store from a backup or re-ingest into a new store"
            )
        return self._records

    def _clip_nodes(self, damaged: list[str]) -> list[tuple[str, zarr.Group | zarr.Array]]:
        try:
            if CLIPS not in self._group:
                return []
            return list(self._group[CLIPS].members(max_depth=None))
        except Exception:  # one unreadable zarr.json fails the whole walk: go node by node
            return self._clip_nodes_one_by_one(damaged)

    def _clip_nodes_one_by_one(self, damaged: list[str]) -> list[tuple[str, zarr.Group | zarr.Array]]:
        nodes = []
        prefix = f"{self._group.store_path.path}/{CLIPS}/".lstrip("/")
        for key in sync(_list_keys(self._group.store_path.store, prefix)):
            if not key.endswith("/zarr.json"):
                continue
            path = key[len(prefix): -len("/zarr.json")]
            try:
                nodes.append((path, self._group[f"{CLIPS}/{path}"]))
            except Exception as exc:  # zarr raises JSON, key and value errors for a bad document
                damaged.append(f"{key} is damaged ({type(exc).__name__})")
        return nodes

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
        """The clip's unpadded frames of one region, uint8, shape (n_frames, h, w), in time order.

        Raises
        ------
        StoreError
            If the clip is not complete, or its chunk is missing or fails its checksum.
        """
        rec = self.clip(clip_id)
        if region not in self.regions:
            raise StoreError(f"invalid region {region!r}: allowed values are {', '.join(self.regions)}")
        arr = self.array(region)
        where = f"clip {rec.id}: region {region} of {self.where}"
        todo = f"run 'roistore validate {self.where}'; restore the store from a backup or re-ingest into a new store"
        # A missing chunk would read as zeros (the fill value): silently wrong data.
        if rec.row >= arr.shape[0] or not sync(arr.store_path.store.exists(chunk_key(arr, rec.row))):
            raise StoreError(f"{where} is missing its chunk ({chunk_key(arr, rec.row)}): {todo}")
        try:
            return arr[rec.row, : rec.n_frames]
        except Exception as exc:  # codec errors (checksum, zstd) come as several types
            raise StoreError(f"{where} is damaged ({type(exc).__name__}: checksum or compression): {todo}") from None

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
        """The padded region array itself (rows are clip records' ``row``).

        Raises
        ------
        StoreError
            If the array is missing or its metadata cannot be read.
        """
        try:
            return self._group[f"{REGIONS}/{region}"]
        except KeyError:
            state = "is missing"
        except Exception as exc:  # a damaged zarr.json: JSON, key or value errors
            state = f"is damaged ({type(exc).__name__})"
        raise StoreError(
            f"{self.where}: array {REGIONS}/{region} {state}: restore the store from a backup or re-ingest into a "
            "new store"
        )

    # --- writing (coordinator only) ---------------------------------------------------------
    def _require_writable(self) -> None:
        if self.mode == "r":
            raise StoreError(f"{self.where} is open read-only")

    def update_header(self, **changes) -> None:
        """Rewrite the header with ``changes`` (only the coordinating process calls this)."""
        self._require_writable()
        header = fmt.json_safe(fmt.stamp({**self.header, **changes}))
        fmt.validate_document(header, "store", self.where)
        self._group.attrs[fmt.ATTRS_KEY] = header
        self.header = header

    def write_record(self, doc: dict) -> ClipRecord:
        """Create or replace a clip's record (validated against the clip schema)."""
        self._require_writable()
        doc = fmt.json_safe(doc)  # file names that are not UTF-8 become \xNN escapes
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
    if Path(path).exists() and any(Path(path).iterdir()):
        raise StoreError(f"{where} exists and is not empty: choose a new store path")
    header = fmt.stamp({**settings, "created": now(), "ingests": [], "skipped": {}})
    fmt.validate_document(header, "store", where)
    group = zarr.open_group(where, mode="w")
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
    # The header goes last: a folder without it is not a store, so a crash here leaves no half-store.
    group.attrs[fmt.ATTRS_KEY] = header
    return Store(group, where, "r+")
