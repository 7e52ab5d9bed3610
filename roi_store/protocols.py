"""Evaluation protocols: which subjects each fold tests (METHOD.md §7).

Folds are made of whole subjects, so no test subject can have a clip in training. Subjects are
keyed ``dataset/subject``: CASME II's ``sub01`` and SAMM's ``006`` are different people even
where numbers coincide.
"""

from __future__ import annotations

import numpy as np

from roi_store.errors import ConfigError

PROTOCOLS = ("loso", "hde", "kfold")


def subject_of(clip) -> str:
    return f"{clip.dataset}/{clip.subject}"


def make_folds(clips: list, protocol: str, folds: int | None = None, seed: int = 0) -> list[dict]:
    """Split ``clips`` (records with ``dataset`` and ``subject``) into test folds.

    Parameters
    ----------
    protocol : {"loso", "hde", "kfold"}
        Leave one subject out; leave one dataset out; K folds of whole subjects.
    folds : int
        K for ``kfold``.
    seed : int
        Shuffles subjects for ``kfold`` (then greedily balances clip counts).

    Returns
    -------
    list of dict
        ``{"index", "name", "test_subjects"}`` per fold, in a stable order.
    """
    subjects: dict[str, int] = {}
    for c in clips:
        subjects[subject_of(c)] = subjects.get(subject_of(c), 0) + 1
    names = sorted(subjects)
    if protocol == "loso":
        groups = [[s] for s in names]
        labels = names
    elif protocol == "hde":
        datasets = sorted({s.split("/")[0] for s in names})
        groups = [[s for s in names if s.split("/")[0] == d] for d in datasets]
        labels = datasets
    elif protocol == "kfold":
        if not folds or folds < 2:
            raise ConfigError(f"invalid --folds {folds!r} for kfold: use 2 or more")
        if folds > len(names):
            raise ConfigError(f"invalid --folds {folds}: only {len(names)} subjects to split")
        order = list(np.random.default_rng(seed).permutation(len(names)))
        # Largest subjects first, each to the fold with fewest clips: balanced folds.
        order.sort(key=lambda i: -subjects[names[i]])
        groups = [[] for _ in range(folds)]
        sizes = [0] * folds
        for i in order:
            k = int(np.argmin(sizes))
            groups[k].append(names[i])
            sizes[k] += subjects[names[i]]
        groups = [sorted(g) for g in groups]
        labels = [f"fold{k}" for k in range(folds)]
    else:
        raise ConfigError(f"invalid protocol {protocol!r}: allowed values are {', '.join(PROTOCOLS)}")
    if len(groups) < 2:
        raise ConfigError(f"protocol {protocol} needs at least two subjects/datasets; the view has {len(names)} subjects")
    return [{"index": k, "name": labels[k], "test_subjects": g} for k, g in enumerate(groups)]
