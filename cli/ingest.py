"""``roistore ingest``: read a dataset's native layout into a store."""

from __future__ import annotations

import click

from roi_store.cli.options import jobs_option, scheduler_option, store_argument
from roi_store.ingest.datasets import READERS


@click.command()
@store_argument
@click.option("--dataset", required=True, type=click.Choice(sorted(READERS)), help="Which native layout to read.")
@click.option("--root", required=True, type=click.Path(exists=True, file_okay=False, path_type=str),
              help="The folder holding the subject folders (CASME2_RAW_selected/, SAMM/, HS/).")
@click.option("--annotations", type=click.Path(exists=True, dir_okay=False, path_type=str),
              help="Annotation sheet or manifest CSV (default: the dataset's sheet beside --root).")
@jobs_option
@scheduler_option
@click.option("--t-max", type=click.IntRange(min=1), default=None, help="Padded clip length in frames [default: 500].")
@click.option("--scheme", type=click.Choice(["landmarks", "centred", "authors"]), default=None,
              help="Region box placement [default: landmarks; 'authors' is the paper's script].")
@click.option("--landmarks-model", type=click.Path(exists=True, dir_okay=False, path_type=str),
              help="A dlib 68-point shape predictor file (default: face-recognition-models' iBUG 300-W model).")
@click.option("--view-file", type=click.Path(exists=True, dir_okay=False, path_type=str),
              help="A clip list in the MEGC 2019 file format (dataset,subject,filename,label) defining the megc2019 view.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar on stderr.")
def ingest(store, dataset, root, annotations, jobs, scheduler, t_max, scheme, landmarks_model, view_file, progress):
    """Append a dataset's clips to STORE (created if needed). Safe to re-run: done clips are kept."""
    from roi_store.ingest.pipeline import ingest as run

    report = run(store, dataset, root, annotations, jobs=jobs, scheduler=scheduler, t_max=t_max, scheme=scheme,
                 landmarks_model=landmarks_model, view_file=view_file, progress=progress)
    click.echo(
        f"{report.dataset}: {report.found} clips found, {report.added} added, {report.already} already complete, "
        f"{len(report.skipped)} skipped ({report.frames} frames cut)"
    )
    for item in report.skipped:
        click.echo(f"  skipped {item['id']}: {item['reason']}")


COMMANDS = [ingest]
