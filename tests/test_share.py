"""Sharing a store: zip and fsspec URLs read-only, ``pack``, ``export``, released formats."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr
from click.testing import CliRunner

import roi_store
from roi_store.store import format as fmt
from roi_store.cli.main import cli
from roi_store.errors import FormatVersionError, StoreError
from roi_store.evaluation.report import run_report
from roi_store.store.run_writer import RunWriter
from roi_store.store.runs import COMMIT, head_document
from roi_store.store.share import pack_store
from roi_store.store.validate import validate_store

from conftest import copy_fitted


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(result, *parts):
    """The command failed with exit 1 and one 'Error: ...' line holding every part."""
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for part in parts:
        assert part in lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, small_fitted):
    """A CASME II store (10 clips, 9 in megc2019) with run 'main' embedded (2 folds) and fitted (the
    session's, copied); its zip."""
    tmp = tmp_path_factory.mktemp("share")
    store = copy_fitted(small_fitted, tmp)
    packed = tmp / "s.zip"
    pack_store(store, packed)
    return store, packed, tmp


def zip_folder(folder: Path, out: Path, extra: dict | None = None, under: str = "") -> Path:
    with zipfile.ZipFile(out, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, under + path.relative_to(folder).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return out


# --- reading: zip and URLs --------------------------------------------------------------------

def test_zip_and_urls_read_what_the_folder_holds(fitted):
    store, packed, _ = fitted
    folder = roi_store.open_store(store)
    clip = folder.clips[0].id
    for where, source in ((packed, "zip"), (str(packed), "zip"), (f"file://{store}", "url"),
                          (f"file://{packed}", "url"), (f"zip://::file://{packed}", "url")):
        with roi_store.open_store(where) as other:
            assert other.source == source and other.where == str(where)
            assert [c.id for c in other.clips] == [c.id for c in folder.clips]
            assert other.clips[0].data == folder.clips[0].data
            for region in ("R0", "R5"):
                np.testing.assert_array_equal(other.frames(clip, region), folder.frames(clip, region))
            assert other.summary() == {**folder.summary(), "store": str(where)}
    report = validate_store(roi_store.open_store(packed))
    run_chunks = sum(r["chunks"] for r in report.runs)
    # One chunk per clip of each region and of the face crops (format 2).
    assert report.ok and report.chunks - run_chunks == len(folder.clips) * 7
    assert [r["name"] for r in report.runs] == ["main"]


def test_read_commands_work_on_a_zip_and_a_file_url(fitted):
    store, packed, tmp = fitted
    expect = run_report(roi_store.open_store(store), "main")
    for where in (packed, f"file://{store}", f"file://{packed}"):
        info = json.loads(run("info", where, "--json").output)
        assert info["clips"] == 10 and info["views"]["megc2019"]["clips"] == 9 and info["store"] == str(where)
        checked = json.loads(run("validate", where, "--json").output)
        assert checked["ok"] and checked["chunks"] - sum(r["chunks"] for r in checked["runs"]) == 10 * 7
        rep = json.loads(run("report", where, "--run", "main", "--json").output)
        assert rep["scores"] == expect["scores"] and rep["predictions"] == expect["predictions"]
    result = run("preview", packed, expect["predictions"][0]["id"], "-o", tmp / "p.png")
    assert result.exit_code == 0, result.output
    assert (tmp / "p.png").stat().st_size > 1000
    clip = sorted((tmp / "data" / "CASME2" / "CASME2_RAW_selected" / "sub01").iterdir())[0]
    result = run("predict", packed, "--run", "main", clip, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{"):])["models"] == 2


def test_writing_to_a_zip_or_url_fails_in_one_line(fitted, plain, manifest_dataset):
    _, packed, _ = fitted
    root, manifest = manifest_dataset
    one_line_error(run("ingest", packed, "--dataset", "manifest", "--root", root, "--annotations", manifest),
                   f"{packed} is a zip archive and opens read-only", "unpack it into a folder", "directory store")
    one_line_error(run("fit-lstm", packed, "--run", "main", "--epochs", "1"), "opens read-only", "unpack")
    one_line_error(run("ingest", f"file://{plain}", "--dataset", "manifest", "--root", root, "--annotations", manifest),
                   "is a URL and opens read-only", "local folder")
    with pytest.raises(StoreError, match="zip archive and opens read-only"):
        roi_store.open_store(packed, mode="r+")
    with roi_store.open_store(packed) as store, pytest.raises(StoreError, match="unpack it"):
        store.write_record(store.clips[0].data)
    with pytest.raises(StoreError, match="open read-only: open it with mode='r\\+'"):
        roi_store.open_store(plain).update_header(t_max=5)


def test_a_zip_that_is_not_a_store_is_one_line(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hello")
    zipped = zip_folder(tmp_path / "junk", tmp_path / "junk.zip")
    one_line_error(run("info", zipped), "is a zip archive but holds no store at its top", "roistore pack")
    (tmp_path / "fake.zip").write_text("not a zip")
    one_line_error(run("validate", tmp_path / "fake.zip"), "is a file but not a zip archive")
    one_line_error(run("info", tmp_path / "missing.zip"), "no such file")
    one_line_error(run("info", f"file://{tmp_path}/missing.zarr"), "no roistore store at", "no Zarr group")


def test_a_zipped_store_folder_opens_too(plain, tmp_path):
    # What 'zip -r store.zip store.zarr' makes: the store one folder down, deflated.
    zipped = zip_folder(plain, tmp_path / "by-hand.zip", under="store.zarr/")
    with roi_store.open_store(zipped) as store:
        assert len(store.clips) == 3 and validate_store(store).ok


@pytest.mark.parametrize("name", [
    pytest.param("../evil.json", id="parent"),
    pytest.param("clips/../../zarr.json", id="parent-inside"),
    pytest.param("/etc/zarr.json", id="absolute"),
    pytest.param("regions\\R0\\zarr.json", id="backslash"),
])
def test_zip_members_that_could_escape_are_refused(plain, tmp_path, name):
    zipped = zip_folder(plain, tmp_path / "trap.zip", extra={name: b"{}"})
    with pytest.raises(StoreError, match="unsafe name"):
        roi_store.open_store(zipped)
    with pytest.raises(StoreError, match="unsafe name"):
        roi_store.open_store(f"zip://::file://{zipped}")
    one_line_error(run("info", zipped), "unsafe name", "roistore pack")


def test_zarr_reads_zip_members_by_key_only(plain, tmp_path):
    # Without the check, a member named '../x' is just a key nothing asks for: nothing escapes.
    (tmp_path / "x").write_text("outside")
    zipped = zip_folder(plain, tmp_path / "trap.zip", extra={"../x": b"inside"})
    zs = zarr.storage.ZipStore(zipped, mode="r")
    group = zarr.open_group(zs, mode="r")
    assert "roistore" in group.attrs and (tmp_path / "x").read_text() == "outside"
    zs.close()


def test_missing_protocol_package_and_unknown_protocol(monkeypatch):
    from fsspec.registry import known_implementations

    monkeypatch.setitem(known_implementations, "labfs",
                        {"class": "roistore_no_such_package.LabFS", "err": "Install labfs-driver to access lab shares"})
    with pytest.raises(StoreError, match=r"labfs:// protocol needs a package .*labfs-driver.*pip install"):
        roi_store.open_store("labfs://server/store.zarr")
    one_line_error(run("info", "nosuchproto://x/store.zarr"), "unknown protocol 'nosuchproto'")


# --- pack -------------------------------------------------------------------------------------

def test_pack_makes_one_stored_zip_that_validates(plain, tmp_path):
    result = run("pack", plain, tmp_path / "out.zip")
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "3 clips, 0 runs" in result.output
    with zipfile.ZipFile(tmp_path / "out.zip") as zf:
        infos = zf.infolist()
        assert {i.compress_type for i in infos} == {zipfile.ZIP_STORED}
        assert "zarr.json" in zf.namelist() and not any(n.startswith("/") or ".." in n for n in zf.namelist())
        assert zf.testzip() is None
    assert json.loads(run("validate", tmp_path / "out.zip", "--json").output)["ok"]
    # The same store packs to the same bytes (a checksum can be sent beside it).
    pack_store(plain, tmp_path / "again.zip")
    assert (tmp_path / "again.zip").read_bytes() == (tmp_path / "out.zip").read_bytes()
    one_line_error(run("pack", plain, tmp_path / "out.zip"), "exists", "--overwrite")
    assert run("pack", plain, tmp_path / "out.zip", "--overwrite").exit_code == 0
    one_line_error(run("pack", plain, plain / "inside.zip"), "lies inside the store")
    one_line_error(run("pack", tmp_path / "out.zip", tmp_path / "x.zip"), "not a store folder")


def test_pack_refuses_unfinished_stores_unless_forced(plain, tmp_path):
    store = roi_store.open_store(plain, mode="r+")
    store.write_record({**store.clips[0].data, "status": "pending"})
    out = tmp_path / "out.zip"
    one_line_error(run("pack", plain, out), "is not finished: 1 clip is pending (lab/p1/a)", "--force")
    assert not out.exists() and not list(tmp_path.glob(".out.zip.*"))
    doc = {"kind": "region-cnn+lstm", "classes": ["a", "b"], "regions": store.regions, "clips": [], "labels": [],
           "true_labels": [], "leakage": False,
           "settings": {"view": "megc2019", "protocol": "loso", "epochs": 1, "batch_size": 1, "seed": 0,
                        "cnn_scope": "fold", "input": "delta", "relabel": "au", "permute_labels": None},
           "folds": [{"index": 0, "name": "f0", "test_subjects": [], "test_clips": []}]}
    writer = RunWriter.claim(store, "busy", "embed")  # this live process writes run 'busy'
    try:
        writer.plan_embed(doc, overwrite=False)
        one_line_error(run("pack", plain, out), "1 clip is pending", "run 'busy' is running", "--force")
        result = CliRunner().invoke(cli, ["pack", str(plain), str(out), "--force"])
        assert result.exit_code == 0, result.output
        assert "WARNING: packed although run 'busy' is running" in result.output
    finally:
        writer.release()
    assert roi_store.open_store(out).summary()["pending"] == ["lab/p1/a"]


def test_pack_is_atomic(plain, tmp_path, monkeypatch):
    import roi_store.store.share as share

    out = tmp_path / "out.zip"
    out.write_bytes(b"the previous file")
    calls = []
    copy = shutil.copyfileobj

    def failing_copy(src, dst, length=0):
        calls.append(1)
        if len(calls) > 5:
            raise OSError("disk full")
        copy(src, dst)

    monkeypatch.setattr(share.shutil, "copyfileobj", failing_copy)
    with pytest.raises(OSError, match="disk full"):
        pack_store(plain, out, overwrite=True)
    assert out.read_bytes() == b"the previous file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zip", "v1.zarr"]


# --- export -----------------------------------------------------------------------------------

def load_export(path: Path, fmt_name: str) -> dict:
    if fmt_name == "npz":
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    out = {}
    with h5py.File(path, "r") as f:
        def take(name, node):
            if isinstance(node, h5py.Dataset):
                kind = h5py.check_string_dtype(node.dtype)
                if kind is not None:  # variable-length UTF-8: what MATLAB reads as text
                    assert kind.encoding == "utf-8" and kind.length is None
                    out[name] = np.array(node.asstr()[()], dtype=np.str_)
                else:
                    out[name] = node[()]
        f.visititems(take)
        assert f.attrs["format"] == "roistore-export" and f.attrs["run"] == "main"
    return out


@pytest.mark.parametrize("fmt_name", ["hdf5", "npz"])
def test_export_holds_the_run(fitted, fmt_name):
    store_path, packed, tmp = fitted
    out = tmp / f"main.{fmt_name}"
    result = run("export", packed, "--run", "main", "--format", fmt_name, out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert "9 clips" in result.output and "predictions included" in result.output
    got = load_export(out, fmt_name)
    store = roi_store.open_store(store_path)
    doc = store.zgroup["runs/main"].attrs["run"]
    head = head_document(store, "main")
    ids = doc["clips"]
    assert list(got["clip_ids"]) == ids
    assert list(got["datasets"]) == ["casme2"] * 9 and list(got["subjects"]) == [c.split("/")[1] for c in ids]
    assert list(got["classes"]) == doc["classes"] == ["negative", "positive", "surprise"]
    assert list(got["labels"]) == doc["true_labels"] == list(got["train_labels"])
    assert [doc["classes"][i] for i in got["label_index"]] == doc["true_labels"]
    lengths = [store.clip(c).n_frames for c in ids]
    assert list(got["n_frames"]) == lengths and list(got["offsets"]) == list(np.cumsum([0, *lengths[:-1]]))
    for region in store.regions:
        padded = store.zgroup[f"runs/main/embeddings/{region}"][:]
        flat = got[f"embeddings/{region}"]
        assert flat.dtype == np.float16 and flat.shape == (2, sum(lengths), 20)
        for i, (start, n) in enumerate(zip(got["offsets"], lengths)):
            np.testing.assert_array_equal(flat[:, start:start + n], padded[:, i, :n])
    assert list(got["fold_names"]) == [f["name"] for f in doc["folds"]] and list(got["embedding_fold"]) == [0, 1]
    for k, fold in enumerate(head["folds"]):
        assert [c for c, m in zip(ids, got["fold_test"][k]) if m] == sorted(fold["test_clips"], key=ids.index)
        assert [c for c, m in zip(ids, got["fold_train"][k]) if m] == fold["head_train_clips"]
        assert [c for c, m in zip(ids, got["fold_cnn_train"][k]) if m] == sorted(fold["cnn_train_clips"], key=ids.index)
    preds = {p["id"]: p for p in head["predictions"]}
    assert list(got["test_fold"]) == [preds[c]["fold"] for c in ids]
    assert list(got["pred"]) == [preds[c]["pred"] for c in ids]
    assert [doc["classes"][i] for i in got["pred_index"]] == list(got["pred"])
    np.testing.assert_allclose(got["probs"], [preds[c]["probs"] for c in ids], rtol=1e-6)
    meta = json.loads(str(got["meta"]))
    assert meta["format"] == "roistore-export" and meta["run"] == "main" and meta["fitted"] is True
    assert meta["store_format_version"] == fmt.FORMAT_VERSION
    assert meta["leakage"] is False and meta["embedding_folds"] == 2


def test_export_of_an_unfitted_run_and_errors(fitted, tmp_path):
    store_path, _, _ = fitted
    copy = tmp_path / "copy.zarr"
    shutil.copytree(store_path, copy, ignore=shutil.ignore_patterns("models"))
    del zarr.open_group(str(copy), mode="r+")["runs/main/head"]
    out = tmp_path / "e.npz"
    result = run("export", copy, "--run", "main", "--format", "npz", out)
    assert result.exit_code == 0 and "predictions absent (head not fitted)" in result.output
    got = load_export(out, "npz")
    assert "pred" not in got and "probs" not in got and got["fold_train"].sum() == 9
    one_line_error(run("export", copy, "--run", "main", "--format", "npz", out), "exists", "--overwrite")
    one_line_error(run("export", copy, "--run", "nope", "--format", "hdf5", tmp_path / "x.h5"), "no run 'nope'")
    del zarr.open_group(str(copy), mode="r+")[f"runs/main/{COMMIT}"]  # an embed that never committed
    one_line_error(run("export", copy, "--run", "main", "--format", "hdf5", tmp_path / "x.h5"),
                   "run 'main' has no complete embed", "re-run the same 'roistore embed")
    assert not (tmp_path / "x.h5").exists()


# --- released formats -------------------------------------------------------------------------

@pytest.mark.parametrize("change, message, error", [
    pytest.param({"format_version": fmt.FORMAT_VERSION + 1}, f"format version {fmt.FORMAT_VERSION + 1}, newer than",
                 "upgrade roistore",
                 id="future-version"),
    pytest.param({"format_version": 0}, "format version 0, which this roistore", "no longer reads", id="old-version"),
    pytest.param({"format": "roistore-legacy"}, "names format 'roistore-legacy', not 'roistore'", "cannot read",
                 id="unknown-name"),
])
def test_other_formats_fail_with_a_hint(plain, tmp_path, change, message, error):
    group = zarr.open_group(str(plain), mode="r+")
    group.attrs[fmt.ATTRS_KEY] = {**group.attrs[fmt.ATTRS_KEY], **change}
    zipped = zip_folder(plain, tmp_path / "other.zip")
    for where in (plain, zipped, f"file://{zipped}"):
        with pytest.raises(FormatVersionError, match=message):
            roi_store.open_store(where)
    one_line_error(run("info", zipped), message, error)
