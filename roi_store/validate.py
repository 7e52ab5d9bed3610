"""Check a store against its schemas and every chunk against its checksum."""

from __future__ import annotations

import dataclasses

import numpy as np

from zarr.core.sync import sync

from roi_store import format as fmt
from roi_store.errors import RoiStoreError
from roi_store.store import COMPLETE, REGIONS, SKIPPED, Store, chunk_keys


@dataclasses.dataclass
class ValidationReport:
    """Outcome of :func:`validate_store`; ``ok`` is True when ``problems`` is empty."""

    store: str
    clips: int
    chunks: int
    problems: list[str]
    incomplete: list[str]  # pending clips: not a fault, a run to resume

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_store(store: Store) -> ValidationReport:
    """Validate the header and every record against ``schemas/``, and read every chunk.

    Reading a chunk runs zarr's crc32c codec, which rejects any chunk whose bytes changed. A
    complete clip whose chunk is missing, and a record whose row lies outside the arrays, are
    reported too, and so are records and arrays whose metadata cannot be read.
    """
    problems: list[str] = []
    chunks = 0
    records = store.records(strict=False)
    problems += store.damaged
    arrays = {}
    for name in store.regions:
        try:
            arrays[name] = store.array(name)
        except RoiStoreError as exc:
            problems.append(str(exc))
    for name, arr in arrays.items():
        expect = (store.t_max,)
        if arr.shape[1:2] != expect or arr.dtype != "uint8":
            problems.append(f"{REGIONS}/{name}: shape {arr.shape} / dtype {arr.dtype} does not match t_max {store.t_max}")
    for rec in records.values():
        try:
            fmt.validate_document(rec.data, "clip", f"clip {rec.id}")
        except RoiStoreError as exc:
            problems.append(str(exc))
            continue
        if rec.status != COMPLETE:
            continue
        for name, arr in arrays.items():
            if rec.row is None or rec.row >= arr.shape[0]:
                problems.append(f"clip {rec.id}: row {rec.row} is outside {REGIONS}/{name} ({arr.shape[0]} rows)")
                continue
            keys = chunk_keys(arr, rec.row, rec.n_frames)
            prefix = f"{arr.store_path.path}/"
            missing = [k for k in keys if not sync(arr.store_path.store.exists(k))]
            if missing:
                problems.append(f"clip {rec.id}: chunk {REGIONS}/{name}/{missing[0][len(prefix):]} is missing")
                continue
            step, parts, damaged = arr.chunks[1], [], False
            for j, key in enumerate(keys):  # chunk by chunk, to name the damaged one
                try:
                    parts.append(arr[rec.row, j * step:(j + 1) * step])
                    chunks += 1
                except Exception as exc:  # codec errors (checksum, zstd) come as several types
                    problems.append(f"clip {rec.id}: chunk {REGIONS}/{name}/{key[len(prefix):]} is damaged ({exc})")
                    damaged = True
                    break
            if damaged:
                continue
            parts.append(arr[rec.row, len(keys) * step:])  # past the clip's chunks: the zero fill value
            block = np.concatenate(parts)
            if block[rec.n_frames:].any():
                problems.append(f"clip {rec.id}: {REGIONS}/{name} has data past its {rec.n_frames} frames")
    ids = [r.id for r in records.values()]
    rows = [r.row for r in records.values() if r.row is not None]
    if len(set(rows)) != len(rows):
        problems.append("two clip records share one array row")
    incomplete = [r.id for r in records.values() if r.status not in (COMPLETE, SKIPPED)]
    return ValidationReport(store.where, len(ids), chunks, problems, incomplete)


__all__ = ["ValidationReport", "validate_store"]
