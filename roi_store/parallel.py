"""Where clip and fold tasks run: in this process, in local worker processes, or on a dask cluster.

``ingest`` (a task per clip), ``embed`` and ``fit-lstm`` (a task per fold) hand their tasks to
:func:`run_tasks`, the one place that starts processes:

* ``jobs`` 1: the calls run here, one after another;
* ``jobs`` > 1: local worker processes (:mod:`concurrent.futures`). With a ``setup`` (ingest's
  face models), the workers are forked from this process once ``setup`` ran here, where the
  platform allows it, so that they start with its result in memory; without one (fold tasks,
  whose deep-learning framework keeps per-process state) each worker starts as a fresh
  interpreter would, forked from a server process that only imported the ``preload`` modules
  (the framework, never run) where the platform has one (:mod:`multiprocessing`'s forkserver);
* ``scheduler``: joblib's ``dask`` backend on a :class:`distributed.Client` connected to it.

Tasks get only small arguments (the store's absolute path or URL, a clip spec or a fold,
settings); a worker reopens the store and writes only its own chunks, so arrays never travel
through the scheduler. A task's result depends only on its arguments (the seed and the fold's
index), so a cluster run gives what the same run gives locally.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from roi_store.errors import ClusterError, ConfigError

#: Seconds to wait for the scheduler to answer, and again for a first worker to be connected.
CONNECT_TIMEOUT = 5
#: The dask resource a task asks one unit of when it must run on a GPU worker
#: (``dask worker ADDRESS --resources GPU=1``).
GPU_RESOURCE = "GPU"

# Keras and the face models keep per-process state: a dask worker process started with
# several threads still runs one of our tasks at a time.
_TASK_LOCK = threading.Lock()


def store_location(path) -> str:
    """The store as a worker opens it: a URL unchanged, a path made absolute (workers have their own cwd)."""
    text = str(path)
    return text if "://" in text else os.path.abspath(text)


def check(jobs: int = 1, scheduler: str | None = None, gpu: bool = False) -> None:
    """Fail early, before anything is written, if the tasks could not run where asked.

    Parameters
    ----------
    jobs : int
        Local worker processes (must be 1 with ``scheduler``: the cluster's workers decide).
    scheduler : str, optional
        A dask.distributed scheduler address such as ``tcp://host:8786``.
    gpu : bool
        Tasks need a worker started with ``--resources GPU=1``.

    Raises
    ------
    ConfigError
        For ``jobs`` > 1 together with ``scheduler``, or a malformed address.
    ClusterError
        If the scheduler does not answer within :data:`CONNECT_TIMEOUT` seconds, has no worker,
        or has no GPU worker when ``gpu`` is asked for.
    """
    if scheduler is not None:
        with _client(jobs, scheduler, gpu):
            pass


def run_tasks(fn: Callable, calls: Iterable[tuple], *, jobs: int = 1, scheduler: str | None = None,
              gpu: bool = False, shared: Iterable[str] = (), setup: Callable[[], None] | None = None,
              preload: Iterable[str] = ()) -> Iterator:
    """``fn(*args)`` for each call; results in completion order.

    Parameters
    ----------
    fn : callable
        A module-level function (workers import it by name).
    calls : iterable of tuple
        Small arguments only: paths, specs, indices, settings; never arrays.
    jobs : int
        Without ``scheduler``: 1 runs the calls here, one after another; more runs them in
        that many local worker processes, started for this call alone.
    scheduler : str, optional
        Run the calls on this dask.distributed scheduler's workers (joblib's ``dask`` backend).
    gpu : bool
        With ``scheduler``: send every call to a worker that offers the ``GPU`` resource.
    shared : iterable of str
        Paths every worker that may run a call must see (the store, a dataset root); checked
        on the workers before any call is sent.
    setup : callable, optional
        Loads what every call needs (a picklable module-level function or partial), once per
        local process: here before the calls, and local workers are forked after it where the
        platform allows (else each worker runs it first). It only saves time: ``fn`` must work
        without it, as it does on a cluster's workers.
    preload : iterable of str
        Without ``setup``: modules that local workers start with imported (a deep-learning
        framework takes seconds to import). They are imported once, by a server process that
        runs nothing else, and every worker is forked from it (with this process's environment
        as it is at the call); where the platform has no such server, each worker imports them.

    Raises
    ------
    ConfigError, ClusterError
        As :func:`check`; also if a worker cannot see a ``shared`` path or dies while running
        a call. Exceptions raised by ``fn`` reach the caller unchanged.
    """
    calls = list(calls)
    if scheduler is None:
        if setup is not None and calls:
            setup()
        if jobs > 1 and len(calls) > 1:
            yield from _run_local(fn, calls, jobs, setup, tuple(preload))
        else:
            yield from itertools.starmap(fn, calls)
        return

    from distributed import KilledWorker
    from joblib import Parallel, delayed, parallel_config

    with _client(jobs, scheduler, gpu) as client:
        workers = _workers(client, gpu)
        for path in (str(p) for p in shared if "://" not in str(p)):  # workers open a URL store over the network
            seen = client.run(os.path.exists, path, workers=workers)
            blind = sorted(addr for addr, ok in seen.items() if not ok)
            if blind:
                raise ClusterError(
                    f"{len(blind)} of {len(seen)} workers of the dask scheduler at {scheduler} (first {blind[0]}) "
                    f"cannot see {path}: every worker must reach the store and the dataset at the same path (a shared "
                    f"filesystem mounted alike on every machine)"
                )
        submit = {"resources": {GPU_RESOURCE: 1}} if gpu else {}
        with parallel_config(backend="dask", client=client, **submit):
            parallel = Parallel(return_as="generator_unordered")
        try:
            yield from parallel(delayed(_one_at_a_time)(fn, *args) for args in calls)
        except KilledWorker:
            raise ClusterError(
                f"a task killed workers of the dask scheduler at {scheduler}: read the workers' logs (out of memory?); "
                f"finished work is kept, so re-run the command"
            ) from None


def _one_at_a_time(fn, *args):
    with _TASK_LOCK:
        return fn(*args)


@contextmanager
def _client(jobs: int, scheduler: str, gpu: bool):
    if jobs > 1:
        raise ConfigError(
            f"--jobs {jobs} and --scheduler exclude each other: on a cluster the workers set the parallelism "
            f"(dask worker {scheduler} --nworkers N --nthreads 1); drop --jobs"
        )
    from distributed import Client
    from distributed.comm.addressing import get_address_host_port, normalize_address, parse_address
    from distributed.comm.registry import get_backend

    try:
        address = normalize_address(scheduler)
        get_backend(parse_address(address)[0])
        get_address_host_port(address)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"invalid --scheduler {scheduler!r} ({exc}): give the address 'dask scheduler' prints, "
            "such as tcp://HOST:8786"
        ) from None

    try:
        client = Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except OSError:
        raise ClusterError(
            f"no dask scheduler answered at {scheduler} within {CONNECT_TIMEOUT} s: start one with 'dask scheduler' "
            f"and workers with 'dask worker {address}', or fix the address (host, port, firewall)"
        ) from None
    try:
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
        except TimeoutError:
            raise ClusterError(f"the dask scheduler at {scheduler} has no workers: start some with "
                               f"'dask worker {address} --nthreads 1'") from None
        if gpu and not _workers(client, gpu):
            raise ClusterError(
                f"no worker of the dask scheduler at {scheduler} offers a GPU: start GPU workers with "
                f"'CUDA_VISIBLE_DEVICES=0 dask worker {address} --nthreads 1 --resources {GPU_RESOURCE}=1', "
                "or drop --gpu"
            )
        yield client
    finally:
        client.close()


def _workers(client, gpu: bool) -> list[str]:
    """The addresses of the workers that may run a task (those offering a GPU if ``gpu``)."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return [addr for addr, w in workers.items() if not gpu or w.get("resources", {}).get(GPU_RESOURCE, 0) >= 1]


def _run_local(fn: Callable, calls: list[tuple], jobs: int, setup: Callable[[], None] | None,
               preload: tuple[str, ...] = ()) -> Iterator:
    """The calls in ``jobs`` local processes started for this call alone; results as they finish.

    With ``setup`` (already run here) the workers are forked where that is safe (Linux),
    starting in milliseconds with its result shared copy-on-write; elsewhere they are spawned
    and run ``setup`` first. Without it each worker starts as a fresh interpreter would: a fold
    task starts the deep-learning framework and fills its graph caches and thread pools, which
    a worker forked from this process, or reused, would carry into the next task. Where the
    platform has a forkserver, the workers are forked from its server, which imported
    ``preload`` and ran nothing (started once per process, at the first such call), and each
    takes this process's environment as it is now (the device and thread settings the
    framework reads when it starts); elsewhere they are spawned.
    """
    import multiprocessing
    import sys
    import warnings
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    if setup is not None:
        fork = sys.platform == "linux"
        context = multiprocessing.get_context("fork" if fork else "spawn")
        initializer, initargs = (None if fork else setup), ()
    elif "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(preload))  # read when the server starts, ignored afterwards
        initializer, initargs = _take_environment, (dict(os.environ),)
    else:
        context, initializer, initargs = multiprocessing.get_context("spawn"), None, ()
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(calls)), mp_context=context,
                               initializer=initializer, initargs=initargs)
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns about forking a process that has threads (Zarr's I/O loop, which
            # Zarr restarts in a forked child).
            warnings.filterwarnings("ignore", message=r".*fork\(\) may lead to deadlocks",
                                    category=DeprecationWarning)
            futures = [pool.submit(fn, *args) for args in calls]
        for future in as_completed(futures):
            try:
                yield future.result()
            except BrokenProcessPool:
                raise ClusterError("a local worker process died (killed, or out of memory) while running a task: "
                                   "re-run the same command; finished work is kept") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _take_environment(env: dict) -> None:
    """A forked worker's environment made the caller's (the server kept the one it started with)."""
    os.environ.clear()
    os.environ.update(env)
