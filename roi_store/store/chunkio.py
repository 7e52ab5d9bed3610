"""Region chunks read and written, and group ``zarr.json`` files written, straight as a folder store's files.

Reading or writing one chunk through Zarr costs about 2.4 ms here, nearly all of it the round
trip to Zarr's I/O event loop; decompressing a chunk is a fraction of that. For a store folder
whose region arrays use exactly the codecs roistore writes (``bytes``, ``zstd``, ``crc32c``;
see ``schemas/FORMAT.rst``), :func:`read_clips` reads each chunk file itself, checks its
crc32c and decompresses it on a few threads (zstd releases the GIL), and :func:`write_clip`
encodes a clip's chunks the same way Zarr does and writes each one atomically (a temporary file
renamed into place, so a killed writer never leaves half a chunk). Any other array (a zip, a
URL, other codecs or chunk shapes) is read and written by Zarr (:func:`plain_folder` returns
None for it); both paths give the same bytes, frames and errors.

Groups' ``zarr.json`` files (clip records) are written the same way by :func:`write_group`,
byte for byte as Zarr writes them: through Zarr, a record costs about 3 ms of event-loop round
trips (does the group exist, then write it), several times the cost of the file itself.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import google_crc32c
import numpy as np
import zarr
import zarr.storage
from numcodecs.zstd import Zstd

#: Suffix of a chunk or ``zarr.json`` being written (``.<name>.<pid>.tmp`` beside it); a writer
#: killed mid-write leaves one behind, which no reader looks at and ``roistore pack`` leaves out.
TEMP_SUFFIX = ".tmp"
#: Most threads one read uses (each decompresses its own chunks).
MAX_THREADS = 4


class ChunkProblem(Exception):
    """A chunk that is missing (``missing``) or fails its checksum or decompression (``damaged``)."""

    def __init__(self, kind: str, key: str, detail: str = ""):
        super().__init__(f"{kind}: {key} {detail}".strip())
        self.kind, self.key, self.detail = kind, key, detail


def plain_folder(arr: zarr.Array) -> Path | None:
    """The folder holding ``arr``'s chunk files when they can be read directly, else None.

    That is: a local folder store, no storage transformers or sharding, uint8, one chunk per
    row and frame (chunks of ``(1, T, h, w)``), and the codecs ``bytes``, ``zstd``, ``crc32c``.
    """
    folder = _local_folder(arr)
    if folder is None:
        return None
    meta = arr.metadata
    if getattr(meta, "zarr_format", None) != 3 or meta.storage_transformers:
        return None
    try:
        codecs = [c.to_dict() for c in meta.codecs]
    except Exception:  # noqa: BLE001 -- any codec we cannot describe is not ours
        return None
    names = [c.get("name") for c in codecs]
    if names != ["bytes", "zstd", "crc32c"] or str(arr.dtype) != "uint8" or len(arr.shape) != 4:
        return None
    if arr.chunks[0] != 1 or tuple(arr.chunks[2:]) != tuple(arr.shape[2:]):
        return None
    return folder


def group_folder(group: zarr.Group) -> Path | None:
    """The folder of ``group`` when it is a Zarr v3 group in a writable local folder store, else None.

    Groups below it can then be written with :func:`write_group`.
    """
    folder = _local_folder(group)
    if folder is None or group.store_path.store.read_only or group.metadata.zarr_format != 3:
        return None
    return folder


def _local_folder(node: zarr.Array | zarr.Group) -> Path | None:
    store = node.store_path.store
    if not isinstance(store, zarr.storage.LocalStore):
        return None
    return Path(store.root) / node.store_path.path


def read_clips(arr: zarr.Array, folder: Path, rows: list[tuple[int, int]], threads: int | None = None) -> list:
    """Each ``(row, n_frames)``'s frames ``0 .. n_frames-1`` as a uint8 array (n_frames, h, w).

    A clip whose chunk is missing or damaged comes back as a :class:`ChunkProblem` in its
    place (raised by the caller, which knows the clip's id).
    """
    step, (h, w) = arr.chunks[1], arr.shape[2:]
    chunk_bytes = step * h * w
    outs, jobs = [], []
    for row, n in rows:
        count = max(1, -(-n // step))
        out = np.empty((count * step, h, w), dtype=np.uint8)
        outs.append(out)
        jobs += [(len(outs) - 1, arr.metadata.encode_chunk_key((row, j, 0, 0)), out[j * step:(j + 1) * step])
                 for j in range(count)]
    problems: dict[int, ChunkProblem] = {}
    codec = Zstd()

    def one(job):
        index, key, view = job
        try:
            with open(folder / key, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return index, ChunkProblem("missing", key)
        except OSError as exc:
            return index, ChunkProblem("unreadable", key, f"({exc.strerror or type(exc).__name__})")
        if len(raw) < 4 or np.uint32(_crc32c(raw)).tobytes() != raw[-4:]:
            return index, ChunkProblem("damaged", key, "(checksum)")
        try:
            data = codec.decode(np.frombuffer(raw, dtype=np.uint8)[:-4])
        except Exception as exc:  # noqa: BLE001 -- zstd reports a bad frame as several types
            return index, ChunkProblem("damaged", key, f"(compression: {type(exc).__name__})")
        if len(data) != chunk_bytes:
            return index, ChunkProblem("damaged", key, f"({len(data)} bytes, not {chunk_bytes})")
        view[...] = np.frombuffer(data, dtype=np.uint8).reshape(view.shape)
        return index, None

    threads = min(threads or _cores(), MAX_THREADS, len(jobs))
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(one, jobs))
    else:
        results = [one(j) for j in jobs]
    for index, problem in results:
        if problem is not None and index not in problems:
            problems[index] = problem
    return [problems.get(i, out[:n]) for i, (out, (_, n)) in enumerate(zip(outs, rows))]


def write_clip(arr: zarr.Array, folder: Path, row: int, block: np.ndarray, level: int) -> None:
    """Write ``block`` (n_frames, h, w) as row ``row``'s chunks ``0 .. ceil(n / T) - 1``, each whole.

    The last chunk is zero-padded past the clip's last frame; chunks past it are not written
    (they read as the fill value). ``level`` is the zstd level.
    """
    step = arr.chunks[1]
    codec = Zstd(level=level)
    for j in range(max(1, -(-len(block) // step))):
        part = block[j * step:(j + 1) * step]
        if len(part) < step:
            part = np.concatenate([part, np.zeros((step - len(part), *part.shape[1:]), part.dtype)])
        body = codec.encode(np.ascontiguousarray(part, dtype=np.uint8))
        # The row's first chunk makes its folders (a check per chunk is slow).
        _write_whole(folder / arr.metadata.encode_chunk_key((row, j, 0, 0)),
                     [body, np.uint32(google_crc32c.value(body)).tobytes()])


def group_json(attributes: dict) -> bytes:
    """A Zarr v3 group's ``zarr.json`` holding ``attributes``, exactly as Zarr writes it.

    That is ``GroupMetadata.to_buffer_dict`` of zarr 3.1: ``json.dumps`` of these three keys in
    this order, with the configured ``json_indent``, non-ASCII characters escaped, NaN and
    infinities allowed.
    """
    doc = {"attributes": attributes, "zarr_format": 3, "node_type": "group"}
    return json.dumps(doc, indent=zarr.config.get("json_indent"), allow_nan=True).encode()


def write_group(folder: Path, path: str, attributes: dict) -> None:
    """Create or replace the group ``path`` below the group ``folder``: its ``zarr.json``, whole.

    The groups between ``folder`` and ``path`` that have no ``zarr.json`` are made first, with
    no attributes (as Zarr's ``create_group`` makes them); one that exists is left as it is.
    They are looked for only when ``path``'s folder is missing: it is made after them, so an
    existing folder always has its groups above it. ``attributes`` replace the group's
    attributes whole.
    """
    target = folder / path / "zarr.json"
    body = group_json(attributes)
    try:
        _write_whole(target, [body], make_folder=False)
    except FileNotFoundError:  # a new group
        parts = path.split("/")
        for depth in range(1, len(parts)):
            above = folder.joinpath(*parts[:depth], "zarr.json")
            if not above.exists():
                _write_whole(above, [group_json({})])
        _write_whole(target, [body])


def _write_whole(path: Path, parts: list[bytes], make_folder: bool = True) -> None:
    """Write ``parts`` as the file ``path``: a temporary file beside it, renamed into place.

    A reader sees the old file or the whole new one, never half of it. The folder is made only
    when the temporary file cannot be opened for want of it (a check per file is slow); with
    ``make_folder`` false, FileNotFoundError is raised instead.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")
    try:
        try:
            f = open(tmp, "wb")
        except FileNotFoundError:
            if not make_folder:
                raise
            os.makedirs(path.parent, exist_ok=True)
            f = open(tmp, "wb")
        with f:
            for part in parts:
                f.write(part)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _crc32c(raw: bytes) -> int:
    return google_crc32c.value(np.frombuffer(raw, dtype=np.uint8)[:-4])


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
