"""The ``roistore`` command group; errors a user can cause become one line and exit code 1."""

from __future__ import annotations

import click

from roi_store._version import __version__
from roi_store.errors import RoiStoreError
from roi_store.ids import printable


class RoiStoreGroup(click.Group):
    """Turns :class:`RoiStoreError` into a one-line ``Error: ...``; real bugs keep their traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except RoiStoreError as exc:
            line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise click.ClickException(printable(line)) from None


@click.group(cls=RoiStoreGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="roistore")
def cli():
    """roistore: facial micro-expression datasets -> region clips in a versioned, shareable store.

    Typical use: synth (or your licensed data) -> ingest -> info / validate / preview.
    """


def _register():
    from roi_store.cli import evaluate, features, fit, ingest, inspect, models, runs, share, synth

    for module in (synth, ingest, inspect, models, evaluate, runs, share, features, fit):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main():
    cli(prog_name="roistore")


if __name__ == "__main__":
    main()
