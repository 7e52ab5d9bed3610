"""One clip cut into its six region blocks: the face and landmarks found, the cuts planned, every frame cut.

Nothing is written here: :func:`cut_clip` returns the blocks and the clip's record fields, which
ingest writes into the store and ``predict`` feeds to a run's models.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from roi_store.errors import FaceError, FrameError
from roi_store.ingest import regions as rg
from roi_store.ingest.datasets.base import ClipSpec
from roi_store.ingest.decode import can_reduce, read_grey, read_grey_window
from roi_store.ingest.faces import find_face
from roi_store.store.store import COMPLETE, now

#: Frames tried for a face when the first frame has none, as offsets from the first frame.
FALLBACK_FRAMES = (1, 2, 3, 4)
#: How far into a video the face is searched for, in seconds: someone may walk into view.
VIDEO_FACE_SECONDS = 10.0
#: One frame every this many seconds is tried within :data:`VIDEO_FACE_SECONDS` (every frame of
#: a slower video): a frame without a face costs a full detection, about a tenth of a second.
VIDEO_FACE_STEP = 0.2
#: How many frame times a "no face" message lists before it elides the middle ones.
_TIMES_SHOWN = 6


@dataclasses.dataclass(frozen=True)
class CutSettings:
    """How a store cuts its clips (from its header), and the landmark model to find faces with."""

    t_max: int
    scheme: str
    layout: dict
    landmarks_model: str | None = None
    face: dict | None = None  # {"size", "margin"}: also cut the whole-face crop (format 2 stores)

    @classmethod
    def of(cls, store, landmarks_model: str | None = None, *, face: bool = False) -> CutSettings:
        """The store's settings; ``face`` adds its whole-face crop (ingest writes it, predict needs none)."""
        return cls(store.t_max, store.header["region_scheme"], store.header["layout"], landmarks_model,
                   store.header.get("face") if face else None)


def cut_clip(spec: ClipSpec, work: CutSettings, *, name: str | None = None,
             video: bool = False) -> tuple[list[np.ndarray], dict]:
    """Find the face, plan the cuts and cut every frame of one clip (nothing is written).

    Parameters
    ----------
    spec : ClipSpec
        The clip's frames, in time order.
    work : CutSettings
        The store's ``t_max``, ``scheme``, ``layout`` and the ``landmarks_model`` to use.
    name : str, optional
        How messages name the clip (default: its id), e.g. the folder given to ``predict``.
    video : bool
        The frames were decoded from a video (at ``spec.fps``): the face is searched for as
        :func:`locate_face` says, and messages name frames by their time.

    Returns
    -------
    tuple
        The six ``(n_frames, h, w)`` blocks (and the whole-face block last when ``work.face``
        asks for it) and the clip's record fields.
    """
    name = name or spec.id
    n = len(spec.frames)
    if n == 0:
        raise FrameError(f"{name} has no frames in {spec.folder}")
    if n > work.t_max:
        raise FrameError(
            f"{name} has {n} frames, more than the store's t_max of {work.t_max}: "
            f"ingest it into a store made with --t-max {n} or more"
        )
    warnings = list(spec.warnings)
    face_frame, face, full_shape = locate_face(spec, work.landmarks_model, name=name, video=video)
    # How messages name a frame: ``frame 30 at 1.00 s`` in a video, else ``frame 3 (img0004.jpg)``.
    used = (f"frame {face_frame} at {face_frame / spec.fps:.2f} s" if video
            else f"frame {face_frame} ({spec.frames[face_frame].name})")
    if face_frame:
        before = f"before {face_frame / spec.fps:.2f} s" if video else "on the first frame"
        warnings.append(f"no face {before}; landmarks taken from {used}")
    if face.n_faces > 1:
        warnings.append(f"{face.n_faces} faces on {used}; used the largest")
    cuts = rg.plan_cuts(face.landmarks, work.scheme, work.layout)
    regions = list(cuts)
    if work.face:
        # From the landmarks as the record keeps them, so that 'roistore upgrade' cuts a format 1
        # store's faces to the same pixels from its records.
        cuts.append(rg.face_cut(np.round(face.landmarks, 2), work.face["size"], work.face["margin"]))
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
                f"{name}: frame {path.name} is {size[1]}x{size[0]} but the clip's first frame is "
                f"{shape[1]}x{shape[0]} (decoded at 1/{factor}): mixed frame sizes in one clip; "
                "fix or remove the odd frames"
            )
        for block, c in zip(blocks, scaled):
            block[t] = rg.cut(image, c, origin, size)
    return blocks, {
        "status": COMPLETE, "n_frames": n, "fps": float(spec.fps), "emotion": spec.emotion, "aus": list(spec.aus),
        "onset": spec.onset, "apex": spec.apex, "offset": spec.offset,
        "frames": [p.name for p in spec.frames],
        "frame_numbers": list(spec.frame_numbers),
        "frame_size": [int(full_shape[1]), int(full_shape[0])],
        "decode_factor": factor,
        "face": {
            "frame": face_frame, "box": list(face.box), "score": round(face.score, 4), "n_faces": face.n_faces,
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in face.landmarks],
        },
        "cuts": {c.name: {"box": [round(v, 2) for v in c.box],
                          "valid": None if c.valid is None else [round(v, 2) for v in c.valid]} for c in regions},
        "warnings": warnings,
        "ingested": now(),
    }


def locate_face(spec: ClipSpec, model: str | None, *, name: str | None = None, video: bool = False):
    """The first frame of the clip with a face: ``(frame index, Face, full frame shape)``.

    A clip's folder: its first frame, then :data:`FALLBACK_FRAMES` and its middle frame. A video
    (``video``): one frame every :data:`VIDEO_FACE_STEP` seconds of its first
    :data:`VIDEO_FACE_SECONDS` seconds, in time order, so a face that comes into view later is
    found.

    Raises
    ------
    FaceError
        If none of those frames has a face; the message names the clip (``name``, default its
        id) and the frames tried.
    """
    name = name or spec.id
    n = len(spec.frames)
    if video:
        step, limit = max(1, round(VIDEO_FACE_STEP * spec.fps)), math.ceil(VIDEO_FACE_SECONDS * spec.fps)
        tried = list(range(0, min(n, limit), step))
    else:
        tried = [0, *[i for i in FALLBACK_FRAMES if i < n], *([n // 2] if n > 2 else [])]
    for index in dict.fromkeys(tried):
        full = read_grey(spec.frames[index])
        face = find_face(full, model)
        if face is not None:
            return index, face, full.shape
    if not video:
        raise FaceError(
            f"no face found on the first frame of {name} ({spec.frames[0].name}) nor on frames "
            f"{', '.join(str(i) for i in tried[1:]) or '-'}: check the clip folder {spec.folder}"
        )
    # 'frames at 0.00 s, 0.20 s, ..., 9.80 s (50 frames: every 0.2 s of the first 10 s)'
    times = [f"{i / spec.fps:.2f} s" for i in tried]
    if len(times) > _TIMES_SHOWN:
        times = [*times[:_TIMES_SHOWN - 1], "...", times[-1]]
    every = "every frame" if step == 1 or len(tried) < 2 else f"every {step / spec.fps:.2g} s"
    span = "the whole video" if n <= limit else f"the first {VIDEO_FACE_SECONDS:g} s"
    raise FaceError(f"no face found in {name} on frames at {', '.join(times)} ({len(tried)} frames: {every} of "
                    f"{span}): make sure a frontal face is in view within its first {VIDEO_FACE_SECONDS:g} s, "
                    "or cut the video to start where it is")
