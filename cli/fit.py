"""``roistore fit``: a method trained on a flow feature set (STSTNet), beside ``embed`` and ``fit-lstm``."""

from __future__ import annotations

import click

from roi_store.cli.models import _echo_err, _seed, cpu_option, gpu_option, training_run_options
from roi_store.cli.options import run_option, store_argument

#: Methods ``fit`` trains, by name.
METHODS = ("ststnet",)


@click.command()
@store_argument
@run_option
@click.option("--method", type=click.Choice(METHODS), default="ststnet", show_default=True,
              help="The network: STSTNet (Liong et al., FG 2019) on the onset-to-apex flow of the face.")
@click.option("--features", required=True, metavar="NAME",
              help="The flow feature set to train on (made by 'roistore flow STORE --name NAME').")
@gpu_option
@cpu_option
@click.option("--protocol", type=click.Choice(["loso", "hde", "kfold"]), default="loso", show_default=True,
              help="Folds: leave one subject out, leave one dataset out, or K folds of whole subjects.")
@click.option("--folds", type=int, default=None, help="K for --protocol kfold.")
@click.option("--view", default="megc2019", show_default=True, help="Class view of the store to use.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Training epochs, the same for every fold (never chosen on a test subject). "
                   "[default: 500, as published]")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Batch size. [default: 256, as published]")
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Adam's learning rate. [default: 0.00005, as published]")
@click.option("--folds-per-step", type=click.IntRange(min=1), default=None,
              help="Folds trained together in one compiled step. [default: 17, so a 68-fold LOSO is 4 steps]")
@training_run_options
@click.pass_context
def fit(ctx, store, run, method, features, gpu, cpu, protocol, folds, view, epochs, batch_size, learning_rate,
        folds_per_step, permute_labels, permute_within, same_person, seed, seeds, jobs, scheduler, overwrite):
    """Train a method on a flow feature set per fold (STSTNet) and store pooled test predictions.

    Its runs are read like the paper's: report, compare, runs, export, --megc-log, predict.
    """
    from roi_store.method.ststnet import fit as run_fit
    from roi_store.method.ststnet import fit_seeds

    if gpu is None and not cpu:
        cpu = True
    options = dict(features=features, view=view, protocol=protocol, folds=folds, epochs=epochs, batch_size=batch_size,
                   learning_rate=learning_rate, folds_per_step=folds_per_step, permute_labels=permute_labels,
                   permute_within=permute_within, same_person=same_person, jobs=jobs, gpu=gpu, cpu=cpu,
                   scheduler=scheduler, overwrite=overwrite)
    if seeds is not None:
        docs = fit_seeds(store, run, seeds, seed=_seed(ctx, seeds, seed), log=_echo_err, **options)
    else:
        docs = [run_fit(store, run, seed=seed, log=_echo_err, **options)]
    for doc in docs:
        s, t = doc["settings"], doc["timings"]
        what = f", labels permuted with seed {s['permute_labels']}" if s.get("permute_labels") is not None else ""
        click.echo(f"run {doc['run']} ({method} on flow set {s['features']}, seed {s['seed']}{what}): "
                   f"{len(doc['folds'])} folds in {t['steps']} step(s), {s['epochs']} epochs, on {t['device']} in "
                   f"{t['fit_seconds']:.0f} s; {len(doc['predictions'])} predictions stored (see 'roistore report')")


COMMANDS = [fit]
