"""``python -m benchmarks --scale S --out DIR``: measure every stage beside its baseline.

Generates the megc2019 synthetic preset scaled by S (S=1: the full 442-clip composite plus the
clips it excludes), runs each selected stage, alternating contender and baseline ``--repeats``
times in fresh interpreters, and writes ``DIR/results.json`` and ``DIR/results.md`` after every
stage. Rerunning with ``--stages`` replaces those stages' results and keeps the others'.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
import traceback
from pathlib import Path

from benchmarks import data as bd
from benchmarks.harness import gpu_names, machine
from benchmarks.report import FORMAT, markdown, validate

STAGES = ("ingest", "detect", "scaling", "store", "datapath", "flow", "evaluation", "cnn", "fit-lstm", "engine",
          "long-runs", "predict", "loso", "ststnet")
#: Stages that need no deep-learning framework (what ``--stages fast`` selects).
FAST_STAGES = ("ingest", "detect", "scaling", "store", "datapath", "flow", "evaluation")

#: The smallest share of the preset the ingest stage measures (unless --quick): its ratios compare
#: whole ingests, and at smaller scales the fixed second of loading the landmark model and
#: reading the sheets, which a second core cannot share, outweighs the frames.
INGEST_SCALE = 0.3

#: How much work each stage does: the default, and ``--quick`` (a smoke run of the harness).
SETTINGS = {
    # Enough epochs that training runs as a compiled graph (more than models.EAGER_STEPS steps)
    # at small scales too, as it does on the full composite; the paper's widths and batch sizes.
    # The full-size fold (about 435 clips, 2 batches an epoch) trains 15 epochs: 30 compiled steps.
    False: {"folds": 2, "cnn_epochs": 9, "cnn_dense": 1024, "cnn_batch": 256, "head_epochs": 25,
            "full_fold_epochs": 15, "full_fold_clips": None,
            "detect_clips": 6, "datapath_clips": 40, "verify_clips": 60, "predict_frames": 100},
    True: {"folds": 2, "cnn_epochs": 1, "cnn_dense": 32, "cnn_batch": 32, "head_epochs": 2,
           "full_fold_epochs": 1, "full_fold_clips": 30,
           "detect_clips": 2, "datapath_clips": 6, "verify_clips": 3, "predict_frames": 100},
}


def parse_stages(text: str) -> list[str]:
    """``all``, ``fast`` or a comma-separated list of stage names, in the order they run."""
    names = set()
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == "all":
            names.update(STAGES)
        elif part == "fast":
            names.update(FAST_STAGES)
        elif part in STAGES:
            names.add(part)
        else:
            raise argparse.ArgumentTypeError(
                f"unknown stage {part!r}: allowed values are all, fast, {', '.join(STAGES)}")
    if not names:
        raise argparse.ArgumentTypeError("no stage given: name at least one, or 'all'")
    return [s for s in STAGES if s in names]


def parse_fractions(text: str) -> list[float]:
    try:
        values = sorted({float(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid --scaling {text!r}: give fractions such as 0.25,0.5,1") from None
    if len(values) < 2 or not all(0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"invalid --scaling {text!r}: give two or more fractions in (0, 1]")
    return values


def ingest_scale(scale: float, asked: float | None, quick: bool) -> float:
    """The ingest stage's share of the preset: as asked, else ``scale`` raised to :data:`INGEST_SCALE`
    (``scale`` itself with ``quick``)."""
    if asked is not None:
        return asked
    return scale if quick else max(scale, INGEST_SCALE)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.1, help="share of the megc2019 preset (1 = the full composite)")
    ap.add_argument("--out", type=Path, default=Path("bench-out"), help="folder for data, stores and results")
    ap.add_argument("--repeats", type=int, default=3, help="alternating repeats of each measurement")
    ap.add_argument("--stages", type=parse_stages, default=list(STAGES),
                    help=f"comma-separated: all, fast ({', '.join(FAST_STAGES)}) or any of {', '.join(STAGES)}")
    ap.add_argument("--ingest-scale", type=float, default=None,
                    help=f"share of the preset for the ingest stage (default: --scale, at least {INGEST_SCALE:g}; "
                         "with --quick, --scale)")
    ap.add_argument("--scaling", type=parse_fractions, default=[0.25, 0.5, 1.0],
                    help="fractions of --scale for the ingest growth stage (default 0.25,0.5,1)")
    ap.add_argument("--quick", action="store_true", help="the smallest settings: checks the harness, not the speed")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and of every sample taken")
    return ap


def _previous(path: Path, settings: dict) -> dict:
    """Stage results of an earlier run in the same folder with the same scale and settings, to keep."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    same = old.get("format") == FORMAT and all(
        old.get("settings", {}).get(k, settings["scale"] if k == "ingest_scale" else None) == settings[k]
        for k in ("scale", "ingest_scale", "quick", "seed", "work"))
    return old.get("stages", {}) if same else {}


def main(argv=None) -> dict:
    args = parser().parse_args(argv)
    args.ingest_scale = ingest_scale(args.scale, args.ingest_scale, args.quick)
    if not 0 < args.scale <= 1 or not 0 < args.ingest_scale <= 1 or args.repeats < 1:
        parser().error("--scale and --ingest-scale must be in (0, 1] and --repeats at least 1")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    cfg = SETTINGS[args.quick]
    say = lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    say(f"data: megc2019 preset at scale {args.scale:g} in {out}")
    data = bd.dataset(out, args.scale, args.seed)
    settings = {"scale": args.scale, "ingest_scale": args.ingest_scale, "repeats": args.repeats, "quick": args.quick,
                "seed": args.seed, "work": cfg, "scaling": args.scaling, "data": bd.summary(data)}
    results = {"format": FORMAT, "created": _now(), "machine": machine(), "settings": settings,
               "stages": _previous(out / "results.json", settings)}
    results["settings"]["stages"] = [s for s in STAGES if s in set(results["stages"]) | set(args.stages)]
    prepared = None
    store = None
    failed = []
    for name in args.stages:
        say(f"stage {name} ...")
        start = time.perf_counter()
        try:
            if name not in ("ingest", "detect", "scaling", "evaluation") and store is None:
                store, prepared = bd.prepared_store(out, data)
            stage = _run(name, args, cfg, data, store, prepared, results)
            stage["measured"] = _now()
            stage["seconds"] = round(time.perf_counter() - start, 1)
        except Exception as exc:  # one stage's failure never loses the others' results
            failed.append(name)
            stage = {"error": f"{type(exc).__name__}: {exc}".strip().splitlines()[-1][:500], "measured": _now(),
                     "traceback": traceback.format_exc()[-4000:]}
            say(f"stage {name} FAILED: {stage['error']}")
        results["stages"][name] = stage
        results["stages"] = {k: results["stages"][k] for k in STAGES if k in results["stages"]}
        _write(out, results)
        say(f"stage {name} done in {time.perf_counter() - start:.0f} s")
    print(markdown(results))
    if failed:
        raise SystemExit(f"benchmark stages failed: {', '.join(failed)} (see {out / 'results.json'})")
    return results


def _run(name, args, cfg, data, store, prepared, results) -> dict:
    from benchmarks import engine_bench, evaluation_bench, flow_bench, ingest_bench, method_bench, store_bench

    out, repeats = args.out, args.repeats
    if name == "ingest":
        baseline = None if args.quick else engine_bench.baseline_tree(out, ingest_bench.BASELINE_REF)
        return ingest_bench.bench_ingest(bd.dataset(out, args.ingest_scale, args.seed), out, repeats, args.ingest_scale,
                                         baseline)
    if name == "detect":
        return ingest_bench.bench_detect(data, out, repeats, cfg["detect_clips"], args.seed)
    if name == "scaling":
        return ingest_bench.bench_scaling(out, args.scale, args.scaling, repeats, args.seed)
    if name == "store":
        return store_bench.bench_store(store, data, cfg["verify_clips"], args.seed)
    if name == "datapath":
        return store_bench.bench_data_path(store, data, cfg["datapath_clips"], repeats, args.seed)
    if name == "flow":
        return flow_bench.bench_flow(store, data, repeats)
    if name == "evaluation":
        return evaluation_bench.bench_evaluation(repeats, args.seed)
    if name == "cnn":
        return method_bench.bench_cnn(store, cfg, repeats, gpu_names())
    if name == "engine":
        return engine_bench.bench_engine(store, out, results, repeats, args.quick, args.seed)
    if name == "long-runs":
        from benchmarks import long_runs_bench

        return long_runs_bench.bench_long_runs(store, out, repeats, args.quick)
    if name == "ststnet":
        from benchmarks import ststnet_bench

        return ststnet_bench.bench_ststnet(store, repeats, args.quick)
    if not method_bench.has_run(store):
        method_bench.embed_once(store, method_bench.RUN, cfg, None)  # what the later stages need
    if name == "fit-lstm":
        return method_bench.bench_fit_lstm(store, cfg, repeats, args.seed)
    if not method_bench.has_head(store):
        method_bench.bench_fit_lstm(store, cfg, 1)
    if name == "predict":
        return method_bench.bench_predict(store, data, out, cfg, repeats)
    return method_bench.bench_loso(store, results, prepared, args.seed)


def _write(out: Path, results: dict) -> None:
    validate(results)
    for name, text in (("results.json", json.dumps(results, indent=1) + "\n"), ("results.md", markdown(results))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


if __name__ == "__main__":
    main()
