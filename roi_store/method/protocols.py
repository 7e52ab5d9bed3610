"""Evaluation protocols: which subjects each fold tests (METHOD.md §7).

Folds are made of whole subjects, so no test subject can have a clip in training. Subjects are
keyed ``dataset/subject``: CASME II's ``sub01`` and SAMM's ``006`` are different people even
where numbers coincide; where they are not (one person recorded in two datasets), a same-person
file (:func:`read_same_person`) merges them into one unit that folds never split.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np

from roi_store.errors import AnnotationError, ConfigError
from roi_store.ids import normalise_subject
from roi_store.method.presets import check_choice

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
        check_choice("protocol", protocol, PROTOCOLS)
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


SAME_PERSON_COLUMNS = ("dataset", "subject", "person")


def read_same_person(path: str | Path, known: set[str] | None = None) -> dict[str, list[str]]:
    """Read a same-person file: CSV with the header ``dataset, subject, person``.

    Subjects are normalised as at ingest (``1``, ``01``, ``sub01`` are CASME II's ``sub01``).

    Parameters
    ----------
    path : str or Path
        The CSV file.
    known : set of str, optional
        The store's subject keys (``dataset/subject``): a listed subject outside it is refused.

    Returns
    -------
    dict
        Person -> sorted subject keys, for persons with two or more subjects, sorted by person.

    Raises
    ------
    AnnotationError
        If the file is missing, lacks a column, or names a subject twice or one not in ``known``.
    """
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"same-person file {path} does not exist: give a CSV with the header "
                              f"{', '.join(SAME_PERSON_COLUMNS)}")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip().lower() for h in reader.fieldnames or []]
        missing = [c for c in SAME_PERSON_COLUMNS if c not in header]
        if missing:
            raise AnnotationError(f"same-person file {path}: no column {', '.join(missing)} in its header "
                                  f"{header}: the header must be {', '.join(SAME_PERSON_COLUMNS)}")
        persons: dict[str, list[str]] = {}
        seen: dict[str, int] = {}
        for n, row in enumerate(reader, start=2):
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            if not any(row.values()):
                continue
            dataset, person = row["dataset"].lower(), row["person"]
            if not dataset or not person or not row["subject"]:
                raise AnnotationError(f"same-person file {path} line {n}: dataset, subject and person must all "
                                      "be given")
            try:
                key = f"{dataset}/{normalise_subject(dataset, row['subject'])}"
            except AnnotationError as exc:
                raise AnnotationError(f"same-person file {path} line {n}: {exc}") from None
            if key in seen:
                raise AnnotationError(f"same-person file {path} line {n}: subject {key} is listed again (first on "
                                      f"line {seen[key]}): list each subject once")
            if known is not None and key not in known:
                raise AnnotationError(f"same-person file {path} line {n}: subject {key} is not in the store: "
                                      "list the subjects with 'roistore info --json'")
            seen[key] = n
            persons.setdefault(person, []).append(key)
    return {p: sorted(m) for p, m in sorted(persons.items()) if len(m) > 1}
