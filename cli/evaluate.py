"""``roistore report``, ``compare`` and ``check-view``: the evaluation of fitted runs (MEGC 2019)."""

from __future__ import annotations

import json

import click

from roi_store.cli.options import json_option, seed_option, store_argument

resamples_option = click.option("--resamples", type=click.IntRange(min=1), default=2000, show_default=True,
                                help="Bootstrap resamples of subjects (all of them when fewer are possible).")


@click.command()
@store_argument
@click.option("--run", "run", default=None, help="Name of the run inside the store.")
@click.option("--run-group", "prefix", metavar="PREFIX", default=None,
              help="Also summarise the repeats named PREFIX... (e.g. seedrun1, seedrun2): mean, sd, range.")
@click.option("--runs", "names", metavar="A,B,C", default=None,
              help="Also summarise these runs as repeats; runs of different methods (embed + fit-lstm, fit "
                   "--method ststnet) side by side instead, each later run against the first with a paired "
                   "interval and permutation p.")
@json_option
@click.option("--plot", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Write the confusion matrix, per-dataset bars, intervals and per-subject chart as PNG into this folder.")
@click.option("--megc-log", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Write the run's MEGC 2019 submission log to this file.")
@click.option("--html", "html", type=click.Path(dir_okay=False, path_type=str), default=None, metavar="OUT.html",
              help="Also write one self-contained web page of the run's (and the group's) results, figures inline.")
@resamples_option
@seed_option
def report(store, run, prefix, names, as_json, plot, megc_log, html, resamples, seed):
    """Print the MEGC 2019 table of a run (UF1/UAR pooled over folds, FULL and per dataset) with
    subject-bootstrap intervals, null runs and a per-subject table; or a group of repeats."""
    from roi_store.evaluation.stats import format_repeats, group_names, repeats
    from roi_store.evaluation.megc import write_megc_log
    from roi_store.evaluation.report import format_report, run_report, write_plots
    from roi_store.store.store import open_store

    from roi_store.evaluation.methods import format_side_by_side, methods_of, side_by_side

    if run is None and prefix is None and names is None:
        raise click.UsageError("give --run NAME, --run-group PREFIX or --runs A,B,C")
    if run is None and (plot or megc_log):
        raise click.UsageError("--plot and --megc-log need --run NAME")
    s = open_store(store)
    rep, group, side = None, None, None
    if prefix is not None or names is not None:
        listed = [n.strip() for n in (names or "").split(",") if n.strip()]
        if prefix is not None:
            listed += [n for n in group_names(s, prefix) if n not in listed]
            if not listed:
                raise click.ClickException(f"no run of {store} is named {prefix}...: see 'roistore runs {store}'")
        methods = set(methods_of(s, listed).values()) if prefix is None and len(listed) > 1 else set()
        if len(methods) > 1:  # different methods: side by side, never averaged as repeats
            side = side_by_side(s, listed, resamples=resamples, seed=seed)
        else:
            group = repeats(s, listed, skip_unfinished=prefix is not None)
    if run is not None:
        rep = run_report(s, run, resamples=resamples, seed=seed)
        if megc_log:
            rep["megc_log"] = write_megc_log(rep["predictions"], rep["classes"], megc_log, run)
            if rep["settings"]["embed"]["protocol"] != "loso":
                rep["megc_log"]["note"] = (f"protocol {rep['settings']['embed']['protocol']}: one block per subject, "
                                           "not per fold")
        if plot:
            rep["plots"] = [str(p) for p in write_plots(rep, plot)]
        if group is not None:
            rep["group"] = group
        if side is not None:
            rep["methods"] = side
    page = None
    if html:
        from roi_store.evaluation.html import write_html

        page = str(write_html(s, html, report=rep, group=group, methods=side, resamples=resamples, seed=seed))
    if as_json:
        doc = rep if rep is not None else {"methods": side} if side is not None else {"group": group}
        click.echo(json.dumps({**doc, "html": page} if page else doc, indent=2))
        return
    if rep is not None:
        click.echo(format_report(rep))
        if rep.get("megc_log", {}).get("note"):
            click.echo(f"note: {rep['megc_log']['note']}")
        for p in rep.get("plots", []):
            click.echo(f"wrote {p}")
    if group is not None or side is not None:
        if rep is not None:
            click.echo("")
        click.echo(format_repeats(group) if group is not None else format_side_by_side(side))
    if page:
        click.echo(f"wrote {page}")


@click.command()
@store_argument
@click.argument("run_a", metavar="RUN_A")
@click.argument("run_b", metavar="RUN_B")
@json_option
@resamples_option
@click.option("--permutations", type=click.IntRange(min=1), default=10000, show_default=True,
              help="Random within-subject swaps (all 2^subjects of them when that is fewer).")
@seed_option
def compare(store, run_a, run_b, as_json, resamples, permutations, seed):
    """Compare two runs over the same clips: UF1/UAR difference, paired subject-bootstrap interval, permutation p."""
    from roi_store.evaluation.stats import compare_runs, format_comparison
    from roi_store.store.store import open_store

    cmp = compare_runs(open_store(store), run_a, run_b, resamples=resamples, permutations=permutations, seed=seed)
    click.echo(json.dumps(cmp, indent=2) if as_json else format_comparison(cmp))


@click.command("check-view")
@store_argument
@click.option("--view-file", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="A clip list in the MEGC 2019 ground-truth format (CSV, no header: dataset, subject, filename, label 0/1/2).")
@json_option
def check_view(store, view_file, as_json):
    """Check a MEGC 2019 clip list against the built-in megc2019 rules applied to STORE's clips, clip by clip.

    Exits 1 when they differ (the known 441-clip variant of the official list excepted)."""
    from roi_store.evaluation.megc import check_view_file, format_view_check
    from roi_store.store.store import open_store

    check = check_view_file(open_store(store), view_file)
    click.echo(json.dumps(check, indent=2) if as_json else format_view_check(check, store))
    if not check["conforms"] and not check["only_variant"]:
        raise SystemExit(1)


COMMANDS = [report, compare, check_view]
