"""MEGC 2019 metrics: UF1 and UAR on predictions pooled over all folds (METHOD.md §7).

Two conventions for a class that is absent from the truth of the clips scored (a dataset
column without surprise clips, a bootstrap resample that drew none):

``present`` (roistore's, the default)
    Both means run over the classes present in the truth, so that a dataset without a class
    is not scored 0 for it (scikit-learn's ``labels=`` convention).
``challenge``
    The MEGC 2019 scoring script's: a class absent from the truth but predicted counts in UF1
    with F1 = 0 (its 2TP + FP + FN is not 0); a class neither present nor predicted is left
    out. UAR runs over the classes present (a recall over no clips is undefined).

Both agree whenever every class is present in the truth (FULL of the composite).
"""

from __future__ import annotations

import numpy as np

CONVENTIONS = ("present", "challenge")


def confusion(true, pred, n_classes: int) -> np.ndarray:
    """Confusion matrix, rows = true class, columns = predicted class.

    Parameters
    ----------
    true, pred : sequence of int
        Class indices.
    n_classes : int
        Number of classes.

    Returns
    -------
    ndarray
        ``(n_classes, n_classes)`` int64 counts.
    """
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(true, dtype=int), np.asarray(pred, dtype=int)), 1)
    return m


def scores_from_confusion(conf, convention: str = "present") -> tuple[np.ndarray, np.ndarray]:
    """UF1 and UAR of one or many confusion matrices (vectorised over leading axes).

    Parameters
    ----------
    conf : array_like
        ``(..., C, C)`` counts, rows true, columns predicted (e.g. ``(B, C, C)`` bootstrap totals).
    convention : {"present", "challenge"}
        How a class absent from the truth counts (module docstring).

    Returns
    -------
    (ndarray, ndarray)
        UF1 and UAR, of shape ``conf.shape[:-2]``; NaN where no class is present.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"invalid convention {convention!r}: allowed values are {', '.join(CONVENTIONS)}")
    m = np.asarray(conf, dtype=float)
    tp = np.diagonal(m, axis1=-2, axis2=-1)
    n = m.sum(axis=-1)
    predicted = m.sum(axis=-2)
    denom = n + predicted  # 2TP + FP + FN
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    recall = np.divide(tp, n, out=np.zeros_like(tp), where=n > 0)
    present = n > 0
    in_f1 = present | (predicted > 0) if convention == "challenge" else present
    with np.errstate(invalid="ignore", divide="ignore"):
        uf1 = (f1 * in_f1).sum(axis=-1) / in_f1.sum(axis=-1)
        uar = (recall * present).sum(axis=-1) / present.sum(axis=-1)
    return uf1, uar


def uf1_uar(true, pred, n_classes: int, convention: str = "present") -> tuple[float, float]:
    """Unweighted F1 and unweighted average recall of pooled predictions.

    UF1 = mean_c 2TP_c / (2TP_c + FP_c + FN_c); UAR = mean_c TP_c / N_c. Both are taken once on
    the pooled predictions, over the classes present in ``true`` by default (``convention``:
    see the module docstring).

    Parameters
    ----------
    true, pred : sequence of int
        Class indices.
    n_classes : int
        Number of classes.
    convention : {"present", "challenge"}
        How a class absent from the truth counts.

    Returns
    -------
    (float, float)
        UF1 and UAR (NaN for no predictions).
    """
    uf1, uar = scores_from_confusion(confusion(true, pred, n_classes), convention)
    return float(uf1), float(uar)
