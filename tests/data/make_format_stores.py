"""Make the tiny store of the current format version that the compatibility tests read.

Run from the repository root with the roistore release that introduced the version::

    python tests/data/make_format_stores.py

It writes ``tests/data/format-v<N>.zip`` (the store, packed by ``roistore pack``) and
``tests/data/format-v<N>.json`` (what a reader must find in it). Files of older versions are
left as they are: each released format keeps its own store here.
"""

from __future__ import annotations

import csv
import hashlib
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from roi_store.store import format as fmt
from roi_store.ingest.pipeline import ingest
from roi_store.store.share import pack_store
from roi_store.store.store import open_store

HERE = Path(__file__).resolve().parent
#: Three clips of two subjects, two frames each (one crosses 99 -> 100): the packed store is ~160 KB.
CLIPS = [("p1", "a", "happiness", "12", (99, 100)), ("p1", "b", "surprise", "", (1, 2)),
         ("p2", "c", "disgust", "4+9", (10, 11))]
T_MAX = 3


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


def frame_digest(frames: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(frames).tobytes()).hexdigest()


def make(out_dir: Path = HERE) -> Path:
    """Write ``format-v<N>.zip`` and ``format-v<N>.json`` into ``out_dir``; return the zip's path."""
    version = fmt.FORMAT_VERSION
    frame = face_frame()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "lab"
        rows = []
        for subject, clip, label, aus, numbers in CLIPS:
            folder = root / subject / clip
            folder.mkdir(parents=True)
            for k, n in enumerate(numbers):  # frame k brightened by 3k: time order is visible
                cv2.imwrite(str(folder / f"img{n}.png"), cv2.add(frame, np.full_like(frame, 3 * k)))
            rows.append({"dataset": "lab", "subject": subject, "clip": clip, "folder": f"{subject}/{clip}",
                         "label": label, "aus": aus})
        manifest = Path(tmp) / "manifest.csv"
        with open(manifest, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        store_path = Path(tmp) / "store.zarr"
        ingest(store_path, "manifest", root, manifest, t_max=T_MAX, progress=False)
        out = out_dir / f"format-v{version}.zip"
        pack_store(store_path, out, overwrite=True)
    with open_store(out) as store:
        expect = {
            "format_version": version,
            "made_by": store.header["writer"],
            "t_max": store.t_max,
            "regions": store.regions,
            "clips": {c.id: {"n_frames": c.n_frames, "emotion": c.emotion,
                             "frames": {r: frame_digest(store.frames(c.id, r)) for r in store.regions}}
                      for c in store.clips},
        }
    (out_dir / f"format-v{version}.json").write_text(json.dumps(expect, indent=2) + "\n")
    return out


if __name__ == "__main__":
    path = make()
    print(f"wrote {path} ({path.stat().st_size} bytes)")
