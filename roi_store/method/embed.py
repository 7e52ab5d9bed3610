"""``embed``: train the six region CNNs per fold and store every clip's 20-d per-frame embeddings.

Leakage by construction (METHOD.md §7): with the default ``cnn_scope="fold"`` each fold trains
its own CNNs on the fold's training subjects only, and embeds every clip of the view with them;
the fusion head of that fold later sees only those embeddings. So no test subject ever shapes
the features its predictions are made from. ``cnn_scope="global"`` (one CNN on every clip, as
the paper appears to do) is available for comparison and is flagged as leaky wherever shown.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from roi_store import killpoints, parallel
from roi_store.errors import ConfigError
from roi_store.method import backend, presets, progress
from roi_store.method.presets import check_choice
from roi_store.method.protocols import make_folds, read_same_person, subject_of
from roi_store.store.labels import MEGC2019, relabel_vectors
from roi_store.store.run_writer import RunWriter
from roi_store.store.run_data import RunData
from roi_store.store.runs import COMPLETE, digest, fold_docs, run_document
from roi_store.store.store import Store, now, open_store

EMBED_DIM = 20
CNN_SCOPES = ("fold", "global")
#: What a region CNN sees of a frame, and the divisor that scales it. "frames": the grey frame (the
#: paper). "delta": the frame minus the clip's first frame, so a motion of a few pixels stands out
#: from who the subject is.
INPUT_SCALE = {"delta": 64.0, "frames": 255.0}
INPUTS = tuple(INPUT_SCALE)
#: How the region CNN pools its 72 channels before the dense layer. "gap": a global average pool,
#: 72 values into dense 1024 (the paper's network: about 1.09 M parameters with the head);
#: "flatten": a 2x2 average pool flattened into dense 1024 (tens of millions of parameters).
POOLS = ("gap", "flatten")
RELABEL_VARIANTS = ("au", "default")
#: Where a permutation control shuffles labels: inside each dataset (each keeps its class counts),
#: inside each subject (each keeps its own), or across every clip.
PERMUTE_WITHIN = ("dataset", "subject", "all")


def cnn_input(frames: np.ndarray, mode: str, first: np.ndarray | None = None) -> np.ndarray:
    """Region frames (n, h, w) uint8 as the region CNN's float32 input (n, h, w, 1).

    ``first``: each frame's clip's first frame (default: ``frames[0]``, one clip).
    """
    check_choice("--input", mode, INPUTS)
    x = frames.astype(np.float32)
    if mode == "delta":
        x = x - (frames[:1] if first is None else first).astype(np.float32)
    return (x / INPUT_SCALE[mode])[..., None]


def permutation_groups(clips, within: str) -> list[str] | None:
    """Each clip's group for :func:`permuted_labels` (``clips``: records or ``dataset/subject/clip`` ids)."""
    check_choice("--permute-within", within, PERMUTE_WITHIN)
    if within == "all":
        return None
    keys = [c.split("/") if isinstance(c, str) else (c.dataset, c.subject) for c in clips]
    return [k[0] if within == "dataset" else f"{k[0]}/{k[1]}" for k in keys]


def control_within(permute_labels: int | None, permute_within: str | None) -> str | None:
    """Where a permutation control shuffles its labels (default ``"dataset"``); None when not permuting.

    Raises ConfigError for ``--permute-within`` without ``--permute-labels``, or an unknown value.
    """
    if permute_within is not None and permute_labels is None:
        raise ConfigError(f"--permute-within {permute_within} shapes a permutation control: give --permute-labels "
                          "SEED too")
    if permute_labels is None:
        return None
    check_choice("--permute-within", permute_within or "dataset", PERMUTE_WITHIN)
    return permute_within or "dataset"


def permuted_labels(labels: list[str], seed: int, groups: list[str] | None = None) -> list[str]:
    """Labels shuffled (the permutation control): clip i gets clip perm[i]'s label.

    Parameters
    ----------
    labels : list of str
        Each clip's label.
    seed : int
        The permutation's seed.
    groups : list of str, optional
        Each clip's group (:func:`permutation_groups`): labels move only inside a group, so each
        group keeps its class counts. None: across every clip.

    Returns
    -------
    list of str
        The shuffled labels, clip by clip.
    """
    rng = np.random.default_rng(seed)
    if groups is None:
        return [labels[j] for j in rng.permutation(len(labels))]
    out = list(labels)
    for g in sorted(set(groups)):
        members = [i for i, x in enumerate(groups) if x == g]
        for i, j in zip(members, rng.permutation(members)):
            out[i] = labels[j]
    return out


def run_targets(store: Store, clips, view: str, labels: list[str], variant: str, permuted: bool) -> list[list[str]]:
    """Per clip, per region 4-class CNN targets ("not me" relabelling) for the labels in use."""
    check_choice("relabel variant", variant, RELABEL_VARIANTS)
    return [(relabel_vectors(label, c["aus"], store.header["relabel"], store.regions) if permuted
             else c["relabel"][view])[variant] for c, label in zip(clips, labels)]


def plan_run(store: Store, view: str, protocol: str, folds: int | None, seed: int,
             permute_labels: int | None, permute_within: str | None = None,
             same_person: dict[str, list[str]] | None = None) -> tuple[list, list[str], list[dict]]:
    """The view's clips, the labels in use (shuffled for a control) and the folds with their clip lists.

    ``permute_within`` (default ``"dataset"``) is where a control's labels are shuffled
    (:data:`PERMUTE_WITHIN`); ``same_person`` merges subjects into one unit of the folds
    (:func:`roi_store.method.protocols.make_folds`).
    """
    clips = store.view_clips(view)
    if not clips:
        raise ConfigError(f"view {view!r} of {store.where} has no clips: ingest datasets first")
    labels = [c.labels[view] for c in clips]
    if permute_labels is not None:
        labels = permuted_labels(labels, permute_labels, permutation_groups(clips, permute_within or "dataset"))
    plan = make_folds(clips, protocol, folds, seed, same_person)
    for fold in plan:
        test = set(fold["test_subjects"])
        fold["test_clips"] = [c.id for c in clips if subject_of(c) in test]
        fold["train_clips"] = [c.id for c in clips if subject_of(c) not in test]
    return clips, labels, plan


def cnn_plan(clips, plan: list[dict], cnn_scope: str, cnn_folds: int | None, protocol: str, seed: int,
             same_person: dict[str, list[str]] | None = None) -> list[dict]:
    """The CNN trainings of a run, ``[{"index", "name", "train_clips"}]``; sets each fold's ``embedding_fold``.

    - per fold (the default): fold k's CNNs train on its training subjects, and its head uses them;
    - ``cnn_folds`` K (cross-fitting, LOSO only): the subjects are split into K groups; CNN k
      trains on every group but k, and each LOSO fold uses the CNN of the group holding its test
      subject, which never saw it;
    - ``global``: one CNN on every clip (leaks test subjects; for comparison only).
    """
    if cnn_scope == "global":
        tasks = [{"index": 0, "name": "all", "train_clips": [c.id for c in clips]}]
        emb_folds = [0] * len(plan)
    elif cnn_folds is None:
        tasks = [{"index": f["index"], "name": f["name"], "train_clips": f["train_clips"]} for f in plan]
        emb_folds = [f["index"] for f in plan]
    else:
        if protocol != "loso":
            raise ConfigError(f"--cnn-folds cross-fits the CNNs of a LOSO run: use --protocol loso, not {protocol}")
        groups = make_folds(clips, "kfold", cnn_folds, seed, same_person)
        group_of = {s: g["index"] for g in groups for s in g["test_subjects"]}
        tasks = []
        for g in groups:
            held = set(g["test_subjects"])
            tasks.append({"index": g["index"], "name": f"cnn{g['index']}",
                          "train_clips": [c.id for c in clips if subject_of(c) not in held]})
        emb_folds = [group_of[f["test_subjects"][0]] for f in plan]
    for fold, k in zip(plan, emb_folds):
        fold["embedding_fold"] = k
        fold["cnn_train_clips"] = tasks[k]["train_clips"]
        fold.pop("train_clips")
    return tasks


def embed(store_path: str, run: str, *, view: str = MEGC2019, protocol: str = "loso", folds: int | None = None,
          epochs: int | None = None, batch_size: int | None = None, seed: int = 0, cnn_scope: str = "fold",
          cnn_input_mode: str | None = None, cnn_dense: int | None = None, cnn_pool: str | None = None,
          cnn_folds: int | None = None, folds_per_step: int | str = 1, relabel: str | None = None,
          permute_labels: int | None = None, permute_within: str | None = None, same_person: str | dict | None = None,
          preset: str | None = None, jobs: int = 1, gpu: int | None = None, cpu: bool = False,
          scheduler: str | None = None, overwrite: bool = False, checkpoint_every: float | None = 600.0,
          log: Callable[[str], None] | None = None) -> dict:
    """Train region CNNs and write per-frame embeddings under ``runs/<run>``.

    The run is claimed first (one writer per run name), its plan written once, then each CNN
    training writes its chunks and models and, last, its fold marker; the run's commit marker is
    written after every one. Re-running with the same settings resumes an interrupted or failed
    run (CNN folds with a marker are kept) and does nothing to a complete one.
    The six region CNNs of a fold train in one compiled step (:mod:`roi_store.method.engine`), and
    ``folds_per_step`` folds share that step (worth it on a GPU). Which folds share a step is fixed
    in the plan (``cnn_steps``): a resumed run retrains a partly written step with the same
    partners, and each fold draws its own batches and seeds, so the grouping changes the speed,
    not the results (on the CPU, bit for bit). Tasks run here, in ``jobs``
    local processes, or on the workers of the dask ``scheduler`` (GPU workers only when ``gpu``
    is given); see :mod:`roi_store.parallel`.

    Parameters
    ----------
    cnn_pool : {"gap", "flatten"}
        The paper's global average pool before dense 1024, or a 2x2 pool flattened.
    cnn_folds : int, optional
        Cross-fit the CNNs of a LOSO run on this many subject groups (see :func:`cnn_plan`).
    folds_per_step : int or "auto"
        CNN folds trained side by side in one compiled step. ``"auto"`` picks the most that fit the
        GPU's free memory (:func:`roi_store.method.backend.auto_folds_per_step`), 1 on a CPU.
    checkpoint_every : float, optional
        Seconds between checkpoints of a training step (at the first epoch end after that long;
        0: every epoch; None: never). A killed run resumes a step from its last checkpoint.
    permute_labels : int, optional
        Make a permutation control: train and score on labels shuffled with this seed.
    permute_within : {"dataset", "subject", "all"}, optional
        Where a control's labels are shuffled (default ``"dataset"``: each dataset keeps its
        class counts); only with ``permute_labels``. Recorded as ``permute_within`` (None when
        not permuting).
    same_person : str or dict, optional
        A same-person CSV (``dataset, subject, person``; :func:`roi_store.method.protocols.read_same_person`)
        or its person -> subjects dict: each person's subjects are tested together and never
        trained on for each other. The run records the merged groups as ``same_person``.
    preset : str, optional
        Where ``epochs``, ``batch_size``, ``cnn_input_mode``, ``relabel``, ``cnn_pool`` and
        ``cnn_dense`` come from when left None: ``"roistore"`` (the default) or ``"paper"``
        (:mod:`roi_store.method.presets`). The run records the preset and which settings overrode it.

    Returns
    -------
    dict
        The run's document (:func:`roi_store.store.runs.run_document`): the plan (settings, folds with
        the clips that trained each CNN), state, per-fold CNN records, device, timings.

    Raises
    ------
    RunBusyError
        If another process is writing a run of this name.
    StoreError
        If the run exists with other settings and ``overwrite`` is false.
    """
    chosen, preset, overridden = presets.resolve("embed", preset, {
        "epochs": epochs, "batch_size": batch_size, "input": cnn_input_mode, "relabel": relabel,
        "cnn_pool": cnn_pool, "cnn_dense": cnn_dense})
    epochs, batch_size, cnn_input_mode = chosen["epochs"], chosen["batch_size"], chosen["input"]
    relabel, cnn_pool, cnn_dense = chosen["relabel"], chosen["cnn_pool"], chosen["cnn_dense"]
    check_choice("--cnn-scope", cnn_scope, CNN_SCOPES)
    folds_per_step = folds_per_step if folds_per_step == "auto" else int(folds_per_step)
    if epochs < 1 or batch_size < 1 or cnn_dense < 1 or (folds_per_step != "auto" and folds_per_step < 1):
        raise ConfigError("--epochs, --batch-size, --cnn-dense and --folds-per-step must be positive "
                          "(--folds-per-step also takes auto)")
    if checkpoint_every is not None and checkpoint_every < 0:
        raise ConfigError(f"invalid --checkpoint-every {checkpoint_every}: give seconds, 0 or more")
    check_choice("--input", cnn_input_mode, INPUTS)
    check_choice("--cnn-pool", cnn_pool, POOLS)
    if cnn_folds is not None and (cnn_folds < 2 or cnn_scope == "global"):
        raise ConfigError(f"invalid --cnn-folds {cnn_folds}: give 2 or more, with --cnn-scope fold")
    permute_within = control_within(permute_labels, permute_within)
    backend.select_device(gpu, cpu, max(1, backend.cores() // max(1, jobs)))
    parallel.check(jobs, scheduler, gpu is not None)
    say = log or (lambda msg: None)
    store = open_store(store_path, mode="r+")
    if same_person is not None and not isinstance(same_person, dict):
        same_person = read_same_person(same_person, {subject_of(c) for c in store.clips})
    view_subjects = {subject_of(c) for c in store.view_clips(view)}
    same_person = {p: [s for s in m if s in view_subjects] for p, m in (same_person or {}).items()}
    same_person = {p: m for p, m in same_person.items() if len(m) > 1} or None  # only merges that matter here
    clips, labels, plan = plan_run(store, view, protocol, folds, seed, permute_labels, permute_within, same_person)
    targets = run_targets(store, clips, view, labels, relabel, permute_labels is not None)
    classes = list(store.views[view]["classes"])
    cnn_classes = [*classes, store.header["relabel"]["not_me"]]
    everyone = [c.id for c in clips]
    tasks = cnn_plan(clips, plan, cnn_scope, cnn_folds, protocol, seed, same_person)
    settings = {"view": view, "protocol": protocol, "folds": folds, "epochs": epochs, "batch_size": batch_size,
                "seed": seed, "cnn_scope": cnn_scope, "input": cnn_input_mode, "cnn_dense": cnn_dense,
                "cnn_pool": cnn_pool, "cnn_folds": cnn_folds, "folds_per_step": folds_per_step, "relabel": relabel,
                "permute_labels": permute_labels, "permute_within": permute_within, "same_person": same_person,
                "preset": preset, "preset_overrides": overridden, "gamma": 2.0, "optimizer": "adam",
                "learning_rate": 1e-3}
    doc = {"kind": "region-cnn+lstm", "settings": settings, "classes": classes, "cnn_classes": cnn_classes,
           "regions": store.regions, "clips": everyone, "labels": labels,
           "true_labels": [c.labels[view] for c in clips], "folds": plan, "leakage": cnn_scope == "global",
           "embedding_folds": len(tasks)}
    writer = RunWriter.claim(store, run, "embed")
    try:
        doc["cnn_steps"], doc["cnn_step_memory"] = _cnn_steps(store, tasks, folds_per_step, settings,
                                                              len(cnn_classes), gpu)
        state = writer.plan_embed(doc, overwrite)
        if state == COMPLETE:
            say(f"run {run} is already complete: nothing to do")
            return run_document(store, run)
        # A resumed run keeps the steps it was planned with ("auto" may choose otherwise on this device).
        steps = (RunData.open(store, run).document("run") or {}).get("cnn_steps") or doc["cnn_steps"]
        work = CnnWork(parallel.store_location(store_path), run, settings, everyone, targets, cnn_classes,
                       store.regions, checkpoint_every=checkpoint_every)
        started = time.perf_counter()
        try:
            writer.embedding_arrays(store.regions, len(tasks), len(clips), store.t_max, EMBED_DIM)
            done = fold_docs(store, run, "embed")
            if done:
                say(f"resuming run {run}: CNN folds {sorted(done)} are done")
            train_clips = {t["index"]: t["train_clips"] for t in tasks}
            todo = [g for g in steps if not set(g) <= set(done)]  # a partly written step is retrained whole
            with progress.reporting(log):  # progress lines of the steps trained here go to ``log`` too
                backend.map_tasks(cnn_task, [(g, [train_clips[k] for k in g], work) for g in todo],
                                  jobs, say, "cnn fold", scheduler=scheduler, gpu=gpu is not None, shared=(work.store,))
            records = list(fold_docs(store, run, "embed").values())
            timings = {"embed_seconds": round(time.perf_counter() - started, 2),
                       "cnn_train_frames_per_s": _rate(records, "train_frames", "train_seconds"),
                       "embed_frames_per_s": _rate(records, "embed_frames", "embed_seconds")}
            writer.commit("embed", len(tasks), {"device": records[0]["device"], "backend": records[0]["backend"],
                                                "timings": timings, "reproducible": reproducible(records)})
        except BaseException as exc:
            writer.fail("embed", exc)
            raise
    finally:
        writer.release()
    return run_document(store, run)


def _cnn_steps(store: Store, tasks: list[dict], folds_per_step: int | str, settings: dict, n_classes: int,
               gpu: int | None) -> tuple[list[list[int]], dict | None]:
    """The CNN folds of each training step, in order, ``folds_per_step`` at a time (``"auto"``: as
    many as the device's free memory holds, :func:`roi_store.method.backend.auto_folds_per_step`,
    whose reckoning comes second; None for a number given)."""
    memory = None
    if folds_per_step == "auto":
        shapes = {r: tuple(store.array(r).shape[2:]) for r in store.regions}
        folds_per_step, memory = backend.auto_folds_per_step(shapes, settings["batch_size"], settings["cnn_dense"],
                                                             settings["cnn_pool"], n_classes, gpu, len(tasks))
    k = int(folds_per_step)
    index = [t["index"] for t in tasks]
    return [index[i:i + k] for i in range(0, len(index), k)], memory


def reproducible(records: list[dict]) -> bool:
    """Whether a run's numbers are bit-reproducible: every step ran on a CPU (GPU kernels are not)."""
    return all(str(r.get("device", "")).startswith("cpu") for r in records)


def _rate(results, frames_key, seconds_key):
    """Region frames per second: frames x regions over the seconds of the steps that trained them."""
    frames = sum(r["totals"][frames_key] for r in results)
    seconds = sum(r["totals"][seconds_key] for r in results)
    return round(frames / seconds, 1) if seconds else None


@dataclasses.dataclass(frozen=True)
class CnnWork:
    """What every CNN task of a run needs: small values only (a task may run on a cluster worker)."""

    store: str  # the store's absolute path or URL
    run: str
    settings: dict  # the run's settings
    clips: list[str]  # every clip embedded, in the run's order
    targets: list[list[str]]  # each clip's per-region training target (relabelled class)
    cnn_classes: list[str]
    regions: list[str]
    part: str | None = None  # a group below the run to write into (the final model's)
    checkpoint_every: float | None = 600.0  # seconds between a step's checkpoints (None: never)


def cnn_task(indices: list[int], train_lists: list[list[str]], work: CnnWork) -> dict:
    """Train the six region CNNs of the CNN folds ``indices`` (together) and embed every clip of the run.

    ``train_lists[i]`` holds the clips CNN fold ``indices[i]`` trains on. Writes these folds'
    embedding chunks, CNN models and, last, their fold markers (folds already marked, of a step
    retrained by a resumed run, are left as they are). A fold's batches and seeds derive from the
    run's seed and its own index alone; its step's partners (fixed in the plan) change only the
    rounding of its kernels, so a fold redone by a resumed run equals the fold an uninterrupted run
    makes. The step checkpoints its state under ``checkpoints/cnn/<indices>`` and resumes from it.
    """
    keras = backend.keras()
    from roi_store.method import engine, models

    store = open_store(work.store, mode="r+")
    data_out = RunData.open(store, work.run)
    if work.part:  # the final model's arrays (``roistore fit-lstm --final``)
        data_out = data_out.part(work.part)
    s, ids, regions, cnn_classes = work.settings, work.clips, work.regions, work.cnn_classes
    cls_index = {c: i for i, c in enumerate(cnn_classes)}
    read_start = time.perf_counter()
    data = engine.ViewFrames({r: store.clips_frames(ids, r) for r in regions},
                             [[cls_index[t] for t in per_region] for per_region in work.targets])
    read_seconds = time.perf_counter() - read_start
    train = np.stack([data.frame_mask(np.isin(ids, list(t))) for t in train_lists], axis=1)
    base = s["seed"] * 1000003
    backend.seed_everything(base)
    where = f"checkpoints/cnn/{'-'.join(map(str, indices))}"
    checkpoint = engine.Checkpoint(load=lambda: data_out.checkpoint(where),
                                   save=lambda state: data_out.put_checkpoint(where, state), every=work.checkpoint_every)
    with progress.training(store, work.run, stage="final-cnn" if work.part else "embed", folds=list(indices),
                           epochs=s["epochs"], per_epoch=int(train.sum()) * len(regions),
                           unit="region frames/s") as tracker:
        res = engine.train_group(
            data, train, n_classes=len(cnn_classes), dense=s["cnn_dense"], pool=s.get("cnn_pool", "flatten"),
            mode=s["input"], epochs=s["epochs"], batch_size=s["batch_size"], learning_rate=s["learning_rate"],
            gamma=s["gamma"], fold_seeds=[base + k * 101 for k in indices], checkpoint=checkpoint,
            callbacks=[tracker.keras_callback()])
    start = time.perf_counter()
    embs, probs = engine.embed_all(res["model"], data, s["input"])
    embed_seconds = time.perf_counter() - start
    n_f = len(indices)
    records = []
    for f, index in enumerate(indices):
        if data_out.fold_marker("embed", index):  # written before this step was interrupted: kept as it is
            records.append(data_out.fold_marker("embed", index))
            continue
        mine = train[:, f]
        cnn, digests = {}, {"embeddings": {}, "models": {}}
        for r_i, region in enumerate(regions):
            block = keras.utils.pad_sequences(np.split(embs[region][:, f], data.offsets[1:-1]), maxlen=store.t_max,
                                              dtype="float16", padding="post")
            data_out.write_embeddings(region, index, block)
            killpoints.reached("embed.chunk")
            digests["embeddings"][region] = digest(block)
            plain = backend.model_to_bytes(engine.export_fold(res["model"], region, f, res["plain"][region]))
            digests["models"][region] = data_out.put_model(f"models/cnn/{index}/{region}", plain)
            killpoints.reached("embed.model")
            y = data.targets[mine, r_i]
            p = probs[region][mine, f]
            counts = np.bincount(y, minlength=len(cnn_classes))
            alpha = np.array(models.inverse_frequency_alpha(counts), dtype=np.float32)
            # The training loss itself, on the fold's frames: alpha-scaled one-hot targets, one fold.
            targets = (np.eye(len(cnn_classes), dtype=np.float32)[y] * alpha)[:, None, :]
            loss = float(engine.FoldFocalLoss(s["gamma"])(targets, p[:, None, :])) if len(y) else 0.0
            # Loss and accuracy on the fold's training frames after training (no dropout).
            cnn[region] = {"train_frames": int(mine.sum()), "class_counts": counts.tolist(),
                           "final_loss": round(loss, 5),
                           "final_accuracy": round(float(np.mean(p.argmax(1) == y)) if len(y) else 0.0, 4)}
        # A step shared by several folds is timed once: each fold carries its share.
        totals = {"train_frames": int(mine.sum()) * s["epochs"] * len(regions),
                  "train_seconds": round(res["train_seconds"] / n_f, 3),
                  "embed_frames": data.n_frames * len(regions), "embed_seconds": round(embed_seconds / n_f, 3),
                  "read_seconds": round(read_seconds / n_f, 3)}
        record = {"index": index, "cnn": cnn, "device": backend.device_name(), "backend": keras.backend.backend(),
                  "trained_with": list(indices), "totals": totals, "finished": now(), "digests": digests}
        # The fold's marker goes last: a fold without it is redone by a resumed run.
        data_out.mark_fold("embed", index, record)
        records.append(record)
    data_out.drop(where)  # every fold of the step is marked: its checkpoint is spent
    return {"index": indices[0] if n_f == 1 else indices, "records": records, "cnn": records[0]["cnn"],
            "device": records[0]["device"]}
