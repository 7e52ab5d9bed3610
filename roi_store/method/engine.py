"""The region-CNN training engine: six regions, and several folds, trained in one compiled step.

A view's region clips are read from the store once and kept in memory as uint8 (:class:`ViewFrames`);
every batch is gathered there by frame index. One Keras model holds the six region CNNs of every
fold trained together (:func:`stacked_cnns`): the folds' weights are stacked along the channel
axis of grouped convolutions and along a fold axis of the dense layers, so that F folds cost one
step, not F. All folds of a step share each batch, drawn from the union of their training frames;
each fold's loss ignores the frames it must not see (its own test subjects) through an all-zero
target row (:class:`FoldFocalLoss`). With one fold per step the batches are drawn from that fold's
training frames alone. After training, each fold's weights are copied out into the plain per-region
network of :func:`roi_store.method.models.region_cnn` (:func:`export_fold`), which is what the store keeps
and what ``predict`` loads: the stacked model itself is never saved.

Import lazily: importing Keras starts the backend.
"""

from __future__ import annotations

import time

import keras
import numpy as np
from keras import layers, ops

from roi_store.method import models
from roi_store.method.embed import EMBED_DIM, INPUT_SCALE, POOLS
from roi_store.method.presets import check_choice


class ViewFrames:
    """Every frame of a view's clips, per region, as uint8 in memory, with its clip's first frame.

    Parameters
    ----------
    regions : dict
        Region name -> list of each clip's (n, h, w) uint8 frames (as ``Store.clips_frames`` reads them).
    targets : list of list of int
        Per clip, per region (in the order of ``regions``), the CNN's class index.
    """

    def __init__(self, regions: dict[str, list[np.ndarray]], targets: list[list[int]]):
        self.names = list(regions)
        self.lengths = np.array([len(c) for c in regions[self.names[0]]], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.n_frames = int(self.offsets[-1])
        self.frames = {r: np.ascontiguousarray(np.concatenate(clips)) for r, clips in regions.items()}
        self.clip_of = np.repeat(np.arange(len(self.lengths)), self.lengths)
        self.first = self.offsets[:-1][self.clip_of]  # each frame's clip's first frame
        tg = np.asarray(targets, dtype=np.int64).reshape(len(self.lengths), len(self.names))
        self.targets = tg[self.clip_of]  # (frames, regions)

    def frame_mask(self, clip_mask: np.ndarray) -> np.ndarray:
        """Frames of the clips selected by a boolean per-clip mask."""
        return np.asarray(clip_mask, dtype=bool)[self.clip_of]

    def inputs(self, idx: np.ndarray, mode: str) -> list[np.ndarray]:
        """The model's inputs for frames ``idx``: per region the frames, and (delta) their first frames."""
        out = []
        for r in self.names:
            out.append(self.frames[r][idx])
            if mode == "delta":
                out.append(self.frames[r][self.first[idx]])
        return out


class FrameInput(layers.Layer):
    """uint8 frames (and first frames, for delta input) -> (batch, h, w, 1) float network input."""

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        self.mode = mode

    def call(self, frames, first=None):
        x = ops.cast(frames, "float32")
        if self.mode == "delta":
            x = x - ops.cast(first, "float32")
        return ops.expand_dims(x / INPUT_SCALE[self.mode], -1)


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


def _region_tower(frame, first, region: str, folds: int, n_classes: int, dense: int, pool: str, mode: str,
                  dropout: float, seed: int):
    """One region's CNNs of ``folds`` folds, side by side; returns their softmax (b, F, n)."""
    x = FrameInput(mode, name=f"input_{region}")(frame, first)
    # conv1 sees the same frame in every fold: one convolution with 4 filters per fold.
    x = layers.Conv2D(models.CONV1_FILTERS * folds, 5, padding="same", activation="relu", name=f"{region}_conv1")(x)
    x = layers.MaxPooling2D(2, name=f"{region}_pool1")(x)
    x = layers.Conv2D(models.CONV2_FILTERS * folds, 3, padding="same", activation="relu", groups=folds,
                      name=f"{region}_conv2")(x)
    c2 = layers.MaxPooling2D(2, name=f"{region}_pool2")(x)
    parts = [layers.Conv2D(models.BRANCH_FILTERS * folds, k, padding="same", activation="relu", groups=folds,
                           name=f"{region}_inception_{k}x{k}")(c2) for k in models.BRANCH_KERNELS]
    parts.append(c2)
    if pool == "gap":  # (b, F * c) -> (b, F, c): grouped convolutions keep each fold's channels together
        pooled = [layers.Reshape((folds, -1))(layers.GlobalAveragePooling2D(name=f"{region}_gap{i}")(p))
                  for i, p in enumerate(parts)]
        x = layers.Concatenate(axis=-1, name=f"{region}_inception")(pooled)  # (b, F, 72)
    else:
        pooled = []
        for i, p in enumerate(parts):
            p = layers.AveragePooling2D(2, name=f"{region}_avgpool{i}")(p)
            pooled.append(layers.Reshape((p.shape[1], p.shape[2], folds, -1))(p))
        x = layers.Concatenate(axis=-1, name=f"{region}_inception")(pooled)  # (b, h, w, F, 72)
        x = layers.Permute((3, 1, 2, 4))(x)
        x = layers.Reshape((folds, -1), name=f"{region}_flatten")(x)
    x = FoldDense(dense, folds, activation="relu", name=f"{region}_dense")(x)
    x = layers.Dropout(dropout, seed=seed, name=f"{region}_dropout")(x)
    emb = FoldDense(EMBED_DIM, folds, activation="relu", name=f"{region}_embedding")(x)
    return FoldDense(n_classes, folds, activation="softmax", name=f"{region}_softmax")(emb)


def stacked_cnns(shapes: dict[str, tuple[int, int]], folds: int, n_classes: int = 4, dense: int = 1024,
                 pool: str = "gap", mode: str = "delta", dropout: float = 0.2, seed: int = 0) -> keras.Model:
    """One model holding the region CNNs of every region and ``folds`` folds.

    Inputs, in region order: uint8 frames ``(h, w)`` and, for ``mode="delta"``, the clip's first
    frame. Outputs: per region, the softmax ``(folds, n_classes)``. Layer ``<region>_embedding``
    gives the 20-d embeddings ``(folds, 20)``. Weights are zero until :func:`export_fold` sets them.
    """
    check_choice("pool", pool, POOLS, ValueError)
    inputs, outputs = [], []
    for i, (region, (h, w)) in enumerate(shapes.items()):
        frame = keras.Input((h, w), dtype="uint8", name=f"frame_{region}")
        first = keras.Input((h, w), dtype="uint8", name=f"first_{region}") if mode == "delta" else None
        inputs += [frame] + ([first] if first is not None else [])
        outputs.append(_region_tower(frame, first, region, folds, n_classes, dense, pool, mode, dropout, seed * 7 + i))
    return keras.Model(inputs, outputs, name=f"region_cnns_x{folds}")


# Plain-network layer -> stacked layer, per region; a conv's output channels are grouped by fold.
_CONVS = ["conv1", "conv2", *[f"inception_{k}x{k}" for k in models.BRANCH_KERNELS]]
_DENSES = ["dense", "embedding", "softmax"]


def export_fold(stacked: keras.Model, region: str, fold: int, plain: keras.Model, into_stacked: bool = False):
    """Copy fold ``fold``'s trained weights of ``region`` into the plain region CNN ``plain``; returns it.

    ``into_stacked`` copies the other way: fold ``fold``'s weights set to the (freshly initialised)
    plain network's.
    """
    for name in (*_CONVS, *_DENSES):
        big, small = stacked.get_layer(f"{region}_{name}"), plain.get_layer(name)
        bk, bb = (np.array(w) for w in big.get_weights())
        sk, sb = small.get_weights()
        cols = slice(fold * sk.shape[-1], (fold + 1) * sk.shape[-1])
        at, bias_at = ((..., cols), cols) if name in _CONVS else (fold, fold)
        if into_stacked:
            bk[at], bb[bias_at] = sk, sb
            big.set_weights([bk, bb])
        else:
            small.set_weights([bk[at], bb[bias_at]])
    return plain


class Batches(keras.utils.PyDataset):
    """Shuffled batches of frame indices from ``pool``, as model inputs and per-region fold targets.

    ``train`` is (frames, folds) bool: which folds train on each frame; a frame a fold must not
    see gets an all-zero target row for that fold. ``alpha`` (regions, folds, classes) scales each
    one-hot target (see :class:`FoldFocalLoss`).
    """

    def __init__(self, data: ViewFrames, pool: np.ndarray, train: np.ndarray, mode: str, alpha: np.ndarray,
                 batch_size: int, seed: int):
        super().__init__()
        self.data, self.pool, self.train, self.mode = data, pool, train, mode
        self.alpha = np.asarray(alpha, dtype=np.float32)  # (regions, folds, classes)
        self.eye = np.eye(self.alpha.shape[-1], dtype=np.float32)
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(self.pool)

    def __len__(self):
        return int(np.ceil(len(self.pool) / self.batch_size))

    def __getitem__(self, i):
        idx = np.sort(self.order[i * self.batch_size:(i + 1) * self.batch_size])
        mask = self.train[idx].astype(np.float32)[:, :, None]  # (b, F, 1)
        ys = [self.eye[self.data.targets[idx, r]][:, None, :] * mask * self.alpha[r][None]
              for r in range(len(self.data.names))]
        return tuple(self.data.inputs(idx, self.mode)), tuple(ys)

    def on_epoch_end(self):
        self.order = self.rng.permutation(self.pool)


#: The embedding cut of each compiled model, by the model's id (models live as long as the process).
_CUTS: dict = {}
#: Compiled stacked models of this process, by structure: the folds of a run (and of later runs
#: alike) reuse one compiled step, their weights, optimiser state and dropout seeds reset per use.
_COMPILED: dict = {}


def _compiled(shapes: dict, folds: int, n_classes: int, dense: int, pool: str, mode: str, learning_rate: float,
              gamma: float, eager: bool) -> keras.Model:
    key = (tuple(shapes.items()), folds, n_classes, dense, pool, mode, learning_rate, gamma, eager)
    if key not in _COMPILED:
        model = stacked_cnns(shapes, folds, n_classes, dense, pool, mode)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=[FoldFocalLoss(gamma)] * len(shapes),
                      run_eagerly=eager)
        _COMPILED[key] = model
    return _COMPILED[key]


def _reset(model: keras.Model, learning_rate: float, dropout_seed: int) -> None:
    """A fresh start for a reused model: optimiser state zeroed (its learning rate, one of its
    variables, set again), each dropout layer's seed set anew."""
    for v in model.optimizer.variables:
        v.assign(np.zeros(v.shape, dtype=v.dtype))
    model.optimizer.learning_rate = learning_rate
    for i, layer in enumerate(layer for layer in model.layers if isinstance(layer, layers.Dropout)):
        state = layer.seed_generator.state
        state.assign(np.array([dropout_seed * 31 + i, 0], dtype=state.dtype))


def train_group(data: ViewFrames, train: np.ndarray, *, n_classes: int, dense: int, pool: str, mode: str,
                epochs: int, batch_size: int, learning_rate: float, gamma: float, seeds: list[list[int]],
                dropout_seed: int, eager_steps: int = 6) -> dict:
    """Train the region CNNs of F folds together; ``train`` (frames, F) says which frames each fold trains on.

    ``seeds[f][r]`` seeds fold f's initial weights of region r (the same plain network whatever
    F is); ``dropout_seed`` the dropout masks. Below ``eager_steps`` optimisation steps (one fold)
    the step runs eagerly: compiling the six towers costs about 10 s on a CPU. Returns
    ``{"model", "plain", "train_seconds", "train_frames"}``: the stacked model, a plain network per
    region to export into, and the frames seen (frames x epochs, summed over folds).
    """
    folds = train.shape[1]
    shapes = {r: tuple(data.frames[r].shape[1:]) for r in data.names}
    pool_idx = np.flatnonzero(train.any(axis=1))
    steps = int(np.ceil(len(pool_idx) / batch_size)) * epochs
    # Eager grouped convolutions compile on every call: several folds always run compiled.
    model = _compiled(shapes, folds, n_classes, dense, pool, mode, learning_rate, gamma,
                      eager=folds == 1 and steps <= eager_steps)
    plain = {}
    alpha = np.zeros((len(data.names), folds, n_classes), dtype=np.float32)
    for r_i, r in enumerate(data.names):
        for f in range(folds):
            net = models.region_cnn(*shapes[r], n_classes=n_classes, dense=dense, pool=pool, seed=seeds[f][r_i],
                                    name=f"cnn_{r}")
            export_fold(model, r, f, net, into_stacked=True)
            alpha[r_i, f] = models.inverse_frequency_alpha(np.bincount(data.targets[train[:, f], r_i],
                                                                       minlength=n_classes))
        plain[r] = net
    _reset(model, learning_rate, dropout_seed)
    batches = Batches(data, pool_idx, train, mode, alpha, batch_size, dropout_seed)
    start = time.perf_counter()
    model.fit(batches, epochs=epochs, shuffle=False, verbose=0)
    return {"model": model, "plain": plain, "train_seconds": time.perf_counter() - start,
            "train_frames": int(train.sum()) * epochs}


def embed_all(model: keras.Model, data: ViewFrames, mode: str, batch_size: int = 512) -> tuple[dict, dict]:
    """Every frame's embeddings and softmax under each fold of the stacked model.

    Returns ``(embeddings, probs)``: per region (frames, F, 20) float32 and (frames, F, n) float32.
    """
    if id(model) not in _CUTS:  # compiled once per model, like the model itself: embeddings, then softmaxes
        outputs = [model.get_layer(f"{r}_{layer}").output for layer in ("embedding", "softmax") for r in data.names]
        _CUTS[id(model)] = keras.Model(model.inputs, outputs, name="region_embeddings")
    cut, n_r = _CUTS[id(model)], len(data.names)
    outs = [cut.predict_on_batch(data.inputs(np.arange(i, min(i + batch_size, data.n_frames)), mode))
            for i in range(0, data.n_frames, batch_size)]
    cat = [np.concatenate([np.asarray(o[k], dtype=np.float32) for o in outs]) for k in range(2 * n_r)]
    return dict(zip(data.names, cat[:n_r])), dict(zip(data.names, cat[n_r:]))
