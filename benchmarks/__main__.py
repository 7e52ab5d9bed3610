"""``python -m benchmarks --scale S --out DIR``: measure every stage beside its baseline.

Generates the megc2019 synthetic preset scaled by S (S=1: the full 442-clip composite plus the
clips it excludes), then alternates each contender with its baseline ``--repeats`` times in
fresh interpreters and writes ``results.json`` and ``results.md`` to DIR.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from benchmarks.harness import machine, table
from benchmarks.ingest_bench import DATASETS, bench_ingest, memory_scaling
from benchmarks.method_bench import cnn_throughput, data_path, fit_lstm_masked_vs_padded, loso_projection


def dataset(out: Path, scale: float, seed: int = 0) -> Path:
    """The synthetic data for ``scale``, generated once and reused while its settings match."""
    from roi_store.synth import generate

    data = out / f"data-{scale:g}"
    truth = data / "synth.json"
    if truth.exists():
        meta = json.loads(truth.read_text())
        if meta.get("preset") == "megc2019" and meta.get("seed") == seed and meta["overrides"].get("scale") == scale:
            return data
    shutil.rmtree(data, ignore_errors=True)
    generate(data, preset="megc2019", seed=seed, scale=scale, jobs=2)
    return data


def _fmt(s: dict, digits: int = 1) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.1, help="share of the megc2019 preset (1 = full composite)")
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stages", type=str, default="ingest,method",
                    help="comma-separated: ingest (vs cv2.imread), method (data path, CNN, fit-lstm, LOSO projection)")
    ap.add_argument("--scaling", type=str, default="",
                    help="comma-separated scales for the memory/time growth check, e.g. 0.25,0.5,1")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    data = dataset(args.out, args.scale)
    results = {"machine": machine(), "scale": args.scale, "repeats": args.repeats}
    stages = set(args.stages.split(","))
    md = [f"# roistore benchmarks (scale {args.scale}, {args.repeats} repeats)", "",
          f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, "
          f"{results['machine']['memory_gib']} GiB; " + ", ".join(f"{k} {v}" for k, v in results['machine']['versions'].items())]
    if "ingest" in stages:
        md += _ingest_stage(args, data, results)
    if "method" in stages:
        md += _method_stage(args, data, results)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    (args.out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return results


def _method_stage(args, data: Path, results: dict) -> list[str]:
    from roi_store.ingest import ingest

    store = args.out / "method.zarr"
    if not (store / "zarr.json").exists():
        for name, rel in DATASETS:
            ingest(store, name, data / rel, jobs=2)
    cnn = cnn_throughput(store, "bench", folds=4, epochs=2)
    fit = fit_lstm_masked_vs_padded(store, "bench", epochs=10, repeats=2)
    path = data_path(store, data, n=40, repeats=args.repeats)
    import roi_store

    s = roi_store.open_store(store)
    full = json.loads((data / "synth.json").read_text())
    # The full composite: 442 clips, 68 subjects; frames of its clips scaled up from this sample.
    view = s.view_clips()
    frames_view = sum(c.n_frames for c in view)
    frames_full = frames_view / max(len(view), 1) * 442
    m = fit["masked"]
    proj = loso_projection(int(frames_full), 442, 68, cnn, sum(r["seconds_per_fold"] for r in m) / len(m), 10)
    results["method"] = {"cnn": cnn, "fit_lstm": fit, "data_path": path, "loso_projection_cpu": proj,
                         "scale_note": full.get("overrides")}
    pad, mas = fit["padded"], fit["masked"]
    return ["", "## Method stages", "",
            table(["figure", "value", "baseline beside it", "ratio"], [
                ["data path: clips/s reading six region clips from the store", _fmt(path["store_clips_per_s"]),
                 f"decode + cut from source frames: {_fmt(path['source_clips_per_s'])}", f"{path['ratio']['median']:.1f}x"],
                ["CNN training, frames/s per region (6 regions, 4 folds)", f"{cnn['timings']['cnn_train_frames_per_s']}",
                 "-", "-"],
                ["CNN embedding, frames/s per region", f"{cnn['timings']['embed_frames_per_s']}", "-", "-"],
                ["fit-lstm s/fold, masked length-aware batches", " / ".join(f"{r['seconds_per_fold']:.2f}" for r in mas),
                 "padded to t_max, unmasked: " + " / ".join(f"{r['seconds_per_fold']:.2f}" for r in pad),
                 f"{fit['speedup']['median']:.1f}x"],
                ["fit-lstm UF1 (masked vs padded)", " / ".join(f"{r['UF1']:.3f}" for r in mas),
                 " / ".join(f"{r['UF1']:.3f}" for r in pad), "-"],
            ]), "",
            f"Projected full per-fold LOSO on this machine ({proj['assumptions']}): CNN training "
            f"{proj['cnn_train_s'] / 3600:.1f} h, embedding {proj['embed_s'] / 60:.1f} min, fit-lstm "
            f"{proj['fit_lstm_s'] / 60:.1f} min."]


def _ingest_stage(args, data: Path, results: dict) -> list[str]:
    ing = bench_ingest(data, args.out, args.repeats)
    results["ingest"] = ing
    rows = [
        ["decode only: cv2.imread, full resolution (baseline)", _fmt(ing["frames_per_s"]["imread"]), "1.00"],
        ["roistore ingest, 1 job", _fmt(ing["frames_per_s"]["ingest_1"]), f"{ing['ingest_1_vs_imread']['median']:.2f}"],
        ["roistore ingest, 2 jobs", _fmt(ing["frames_per_s"]["ingest_2"]),
         f"{ing['ingest_2_vs_ingest_1']['median']:.2f} vs 1 job"],
    ]
    md = ["", f"## Ingest ({ing['frames']} frames; frames/s: median (min-max))", "",
          table(["contender", "frames/s", "ratio"], rows), "",
          f"Peak memory of a 1-job ingest: {_fmt(ing['peak_rss_mib_1_job'], 0)} MiB"]
    if args.scaling:
        scales = [float(s) for s in args.scaling.split(",")]
        growth = memory_scaling(lambda s: dataset(args.out, s), args.out, scales)
        results["ingest_scaling"] = growth
        md += ["", "## Ingest growth (1 job)", "",
               table(["scale", "frames", "seconds", "frames/s", "peak RSS MiB"],
                     [[g["scale"], g["frames"], f"{g['seconds']:.1f}", f"{g['frames_per_s']:.1f}",
                       f"{g['peak_rss_mib']:.0f}"] for g in growth])]
    return md


if __name__ == "__main__":
    main()
