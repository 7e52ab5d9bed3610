"""Evaluation protocols: which subjects each fold tests (METHOD.md §7).

Folds are made of whole subjects, so no test subject can have a clip in training. Subjects are
keyed ``dataset/subject``: CASME II's ``sub01`` and SAMM's ``006`` are different people even
where numbers coincide; where they are not (one person recorded in two datasets), a same-person
file (:func:`read_same_person`) merges them into one unit that folds never split.
"""

from __future__ import annotations

import csv
from pathlib import Path

from roi_store.errors import AnnotationError
from roi_store.ids import normalise_subject
# The folds themselves are computed in the store layer, so that a feature set hands out the very
# folds the method uses; the method names them from here.
from roi_store.store.folds import PROTOCOLS, make_folds, person_units, subject_of  # noqa: F401

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
