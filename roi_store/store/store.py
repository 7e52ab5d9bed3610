"""The roistore store: region clips, clip records and the settings they were made with, in Zarr v3.

Layout (see ``schemas/FORMAT.rst``)::

    STORE/                      root group; attrs["roistore"] = header (format, settings, log)
    STORE/regions/R0 .. R5      uint8 (rows, t_max, h, w); chunks of (1, 64, h, w), zero-padded
    STORE/face                  uint8 (rows, t_max, 112, 112): the aligned whole face (format 2 on)
    STORE/clips/<ds>/<subj>/<clip>   one group per clip; attrs["record"] = the clip's record
    STORE/features/<name>/      a feature set (``roistore flow``): float32 arrays face, R0 .. R5

A store is written as a folder on a local path. Readers also open the same hierarchy packed in a
zip file (``roistore pack``) or behind any fsspec URL (``file://``, ``s3://``, ``zip://...``);
those open read-only.

Only the coordinating process writes the header and the records; ingest workers write nothing
but their own clip's chunks. A record is written after its chunks, so a clip whose record does
not say ``complete`` is never read as data.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import zarr
import zarr.api.asynchronous

from roi_store import killpoints
from roi_store.errors import StoreError
from roi_store.ids import ClipKey
from roi_store.store import format as fmt
from roi_store.store.labels import MEGC2019
from roi_store.store.layout import (  # noqa: F401 -- COMPLETE, PENDING, SKIPPED: the layout's names, for callers
    CLIPS, COMPLETE, FACE, PENDING, REGIONS, SKIPPED, TIME_CHUNK, ClipRecord, array_path, chunk_keys, clip_path,
    compressors, record_problem, run_async, summary)
from roi_store.store.lock import now, pid_alive
from roi_store.store.sources import is_url, local_store_path, open_url, open_zip, read_only_message

#: Clips read by one Zarr call: Zarr fetches and decodes a call's chunks concurrently (its
#: ``async.concurrency`` setting), and a call holds its clips padded to the longest one.
READ_BATCH = 32
#: What to do about a damaged store (the end of those errors).
_RESTORE = "restore the store from a backup or re-ingest into a new store"


class Store:
    """An open roistore store. Use :func:`open_store` or :func:`create_store` to get one.

    ``where`` is the store's path or URL as given, for messages; ``source`` says what it is:
    ``"dir"`` (a local folder, the only kind that can be written), ``"zip"`` or ``"url"``.
    """

    def __init__(self, group: zarr.Group, where: str, mode: str, source: str = "dir"):
        #: The underlying Zarr root group (for the store modules only: ``runs``, ``validate``, ``share``).
        self.zgroup = group
        self.where, self.mode, self.source = where, mode, source
        self.header = fmt.check(dict(group.attrs), where)
        self._records: dict[str, ClipRecord] | None = None
        self._arrays: dict[str, zarr.Array] = {}  # opened region arrays (their metadata read once)
        #: Records that could not be read (filled by :meth:`records`), for ``roistore validate``.
        self.damaged: list[str] = []

    def close(self) -> None:
        """Release the underlying Zarr store (the open zip file of a packed store)."""
        self.zgroup.store.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- settings recorded in the store ---------------------------------------------------
    @property
    def regions(self) -> list[str]:
        """Region names, in order."""
        return [r["name"] for r in self.header["layout"]["regions"]]

    @property
    def arrays(self) -> list[str]:
        """Every per-frame clip array: the regions, and ``face`` in a store that holds face crops (format 2)."""
        return [*self.regions, *([FACE] if "face" in self.header else [])]

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
            self.damaged = []
            for path, node in self._clip_groups():
                doc = node.attrs.get("record") if isinstance(node, zarr.Group) else None
                if isinstance(node, Exception):
                    self.damaged.append(f"{path}/zarr.json is damaged ({type(node).__name__})")
                elif doc and (problem := record_problem(doc, path)):
                    self.damaged.append(problem)
                elif doc:
                    found[doc["id"]] = ClipRecord.from_doc(doc)
            self._records = dict(sorted(found.items()))
        if strict and self.damaged:
            more = f" (and {len(self.damaged) - 1} more)" if len(self.damaged) > 1 else ""
            raise StoreError(f"{self.where}: {self.damaged[0]}{more}: run 'roistore validate {self.where}' to list the "
                             f"damage; {_RESTORE}")
        return self._records

    def _clip_groups(self) -> list[tuple[str, zarr.Group | Exception]]:
        """Every group below ``clips`` (the clips and the groups above them), or why it cannot be read.

        Zarr reads the whole hierarchy in one call, fetching the groups concurrently. Only when
        that fails (a damaged ``zarr.json``) are the groups read one by one, to name each bad one.
        """
        try:
            return [(f"{CLIPS}/{path}", node) for path, node in self.zgroup[CLIPS].members(max_depth=None)]
        except Exception:  # noqa: BLE001 -- zarr raises JSON, key and value errors for a bad document
            pass
        out = []
        for key in self.stored_keys(f"{CLIPS}/"):
            parts = key.split("/")
            if 2 <= len(parts) <= 5 and parts[-1] == "zarr.json":
                path = "/".join(parts[:-1])
                try:
                    out.append((path, self.zgroup[path]))
                except Exception as exc:  # noqa: BLE001 -- as above
                    out.append((path, exc))
        return out

    def stored_keys(self, prefix: str) -> list[str]:
        """The keys of the store that begin with ``prefix`` (files, Zarr nodes or not), from one listing.

        Keys and ``prefix`` are spelled from the store's root group (``runs/a/LOCK``), wherever that
        group lies in the underlying Zarr store (a zip may hold it in a folder).

        Zarr's store API is asynchronous; the listing runs on an event loop of its own in a worker
        thread, so that it works the same from a script and from a notebook whose loop is running.
        """
        zstore = self.zgroup.store
        base = f"{self.zgroup.store_path.path}/{prefix}" if self.zgroup.store_path.path else prefix

        async def listing() -> list[str]:
            return [k async for k in zstore.list_prefix(base)]

        keys = run_async(listing())
        cut = len(base) - len(prefix)
        return sorted(k[cut:] for k in keys)

    @property
    def clips(self) -> list[ClipRecord]:
        """Complete clips, sorted by id."""
        return [r for r in self.records().values() if r.status == COMPLETE]

    def clip(self, clip_id: str) -> ClipRecord:
        """The complete clip ``clip_id``; StoreError with a hint if it is not in the store."""
        key = ClipKey.parse(clip_id)
        rec = self.records().get(key.id)
        if rec is None or rec.status != COMPLETE:
            state = "not in the store" if rec is None else rec.status
            raise StoreError(f"clip {key.id} is {state} in {self.where}: list the clips with 'roistore info --json'")
        return rec

    def frames(self, clip_id: str, region: str) -> np.ndarray:
        """The clip's unpadded frames of one region, uint8, shape (n_frames, h, w), in time order.

        Raises
        ------
        StoreError
            If the clip is not complete, or its chunk is missing or fails its checksum.
        """
        return self.clips_frames([clip_id], region)[0]

    def clips_frames(self, clip_ids: list[str], region: str) -> list[np.ndarray]:
        """Several clips' unpadded frames of one region (as :meth:`frames`), read by Zarr in batches.

        Clips of similar length share a Zarr call (:data:`READ_BATCH` at a time). A chunk whose
        frames read back all zeros, the fill value of a chunk never written, is looked up in the
        store: a missing chunk raises rather than reading as blank frames.
        """
        recs = [self.clip(c) for c in clip_ids]
        if region not in self.arrays:
            if region == FACE:
                raise StoreError(f"{self.where} is a format {self.header['format_version']} store without face crops: "
                                 f"run 'roistore upgrade {self.where}' to add them")
            raise StoreError(f"invalid region {region!r}: allowed values are {', '.join(self.arrays)}")
        arr = self.array(region)
        if recs and max(r.row for r in recs) >= arr.shape[0]:
            self._arrays.pop(region, None)  # another process grew the arrays since they were opened
            arr = self.array(region)
        for rec in recs:
            if rec.row >= arr.shape[0]:
                raise self._bad_clip(rec, region, f"is missing its chunk (row {rec.row})")
        out: list[np.ndarray] = [None] * len(recs)
        order = sorted(range(len(recs)), key=lambda i: recs[i].n_frames)
        for start in range(0, len(order), READ_BATCH):
            batch = [recs[i] for i in order[start:start + READ_BATCH]]
            longest = max(r.n_frames for r in batch)
            try:
                block = arr.get_orthogonal_selection(([r.row for r in batch], slice(0, longest)))
            except Exception as exc:  # codec errors (checksum, zstd) come as several types
                for bad in batch:  # the first clip whose frames cannot be read, to name it
                    try:
                        arr[bad.row, : bad.n_frames]
                    except Exception:  # noqa: BLE001 -- as above
                        break
                else:
                    bad = batch[0]
                state = f"is damaged ({type(exc).__name__}: checksum or compression)"
                raise self._bad_clip(bad, region, state) from None
            for i, rec, frames in zip(order[start:start + READ_BATCH], batch, block):
                self._check_written(arr, rec, region, frames[:rec.n_frames])
                out[i] = frames[:rec.n_frames]
        return out

    def _check_written(self, arr: zarr.Array, rec: ClipRecord, region: str, frames: np.ndarray) -> None:
        # A missing chunk would read as zeros (the fill value): silently wrong data.
        step, base = arr.chunks[1], f"{array_path(region)}/"
        keys = [base + key for key in chunk_keys(arr, rec.row, rec.n_frames)]
        blank = [key for j, key in enumerate(keys) if not frames[j * step:(j + 1) * step].any()]
        if blank:
            stored = set(self.stored_keys(base))
            for key in blank:
                if key not in stored:
                    raise self._bad_clip(rec, region, f"is missing its chunk ({key})")

    def _bad_clip(self, rec: ClipRecord, region: str, state: str) -> StoreError:
        return StoreError(f"clip {rec.id}: region {region} of {self.where} {state}: "
                          f"run 'roistore validate {self.where}'; {_RESTORE}")

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
            if region not in self._arrays:
                self._arrays[region] = self.zgroup[array_path(region)]
            return self._arrays[region]
        except KeyError:
            state = "is missing"
        except Exception as exc:  # a damaged zarr.json: JSON, key or value errors
            state = f"is damaged ({type(exc).__name__})"
        raise StoreError(f"{self.where}: array {array_path(region)} {state}: {_RESTORE}")

    # --- feature sets ---------------------------------------------------------------------
    def feature_sets(self) -> list[str]:
        """Names of the store's feature sets (``roistore flow``), complete or not, sorted."""
        from roi_store.store.features import feature_set_names  # features builds on this module

        return feature_set_names(self)

    def features(self, name: str):
        """The complete feature set ``name`` as arrays (:class:`roi_store.store.features.FeatureSet`).

        Raises
        ------
        StoreError
            If there is no such set, or it is not complete.
        """
        from roi_store.store.features import FeatureSet

        return FeatureSet(self, name)

    # --- writing (coordinator only) ---------------------------------------------------------
    def _require_writable(self) -> None:
        if self.source != "dir":
            raise StoreError(read_only_message(self.where, self.source))
        if self.mode == "r":
            raise StoreError(f"{self.where} is open read-only: open it with mode='r+' to change it")

    def update_header(self, **changes) -> None:
        """Rewrite the header with ``changes`` (only the coordinating process calls this)."""
        self._require_writable()
        header = fmt.json_safe(fmt.stamp({**self.header, **changes}))
        fmt.validate_document(header, "store", self.where)
        self.zgroup.attrs[fmt.ATTRS_KEY] = header
        self.header = header

    def write_record(self, doc: dict) -> ClipRecord:
        """Create or replace a clip's record (validated against the clip schema).

        Zarr writes the group's ``zarr.json`` whole (a temporary file renamed into place), so a
        killed writer leaves the old record or the new one.
        """
        self._require_writable()
        doc = fmt.json_safe(doc)  # file names that are not UTF-8 become \xNN escapes
        fmt.validate_document(doc, "clip", f"{self.where} clip {doc.get('id')}")
        path = clip_path(ClipKey.parse(doc["id"]))
        if self._records is not None and doc["id"] not in self._records:  # a new clip: nothing to read first
            self.zgroup.create_group(path, attributes={"record": doc})
        else:
            try:
                self.zgroup[path].attrs.put({"record": doc})
            except KeyError:
                self.zgroup.create_group(path, attributes={"record": doc})
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
        for name in self.arrays:
            arr = self.array(name)
            if arr.shape[0] < stop:
                arr.resize((stop, *arr.shape[1:]))
                killpoints.reached("store.resize")
        return list(range(start, stop))

    # --- summary ----------------------------------------------------------------------------
    def summary(self) -> dict:
        """What ``roistore info --json`` prints (a stable interface; see the docs, Command reference)."""
        return summary(self)


def open_store(path: str | Path, mode: str = "r") -> Store:
    """Open an existing store.

    Parameters
    ----------
    path : str or Path
        The store's folder; a zip file holding the store (``roistore pack``); or an fsspec URL
        (``file:///data/store.zarr``, ``s3://bucket/store.zarr``, ``s3://bucket/store.zip``,
        ``zip://::file:///data/store.zip``). A URL's protocol package (s3fs, gcsfs, ...) must be
        installed.
    mode : {"r", "r+"}
        Read-only (default) or read-write. Only a folder opens read-write.

    Raises
    ------
    StoreError
        If there is no store at ``path``, it is not a roistore store, its protocol's package is
        missing, or ``mode`` is "r+" for a zip file or a URL.
    FormatVersionError
        If the store's format is newer than this roistore reads.
    """
    if mode not in ("r", "r+"):
        raise StoreError(f"invalid mode {mode!r}: allowed values are 'r' and 'r+'")
    where = str(path)
    if mode == "r+":
        path = local_store_path(path)
    elif isinstance(path, str) and is_url(where):
        return Store(open_url(where), where, "r", source="url")
    elif Path(path).is_file():
        if not zipfile.is_zipfile(path):
            raise StoreError(f"{where} is a file but not a zip archive: give a store folder, a zip made by "
                             "'roistore pack', or a URL")
        return Store(open_zip(Path(path)), where, "r", source="zip")
    if not (Path(path) / "zarr.json").is_file():
        if Path(path).suffix.lower() == ".zip":
            raise StoreError(f"no such file {where}: check the path")
        raise StoreError(f"no roistore store at {where}: create one with "
                         f"'roistore ingest {where} --dataset ... --root ...'")
    try:
        group = zarr.open_group(where, mode=mode)
    except Exception as exc:  # zarr raises a variety of types for a damaged zarr.json
        raise StoreError(f"{where} is not a readable Zarr v3 store ({type(exc).__name__}: {exc})") from None
    return Store(group, where, mode)


def create_clip_array(group: zarr.Group, path: str, t_max: int, h: int, w: int, rows: int = 0) -> zarr.Array:
    """An empty per-frame clip array (a region's, or the face crops'): uint8, zero-padded clip rows."""
    return group.create_array(path, shape=(rows, t_max, h, w), chunks=(1, min(TIME_CHUNK, t_max), h, w),
                              dtype="uint8", fill_value=0, compressors=compressors(),
                              dimension_names=("clip", "frame", "y", "x"))


def create_store(path: str | Path, settings: dict) -> Store:
    """Create an empty store with ``settings`` (t_max, region_scheme, layout, views, relabel, ...).

    Raises
    ------
    StoreError
        If something already exists at ``path``.
    """
    where = str(path)
    final = local_store_path(path)
    if final.exists() and any(final.iterdir()):
        raise StoreError(f"{where} exists and is not empty: choose a new store path")
    header = fmt.stamp({**settings, "created": now(), "ingests": [], "skipped": {}})
    fmt.validate_document(header, "store", where)
    # Built beside its place and renamed into it: a process killed while creating leaves no
    # half-store at ``path``, only a hidden folder that the next create removes.
    final.parent.mkdir(parents=True, exist_ok=True)
    for old in final.parent.glob(f".{final.name}.creating-*"):
        if not pid_alive(old.name.rpartition("-")[2]):
            shutil.rmtree(old, ignore_errors=True)
    building = final.parent / f".{final.name}.creating-{os.getpid()}"
    group = zarr.open_group(str(building), mode="w")
    t_max = int(settings["t_max"])
    for region in settings["layout"]["regions"]:
        x0, y0, x1, y1 = region["box"]
        h, w = int(y1 - y0), int(x1 - x0)
        create_clip_array(group, array_path(region["name"]), t_max, h, w)
    if "face" in settings:
        side = int(settings["face"]["size"])
        create_clip_array(group, FACE, t_max, side, side)
    group.require_group(CLIPS)
    group.attrs[fmt.ATTRS_KEY] = header
    killpoints.reached("store.create")
    try:
        if final.exists():
            final.rmdir()  # empty (checked above)
        os.rename(building, final)
    except OSError as exc:
        shutil.rmtree(building, ignore_errors=True)
        raise StoreError(f"{where} was created by another process meanwhile ({exc.strerror}): "
                         "re-run to append to it") from None
    return Store(zarr.open_group(where, mode="r+"), where, "r+")
