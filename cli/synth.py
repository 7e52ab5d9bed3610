"""``roistore synth``: write a synthetic dataset in the three native layouts."""

from __future__ import annotations

import click

from roi_store.cli.options import jobs_option, seed_option


@click.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=str))
@click.option("--preset", type=click.Choice(["tiny", "megc2019"]), default="tiny", show_default=True,
              help="tiny: a few subjects for quick runs; "
                   "megc2019: the composite's exact shape (442 clips, 68 subjects).")
@click.option("--scale", type=click.FloatRange(min=0, min_open=True, max=1), default=1.0, show_default=True,
              help="Keep this fraction of each dataset's subjects and clips (benchmarks at reduced size).")
@seed_option
@jobs_option
def synth(out, preset, scale, seed, jobs):
    """Write a synthetic CASME II / SAMM / SMIC-HS dataset to OUT (a new or empty folder), built on real face photos."""
    from roi_store.synth import generate

    result = generate(out, preset=preset, seed=seed, jobs=jobs, scale=scale)
    for name, d in result["datasets"].items():
        comp = d["composite"]
        click.echo(f"{name:<7} {d['clips']:>4} clips {d['subjects']:>3} subjects {d['frames']:>6} frames "
                   f"-> {d['root']}; megc2019: {comp['clips']} clips, {comp['subjects']} subjects")
    click.echo(f"wrote {out} ({result['frames']} frames; ground truth in {out}/synth.json)")


COMMANDS = [synth]
