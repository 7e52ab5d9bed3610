"""The command line: thin layer, one-line errors, every command documented."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from roi_store.cli.main import cli


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


# Every command's help text and its place in the documentation: tests/test_docs.py.


def test_ingest_info_validate_preview(tmp_path, manifest_dataset):
    root, manifest = manifest_dataset
    store = tmp_path / "s.zarr"
    result = run("ingest", store, "--dataset", "manifest", "--root", root, "--annotations", manifest, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "3 clips found, 3 added, 0 already complete, 0 skipped" in result.output
    info = json.loads(run("info", store, "--json").output)
    assert info["clips"] == 3 and info["datasets"]["lab"]["subjects"] == 2
    assert info["views"]["megc2019"]["clips"] == 0 and info["skipped"] == []
    text = run("info", store).output
    assert "3 clips, 2 subjects" in text
    valid = run("validate", store)
    # One chunk per clip of each of the six regions and of the face crops.
    assert valid.exit_code == 0 and "ok: 3 clip records, 21 chunks verified" in valid.output
    png = tmp_path / "p.png"
    assert run("preview", store, "lab/p1/a", "-o", png).exit_code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args, message",
    [
        pytest.param(["info", "{tmp}/nope.zarr"], "Error: no roistore store at {tmp}/nope.zarr: create one with "
                     "'roistore ingest {tmp}/nope.zarr --dataset ... --root ...'", id="missing-store"),
        pytest.param(["preview", "{store}", "lab/p9/x", "-o", "{tmp}/x.png"],
                     "Error: clip lab/p9/x is not in the store in {store}: list the clips with 'roistore info --json'",
                     id="unknown-clip"),
        pytest.param(["preview", "{store}", "not-an-id", "-o", "{tmp}/x.png"],
                     "Error: invalid clip id 'not-an-id': expected dataset/subject/clip, e.g. casme2/sub01/EP02_01f",
                     id="malformed-clip-id"),
        pytest.param(["ingest", "{store}", "--dataset", "manifest", "--root", "{root}", "--annotations", "{manifest}",
                      "--t-max", "7"],
                     "Error: {store} was built with --t-max 500, not 7: use the same --t-max to append, or choose a new store",
                     id="t-max-mismatch"),
    ],
)
def test_user_errors_are_one_line(tmp_path, manifest_dataset, args, message):
    root, manifest = manifest_dataset
    store = tmp_path / "s.zarr"
    assert run("ingest", store, "--dataset", "manifest", "--root", root, "--annotations", manifest,
               "--no-progress").exit_code == 0
    fill = {"tmp": tmp_path, "store": store, "root": root, "manifest": manifest}
    result = CliRunner().invoke(cli, [a.format(**fill) for a in args])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == message.format(**fill)
    assert "Traceback" not in result.output


def test_help_and_ingest_modules_do_not_import_tensorflow():
    code = ("import sys, roi_store.cli.main, roi_store.ingest.pipeline, roi_store.store.store; "
            "sys.exit(1 if any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "roi_store", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "ingest" in out.stdout
