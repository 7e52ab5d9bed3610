"""A training step's checkpoint: its whole state as ``.npz`` bytes, and where they are kept.

A step of :func:`roi_store.method.engine.train_group` saves its state at epoch ends and resumes from
it; the bytes hold every variable that decides what the step does next, so a step resumed on the
CPU ends bit-identical to one never interrupted.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # Keras is imported by the engine, which starts the backend
    import keras


@dataclasses.dataclass
class Checkpoint:
    """Where a step keeps its state between epochs, and how often.

    ``load()`` returns the bytes last saved (None: start afresh), ``save(data)`` replaces them.
    ``every`` seconds: a checkpoint is written at the first epoch end after that long (0: every
    epoch end; None: never).
    """

    load: Callable[[], bytes | None]
    save: Callable[[bytes], None]
    every: float | None = 600.0


def state(model: keras.Model, step: int, finished: dict) -> bytes:
    """A step's whole state as ``.npz`` bytes: the next step, every model and optimiser variable
    (weights, dropout generators, Adam's moments and count) and the weights of folds already done."""
    arrays = {"step": np.array(step)}
    arrays.update({f"model/{i}": np.asarray(v) for i, v in enumerate(model.variables)})
    arrays.update({f"optimizer/{i}": np.asarray(v) for i, v in enumerate(model.optimizer.variables)})
    for f, per_region in finished.items():
        for r, weights in per_region.items():
            arrays.update({f"finished/{f}/{r}/{i}": w for i, w in enumerate(weights)})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def restore(model: keras.Model, data: bytes) -> tuple[int, dict]:
    with np.load(io.BytesIO(data)) as z:
        for prefix, variables in (("model", model.variables), ("optimizer", model.optimizer.variables)):
            for i, v in enumerate(variables):
                v.assign(z[f"{prefix}/{i}"])
        finished: dict = {}
        for key in sorted((k for k in z.files if k.startswith("finished/")), key=lambda k: int(k.rsplit("/", 1)[1])):
            _, f, r, _ = key.split("/")
            finished.setdefault(int(f), {}).setdefault(r, []).append(z[key])
        return int(z["step"]), finished
