"""Frame decoding: greyscale, at reduced scale where JPEG allows it, with integrity checks; videos to frames."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from roi_store.errors import FrameError

# libjpeg's "Corrupt JPEG data" chatter would interleave with the progress bar; integrity is
# checked explicitly below instead.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
# FFmpeg's own complaints about a video ("moov atom not found") would print beside roistore's
# one-line error; OpenCV reads this when it opens a video. A level the user set is kept.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

_REDUCED = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
            4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
_JPEG = (".jpg", ".jpeg")
#: OpenCV's own ceiling (CV_IO_MAX_IMAGE_PIXELS) on the pixels a header may declare.
_MAX_PIXELS = 1 << 30
#: BITMAPFILEHEADER + the start of BITMAPINFOHEADER (or a later version of it).
_BMP_HEAD = struct.Struct("<2sI4xIIiiHHI")
#: The header of a window's BMP: file header and a BITMAPINFOHEADER (no resolution, no palette).
_BMP_OUT = struct.Struct("<2sI4xIIiiHHII16x")
#: The file endings ``predict`` reads as a video (anything OpenCV's video reader opens).
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
#: The frame rate assumed for a video that does not declare one.
DEFAULT_FPS = 30.0


def can_reduce(path: Path) -> bool:
    """True if the file's codec decodes natively at 1/2, 1/4, 1/8 scale (JPEG)."""
    return path.suffix.lower() in _JPEG


def read_grey(path: Path, factor: int = 1) -> np.ndarray:
    """Decode one frame as greyscale uint8, at 1/``factor`` scale.

    JPEG decodes natively at 1/2, 1/4, 1/8; other codecs decode in full and are resized to the
    size a JPEG of the same dimensions would decode to, so a clip may mix them.

    Raises
    ------
    FrameError
        If the file cannot be read, is truncated, or does not decode.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FrameError(
            f"cannot read frame {path}: {exc.strerror or exc}: check the file's permissions, or restore it"
        ) from None
    if not data:
        raise FrameError(f"frame {path} is empty (0 bytes): restore it from the original dataset")
    jpeg = can_reduce(path)
    if jpeg:
        if not data.startswith(b"\xff\xd8"):
            raise FrameError(f"frame {path} is not a JPEG image (no JPEG start marker): restore or remove it")
        if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
            raise FrameError(f"frame {path} is truncated (no JPEG end marker): restore it from the original dataset")
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _REDUCED[factor] if jpeg else cv2.IMREAD_GRAYSCALE)
    except cv2.error as exc:
        # OpenCV refuses, rather than allocates, a header declaring more than 2**30 pixels.
        if "MAX_IMAGE_PIXELS" in str(exc):
            raise FrameError(
                f"frame {path} is too large to decode (its header declares more than {_MAX_PIXELS:,} "
                "pixels): restore or remove it"
            ) from None
        image = None
    if image is None:
        raise FrameError(f"frame {path} is not a decodable image: restore or remove it")
    # OpenCV decodes a cut-off BMP without complaint; the header says how big the file must be.
    declared = int.from_bytes(data[2:6], "little") if path.suffix.lower() == ".bmp" and len(data) >= 6 else 0
    if len(data) < declared:
        raise FrameError(
            f"frame {path} is truncated ({len(data)} of {declared} bytes): restore it from the original dataset"
        )
    if factor > 1 and not jpeg:
        # A PNG/BMP/TIFF among a clip's JPEGs: the size libjpeg's 1/factor decode gives (rounded up).
        h, w = image.shape
        image = cv2.resize(image, (-(-w // factor), -(-h // factor)), interpolation=cv2.INTER_AREA)
    return image


def read_grey_window(path: Path, factor: int, window: tuple[int, int, int, int] | None):
    """Decode the part of a frame inside ``window`` (x0, y0, x1, y1 in pixels at 1/``factor``).

    Returns ``(pixels, (h, w), (x, y))``: the decoded pixels, the size of the whole decoded
    frame, and where the pixels' top-left corner lies in it. An uncompressed 24-bit BMP (SMIC's
    frames) is read row by row from the file, only the window's rows, and only the window is
    converted to grey: the same values as decoding it whole, at a fraction of the cost. Every
    other frame is decoded whole by :func:`read_grey`, with the same checks and errors.
    """
    if window is not None and factor == 1 and path.suffix.lower() == ".bmp":
        part = _bmp_window(path, window)
        if part is not None:
            return part
    image = read_grey(path, factor)
    return image, image.shape, (0, 0)


def _bmp_window(path: Path, window: tuple[int, int, int, int]):
    """The window of an uncompressed, 24-bit BMP as grey pixels, or None for any other file
    (:func:`read_grey` then decodes it whole and reports what is wrong with it)."""
    try:
        with open(path, "rb") as f:
            magic, declared, offset, info, w, h, planes, bits, compression = _BMP_HEAD.unpack(f.read(_BMP_HEAD.size))
            if (magic != b"BM" or info not in (40, 52, 56, 108, 124) or planes != 1 or bits != 24
                    or compression != 0 or w <= 0 or h == 0 or w * abs(h) > _MAX_PIXELS or offset < 14 + info):
                return None
            rows, stride = abs(h), (w * 3 + 3) // 4 * 4
            if os.fstat(f.fileno()).st_size < max(declared, offset + stride * rows):
                return None  # truncated: read_grey says so
            x0, y0 = max(0, window[0]), max(0, window[1])
            x1, y1 = min(w, window[2]), min(rows, window[3])
            if x1 <= x0 or y1 <= y0:
                return None
            first = rows - y1 if h > 0 else y0  # a positive height stores the rows bottom-up
            data = os.pread(f.fileno(), (y1 - y0) * stride, offset + first * stride)
    except (OSError, struct.error):  # struct.error: shorter than a BMP header
        return None
    if len(data) != (y1 - y0) * stride:
        return None
    # The window as a BMP of its own, decoded by OpenCV: the grey values are exactly those of
    # decoding the whole file (OpenCV's BMP decoder has its own grey conversion).
    n, cw = y1 - y0, x1 - x0
    cs = (cw * 3 + 3) // 4 * 4
    small = np.empty(_BMP_OUT.size + n * cs, dtype=np.uint8)
    small[: _BMP_OUT.size] = np.frombuffer(
        _BMP_OUT.pack(b"BM", small.size, _BMP_OUT.size, 40, cw, n if h > 0 else -n, 1, 24, 0, n * cs), dtype=np.uint8)
    rows_read = np.frombuffer(data, dtype=np.uint8).reshape(n, stride)
    small[_BMP_OUT.size :].reshape(n, cs)[:, : cw * 3] = rows_read[:, 3 * x0 : 3 * x1]
    grey = cv2.imdecode(small, cv2.IMREAD_GRAYSCALE)
    if grey is None or grey.shape != (n, cw):
        return None
    return grey, (rows, w), (x0, y0)


class VideoFrames(NamedTuple):
    """A video's frames written as files: their paths in time order, the video's frame rate, and
    whether the video has frames beyond those written."""

    paths: list[Path]
    fps: float
    more: bool


def decode_video(video: Path, folder: Path, max_frames: int) -> VideoFrames:
    """Write the first ``max_frames`` frames of ``video`` into ``folder`` as lossless PNG files.

    PNG, so that what is cut from a frame is what the video holds. Reading stops after
    ``max_frames``: a long video is not decoded to the end only to be refused.

    Raises
    ------
    FrameError
        If OpenCV cannot open the video, or it has no readable frame.
    """
    cap = cv2.VideoCapture(str(video))
    try:
        if not cap.isOpened():
            raise FrameError(f"cannot open video {video}: give a frame folder, or a video OpenCV can read "
                             f"({', '.join(VIDEO_SUFFIXES)})")
        fps = cap.get(cv2.CAP_PROP_FPS)
        fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else DEFAULT_FPS
        paths: list[Path] = []
        while len(paths) < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            path = folder / f"frame{len(paths):06d}.png"
            cv2.imwrite(str(path), frame)
            paths.append(path)
        more = len(paths) == max_frames and cap.grab()
    finally:
        cap.release()
    if not paths:
        raise FrameError(
            f"video {video} has no readable frames: re-encode it (e.g. as H.264 .mp4) or give a frame folder")
    return VideoFrames(paths, fps, bool(more))
