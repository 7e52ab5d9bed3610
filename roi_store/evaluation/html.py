"""``roistore report --html``: a run's results (and a group's) as one self-contained web page.

The page needs nothing but a browser: figures are PNG or JPEG data URIs, the style sheet is
inline, and there is no script and no address outside the page, so it can be mailed, archived
beside a paper, or opened on a machine without a network. Its layout narrows to a phone's
width and prints without the navigation.
"""

from __future__ import annotations

import itertools
from pathlib import Path


from roi_store._version import __version__
from roi_store.errors import RunMismatchError, StoreError
from roi_store.evaluation import figures
from roi_store.evaluation.html_markup import (CSS, Markup, escape, figures_html, jpeg, number, setting, table,
                                             when)
from roi_store.evaluation.report import LEAKAGE_WARNING
from roi_store.evaluation.stats import METRICS, compare_runs, groups_of, repeats, subject_counts, subject_of
from roi_store.ids import printable
from roi_store.method.presets import presets
from roi_store.store.runs import head_document, run_document
from roi_store.store.store import Store

#: Misclassified clips shown, the most confident mistakes first: each picture adds some 60 kB to the page.
GALLERY = 24
#: Runs of a group compared pair by pair; a larger group compares each run with the first.
PAIRWISE_RUNS = 6
#: Settings that say where the others came from rather than being settings themselves.
_META = ("preset", "preset_overrides")



def write_html(store: Store, out: str | Path, *, report: dict | None = None, group: dict | None = None,
               methods: dict | None = None, resamples: int = 2000, permutations: int = 10000, seed: int = 0,
               gallery: int = GALLERY) -> Path:
    """Write :func:`html_page` to ``out`` (UTF-8).

    Raises
    ------
    StoreError
        If the file cannot be written (its folder is missing or read-only).
    """
    out = Path(out)
    if not out.parent.is_dir():  # before the bootstrap, comparisons and pictures, which take a while
        raise StoreError(f"cannot write HTML report {printable(str(out))}: folder {printable(str(out.parent))} does "
                         "not exist; make it or give another path")
    page = html_page(store, report=report, group=group, methods=methods, resamples=resamples,
                     permutations=permutations, seed=seed, gallery=gallery)
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise StoreError(f"cannot write HTML report {printable(str(out))}: {exc.strerror or exc}; check that its "
                         "folder exists and is writable") from None
    return out


def html_page(store: Store, *, report: dict | None = None, group: dict | None = None, methods: dict | None = None,
              resamples: int = 2000, permutations: int = 10000, seed: int = 0, gallery: int = GALLERY) -> str:
    """The page: a run's sections (from ``report``), and a group's or several methods' (side by side, paired
    comparisons).

    Parameters
    ----------
    store : Store
        The store holding the runs (read for the fold records and the misclassified clips).
    report : dict, optional
        :func:`roi_store.evaluation.report.run_report` of one run.
    group : dict, optional
        :func:`roi_store.evaluation.stats.repeats` of several runs; the report's run joins them.
    methods : dict, optional
        :func:`roi_store.evaluation.methods.side_by_side` of runs of different methods (with its comparisons).
    resamples, permutations, seed
        Of the paired comparisons (:func:`roi_store.evaluation.stats.compare_runs`).
    gallery : int
        At most this many misclassified clips are pictured.

    Returns
    -------
    str
        The HTML document.
    """
    sections: list[tuple[str, str, str]] = []  # (anchor, title, body)
    if report is not None:
        sections += _run_sections(store, report, gallery)
    if group is not None:
        sections += _group_sections(store, report, group, resamples, permutations, seed)
    if methods is not None:
        sections += _methods_sections(methods)
    title = (f"run {report['run']}" if report is not None else
             "runs " + ", ".join(r["run"] for r in (group or methods)["runs"]))
    nav = "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t, _ in sections)
    body = "".join(f'<section id="{a}"><h2>{escape(t)}</h2>{b}</section>' for a, t, b in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>roistore report: {escape(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>roistore report: {escape(title)}</h1><p>store {escape(printable(store.where))}</p></header>"
            f"<nav>{nav}</nav>{body}<footer>made by roistore {escape(__version__)}; UF1 and UAR are computed once on "
            f"the predictions pooled over all folds (MEGC 2019).</footer></body></html>\n")


# --- one run -------------------------------------------------------------------------------------
def _run_sections(store: Store, rep: dict, gallery: int) -> list[tuple[str, str, str]]:
    doc, head = run_document(store, rep["run"]), head_document(store, rep["run"])
    return [("summary", "Summary", _summary(rep, doc, head)),
            ("scores", "UF1 and UAR", _scores(rep)),
            ("confusion", "Confusion matrices", _confusions(rep)),
            ("subjects", "Per subject", _subjects(rep)),
            ("null", "Null runs", _nulls(rep)),
            ("megc2019", "MEGC 2019 fold check", _megc(rep)),
            ("settings", "Settings", _settings(rep)),
            ("leakage", "Leakage", _leakage(rep, doc, head)),
            ("timings", "Timings and device", _timings(rep, doc, head)),
            ("gallery", "Misclassified clips", _gallery(store, rep, gallery))]


def _summary(rep: dict, doc: dict, head: dict) -> str:
    e = rep["settings"]["embed"]
    out = f'<p class="banner">{escape(LEAKAGE_WARNING)}</p>' if rep["leakage"] else ""
    if rep["permuted"]:
        out += (f'<p class="banner">This run is a permutation control (labels shuffled with seed '
                f'{escape(rep["settings"]["head"].get("permute_labels"))}): its scores are a null model, '
                'not a result.</p>')
    full = rep["scores"]["FULL"]
    ci = rep["uncertainty"]["intervals"]["FULL"]
    facts = [("method", doc.get("kind", "region-cnn+lstm")), ("state", rep.get("state")),
             ("preset", rep.get("preset") or "none"), ("view", e.get("view")),
             ("protocol", f"{e.get('protocol')} ({rep['folds']} folds)"), ("classes", ", ".join(rep["classes"])),
             ("clips", full["clips"]), ("subjects", ci["subjects"]),
             ("FULL UF1", f"{full['UF1']:.4f} [{ci['UF1'][0]:.3f}, {ci['UF1'][1]:.3f}]"),
             ("FULL UAR", f"{full['UAR']:.4f} [{ci['UAR'][0]:.3f}, {ci['UAR'][1]:.3f}]"),
             ("embedded", when(doc.get("embedded") or doc.get("created"))), ("head fitted", when(head.get("fitted"))),
             ("by", f"{doc.get('user')} on {doc.get('host')}")]
    return (out + '<div class="facts">' + "".join(f"<div><span>{escape(k)}</span>{escape(v)}</div>" for k, v in facts)
            + "</div>")


def _scores(rep: dict) -> str:
    unc = rep["uncertainty"]
    pct = f"{round(unc['level'] * 100)} %"
    rows = []
    for g, s in rep["scores"].items():
        ci = unc["intervals"][g]
        rows.append([g, s["clips"], ci["subjects"]] + [x for m in METRICS for x in
                                                       (number(s[m]), f"[{ci[m][0]:.3f}, {ci[m][1]:.3f}]")])
    out = table(["", "clips", "subjects", "UF1", f"UF1 {pct} interval", "UAR", f"UAR {pct} interval"], rows)
    out += table(["recall", *rep["classes"]],
                  [[g, *(number(s["recall"][c], 3) for c in rep["classes"])] for g, s in rep["scores"].items()])
    notes = [f"{g}: no {', '.join(s['absent'])} clips; UF1/UAR leave the absent class out (roistore's convention); "
             f"the challenge's convention gives UF1 {s['challenge']['UF1']:.4f}, UAR {s['challenge']['UAR']:.4f}"
             for g, s in rep["scores"].items() if s.get("absent")]
    exact = [g for g, ci in unc["intervals"].items() if ci["exact"]]
    notes.append(f"Intervals: {unc['method']}; {unc['resamples']} resamples, seed {unc['seed']}"
                 + (f" (every possible draw enumerated for {', '.join(exact)})" if exact else "") + ".")
    return out + "".join(f'<p class="note">{escape(n)}</p>' for n in notes) + figures_html(
        [(figures.scores_figure(rep), "UF1 and UAR with their subject-bootstrap intervals"
          + ("; crosses: the null runs" if rep.get("controls") else ""))])


def _confusions(rep: dict) -> str:
    figs = []
    for g, preds in groups_of(rep["predictions"]).items():
        m = subject_counts(preds, rep["classes"])[1].sum(axis=0)
        figs.append((figures.confusion_figure(m, rep["classes"], f"{g} ({len(preds)} clips)"),
                     f"{g}: rows true, columns predicted; shade: share of the true class"))
    return figures_html(figs)


def _subjects(rep: dict) -> str:
    subjects = rep.get("subjects") or []
    if not subjects:
        return '<p class="note">No predictions.</p>'
    rows = [[s["subject"], ",".join(map(str, s["folds"])), s["clips"], s["correct"], number(s["accuracy"], 3),
             number(s["recall"], 3)] for s in subjects]
    return (figures_html([(figures.subjects_figure(subjects), "bars: recall, the mean over the subject's classes; "
                    "dots: accuracy; colour: dataset")])
            + f"<details open><summary>table of {len(subjects)} subjects</summary>"
            + table(["subject", "folds", "clips", "correct", "accuracy", "recall"], rows) + "</details>")


def _nulls(rep: dict) -> str:
    if rep["permuted"]:
        return '<p class="note">This run is itself a permutation control; its null runs are not looked for.</p>'
    controls = rep.get("controls") or []
    if not controls:
        return ('<p class="note">No permutation control run with the same settings. <code>roistore fit-lstm STORE '
                '--run NAME --permute-labels SEED</code> fits one on this run\'s embeddings (a head-only control); '
                'embedding with <code>--permute-labels SEED</code> too makes a full one.</p>')
    groups = list(rep["scores"])
    rows = [[c["run"], c["permute_labels"], c.get("permute_within") or "",
             *(number(c["scores"][g][m]) if g in c["scores"] else "–" for g in groups for m in METRICS)]
            for c in controls]
    rows.append(["this run", "", "", *(number(rep["scores"][g][m]) for g in groups for m in METRICS)])
    head = ["run", "permute labels", "within", *(f"{g} {m}" for g in groups for m in METRICS)]
    p = rep["null"]["p"]
    return (table(head, rows) + f'<p>p (FULL), (1 + #null ≥ observed) / (1 + N) over {len(controls)} null run(s): '
            f'UF1 <b>{p["UF1"]:.4f}</b>, UAR <b>{p["UAR"]:.4f}</b>. Matched on: {escape(rep["null"]["matching"])}.</p>'
            + figures_html([(figures.null_figure(rep), "FULL scores of the null runs (dots) and of this run (line)")]))


def _megc(rep: dict) -> str:
    check = rep.get("megc2019_folds")
    e = rep["settings"]["embed"]
    if check is None:
        return (f'<p class="note">Not applicable: the challenge\'s protocol is leave-one-subject-out on the megc2019 '
                f'view; this run uses protocol {escape(e.get("protocol"))} on view {escape(e.get("view"))}, so its '
                "scores are not comparable with MEGC 2019 results.</p>")
    rows = [[d, check["subjects"].get(d, 0), n] for d, n in check["challenge"].items()]
    verdict = ('<p class="ok">Conformant: 68 folds, one per subject, as the challenge.</p>' if check["conformant"] else
               f'<p class="bad">Not the challenge\'s 68 folds ({check["folds"]} folds): not comparable with MEGC 2019 '
               "results.</p>")
    return verdict + table(["dataset", "subjects tested", "the challenge's"], rows)


def _settings(rep: dict) -> str:
    named = rep.get("preset")
    # The presets hold the region CNN + LSTM method's settings: a run made without one (another method) is shown
    # as it is, not measured against settings it never had.
    preset_values = presets() if named else {}
    embed, head = rep["settings"]["embed"] or {}, rep["settings"]["head"] or {}
    stages = [("embed", embed), ("head", head)] if head != embed else [("settings", embed)]  # one-stage methods
    out = ""
    for stage, settings in stages:
        columns = ["setting", "this run",
                   *(f"preset {p}" + (" (the run's)" if p == named else "") for p in preset_values)]
        rows = []
        for k in (k for k in settings if k not in _META):
            cells = [k, setting(settings[k])]
            for p in preset_values:
                base = preset_values[p].get(stage) or {}
                if k not in base:
                    cells.append("")
                else:
                    cls = ' class="differs"' if base[k] != settings[k] else ""
                    cells.append(Markup(f"<td{cls}>{escape(setting(base[k]))}</td>"))
            rows.append(cells)
        overrides = settings.get("preset_overrides") or []
        out += (f"<h3>{escape(stage)}</h3>" + table(columns, rows, cls="text")
                + (f'<p class="note">Given explicitly over preset {escape(named)}: {escape(", ".join(overrides))}.</p>'
                   if overrides else ""))
    lead = ("Highlighted: a preset's value that differs from the run's." if preset_values else
            "This run was made without a preset; its settings are shown as recorded.")
    return f'<p class="note">{escape(lead)}</p>' + out


def _leakage(rep: dict, doc: dict, head: dict) -> str:
    e = rep["settings"]["embed"]
    person = {s: p for p, members in (e.get("same_person") or {}).items() for s in members}

    def unit(clips: list[str]) -> set[str]:  # who the clips are of: subjects, or the person merging several
        return {person.get(subject_of(c), subject_of(c)) for c in clips}

    trained = {f["index"]: f for f in head.get("folds", [])}
    rows, leaks = [], 0
    for fold in doc["folds"]:
        test = unit(fold.get("test_clips", []))
        cnn = test & unit(fold.get("cnn_train_clips", [])) if "cnn_train_clips" in fold else None
        h = trained.get(fold["index"], {})
        fused = test & unit(h.get("head_train_clips", []) + h.get("head_val_clips", []))
        leaks += bool(cnn) + bool(fused)
        rows.append([fold.get("name", fold["index"]), len(fold.get("test_clips", [])), len(test),
                     "–" if cnn is None else (", ".join(sorted(cnn)) or "none"), ", ".join(sorted(fused)) or "none"])
    scope = e.get("cnn_scope")
    out = f'<p class="banner">{escape(LEAKAGE_WARNING)}</p>' if rep["leakage"] else (
        f'<p class="ok">The run records no leakage{f" (CNN scope {escape(scope)})" if scope else ""}.</p>')
    out += (f'<p class="{"bad" if leaks else "ok"}">Checked in the fold records: '
            + (f"{leaks} training set(s) hold clips of their fold's test subjects." if leaks else
               "no fold trains its feature extractor or its head on its own test subjects.")
            + (" Subjects merged as one person count as one." if person else "") + "</p>")
    return out + "<details><summary>fold by fold</summary>" + table(
        ["fold", "test clips", "test subjects", "test subjects in feature training", "test subjects in head training"],
        rows) + "</details>"


def _timings(rep: dict, doc: dict, head: dict) -> str:
    rows = [[k, setting(v)] for k, v in rep.get("timings", {}).items()]
    seconds = [f["seconds"] for f in head.get("folds", []) if f.get("seconds") is not None]
    if seconds:
        rows.append(["head seconds per fold (min – max)", f"{min(seconds):.2f} – {max(seconds):.2f}"])
    return ('<div class="facts">' + "".join(f"<div><span>{escape(k)}</span>{escape(v)}</div>" for k, v in (
        ("device", rep.get("device") or "not recorded"), ("backend", doc.get("backend") or "not recorded"),
        ("host", doc.get("host")))) + "</div>" + table(["timing", "value"], rows))


def _gallery(store: Store, rep: dict, limit: int) -> str:
    from roi_store.ingest.preview import render_preview

    wrong = [p for p in rep["predictions"] if p["true"] != p["pred"]]
    if not wrong:
        return '<p class="ok">Every clip is classified correctly.</p>'
    wrong.sort(key=lambda p: (-max(p["probs"]), p["id"]))
    shown = wrong[:limit]
    flows = _flow_sets(store)
    figs = []
    for p in shown:
        image = render_preview(store, p["id"])
        scale = min(1.0, 720 / image.shape[1])
        items = [(jpeg(image, scale), "face with its six boxes; region crops at the first | apex frame")]
        for _, fs in flows:
            if p["id"] in fs["index"]:
                items.append((figures.flow_tiles(fs["face"][fs["index"][p["id"]]]), fs["caption"]))
        probs = ", ".join(f"{c} {v:.3f}" for c, v in zip(rep["classes"], p["probs"]))
        caption = "; ".join([f"{p['id']} (fold {p['fold']}): true {p['true']}, predicted {p['pred']}",
                             f"probabilities {probs}", *(alt for _, alt in items[1:])])
        imgs = "".join(f'<img src="{uri}" alt="{escape(alt)}" title="{escape(alt)}">' for uri, alt in
                       ((figures.data_uri(b, "image/jpeg" if b[:2] == b"\xff\xd8" else "image/png"), a)
                        for b, a in items))
        figs.append(f"<figure>{imgs}<figcaption>{escape(caption)}</figcaption></figure>")
    note = (f"{len(shown)} of {len(wrong)} misclassified clips, the most confident mistakes first. Each: the face "
            "with its six boxes (from the source frame when it is still where it was ingested from) and each region's "
            "crop at the first | apex frame" + (", then the flow (u, v, strain)" if flows else
                                                "; the store holds no flow set") + ".")
    return f'<p class="note">{escape(note)}</p><div class="figs gallery">{"".join(figs)}</div>'


def _flow_sets(store: Store) -> list[tuple[str, dict]]:
    """The store's complete flow sets (``roistore flow``): name -> ``{"caption", "face", "index"}``."""
    if not hasattr(store, "feature_sets"):  # a roistore without feature sets
        return []
    from roi_store.store.features import COMPLETE, set_document

    out = []
    for name in store.feature_sets():
        if set_document(store, name)["state"] != COMPLETE:  # being computed, or interrupted: nothing to show yet
            continue
        fs = store.features(name)
        a = fs.attrs
        out.append((name, {"face": fs.face, "index": {c: i for i, c in enumerate(fs.clips)},
                           "caption": f"flow set {name} ({a.get('estimator')}, {a.get('size')} px, apex "
                                      f"{a.get('apex_rule')}): u, v and strain of the face from onset to apex"}))
    return out


# --- several runs ---------------------------------------------------------------------------------
def _group_sections(store: Store, rep: dict | None, group: dict, resamples: int, permutations: int,
                    seed: int) -> list[tuple[str, str, str]]:
    names = [r["run"] for r in group["runs"]]
    if rep is not None and rep["run"] not in names and not rep["permuted"]:
        names.insert(0, rep["run"])
        group = {**repeats(store, names), "skipped": group["skipped"]}
    pairs = (list(itertools.combinations(names, 2)) if len(names) <= PAIRWISE_RUNS
             else [(names[0], n) for n in names[1:]])
    return [("runs", "Runs side by side", _side_by_side(group)),
            ("comparison", "Paired comparisons",
             _comparisons(store, pairs, len(names) > PAIRWISE_RUNS, resamples, permutations, seed))]


def _side_by_side(group: dict) -> str:
    cols = list(group["summary"])
    head = ["run", "seed", "head seed", *(f"{g} {m}" for g in cols for m in METRICS)]
    rows = [[r["run"], r.get("seed"), r.get("head_seed"),
             *(number(r["scores"][g][m]) if g in r["scores"] else "–" for g in cols for m in METRICS)]
            for r in group["runs"]]
    rows += [[Markup(f"<b>{stat}</b>"), "", "", *(number(group["summary"][g][m][stat]) for g in cols for m in METRICS)]
             for stat in ("mean", "sd", "min", "max")]
    varies = group["varies"]
    notes = [f"Settings that differ: {', '.join(varies)}." if varies else "Identical settings.",
             "sd: sample standard deviation (n - 1); min, max: the range over the runs."]
    notes += [f"Skipped {s['run']}: {s['reason']}." for s in group.get("skipped", [])]
    return (table(head, rows)
            + "".join(f'<p class="note">{escape(n)}</p>' for n in notes)
            + (figures_html([(figures.runs_figure(group), "FULL UF1 and UAR of each run")])
               if len(group["runs"]) > 1 else ""))


def _comparisons(store: Store, pairs: list, first_only: bool, resamples: int, permutations: int, seed: int) -> str:
    if not pairs:
        return '<p class="note">One run: nothing to compare. Give two or more runs (--runs A,B).</p>'
    done, refused = [], []
    for a, b in pairs:
        try:
            done.append(compare_runs(store, a, b, resamples=resamples, permutations=permutations, seed=seed))
        except RunMismatchError as exc:
            refused.append(str(exc))
    return (_comparison_table(done, " Each run is compared with the first." if first_only else "")
            + "".join(f'<p class="bad">{escape(r)}</p>' for r in refused))


def _comparison_table(done: list[dict], note: str = "") -> str:
    """:func:`roi_store.evaluation.stats.compare_runs` results: a row per pair, group and metric, and a forest plot."""
    if not done:
        return ""
    rows = [[f"{c['runs'][0]} - {c['runs'][1]}", g, m, number(s[m]["a"]), number(s[m]["b"]),
             f"{s[m]['difference']:+.4f}", "[{:+.3f}, {:+.3f}]".format(*s[m]["interval"]), number(s[m]["p"]),
             s["subjects"]]
            for c in done for g, s in c["scores"].items() for m in METRICS]
    meth = done[0]["method"]
    pct = round(meth["level"] * 100)
    return (table(["runs A - B", "group", "metric", "A", "B", "A - B", f"{pct} % interval", "p", "subjects"], rows)
            + f'<p class="note">{escape(meth["interval"])} ({meth["resamples"]} resamples); p: {escape(meth["test"])} '
              f'({meth["permutations"]} swaps at most, every pattern when fewer exist); seed {meth["seed"]}.{note}</p>'
            + figures_html([(figures.comparison_figure(done), "differences A - B with their paired intervals")]))


def _methods_sections(side: dict) -> list[tuple[str, str, str]]:
    """Runs of different methods: their scores with intervals on one table, and each against the first."""
    groups = list(side["runs"][0]["scores"])
    pct = f"{round(side['level'] * 100)} %"
    rows = [[r["run"], r["method"] + (f" ({r['features']})" if r.get("features") else "")
             + (" (permutation control)" if r["permuted"] else ""), f"{r['protocol']} ({r['folds']})",
             *("{:.4f} [{:.3f}, {:.3f}]".format(r["scores"][g][m], *r["intervals"][g][m]) if g in r["scores"] else "–"
               for g in groups for m in METRICS)] for r in side["runs"]]
    folds = ("The runs test the same subjects in each fold." if side["same_folds"] else
             "The runs' folds test different subjects: compare with care.")
    body = (table(["run", "method", "protocol (folds)", *(f"{g} {m} [{pct}]" for g in groups for m in METRICS)], rows)
            + f'<p class="note">{side["clips"]} clips, {side["subjects"]} subjects. {escape(folds)} Intervals: '
              f'{escape(side["method"]["interval"])}, {side["method"]["resamples"]} resamples.</p>'
            + figures_html([(figures.methods_figure(side), "FULL UF1 and UAR of each run with their intervals")]))
    return [("methods", "Methods side by side", body),
            ("comparison", "Paired comparisons",
             _comparison_table(side["comparisons"], " Each later run is compared with the first."))]
