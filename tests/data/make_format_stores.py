"""Make the tiny stores of format 1 that the compatibility tests (``tests/test_format.py``) read.

Run from the repository root, naming the archive to make::

    .venv/bin/python tests/data/make_format_stores.py format-v1-time-chunks

Each archive is ``tests/data/<name>.zip`` (the store, packed by ``roistore pack``) with
``tests/data/<name>.json`` beside it (what a reader must find in it: clip ids, lengths, a
SHA-256 of every clip's frames per region and, for a store with runs, each run's state, plan,
embed commit checksum and a SHA-256 of its embeddings). The script refuses to replace an
archive that exists: an archive records what the roistore of its day wrote, and a newer
release must read it as it is. When the format changes, add a function for the new archive
and run only that one.

``format-v1-row-chunks``
    Made with roistore 0.1.0 (then named ``format-v1.zip``): three two-frame clips, ``t_max``
    3, so every clip row is one chunk; no runs. Its members are stored, as ``roistore pack``
    writes them.
``format-v1-time-chunks``
    Made with roistore 0.1.0 after format 1 gained chunks of 64 frames along time, run commit
    markers and versioned run documents: ``t_max`` 80, one clip of 70 frames (two time chunks,
    the second one mostly padding) and three of two, and run ``tiny``: a committed embed (two
    folds sharing one CNN per region, one epoch, on the CPU). Its members are deflated after packing (as ``zip
    -9`` would): the models' HDF5 files halve, and the archive stays under 1 MB. The run has
    no fitted head: a head's six LSTMs weigh 5.5 MB per fold, more than this folder should.
``format-v2-flow``
    Made with roistore 0.1.0 when format 2 added the whole-face crops (array ``face``) and
    feature sets: the three two-frame clips of ``format-v1-row-chunks`` (``t_max`` 3), and
    feature set ``flow16``: TV-L1 flow, 16 px, middle apex. Members deflated after packing.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import skimage.data

HERE = Path(__file__).resolve().parent

#: format-v1-row-chunks: three clips of two subjects, two frames each (one crosses 99 -> 100).
ROW_CHUNK_CLIPS = [("lab", "p1", "a", "happiness", "12", (99, 100)), ("lab", "p1", "b", "surprise", "", (1, 2)),
                   ("lab", "p2", "c", "disgust", "4+9", (10, 11))]
#: format-v1-time-chunks: CASME II ids (so the MEGC 2019 view labels them), two subjects, the
#: view's three classes; sub01/EP01_01 has 70 frames (crossing img99 -> img100), the others 2.
TIME_CHUNK_CLIPS = [("casme2", "sub01", "EP01_01", "happiness", "12", tuple(range(60, 130))),
                    ("casme2", "sub01", "EP02_01", "surprise", "1+2", (1, 2)),
                    ("casme2", "sub02", "EP01_02", "happiness", "12", (5, 6)),
                    ("casme2", "sub02", "EP03_02", "disgust", "4+9", (5, 6))]
#: The run of format-v1-time-chunks: two folds sharing one CNN per region (six models, not twelve).
RUN = "tiny"
EMBED = {"protocol": "kfold", "folds": 2, "epochs": 1, "batch_size": 256, "seed": 3, "cpu": True, "cnn_dense": 32,
         "cnn_scope": "global"}


def face_frame(width: int = 320) -> np.ndarray:
    """scikit-image's astronaut, face only, on a grey frame ``width`` pixels wide (4:3), blurred.

    The blur (still well within what the face detector finds) lets zstd halve the chunks.
    """
    img = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    h = width * 3 // 4
    face = cv2.resize(img[40:260, 120:320], (width * 5 // 8, h * 11 // 12), interpolation=cv2.INTER_AREA)
    frame = np.full((h, width, 3), 90, dtype=np.uint8)
    y, x = (h - face.shape[0]) // 2, (width - face.shape[1]) // 2
    frame[y:y + face.shape[0], x:x + face.shape[1]] = face
    return cv2.GaussianBlur(frame, (0, 0), 3)


def array_digest(data: np.ndarray) -> str:
    """SHA-256 of an array's bytes in C order (a clip's frames of one region, a run's embeddings)."""
    return hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()


def brightness(k: int, n_frames: int) -> int:
    """What frame ``k`` of a clip is brightened by: time order is visible in the frames.

    Short clips step by 3 each frame (as the first archive did); a long clip steps by 3 every
    16 frames, so that runs of equal frames keep its chunks, and the zip, small.
    """
    return 3 * k if n_frames <= 3 else 3 * (k // 16)


def deflate(path: Path) -> None:
    """Rewrite the zip ``path`` with its members deflated; names, order and times kept."""
    tmp = path.with_name(f".{path.name}.deflating")
    try:
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w") as dst:
            for old in src.infolist():
                info = zipfile.ZipInfo(old.filename, date_time=old.date_time)
                info.external_attr, info.compress_type = old.external_attr, zipfile.ZIP_DEFLATED
                dst.writestr(info, src.read(old), compresslevel=9)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_dataset(root: Path, clips: list[tuple]) -> Path:
    """Write ``clips`` as PNG frame folders under ``root`` and a manifest beside it; its path."""
    frame = face_frame()
    rows = []
    for dataset, subject, clip, label, aus, numbers in clips:
        folder = root / subject / clip
        folder.mkdir(parents=True)
        for k, n in enumerate(numbers):
            shift = brightness(k, len(numbers))
            cv2.imwrite(str(folder / f"img{n}.png"), cv2.add(frame, np.full_like(frame, shift)))
        rows.append({"dataset": dataset, "subject": subject, "clip": clip, "folder": f"{subject}/{clip}",
                     "label": label, "aus": aus})
    manifest = root.parent / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def expectation(path: Path) -> dict:
    """What a reader must find in the packed store ``path``."""
    from roi_store.store.store import open_store

    with open_store(path) as store:
        return {
            "format_version": store.header["format_version"],
            "made_by": store.header["writer"],
            "t_max": store.t_max,
            "time_chunk": store.array(store.regions[0]).chunks[1],
            "regions": store.regions,
            "clips": {c.id: {"n_frames": c.n_frames, "emotion": c.emotion,
                             "frames": {r: array_digest(store.frames(c.id, r)) for r in store.arrays}}
                      for c in store.clips},
            "runs": {name: run_expectation(store, name) for name in _run_names(store)},
            **({"feature_sets": {name: feature_expectation(store, name) for name in store.feature_sets()}}
               if store.feature_sets() else {}),
        }


def feature_expectation(store, name: str) -> dict:
    """A feature set's settings, clips, apexes and a SHA-256 of each crop's array."""
    fset = store.features(name)
    return {"attrs": {k: fset.attrs[k] for k in ("estimator", "size", "apex_rule", "source_digest", "crops")},
            "clips": fset.clips, "apex": [int(k) for k in fset.apex["frame"]],
            "arrays": {c: array_digest(fset.face if c == "face" else fset.region(c)) for c in fset.attrs["crops"]}}


def _run_names(store) -> list[str]:
    from roi_store.store.runs import run_names

    return run_names(store)


def run_expectation(store, name: str) -> dict:
    """A run's state, plan, embed commit checksum and a SHA-256 of each region's embeddings."""
    from roi_store.store.runs import commit_doc, run_document, run_status

    status, doc = run_status(store, name), run_document(store, name)
    return {"state": status["state"], "stage": status["stage"], "folds": status["folds"],
            "settings": doc["settings"], "classes": doc["classes"], "clips": doc["clips"], "labels": doc["labels"],
            "test_clips": [f["test_clips"] for f in doc["folds"]], "embedding_folds": doc["embedding_folds"],
            "checksum": commit_doc(store, name, "embed")["checksum"],
            "embeddings": {r: array_digest(store.zgroup[f"runs/{name}/embeddings/{r}"][:]) for r in doc["regions"]}}


def make_row_chunks(tmp: Path, store_path: Path) -> None:
    """``format-v1-row-chunks``: ``t_max`` 3, so each clip row is one chunk; no runs."""
    from roi_store.ingest.pipeline import ingest

    manifest = write_dataset(tmp / "lab", ROW_CHUNK_CLIPS)
    ingest(store_path, "manifest", tmp / "lab", manifest, t_max=3, progress=False)


def make_time_chunks(tmp: Path, store_path: Path) -> None:
    """``format-v1-time-chunks``: ``t_max`` 80 in chunks of 64 frames, a 70-frame clip, a committed embed."""
    from roi_store.ingest.pipeline import ingest
    from roi_store.method import backend
    from roi_store.method.embed import embed

    backend.select_device(cpu=True)
    manifest = write_dataset(tmp / "lab", TIME_CHUNK_CLIPS)
    ingest(store_path, "manifest", tmp / "lab", manifest, t_max=80, progress=False)
    embed(str(store_path), RUN, **EMBED)


def make_flow(tmp: Path, store_path: Path) -> None:
    """``format-v2-flow``: the row-chunk clips with their face crops, and feature set ``flow16``."""
    from roi_store.ingest.flow import compute_flow

    make_row_chunks(tmp, store_path)
    compute_flow(store_path, "flow16", estimator="tvl1", size=16, apex="middle")


#: Each archive: how its store is made, and whether its zip's members are deflated after packing.
ARCHIVES = {"format-v1-row-chunks": (make_row_chunks, False), "format-v1-time-chunks": (make_time_chunks, True),
            "format-v2-flow": (make_flow, True)}


def make(name: str, out_dir: Path = HERE, *, overwrite: bool = False) -> Path:
    """Write ``<name>.zip`` and ``<name>.json`` into ``out_dir``; return the zip's path.

    Raises
    ------
    FileExistsError
        If the archive exists and ``overwrite`` is false.
    """
    from roi_store.store.share import pack_store

    out = out_dir / f"{name}.zip"
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists: an archive is never made again by a newer release")
    build, deflated = ARCHIVES[name]
    with tempfile.TemporaryDirectory() as tmp:
        store_path = Path(tmp) / "store.zarr"
        build(Path(tmp), store_path)
        pack_store(store_path, out, overwrite=overwrite)
    if deflated:
        deflate(out)
    (out_dir / f"{name}.json").write_text(json.dumps(expectation(out), indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", choices=sorted(ARCHIVES), help="archives to make")
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write them to (default: tests/data)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing archives (tests only)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in args.names:
        path = make(name, args.out, overwrite=args.overwrite)
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
