"""``roistore flow`` (onset-apex optical flow feature sets) and ``upgrade`` (format 1 -> 2, for their face crops)."""

from __future__ import annotations

import json

import click

from roi_store.cli.options import jobs_option, json_option, scheduler_option, store_argument

progress_option = click.option("--progress/--no-progress", default=True, show_default=True,
                               help="Show a progress bar on stderr.")


@click.command()
@store_argument
@click.option("--name", required=True, help="Name of the feature set inside the store (several live side by side).")
@click.option("--estimator", type=click.Choice(["tvl1", "farneback"]), default="tvl1", show_default=True,
              help="TV-L1 (OpenCV contrib) or Farneback optical flow.")
@click.option("--size", type=click.IntRange(min=4, max=512), default=28, show_default=True,
              help="Side of the flow maps in pixels (onset and apex are resized to it first).")
@click.option("--apex", type=click.Choice(["annotated", "middle", "max-flow"]), default="annotated",
              show_default=True,
              help="Apex frame: the sheet's (clips without one are refused), the middle frame, or the frame of "
                   "largest flow from the onset (recorded as estimated).")
@jobs_option
@scheduler_option
@click.option("--overwrite", is_flag=True, help="Replace a set of this name made with other options or clips.")
@progress_option
@json_option
def flow(store, name, estimator, size, apex, jobs, scheduler, overwrite, progress, as_json):
    """Compute the onset-to-apex flow (u, v, strain) of every clip of STORE, for the face and six regions.

    Resumable: run the same command again after an interruption.
    """
    import dataclasses

    from roi_store.ingest.flow import compute_flow

    rep = compute_flow(store, name, estimator=estimator, size=size, apex=apex, jobs=jobs, scheduler=scheduler,
                       overwrite=overwrite, progress=progress)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(rep), indent=2))
        return
    sources = ", ".join(f"{n} {s}" for s, n in rep.apex_sources.items())
    click.echo(f"feature set {rep.name} of {rep.store}: {rep.clips} clips ({rep.computed} computed now, "
               f"{rep.already} before), apex {sources}, {rep.seconds:.1f} s")
    for ds, e in rep.apex_error.items():
        click.echo(f"  max-flow apex vs annotated, {ds}: median {e['median']:g} frames, IQR {e['q1']:g}-{e['q3']:g} "
                   f"({e['clips']} clips)")


@click.command()
@store_argument
@jobs_option
@scheduler_option
@progress_option
def upgrade(store, jobs, scheduler, progress):
    """Upgrade STORE in place to the current format (format 2 adds whole-face crops, read from the source frames)."""
    from roi_store.ingest.upgrade import upgrade_store

    rep = upgrade_store(store, jobs=jobs, scheduler=scheduler, progress=progress)
    if rep.clips == 0 and rep.old_version == rep.new_version:
        click.echo(f"{rep.store} is already format {rep.new_version}: nothing to do")
        return
    click.echo(f"upgraded {rep.store} from format {rep.old_version} to {rep.new_version}: face crops of "
               f"{rep.clips} clips ({rep.frames} frames), {rep.seconds:.1f} s")


COMMANDS = [flow, upgrade]
