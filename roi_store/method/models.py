"""The networks of the method (METHOD.md §6), written with Keras 3 and ``keras.ops`` only.

Nothing here imports a backend: the same code runs on TensorFlow, JAX or PyTorch
(``KERAS_BACKEND``). Import this module lazily — importing Keras starts the backend.
"""

from __future__ import annotations

import random

import keras
import numpy as np
from keras import layers, ops

from roi_store.method.embed import EMBED_DIM, POOLS
from roi_store.method.presets import check_choice

#: Below this many optimisation steps a model trains eagerly on TensorFlow: compiling the step
#: function costs about 4 s per model on a CPU, more than a handful of eager steps.
EAGER_STEPS = 24


def run_eagerly(steps: int, limit: int = EAGER_STEPS) -> bool:
    """Whether a model that takes ``steps`` optimisation steps trains eagerly: on TensorFlow, when
    they are at most ``limit``. JAX's eager mode compiles its loops (the LSTM's scan) again at
    every call, so on JAX a model is always compiled once: the head of a 3-fold run then trained in
    about a third of the time.
    """
    return keras.backend.backend() == "tensorflow" and steps <= limit


@keras.saving.register_keras_serializable(package="roistore")
class FocalLoss(keras.losses.Loss):
    """Focal categorical cross-entropy with a per-class ``alpha`` (Lin et al. 2017).

    ``alpha`` is computed by the caller from the training labels only (inverse frequency). With
    ``alpha`` all ones and each target scaled by its class's alpha instead, the loss is the same
    and holds no training constant: the fusion head is compiled once for every fold that way.
    """

    def __init__(self, alpha, gamma: float = 2.0, name: str = "focal_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.alpha = [float(a) for a in alpha]
        self.gamma = float(gamma)

    def call(self, y_true, y_pred):
        y_pred = ops.clip(y_pred, 1e-7, 1.0 - 1e-7)
        alpha = ops.convert_to_tensor(self.alpha, dtype=y_pred.dtype)
        y_true = ops.cast(y_true, y_pred.dtype)
        ce = -y_true * ops.log(y_pred)
        weight = alpha * ops.power(1.0 - y_pred, self.gamma)
        return ops.sum(weight * ce, axis=-1)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "gamma": self.gamma}


def _layer_seeds(seed: int | None):
    """A function giving each random layer its own seed, drawn from ``seed`` alone.

    Unseeded Keras layers draw their seeds from Python's global ``random`` when built, which
    other threads of the process (a dask worker's event loop) may draw from at the same time.
    ``None`` keeps Keras' default.
    """
    rng = None if seed is None else random.Random(seed)
    return lambda: None if rng is None else rng.randint(1, 10**9)


#: The four parallel convolutions after the second pool, and the channels before concatenation.
BRANCH_KERNELS = (1, 3, 5, 7)
BRANCH_FILTERS, CONV1_FILTERS, CONV2_FILTERS = 16, 4, 8


def region_cnn(height: int, width: int, n_classes: int = 4, embed_dim: int = EMBED_DIM,
               dense: int = 1024, dropout: float = 0.2, name: str = "region_cnn", seed: int | None = None,
               pool: str = "gap") -> keras.Model:
    """The region CNN: one greyscale frame in, ``n_classes`` softmax out; layer ``embedding`` is the 20-d feature.

    conv 4@5x5 -> max-pool -> conv 8@3x3 -> max-pool -> four parallel convs of 16 filters
    (1x1, 3x3, 5x5, 7x7) concatenated with the second conv's output -> average-pool ->
    dense ``dense`` -> dropout -> dense ``embed_dim`` -> dense ``n_classes`` softmax.
    ``pool`` is ``"gap"`` (global average pool, the paper's) or ``"flatten"`` (see :data:`POOLS`).
    ``seed`` fixes every initial weight and dropout mask.
    """
    check_choice("pool", pool, POOLS, ValueError)
    s = _layer_seeds(seed)

    def init():
        return keras.initializers.GlorotUniform(seed=s())

    inp = keras.Input((height, width, 1), name="frame")
    x = layers.Conv2D(CONV1_FILTERS, 5, padding="same", activation="relu", kernel_initializer=init(), name="conv1")(inp)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(CONV2_FILTERS, 3, padding="same", activation="relu", kernel_initializer=init(), name="conv2")(x)
    c2 = layers.MaxPooling2D(2, name="pool2")(x)
    branches = [layers.Conv2D(BRANCH_FILTERS, k, padding="same", activation="relu", kernel_initializer=init(),
                              name=f"inception_{k}x{k}")(c2)
                for k in BRANCH_KERNELS]
    x = layers.Concatenate(name="inception")([*branches, c2])
    if pool == "gap":
        x = layers.GlobalAveragePooling2D(name="avgpool")(x)
    else:
        x = layers.AveragePooling2D(2, name="avgpool")(x)
        x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense, activation="relu", kernel_initializer=init(), name="dense")(x)
    x = layers.Dropout(dropout, seed=s(), name="dropout")(x)
    emb = layers.Dense(embed_dim, activation="relu", kernel_initializer=init(), name="embedding")(x)
    out = layers.Dense(n_classes, activation="softmax", kernel_initializer=init(), name="softmax")(emb)
    return keras.Model(inp, out, name=name)


def embedding_model(cnn: keras.Model) -> keras.Model:
    """The CNN cut at its ``embedding`` layer (the softmax head dropped)."""
    return keras.Model(cnn.inputs, cnn.get_layer("embedding").output, name=f"{cnn.name}_embedding")


#: Value of padded time steps when masking: embeddings are ReLU outputs, so never negative.
PAD_VALUE = -1.0


@keras.saving.register_keras_serializable(package="roistore")
class LastStep(layers.Layer):
    """Each sequence's output at its last real step; steps whose features all equal PAD_VALUE are padding.

    An LSTM run over right-padded input holds, at a clip's last real step, exactly the state a
    masked LSTM ends with: padding comes only after it. Picking that step gives the masked
    result while the LSTM runs as a plain loop (a mask makes every step far slower on CPUs).
    """

    def call(self, outputs, inputs):
        real = ops.cast(ops.any(ops.not_equal(inputs, PAD_VALUE), axis=-1), "int32")  # (batch, steps)
        last = ops.maximum(ops.sum(real, axis=1) - 1, 0)  # (batch,)
        steps = ops.arange(ops.shape(outputs)[1])
        pick = ops.cast(ops.equal(ops.expand_dims(steps, 0), ops.expand_dims(last, 1)), outputs.dtype)
        return ops.sum(outputs * ops.expand_dims(pick, -1), axis=1)

    def compute_output_shape(self, outputs_shape, inputs_shape):
        return (outputs_shape[0], outputs_shape[2])


def fusion_head(regions: list[str], embed_dim: int = EMBED_DIM, units: int = 120, dropout: float = 0.2,
                dense: int = 64, n_classes: int = 3, masked: bool = True, name: str = "fusion_head",
                seed: int | None = None) -> keras.Model:
    """Six LSTMs (one per region sequence) -> dropout -> concatenate -> dense LeakyReLU -> softmax.

    With ``masked``, each clip's LSTM output is taken at its last real step (sequences are padded
    after their end with :data:`PAD_VALUE`), so padding never reaches the result: the same as
    masking the padded steps (see :class:`LastStep`). Without it, the paper's zero padding is
    fed as data and the output is the LSTM's state after step ``t_max``.
    ``seed`` fixes every initial weight and dropout mask.
    """
    s = _layer_seeds(seed)
    inputs, branches = [], []
    for r in regions:
        inp = keras.Input((None, embed_dim), name=f"seq_{r}")
        lstm = layers.LSTM(units, kernel_initializer=keras.initializers.GlorotUniform(seed=s()),
                           recurrent_initializer=keras.initializers.Orthogonal(seed=s()), seed=s(),
                           return_sequences=masked, name=f"lstm_{r}")
        x = LastStep(name=f"last_{r}")(lstm(inp), inp) if masked else lstm(inp)
        x = layers.Dropout(dropout, seed=s(), name=f"dropout_{r}")(x)
        inputs.append(inp)
        branches.append(x)
    x = layers.Concatenate(name="fusion")(branches)
    x = layers.Dense(dense, kernel_initializer=keras.initializers.GlorotUniform(seed=s()), name="dense")(x)
    x = layers.LeakyReLU(name="leaky_relu")(x)
    out = layers.Dense(n_classes, activation="softmax", kernel_initializer=keras.initializers.GlorotUniform(seed=s()),
                       name="softmax")(x)
    return keras.Model(inputs, out, name=name)


def reset_optimizer(model: keras.Model, learning_rate: float) -> None:
    """A reused compiled model's optimiser as a new one's: every state variable (step count,
    moments) zeroed and the learning rate (one of them) set again."""
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    for v in model.optimizer.variables:
        v.assign(np.zeros(v.shape, dtype=v.dtype))
    model.optimizer.learning_rate = learning_rate


def inverse_frequency_alpha(counts) -> list[float]:
    """Per-class alpha from training label counts: inverse frequency, normalised to sum 1.

    A class absent from training gets the largest weight of the present ones (it cannot be
    learnt, but its weight must stay finite).
    """
    counts = [float(c) for c in counts]
    present = [1.0 / c for c in counts if c > 0]
    inv = [1.0 / c if c > 0 else max(present, default=1.0) for c in counts]
    total = sum(inv)
    return [v / total for v in inv]
