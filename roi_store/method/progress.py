"""Progress of long trainings: a bar or throttled lines for whoever waits, a heartbeat for ``roistore runs``.

A run's CNNs and heads train for hours on a full dataset. While a step trains, a :class:`Tracker`
follows its epochs (through a Keras callback, or a call per epoch of the head's loop) and

* shows them where this process shows progress (:func:`display`): on a terminal one updating
  bar, in a log one line every few seconds
  (``embed run a: CNN fold 3, epoch 41/100, 2,400 region frames/s; 4/10 folds done, ETA 2 h 10 min``);
* writes the run's heartbeat (``runs/<name>/heartbeat``, :meth:`RunData.write_heartbeat
  <roi_store.store.run_data.RunData.write_heartbeat>`) at most every :data:`HEARTBEAT_EVERY` seconds,
  which ``roistore runs`` shows for a running run and uses to tell a stalled one.

The rate is the step's own training speed; the ETA is the stage's remaining fold-epochs at the
pace of this attempt so far (every process training the run counts: with several workers the
folds they finish count, the epochs of their unfinished steps do not until the next marker).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Iterator

from roi_store.store.run_data import RunData
from roi_store.store.runs import lock_owner, progress_text
from roi_store.store.store import Store

#: The environment variable that sets where progress shows in processes without a display of
#: their own: ``SECONDS`` between lines on stderr, ``0`` for none. :func:`printing` sets it for
#: the local worker processes a command starts.
ENV = "ROISTORE_PROGRESS"
#: Seconds between two progress lines in a log (a run's first line comes after as long).
LINE_EVERY = 30.0
#: Seconds between two heartbeats of one process (well under :data:`roi_store.store.runs.STALE_AFTER`).
HEARTBEAT_EVERY = 5.0
#: Seconds between two redraws of a bar.
REFRESH = 0.5
#: What each stage is called in the command that runs it.
COMMANDS = {"embed": "embed", "head": "fit-lstm", "final-cnn": "fit-lstm --final", "final-head": "fit-lstm --final"}


class Lines:
    """Progress as plain lines through ``write``, at most one every ``every`` seconds (the first after as long)."""

    def __init__(self, write: Callable[[str], None], every: float = LINE_EVERY):
        self.write, self.every = write, float(every)
        self._last = time.monotonic()

    def begin(self, title: str, epochs: int) -> None:
        pass

    def show(self, prefix: str, beat: dict, final: bool = False) -> None:
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self.write(f"{prefix}: {progress_text(beat)}")

    def end(self) -> None:
        pass

    def echo(self, message: str) -> None:
        self.write(message)


class Bar:
    """Progress as one tqdm bar on a terminal: the step's epochs, with rate, folds done and ETA beside it."""

    def __init__(self, file):
        self.file, self.bar = file, None

    def begin(self, title: str, epochs: int) -> None:
        from tqdm import tqdm

        self.end()
        self.bar = tqdm(total=epochs, desc=title, unit="epoch", file=self.file, leave=False, dynamic_ncols=True,
                        mininterval=REFRESH, bar_format="{desc}: {percentage:3.0f}%|{bar}| epoch {n:.0f}/{total} "
                                                        "[{elapsed}]{postfix}")

    def show(self, prefix: str, beat: dict, final: bool = False) -> None:
        if self.bar is None:
            return
        self.bar.n = beat.get("epoch", 0)
        self.bar.set_postfix_str(progress_text(beat, step=False), refresh=False)
        self.bar.refresh()

    def end(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def echo(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=self.file)
        else:
            print(message, file=self.file, flush=True)


_DISPLAY: Lines | Bar | None = None
_FALLBACK: Lines | None = None  # the lines of a process without a display of its own (a worker)


def _env_every() -> float | None:
    """Seconds between lines that ``ROISTORE_PROGRESS`` asks for (0: none), or None if it is unset or unreadable."""
    try:
        return max(0.0, float(os.environ[ENV]))
    except (KeyError, ValueError):
        return None


def _on_dask_worker() -> bool:
    distributed = sys.modules.get("distributed")  # never imported here just to ask
    if distributed is None:
        return False
    try:
        distributed.get_worker()
    except ValueError:
        return False
    return True


def _stderr_line(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def display() -> Lines | Bar | None:
    """Where this process shows training progress, if anywhere.

    The display set here (:func:`printing`, :func:`reporting`); else ``ROISTORE_PROGRESS`` (lines
    on stderr every that many seconds; 0 for none); else, on a dask worker, lines on its stderr
    (the worker's log) every :data:`LINE_EVERY` seconds; else none: a library call is quiet.
    """
    global _FALLBACK
    if _DISPLAY is not None:
        return _DISPLAY
    every = _env_every()
    if every is None and _on_dask_worker():
        every = LINE_EVERY
    if not every:
        return None
    if _FALLBACK is None or _FALLBACK.every != every:  # one per process: its pace spans the steps it trains
        _FALLBACK = Lines(_stderr_line, every)
    return _FALLBACK


@contextlib.contextmanager
def _shown(disp: Lines | Bar | None, every: float) -> Iterator[Lines | Bar | None]:
    global _DISPLAY
    before_display, before_env = _DISPLAY, os.environ.get(ENV)
    _DISPLAY = disp
    os.environ[ENV] = f"{every:g}" if disp is not None else "0"  # the local workers started meanwhile print lines
    try:
        yield disp
    finally:
        if isinstance(disp, Bar):
            disp.end()
        _DISPLAY = before_display
        if before_env is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before_env


@contextlib.contextmanager
def printing(file=None, every: float | None = None) -> Iterator[Lines | Bar | None]:
    """Show the progress of trainings run inside this block on ``file`` (default: stderr).

    A terminal gets one updating bar; anything else (a log, a pipe) a line every ``every``
    seconds (default :data:`LINE_EVERY`, or ``ROISTORE_PROGRESS`` when set; 0: nothing). Local
    worker processes started inside the block print lines on their stderr. For the command line.
    """
    file = file if file is not None else sys.stderr
    env = _env_every()
    every = float(every if every is not None else env if env is not None else LINE_EVERY)
    if every <= 0:
        disp = None
    elif getattr(file, "isatty", lambda: False)():
        disp = Bar(file)
    else:
        disp = Lines(lambda m: print(m, file=file, flush=True), every)
    with _shown(disp, every) as shown:
        yield shown


@contextlib.contextmanager
def reporting(log: Callable[[str], None] | None, every: float = LINE_EVERY) -> Iterator[None]:
    """Send progress lines of trainings run inside this block to ``log``, every ``every`` seconds.

    Nothing changes when ``log`` is None or progress already shows somewhere (:func:`printing`).
    """
    if log is None or _DISPLAY is not None:
        yield
        return
    with _shown(Lines(log, every), every):
        yield


def echo(message: str) -> bool:
    """Print a line through the display of this process (above its bar); False if there is none."""
    if _DISPLAY is None:
        return False
    _DISPLAY.echo(message)
    return True


def step_name(stage: str, folds: list[int]) -> str:
    """``CNN fold 3``, ``CNN folds 4-5``, ``CNN folds 1, 4``, ``head fold 7``, ``final CNNs``, ``final head``."""
    if stage == "final-cnn":
        return "final CNNs"
    if stage == "final-head":
        return "final head"
    what = "CNN" if stage == "embed" else "head"
    if len(folds) == 1:
        return f"{what} fold {folds[0]}"
    run = sorted(folds) == list(range(min(folds), max(folds) + 1))
    return f"{what} folds {min(folds)}-{max(folds)}" if run else f"{what} folds {', '.join(map(str, folds))}"


def _iso(seconds: float) -> str:
    return _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc).isoformat(timespec="seconds")


def _seconds(iso: str) -> float | None:
    try:
        return _dt.datetime.fromisoformat(iso).timestamp()
    except (TypeError, ValueError):
        return None


class Tracker:
    """The progress of one training step of a run: its display, and the run's heartbeat.

    Parameters
    ----------
    run : RunData
        The run (its top group: the heartbeat lives there, also for the final model's steps).
    name : str
        The run's name, for the display.
    stage : {"embed", "head", "final-cnn", "final-head"}
        What trains.
    folds : list of int
        The folds this step trains together.
    folds_total : int
        The stage's folds (1 for a final model).
    epochs : int
        This step's epochs.
    per_epoch : float
        What one epoch trains, in ``unit`` (region frames, clips): the rate's numerator.
    unit : str
        The rate's unit (``region frames/s``).
    lock : str, optional
        The token of the run's lock: heartbeats of one attempt share it, and its start.
    """

    def __init__(self, run: RunData, name: str, *, stage: str, folds: list[int], folds_total: int, epochs: int,
                 per_epoch: float, unit: str, lock: str | None = None):
        self.run, self.name, self.stage = run, name, stage
        self.folds, self.folds_total, self.epochs = list(folds), max(1, int(folds_total)), max(1, int(epochs))
        self.per_epoch, self.unit, self.lock = float(per_epoch), unit, lock
        self.step = step_name(stage, self.folds)
        self.prefix = f"{COMMANDS[stage]} run {name}"
        self.title = f"{self.prefix}: {self.step}"
        self.display = display()
        self.folds_done = self._markers()
        wall = time.time()
        prior = run.heartbeat() or {}
        self._first = not (lock is not None and prior.get("lock") == lock and prior.get("stage") == stage
                           and _seconds(prior.get("started")) is not None)
        if self._first:  # this attempt's first step
            self.started, self.units_at_start = wall, float(self.folds_done * self.epochs)
        else:
            self.started, self.units_at_start = _seconds(prior["started"]), float(prior.get("units_at_start", 0))
        self._began = time.monotonic()
        self._from = 0  # the epoch this step starts at (a step resumed from its checkpoint starts later)
        self._beat_at = self._shown_at = -math.inf
        self._warned = False
        self.last: dict = {}

    def _markers(self) -> int:
        if self.stage.startswith("final"):
            return 0
        try:
            return self.run.markers(self.stage)
        except Exception:  # noqa: BLE001 -- a listing that fails costs the count, never the training
            return getattr(self, "folds_done", 0)

    def begin(self) -> None:
        """Training starts: a first heartbeat, and the display's bar."""
        if self.display is not None:
            self.display.begin(self.title, self.epochs)
        self.update(0.0, force=True)

    def resumed_at(self, epoch: int) -> None:
        """The step starts at ``epoch`` (resumed from its checkpoint): its rate and this attempt's pace count
        only the epochs trained from here."""
        self._from = int(epoch)
        self._began = time.monotonic()
        if self._first:
            self.units_at_start = float(self.folds_done * self.epochs + len(self.folds) * self._from)

    def update(self, epochs_done: float, force: bool = False) -> None:
        """``epochs_done`` (fractional within an epoch) of this step have trained: show and beat, throttled."""
        now = time.monotonic()
        beat_due = force or now - self._beat_at >= HEARTBEAT_EVERY
        if not beat_due and (self.display is None or now - self._shown_at < REFRESH):
            return
        if beat_due:
            self.folds_done = self._markers()
        beat = self.document(epochs_done, now)
        if beat_due:
            self._beat_at = now
            try:
                self.run.write_heartbeat(beat)
            except Exception as exc:  # noqa: BLE001 -- a heartbeat is worth less than the training it reports
                if not self._warned:
                    self._warned = True
                    warnings.warn(f"{self.title}: could not write the run's heartbeat ({type(exc).__name__}: {exc}); "
                                  "training goes on", RuntimeWarning, stacklevel=2)
        if self.display is not None:
            self._shown_at = now
            self.display.show(self.prefix, beat, final=force)
        self.last = beat

    def document(self, epochs_done: float, now: float | None = None) -> dict:
        """The heartbeat for ``epochs_done`` epochs of this step (``schemas/run.schema.json#/$defs/heartbeat``)."""
        now = time.monotonic() if now is None else now
        wall = time.time()
        epochs_done = min(float(epochs_done), self.epochs)
        seconds = now - self._began
        trained = epochs_done - self._from
        rate = self.per_epoch * trained / seconds if seconds > 0 and trained > 0 else None
        total = self.folds_total * self.epochs
        done = min(total, self.folds_done * self.epochs + len(self.folds) * epochs_done)
        elapsed = wall - self.started
        pace = (done - self.units_at_start) / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / pace if pace > 0 else None
        return {"command": COMMANDS[self.stage], "stage": self.stage, "step": self.step, "folds": self.folds,
                "epoch": int(epochs_done), "epochs": self.epochs, "folds_done": self.folds_done,
                "folds_total": self.folds_total, "rate": round(rate, 1) if rate is not None else None,
                "rate_unit": self.unit, "eta_seconds": round(eta) if eta is not None else None,
                "started": _iso(self.started), "units_at_start": self.units_at_start, "updated": _iso(wall),
                "host": platform.node(), "pid": os.getpid(), "lock": self.lock}

    def epoch_end(self, epochs_done: int) -> None:
        """Call after each epoch of a loop that is not a Keras ``fit`` (the head's)."""
        self.update(float(epochs_done), force=epochs_done >= self.epochs)

    def end(self) -> None:
        if self.display is not None:
            self.display.end()

    def keras_callback(self):
        """A Keras callback that reports this step's batches and epochs to the tracker."""
        from roi_store.method import backend

        keras = backend.keras()
        tracker = self

        class _Progress(keras.callbacks.Callback):
            # Batch ends are seen so that an epoch of many minutes still beats; nothing here
            # reads the step's logs, so the device is never waited for.
            epoch, seen = 0, False

            def on_epoch_begin(self, epoch, logs=None):
                if not self.seen and epoch > 0:
                    tracker.resumed_at(epoch)
                self.epoch, self.seen = epoch, True

            def on_train_batch_end(self, batch, logs=None):
                steps = (self.params or {}).get("steps") or 0
                tracker.update(self.epoch + min(1.0, (batch + 1) / steps) if steps else float(self.epoch))

            def on_epoch_end(self, epoch, logs=None):
                tracker.update(float(epoch + 1), force=epoch + 1 >= tracker.epochs)

        return _Progress()


@contextlib.contextmanager
def training(store: Store, name: str, *, stage: str, folds: list[int], epochs: int, per_epoch: float, unit: str,
             folds_total: int | None = None) -> Iterator[Tracker]:
    """A :class:`Tracker` for one training step of run ``name`` of ``store``, begun and ended around the block.

    ``folds_total`` defaults to the stage's folds in the run's plan (1 for a final model's step).
    """
    run = RunData.open(store, name)
    if folds_total is None and stage.startswith("final"):
        folds_total = 1
    elif folds_total is None:
        plan = run.document("run") or {}
        folds_total = len(plan.get("folds", []))
        if stage == "embed":  # CNN folds: one per fold, or per cross-fitting group, or one global CNN
            folds_total = plan.get("embedding_folds") or folds_total
    tracker = Tracker(run, name, stage=stage, folds=folds, folds_total=folds_total or 1, epochs=epochs,
                      per_epoch=per_epoch, unit=unit, lock=lock_owner(store, name).get("token"))
    tracker.begin()
    try:
        yield tracker
    finally:
        tracker.end()


__all__ = ["ENV", "Tracker", "display", "echo", "printing", "reporting", "training"]
