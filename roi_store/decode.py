"""Frame decoding: greyscale, at reduced scale where JPEG allows it, with integrity checks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from roi_store.errors import FrameError

# libjpeg's "Corrupt JPEG data" chatter would interleave with the progress bar; integrity is
# checked explicitly below instead.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

_REDUCED = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
            4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
_JPEG = (".jpg", ".jpeg")
#: OpenCV's own ceiling (CV_IO_MAX_IMAGE_PIXELS) on the pixels a header may declare.
_MAX_PIXELS = 1 << 30


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
    if path.suffix.lower() in _JPEG:
        if not data.startswith(b"\xff\xd8"):
            raise FrameError(f"frame {path} is not a JPEG image (no JPEG start marker): restore or remove it")
        if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
            raise FrameError(f"frame {path} is truncated (no JPEG end marker): restore it from the original dataset")
    flag = _REDUCED[factor] if factor > 1 and can_reduce(path) else cv2.IMREAD_GRAYSCALE
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
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
    if path.suffix.lower() == ".bmp":
        _check_bmp_size(path, data)
    if factor > 1 and not can_reduce(path):
        # A PNG/BMP/TIFF among a clip's JPEGs: the size libjpeg's 1/factor decode gives (rounded up).
        h, w = image.shape
        image = cv2.resize(image, (-(-w // factor), -(-h // factor)), interpolation=cv2.INTER_AREA)
    return image


def _check_bmp_size(path: Path, data: bytes) -> None:
    # OpenCV decodes a cut-off BMP without complaint; the header says how big the file must be.
    if len(data) >= 6:
        declared = int.from_bytes(data[2:6], "little")
        if declared and len(data) < declared:
            raise FrameError(
                f"frame {path} is truncated ({len(data)} of {declared} bytes): restore it from the original dataset"
            )
