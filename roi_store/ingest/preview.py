"""A picture to check a clip's cuts at a glance: landmarks and boxes on the frame, plus the crops."""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path

import cv2
import numpy as np

from roi_store.errors import StoreError
from roi_store.ids import printable
from roi_store.store.store import Store

_COLOURS = [(0, 0, 255), (0, 160, 255), (0, 220, 0), (255, 160, 0), (255, 0, 160), (160, 0, 255)]


def _source_frame(store: Store, rec, root: Path | None) -> np.ndarray | None:
    # The ingest log knows where each run read from; a manifest's clips carry their own dataset name.
    roots = [root] if root else list(dict.fromkeys(Path(i["root"]) for i in reversed(store.header["ingests"])))
    for r in roots:
        path = Path(r) / rec["folder"] / rec["frames"][rec["face"]["frame"]]
        # Decoded from bytes: cv2.imread crashes the interpreter on a path that is not UTF-8.
        with contextlib.suppress(OSError, cv2.error):
            image = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
            if image is not None:
                return image
    return None


def render_preview(store: Store, clip_id: str, root: str | Path | None = None) -> np.ndarray:
    """Return a BGR image: the face frame with 68 landmarks and six boxes, then each region's crops.

    The crops are the stored first frame and the apex (or middle) frame of each region, so a
    person sees both where the boxes sit and what the store holds.
    """
    rec = store.clip(clip_id)
    frame = _source_frame(store, rec, Path(root) if root else None)
    found = frame is not None
    if not found:
        w, h = rec["frame_size"]
        frame = np.full((h, w, 3), 40, dtype=np.uint8)
    pts = np.asarray(rec["face"]["landmarks"], dtype=float)
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    pad = 0.35 * max(x1 - x0, y1 - y0)
    view = (int(max(0, x0 - pad)), int(max(0, y0 - pad)),
            int(min(frame.shape[1], x1 + pad)), int(min(frame.shape[0], y1 + pad)))
    scale = 480.0 / max(1, view[3] - view[1])
    panel = cv2.resize(frame[view[1]:view[3], view[0]:view[2]], None, fx=scale, fy=scale,
                       interpolation=cv2.INTER_AREA)

    def at(x, y):
        return int(round((x - view[0]) * scale)), int(round((y - view[1]) * scale))

    apex = rec.n_frames // 2
    if rec["apex"] is not None and rec["apex"] in rec["frame_numbers"]:
        apex = rec["frame_numbers"].index(rec["apex"])
    tiles = []
    for name, colour in zip(store.regions, itertools.cycle(_COLOURS)):
        bx0, by0, bx1, by1 = rec["cuts"][name]["box"]
        cv2.rectangle(panel, at(bx0, by0), at(bx1, by1), colour, 2)
        cv2.putText(panel, name, at(bx0 + 2, by0 + 12 / scale), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
        frames = store.frames(rec.id, name)
        pair = np.hstack([frames[0], np.full((frames.shape[1], 4), 255, np.uint8), frames[apex]])
        tile = cv2.cvtColor(cv2.resize(pair, None, fx=1.5, fy=1.5, interpolation=cv2.INTER_NEAREST),
                            cv2.COLOR_GRAY2BGR)
        cv2.putText(tile, name, (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
        tiles.append(tile)
    for x, y in pts:
        cv2.circle(panel, at(x, y), 2, (0, 255, 255), -1, cv2.LINE_AA)
    width = max(t.shape[1] for t in tiles)
    column = np.vstack([np.pad(t, ((0, 6), (0, width - t.shape[1]), (0, 0))) for t in tiles])
    height = max(panel.shape[0], column.shape[0])
    canvas = np.zeros((height + 30, panel.shape[1] + 10 + width, 3), dtype=np.uint8)
    canvas[: panel.shape[0], : panel.shape[1]] = panel
    canvas[: column.shape[0], panel.shape[1] + 10 :] = column
    caption = (f"{rec.id}  {rec.emotion}  megc2019={rec.megc2019}  scheme={store.header['region_scheme']}  "
               "crops: first | apex")
    cv2.putText(canvas, caption, (5, height + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    if not found:
        cv2.putText(canvas, "source frame not found (pass --root)", (5, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (0, 0, 255), 1, cv2.LINE_AA)
    return canvas


def write_preview(store: Store, clip_id: str, out: str | Path, root: str | Path | None = None) -> Path:
    """Render :func:`render_preview` and write it as PNG to ``out``."""
    out = Path(out)
    image = render_preview(store, clip_id, root)
    try:  # encoded here and written by Python: cv2.imwrite crashes on a path that is not UTF-8
        ok, data = cv2.imencode(out.suffix or ".png", image)
        if ok:
            out.write_bytes(data.tobytes())
    except (OSError, cv2.error):
        ok = False
    if not ok:
        raise StoreError(f"cannot write preview image {printable(str(out))}: check the folder exists and the name "
                         "ends in .png")
    return out
