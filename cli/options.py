"""Options shared by several commands, declared once."""

from __future__ import annotations

import click

#: A store folder; read-only commands also take a zip made by ``roistore pack`` or an fsspec URL.
store_argument = click.argument("store", metavar="STORE", type=str)
jobs_option = click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
                           help="Worker processes.")
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random choice.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (a stable interface) instead of text.")
scheduler_option = click.option(
    "--scheduler", metavar="ADDRESS", default=None,
    help="Run the clip or fold tasks on the workers of this dask.distributed scheduler (tcp://HOST:8786) "
         "instead of local processes; every worker must see the store at the same path. See the docs: Concepts, Running on a cluster.")
run_option = click.option("--run", "run", required=True, help="Name of the run inside the store.")
