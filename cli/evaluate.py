"""``roistore report``: the evaluation of a fitted run (MEGC 2019 tables)."""

from __future__ import annotations

import json

import click

from roi_store.cli.options import json_option, run_option, store_argument


@click.command()
@store_argument
@run_option
@json_option
@click.option("--plot", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Write the confusion matrix and per-dataset bars as PNG into this folder.")
def report(store, run, as_json, plot):
    """Print the MEGC 2019 table (UF1/UAR, FULL and per dataset, pooled over folds) of a run."""
    from roi_store.report import format_report, run_report, write_plots
    from roi_store.store import open_store

    rep = run_report(open_store(store), run)
    if plot:
        rep["plots"] = [str(p) for p in write_plots(rep, plot)]
    if as_json:
        click.echo(json.dumps(rep, indent=2))
    else:
        click.echo(format_report(rep))
        for p in rep.get("plots", []):
            click.echo(f"wrote {p}")


COMMANDS = [report]
