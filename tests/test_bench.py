"""The benchmark harness runs and writes results of the committed shape (never a timing check)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.__main__ import STAGES, ingest_scale, main, parse_stages
from benchmarks.report import markdown, validate

COMMITTED = Path(__file__).resolve().parent.parent / "benchmarks" / "results.json"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """Two stages that need no deep-learning framework, at the smallest settings (5 clips)."""
    out = tmp_path_factory.mktemp("bench")
    results = main(["--scale", "0.012", "--out", str(out), "--repeats", "1", "--quick", "--stages", "store,datapath"])
    return out, results


def test_quick_run_writes_valid_results(quick_run):
    out, results = quick_run
    written = json.loads((out / "results.json").read_text())
    validate(written)
    assert written == json.loads(json.dumps(results))
    assert list(written["stages"]) == ["store", "datapath"]
    assert set(written["machine"]) >= {"cpu", "cores", "memory_gib", "python", "versions", "gpus"}
    assert {"numpy", "zarr", "opencv-contrib-python-headless", "dlib-bin", "keras"} <= set(written["machine"]["versions"])
    assert {"source_bytes", "store_bytes", "source_vs_store", "lossless_fraction"} <= set(written["stages"]["store"]["figures"])
    assert {"store_clips_per_s", "source_clips_per_s", "store_vs_source"} <= set(written["stages"]["datapath"]["figures"])


def test_markdown_states_every_target(quick_run):
    out, results = quick_run
    md = (out / "results.md").read_text()
    assert md == markdown(results) and "## Targets" in md and results["machine"]["cpu"] in md
    for stage in results["stages"].values():
        for t in stage["targets"]:
            assert t["what"] in md
    # the store reads back exactly what was cut from the source frames
    assert results["stages"]["store"]["figures"]["lossless_fraction"]["median"] == 1.0


def test_rerunning_one_stage_keeps_the_others(quick_run):
    out, first = quick_run
    again = main(["--scale", "0.012", "--out", str(out), "--repeats", "1", "--quick", "--stages", "store"])
    assert list(again["stages"]) == ["store", "datapath"]
    assert again["stages"]["datapath"] == first["stages"]["datapath"]


def test_committed_results_are_complete_and_valid():
    committed = json.loads(COMMITTED.read_text())
    validate(committed)
    assert list(committed["stages"]) == list(STAGES)
    assert not [name for name, stage in committed["stages"].items() if "error" in stage]
    assert committed["settings"]["repeats"] >= 2 and not committed["settings"]["quick"]
    md = (COMMITTED.parent / "results.md").read_text()
    assert md == markdown(committed)


def test_broken_results_are_refused_with_the_place():
    committed = json.loads(COMMITTED.read_text())
    committed["stages"]["ingest"]["figures"]["imread_frames_per_s"].pop("median")
    with pytest.raises(ValueError, match="stages/ingest/figures/imread_frames_per_s"):
        validate(committed)


@pytest.mark.parametrize("text, message", [
    pytest.param("ingest,nope", "unknown stage 'nope'", id="unknown-stage"),
    pytest.param(",", "no stage given", id="empty"),
])
def test_stage_list_errors_name_the_allowed_values(text, message):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse_stages(text)
    assert parse_stages("fit-lstm,ingest") == ["ingest", "fit-lstm"]


@pytest.mark.parametrize("scale, asked, quick, expect", [(0.1, None, False, 0.3), (0.5, None, False, 0.5),
                                                         (0.1, None, True, 0.1), (0.1, 0.2, False, 0.2)])
def test_ingest_stage_scale(scale, asked, quick, expect):
    assert ingest_scale(scale, asked, quick) == expect
