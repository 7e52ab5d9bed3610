"""Ingest into a store: records, frames in true order, resume, recorded skips, validation."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import zarr

import roi_store
from roi_store.store import format as fmt
from roi_store.errors import ConfigError, FormatVersionError, StoreError
from roi_store.ingest.pipeline import ingest
from roi_store.store.store import PENDING
from roi_store.store.validate import validate_store

from conftest import write_clip, write_manifest


def _ingest(tmp_path, root, manifest, **kw):
    return ingest(tmp_path / "s.zarr", "manifest", root, manifest, **kw)


def _arrays(path):
    store = roi_store.open_store(path)
    return {(c.id, r): store.frames(c.id, r) for c in store.clips for r in store.regions}


def test_ingest_records_and_frames_in_numeric_order(tmp_path, manifest_dataset):
    root, manifest = manifest_dataset
    report = _ingest(tmp_path, root, manifest, t_max=40)
    assert (report.found, report.added, report.already, report.skipped) == (3, 3, 0, [])
    store = roi_store.open_store(tmp_path / "s.zarr")
    assert store.regions == ["R0", "R1", "R2", "R3", "R4", "R5"]
    assert [c.id for c in store.clips] == ["lab/p1/a", "lab/p1/b", "lab/p2/c"]
    rec = store.clip("lab/p1/a")
    assert rec.n_frames == 10 and rec.emotion == "happiness"
    assert rec["frames"][4:7] == ["img99.jpg", "img100.jpg", "img101.jpg"]
    assert rec.megc2019 is None and "not part of this view" in rec["excluded"]["megc2019"]
    assert len(rec["face"]["landmarks"]) == 68 and rec["face"]["n_faces"] == 1
    for region, (w, h) in zip(store.regions, [(100, 80), (100, 80), (120, 80), (60, 60), (60, 60), (160, 60)]):
        frames = store.frames("lab/p1/a", region)
        assert frames.shape == (10, h, w) and frames.dtype == np.uint8
        # frame k was brightened by 2k: the mean rises frame after frame only in true order
        assert np.all(np.diff(frames.reshape(10, -1).mean(axis=1)) > 0.5)
    padded = store.array("R0")[rec.row]
    assert padded.shape[0] == 40 and not padded[10:].any()


def test_rerun_skips_complete_clips_and_keeps_data(tmp_path, manifest_dataset):
    root, manifest = manifest_dataset
    _ingest(tmp_path, root, manifest)
    before = _arrays(tmp_path / "s.zarr")
    again = _ingest(tmp_path, root, manifest)
    assert (again.added, again.already) == (0, 3)
    after = _arrays(tmp_path / "s.zarr")
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)


def test_interrupted_ingest_resumes_to_the_same_store(tmp_path, manifest_dataset):
    root, manifest = manifest_dataset
    _ingest(tmp_path, root, manifest)
    reference = _arrays(tmp_path / "s.zarr")
    # What a kill leaves: a pending record and a half-written chunk.
    store = roi_store.open_store(tmp_path / "s.zarr", mode="r+")
    rec = store.clip("lab/p1/b")
    store.write_record({**{k: rec.data[k] for k in ("id", "dataset", "subject", "clip", "source", "folder")},
                        "status": PENDING, "row": rec.row})
    chunk = tmp_path / "s.zarr" / "regions" / "R2" / "c" / str(rec.row) / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:20])
    assert [c.id for c in roi_store.open_store(tmp_path / "s.zarr").clips] == ["lab/p1/a", "lab/p2/c"]
    resumed = _ingest(tmp_path, root, manifest)
    assert (resumed.added, resumed.already) == (1, 2)
    after = _arrays(tmp_path / "s.zarr")
    assert all(np.array_equal(reference[k], after[k]) for k in reference)
    assert validate_store(roi_store.open_store(tmp_path / "s.zarr")).ok


def test_parallel_jobs_give_identical_arrays(tmp_path, manifest_dataset):
    root, manifest = manifest_dataset
    ingest(tmp_path / "one.zarr", "manifest", root, manifest, jobs=1)
    ingest(tmp_path / "two.zarr", "manifest", root, manifest, jobs=2)
    one, two = _arrays(tmp_path / "one.zarr"), _arrays(tmp_path / "two.zarr")
    assert one.keys() == two.keys() and all(np.array_equal(one[k], two[k]) for k in one)


@pytest.mark.parametrize(
    "damage, reason",
    [
        pytest.param("truncate", "is truncated", id="truncated-jpeg"),
        pytest.param("zero", "is empty (0 bytes)", id="zero-byte-frame"),
        pytest.param("garbage", "not a decodable image", id="garbage-frame"),
        pytest.param("resize", "mixed frame sizes", id="mixed-frame-sizes"),
        pytest.param("blank", "no face found", id="no-face"),
        pytest.param("long", "more than the store's t_max", id="longer-than-t-max"),
    ],
)
def test_bad_clip_is_recorded_and_others_survive(tmp_path, manifest_dataset, face_frame, damage, reason):
    root, manifest = manifest_dataset
    bad = root / "p3" / "bad"
    write_clip(bad, face_frame, range(1, 9 if damage != "long" else 30))
    frame = bad / "img4.jpg"
    if damage == "truncate":
        frame.write_bytes(frame.read_bytes()[:2000])
    elif damage == "zero":
        frame.write_bytes(b"")
    elif damage == "garbage":
        frame.write_bytes(b"\xff\xd8 this is not a jpeg \xff\xd9")
    elif damage == "resize":
        cv2.imwrite(str(frame), cv2.resize(face_frame, (320, 240)))
    elif damage == "blank":
        for f in bad.iterdir():
            cv2.imwrite(str(f), np.full((480, 640, 3), 100, np.uint8))
    rows = [dict(zip(["dataset", "subject", "clip", "folder", "label"], r.split(",")))
            for r in manifest.read_text().splitlines()[1:]]
    rows.append({"dataset": "lab", "subject": "p3", "clip": "bad", "folder": "p3/bad", "label": "fear"})
    write_manifest(manifest, rows)
    report = _ingest(tmp_path, root, manifest, t_max=20)
    assert report.added == 3
    assert [s["id"] for s in report.skipped] == ["lab/p3/bad"]
    assert reason in report.skipped[0]["reason"]
    summary = roi_store.open_store(tmp_path / "s.zarr").summary()
    assert summary["clips"] == 3 and summary["skipped"][0]["id"] == "lab/p3/bad"
    assert validate_store(roi_store.open_store(tmp_path / "s.zarr")).ok


def test_validate_catches_a_damaged_chunk(tmp_path, manifest_dataset):
    root, manifest = manifest_dataset
    _ingest(tmp_path, root, manifest)
    store = roi_store.open_store(tmp_path / "s.zarr")
    row = store.clip("lab/p2/c").row
    chunk = tmp_path / "s.zarr" / "regions" / "R5" / "c" / str(row) / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    report = validate_store(roi_store.open_store(tmp_path / "s.zarr"))
    assert not report.ok
    assert any("lab/p2/c" in p and "regions/R5" in p and "damaged" in p for p in report.problems)


def test_future_format_version_asks_for_an_upgrade(tmp_path, manifest_dataset):
    root, manifest = manifest_dataset
    _ingest(tmp_path, root, manifest)
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r+")
    header = dict(group.attrs[fmt.ATTRS_KEY])
    group.attrs[fmt.ATTRS_KEY] = {**header, "format_version": fmt.FORMAT_VERSION + 1}
    newer = fmt.FORMAT_VERSION + 1
    with pytest.raises(FormatVersionError, match=rf"format version {newer}, newer than .* upgrade roistore"):
        roi_store.open_store(tmp_path / "s.zarr")


def test_appending_with_other_settings_is_refused(tmp_path, manifest_dataset):
    root, manifest = manifest_dataset
    _ingest(tmp_path, root, manifest, t_max=40)
    with pytest.raises(ConfigError, match="was built with --t-max 40, not 60"):
        _ingest(tmp_path, root, manifest, t_max=60)


def test_open_store_errors(tmp_path):
    with pytest.raises(StoreError, match="no roistore store at"):
        roi_store.open_store(tmp_path / "missing.zarr")
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(StoreError, match="not a roistore store"):
        roi_store.open_store(tmp_path / "plain.zarr")


def test_store_documents_are_json_only(tmp_path, manifest_dataset):
    root, manifest = manifest_dataset
    _ingest(tmp_path, root, manifest)
    for path in (tmp_path / "s.zarr").rglob("zarr.json"):
        json.loads(path.read_text())  # every metadata document is plain JSON
    header = roi_store.open_store(tmp_path / "s.zarr").header
    assert header["layout"]["regions"][5]["name"] == "R5" and header["relabel"]["default"]["R2"] == ["negative"]


def test_view_file_defines_the_megc2019_view(tmp_path, face_frame):
    root = tmp_path / "lab"
    for clip in ("a", "b"):
        write_clip(root / "1" / clip, face_frame, range(1, 5))
    manifest = write_manifest(tmp_path / "m.csv", [
        {"dataset": "casme2", "subject": "1", "clip": "a", "folder": "1/a", "label": "happiness"},
        {"dataset": "casme2", "subject": "1", "clip": "b", "folder": "1/b", "label": "happiness"},
    ])
    view = tmp_path / "view.csv"
    view.write_text("casme2,1,a,2\n")  # the challenge's format: subject as a number, label 0/1/2
    ingest(tmp_path / "s.zarr", "manifest", root, manifest, view_file=view)
    store = roi_store.open_store(tmp_path / "s.zarr")
    assert store.clip("casme2/sub01/a").megc2019 == "surprise"  # the list wins over the emotion rules
    assert store.clip("casme2/sub01/b").megc2019 is None
    assert "not listed in view file view.csv" in store.clip("casme2/sub01/b")["excluded"]["megc2019"]
    assert store.views["megc2019"]["kind"] == "list"
    rec = store.clip("casme2/sub01/a")
    assert rec["relabel"]["megc2019"]["default"] == ["surprise", "surprise", "not_me", "not_me", "not_me", "surprise"]


def test_sigkilled_ingest_resumes_to_the_same_arrays(tmp_path, manifest_dataset):
    import os
    import signal
    import subprocess
    import sys
    import time

    root, manifest = manifest_dataset
    _ingest(tmp_path, root, manifest)
    reference = _arrays(tmp_path / "s.zarr")
    killed = tmp_path / "k.zarr"
    code = ("import sys; from roi_store.ingest.pipeline import ingest; "
            f"ingest({str(killed)!r}, 'manifest', {str(root)!r}, {str(manifest)!r})")
    proc = subprocess.Popen([sys.executable, "-c", code])
    # Kill once some clip record exists (pending or complete), i.e. mid-run.
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if (killed / "clips").exists() and any((killed / "clips").glob("*/*/*/zarr.json")):
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert validate_store(roi_store.open_store(killed)).ok
    ingest(killed, "manifest", root, manifest)
    after = _arrays(killed)
    assert after.keys() == reference.keys() and all(np.array_equal(reference[k], after[k]) for k in reference)


def test_parallel_ingest_gives_what_one_job_gives(tmp_path, manifest_dataset):
    root, manifest = manifest_dataset
    ingest(tmp_path / "one.zarr", "manifest", root, manifest, jobs=1)
    ingest(tmp_path / "two.zarr", "manifest", root, manifest, jobs=2)
    one, two = _arrays(tmp_path / "one.zarr"), _arrays(tmp_path / "two.zarr")
    assert one.keys() == two.keys() and all(np.array_equal(one[k], two[k]) for k in one)
    recs = [{k: (r.status, r.n_frames, r.data["cuts"], r.data["face"]) for k, r in roi_store.open_store(p).records().items()}
            for p in (tmp_path / "one.zarr", tmp_path / "two.zarr")]
    assert recs[0] == recs[1] and len(recs[0]) == 3


def test_parallel_ingest_reports_dataset_errors_as_one_job_does(tmp_path, manifest_dataset):
    from roi_store.errors import AnnotationError

    root, manifest = manifest_dataset
    broken = tmp_path / "broken.csv"
    broken.write_text(manifest.read_text().replace("folder,", "place,", 1))
    errors = []
    for jobs in (1, 2):
        with pytest.raises(AnnotationError) as err:
            ingest(tmp_path / f"s{jobs}.zarr", "manifest", root, broken, jobs=jobs)
        errors.append(str(err.value))
    assert errors[0] == errors[1] and "folder" in errors[0]
    assert not (tmp_path / "s1.zarr").exists() and not (tmp_path / "s2.zarr").exists()


def test_a_failing_model_load_writes_nothing(tmp_path, manifest_dataset, monkeypatch):
    from roi_store.ingest import faces

    root, manifest = manifest_dataset

    def preload(model=None):
        raise RuntimeError("the landmark model is damaged")

    monkeypatch.setattr(faces, "preload", preload)
    with pytest.raises(RuntimeError, match="the landmark model is damaged"):
        ingest(tmp_path / "s.zarr", "manifest", root, manifest, jobs=2)
    assert not (tmp_path / "s.zarr").exists()  # nothing written before the models load


# --- one writer at a time -------------------------------------------------------------------

def _second_dataset(tmp_path, face_frame):
    """Another lab's two clips, to ingest into the same store as ``manifest_dataset``."""
    root = tmp_path / "other"
    write_clip(root / "q1" / "x", face_frame, range(1, 9))
    write_clip(root / "q2" / "y", face_frame, range(1, 7))
    manifest = write_manifest(tmp_path / "other.csv", [
        {"dataset": "other", "subject": "q1", "clip": "x", "folder": "q1/x", "label": "fear"},
        {"dataset": "other", "subject": "q2", "clip": "y", "folder": "q2/y", "label": "happiness"},
    ])
    return root, manifest


def test_an_ingest_held_by_a_live_process_stops_the_second_in_one_line(tmp_path, manifest_dataset):
    from click.testing import CliRunner

    from roi_store.cli.main import cli
    from roi_store.errors import StoreBusyError
    from roi_store.store import lock as locks

    root, manifest = manifest_dataset
    _ingest(tmp_path, root, manifest)
    before = _arrays(tmp_path / "s.zarr")
    held = locks.acquire(tmp_path / "s.zarr", "store", "roistore ingest --dataset casme2", busy=StoreBusyError)
    try:
        with pytest.raises(StoreBusyError, match=r"is being written by .*roistore ingest --dataset casme2"):
            _ingest(tmp_path, root, manifest)
        out = CliRunner().invoke(cli, ["ingest", str(tmp_path / "s.zarr"), "--dataset", "manifest", "--root", str(root),
                                       "--annotations", str(manifest)])
    finally:
        held.release()
    assert out.exit_code != 0 and len(out.output.strip().splitlines()) == 1, out.output
    assert f"store {tmp_path / 's.zarr'} is being written by " in out.output and "ingest into another store" in out.output
    assert _arrays(tmp_path / "s.zarr").keys() == before.keys()
    assert _ingest(tmp_path, root, manifest).already == 3  # the lock is gone with its holder's release
    assert not (tmp_path / "s.zarr" / "LOCK").exists()


def test_a_dead_ingests_lock_is_taken_over(tmp_path, manifest_dataset):
    import json
    import platform
    import subprocess
    import sys

    root, manifest = manifest_dataset
    _ingest(tmp_path, root, manifest, t_max=40)
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    (tmp_path / "s.zarr" / "LOCK").write_text(json.dumps({"pid": dead, "host": platform.node(), "user": "x",
                                                          "command": "roistore ingest", "token": "t"}))
    assert _ingest(tmp_path, root, manifest).already == 3
    assert validate_store(roi_store.open_store(tmp_path / "s.zarr")).ok


def test_two_ingests_into_one_store_at_once_both_land(tmp_path, manifest_dataset, face_frame):
    """Two lab members ingest two datasets into one store at the same moment: each either lands
    whole or stops in one line naming the other; re-run, both are there and the store validates."""
    import shutil
    import subprocess
    import sys

    roots = [manifest_dataset, _second_dataset(tmp_path, face_frame)]
    store = tmp_path / "shared.zarr"
    _ingest(tmp_path, *roots[0], t_max=40)  # the store exists: both append
    script = ("import sys\nfrom roi_store.ingest import ingest\nfrom roi_store.errors import StoreBusyError\n"
              "try:\n    ingest(sys.argv[1], 'manifest', sys.argv[2], sys.argv[3], t_max=40)\n"
              "except StoreBusyError as exc:\n    print(exc)\n    sys.exit(3)\n")
    shutil.copytree(tmp_path / "s.zarr", store)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(store), str(r), str(m)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r, m in roots]
    outputs = [p.communicate(timeout=300) for p in procs]
    results = [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs)]
    for code, out, err in results:
        assert code in (0, 3), err[-2000:]
        if code == 3:
            assert len(out.strip().splitlines()) == 1 and "is being written by" in out
    for (code, _, _), (r, m) in zip(results, roots):
        if code == 3:
            ingest(store, "manifest", r, m, t_max=40)
    s = roi_store.open_store(store)
    assert sorted(c.id for c in s.clips) == ["lab/p1/a", "lab/p1/b", "lab/p2/c", "other/q1/x", "other/q2/y"]
    assert validate_store(s).ok and len(s.header["ingests"]) >= 3
