"""The roistore store: region clips, clip records and the settings they were made with, in Zarr v3.

Layout (see ``schemas/FORMAT.rst``)::

    STORE/                      root group; attrs["roistore"] = header (format, settings, log)
    STORE/regions/R0 .. R5      uint8 (rows, t_max, h, w); chunks of (1, 64, h, w), zero-padded
    STORE/clips/<ds>/<subj>/<clip>   one group per clip; attrs["record"] = the clip's record

A store is written as a folder on a local path. Readers also open the same hierarchy packed in a
zip file (``roistore pack``) or behind any fsspec URL (``file://``, ``s3://``, ``zip://...``);
those open read-only.

Only the coordinating process writes the header and the records; ingest workers write nothing
but their own clip's chunks. A record is written after its chunks, so a clip whose record does
not say ``complete`` is never read as data.
"""

from __future__ import annotations

import asyncio
import json
import dataclasses
import datetime as _dt
import os
import shutil
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import zarr
import zarr.codecs
import zarr.errors
import zarr.storage
from zarr.core.sync import sync

from roi_store.store import chunkio
from roi_store.store import format as fmt
from roi_store import killpoints
from roi_store.errors import StoreError
from roi_store.ids import ClipKey
from roi_store.store.labels import MEGC2019

REGIONS = "regions"
#: zstd level of every region chunk: level 1 compresses these crops to about 1.4x (level 3:
#: 1.7x) at half the CPU time, and ingest spends more time compressing than decoding JPEGs.
ZSTD_LEVEL = 1
#: Frames per chunk along time: a clip's frames fill ceil(n_frames / TIME_CHUNK) chunks per region,
#: and the padding past them is never written (nor compressed, nor read).
TIME_CHUNK = 64
CLIPS = "clips"
COMPLETE, PENDING, SKIPPED = "complete", "pending", "skipped"


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def compressors():
    """Codecs of every region array: zstd, then a crc32c checksum over each stored chunk."""
    return [zarr.codecs.ZstdCodec(level=ZSTD_LEVEL), zarr.codecs.Crc32cCodec()]


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


def chunk_keys(arr: zarr.Array, row: int, n_frames: int) -> list[str]:
    """The store keys of the chunks that hold frames ``0 .. n_frames-1`` of clip row ``row``.

    Chunks past a clip's last frame are never written (they read as the zero fill value).
    Stores made before 0.2 hold one chunk per row (a time chunk of ``t_max``); this covers both.
    """
    step = arr.chunks[1]
    return [f"{arr.store_path.path}/c/{row}/{j}/0/0" for j in range(max(1, -(-n_frames // step)))]


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
    """An open roistore store. Use :func:`open_store` or :func:`create_store` to get one.

    ``where`` is the store's path or URL as given, for messages; ``source`` says what it is:
    ``"dir"`` (a local folder, the only kind that can be written), ``"zip"`` or ``"url"``.
    """

    def __init__(self, group: zarr.Group, where: str, mode: str, source: str = "dir"):
        self._group = group
        self.where = where
        self.mode = mode
        self.source = source
        self.header = fmt.check(dict(group.attrs), where)
        self._records: dict[str, ClipRecord] | None = None
        self._arrays: dict[str, zarr.Array] = {}  # opened region arrays (their metadata read once)
        #: Records that could not be read (filled by :meth:`records`), for ``roistore validate``.
        self.damaged: list[str] = []

    def close(self) -> None:
        """Release the underlying Zarr store (the open zip file of a packed store)."""
        self._group.store.close()

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
            paths = self._clip_group_paths()

            async def one(path):
                try:
                    return path, await self._group._async_group.getitem(path)
                except Exception as exc:  # zarr raises JSON, key and value errors for a bad document
                    return path, exc

            async def nodes():  # fetched concurrently: one request each on a bucket
                return await asyncio.gather(*(one(p) for p in paths))

            for path, node in sync(nodes()):
                if isinstance(node, Exception):
                    damaged.append(f"{path}/zarr.json is damaged ({type(node).__name__})")
                    continue
                doc = node.attrs.get("record") if isinstance(node, zarr.AsyncGroup) else None
                if not doc:
                    continue
                problem = _record_problem(doc, path)
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

    def _clip_group_paths(self) -> list[str]:
        """``clips``, ``clips/<ds>``, ``clips/<ds>/<subj>`` and every ``clips/<ds>/<subj>/<clip>`` group, from ONE
        listing of the store's keys (the groups above the clips are read to detect their damage).

        Walking the hierarchy lists every folder on its own, which a zip (a scan of all its
        member names each time) or a bucket (a request each time) makes slow.
        """
        root = self._group.store_path
        prefix = f"{root.path}/{CLIPS}/" if root.path else f"{CLIPS}/"

        async def keys() -> list[str]:
            return [k async for k in root.store.list_prefix(prefix)]

        paths = []
        for key in sync(keys()):
            parts = key[len(prefix):].split("/")
            if len(parts) <= 4 and parts[-1] == "zarr.json":  # clip groups and the groups above them
                paths.append("/".join([CLIPS, *parts[:-1]]))
        return sorted(paths)

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
        return self.clips_frames([clip_id], region)[0]

    def clips_frames(self, clip_ids: list[str], region: str) -> list[np.ndarray]:
        """Several clips' unpadded frames of one region (as :meth:`frames`), with one array handle.

        In a store folder the chunk files are read directly, on a few threads
        (:mod:`roi_store.store.chunkio`); elsewhere through Zarr, where a chunk's existence is checked
        only when its frames read back all zeros (the fill value of a chunk that was never
        written): a check per chunk would double the cost of a read.
        """
        recs = [self.clip(c) for c in clip_ids]
        if region not in self.regions:
            raise StoreError(f"invalid region {region!r}: allowed values are {', '.join(self.regions)}")
        arr = self.array(region)
        if recs and max(r.row for r in recs) >= arr.shape[0]:
            self._arrays.pop(region, None)  # another process grew the arrays since they were opened
            arr = self.array(region)
        for rec in recs:
            if rec.row >= arr.shape[0]:
                self._missing(rec, region, f"row {rec.row}")
        folder = chunkio.plain_folder(arr)
        if folder is not None:
            out = chunkio.read_clips(arr, folder, [(r.row, r.n_frames) for r in recs])
            for rec, frames in zip(recs, out):
                if isinstance(frames, chunkio.ChunkProblem):
                    key = f"{arr.store_path.path}/{frames.key}"
                    if frames.kind == "missing":
                        self._missing(rec, region, key)
                    detail = f" {frames.detail}" if frames.detail else ""
                    raise StoreError(f"clip {rec.id}: region {region} of {self.where} is {frames.kind} "
                                     f"({key}{detail}): {self._todo}")
            return out
        out = []
        for rec in recs:
            try:
                frames = arr[rec.row, : rec.n_frames]
            except Exception as exc:  # codec errors (checksum, zstd) come as several types
                raise StoreError(f"clip {rec.id}: region {region} of {self.where} is damaged ({type(exc).__name__}: "
                                 f"checksum or compression): {self._todo}") from None
            step = arr.chunks[1]
            for j, key in enumerate(chunk_keys(arr, rec.row, rec.n_frames)):
                # All fill value: real frames, or a chunk that was never written?
                if not frames[j * step:(j + 1) * step].any() and not sync(arr.store_path.store.exists(key)):
                    self._missing(rec, region, key)
            out.append(frames)
        return out

    @property
    def _todo(self) -> str:
        return f"run 'roistore validate {self.where}'; restore the store from a backup or re-ingest into a new store"

    def _missing(self, rec: ClipRecord, region: str, key: str):
        # A missing chunk would read as zeros (the fill value): silently wrong data.
        raise StoreError(f"clip {rec.id}: region {region} of {self.where} is missing its chunk ({key}): {self._todo}")

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
        if region in self._arrays:
            return self._arrays[region]
        try:
            arr = self._arrays[region] = self._group[f"{REGIONS}/{region}"]
            return arr
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
        if self.source != "dir":
            raise StoreError(_read_only_message(self.where, self.source))
        if self.mode == "r":
            raise StoreError(f"{self.where} is open read-only: open it with mode='r+' to change it")

    def update_header(self, **changes) -> None:
        """Rewrite the header with ``changes`` (only the coordinating process calls this)."""
        self._require_writable()
        header = fmt.json_safe(fmt.stamp({**self.header, **changes}))
        fmt.validate_document(header, "store", self.where)
        self._group.attrs[fmt.ATTRS_KEY] = header
        self.header = header

    def write_record(self, doc: dict) -> ClipRecord:
        """Create or replace a clip's record (validated against the clip schema).

        In a store folder the group's ``zarr.json`` is written directly, whole, with the bytes
        Zarr would write (:func:`roi_store.store.chunkio.write_group`); elsewhere through Zarr.
        """
        self._require_writable()
        doc = fmt.json_safe(doc)  # file names that are not UTF-8 become \xNN escapes
        fmt.validate_document(doc, "clip", f"{self.where} clip {doc.get('id')}")
        key = ClipKey.parse(doc["id"])
        path = _clip_path(key)
        folder = chunkio.group_folder(self._group)
        if folder is not None:
            chunkio.write_group(folder, path, {"record": doc})
        elif path in self._group:
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


def _is_url(text: str) -> bool:
    return "://" in text or "::" in text


def _read_only_message(where: str, source: str) -> str:
    if source == "zip":
        return (f"{where} is a zip archive and opens read-only: unpack it into a folder "
                f"(python -m zipfile -e {where} STORE_DIR) and write to that directory store")
    return (f"{where} is a URL and opens read-only: roistore writes only to a directory store on a local path; "
            "copy the store into a local folder to change it")


def local_store_path(path: str | Path) -> Path:
    """The local folder of a store that is going to be written.

    Raises
    ------
    StoreError
        If ``path`` is a URL, a zip archive or another file: only a folder can be written.
    """
    where = str(path)
    if isinstance(path, str) and _is_url(where):
        raise StoreError(_read_only_message(where, "url"))
    path = Path(path)
    if path.is_file():
        if zipfile.is_zipfile(path):
            raise StoreError(_read_only_message(where, "zip"))
        raise StoreError(f"{where} is a file, not a store folder: choose a folder for the store")
    return path


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
    elif isinstance(path, str) and _is_url(where):
        return Store(_open_url(where), where, "r", source="url")
    elif Path(path).is_file():
        if not zipfile.is_zipfile(path):
            raise StoreError(f"{where} is a file but not a zip archive: give a store folder, a zip made by "
                             "'roistore pack', or a URL")
        return Store(_open_zip(Path(path)), where, "r", source="zip")
    if not (Path(path) / "zarr.json").is_file():
        if Path(path).suffix.lower() == ".zip":
            raise StoreError(f"no such file {where}: check the path")
        raise StoreError(f"no roistore store at {where}: create one with 'roistore ingest {where} --dataset ... --root ...'")
    try:
        group = zarr.open_group(where, mode=mode)
    except Exception as exc:  # zarr raises a variety of types for a damaged zarr.json
        raise StoreError(f"{where} is not a readable Zarr v3 store ({type(exc).__name__}: {exc})") from None
    return Store(group, where, mode)


def _zip_prefix(names: list[str], where: str) -> str:
    """Where the store lies inside a zip: its top, or the one folder a zipped store folder makes.

    Member names that could point outside the archive (absolute, ``..``, backslashes) are
    refused: zarr reads members by key only, but such an archive was not made by
    ``roistore pack`` and may be a trap for whoever unpacks it.
    """
    for name in names:
        parts = name.split("/")
        if name.startswith("/") or "\\" in name or "\x00" in name or ".." in parts or (parts[0][1:2] == ":"):
            raise StoreError(f"{where}: zip member {name!r} has an unsafe name (absolute or with '..'): "
                             "refusing to read this archive; ask for a zip made by 'roistore pack'")
    if "zarr.json" in names:
        return ""
    # A zipped store folder ('zip -r store.zip data/store.zarr'): the one shallowest zarr.json.
    roots = [n[: -len("/zarr.json")] for n in names if n.endswith("/zarr.json")]
    depth = min((r.count("/") for r in roots), default=0)
    tops = sorted(r for r in roots if r.count("/") == depth)
    if len(tops) == 1:
        return tops[0]
    raise StoreError(f"{where} is a zip archive but holds no store at its top (no zarr.json): "
                     "make one with 'roistore pack STORE OUT.zip'")


def _open_group(zstore, prefix: str, where: str) -> zarr.Group:
    try:
        return zarr.open_group(zstore, path=prefix, mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        raise StoreError(f"no roistore store at {where} (no Zarr group there): check the path or URL") from None
    except Exception as exc:  # zarr raises a variety of types for a damaged zarr.json
        raise StoreError(f"{where} is not a readable Zarr v3 store ({type(exc).__name__}: {exc}): "
                         "ask for a new copy, made by 'roistore pack'") from None


def _open_zip(path: Path) -> zarr.Group:
    where = str(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise StoreError(f"{where} is not a readable zip archive ({exc}): ask for a new copy") from None
    prefix = _zip_prefix(names, where)
    return _open_group(zarr.storage.ZipStore(path, mode="r"), prefix, where)


def _open_url(url: str) -> zarr.Group:
    import fsspec
    from fsspec.core import split_protocol
    from fsspec.registry import known_implementations

    # A zip behind a URL is read through fsspec's zip file system, member by member.
    if split_protocol(url.split("::")[0])[0] != "zip" and url.split("::")[-1].lower().endswith(".zip"):
        url = f"zip://::{url}"
    for part in url.split("::"):
        protocol = split_protocol(part)[0] or "file"
        try:
            fsspec.get_filesystem_class(protocol)
        except ImportError as exc:
            hint = known_implementations.get(protocol, {}).get("err") or str(exc)
            raise StoreError(f"cannot open {url}: the {protocol}:// protocol needs a package that is not installed "
                             f"({hint.splitlines()[0]}): pip install it, or copy the store to a local folder") from None
        except ValueError:
            raise StoreError(f"cannot open {url}: unknown protocol {protocol!r}: use a local path, a .zip file "
                             "or an fsspec URL such as file:///path/store.zarr or s3://bucket/store.zarr") from None
    try:
        zstore = zarr.storage.FsspecStore.from_url(url, read_only=True)
    except Exception as exc:  # the file system's own errors: credentials, missing bucket, bad archive
        raise StoreError(f"cannot open {url} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}): "
                         "check the URL and your access to it") from None
    prefix = ""
    archive = getattr(zstore.fs, "sync_fs", zstore.fs)
    if hasattr(getattr(archive, "zip", None), "namelist"):
        zstore = _ArchiveStore(zstore.fs, read_only=True, path=zstore.path.strip("/"))
        if not zstore.path:
            prefix = _zip_prefix(archive.zip.namelist(), url)
    return _open_group(zstore, prefix, url)


class _ArchiveStore(zarr.storage.FsspecStore):
    """An FsspecStore over an archive file system (``zip://``), whose paths have no leading '/'.

    zarr 3.1's ``FsspecStore.list_dir`` joins an empty root path as ``/prefix`` and then cannot
    strip it from the archive's listing, so groups at the archive's top list no members.
    """

    async def list_dir(self, prefix: str):
        base = "/".join(p for p in (self.path.strip("/"), prefix.strip("/")) if p)
        try:
            entries = await self.fs._ls(base, detail=False)
        except FileNotFoundError:
            return
        for entry in entries:
            entry = entry.strip("/")
            if entry != base:
                yield entry.rsplit("/", 1)[-1]


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
        if not _pid_alive(old.name.rpartition("-")[2]):
            shutil.rmtree(old, ignore_errors=True)
    building = final.parent / f".{final.name}.creating-{os.getpid()}"
    group = zarr.open_group(str(building), mode="w")
    t_max = int(settings["t_max"])
    for region in settings["layout"]["regions"]:
        x0, y0, x1, y1 = region["box"]
        h, w = int(y1 - y0), int(x1 - x0)
        group.create_array(
            f"{REGIONS}/{region['name']}", shape=(0, t_max, h, w), chunks=(1, min(TIME_CHUNK, t_max), h, w),
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
