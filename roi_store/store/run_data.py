"""A run's arrays, models and markers, written by the process (or fold worker) that owns them.

:class:`RunData` is what a fold task writes through: its embedding chunks, its models (checksummed
``.keras`` bytes, never pickled objects), its fold markers, checkpoints and heartbeat. The run's
layout and documents are :mod:`roi_store.store.runs`; its plan, commit and failure are written by
the lock holder only (:class:`roi_store.store.run_writer.RunWriter`).
"""

from __future__ import annotations

import numpy as np
import zarr
import zarr.codecs
import zarr.errors

from roi_store import killpoints
from roi_store.errors import StoreError
from roi_store.store import format as fmt
from roi_store.store.layout import compressors, run_async
from roi_store.store.runs import FOLDS, HEAD, HEARTBEAT, digest, run_group
from roi_store.store.store import Store


def put_bytes(group: zarr.Group, path: str, data: bytes) -> str:
    """Store a file's bytes as a checksummed uint8 array (models; never pickled objects); its digest."""
    arr = np.frombuffer(data, dtype=np.uint8)
    # Trained weights do not compress: checksum only, in 8 MiB chunks.
    group.create_array(path, shape=arr.shape, chunks=(min(len(arr), 1 << 23),), dtype="uint8",
                       compressors=[zarr.codecs.Crc32cCodec()], overwrite=True)[:] = arr
    return digest(data)


class RunData:
    """A run's arrays, models and fold markers (or those of a part of it, such as its final model).

    The method's fold tasks read and write a run through this handle, never through its Zarr
    group: what they write is chunks, models and their own fold's marker, written last.
    """

    def __init__(self, group: zarr.Group, where: str):
        self._group, self.where = group, where

    @classmethod
    def open(cls, store: Store, name: str) -> RunData:
        """The run ``name`` of ``store``; StoreError with what to do if there is no such run."""
        return cls(run_group(store, name), f"run {name!r} of {store.where}")

    def part(self, name: str, *, fresh: bool = False) -> RunData:
        """The group ``name`` below the run (``final``); ``fresh`` replaces whatever it held."""
        if fresh:
            self._group.create_group(name, overwrite=True)
        elif name not in self._group:
            raise StoreError(f"{self.where} has no {name} group: re-run the command that makes it")
        return RunData(self._group[name], f"{self.where} ({name})")

    def has(self, path: str) -> bool:
        return path in self._group

    def document(self, key: str, path: str = "") -> dict | None:
        """``attrs[key]`` of the group ``path`` below the run, or None."""
        node = self._group.get(path) if path else self._group
        doc = node.attrs.get(key) if node is not None else None
        return dict(doc) if doc is not None else None

    def write_document(self, key: str, doc: dict) -> None:
        self._group.attrs[key] = doc

    def write_heartbeat(self, doc: dict) -> None:
        """Replace the run's heartbeat (group ``heartbeat``, attribute ``heartbeat``; ``schemas/FORMAT.rst``).

        The one document of a run rewritten in place, by whichever process trains the run: Zarr
        writes the whole ``zarr.json`` beside the old one and renames it into place, so a reader
        finds the old heartbeat or the new one, and the last of two writers wins.
        """
        doc = {**doc, "format_version": fmt.FORMAT_VERSION}
        fmt.validate_document(doc, "run.heartbeat", f"{self.where} heartbeat")
        try:
            node = self._group.require_group(HEARTBEAT)
        except zarr.errors.ContainsGroupError:  # another worker made it meanwhile
            node = self._group[HEARTBEAT]
        node.attrs.put({HEARTBEAT: doc})

    def heartbeat(self) -> dict | None:
        """The run's latest heartbeat, or None."""
        try:
            return self.document(HEARTBEAT, HEARTBEAT)
        except Exception:  # noqa: BLE001 -- being replaced, or damaged: it is optional
            return None

    def markers(self, stage: str) -> int:
        """How many folds of ``stage`` have their marker (one listing of the folder; no document read)."""
        base = FOLDS if stage == "embed" else f"{HEAD}/{FOLDS}"
        prefix = f"{self._group.path}/{base}/"

        async def listing() -> list[str]:
            return [key async for key in self._group.store.list_prefix(prefix)]

        keys = run_async(listing())
        return len({k[len(prefix):].split("/")[0] for k in keys
                    if k.endswith("/zarr.json") and k[len(prefix):].split("/")[0].isdigit()
                    and k.count("/") == prefix.count("/") + 1})

    def embedding_arrays(self, regions: list[str], n_folds: int, n_clips: int, t_max: int, dim: int) -> None:
        """``embeddings/<region>`` float16 (folds, clips, t_max, dim), one chunk per fold; existing ones kept."""
        for r in regions:
            if f"embeddings/{r}" in self._group:
                continue
            self._group.create_array(f"embeddings/{r}", shape=(n_folds, n_clips, t_max, dim),
                                     chunks=(1, n_clips, t_max, dim), dtype="float16", fill_value=0,
                                     compressors=compressors(), dimension_names=("fold", "clip", "frame", "feature"))
            killpoints.reached("embed.arrays")

    def embeddings(self, region: str, fold: int) -> np.ndarray:
        """Fold ``fold``'s embeddings of ``region``: float16 (clips, t_max, dim)."""
        return self._group[f"embeddings/{region}"][fold]

    def write_embeddings(self, region: str, fold: int, block: np.ndarray) -> None:
        self._group[f"embeddings/{region}"][fold] = block

    def put_model(self, path: str, data: bytes) -> str:
        """Store a model file's bytes at ``path`` (``models/cnn/<k>/<region>``, ``models/head/<k>``); its digest."""
        return put_bytes(self._group, path, data)

    def model(self, path: str) -> bytes:
        if path not in self._group:
            raise StoreError(f"model {path} is missing from run {self._group.attrs.get('run', {}).get('name')}: "
                             "re-run the command that makes it")
        return self._group[path][:].tobytes()

    def put_checkpoint(self, path: str, data: bytes) -> None:
        """Replace the checkpoint at ``path`` (``checkpoints/cnn/<folds>``); its digest is written last, so
        a checkpoint cut short by a kill is never read back."""
        put_bytes(self._group, path, data)
        self._group[path].attrs["sha256"] = digest(data)

    def checkpoint(self, path: str) -> bytes | None:
        """The checkpoint at ``path``, or None (none, or one whose writing was cut short)."""
        if path not in self._group:
            return None
        arr = self._group[path]
        want = arr.attrs.get("sha256")
        try:
            data = arr[:].tobytes()
        except Exception:  # noqa: BLE001 -- a chunk cut short: start the step afresh
            return None
        return data if want is not None and digest(data) == want else None

    def drop(self, path: str) -> None:
        """Delete ``path`` below the run (a spent checkpoint), if it is there."""
        if path in self._group:
            del self._group[path]

    def mark_fold(self, stage: str, index: int, doc: dict) -> None:
        """Mark fold ``index`` of ``stage`` done: after its chunks and models, one document, written once."""
        doc = {**doc, "format_version": fmt.FORMAT_VERSION}
        fmt.validate_document(doc, "run.fold", f"run fold {index}")
        path = f"{FOLDS}/{index}" if stage == "embed" else f"{HEAD}/{FOLDS}/{index}"
        self._group.create_group(path, overwrite=True, attributes={"fold": doc})
        killpoints.reached(f"{stage}.fold")

    def fold_marker(self, stage: str, index: int) -> dict:
        """Fold ``index``'s marker of ``stage`` (empty if there is none)."""
        return self.document("fold", f"{FOLDS}/{index}" if stage == "embed" else f"{HEAD}/{FOLDS}/{index}") or {}
