"""The layers that hold several folds side by side in one model (:mod:`roi_store.method.engine`,
:mod:`roi_store.method.ststnet`): grouped convolutions with a group per fold, dense layers with a
kernel per fold, dropout with a seed generator per fold, and a focal loss that is each fold's own mean.

Import lazily: importing Keras starts the backend.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops


def split_groups() -> bool:
    """Whether grouped convolutions run as one convolution per group: without a GPU, on TensorFlow
    or JAX.

    There XLA runs them (Keras sends TensorFlow's grouped convolutions through XLA on any device),
    and a step of two stacked folds (six regions) took about 6 s on a 2-core CPU against 0.4 s for
    one fold, on both backends. Each group convolved on its own (its slice of the same kernel, the
    same products summed) costs what the folds cost alone: 0.89 s for that step on TensorFlow,
    0.68 s on JAX.
    """
    name = keras.backend.backend()
    if name == "tensorflow":
        import tensorflow as tf

        return not tf.config.list_logical_devices("GPU")
    if name == "jax":
        import jax

        return jax.default_backend() == "cpu"
    return False


class FoldConv2D(layers.Conv2D):
    """A 2-D convolution with one group per fold (``groups=folds``); see :func:`split_groups`."""

    def convolution_op(self, inputs, kernel):
        if self.groups == 1 or not split_groups():
            return super().convolution_op(inputs, kernel)
        xs = ops.split(inputs, self.groups, axis=-1)
        ks = ops.split(kernel, self.groups, axis=-1)
        return ops.concatenate([ops.conv(x, k, strides=list(self.strides), padding=self.padding,
                                         dilation_rate=self.dilation_rate, data_format=self.data_format)
                                for x, k in zip(xs, ks)], axis=-1)


class FoldDense(layers.Layer):
    """A dense layer per fold: (batch, folds, in) -> (batch, folds, units), each fold its own kernel."""

    def __init__(self, units: int, folds: int, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.units, self.folds = int(units), int(folds)
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(self.folds, input_shape[-1], self.units), initializer="zeros",
                                      name="kernel")
        self.bias = self.add_weight(shape=(self.folds, self.units), initializer="zeros", name="bias")

    def call(self, x):
        return self.activation(ops.einsum("bfi,fiu->bfu", x, self.kernel) + self.bias)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)


class FoldDropout(layers.Layer):
    """Dropout on (batch, F, units) with a seed generator per fold: fold f's masks are the ones it
    draws alone, whatever the folds beside it (:meth:`set_seeds` starts them)."""

    def __init__(self, rate: float, folds: int, **kwargs):
        super().__init__(**kwargs)
        self.rate, self.folds = float(rate), int(folds)
        self.generators = [keras.random.SeedGenerator(f) for f in range(self.folds)]

    def set_seeds(self, seeds: list[int]) -> None:
        for gen, seed in zip(self.generators, seeds, strict=True):
            gen.state.assign(np.array([seed, 0], dtype=gen.state.dtype))

    def call(self, x, training=None):
        if not training or self.rate == 0:
            return x
        parts = [keras.random.dropout(x[:, f:f + 1], self.rate, seed=gen) for f, gen in enumerate(self.generators)]
        return parts[0] if self.folds == 1 else ops.concatenate(parts, axis=1)

    def compute_output_shape(self, input_shape):
        return input_shape


class FoldFocalLoss(keras.losses.Loss):
    """The focal loss of :class:`roi_store.method.models.FocalLoss` for each fold of a stacked output.

    ``y_true`` is (batch, folds, classes): the one-hot target scaled by the fold's ``alpha`` of
    that class where the fold trains on the frame, all zeros where it must not (so the frame adds
    nothing to that fold's loss or gradients). Each fold's loss is the mean over its own frames
    of the batch, and the folds' losses are summed: one fold alone gets exactly the usual mean
    focal loss. Carrying ``alpha`` in the targets keeps the compiled step free of fold constants,
    so one compiled step serves every fold of a process.
    """

    def __init__(self, gamma: float = 2.0, name: str = "fold_focal_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.gamma = float(gamma)

    def call(self, y_true, y_pred):
        y_pred = ops.clip(y_pred, 1e-7, 1.0 - 1e-7)
        y_true = ops.cast(y_true, y_pred.dtype)
        per = ops.sum(y_true * ops.power(1.0 - y_pred, self.gamma) * -ops.log(y_pred), axis=-1)  # (b, f)
        valid = ops.cast(ops.sum(y_true, axis=-1) > 0, per.dtype)
        counts = ops.maximum(ops.sum(valid, axis=0), 1.0)  # (f,)
        batch = ops.cast(ops.shape(per)[0], per.dtype)
        return ops.sum(per * batch / counts, axis=-1)  # mean over the batch = sum over folds of each fold's mean
