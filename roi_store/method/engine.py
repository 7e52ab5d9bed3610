"""The region-CNN training engine: six regions, and several folds, trained in one compiled step.

A view's region clips are read from the store once and kept in memory as uint8 (:class:`ViewFrames`);
every batch is gathered there by frame index. One Keras model holds the six region CNNs of every
fold trained together (:func:`stacked_cnns`): the folds' weights are stacked along the channel
axis of grouped convolutions and along a fold axis of the dense layers, so that F folds cost one
step, not F.

Each fold trains exactly as it would alone (:class:`FoldBatches`): it draws its own batches from
its own training frames, in an order seeded by its own seed, and sees them on its own input
channel (:mod:`roi_store.method.fold_layers` holds the layers that keep folds apart); its dropout
masks come from its own seed generators (``FoldDropout``) and its loss is its own mean
(``FoldFocalLoss``), and Adam's updates are per weight. Which folds share a
step, and how many, changes the speed, not a fold's batches or seeds: its weights then differ from
a lone run's only by the rounding of grouped kernels. A fold whose batches run out before its
partners' keeps the weights of its own last step.

After training, each fold's weights are copied out into the plain per-region network of
:func:`roi_store.method.models.region_cnn` (:func:`export_fold`), which is what the store keeps
and what ``predict`` loads: the stacked model itself is never saved. A step can checkpoint its
whole state (weights, optimiser, random state, position) at epoch ends (:class:`Checkpoint`); a
step resumed from one ends bit-identical, on the CPU, to a step never interrupted.

Import lazily: importing Keras starts the backend.
"""

from __future__ import annotations

import time

import keras
import numpy as np
from keras import layers, ops

from roi_store import killpoints
from roi_store.method import models
from roi_store.method.checkpoint import Checkpoint, restore, state
from roi_store.method.embed import EMBED_DIM, INPUT_SCALE, POOLS
from roi_store.method.fold_layers import FoldConv2D, FoldDense, FoldDropout, FoldFocalLoss, split_groups
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
        """The model's inputs for frames ``idx`` (batch, F): per region the frames (batch, F, h, w), and
        (delta) their clips' first frames."""
        out = []
        for r in self.names:
            out.append(self.frames[r][idx])
            if mode == "delta":
                out.append(self.frames[r][self.first[idx]])
        return out


class FrameInput(layers.Layer):
    """uint8 frames (batch, F, h, w) (and first frames, for delta input) -> (batch, h, w, F) float input.

    Fold f of a stacked step sees its own frames, on channel f.
    """

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        self.mode = mode

    def call(self, frames, first=None):
        x = ops.cast(frames, "float32")
        if self.mode == "delta":
            x = x - ops.cast(first, "float32")
        return ops.transpose(x / INPUT_SCALE[self.mode], (0, 2, 3, 1))


def _region_tower(frame, first, region: str, folds: int, n_classes: int, dense: int, pool: str, mode: str,
                  dropout: float):
    """One region's CNNs of ``folds`` folds, side by side; returns their softmax (b, F, n)."""
    x = FrameInput(mode, name=f"input_{region}")(frame, first)
    # Every fold sees its own frames on its own channel: grouped convolutions keep the folds apart.
    x = FoldConv2D(models.CONV1_FILTERS * folds, 5, padding="same", activation="relu", groups=folds,
                      name=f"{region}_conv1")(x)
    x = layers.MaxPooling2D(2, name=f"{region}_pool1")(x)
    x = FoldConv2D(models.CONV2_FILTERS * folds, 3, padding="same", activation="relu", groups=folds,
                      name=f"{region}_conv2")(x)
    c2 = layers.MaxPooling2D(2, name=f"{region}_pool2")(x)
    parts = [FoldConv2D(models.BRANCH_FILTERS * folds, k, padding="same", activation="relu", groups=folds,
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
    x = FoldDropout(dropout, folds, name=f"{region}_dropout")(x)
    emb = FoldDense(EMBED_DIM, folds, activation="relu", name=f"{region}_embedding")(x)
    return FoldDense(n_classes, folds, activation="softmax", name=f"{region}_softmax")(emb)


def stacked_cnns(shapes: dict[str, tuple[int, int]], folds: int, n_classes: int = 4, dense: int = 1024,
                 pool: str = "gap", mode: str = "delta", dropout: float = 0.2) -> keras.Model:
    """One model holding the region CNNs of every region and ``folds`` folds.

    Inputs, in region order: uint8 frames ``(folds, h, w)`` (each fold's own frame) and, for
    ``mode="delta"``, their clips' first frames. Outputs: per region, the softmax ``(folds, n_classes)``.
    Layer ``<region>_embedding`` gives the 20-d embeddings ``(folds, 20)``. Weights are zero until
    :func:`export_fold` sets them; dropout seeds are set by :class:`~roi_store.method.fold_layers.FoldDropout`.
    """
    check_choice("pool", pool, POOLS, ValueError)
    inputs, outputs = [], []
    for region, (h, w) in shapes.items():
        frame = keras.Input((folds, h, w), dtype="uint8", name=f"frame_{region}")
        first = keras.Input((folds, h, w), dtype="uint8", name=f"first_{region}") if mode == "delta" else None
        inputs += [frame] + ([first] if first is not None else [])
        outputs.append(_region_tower(frame, first, region, folds, n_classes, dense, pool, mode, dropout))
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


class FoldBatches:
    """Each fold's own batches of its own training frames, stacked side by side for one step.

    ``train`` is (frames, F) bool: which frames each fold trains on. Fold f's epoch ``e`` is a
    permutation of its training frames drawn from ``(seeds[f], e)`` alone, cut into batches of
    ``rows`` frames; its last batch of an epoch is filled up with frames whose target row is all
    zeros (they add nothing to its loss). Batch ``g`` of the step holds batch ``g`` of every fold's
    own sequence; a fold whose sequence is done gets an all-zero target there.
    ``alpha`` (regions, folds, classes) scales each one-hot target
    (see :class:`~roi_store.method.fold_layers.FoldFocalLoss`).
    """

    def __init__(self, data: ViewFrames, train: np.ndarray, mode: str, alpha: np.ndarray, batch_size: int,
                 seeds: list[int], epochs: int):
        self.data, self.mode = data, mode
        self.pools = [np.flatnonzero(train[:, f]) for f in range(train.shape[1])]
        if not all(len(p) for p in self.pools):
            raise ValueError("every fold of a step needs training frames")
        self.alpha = np.asarray(alpha, dtype=np.float32)  # (regions, folds, classes)
        self.eye = np.eye(self.alpha.shape[-1], dtype=np.float32)
        # The rows of a batch: the batch size, unless no fold of the step has that many frames.
        self.rows = min(batch_size, max(len(p) for p in self.pools))
        self.seeds = [int(s) for s in seeds]
        self.per_epoch = [-(-len(p) // self.rows) for p in self.pools]  # each fold's batches in one of its epochs
        self.steps_per_epoch = max(self.per_epoch)
        self.ends = [epochs * n for n in self.per_epoch]  # the step after each fold's last one
        self.steps = epochs * self.steps_per_epoch
        self._orders: dict[int, tuple[int, np.ndarray]] = {}

    def _order(self, f: int, epoch: int) -> np.ndarray:
        cached = self._orders.get(f)
        if cached is None or cached[0] != epoch:
            rng = np.random.default_rng([self.seeds[f], epoch])
            self._orders[f] = cached = (epoch, rng.permutation(self.pools[f]))
        return cached[1]

    def indices(self, g: int) -> tuple[np.ndarray, np.ndarray]:
        """Step ``g``'s frame indices (rows, F) and which of them each fold trains on (rows, F) bool."""
        folds = len(self.pools)
        idx = np.zeros((self.rows, folds), dtype=np.int64)
        valid = np.zeros((self.rows, folds), dtype=bool)
        for f in range(folds):
            if g >= self.ends[f]:
                continue
            epoch, k = divmod(g, self.per_epoch[f])
            mine = np.sort(self._order(f, epoch)[k * self.rows:(k + 1) * self.rows])
            idx[:len(mine), f], valid[:len(mine), f] = mine, True
        return idx, valid

    def __getitem__(self, g: int):
        idx, valid = self.indices(g)
        mask = valid.astype(np.float32)[:, :, None]  # (rows, F, 1)
        ys = [self.eye[self.data.targets[idx, r]] * mask * self.alpha[r][None] for r in range(len(self.data.names))]
        return tuple(self.data.inputs(idx, self.mode)), tuple(ys)


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


def _reset(model: keras.Model, learning_rate: float, fold_seeds: list[int]) -> None:
    """A fresh start for a reused model: optimiser state zeroed (its learning rate, one of its
    variables, set again), each fold's dropout generators of each region seeded from its own seed."""
    models.reset_optimizer(model, learning_rate)
    for i, layer in enumerate(layer for layer in model.layers if isinstance(layer, FoldDropout)):
        layer.set_seeds([(seed + 97) * 31 + i for seed in fold_seeds])


def train_group(data: ViewFrames, train: np.ndarray, *, n_classes: int, dense: int, pool: str, mode: str,
                epochs: int, batch_size: int, learning_rate: float, gamma: float, fold_seeds: list[int],
                eager_steps: int = 6, checkpoint: Checkpoint | None = None, callbacks: list | None = None) -> dict:
    """Train the region CNNs of F folds together; ``train`` (frames, F) says which frames each fold trains on.

    Fold f's initial weights of region r are seeded by ``fold_seeds[f] + r`` (the same plain
    network whatever F is), its batch order and dropout masks by ``fold_seeds[f]`` too. Up to
    ``eager_steps`` optimisation steps the step runs eagerly on TensorFlow (several folds only where
    their grouped convolutions are split, :func:`~roi_store.method.fold_layers.split_groups`):
    compiling the six towers costs about 12 s for one fold on a CPU, 25 s for two. ``checkpoint`` saves the step's state at epoch ends and resumes from
    what it saved; ``callbacks`` (Keras callbacks) hear of each epoch's begin and end.

    Returns ``{"model", "plain", "train_seconds", "train_frames", "epoch_seconds", "steps",
    "resumed_at"}``: the stacked model, a plain network per region to export into, the frames
    seen (frames x epochs, summed over folds), each epoch's seconds, the optimisation steps and
    the step a checkpoint resumed at (0: a fresh start).
    """
    folds = train.shape[1]
    shapes = {r: tuple(data.frames[r].shape[1:]) for r in data.names}
    alpha = np.zeros((len(data.names), folds, n_classes), dtype=np.float32)
    for r_i in range(len(data.names)):
        for f in range(folds):
            counts = np.bincount(data.targets[train[:, f], r_i], minlength=n_classes)
            alpha[r_i, f] = models.inverse_frequency_alpha(counts)
    batches = FoldBatches(data, train, mode, alpha, batch_size, [s + 89 for s in fold_seeds], epochs)
    # Grouped convolutions left to XLA compile on every eager call: there several folds run compiled.
    model = _compiled(shapes, folds, n_classes, dense, pool, mode, learning_rate, gamma,
                      eager=(folds == 1 or split_groups()) and models.run_eagerly(batches.steps, eager_steps))
    plain = {}
    for r_i, r in enumerate(data.names):
        for f in range(folds):
            net = models.region_cnn(*shapes[r], n_classes=n_classes, dense=dense, pool=pool,
                                    seed=fold_seeds[f] + r_i, name=f"cnn_{r}")
            export_fold(model, r, f, net, into_stacked=True)
        plain[r] = net
    _reset(model, learning_rate, fold_seeds)
    saved = checkpoint.load() if checkpoint else None
    # finished: fold -> region -> the weights of its own last step, for folds that end before the step does
    start_step, finished = restore(model, saved) if saved else (0, {})
    per_epoch = batches.steps_per_epoch
    hooks = keras.callbacks.CallbackList(callbacks or [], model=model, epochs=epochs, steps=per_epoch, verbose=0)
    last_save, epoch_seconds, losses = time.monotonic(), [], []
    start = epoch_start = time.perf_counter()
    hooks.on_train_begin()
    for g in range(start_step, batches.steps):
        epoch, k = divmod(g, per_epoch)
        if k == 0 or g == start_step:
            hooks.on_epoch_begin(epoch)
        x, y = batches[g]
        losses.append(model.train_on_batch(x, y, return_dict=True)["loss"])
        hooks.on_train_batch_end(k)
        for f in range(folds):
            if g + 1 == batches.ends[f] < batches.steps:  # the fold's own last step; its partners go on
                finished[f] = {r: export_fold(model, r, f, plain[r]).get_weights() for r in data.names}
        if k == per_epoch - 1:
            epoch_seconds.append(time.perf_counter() - epoch_start)
            epoch_start = time.perf_counter()
            if checkpoint and checkpoint.every is not None and g + 1 < batches.steps and \
                    time.monotonic() - last_save >= checkpoint.every:
                checkpoint.save(state(model, g + 1, finished))
                last_save = time.monotonic()
            killpoints.reached("train.epoch")  # after the epoch's checkpoint, if one was due
            hooks.on_epoch_end(epoch, {"loss": float(np.mean([float(v) for v in losses])), "epochs": epochs,
                                       "seconds": epoch_seconds[-1]})
            losses = []
    hooks.on_train_end()
    for f, per_region in finished.items():  # folds done early: back to the weights of their last step
        for r, weights in per_region.items():
            plain[r].set_weights(weights)
            export_fold(model, r, f, plain[r], into_stacked=True)
    return {"model": model, "plain": plain, "train_seconds": time.perf_counter() - start,
            "train_frames": int(train.sum()) * epochs, "epoch_seconds": epoch_seconds, "steps": batches.steps,
            "resumed_at": start_step}


def fold_memory(shapes: dict[str, tuple[int, int]], batch_size: int, dense: int, pool: str, n_classes: int) -> int:
    """Bytes one fold adds to a compiled training step, an upper estimate: per region, its weights
    with their gradients and Adam's two moments (4 float32 copies), and every layer's output for a
    batch, kept for the backward pass with its gradient (2 copies), plus a quarter for workspace."""
    total = 0
    for h, w in shapes.values():
        net = models.region_cnn(h, w, n_classes=n_classes, dense=dense, pool=pool)
        outputs = sum(int(np.prod(layer.output.shape[1:])) for layer in net.layers[1:])
        total += 4 * (4 * net.count_params() + 2 * batch_size * (outputs + 2 * h * w))
    return int(total * 1.25)


def embed_all(model: keras.Model, data: ViewFrames, mode: str, batch_size: int = 512) -> tuple[dict, dict]:
    """Every frame's embeddings and softmax under each fold of the stacked model.

    Returns ``(embeddings, probs)``: per region (frames, F, 20) float32 and (frames, F, n) float32.
    """
    if id(model) not in _CUTS:  # compiled once per model, like the model itself: embeddings, then softmaxes
        outputs = [model.get_layer(f"{r}_{layer}").output for layer in ("embedding", "softmax") for r in data.names]
        _CUTS[id(model)] = keras.Model(model.inputs, outputs, name="region_embeddings")
    cut, n_r = _CUTS[id(model)], len(data.names)
    folds = model.inputs[0].shape[1]  # every fold embeds every frame
    outs = [cut.predict_on_batch(data.inputs(np.repeat(np.arange(i, min(i + batch_size, data.n_frames))[:, None],
                                                       folds, axis=1), mode))
            for i in range(0, data.n_frames, batch_size)]
    cat = [np.concatenate([np.asarray(o[k], dtype=np.float32) for o in outs]) for k in range(2 * n_r)]
    return dict(zip(data.names, cat[:n_r])), dict(zip(data.names, cat[n_r:]))
