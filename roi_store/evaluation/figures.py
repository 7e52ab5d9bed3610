"""The figures of ``roistore report --html``, drawn with matplotlib into PNG bytes (no files).

Each function takes the dictionaries the report functions return (:func:`roi_store.evaluation.report.run_report`,
:func:`roi_store.evaluation.stats.repeats`, :func:`roi_store.evaluation.stats.compare_runs`) and returns the
encoded image, so that :mod:`roi_store.evaluation.html` can inline it as a data URI.
"""

from __future__ import annotations

import base64
import io

import numpy as np

from roi_store.evaluation.stats import METRICS

#: Resolution of every figure: sharp on a phone's screen and on paper, small enough to inline.
DPI = 110


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """``data:`` URI of encoded image bytes, for an ``<img src>`` that needs no file or network."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: the figures only ever become bytes
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    plt = _pyplot()
    fig.tight_layout()
    buf = io.BytesIO()
    # No "Software" stamp: the same report gives the same bytes.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def scores_figure(rep: dict) -> bytes:
    """UF1 and UAR of FULL and each dataset with their bootstrap intervals; null runs as crosses."""
    plt = _pyplot()
    unc = rep["uncertainty"]
    names = list(rep["scores"])
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(names) + 1.5), 3.2))
    for k, (metric, shift) in enumerate(zip(METRICS, (-0.12, 0.12))):
        x = np.arange(len(names)) + shift
        y = np.array([rep["scores"][n][metric] for n in names])
        lo = np.array([unc["intervals"][n][metric][0] for n in names])
        hi = np.array([unc["intervals"][n][metric][1] for n in names])
        ax.errorbar(x, y, yerr=[np.maximum(y - lo, 0), np.maximum(hi - y, 0)], fmt="o", capsize=4, color=f"C{k}",
                    label=metric)
        for i, ctrl in enumerate(rep.get("controls", [])):
            ax.plot(x, [ctrl["scores"].get(n, {}).get(metric, np.nan) for n in names], "x", color=f"C{k}",
                    alpha=0.6, label=f"{metric} null runs" if i == 0 else None)
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="best", fontsize=7, ncol=2)
    ax.set_title(f"{round(unc['level'] * 100)} % subject-bootstrap intervals", fontsize=9)
    return _png(fig)


def confusion_figure(matrix, classes: list[str], title: str) -> bytes:
    """One confusion matrix: counts in the cells, shaded by the share of the true class (row)."""
    plt = _pyplot()
    m = np.asarray(matrix)
    n = m.sum(axis=1, keepdims=True)
    share = np.divide(m, n, out=np.zeros(m.shape, dtype=float), where=n > 0)
    fig, ax = plt.subplots(figsize=(2.9, 2.7))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=30, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted", fontsize=8)
    ax.set_ylabel("true", fontsize=8)
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=8, color="white" if share[i, j] > 0.5 else "black")
    ax.set_title(title, fontsize=9)
    return _png(fig)


def subjects_figure(subjects: list[dict]) -> bytes:
    """Per subject: mean recall over its classes (bars, coloured by dataset) and accuracy (dots)."""
    plt = _pyplot()
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(max(6.0, 0.16 * len(subjects) + 2), 3.2))
    x = np.arange(len(subjects))
    datasets = list(dict.fromkeys(s["dataset"] for s in subjects))
    ax.bar(x, [s["recall"] for s in subjects], 0.8,
           color=[f"C{datasets.index(s['dataset']) % 10}" for s in subjects])
    ax.plot(x, [s["accuracy"] for s in subjects], "k.", markersize=4, label="accuracy")
    ax.set_xticks(x, [f"{s['subject'].split('/', 1)[-1]} ({s['clips']})" for s in subjects], rotation=90, fontsize=6)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("recall (mean over classes)", fontsize=8)
    handles = [Patch(color=f"C{i % 10}", label=d) for i, d in enumerate(datasets)]
    ax.legend(handles=[*ax.get_legend_handles_labels()[0], *handles], fontsize=7, ncol=len(datasets) + 1)
    ax.set_title("per subject (clips in brackets)", fontsize=9)
    return _png(fig)


def null_figure(rep: dict) -> bytes:
    """FULL UF1 and UAR of the run (line) against those of its null runs (dots)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(METRICS), figsize=(5.5, 2.2), sharex=True)
    rng = np.random.default_rng(0)  # vertical jitter only, so that equal null scores stay visible
    for ax, metric in zip(axes, METRICS):
        null = [c["scores"]["FULL"][metric] for c in rep["controls"]]
        ax.plot(null, rng.uniform(-0.3, 0.3, len(null)), "o", color="0.5", alpha=0.7, label="null runs")
        ax.axvline(rep["scores"]["FULL"][metric], color="C3", label="this run")
        ax.set_xlim(0, 1)
        ax.set_ylim(-1, 1)
        ax.set_yticks([])
        p = rep["null"]["p"][metric]
        ax.set_title(f"FULL {metric}: p = {p:.3f}", fontsize=9)
    axes[0].legend(fontsize=7, loc="upper left")
    return _png(fig)


def runs_figure(group: dict) -> bytes:
    """FULL UF1 and UAR of each run of a group, with the group's mean as a dashed line."""
    plt = _pyplot()
    runs = group["runs"]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(runs) + 2), 3.0))
    x = np.arange(len(runs))
    for k, (metric, shift) in enumerate(zip(METRICS, (-0.1, 0.1))):
        ax.plot(x + shift, [r["scores"]["FULL"][metric] for r in runs], "o", color=f"C{k}", label=metric)
        ax.axhline(group["summary"]["FULL"][metric]["mean"], color=f"C{k}", linestyle="--", alpha=0.6)
    ax.set_xticks(x, [r["run"] for r in runs], rotation=30 if len(runs) > 4 else 0, fontsize=7)
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title("FULL per run (dashed: mean)", fontsize=9)
    return _png(fig)


def methods_figure(side: dict) -> bytes:
    """FULL UF1 and UAR of runs of different methods, with their subject-bootstrap intervals."""
    plt = _pyplot()
    runs = side["runs"]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(runs) + 2), 3.0))
    for k, (metric, shift) in enumerate(zip(METRICS, (-0.1, 0.1))):
        x = np.arange(len(runs)) + shift
        y = np.array([r["scores"]["FULL"][metric] for r in runs])
        lo = np.array([r["intervals"]["FULL"][metric][0] for r in runs])
        hi = np.array([r["intervals"]["FULL"][metric][1] for r in runs])
        ax.errorbar(x, y, yerr=[np.maximum(y - lo, 0), np.maximum(hi - y, 0)], fmt="o", capsize=4, color=f"C{k}",
                    label=metric)
    ax.set_xticks(np.arange(len(runs)), [f"{r['run']}\n{r['method']}" for r in runs], fontsize=7)
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(f"FULL, {round(side['level'] * 100)} % subject-bootstrap intervals", fontsize=9)
    return _png(fig)


def comparison_figure(comparisons: list[dict]) -> bytes:
    """Forest plot: each pair's difference A - B per group and metric, with its paired interval."""
    plt = _pyplot()
    rows = [(f"{c['runs'][0]} - {c['runs'][1]}  {g} {m}", s[m]["difference"], s[m]["interval"])
            for c in comparisons for g, s in c["scores"].items() for m in METRICS]
    fig, ax = plt.subplots(figsize=(6.0, 0.28 * len(rows) + 1.0))
    y = np.arange(len(rows))[::-1]
    d = np.array([r[1] for r in rows])
    lo, hi = np.array([r[2][0] for r in rows]), np.array([r[2][1] for r in rows])
    ax.errorbar(d, y, xerr=[np.maximum(d - lo, 0), np.maximum(hi - d, 0)], fmt="o", capsize=3, color="C0")
    ax.axvline(0, color="0.4", linewidth=0.8)
    ax.set_yticks(y, [r[0] for r in rows], fontsize=7)
    ax.set_xlabel("difference A - B (paired subject-bootstrap interval)", fontsize=8)
    return _png(fig)


def flow_tiles(face: np.ndarray) -> bytes:
    """A clip's onset-to-apex flow ``(S, S, 3)`` (u, v, strain) as three colour tiles side by side, 4x enlarged."""
    import matplotlib

    import cv2

    tiles = []
    for k, name in enumerate(("u", "v", "strain")):
        a = np.asarray(face[..., k], dtype=float)
        if name == "strain":  # non-negative: black for none, bright for the most
            norm, cmap = (a / a.max() if a.max() > 0 else a), matplotlib.colormaps["magma"]
        else:  # signed: white for still, red and blue for the two directions
            scale = np.abs(a).max()
            norm, cmap = (0.5 + 0.5 * a / scale if scale > 0 else a * 0 + 0.5), matplotlib.colormaps["RdBu_r"]
        rgb = (cmap(np.nan_to_num(norm))[..., :3] * 255).astype(np.uint8)
        big = cv2.resize(rgb, None, fx=4, fy=4, interpolation=cv2.INTER_NEAREST)
        ink = (255, 255, 255) if name == "strain" else (0, 0, 0)  # legible on magma's dark end, and on white
        cv2.putText(big, name, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, ink, 1, cv2.LINE_AA)
        tiles += [big, np.full((big.shape[0], 4, 3), 255, np.uint8)]
    _, data = cv2.imencode(".png", cv2.cvtColor(np.hstack(tiles[:-1]), cv2.COLOR_RGB2BGR))
    return data.tobytes()
