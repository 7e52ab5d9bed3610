"""Direct chunk reads (the training data path) give exactly what Zarr gives, and the same errors."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import zarr
import zarr.codecs

from roi_store.store import chunkio
from roi_store.store.store import compressors

LENGTHS = [1, 63, 64, 65, 130, 200]  # within one chunk, on a boundary, across two and more


@pytest.fixture
def region(tmp_path):
    """A region-like array written the way ingest writes it: whole chunks, only those with frames."""
    rng = np.random.default_rng(3)
    arr = zarr.create_array(str(tmp_path / "a.zarr"), shape=(len(LENGTHS), 200, 9, 7), chunks=(1, 64, 9, 7),
                            dtype="uint8", fill_value=0, compressors=compressors())
    with zarr.config.set({"array.write_empty_chunks": True}):
        for row, n in enumerate(LENGTHS):
            span = min(-(-n // 64) * 64, 200)
            block = np.zeros((span, 9, 7), np.uint8)
            block[:n] = rng.integers(0, 256, (n, 9, 7), dtype=np.uint8)
            arr[row, :span] = block
    return arr


@pytest.mark.parametrize("threads", [1, 3])
def test_direct_reads_equal_zarr_reads(region, threads):
    folder = chunkio.plain_folder(region)
    assert folder is not None
    rows = [(row, n) for row, n in enumerate(LENGTHS)][::-1]  # any order
    got = chunkio.read_clips(region, folder, rows, threads=threads)
    for (row, n), frames in zip(rows, got):
        assert frames.shape == (n, 9, 7)
        np.testing.assert_array_equal(frames, region[row, :n])
    # a clip read short of its length reads only its first frames
    np.testing.assert_array_equal(chunkio.read_clips(region, folder, [(4, 70)])[0], region[4, :70])


def test_other_arrays_are_left_to_zarr(tmp_path, region):
    other = zarr.create_array(str(tmp_path / "b.zarr"), shape=(2, 64, 4, 4), chunks=(1, 64, 4, 4), dtype="uint8",
                              compressors=[zarr.codecs.ZstdCodec(level=1)])  # no checksum
    assert chunkio.plain_folder(other) is None
    split = zarr.create_array(str(tmp_path / "c.zarr"), shape=(2, 64, 4, 4), chunks=(1, 64, 2, 4), dtype="uint8",
                              compressors=compressors())  # frames split across chunks
    assert chunkio.plain_folder(split) is None
    packed = tmp_path / "a.zip"
    with zipfile.ZipFile(packed, "w") as zf:
        for f in (tmp_path / "a.zarr").rglob("*"):
            if f.is_file():
                zf.write(f, f.relative_to(tmp_path / "a.zarr").as_posix())
    zipped = zarr.open_array(zarr.storage.ZipStore(packed, mode="r"), mode="r")
    assert chunkio.plain_folder(zipped) is None


def _chunk_file(arr, row, j):
    return chunkio.plain_folder(arr) / arr.metadata.encode_chunk_key((row, j, 0, 0))


@pytest.mark.parametrize(
    ("damage", "kind", "detail"),
    [
        pytest.param(lambda p: p.unlink(), "missing", "", id="missing"),
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[:25]), "damaged", "checksum", id="truncated"),
        pytest.param(lambda p: p.write_bytes(b"\x00" + p.read_bytes()[1:]), "damaged", "checksum", id="flipped-byte"),
        pytest.param(lambda p: p.write_bytes(b"ab"), "damaged", "checksum", id="shorter-than-a-checksum"),
    ],
)
def test_a_bad_chunk_is_reported_for_its_clip_only(region, damage, kind, detail):
    damage(_chunk_file(region, 4, 1))  # the second chunk of the 130-frame clip
    folder = chunkio.plain_folder(region)
    got = chunkio.read_clips(region, folder, [(3, 65), (4, 130), (5, 200)])
    np.testing.assert_array_equal(got[0], region[3, :65])
    np.testing.assert_array_equal(got[2], region[5, :200])
    assert isinstance(got[1], chunkio.ChunkProblem)
    assert (got[1].kind, got[1].key) == (kind, "c/4/1/0/0")
    assert detail in got[1].detail
    # the clip's first chunk alone is still fine
    np.testing.assert_array_equal(chunkio.read_clips(region, folder, [(4, 64)])[0], region[4, :64])


def test_valid_checksum_over_bad_compression_is_damaged(region):
    import google_crc32c

    path = _chunk_file(region, 0, 0)
    body = b"not zstd at all"
    path.write_bytes(body + np.uint32(google_crc32c.value(body)).tobytes())
    (got,) = chunkio.read_clips(region, chunkio.plain_folder(region), [(0, 1)])
    assert isinstance(got, chunkio.ChunkProblem) and got.kind == "damaged" and "compression" in got.detail


def test_a_chunk_of_the_wrong_size_is_damaged(region):
    import google_crc32c
    from numcodecs.zstd import Zstd

    path = _chunk_file(region, 0, 0)
    body = Zstd().encode(b"\x01" * 100)  # valid zstd, checksummed, but not 64 frames of 9x7
    path.write_bytes(body + np.uint32(google_crc32c.value(body)).tobytes())
    (got,) = chunkio.read_clips(region, chunkio.plain_folder(region), [(0, 1)])
    assert isinstance(got, chunkio.ChunkProblem) and got.kind == "damaged" and "100 bytes" in got.detail


def test_written_chunks_are_what_zarr_writes_and_reads(tmp_path, region):
    rng = np.random.default_rng(5)
    folder = chunkio.plain_folder(region)
    for row, n in enumerate(LENGTHS):
        block = rng.integers(0, 256, (n, 9, 7), dtype=np.uint8)
        chunkio.write_clip(region, folder, row, block, level=1)
        np.testing.assert_array_equal(region[row, :n], block)  # Zarr reads them back
        assert not region[row, n:].any()  # zero past the clip (padding and unwritten chunks)
        np.testing.assert_array_equal(chunkio.read_clips(region, folder, [(row, n)])[0], block)
    # the same bytes as Zarr's own encoding of the same chunk
    with zarr.config.set({"array.write_empty_chunks": True}):
        other = zarr.create_array(str(tmp_path / "z.zarr"), shape=region.shape, chunks=region.chunks, dtype="uint8",
                                  fill_value=0, compressors=[zarr.codecs.ZstdCodec(level=1), zarr.codecs.Crc32cCodec()])
        other[5, :128] = region[5, :128]
    for j in (0, 1):
        assert (_chunk_file(other, 5, j).read_bytes() == _chunk_file(region, 5, j).read_bytes())
    assert not list(folder.rglob("*.tmp"))  # no temporary file left behind


def test_a_chunk_left_half_written_is_not_packed(tmp_path):
    from roi_store.store.share import _store_files

    root = tmp_path / "s"
    (root / "regions" / "R0" / "c" / "0" / "0" / "0").mkdir(parents=True)
    (root / "zarr.json").write_text("{}")
    (root / "regions" / "R0" / "c" / "0" / "0" / "0" / "0").write_bytes(b"chunk")
    (root / "regions" / "R0" / "c" / "0" / "0" / "0" / ".0.4242.tmp").write_bytes(b"half a chu")
    assert [name for name, _ in _store_files(root)] == ["regions/R0/c/0/0/0/0", "zarr.json"]


def test_a_failed_write_leaves_no_temporary_file(region, monkeypatch):
    folder = chunkio.plain_folder(region)

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(chunkio.os, "replace", broken)
    with pytest.raises(OSError, match="No space"):
        chunkio.write_clip(region, folder, 0, np.ones((3, 9, 7), np.uint8), level=1)
    assert not list(folder.rglob("*.tmp"))
