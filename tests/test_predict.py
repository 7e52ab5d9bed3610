"""``roistore predict`` on videos (a face that comes into view later, or never) and on tampered runs."""

from __future__ import annotations

import json
import shutil

import cv2
import keras
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import write_clip
from roi_store.cli.main import cli
from roi_store.store.run_data import put_bytes
from roi_store.store.store import open_store


@pytest.fixture(scope="module")
def fitted(method_runs, tmp_path_factory):
    """A copy of the tiny CASME II store whose run ``a`` is fitted (two folds, one epoch), and one of its clip folders."""
    store = tmp_path_factory.mktemp("predict") / "s.zarr"
    shutil.copytree(method_runs["shared"], store)
    return store, sorted(method_runs["root"].glob("*/*"))[0]


def write_video(path, frames, fps: float):
    """An MPEG-4 video of BGR ``frames`` at ``fps``."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened(), "OpenCV cannot write MPEG-4 here"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def empty_room(face_frame: np.ndarray) -> np.ndarray:
    """The scene before anyone is in view: the face frame's grey background only."""
    return np.full_like(face_frame, 90)


def test_a_face_coming_into_view_is_found_and_its_frame_reported(fitted, tmp_path, face_frame):
    store, _ = fitted
    # One second of an empty scene at 10 fps, then a face for half a second.
    frames = [empty_room(face_frame)] * 10 + [cv2.add(face_frame, np.full_like(face_frame, k)) for k in range(5)]
    video = write_video(tmp_path / "walk-in.mp4", frames, 10)
    runner = CliRunner()
    out = runner.invoke(cli, ["predict", str(store), "--run", "a", str(video), "--json"])
    assert out.exit_code == 0, out.output
    pred = json.loads(out.output)
    assert pred["face"] == {"frame": 10, "time": 1.0, "file": None}
    assert pred["n_frames"] == 15 and pred["models"] == 2
    assert sum(pred["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert "no face before 1.00 s; landmarks taken from frame 10 at 1.00 s" in pred["warnings"]
    out = runner.invoke(cli, ["predict", str(store), "--run", "a", str(video)])
    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[0] == (f"{video}: {pred['prediction']} (15 frames, ensemble of 2 fold models; "
                                          "face found on frame 10 at 1.00 s)")


def test_a_clip_folder_reports_the_frame_file_its_face_came_from(fitted, tmp_path, face_frame):
    store, _ = fitted
    clip = tmp_path / "clip"
    write_clip(clip, face_frame, range(10, 14))
    cv2.imwrite(str(clip / "img9.jpg"), empty_room(face_frame))  # the first frame, by number: nobody yet
    out = CliRunner().invoke(cli, ["predict", str(store), "--run", "a", str(clip), "--json"])
    assert out.exit_code == 0, out.output
    pred = json.loads(out.output)
    assert pred["face"] == {"frame": 1, "time": None, "file": "img10.jpg"}
    assert "no face on the first frame; landmarks taken from frame 1 (img10.jpg)" in pred["warnings"]


def test_a_video_without_a_face_in_its_first_10_seconds_fails_in_one_line(fitted, tmp_path, face_frame):
    store, _ = fitted
    # Two frames a second: eleven seconds of an empty scene, then a face that comes too late.
    frames = [empty_room(face_frame)] * 22 + [face_frame] * 3
    video = write_video(tmp_path / "late.mp4", frames, 2)
    out = CliRunner().invoke(cli, ["predict", str(store), "--run", "a", str(video)])
    assert out.exit_code == 1
    assert out.output == (
        f"Error: no face found in {video} on frames at 0.00 s, 0.50 s, 1.00 s, 1.50 s, 2.00 s, ..., 9.50 s "
        "(20 frames: every frame of the first 10 s): make sure a frontal face is in view within its first 10 s, "
        "or cut the video to start where it is\n")


def test_a_short_video_without_a_face_names_every_time_searched(fitted, tmp_path, face_frame):
    store, _ = fitted
    video = write_video(tmp_path / "empty.avi", [empty_room(face_frame)] * 3, 10)
    out = CliRunner().invoke(cli, ["predict", str(store), "--run", "a", str(video)])
    assert out.exit_code == 1
    assert out.output.startswith(f"Error: no face found in {video} on frames at 0.00 s, 0.20 s "
                                 "(2 frames: every 0.2 s of the whole video): ")


@pytest.fixture
def keras_loads(monkeypatch):
    """Every model file Keras is asked to load, in order."""
    calls = []
    real = keras.saving.load_model

    def recorded(*args, **kwargs):
        calls.append(args[0] if args else kwargs.get("filepath"))
        return real(*args, **kwargs)

    monkeypatch.setattr(keras.saving, "load_model", recorded)
    return calls


def lambda_model() -> bytes:
    """A .keras file holding a Python Lambda layer: code that would run if it were deserialised."""
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    from roi_store.method import backend

    return backend.model_to_bytes(model)


def test_a_replaced_head_model_is_refused_before_anything_is_loaded(fitted, tmp_path, keras_loads):
    store, clip = fitted
    copy = tmp_path / "tampered.zarr"
    shutil.copytree(store, copy)
    put_bytes(open_store(copy, mode="r+").zgroup["runs/a"], "models/head/1", lambda_model())
    keras_loads.clear()
    out = CliRunner().invoke(cli, ["predict", str(copy), "--run", "a", str(clip)])
    assert out.exit_code == 1
    assert out.output == (
        f"Error: run a: the stored head model of fold 1 does not match its recorded digest (changed or damaged): "
        f"run 'roistore validate {copy}' to see what else changed, then re-fit it with "
        f"'roistore fit-lstm {copy} --run a --overwrite'\n")
    assert keras_loads == []  # not one model was deserialised, the untouched ones neither
    check = CliRunner().invoke(cli, ["validate", str(copy)])
    assert check.exit_code != 0 and "models/head/1 does not match its fold marker's digest" in check.output


def test_a_model_keras_cannot_load_fails_in_one_line(fitted, monkeypatch):
    store, clip = fitted

    def refuse(*args, **kwargs):
        raise ValueError("Requested the deserialization of a Lambda layer\nwith safe_mode=True: refused")

    monkeypatch.setattr(keras.saving, "load_model", refuse)
    out = CliRunner().invoke(cli, ["predict", str(store), "--run", "a", str(clip)])
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert out.output == (
        f"Error: run a: the stored R0 CNN model of fold 0 matches its recorded digest but cannot be loaded by "
        f"Keras {keras.__version__} (ValueError: Requested the deserialization of a Lambda layer): use the Keras "
        "version that made the run, or embed run a again (its 'roistore embed' command with --overwrite) and "
        "re-fit its head\n")
