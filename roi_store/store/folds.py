"""Evaluation folds made of whole subjects (METHOD.md §7): the one computation of them.

The method (:mod:`roi_store.method.protocols`) and feature sets
(:meth:`roi_store.store.features.FeatureSet.folds`) both take their folds from here, so a model
trained outside roistore on a feature set is tested on the subjects the method tests.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from roi_store.errors import ConfigError

PROTOCOLS = ("loso", "hde", "kfold")


def subject_of(clip) -> str:
    return f"{clip.dataset}/{clip.subject}"


def make_folds(clips: list, protocol: str, folds: int | None = None, seed: int = 0,
               same_person: dict[str, list[str]] | None = None) -> list[dict]:
    """Split ``clips`` (records with ``dataset`` and ``subject``) into test folds.

    Parameters
    ----------
    protocol : {"loso", "hde", "kfold"}
        Leave one subject out; leave one dataset out; K folds of whole subjects.
    folds : int
        K for ``kfold``.
    seed : int
        Shuffles subjects for ``kfold`` (then greedily balances clip counts).
    same_person : dict, optional
        Person -> subject keys (``dataset/subject``) of one person: they form one unit, tested
        in one fold and never in each other's training. With ``loso`` the unit is one fold
        (named ``a+b``); with ``hde`` it is tested in the fold of its first subject's dataset
        (in sorted order); with ``kfold`` it goes to one fold. Subjects without clips here
        are ignored.

    Returns
    -------
    list of dict
        ``{"index", "name", "test_subjects"}`` per fold, in a stable order.
    """
    subjects = Counter(subject_of(c) for c in clips)
    units = person_units(sorted(subjects), same_person)
    names = ["+".join(u) for u in units]
    sizes_of = {"+".join(u): sum(subjects[s] for s in u) for u in units}
    if protocol == "loso":
        groups = [list(u) for u in units]
        labels = names
    elif protocol == "hde":
        datasets = sorted({s.split("/")[0] for s in subjects})
        groups = [[s for u in units if u[0].split("/")[0] == d for s in u] for d in datasets]
        keep = [k for k, g in enumerate(groups) if g]  # a dataset whose every subject went elsewhere
        groups, labels = [sorted(groups[k]) for k in keep], [datasets[k] for k in keep]
    else:
        if protocol not in PROTOCOLS:
            raise ConfigError(f"invalid protocol {protocol!r}: allowed values are {', '.join(PROTOCOLS)}")
        if not folds or folds < 2:
            raise ConfigError(f"invalid --folds {folds!r} for kfold: use 2 or more")
        if folds > len(names):
            raise ConfigError(f"invalid --folds {folds}: only {len(names)} subjects (persons) to split")
        order = list(np.random.default_rng(seed).permutation(len(names)))
        # Largest subjects first, each to the fold with fewest clips: balanced folds.
        order.sort(key=lambda i: -sizes_of[names[i]])
        groups = [[] for _ in range(folds)]
        sizes = [0] * folds
        for i in order:
            k = int(np.argmin(sizes))
            groups[k].extend(units[i])
            sizes[k] += sizes_of[names[i]]
        groups = [sorted(g) for g in groups]
        labels = [f"fold{k}" for k in range(folds)]
    if len(groups) < 2:
        raise ConfigError(f"protocol {protocol} needs at least two subjects/datasets; the view has {len(names)} "
                          "subjects")
    return [{"index": k, "name": labels[k], "test_subjects": g} for k, g in enumerate(groups)]


def person_units(names: list[str], same_person: dict[str, list[str]] | None) -> list[tuple[str, ...]]:
    """The subjects ``names`` grouped into persons (sorted tuples, sorted by first subject).

    A subject listed for no person, or the only one of its person among ``names``, is a unit of its own.
    """
    person_of: dict[str, tuple] = {}
    for person, members in (same_person or {}).items():
        for s in members:
            if s in person_of and person_of[s] != ("person", person):
                raise ConfigError(f"subject {s} is listed for two persons, {person_of[s][1]!r} and {person!r}: "
                                  "list each subject once")
            person_of[s] = ("person", person)
    units: dict[tuple, list[str]] = {}
    for s in names:
        units.setdefault(person_of.get(s, ("subject", s)), []).append(s)
    return sorted(tuple(sorted(u)) for u in units.values())
