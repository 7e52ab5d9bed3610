"""Clip and fold tasks on a real dask.distributed cluster give what the local run gives (CPU, no mocks)."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from click.testing import CliRunner
from distributed import LocalCluster, Scheduler, SpecCluster, Worker, get_worker

import roi_store
from roi_store import parallel
from roi_store.cli.main import cli
from roi_store.errors import ClusterError, ConfigError
from roi_store.ingest.pipeline import ingest
from conftest import FAST, MAIN_HEAD, copy_fitted

# One epoch, a narrow dense layer (as tests/test_method.py): the method end to end in seconds.
# No dashboard, and the scheduler's HTTP server on a free port: 8787 may be taken on a shared machine.
SCHEDULER = {"cls": Scheduler, "options": {"dashboard": False, "dashboard_address": ":0"}}


@pytest.fixture(scope="module")
def scheduler():
    """A scheduler with two single-threaded worker processes, as `dask worker --nworkers 2 --nthreads 1` starts."""
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


def _records(store) -> dict:
    return {cid: {k: v for k, v in rec.data.items() if k != "ingested"} for cid, rec in store.records().items()}


def test_ingest_on_the_cluster_equals_the_local_ingest(tmp_path, manifest_dataset, scheduler):
    root, manifest = manifest_dataset
    here = ingest(tmp_path / "here.zarr", "manifest", root, manifest)
    there = ingest(tmp_path / "there.zarr", "manifest", root, manifest, scheduler=scheduler)
    assert (there.added, there.skipped, there.frames) == (here.added, here.skipped, here.frames) == (3, [], 24)
    a, b = roi_store.open_store(tmp_path / "here.zarr"), roi_store.open_store(tmp_path / "there.zarr")
    assert _records(a) == _records(b)
    for region in a.regions:
        assert np.array_equal(a.zgroup[f"regions/{region}"][:], b.zgroup[f"regions/{region}"][:])
    # Re-running through the cluster finds nothing left to do.
    assert ingest(tmp_path / "there.zarr", "manifest", root, manifest, scheduler=scheduler).already == 3


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, small_fitted):
    """CASME II layout, 3 subjects x 1 clip per class, 6 frames: 9 composite clips, with run ``main``
    made locally, not on a cluster (conftest.small_fitted, copied)."""
    return copy_fitted(small_fitted, tmp_path_factory.mktemp("dask-method"))


def test_folds_on_the_cluster_equal_the_local_folds(small_store, scheduler):
    from roi_store.method.embed import embed
    from roi_store.method.head import fit_lstm
    from roi_store.store.runs import head_document, run_status

    # "main" ran here (conftest.small_fitted), with the same settings.
    embed(str(small_store), "there", protocol="kfold", folds=2, scheduler=scheduler, **FAST)
    fit_lstm(str(small_store), "there", **MAIN_HEAD, scheduler=scheduler)
    s = roi_store.open_store(small_store)
    for region in s.regions:
        here = s.zgroup[f"runs/main/embeddings/{region}"][:]
        assert here.shape[0] == 2 and np.abs(here).sum() > 0
        assert np.array_equal(here, s.zgroup[f"runs/there/embeddings/{region}"][:])
    a, b = (head_document(s, run) for run in ("main", "there"))
    assert len(a["predictions"]) == 9 and a["predictions"] == b["predictions"]
    assert [f["test_clips"] for f in a["folds"]] == [f["test_clips"] for f in b["folds"]]
    assert run_status(s, "there")["state"] == "complete" and run_status(s, "there")["stage"] == "head"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_scheduler_is_one_line_and_writes_nothing(tmp_path, manifest_dataset, monkeypatch):
    monkeypatch.setattr(parallel, "CONNECT_TIMEOUT", 1)
    root, manifest = manifest_dataset
    address = f"tcp://127.0.0.1:{_free_port()}"
    result = CliRunner().invoke(cli, ["ingest", str(tmp_path / "s.zarr"), "--dataset", "manifest", "--root", str(root),
                                      "--annotations", str(manifest), "--scheduler", address])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == (
        f"Error: no dask scheduler answered at {address} within 1 s: start one with 'dask scheduler' and workers "
        f"with 'dask worker {address}', or fix the address (host, port, firewall)")
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        pytest.param({"scheduler": "localhost"}, ConfigError, r"^invalid --scheduler 'localhost' \(missing port", id="no-port"),
        pytest.param({"scheduler": "tcp://h:8786", "jobs": 2}, ConfigError, r"^--jobs 2 and --scheduler exclude", id="jobs"),
    ],
)
def test_bad_scheduler_options(kwargs, error, message):
    with pytest.raises(error, match=message):
        parallel.check(**kwargs)


def _where() -> tuple[str, dict]:
    worker = get_worker()
    return worker.name, dict(worker.state.total_resources)


def test_gpu_tasks_go_to_gpu_workers_and_workers_must_see_the_store(tmp_path):
    workers = {name: {"cls": Worker, "options": {"nthreads": 1, **options}}
               for name, options in (("cpu", {}), ("gpu", {"resources": {"GPU": 1}}))}
    with SpecCluster(workers=workers, scheduler=SCHEDULER) as cluster:
        address = cluster.scheduler_address
        done = list(parallel.run_tasks(_where, [()] * 4, scheduler=address, gpu=True))
        assert done == [("gpu", {"GPU": 1})] * 4
        with pytest.raises(ClusterError, match=r"^2 of 2 workers of the dask scheduler at .* cannot see .*missing\.zarr: every worker must reach"):
            list(parallel.run_tasks(_where, [()], scheduler=address, shared=[str(tmp_path / "missing.zarr")]))
    with SpecCluster(workers={"cpu": workers["cpu"]}, scheduler=SCHEDULER) as cluster:
        with pytest.raises(ClusterError, match=r"offers a GPU: start GPU workers with .*--resources GPU=1"):
            parallel.check(scheduler=cluster.scheduler_address, gpu=True)
