"""``roistore pack`` and ``export``: send a store as one file; take a run's results elsewhere."""

from __future__ import annotations

import click

from roi_store.cli.options import store_argument

overwrite_option = click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")


@click.command()
@store_argument
@click.argument("out", type=click.Path(dir_okay=False, path_type=str))
@click.option("--force", is_flag=True, help="Pack even with pending clips or a run still running.")
@overwrite_option
def pack(store, out, force, overwrite):
    """Pack the store folder STORE into one zip file OUT, which opens read-only as a store."""
    from roi_store.store.share import pack_store

    rep = pack_store(store, out, force=force, overwrite=overwrite)
    for item in rep.forced:
        click.echo(f"WARNING: packed although {item}", err=True)
    click.echo(f"wrote {rep.out}: {rep.clips} clips, {rep.runs} runs, {rep.files} files, "
               f"{rep.bytes / 2**20:.1f} MiB")


@click.command()
@store_argument
@click.option("--run", "run", default=None, help="Name of the run inside the store.")
@click.option("--features", "features", default=None, metavar="NAME",
              help="Export feature set NAME (roistore flow) instead of a run: arrays, labels, LOSO folds.")
@click.option("--format", "fmt", type=click.Choice(["hdf5", "npz"]), required=True,
              help="HDF5 (h5py; MATLAB reads it) or NumPy's compressed .npz.")
@click.argument("out", type=click.Path(dir_okay=False, path_type=str))
@overwrite_option
def export(store, run, features, fmt, out, overwrite):
    """Write a run's embeddings, labels, folds and predictions, or a feature set, to OUT (layout: the docs, Store format, Export files)."""
    from roi_store.store.export import export_features, export_run
    from roi_store.store.store import open_store

    if (run is None) == (features is None):
        raise click.UsageError("give exactly one of --run NAME and --features NAME")
    if features is not None:
        rep = export_features(open_store(store), features, out, fmt, overwrite=overwrite)
        click.echo(f"wrote {rep['out']} ({rep['format']}): feature set {features}, {rep['clips']} clips")
        return
    rep = export_run(open_store(store), run, out, fmt, overwrite=overwrite)
    click.echo(f"wrote {rep['out']} ({rep['format']}): {rep['clips']} clips, {rep['frames']} frames, "
               f"{rep['folds']} folds, predictions {'included' if rep['predictions'] else 'absent (head not fitted)'}")


COMMANDS = [pack, export]
