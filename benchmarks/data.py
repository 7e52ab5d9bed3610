"""The benchmarks' inputs: the scaled megc2019 synthetic preset and the store ingested from it."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

#: Reader name -> the dataset root inside a ``roistore synth`` folder.
ROOTS = {"casme2": "CASME2/CASME2_RAW_selected", "samm": "SAMM/SAMM", "smic": "SMIC/HS"}


def dataset(out: Path, scale: float, seed: int = 0) -> Path:
    """The synthetic megc2019 data at ``scale``, generated once and reused while its settings match.

    The preset keeps a seeded random share of its clips, so for one seed a smaller scale's
    clips are a subset of a larger one's.
    """
    from roi_store.synth import generate

    data = Path(out) / f"data-{scale:g}"
    truth = data / "synth.json"
    if truth.exists():
        meta = json.loads(truth.read_text())
        if meta.get("preset") == "megc2019" and meta.get("seed") == seed and meta["overrides"].get("scale") == scale:
            return data
    shutil.rmtree(data, ignore_errors=True)
    generate(data, preset="megc2019", seed=seed, scale=scale, jobs=2)
    return data


def datasets(data: Path) -> list[tuple[str, str]]:
    """(reader, root relative to ``data``) of the datasets the synthetic folder holds clips of."""
    truth = json.loads((Path(data) / "synth.json").read_text())
    return [(name, ROOTS[name]) for name in ROOTS if truth["datasets"].get(name, {}).get("clips")]


def summary(data: Path) -> dict:
    """Clips, frames and composite clips of the synthetic folder."""
    truth = json.loads((Path(data) / "synth.json").read_text())
    return {"clips": len(truth["clips"]), "frames": truth["frames"],
            "composite_clips": sum(d["composite"]["clips"] for d in truth["datasets"].values()),
            "datasets": {k: {"clips": v["clips"], "frames": v["frames"]} for k, v in truth["datasets"].items()}}


def specs(data: Path) -> list:
    """Every clip the readers find in ``data`` (ClipSpec objects, in reader order)."""
    from roi_store.ingest.datasets import get_reader
    from roi_store.ingest.datasets.base import ClipSpec

    return [s for name, rel in datasets(data) for s in get_reader(name).scan(Path(data) / rel)
            if isinstance(s, ClipSpec)]


def prepared_store(out: Path, data: Path) -> tuple[Path, float | None]:
    """The store of the whole synthetic folder (ingested with 2 jobs once); its ingest seconds or None if reused."""
    from roi_store.ingest.pipeline import ingest

    store = Path(out) / "store.zarr"
    stamp = Path(out) / "store.json"
    if stamp.exists() and (store / "zarr.json").exists() and json.loads(stamp.read_text()).get("data") == str(data):
        return store, None
    shutil.rmtree(store, ignore_errors=True)
    start = time.perf_counter()
    for name, rel in datasets(data):
        ingest(store, name, Path(data) / rel, jobs=2)
    seconds = time.perf_counter() - start
    stamp.write_text(json.dumps({"data": str(data), "ingest_seconds": seconds}))
    return store, seconds
