"""MEGC 2019 conformance: the challenge's submission log and checks of a clip list (METHOD.md §3, §7).

The log, one block per LOSO fold (one subject)::

    casme2 sub01
    EP02_01f 1 1
    EP19_05f 0 2
    smic s01
    s01_ne_01 0 0
    samm 006
    006_1_2 0 0

a header ``<database> <subject>`` and one line ``<video> <ground truth> <prediction>`` per clip,
classes 0 negative, 1 positive, 2 surprise. Subjects and SMIC videos are spelt as the
challenge's ground-truth list spells them (``s01``, ``s01_ne_01``, where the store keeps SMIC's
folder names ``s1``, ``s1_ne_01``).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

from roi_store.errors import AnnotationError, ConfigError
from roi_store.evaluation.stats import natural_key, subject_of
from roi_store.ids import ClipKey
from roi_store.store.labels import MEGC2019, default_views, read_view_file, view_label
from roi_store.evaluation.metrics import scores_from_confusion

#: The challenge's class codes.
CODES = {"negative": 0, "positive": 1, "surprise": 2}
#: Table 1 of the composite (clips per dataset and class), as the challenge published it.
PUBLISHED = {"smic": {"negative": 70, "positive": 51, "surprise": 43},
             "casme2": {"negative": 88, "positive": 32, "surprise": 25},
             "samm": {"negative": 92, "positive": 26, "surprise": 15}}
#: The circulating 441-clip variant of the official list lacks this clip.
VARIANT_441_MISSING = "samm/032/032_3_1"


def megc_name(dataset: str, name: str) -> str:
    """A subject or video as the challenge writes it: SMIC ``s1`` -> ``s01``, ``s1_ne_01`` -> ``s01_ne_01``.

    Other datasets' names (``sub01``, ``006``, ``EP02_01f``) are unchanged.
    """
    m = re.fullmatch(r"s(\d+)(_.*)?", name) if dataset == "smic" else None
    return f"s{int(m.group(1)):02d}{m.group(2) or ''}" if m else name


def megc_log(predictions: list[dict], classes: list[str], run: str = "") -> str:
    """The MEGC 2019 submission log of pooled predictions (module docstring).

    Blocks follow the folds (then subjects, then clips, in natural order); a run whose folds
    hold several subjects (hde, kfold) still gets one block per subject.

    Parameters
    ----------
    predictions : list of dict
        ``{"id", "fold", "true", "pred"}`` with class names.
    classes : list of str
        The run's classes.
    run : str
        The run's name, for the error message.

    Returns
    -------
    str
        The log's text, ending with a newline.

    Raises
    ------
    ConfigError
        If a class has no MEGC 2019 code.
    """
    other = [c for c in classes if c not in CODES]
    if other:
        raise ConfigError(f"cannot write a MEGC 2019 log for run {run!r}: its classes {', '.join(other)} have no "
                          f"code (the log codes {', '.join(f'{k} {v}' for k, v in CODES.items())})")
    blocks: dict[str, list[dict]] = {}
    for p in predictions:
        blocks.setdefault(subject_of(p["id"]), []).append(p)

    lines = []
    for subject in sorted(blocks, key=lambda s: (min(p.get("fold") or 0 for p in blocks[s]), natural_key(s))):
        dataset, name = subject.split("/")
        lines.append(f"{dataset} {megc_name(dataset, name)}")
        for p in sorted(blocks[subject], key=lambda p: natural_key(p["id"])):
            lines.append(f"{megc_name(dataset, p['id'].split('/')[2])} {CODES[p['true']]} {CODES[p['pred']]}")
    return "\n".join(lines) + "\n"


def score_log(text: str) -> dict:
    """UF1/UAR of a MEGC 2019 log as the challenge scores it, from the file alone.

    TP, FP and FN of each class are summed over all folds, F1 and recall taken per class, then
    averaged over the classes (a class predicted but absent from the truth counts with F1 0).

    Returns
    -------
    dict
        ``{"UF1", "UAR", "folds", "clips"}``.

    Raises
    ------
    AnnotationError
        If a line is neither a header nor a clip line.
    """
    conf = np.zeros((3, 3), dtype=np.int64)
    folds = clips = 0
    for n, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) == 2:
            folds += 1
        elif len(parts) == 3 and parts[1] in ("0", "1", "2") and parts[2] in ("0", "1", "2") and folds:
            conf[int(parts[1]), int(parts[2])] += 1
            clips += 1
        else:
            raise AnnotationError(f"MEGC log line {n}: {line.strip()!r} is neither '<database> <subject>' nor "
                                  "'<video> <truth 0-2> <prediction 0-2>' after a header")
    uf1, uar = scores_from_confusion(conf, "challenge")
    return {"UF1": float(uf1), "UAR": float(uar), "folds": folds, "clips": clips}


def write_megc_log(predictions: list[dict], classes: list[str], path: str | Path, run: str = "") -> dict:
    """Write :func:`megc_log` to ``path`` and score the file back (:func:`score_log`).

    Returns
    -------
    dict
        ``{"path", "folds", "clips", "UF1", "UAR"}`` as read back from the file.
    """
    text = megc_log(predictions, classes, run)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return {"path": str(path), **score_log(path.read_text(encoding="utf-8"))}


# --- conformance of a clip list ------------------------------------------------------------------
def check_view_file(store, view_file: str | Path) -> dict:
    """Compare a clip list in the challenge's format with the megc2019 rules applied to a store's clips.

    Parameters
    ----------
    store : Store
        Supplies each clip's emotion, to which the built-in rules (METHOD.md §3) are applied.
    view_file : path
        CSV without header: dataset, subject, filename, label 0/1/2.

    Returns
    -------
    dict
        See :func:`compare_view`.
    """
    classes = default_views()[MEGC2019]["classes"]
    listed = read_view_file(Path(view_file), classes)["entries"]
    return {"file": str(view_file), **compare_view(listed, store.records(strict=False).values())}


def compare_view(listed: dict[str, str], records) -> dict:
    """Clip-by-clip differences between a listed view and the megc2019 rules over ``records``.

    Parameters
    ----------
    listed : dict
        Clip id -> class name (:func:`roi_store.store.labels.read_view_file`'s ``entries``).
    records : iterable
        Clip records (``id``, ``dataset``, ``subject``, ``clip``, ``status``, ``emotion``, and
        ``data`` with the skip ``reason``), complete or not.

    Returns
    -------
    dict
        ``{"clips", "rules_clips", "differences": [{"id", "kind", "file", "rules", "reason"}],
        "conforms", "variant", "only_variant", "counts": {"file", "published", "differences"}}``:
        ``variant`` names the known 441-clip variant when the file is it, ``only_variant`` says
        that is its only difference from the rules; ``kind`` is
        ``missing`` (the rules include the clip, the file does not), ``extra`` (the file lists
        a clip the rules exclude or the store lacks) or ``label``.
    """
    view = default_views()[MEGC2019]
    rules: dict[str, tuple[str | None, str | None]] = {}
    for rec in records:
        if rec.status != "complete":
            reason = f": {rec.data['reason']}" if rec.data.get("reason") else ""
            rules[rec.id] = (None, f"{rec.status} at ingest{reason}")
        else:
            rules[rec.id] = view_label(view, ClipKey(rec.dataset, rec.subject, rec.clip), rec.emotion)
    diffs = []
    for cid in sorted(set(listed) | {i for i, (lab, _) in rules.items() if lab}, key=natural_key):
        mine, (theirs, reason) = listed.get(cid), rules.get(cid, (None, "not in the store"))
        if mine == theirs:
            continue
        kind = "missing" if mine is None else "extra" if theirs is None else "label"
        diffs.append({"id": cid, "kind": kind, "file": mine, "rules": theirs, "reason": reason})
    counts = Counter((cid.split("/")[0], lab) for cid, lab in listed.items())
    file_counts = {d: {c: counts.get((d, c), 0) for c in view["classes"]} for d in sorted({k[0] for k in counts})}
    count_diffs = [{"dataset": d, "class": c, "file": file_counts.get(d, {}).get(c, 0), "published": n}
                   for d, row in PUBLISHED.items() for c, n in row.items() if file_counts.get(d, {}).get(c, 0) != n]
    variant, only_variant = None, False
    if len(listed) == 441 and VARIANT_441_MISSING not in listed:
        only_variant = [d["id"] for d in diffs] in ([VARIANT_441_MISSING], [])
        variant = ("the known 441-clip variant of the official list (it drops SAMM 032_3_1)"
                   + ("" if only_variant else "; the file differs in other clips too"))
    return {"clips": len(listed), "rules_clips": sum(1 for lab, _ in rules.values() if lab), "differences": diffs,
            "conforms": not diffs, "variant": variant, "only_variant": only_variant,
            "counts": {"file": file_counts, "published": PUBLISHED, "differences": count_diffs}}


def format_view_check(check: dict, store: str = "the store") -> str:
    """The text of ``roistore check-view``."""
    per = ", ".join(f"{d} {sum(row.values())}" for d, row in check["counts"]["file"].items())
    lines = [f"{check['file']}: {check['clips']} clips ({per})",
             f"the built-in megc2019 rules applied to {store}: {check['rules_clips']} clips"]
    kinds = {"missing": "in the rules, not in the file", "extra": "in the file, not in the rules",
             "label": "labelled otherwise"}
    for d in check["differences"]:
        what = (f"{d['rules']}" if d["kind"] == "missing" else
                f"file {d['file']}; {d['reason']}" if d["kind"] == "extra" else f"file {d['file']}, rules {d['rules']}")
        lines.append(f"  {d['id']}: {kinds[d['kind']]} ({what})")
    n = len(check["differences"])
    lines.append("conforms: the file lists exactly the rules' clips with the same labels" if check["conforms"]
                 else f"{n} difference{'s' * (n != 1)}")
    if check["variant"]:
        lines.append(f"recognised: {check['variant']}")
    if check["counts"]["differences"]:
        lines.append("counts against the published composite (442 clips): " + "; ".join(
            f"{d['dataset']} {d['class']} {d['file']} (published {d['published']})"
            for d in check["counts"]["differences"]))
    else:
        lines.append("counts match the published composite (442 clips: SMIC 164, CASME II 145, SAMM 133)")
    return "\n".join(lines)
