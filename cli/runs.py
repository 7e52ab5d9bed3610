"""``roistore runs``: the model runs of a store, their state, who made them, settings and scores."""

from __future__ import annotations

import json

import click

from roi_store.cli.options import json_option, store_argument


def _settings(s: dict | None, head: dict | None) -> str:
    if not s:
        return "-"
    folds = f" {s['folds']}" if s.get("folds") else ""
    text = f"{s['protocol']}{folds}, seed {s['seed']}, epochs {s['epochs']}, "
    if s.get("method"):  # a method on a flow feature set: no head
        text += f"{s['method']} on flow set {s['features']}"
        head = None
    else:
        text += f"cnn {s['cnn_scope']}, input {s['input']}"
    if s.get("permute_labels") is not None:
        text += f", permuted {s['permute_labels']} within {s.get('permute_within') or 'all'}"
    if s.get("same_person"):
        text += f", {len(s['same_person'])} persons merged"
    if head:
        text += f"; head epochs {head['epochs']}, seed {head['seed']}, {'masked' if head['masked'] else 'unmasked'}"
        if head.get("head_only_permutation") is not None:
            text += f", head-only permuted {head['head_only_permutation']} within {head.get('permute_within') or 'all'}"
    return text


@click.command()
@store_argument
@json_option
def runs(store, as_json):
    """List STORE's model runs: state (complete, running, stalled, incomplete, failed), who, when, settings, UF1/UAR.

    A running run shows its latest heartbeat (step, epoch, speed, folds done, ETA); a run whose
    lock is held but whose heartbeat stopped 10 minutes ago or more, or whose writer died while its
    workers still write, is stalled.
    """
    from roi_store.evaluation.report import scored_runs
    from roi_store.store.runs import duration
    from roi_store.store.store import open_store

    items = scored_runs(open_store(store))
    if as_json:
        click.echo(json.dumps({"store": store, "runs": items}, indent=2))
        return
    if not items:
        click.echo(f"{store}: no runs (make one with 'roistore embed {store} --run NAME')")
        return
    width = max(3, *(len(r["name"]) for r in items))
    click.echo(f"{'run':<{width}}  {'state':<10} {'stage':<5} {'folds':>5}  {'UF1':>6} {'UAR':>6}  {'by':<24} "
               f"{'started':<25} settings")
    for r in items:
        done, total = r["folds"]["head" if r["stage"] == "head" else "embed"] or [0, 0]
        uf1, uar = (f"{r['scores']['UF1']:.4f}", f"{r['scores']['UAR']:.4f}") if r["scores"] else ("-", "-")
        by = f"{r['user'] or '?'}@{r['host'] or '?'}"
        click.echo(f"{r['name']:<{width}}  {r['state']:<10} {r['stage']:<5} {f'{done}/{total}':>5}  {uf1:>6} {uar:>6}  "
                   f"{by:<24} {r['created'] or '-':<25} {_settings(r['settings'], r['head_settings'])}"
                   + ("  [LEAKAGE: global CNN]" if r["leakage"] else "")
                   + (f"  [embeddings of run {r['embeddings_from']}]" if r.get("embeddings_from") else ""))
        pad = f"{'':<{width}}  "
        if r["state"] == "failed":
            click.echo(f"{pad}failed: {r['reason']}")
        if r["state"] == "stalled":
            click.echo(f"{pad}stalled: {r['reason']}")
        if r.get("progress"):
            click.echo(f"{pad}{'running' if r['state'] == 'running' else 'last heartbeat'}: {r['progress']} "
                       f"(heartbeat {duration(r['heartbeat_age'] or 0)} ago)")
        if r["writer"]:
            w = r["writer"]
            held = "being written by" if r["state"] == "running" else "locked by"
            click.echo(f"{pad}{held} {w.get('user')}@{w.get('host')} (pid {w.get('pid')}, "
                       f"{w.get('command')} since {w.get('since')})")
        if r["state"] == "incomplete":
            command = "fit" if (r["settings"] or {}).get("method") else "fit-lstm" if r["stage"] == "head" else "embed"
            died = f" ({r['reason']})" if r["reason"] else ""
            click.echo(f"{pad}interrupted: re-run the same 'roistore {command}' command to resume it{died}")


COMMANDS = [runs]
