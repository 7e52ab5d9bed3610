"""``roistore embed``, ``fit-lstm``, ``report`` and ``predict``: the region CNN + LSTM method."""

from __future__ import annotations

import json

import click

from roi_store.cli.options import jobs_option, json_option, run_option, scheduler_option, seed_option, store_argument

gpu_option = click.option("--gpu", type=int, default=None,
                          help="Use only this GPU (index), made visible before the framework starts; with --scheduler: run on workers started with --resources GPU=1.")
cpu_option = click.option("--cpu", is_flag=True, help="Run on the CPU even if a GPU is present.")
permute_option = click.option("--permute-labels", type=int, default=None, metavar="SEED",
                              help="Permutation control: train and score on labels shuffled with SEED (see --permute-within).")
same_person_option = click.option(
    "--same-person", type=click.Path(exists=True, dir_okay=False, path_type=str), default=None, metavar="FILE",
    help="CSV with the header dataset,subject,person: the subjects of one person (e.g. in two datasets) "
         "are tested in one fold and never trained on for each other.")
within_option = click.option(
    "--permute-within", type=click.Choice(["dataset", "subject", "all"]), default=None,
    help="With --permute-labels: shuffle labels inside each dataset (each keeps its class counts), inside each "
         "subject, or across every clip. [default: dataset; fit-lstm on a permuted run: the run's]")
seeds_option = click.option(
    "--seeds", default=None, metavar="S1,S2,...",
    help="Repeat over seeds: run the command once per seed, as runs NAME-s1, NAME-s2, ... (excludes --seed); "
         "complete runs are left as they are.")
overwrite_run_option = click.option("--overwrite", is_flag=True,
                                    help="Replace an existing run of the same name made with other settings.")


def training_run_options(command):
    """The options a command that trains a run (``embed``, ``fit``) ends with: its null-model and
    same-person controls, its seed or seeds, where its folds run, and ``--overwrite``."""
    for option in reversed((permute_option, within_option, same_person_option, seed_option, seeds_option, jobs_option,
                            scheduler_option, overwrite_run_option)):
        command = option(command)
    return command


def _seed(ctx: click.Context, seeds, seed):
    """--seed as given, or None when left at its default beside --seeds (the library refuses both)."""
    from click.core import ParameterSource

    return None if seeds is not None and ctx.get_parameter_source("seed") == ParameterSource.DEFAULT else seed


def _echo_err(msg: str) -> None:
    from roi_store.method import progress

    if not progress.echo(msg):  # above a progress bar, if one is shown
        click.echo(msg, err=True)


def _progress():
    """Training progress on stderr while a command trains: a bar on a terminal, lines in a log."""
    from roi_store.method import progress

    return progress.printing()  # stderr as it is now (a test runner's, when one replaced it)


preset_option = click.option(
    "--preset", type=click.Choice(["roistore", "paper"]), default=None,
    help="Where every setting left unset comes from: roistore's defaults, or every setting the paper states "
         "(raw frames, CNN batch 64, default relabel table; the head unmasked on 500 zero-padded steps). "
         "[default: roistore]")


class FoldsPerStep(click.ParamType):
    """A positive number of folds, or ``auto``."""

    name = "folds_per_step"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == "auto":
            return value
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1:
            self.fail(f"{value!r} is neither a positive number nor auto", param, ctx)
        return n


@click.command()
@store_argument
@run_option
@gpu_option
@cpu_option
@preset_option
@click.option("--protocol", type=click.Choice(["loso", "hde", "kfold"]), default="loso", show_default=True,
              help="Folds: leave one subject out, leave one dataset out, or K folds of whole subjects.")
@click.option("--folds", type=int, default=None, help="K for --protocol kfold.")
@click.option("--view", default="megc2019", show_default=True, help="Class view of the store to use.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="CNN training epochs. [preset: 100]")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="CNN batch size. [preset roistore: 256, paper: 64]")
@click.option("--cnn-scope", type=click.Choice(["fold", "global"]), default="fold", show_default=True,
              help="fold: CNNs trained per fold on its training subjects; global: one CNN on every clip (LEAKS test subjects, as the paper appears to do).")
@click.option("--cnn-folds", type=click.IntRange(min=2), default=None, metavar="K",
              help="With --protocol loso: train the CNNs on K subject groups only (cross-fitting); each fold's head uses the CNNs that never saw its test subject.")
@click.option("--input", "cnn_input_mode", type=click.Choice(["delta", "frames"]), default=None,
              help="What each region CNN sees: the frame minus the clip's first frame (delta), or the raw frame (the paper). [preset roistore: delta, paper: frames]")
@click.option("--cnn-pool", type=click.Choice(["gap", "flatten"]), default=None,
              help="Global average pool into the dense layer (the paper's network), or a 2x2 pool flattened. [preset: gap]")
@click.option("--cnn-dense", type=click.IntRange(min=1), default=None,
              help="Units of the CNN's dense layer before the 20-d embedding. [preset: 1024]")
@click.option("--folds-per-step", type=FoldsPerStep(), default="1", show_default=True, metavar="N|auto",
              help="CNN folds trained side by side in one step: faster on a GPU, no faster on a CPU; the results "
                   "are the same. auto: as many as the GPU's free memory holds, 1 on a CPU.")
@click.option("--checkpoint-every", type=click.FloatRange(min=0), default=600, show_default=True, metavar="SECONDS",
              help="Checkpoint a training step at the first epoch end after this long (0: every epoch); a killed "
                   "run resumes from its last checkpoint.")
@click.option("--relabel", type=click.Choice(["au", "default"]), default=None,
              help="'Not me' relabel table: AU-driven (default table where a clip has no AUs) or the default FACS table. [preset roistore: au, paper: default]")
@training_run_options
@click.pass_context
def embed(ctx, store, run, gpu, cpu, preset, protocol, folds, view, epochs, batch_size, cnn_scope, cnn_folds,
          cnn_input_mode, cnn_pool, cnn_dense, folds_per_step, checkpoint_every, relabel, permute_labels, permute_within,
          same_person, seed, seeds, jobs, scheduler, overwrite):
    """Train the six region CNNs (per fold by default) and store every clip's 20-d per-frame embeddings."""
    from roi_store.method.embed import embed as run_embed
    from roi_store.method.repeats import embed_seeds

    if gpu is None and not cpu:
        _echo_err("no --gpu given: " + ("each worker uses the device it was started with" if scheduler else "running on the CPU"))
        cpu = True
    options = dict(view=view, protocol=protocol, folds=folds, epochs=epochs, batch_size=batch_size,
                   cnn_scope=cnn_scope, cnn_input_mode=cnn_input_mode, cnn_dense=cnn_dense, cnn_pool=cnn_pool,
                   cnn_folds=cnn_folds, folds_per_step=folds_per_step, checkpoint_every=checkpoint_every,
                   relabel=relabel, permute_labels=permute_labels,
                   permute_within=permute_within, same_person=same_person, preset=preset, jobs=jobs, gpu=gpu, cpu=cpu,
                   scheduler=scheduler, overwrite=overwrite)
    with _progress():
        if seeds is not None:
            docs = embed_seeds(store, run, seeds, seed=_seed(ctx, seeds, seed), log=_echo_err, **options)
        else:
            docs = [run_embed(store, run, seed=seed, log=_echo_err, **options)]
    for doc in docs:
        if gpu is not None and not str(doc["device"]).startswith("gpu"):
            _echo_err(f"WARNING: --gpu {gpu} was asked for but no GPU was visible to the framework: the run used the CPU")
        if doc["leakage"]:
            _echo_err("WARNING: --cnn-scope global trains the CNNs on test subjects too; scores of this run are optimistic")
        t = doc["timings"]
        click.echo(f"run {doc['name']} (preset {doc['settings']['preset']}, seed {doc['settings']['seed']}): "
                   f"{len(doc['clips'])} clips, {len(doc['folds'])} folds, "
                   f"{doc['cnn_tasks']} CNN trainings on {doc['device']} in {t['embed_seconds']:.0f} s "
                   f"(train {t['cnn_train_frames_per_s']} region frames/s, embed {t['embed_frames_per_s']} region frames/s)")


@click.command(name="fit-lstm")
@store_argument
@run_option
@gpu_option
@cpu_option
@preset_option
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Fusion head epochs. [preset: 60]")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Fusion head batch size. [preset: 244]")
@click.option("--masked/--unmasked", default=None,
              help="Mask padded steps or feed the paper's zero padding to t_max as data. [preset roistore: masked, paper: unmasked]")
@permute_option
@within_option
@click.option("--control-run", default=None, metavar="NAME",
              help="With --permute-labels on a run embedded with true labels: the run the head-only control is written "
                   "as. [default: NAME-perm<SEED>h, plus -subject or -all for those --permute-within]")
@click.option("--final", is_flag=True,
              help="Instead of the folds: fit the run's CNNs and head on ALL subjects, for 'roistore predict' (never scored).")
@click.option("--cnn-epochs", type=click.IntRange(min=1), default=None,
              help="With --final: CNN epochs (default: the run's).")
@seed_option
@seeds_option
@jobs_option
@click.option("--overwrite", is_flag=True, help="Replace a head fitted with other settings.")
@scheduler_option
@click.pass_context
def fit_lstm(ctx, store, run, gpu, cpu, preset, epochs, batch_size, masked, permute_labels, permute_within, control_run,
             final, cnn_epochs, seed, seeds, jobs, overwrite, scheduler):
    """Fit the LSTM fusion head per fold on the run's embeddings and store pooled predictions."""
    from roi_store.errors import ConfigError
    from roi_store.method.head import fit_lstm as run_fit
    from roi_store.method.repeats import fit_lstm_seeds

    if gpu is None and not cpu:
        cpu = True
    if final and seeds is not None:
        raise ConfigError("--final fits the final model of one run: drop --seeds (run it once per NAME-s<seed>)")
    if final:
        from roi_store.method.final import fit_final

        if permute_labels is not None:
            raise click.UsageError("--final fits on the run's own labels: drop --permute-labels")
        from roi_store.method.presets import resolve

        head, _, _ = resolve("head", preset, {"epochs": epochs, "batch_size": batch_size, "masked": masked})
        with _progress():
            doc = fit_final(store, run, epochs=head["epochs"], batch_size=head["batch_size"], seed=seed,
                            masked=head["masked"], cnn_epochs=cnn_epochs, gpu=gpu, cpu=cpu, log=_echo_err)
        click.echo(f"run {run}: final model fitted on {len(doc['trained_on'])} clips of {doc['subjects']} subjects "
                   f"in {doc['timings']['seconds']:.0f} s (used by 'roistore predict')")
        return
    options = dict(epochs=epochs, batch_size=batch_size, masked=masked, permute_labels=permute_labels,
                   permute_within=permute_within, control_run=control_run, preset=preset, jobs=jobs, gpu=gpu, cpu=cpu,
                   overwrite=overwrite, scheduler=scheduler)
    with _progress():
        if seeds is not None:
            heads = fit_lstm_seeds(store, run, seeds, seed=_seed(ctx, seeds, seed), log=_echo_err, **options)
        else:
            heads = [run_fit(store, run, seed=seed, log=_echo_err, **options)]
    for head in heads:
        what = f" (head-only control on run {head['embeddings_from']}'s embeddings)" if head["embeddings_from"] else ""
        click.echo(f"run {head['run']}{what}: {len(head['folds'])} folds fitted in {head['timings']['fit_seconds']:.0f} s; "
                   f"{len(head['predictions'])} predictions stored (see 'roistore report')")


COMMANDS = [embed, fit_lstm]


@click.command()
@store_argument
@run_option
@click.argument("source", type=click.Path(exists=True, path_type=str))
@click.option("--landmarks-model", type=click.Path(exists=True, dir_okay=False, path_type=str),
              help="A dlib 68-point shape predictor file (default: face-recognition-models' model).")
@click.option("--models", "which", type=click.Choice(["auto", "final", "folds"]), default="auto", show_default=True,
              help="final: the model fitted on all subjects (fit-lstm --final); folds: average every fold's models; "
                   "auto: final when the run has one.")
@gpu_option
@cpu_option
@json_option
def predict(store, run, source, landmarks_model, which, gpu, cpu, as_json):
    """Run face, regions, CNN embeddings and LSTM of a run on a new clip (frame folder or video); print class probabilities.

    The face is taken from the first frame that shows one: in a video, searched for through its
    first 10 seconds. Every stored model is checked against the digest its run recorded before
    it is loaded.
    """
    from roi_store.method.predict import predict_clip

    out = predict_clip(store, run, source, models=which, landmarks_model=landmarks_model, gpu=gpu, cpu=cpu or gpu is None)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    used = "the final model" if out["model"] == "final" else f"ensemble of {out['models']} fold models"
    face = out["face"]
    at = f"at {face['time']:.2f} s" if face["time"] is not None else f"({face['file']})"
    click.echo(f"{out['source']}: {out['prediction']} ({out['n_frames']} frames, {used}; "
               f"face found on frame {face['frame']} {at})")
    for c, p in out["probabilities"].items():
        click.echo(f"  {c:<10} {p:.4f}")


COMMANDS.append(predict)
