"""``roistore info``, ``validate``, ``preview`` and ``audit``: look into a store."""

from __future__ import annotations

import json

import click

from roi_store.cli.options import json_option, store_argument
from roi_store.ids import printable


@click.command()
@store_argument
@json_option
def info(store, as_json):
    """Print what STORE holds: clips and subjects per dataset, class counts per view, skipped clips."""
    from roi_store.store.store import open_store

    summary = open_store(store).summary()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"{summary['store']}: {summary['clips']} clips, {summary['subjects']} subjects, "
               f"{summary['frames']} frames (format {summary['format_version']}, boxes: {summary['region_scheme']}, "
               f"t_max {summary['t_max']})")
    for ds, d in summary["datasets"].items():
        click.echo(f"  {ds:<8} {d['clips']:>5} clips {d['subjects']:>4} subjects {d['frames']:>7} frames")
    for name, view in summary["views"].items():
        classes = list(view["classes"])
        click.echo(f"view {name}:")
        click.echo("  " + f"{'':<8} {'subjects':>8} " + " ".join(f"{c:>9}" for c in classes) + f" {'total':>6}")
        rows = [*view["datasets"].items(), ("all", view)]
        for ds, d in rows:
            click.echo("  " + f"{ds:<8} {d['subjects']:>8} " + " ".join(f"{d['classes'][c]:>9}" for c in classes)
                       + f" {d['clips']:>6}")
    for name, fset in summary["feature_sets"].items():
        state = "" if fset["state"] == "complete" else f", {fset['state']}: {fset['done']} done (re-run flow to resume)"
        click.echo(f"feature set {name}: {fset['estimator']} flow, {fset['size']} px, apex {fset['apex']}, "
                   f"{fset['clips']} clips{state}")
    if summary["pending"]:
        click.echo(f"{len(summary['pending'])} clips pending (an ingest was interrupted: re-run it)")
    if summary["skipped"]:
        click.echo(f"{len(summary['skipped'])} skipped:")
        for item in summary["skipped"]:
            click.echo(f"  {item['id']}: {item['reason']}")


@click.command()
@store_argument
@json_option
def validate(store, as_json):
    """Check STORE against its JSON Schemas and every chunk against its crc32c checksum."""
    from roi_store.store.store import open_store
    from roi_store.store.validate import validate_store

    report = validate_store(open_store(store))
    if as_json:
        click.echo(json.dumps({"ok": report.ok, "clips": report.clips, "chunks": report.chunks,
                               "problems": report.problems, "incomplete": report.incomplete,
                               "runs": report.runs, "feature_sets": report.features}, indent=2))
    else:
        for problem in report.problems:
            click.echo(f"problem: {problem}")
        if report.incomplete:
            click.echo(f"{len(report.incomplete)} clips incomplete (re-run the ingest to finish them)")
        for run in report.runs:
            if run["state"] != "complete":
                click.echo(f"run {run['name']}: {run['stage']} {run['state']} (what is not committed is not checked; "
                           "see 'roistore runs')")
        for fset in report.features:
            if fset["state"] != "complete":
                click.echo(f"feature set {fset['name']}: {fset['done']} of {fset['clips']} clips done (re-run "
                           "'roistore flow' with its options to finish it)")
        click.echo(f"{'ok' if report.ok else 'INVALID'}: {report.clips} clip records, {report.chunks} chunks verified")
    if not report.ok:
        raise SystemExit(1)


@click.command()
@store_argument
@click.argument("clip_id")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=str), help="PNG file to write.")
@click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=str),
              help="Dataset root, if it moved since ingest.")
def preview(store, clip_id, out, root):
    """Draw CLIP_ID's face frame with its 68 landmarks and six boxes, and the region crops."""
    from roi_store.ingest.preview import write_preview
    from roi_store.store.store import open_store

    click.echo(f"wrote {printable(str(write_preview(open_store(store), clip_id, out, root)))}")


@click.command()
@store_argument
@json_option
def audit(store, as_json):
    """List exact duplicate clips across STORE (identical region frames, by sha256), so no fold tests on a clip it trained on."""
    from roi_store.evaluation.audit import audit_store
    from roi_store.store.store import open_store

    report = audit_store(open_store(store))
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for group in report["duplicates"]:
            where = "same subject" if group["same_subject"] else f"subjects {', '.join(group['subjects'])}"
            views = "; ".join(f"{len(m)} in view {v}" for v, m in group["views"].items()) or "in no view"
            click.echo(f"duplicate: {' = '.join(printable(c) for c in group['clips'])} ({where}; {views})")
        n = len(report["duplicates"])
        click.echo(f"{report['clips']} clips hashed: " + (f"{n} group{'s' if n != 1 else ''} of identical clips ({report['duplicate_clips']} "
                   "clips): drop a copy, or list their subjects as one person with 'roistore embed --same-person FILE'"
                   if n else "no duplicates"))
    if report["duplicates"]:
        raise SystemExit(1)


COMMANDS = [info, validate, preview, audit]
