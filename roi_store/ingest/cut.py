"""One clip cut into its six region blocks: the face and landmarks found, the cuts planned, every frame cut.

Nothing is written here: :func:`cut_clip` returns the blocks and the clip's record fields, which
ingest writes into the store and ``predict`` feeds to a run's models.
"""

from __future__ import annotations

import numpy as np

from roi_store.errors import FaceError, FrameError
from roi_store.ingest import regions as rg
from roi_store.ingest.datasets.base import ClipSpec
from roi_store.ingest.decode import can_reduce, read_grey, read_grey_window
from roi_store.ingest.faces import find_face
from roi_store.store.store import COMPLETE, now

#: Frames tried for a face when the first frame has none, as offsets from the first frame.
FALLBACK_FRAMES = (1, 2, 3, 4)


def cut_clip(spec: ClipSpec, work: dict) -> tuple[list[np.ndarray], dict]:
    """Find the face, plan the cuts and cut every frame of one clip (nothing is written).

    Returns the six ``(n_frames, h, w)`` blocks and the clip's record fields.
    """
    t_max = work["t_max"]
    n = len(spec.frames)
    if n == 0:
        raise FrameError(f"{spec.id} has no frames in {spec.folder}")
    if n > t_max:
        raise FrameError(
            f"{spec.id} has {n} frames, more than the store's t_max of {t_max}: "
            f"ingest it into a store made with --t-max {n} or more"
        )
    warnings = list(spec.warnings)
    face_frame, face, full_shape = locate_face(spec, work["landmarks_model"])
    landmarks = face.landmarks
    if face_frame:
        warnings.append(f"no face on the first frame; landmarks taken from frame {face_frame} ({spec.frames[face_frame].name})")
    if face.n_faces > 1:
        warnings.append(f"{face.n_faces} faces on frame {face_frame}; used the largest")
    cuts = rg.plan_cuts(landmarks, work["scheme"], work["layout"])
    factor = rg.decode_factor(cuts) if can_reduce(spec.frames[0]) else 1
    scaled = [c.scaled(factor) for c in cuts]
    # Only the pixels the cuts read are decoded where the codec allows it (BMP, at full size).
    # The window is not clipped to the face frame's size: a frame of another size is cut (or
    # refused) as a whole frame would be, and the reader clips the window to each frame.
    window = rg.source_window(scaled)
    blocks = [np.empty((n, c.size[1], c.size[0]), dtype=np.uint8) for c in cuts]
    shape = None
    for t, path in enumerate(spec.frames):
        image, size, origin = read_grey_window(path, factor, window)
        if shape is None:
            shape = size
        elif size != shape:
            raise FrameError(
                f"{spec.id}: frame {path.name} is {size[1]}x{size[0]} but the clip's first frame is "
                f"{shape[1]}x{shape[0]} (decoded at 1/{factor}): mixed frame sizes in one clip; fix or remove the odd frames"
            )
        for block, c in zip(blocks, scaled):
            block[t] = rg.cut(image, c, origin, size)
    meta = {
        "status": COMPLETE,
        "n_frames": n,
        "fps": float(spec.fps),
        "emotion": spec.emotion,
        "aus": list(spec.aus),
        "onset": spec.onset, "apex": spec.apex, "offset": spec.offset,
        "frames": [p.name for p in spec.frames],
        "frame_numbers": list(spec.frame_numbers),
        "frame_size": [int(full_shape[1]), int(full_shape[0])],
        "decode_factor": factor,
        "face": {
            "frame": face_frame,
            "box": list(face.box),
            "score": round(face.score, 4),
            "n_faces": face.n_faces,
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in landmarks],
        },
        "cuts": {c.name: {"box": [round(v, 2) for v in c.box],
                          "valid": None if c.valid is None else [round(v, 2) for v in c.valid]} for c in cuts},
        "warnings": warnings,
        "ingested": now(),
    }
    return blocks, meta


def locate_face(spec: ClipSpec, model: str | None):
    tried = [0, *[i for i in FALLBACK_FRAMES if i < len(spec.frames)]]
    if len(spec.frames) > 2:
        tried.append(len(spec.frames) // 2)
    for index in dict.fromkeys(tried):
        full = read_grey(spec.frames[index])
        face = find_face(full, model)
        if face is not None:
            return index, face, full.shape
    raise FaceError(
        f"no face found on the first frame of {spec.id} ({spec.frames[0].name}) nor on frames "
        f"{', '.join(str(i) for i in tried[1:]) or '-'}: check the clip folder {spec.folder}"
    )
