"""STSTNet's network and its training engine: folds side by side in one compiled step
(:mod:`roi_store.method.ststnet` runs it over a store's flow set; its docstring says the method).

Several folds train in one compiled step, like the region CNNs (:mod:`roi_store.method.engine`):
F folds side by side, each on its own clips and its own weights. Every fold draws its own batches
of its own training clips, in an order seeded by its own seed (:class:`FoldBatches`); its 3x3
convolutions are one product of its clips' 3x3 neighbourhoods with its own kernel (TensorFlow
runs grouped convolutions slowly on CPUs), pooling works per channel, and the dense layer is a
:class:`~roi_store.method.fold_layers.FoldDense` with a kernel per fold. Which folds share a step
therefore changes the speed, not a fold's result (beyond rounding). After training each fold's
weights are copied into the plain network of :func:`ststnet`, which is what the store keeps and
what ``predict`` loads.

Keras is imported by the functions that need it, never at module import.
"""

from __future__ import annotations

import time

import numpy as np

from roi_store.method import backend

KIND = "ststnet"
#: Filters of the three parallel 3x3 convolution streams.
STREAMS = (3, 5, 8)
#: The input's side and channels (u, v, optical strain).
SIZE, CHANNELS = 28, 3
#: Trainable weights of the network for three classes on 28x28x3 input: convolutions
#: 3x(27+1) + 5x(27+1) + 8x(27+1) = 448, dense 5x5x16 = 400 inputs x 3 + 3 = 1,203.
PARAMETERS = 1651


def ststnet(size: int = SIZE, n_classes: int = 3, seed: int | None = None, name: str = KIND):
    """The plain STSTNet: ``(size, size, 3)`` flow in, ``n_classes`` softmax out.

    Parameters
    ----------
    size : int
        The flow image's side (28 in the paper; :data:`PARAMETERS` counts that size).
    n_classes : int
        Output classes.
    seed : int, optional
        Fixes every initial weight.

    Returns
    -------
    keras.Model
        Layers ``stream<k>_conv`` (k = 0, 1, 2) and ``softmax`` hold the weights.
    """
    keras = backend.keras()
    from keras import layers

    from roi_store.method.models import _layer_seeds

    s = _layer_seeds(seed)
    inp = keras.Input((size, size, CHANNELS), name="flow")
    streams = []
    for k, filters in enumerate(STREAMS):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu",
                          kernel_initializer=keras.initializers.GlorotUniform(seed=s()), name=f"stream{k}_conv")(inp)
        streams.append(layers.MaxPooling2D(3, strides=3, padding="same", name=f"stream{k}_pool")(x))
    x = layers.Concatenate(name="concat")(streams)
    x = layers.AveragePooling2D(2, strides=2, name="avgpool")(x)
    x = layers.Flatten(name="flatten")(x)
    out = layers.Dense(n_classes, activation="softmax", kernel_initializer=keras.initializers.GlorotUniform(seed=s()),
                       name="softmax")(x)
    return keras.Model(inp, out, name=name)


def patches(x: np.ndarray) -> np.ndarray:
    """Each pixel's 3x3 neighbourhood ('same' zero padding): ``(n, s, s, 3)`` -> ``(n, s, s, 27)``.

    Features are ordered (row, column, channel) of the neighbourhood, the order of a flattened
    3x3 Conv2D kernel, so a 3x3 convolution is a product with the kernel reshaped to (27, filters).
    """
    n, h, w, c = x.shape
    padded = np.pad(np.asarray(x, dtype=np.float32), ((0, 0), (1, 1), (1, 1), (0, 0)))
    return np.concatenate([padded[:, dy:dy + h, dx:dx + w, :] for dy in range(3) for dx in range(3)], axis=-1)


_LAYERS: dict = {}


def _fold_streams():
    """The layer class of the stacked network's streams (made once: subclassing imports Keras)."""
    if "streams" in _LAYERS:
        return _LAYERS["streams"]
    keras = backend.keras()
    from keras import ops

    class FoldStreams(keras.layers.Layer):
        """The three streams of F folds: (batch, F, s, s, 27) neighbourhoods -> (batch, F, 400) features.

        Fold f's 3x3 convolutions are one product of its own clips' neighbourhoods with its own
        (27, 16) kernel (the streams' 3, 5 and 8 filters side by side); ReLU, the 3x3 max pool
        and the 2x2 average pool work per channel, so their order of streams is the plain
        network's concatenation. A product per fold keeps every fold on its own input without
        grouped convolutions, which TensorFlow runs slowly on CPUs.
        """

        def __init__(self, folds: int, **kwargs):
            super().__init__(**kwargs)
            self.folds = int(folds)

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(self.folds, 9 * CHANNELS, sum(STREAMS)), initializer="zeros",
                                          name="kernel")
            self.bias = self.add_weight(shape=(self.folds, sum(STREAMS)), initializer="zeros", name="bias")

        def call(self, p):
            size, width = p.shape[2], sum(STREAMS)
            # Fold-major from here to the pooled features: one batched product (folds, rows, 27) x
            # (folds, 27, 16), and the pools on folds x batch images; only the small pooled
            # features go back to batch-major.
            x = ops.reshape(ops.transpose(p, (1, 0, 2, 3, 4)), (self.folds, -1, 9 * CHANNELS))
            x = ops.relu(ops.matmul(x, self.kernel) + self.bias[:, None, :])
            # The pools' windows do not overlap: a reshape and a max / mean, far cheaper than the
            # pooling ops (and their gradients) on CPUs. Zero padding stands for 'same' padding
            # because every value is a ReLU output, never below 0.
            out = -(-size // 3)
            before = (out * 3 - size) // 2
            x = ops.reshape(x, (-1, size, size, width))
            x = ops.pad(x, ((0, 0), (before, out * 3 - size - before), (before, out * 3 - size - before), (0, 0)))
            x = ops.max(ops.reshape(x, (-1, out, 3, out, 3, width)), axis=(2, 4))
            half = out // 2
            x = ops.mean(ops.reshape(x[:, :half * 2, :half * 2], (-1, half, 2, half, 2, width)), axis=(2, 4))
            x = ops.reshape(x, (self.folds, -1, half * half * width))
            return ops.transpose(x, (1, 0, 2))

        def compute_output_shape(self, input_shape):
            side = -(-input_shape[2] // 3) // 2
            return (input_shape[0], self.folds, side * side * sum(STREAMS))

    _LAYERS["streams"] = FoldStreams
    return FoldStreams


def stacked_ststnet(folds: int, size: int = SIZE, n_classes: int = 3):
    """The STSTNets of ``folds`` folds side by side: ``(folds, size, size, 27)`` in (each fold's own
    clip, as :func:`patches`), softmax ``(folds, n_classes)`` out.

    Weights are zero until :func:`copy_fold` sets them.
    """
    keras = backend.keras()
    from roi_store.method.fold_layers import FoldDense

    inp = keras.Input((folds, size, size, 9 * CHANNELS), name="patches")
    x = _fold_streams()(folds, name="streams")(inp)
    out = FoldDense(n_classes, folds, activation="softmax", name="softmax")(x)
    return keras.Model(inp, out, name=f"ststnet_x{folds}")


def copy_fold(stacked, fold: int, plain, into_stacked: bool = False):
    """Copy fold ``fold``'s weights of the stacked model into the plain network ``plain``; returns it.

    ``into_stacked`` copies the other way: fold ``fold`` of the stacked model set to ``plain``'s weights.
    """
    streams, dense = stacked.get_layer("streams"), stacked.get_layer("softmax")
    kernel, bias = (np.array(w) for w in streams.get_weights())
    dk, db = (np.array(w) for w in dense.get_weights())
    start = 0
    for k, filters in enumerate(STREAMS):
        conv = plain.get_layer(f"stream{k}_conv")
        cols = slice(start, start + filters)
        if into_stacked:
            ck, cb = conv.get_weights()
            kernel[fold, :, cols], bias[fold, cols] = ck.reshape(-1, filters), cb
        else:
            conv.set_weights([kernel[fold, :, cols].reshape(3, 3, CHANNELS, filters), bias[fold, cols]])
        start += filters
    if into_stacked:
        dk[fold], db[fold] = plain.get_layer("softmax").get_weights()
        streams.set_weights([kernel, bias])
        dense.set_weights([dk, db])
    else:
        plain.get_layer("softmax").set_weights([dk[fold], db[fold]])
    return plain


def clip_input(face: np.ndarray) -> np.ndarray:
    """Flow images ``(n, h, w, 3)`` as the network's input: each clip's each channel scaled to [0, 1].

    The authors feed their flow as images, each channel of each clip stretched to the full range;
    a channel without any variation becomes zeros.
    """
    x = np.asarray(face, dtype=np.float32)
    lo = x.min(axis=(1, 2), keepdims=True)
    span = x.max(axis=(1, 2), keepdims=True) - lo
    return np.where(span > 0, (x - lo) / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)


#: Compiled stacked models of this process, by structure: the steps of a run reuse one.
_COMPILED: dict = {}


def _compiled(folds: int, size: int, n_classes: int, learning_rate: float):
    keras = backend.keras()
    from roi_store.method.fold_layers import FoldFocalLoss

    key = (folds, size, n_classes, learning_rate)
    if key not in _COMPILED:
        model = stacked_ststnet(folds, size, n_classes)
        # gamma 0 with alpha 1 in the targets: each fold's plain mean cross-entropy, as published.
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=FoldFocalLoss(0.0))
        _COMPILED[key] = model
    return _COMPILED[key]


class FoldBatches:
    """Each fold's own batches of its own training clips, side by side, step after step.

    Fold f's epoch ``e`` is a permutation of its training clips drawn from ``(seeds[f], e)``
    alone, cut into batches of ``rows`` clips; a short last batch is filled up with clips whose
    target row is all zeros (they add nothing to its loss). Step ``g`` holds batch ``g`` of every
    fold's own sequence; a fold whose sequence is done gets all-zero targets there, and its
    weights are set back to those of its own last step when the step ends (:func:`train_group`).
    So a fold trains as it would alone, whichever folds share its step.
    """

    def __init__(self, train: np.ndarray, batch_size: int, seeds: list[int], epochs: int):
        self.pools = [np.flatnonzero(train[:, f]) for f in range(train.shape[1])]
        if not all(len(p) for p in self.pools):
            raise ValueError("every fold of a step needs training clips")
        self.rows = min(batch_size, max(len(p) for p in self.pools))
        self.seeds = [int(s) for s in seeds]
        self.per_epoch = [-(-len(p) // self.rows) for p in self.pools]
        self.ends = [epochs * n for n in self.per_epoch]  # the step after each fold's last one
        self.steps = max(self.ends)

    def indices(self, g: int) -> tuple[np.ndarray, np.ndarray]:
        """Step ``g``'s clip indices (rows, F) and which of them each fold trains on (rows, F) bool."""
        idx = np.zeros((self.rows, len(self.pools)), dtype=np.int64)
        valid = np.zeros(idx.shape, dtype=bool)
        for f, pool in enumerate(self.pools):
            if g >= self.ends[f]:
                continue
            epoch, k = divmod(g, self.per_epoch[f])
            order = np.random.default_rng([self.seeds[f], epoch]).permutation(pool)
            mine = np.sort(order[k * self.rows:(k + 1) * self.rows])
            idx[:len(mine), f], valid[:len(mine), f] = mine, True
        return idx, valid


def train_group(x: np.ndarray, y: np.ndarray, train: np.ndarray, *, n_classes: int, epochs: int, batch_size: int,
                learning_rate: float, seeds: list[int]) -> dict:
    """Train the STSTNets of F folds together; ``train`` (clips, F) says which clips each fold trains on.

    ``x`` is every clip's input (:func:`clip_input`), ``y`` its class index; ``seeds[f]`` fixes
    fold f's initial weights and batches (the same whatever folds share the step). Returns
    ``{"model", "plain", "seconds", "losses", "steps"}``: the stacked model, a trained plain
    network per fold, the training time, the mean loss of each step's epoch (summed over folds).
    """
    folds = train.shape[1]
    model = _compiled(folds, x.shape[1], n_classes, learning_rate)
    from roi_store.method.models import reset_optimizer

    reset_optimizer(model, learning_rate)  # a reused model starts afresh
    plain = []
    for f in range(folds):
        net = ststnet(x.shape[1], n_classes, seed=seeds[f], name=f"{KIND}_{f}")
        copy_fold(model, f, net, into_stacked=True)
        plain.append(net)
    batches = FoldBatches(train, batch_size, [s + 1 for s in seeds], epochs)
    p = patches(x)  # once per step: a batch gathers its clips' neighbourhoods
    eye = np.eye(n_classes, dtype=np.float32)
    finished: dict[int, list] = {}  # folds done before the step: the weights of their own last step
    losses, epoch_losses = [], []
    start = time.perf_counter()
    for g in range(batches.steps):
        idx, valid = batches.indices(g)
        loss = model.train_on_batch(p[idx], eye[y[idx]] * valid[:, :, None], return_dict=True)["loss"]
        epoch_losses.append(float(loss))
        for f in range(folds):
            if g + 1 == batches.ends[f] < batches.steps:
                finished[f] = copy_fold(model, f, plain[f]).get_weights()
        if (g + 1) % max(batches.per_epoch) == 0:
            losses.append(float(np.mean(epoch_losses)))
            epoch_losses = []
    seconds = time.perf_counter() - start
    for f, net in enumerate(plain):
        if f in finished:
            net.set_weights(finished[f])
        else:
            copy_fold(model, f, net)
    return {"model": model, "plain": plain, "seconds": seconds, "losses": losses, "steps": batches.steps}


def predict_folds(plain: list, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Every clip's softmax under each fold's plain network: (clips, F, classes)."""
    return np.stack([np.asarray(net.predict(x, batch_size=batch_size, verbose=0)) for net in plain], axis=1)
