"""Frame decoding: BMP windows and cuts from a window (each shortcut gives exactly what the plain
path gives), and videos decoded to frames."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from roi_store.ingest import regions as rg
from roi_store.ingest.decode import decode_video, read_grey, read_grey_window
from roi_store.errors import FrameError


def _bmp(path, bgr: np.ndarray, top_down: bool = False):
    """A 24-bit BMP written by OpenCV (bottom-up), or the same pixels stored top-down."""
    cv2.imwrite(str(path), bgr)
    if top_down:
        data = bytearray(path.read_bytes())
        offset, h = struct.unpack_from("<I", data, 10)[0], struct.unpack_from("<i", data, 22)[0]
        stride = (bgr.shape[1] * 3 + 3) // 4 * 4
        rows = [bytes(data[offset + i * stride: offset + (i + 1) * stride]) for i in range(h)]
        data[offset:offset + h * stride] = b"".join(reversed(rows))
        struct.pack_into("<i", data, 22, -h)
        path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("top_down", [False, True])
@pytest.mark.parametrize("size", [(48, 64), (37, 53), (5, 1), (3, 2)])
def test_bmp_window_equals_the_whole_decode(tmp_path, size, top_down):
    h, w = size
    bgr = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path = _bmp(tmp_path / "f.bmp", bgr, top_down)
    whole = read_grey(path)
    assert whole.shape == (h, w)
    for window in [(0, 0, w, h), (1, 1, w - 1, h - 1), (-5, -7, w + 5, h + 7), (0, 0, 1, 1), (w - 1, h - 1, w, h),
                   (0, 1, 2, 3)]:
        x0, y0, x1, y1 = max(0, window[0]), max(0, window[1]), min(w, window[2]), min(h, window[3])
        pixels, shape, origin = read_grey_window(path, 1, window)
        assert shape == (h, w)
        if x1 > x0 and y1 > y0:
            assert origin == (x0, y0)
            np.testing.assert_array_equal(pixels, whole[y0:y1, x0:x1])
        else:  # nothing of the frame inside: decoded whole
            assert origin == (0, 0)
            np.testing.assert_array_equal(pixels, whole)


def test_other_frames_are_decoded_whole(tmp_path):
    grey = np.random.default_rng(1).integers(0, 256, (40, 30), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "g.bmp"), grey)  # 8-bit with a palette: not read by window
    cv2.imwrite(str(tmp_path / "c.jpg"), cv2.merge([grey] * 3))
    for name, factor in (("g.bmp", 1), ("c.jpg", 1), ("c.jpg", 2)):
        pixels, shape, origin = read_grey_window(tmp_path / name, factor, (5, 5, 10, 10))
        whole = read_grey(tmp_path / name, factor)
        assert origin == (0, 0) and shape == whole.shape
        np.testing.assert_array_equal(pixels, whole)


def test_truncated_bmp_gives_the_same_error_as_a_whole_decode(tmp_path):
    bgr = np.random.default_rng(2).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    path = _bmp(tmp_path / "f.bmp", bgr)
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(FrameError) as whole:
        read_grey(path)
    with pytest.raises(FrameError) as window:
        read_grey_window(path, 1, (0, 0, 5, 5))
    assert str(window.value) == str(whole.value) and "truncated" in str(whole.value)


def test_cuts_from_a_window_equal_cuts_from_the_frame():
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (120, 160), dtype=np.uint8)
    for _ in range(50):
        cuts = []
        for k in range(6):
            x0, y0 = rng.uniform(-40, 150), rng.uniform(-40, 110)
            box = (x0, y0, x0 + rng.uniform(1, 60), y0 + rng.uniform(1, 50))
            valid = None if k % 2 else (rng.uniform(-10, 40), rng.uniform(-10, 30), rng.uniform(60, 170),
                                        rng.uniform(50, 130))
            cuts.append(rg.Cut(f"R{k}", box, valid, (int(rng.integers(8, 40)), int(rng.integers(8, 40)))))
        window = rg.source_window(cuts)
        if window is None:
            continue
        x0, y0 = max(0, window[0]), max(0, window[1])
        part = frame[y0:min(120, window[3]), x0:min(160, window[2])]
        for c in cuts:
            np.testing.assert_array_equal(rg.cut(part, c, (x0, y0), frame.shape), rg.cut(frame, c))


def test_a_clip_of_bmp_frames_is_cut_as_from_whole_frames(tmp_path, face_frame):
    from roi_store import open_store
    from roi_store.ingest.pipeline import ingest

    from conftest import write_clip

    root = tmp_path / "HS"
    # One clip with the face in the middle, one with the face pushed past the frame's left edge.
    write_clip(root / "s1" / "micro" / "positive" / "s1_po_01", face_frame, (1, 2, 3), pattern="image{n:06d}.bmp")
    shifted = np.full_like(face_frame, 90)
    shifted[:, :560] = face_frame[:, 80:]
    write_clip(root / "s2" / "micro" / "negative" / "s2_ne_01", shifted, (1, 2, 3), pattern="image{n:06d}.bmp")
    ingest(tmp_path / "s.zarr", "smic", root)
    store = open_store(tmp_path / "s.zarr")
    assert [c.id for c in store.clips] == ["smic/s1/s1_po_01", "smic/s2/s2_ne_01"]
    for rec in store.clips:
        cuts = [rg.Cut(name, tuple(c["box"]), None if c["valid"] is None else tuple(c["valid"]),
                       rg.region_size(next(r for r in store.header["layout"]["regions"] if r["name"] == name)))
                for name, c in rec.data["cuts"].items()]
        folder = root / rec.data["folder"].replace("smic/", "")
        for region, c in zip(store.regions, cuts):
            expect = np.stack([rg.cut(read_grey(folder / f), c) for f in rec.data["frames"]])
            np.testing.assert_array_equal(store.frames(rec.id, region), expect)


def _video(path, n_frames: int, fps: float):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    for k in range(n_frames):
        writer.write(np.full((48, 64, 3), 10 * k, dtype=np.uint8))  # frame k is visibly itself
    writer.release()
    return path


def test_a_video_is_decoded_to_lossless_frames_in_time_order(tmp_path):
    video = _video(tmp_path / "v.avi", 5, 25)
    (tmp_path / "out").mkdir()
    frames = decode_video(video, tmp_path / "out", max_frames=10)
    assert frames.fps == 25 and not frames.more
    assert [p.name for p in frames.paths] == [f"frame{k:06d}.png" for k in range(5)]
    assert [int(round(read_grey(p).mean() / 10)) for p in frames.paths] == [0, 1, 2, 3, 4]


def test_a_video_longer_than_asked_for_is_not_decoded_to_its_end(tmp_path):
    video = _video(tmp_path / "v.avi", 8, 25)
    (tmp_path / "out").mkdir()
    frames = decode_video(video, tmp_path / "out", max_frames=3)
    assert len(frames.paths) == 3 and frames.more
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"frame{k:06d}.png" for k in range(3)]
    assert not decode_video(video, tmp_path / "out", max_frames=8).more


def test_a_file_that_is_no_video_is_refused_in_one_line(tmp_path):
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"not a video at all" * 10)
    with pytest.raises(FrameError) as err:
        decode_video(fake, tmp_path, max_frames=10)
    assert str(err.value) == (f"cannot open video {fake}: give a frame folder, or a video OpenCV can read "
                              "(.mp4, .avi, .mov, .mkv, .webm, .m4v, .mpg, .mpeg)")
