"""``report``: MEGC 2019 tables from a run's pooled predictions (METHOD.md §7)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from roi_store.metrics import confusion, per_class_recall, uf1_uar
from roi_store.runs import head_document, list_runs, run_document
from roi_store.store import Store

LEAKAGE_WARNING = ("LEAKAGE: the region CNNs were trained on every clip, test subjects included "
                   "(--cnn-scope global); these scores are optimistic")


def scores(predictions: list[dict], classes: list[str]) -> dict:
    """UF1/UAR for FULL and per dataset, each computed once on the pooled predictions."""
    index = {c: i for i, c in enumerate(classes)}
    groups = {"FULL": predictions}
    for p in predictions:
        groups.setdefault(p["id"].split("/")[0], []).append(p)
    out = {}
    for name, preds in groups.items():
        t = [index[p["true"]] for p in preds]
        y = [index[p["pred"]] for p in preds]
        uf1, uar = uf1_uar(t, y, len(classes))
        out[name] = {"UF1": round(uf1, 4), "UAR": round(uar, 4), "clips": len(preds),
                     "recall": dict(zip(classes, per_class_recall(t, y, len(classes))))}
    return out


def run_report(store: Store, run: str) -> dict:
    """Scores, confusion matrix, settings and per-clip predictions of a fitted run."""
    doc = run_document(store, run)
    head = head_document(store, run)
    classes = head["classes"]
    preds = head["predictions"]
    idx = {c: i for i, c in enumerate(classes)}
    conf = confusion([idx[p["true"]] for p in preds], [idx[p["pred"]] for p in preds], len(classes))
    out = {
        "run": run,
        "state": doc.get("state"),
        "classes": classes,
        "scores": scores(preds, classes),
        "confusion": conf.tolist(),
        "predictions": [{"id": p["id"], "fold": p["fold"], "true": p["true"], "pred": p["pred"], "probs": p["probs"]}
                        for p in preds],
        "leakage": bool(doc.get("leakage")),
        "permuted": head["settings"].get("permute_labels") is not None,
        "settings": {"embed": doc["settings"], "head": head["settings"]},
        "folds": len(doc["folds"]),
        "device": doc.get("device"),
        "timings": {**doc.get("timings", {}), **head.get("timings", {})},
        "controls": [],
    }
    if out["leakage"]:
        out["warning"] = LEAKAGE_WARNING
    if not out["permuted"]:
        for other in list_runs(store):
            s = other.get("settings") or {}
            if other["name"] != run and s.get("permute_labels") is not None and other["scores"] is not None \
                    and s.get("view") == doc["settings"]["view"] and s.get("protocol") == doc["settings"]["protocol"]:
                ctrl = run_report(store, other["name"])
                out["controls"].append({"run": other["name"], "permute_labels": s["permute_labels"],
                                        "scores": {k: {m: v[m] for m in ("UF1", "UAR")} for k, v in ctrl["scores"].items()}})
    return out


def format_report(rep: dict) -> str:
    """A Table-2-style text table with recall, confusion matrix, settings and controls."""
    cols = ["FULL"] + [d for d in ("smic", "casme2", "samm") if d in rep["scores"]] + \
        sorted(k for k in rep["scores"] if k not in ("FULL", "smic", "casme2", "samm"))
    lines = []
    if rep.get("warning"):
        lines += [f"!! {rep['warning']}", ""]
    title = f"run {rep['run']}" + (" (permutation control)" if rep["permuted"] else "")
    lines.append(title)
    lines.append(f"{'':<10}" + "".join(f"{c:>16}" for c in cols))
    lines.append(f"{'':<10}" + "".join(f"{'UF1':>8}{'UAR':>8}" for _ in cols))
    lines.append(f"{'method':<10}" + "".join(f"{rep['scores'][c]['UF1']:>8.4f}{rep['scores'][c]['UAR']:>8.4f}" for c in cols))
    for ctrl in rep.get("controls", []):
        lines.append(f"{'perm ' + str(ctrl['permute_labels']):<10}" + "".join(
            f"{ctrl['scores'][c]['UF1']:>8.4f}{ctrl['scores'][c]['UAR']:>8.4f}" if c in ctrl["scores"] else f"{'-':>16}"
            for c in cols) + f"   (control run {ctrl['run']})")
    lines.append(f"{'clips':<10}" + "".join(f"{rep['scores'][c]['clips']:>16}" for c in cols))
    lines.append("")
    lines.append("recall per class (FULL): " + ", ".join(
        f"{k} {v:.3f}" if v is not None else f"{k} -" for k, v in rep["scores"]["FULL"]["recall"].items()))
    lines.append("confusion (rows true, columns predicted):")
    width = max(len(c) for c in rep["classes"]) + 2
    lines.append(" " * width + "".join(f"{c:>{width}}" for c in rep["classes"]))
    for c, row in zip(rep["classes"], rep["confusion"]):
        lines.append(f"{c:<{width}}" + "".join(f"{v:>{width}}" for v in row))
    e, h = rep["settings"]["embed"], rep["settings"]["head"]
    lines.append("")
    lines.append(f"protocol {e['protocol']}{' K=' + str(e['folds']) if e.get('folds') else ''} ({rep['folds']} folds), "
                 f"view {e['view']}, cnn scope {e['cnn_scope']}, relabel {e['relabel']}, cnn epochs {e['epochs']}, "
                 f"head epochs {h['epochs']}, masked {h['masked']}, seed {e['seed']}/{h['seed']}, device {rep.get('device')}")
    return "\n".join(lines)


def write_plots(rep: dict, out_dir: str | Path) -> list[Path]:
    """Confusion matrix and per-dataset UF1/UAR bars as PNG files in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    conf = np.array(rep["confusion"])
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(conf, cmap="Blues")
    ax.set_xticks(range(len(rep["classes"])), rep["classes"])
    ax.set_yticks(range(len(rep["classes"])), rep["classes"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(conf):
        ax.text(j, i, str(v), ha="center", va="center", color="black" if v < conf.max() / 2 else "white")
    ax.set_title(f"{rep['run']}: confusion (pooled)")
    fig.tight_layout()
    p1 = out / f"{rep['run']}_confusion.png"
    fig.savefig(p1, dpi=120)
    plt.close(fig)
    names = list(rep["scores"])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(names))
    ax.bar(x - 0.2, [rep["scores"][n]["UF1"] for n in names], 0.4, label="UF1")
    ax.bar(x + 0.2, [rep["scores"][n]["UAR"] for n in names], 0.4, label="UAR")
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title(f"{rep['run']}: UF1 / UAR per dataset")
    fig.tight_layout()
    p2 = out / f"{rep['run']}_datasets.png"
    fig.savefig(p2, dpi=120)
    plt.close(fig)
    return [p1, p2]
