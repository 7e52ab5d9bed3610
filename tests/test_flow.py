"""Onset-apex flow feature sets: ``roistore flow``, the FeatureSet contract, validate, info, pack, export, upgrade."""

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
from roi_store.cli.main import cli
from roi_store.ingest import flow as fl
from roi_store.ingest.pipeline import ingest
from roi_store.method.embed import plan_run
from roi_store.store import format as fmt
from roi_store.store.validate import validate_store
from roi_store.synth import generate


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def ok(result):
    assert result.exit_code == 0, result.output
    return result.output


def one_line_error(result, *parts):
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="session")
def flow_store(tmp_path_factory):
    """CASME II (annotated apex) and SMIC (none): two subjects each, one clip per class, 6 frames; its data root."""
    tmp = tmp_path_factory.mktemp("flow")
    generate(tmp / "data", preset="tiny", seed=4, datasets=("casme2", "smic"), subjects=2, clips_per_class=1, frames=6)
    store = tmp / "s.zarr"
    ingest(store, "casme2", tmp / "data" / "CASME2" / "CASME2_RAW_selected")
    ingest(store, "smic", tmp / "data" / "SMIC" / "HS")
    return store


@pytest.fixture(scope="session")
def middle(flow_store):
    """The store with set ``mid`` (TV-L1, 28 px, middle apex), computed by the command with two workers."""
    ok(run("flow", flow_store, "--name", "mid", "--estimator", "tvl1", "--size", "28", "--apex", "middle",
           "--jobs", "2", "--no-progress"))
    return flow_store


def test_strain_is_the_strain_tensor_magnitude():
    y, x = np.mgrid[0:16, 0:16].astype(np.float32)
    # u = 0.2 x, v = 0.1 y + 0.3 x: ux 0.2, vy 0.1, uy 0, vx 0.3.
    got = fl.strain(0.2 * x, 0.1 * y + 0.3 * x)
    np.testing.assert_allclose(got, np.sqrt(0.2 ** 2 + 0.1 ** 2 + 0.5 * 0.3 ** 2), rtol=1e-5)


@pytest.mark.parametrize("estimator", ["tvl1", "farneback"])
def test_a_shifted_image_gives_its_shift(estimator):
    rng = np.random.default_rng(0)
    import cv2

    base = cv2.GaussianBlur(rng.integers(0, 255, (80, 80), dtype=np.uint8), (0, 0), 2)
    uv = fl.flow(base[10:70, 10:70], base[10:70, 8:68], estimator)  # content moves 2 px right
    assert abs(float(np.median(uv[..., 0])) - 2.0) < 0.3 and abs(float(np.median(uv[..., 1]))) < 0.3


def test_flow_set_follows_the_feature_set_contract(middle):
    with roi_store.open_store(middle) as store:
        assert store.feature_sets() == ["mid"] or "mid" in store.feature_sets()
        fset = store.features("mid")
        ids = [c.id for c in store.clips]
        assert fset.name == "mid" and fset.clips == ids
        assert fset.subjects == [f"{c.dataset}/{c.subject}" for c in store.clips]
        assert fset.datasets == [c.dataset for c in store.clips] and set(fset.datasets) == {"casme2", "smic"}
        assert fset.labels("megc2019") == [c.labels.get("megc2019") for c in store.clips]
        attrs = fset.attrs
        assert (attrs["estimator"], attrs["size"], attrs["apex_rule"]) == ("tvl1", 28, "middle")
        assert attrs["parameters"]["tvl1"] == fl.TVL1 and attrs["versions"]["opencv"]
        assert len(attrs["source_digest"]) == 64 and attrs["channels"] == ["u", "v", "strain"]
        face = fset.face
        assert face.dtype == np.float32 and face.shape == (len(ids), 28, 28, 3)
        for region in store.regions:
            assert fset.region(region).shape == (len(ids), 28, 28, 3)
        apex = fset.apex
        assert apex["source"] == ["middle"] * len(ids)
        assert list(apex["frame"]) == [c.n_frames // 2 for c in store.clips] and not apex["onset"].any()
        # The stored maps are the flow of the stored crops, as the library computes them here.
        k = 1
        frames = store.frames(ids[k], "face")
        want = fl.onset_apex_flow(frames[0], frames[apex["frame"][k]], 28, "tvl1")
        np.testing.assert_allclose(face[k], want, atol=1e-5)
        assert np.abs(face[..., :2]).mean() > 0.01  # synthetic clips move between onset and apex
        # Folds: the method's own LOSO plan of the composite, over the set's rows.
        _, _, plan = plan_run(store, "megc2019", "loso", None, 0, None)
        folds = fset.folds("megc2019")
        assert [f["test_subjects"] for f in folds] == [f["test_subjects"] for f in plan]
        for got, want in zip(folds, plan):
            assert got["test_clips"] == want["test_clips"] and got["train_clips"] == want["train_clips"]
            assert [ids[i] for i in got["test_index"]] == got["test_clips"]
        kfold = fset.folds("megc2019", "kfold", folds=2, seed=1)
        _, _, plan = plan_run(store, "megc2019", "kfold", 2, 1, None)
        assert [f["test_clips"] for f in kfold] == [f["test_clips"] for f in plan]


def test_annotated_apex_refuses_clips_without_one(flow_store):
    line = one_line_error(run("flow", flow_store, "--name", "ann", "--apex", "annotated", "--no-progress"),
                          "--apex annotated: 6 clips have no annotated apex", "smic/s1/s1_ne_01, smic/s1/s1_po_01",
                          "use --apex middle")
    assert "casme2" not in line
    with roi_store.open_store(flow_store) as store:
        assert "ann" not in store.feature_sets()


def test_max_flow_apex_is_estimated_and_its_distance_reported(flow_store):
    out = json.loads(ok(run("flow", flow_store, "--name", "mf", "--estimator", "farneback", "--size", "16",
                            "--apex", "max-flow", "--no-progress", "--json")))
    assert out["clips"] == out["computed"] == 13 and out["apex_sources"] == {"estimated": 13}
    assert set(out["apex_error"]) == {"casme2", "all"} and out["apex_error"]["casme2"]["clips"] == 7
    err = out["apex_error"]["casme2"]
    assert err["q1"] <= err["median"] <= err["q3"] <= 5
    text = ok(run("flow", flow_store, "--name", "mf", "--estimator", "farneback", "--size", "16", "--apex",
                  "max-flow", "--no-progress"))
    assert "0 computed now, 13 before" in text and "max-flow apex vs annotated, casme2: median" in text
    with roi_store.open_store(flow_store) as store:
        fset = store.features("mf")
        assert fset.attrs["apex_error"]["casme2"] == err and fset.attrs["parameters"]["apex_search"] == fl.APEX_SEARCH
        by_id = {c.id: c for c in store.clips}
        for clip, k in zip(fset.clips, fset.apex["frame"]):
            assert 0 < k < by_id[clip].n_frames


def test_other_options_under_one_name_are_refused_then_overwritten(middle):
    one_line_error(run("flow", middle, "--name", "mid", "--size", "32", "--apex", "middle", "--no-progress"),
                   "feature set 'mid'", "was made with --estimator tvl1 --size 28 --apex middle", "--overwrite")
    shutil.copytree(middle, middle.parent / "copy.zarr", dirs_exist_ok=True)
    copy = middle.parent / "copy.zarr"
    ok(run("flow", copy, "--name", "mid", "--size", "32", "--estimator", "farneback", "--apex", "middle",
           "--overwrite", "--no-progress"))
    with roi_store.open_store(copy) as store:
        assert store.features("mid").face.shape[1:] == (32, 32, 3)
        assert validate_store(store).ok


def test_an_interrupted_set_resumes_to_the_same_values(middle, tmp_path, monkeypatch):
    store = tmp_path / "s.zarr"
    shutil.copytree(middle, store)
    real, calls = fl.flow_clip, []

    def dies_on_the_fifth(*args):
        calls.append(args)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(fl, "flow_clip", dies_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        fl.compute_flow(store, "again", estimator="tvl1", size=28, apex="middle")
    monkeypatch.setattr(fl, "flow_clip", real)
    with roi_store.open_store(store) as opened:
        assert "again" in opened.feature_sets()
        one = run("info", store)
        assert "feature set again: tvl1 flow, 28 px, apex middle, 13 clips, running: 4 done" in ok(one)
        with pytest.raises(roi_store.errors.StoreError, match="is not complete .4 of 13 clips.: resume it"):
            opened.features("again")
        assert validate_store(opened).ok
    one_line_error(run("pack", store, tmp_path / "s.zip"),
                   "feature set 'again' is running (re-run its 'roistore flow')", "--force")
    text = ok(run("flow", store, "--name", "again", "--apex", "middle", "--no-progress"))
    assert "13 clips (9 computed now, 4 before)" in text
    with roi_store.open_store(store) as opened:
        again, mid = opened.features("again"), opened.features("mid")
        np.testing.assert_array_equal(again.face, mid.face)
        np.testing.assert_array_equal(again.region("R5"), mid.region("R5"))
        assert again.attrs["source_digest"] == mid.attrs["source_digest"]


def test_validate_checks_a_sets_chunks(middle, tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(middle, store)
    out = json.loads(ok(run("validate", store, "--json")))
    assert {"name": "mid", "state": "complete", "done": 13, "clips": 13} in out["feature_sets"]
    chunks = sorted((store / "features" / "mid" / "R2").rglob("*"))
    chunk = next(p for p in chunks if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(chunk.read_bytes()[:20])
    result = run("validate", store)
    assert result.exit_code == 1 and "problem: feature set mid: clip " in result.output
    assert "features/mid/R2/" in result.output and "is damaged" in result.output


def test_info_pack_zip_and_url_read_the_set(middle, tmp_path):
    assert "feature set mid: tvl1 flow, 28 px, apex middle, 13 clips" in ok(run("info", middle))
    summary = json.loads(ok(run("info", middle, "--json")))
    assert summary["feature_sets"]["mid"] == {"state": "complete", "estimator": "tvl1", "size": 28, "apex": "middle",
                                              "clips": 13, "done": 13}
    ok(run("pack", middle, tmp_path / "s.zip"))
    with roi_store.open_store(middle) as here:
        want = here.features("mid").face
    for where in (tmp_path / "s.zip", f"file://{tmp_path / 's.zip'}"):
        with roi_store.open_store(where) as packed:
            np.testing.assert_array_equal(packed.features("mid").face, want)
    with zipfile.ZipFile(tmp_path / "s.zip") as zf:
        assert not [n for n in zf.namelist() if n.endswith("LOCK")]
    one_line_error(run("flow", tmp_path / "s.zip", "--name", "x", "--apex", "middle"), "opens read-only")


@pytest.mark.parametrize("kind", ["npz", "hdf5"])
def test_export_writes_arrays_labels_and_folds(middle, tmp_path, kind):
    out = tmp_path / f"mid.{kind}"
    text = ok(run("export", middle, "--features", "mid", "--format", kind, out))
    assert text.strip() == f"wrote {out} ({kind}): feature set mid, 13 clips"
    if kind == "npz":
        with np.load(out, allow_pickle=False) as f:
            got = {k: f[k] for k in f.files}
    else:
        with h5py.File(out) as f:
            got = {}
            f.visititems(lambda k, v: got.__setitem__(k, v.asstr()[()] if v.dtype.kind == "O" else v[()])
                         if isinstance(v, h5py.Dataset) else None)
    with roi_store.open_store(middle) as store:
        fset = store.features("mid")
        assert list(got["clip_ids"]) == fset.clips and list(got["subjects"]) == fset.subjects
        np.testing.assert_array_equal(got["face"], fset.face)
        np.testing.assert_array_equal(got["regions/R3"], fset.region("R3"))
        assert list(got["labels/megc2019"]) == [v or "" for v in fset.labels("megc2019")]
        folds = fset.folds("megc2019")
        for fold in folds:
            assert [fset.clips[i] for i in np.flatnonzero(got["folds/megc2019/test_fold"] == fold["index"])] == \
                fold["test_clips"]
        assert list(got["folds/megc2019/fold_names"]) == [f["name"] for f in folds]
        assert list(got["apex_frame"]) == list(fset.apex["frame"])
    meta = json.loads(str(got["meta"]))
    assert meta["feature_set"] == "mid" and meta["estimator"] == "tvl1" and meta["size"] == 28


def test_export_needs_a_run_or_a_set(middle, tmp_path):
    result = run("export", middle, "--format", "npz", tmp_path / "x.npz")
    assert result.exit_code == 2 and "give exactly one of --run NAME and --features NAME" in result.output
    one_line_error(run("export", middle, "--features", "nope", "--format", "npz", tmp_path / "x.npz"),
                   "no feature set 'nope' in", "(it has: ", "roistore flow")


def _as_format_1(src: Path, dst: Path) -> Path:
    """A copy of ``src`` as format 1 wrote it: no face crops, no face settings, version 1."""
    shutil.copytree(src, dst)
    shutil.rmtree(dst / "face")
    shutil.rmtree(dst / "features", ignore_errors=True)
    group = zarr.open_group(str(dst), mode="r+")
    header = dict(group.attrs[fmt.ATTRS_KEY])
    del header["face"]
    group.attrs[fmt.ATTRS_KEY] = {**header, "format_version": 1}
    return dst


def test_upgrade_cuts_the_face_crops_ingest_would_have_cut(flow_store, tmp_path):
    old = _as_format_1(flow_store, tmp_path / "old.zarr")
    one_line_error(run("flow", old, "--name", "f", "--apex", "middle", "--no-progress"),
                   "is a format 1 store without face crops", f"run 'roistore upgrade {old}'")
    with roi_store.open_store(old) as store:
        assert store.header["format_version"] == 1 and store.arrays == store.regions
        assert validate_store(store).ok
    text = ok(run("upgrade", old, "--jobs", "2", "--no-progress"))
    assert text.startswith(f"upgraded {old} from format 1 to 2: face crops of 13 clips (78 frames)")
    with roi_store.open_store(old) as store, roi_store.open_store(flow_store) as new:
        assert store.header["format_version"] == 2 and store.header["face"] == new.header["face"]
        for clip in store.clips:
            np.testing.assert_array_equal(store.frames(clip.id, "face"), new.frames(clip.id, "face"))
        assert validate_store(store).ok
    assert "already format 2: nothing to do" in ok(run("upgrade", old, "--no-progress"))
    ok(run("flow", old, "--name", "f", "--apex", "middle", "--estimator", "farneback", "--no-progress"))


def test_upgrade_names_frames_that_moved(flow_store, tmp_path):
    old = _as_format_1(flow_store, tmp_path / "old.zarr")
    group = zarr.open_group(str(old), mode="r+")
    header = dict(group.attrs[fmt.ATTRS_KEY])
    header["ingests"] = [{**log, "root": str(tmp_path / "gone")} for log in header["ingests"]]
    group.attrs[fmt.ATTRS_KEY] = header
    one_line_error(run("upgrade", old, "--no-progress"), f"cannot upgrade {old}: the frames of 13 clips are not where",
                   "put the dataset back at that path, or re-ingest into a new store")
    with roi_store.open_store(old) as store:
        assert store.header["format_version"] == 1


def test_appending_to_a_format_1_store_asks_for_an_upgrade(flow_store, tmp_path):
    old = _as_format_1(flow_store, tmp_path / "old.zarr")
    root = flow_store.parent / "data" / "CASME2" / "CASME2_RAW_selected"
    one_line_error(run("ingest", old, "--dataset", "casme2", "--root", root, "--no-progress"),
                   "is a format 1 store, without the whole-face crops", f"run 'roistore upgrade {old}' first")


def test_flow_on_a_dask_cluster_equals_the_local_set(middle, tmp_path):
    from distributed import LocalCluster

    store = tmp_path / "s.zarr"
    shutil.copytree(middle, store)
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0") as cluster:
        ok(run("flow", store, "--name", "there", "--apex", "middle", "--scheduler", cluster.scheduler_address,
               "--no-progress"))
    with roi_store.open_store(store) as opened:
        np.testing.assert_array_equal(opened.features("there").face, opened.features("mid").face)
