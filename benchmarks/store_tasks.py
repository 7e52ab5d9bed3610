"""The measured steps of the store stages, each run in a fresh interpreter by ``store_bench``.

``python -m benchmarks.store_tasks TASK JSON-ARGS``: see :func:`benchmarks.harness.run_task`.
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.harness import serve


def data_path_task(store: str, data: str, ids: list[str], repeats: int) -> dict:
    """Clips/s reading six region clips from the store, and decoding and cutting them from the source, alternated."""
    import roi_store
    from benchmarks.data import specs
    from roi_store.ingest.cut import CutSettings, cut_clip

    opened = roi_store.open_store(store)
    by_id = {s.id: s for s in specs(Path(data)) if s.id in set(ids)}
    settings = CutSettings.of(opened)

    def from_store() -> float:
        start = time.perf_counter()
        for region in opened.regions:  # as training reads them: every clip of a region at once
            opened.clips_frames(ids, region)
        return len(ids) / (time.perf_counter() - start)

    def from_source() -> float:
        start = time.perf_counter()
        for cid in ids:
            cut_clip(by_id[cid], settings)
        return len(ids) / (time.perf_counter() - start)

    from_store()  # warm the page cache and the readers
    from_source()
    out = {"store": [], "source": []}
    for _ in range(repeats):
        out["store"].append(from_store())
        out["source"].append(from_source())
    return out


if __name__ == "__main__":
    serve({"data_path": data_path_task})
