"""Released format archives: every layout of formats 1 and 2 in ``tests/data`` reads back, from its zip and unpacked."""

from __future__ import annotations

import importlib.util
import json
import zipfile
from hashlib import sha256
from pathlib import Path

import numpy as np
import pytest
import zarr

import roi_store
from roi_store.errors import RoiStoreError
from roi_store.store.export import export_features, export_run
from roi_store.store.runs import commit_doc, head_document, list_runs, run_document, run_status
from roi_store.store.validate import validate_store

DATA = Path(__file__).parent / "data"
#: Each archive and its time chunk: one chunk per clip row, or 64 frames (formats 1 and 2 allow both).
LAYOUTS = {"format-v1-row-chunks": "t_max", "format-v1-time-chunks": 64, "format-v2-flow": "t_max"}


def expected(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def make_script():
    spec = importlib.util.spec_from_file_location("make_format_stores", DATA / "make_format_stores.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def unpack(name: str, folder: Path) -> Path:
    with zipfile.ZipFile(DATA / f"{name}.zip") as zf:
        zf.extractall(folder)
    return folder


@pytest.fixture(params=["zip", "folder"])
def opened(request, tmp_path):
    """Open an archive as a reader finds it: the zip itself, or unpacked into a folder (read-only)."""

    def open_archive(name: str) -> roi_store.Store:
        where = DATA / f"{name}.zip" if request.param == "zip" else unpack(name, tmp_path / f"{name}.zarr")
        store = roi_store.open_store(where)
        request.addfinalizer(store.close)
        assert store.source == ("zip" if request.param == "zip" else "dir") and store.mode == "r"
        return store

    return open_archive


def test_every_archive_has_its_expectation_and_its_maker():
    archives = sorted(p.stem for p in DATA.glob("*.zip"))
    assert archives == sorted(LAYOUTS) == sorted(make_script().ARCHIVES)
    for name in archives:
        assert (DATA / f"{name}.json").is_file()
        assert (DATA / f"{name}.zip").stat().st_size < 1_000_000  # kept small: they live in the repository


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_clips_read_back_as_they_were_written(opened, name):
    expect = expected(name)
    before = sha256((DATA / f"{name}.zip").read_bytes()).hexdigest()
    store = opened(name)
    assert store.header["format_version"] == expect["format_version"] == int(name[len("format-v")])
    assert store.regions == expect["regions"] and store.t_max == expect["t_max"]
    # Format 2 holds the whole-face crops beside the regions; format 1 reads without them.
    assert store.arrays == [*store.regions, *(["face"] if expect["format_version"] >= 2 else [])]
    step = store.t_max if LAYOUTS[name] == "t_max" else LAYOUTS[name]
    assert all(store.array(r).chunks[1] == step for r in store.regions)
    assert [c.id for c in store.clips] == list(expect["clips"])
    for clip in store.clips:
        want = expect["clips"][clip.id]
        assert clip.n_frames == want["n_frames"] and clip.emotion == want["emotion"]
        for region in store.arrays:
            frames = store.frames(clip.id, region)
            assert frames.dtype == np.uint8 and frames.shape == (clip.n_frames, *store.array(region).shape[2:])
            assert sha256(frames.tobytes()).hexdigest() == want["frames"][region]
            assert frames[-1].mean() > frames[0].mean()  # later frames were brightened: time order kept
            assert not store.array(region)[clip.row, clip.n_frames:].any()  # the padding is zero
    report = validate_store(store)
    assert report.ok, report.problems
    assert report.incomplete == [] and report.clips == len(expect["clips"])
    assert sha256((DATA / f"{name}.zip").read_bytes()).hexdigest() == before  # reading never writes


def test_a_clip_of_several_time_chunks_reads_across_them(opened):
    store = opened("format-v1-time-chunks")
    long = max(store.clips, key=lambda c: c.n_frames)
    step = store.array("R0").chunks[1]
    assert store.t_max > step == 64 and long.n_frames > step  # two chunks, the second one part padding
    assert long["frame_numbers"][:2] == [60, 61] and long["frame_numbers"][39:41] == [99, 100]  # sorted as numbers
    for region in store.regions:
        frames = store.frames(long.id, region)
        across = store.array(region)[long.row, step - 3:step + 3]  # a slice spanning the chunk boundary
        np.testing.assert_array_equal(across, frames[step - 3:step + 3])
        np.testing.assert_array_equal(frames[step - 1], frames[step - 16])  # one brightness per 16 frames
        assert frames[step].mean() > frames[step - 1].mean()
    # Several clips at once (one read of each chunk): the same frames as one by one.
    ids = [c.id for c in store.clips]
    for got, clip_id in zip(store.clips_frames(ids, "R5"), ids):
        np.testing.assert_array_equal(got, store.frames(clip_id, "R5"))


def test_the_committed_run_reads_back(opened, tmp_path):
    expect = expected("format-v1-time-chunks")["runs"]
    store = opened("format-v1-time-chunks")
    assert [r["name"] for r in list_runs(store)] == list(expect) == ["tiny"]
    want = expect["tiny"]
    status = run_status(store, "tiny")
    assert (status["state"], status["stage"]) == (want["state"], want["stage"]) == ("complete", "embed")
    assert status["folds"] == want["folds"] and status["writer"] is None
    doc = run_document(store, "tiny")
    assert doc["settings"] == want["settings"] and doc["classes"] == want["classes"]
    assert doc["clips"] == want["clips"] == [c.id for c in store.clips] and doc["labels"] == want["labels"]
    assert [f["test_clips"] for f in doc["folds"]] == want["test_clips"]
    assert doc["embedding_folds"] == want["embedding_folds"] and doc["state"] == "complete"
    assert commit_doc(store, "tiny", "embed")["checksum"] == want["checksum"]
    assert commit_doc(store, "tiny", "head") is None
    with pytest.raises(RoiStoreError, match="has no fitted head"):
        head_document(store, "tiny")
    # The embeddings, read by export as any reader would: clip i's frames, unpadded.
    export_run(store, "tiny", tmp_path / "tiny.npz", "npz")
    with np.load(tmp_path / "tiny.npz", allow_pickle=False) as got:
        assert list(got["clip_ids"]) == want["clips"] and list(got["n_frames"]) == [c.n_frames for c in store.clips]
        for region, digest in want["embeddings"].items():
            stored = store.zgroup[f"runs/tiny/embeddings/{region}"][:]
            assert stored.dtype == np.float16 and stored.shape[2] == store.t_max
            assert sha256(stored.tobytes()).hexdigest() == digest
            rows = [stored[:, i, :n] for i, n in enumerate(got["n_frames"])]
            np.testing.assert_array_equal(got[f"embeddings/{region}"], np.concatenate(rows, axis=1))
    report = validate_store(store)
    assert report.ok, report.problems
    assert [(r["name"], r["state"]) for r in report.runs] == [("tiny", "complete")]


def test_the_feature_set_reads_back(opened, tmp_path):
    want = expected("format-v2-flow")["feature_sets"]["flow16"]
    store = opened("format-v2-flow")
    assert store.feature_sets() == ["flow16"]
    fset = store.features("flow16")
    assert {k: fset.attrs[k] for k in want["attrs"]} == want["attrs"]
    assert fset.clips == want["clips"] and [int(k) for k in fset.apex["frame"]] == want["apex"]
    for crop, digest in want["arrays"].items():
        data = fset.face if crop == "face" else fset.region(crop)
        assert data.dtype == np.float32 and data.shape == (len(want["clips"]), 16, 16, 3)
        assert sha256(data.tobytes()).hexdigest() == digest
    export_features(store, "flow16", tmp_path / "flow16.npz", "npz")
    with np.load(tmp_path / "flow16.npz", allow_pickle=False) as got:
        assert list(got["clip_ids"]) == want["clips"]
        assert sha256(got["face"].tobytes()).hexdigest() == want["arrays"]["face"]
    report = validate_store(store)
    assert report.ok, report.problems
    assert report.features == [{"name": "flow16", "state": "complete", "done": 3, "clips": 3}]


def test_a_format_1_store_has_no_face_crops_until_upgraded(opened):
    store = opened("format-v1-row-chunks")
    with pytest.raises(RoiStoreError, match="format 1 store without face crops: run 'roistore upgrade "):
        store.frames(store.clips[0].id, "face")
    assert store.feature_sets() == []


def test_row_chunks_of_a_long_clip_read_the_same(tmp_path):
    """The first stores of format 1 hold one chunk per clip row, ``t_max`` frames long: readers take
    the chunk from the array, whatever ``t_max`` is."""
    name = "format-v1-time-chunks"
    folder = unpack(name, tmp_path / "rows.zarr")
    group = zarr.open_group(str(folder), mode="r+")
    for region in expected(name)["regions"]:
        old = group[f"regions/{region}"]
        data, attrs = old[:], dict(old.attrs)
        del group[f"regions/{region}"]
        new = group.create_array(f"regions/{region}", shape=old.shape, chunks=(1, old.shape[1], *old.shape[2:]),
                                 dtype=old.dtype, fill_value=0, compressors=old.compressors,
                                 dimension_names=old.metadata.dimension_names, attributes=attrs)
        new[:] = data
    with roi_store.open_store(folder) as store:
        assert store.array("R0").chunks[1] == store.t_max == 80
        for clip in store.clips:
            for region in store.regions:
                got = sha256(store.frames(clip.id, region).tobytes()).hexdigest()
                assert got == expected(name)["clips"][clip.id]["frames"][region]
        report = validate_store(store)
        assert report.ok, report.problems


def test_the_maker_never_replaces_an_archive(tmp_path):
    script = make_script()
    for name in LAYOUTS:
        (tmp_path / f"{name}.zip").write_bytes(b"kept")
        with pytest.raises(FileExistsError, match="never made again"):
            script.make(name, tmp_path)
        assert (tmp_path / f"{name}.zip").read_bytes() == b"kept"
