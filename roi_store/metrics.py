"""MEGC 2019 metrics: UF1 and UAR on predictions pooled over all folds (METHOD.md §7)."""

from __future__ import annotations

import numpy as np


def confusion(true, pred, n_classes: int) -> np.ndarray:
    """Confusion matrix, rows = true class, columns = predicted class."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(true, dtype=int), np.asarray(pred, dtype=int)), 1)
    return m


def uf1_uar(true, pred, n_classes: int) -> tuple[float, float]:
    """Unweighted F1 and unweighted average recall over the classes present in ``true``.

    UF1 = mean_c 2TP_c / (2TP_c + FP_c + FN_c); UAR = mean_c TP_c / N_c. Both are taken once on
    the pooled predictions; a class absent from the truth is left out of both means (the
    challenge's per-dataset columns and scikit-learn's ``labels=`` convention), so that a
    dataset without a class is not scored 0 for it.
    """
    m = confusion(true, pred, n_classes)
    tp = np.diag(m).astype(float)
    n = m.sum(axis=1).astype(float)
    fp = m.sum(axis=0) - tp
    present = n > 0
    if not present.any():
        return float("nan"), float("nan")
    denom = 2 * tp + fp + (n - tp)
    f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
    recall = tp / np.where(n > 0, n, 1)
    return float(f1[present].mean()), float(recall[present].mean())


def per_class_recall(true, pred, n_classes: int) -> list[float | None]:
    m = confusion(true, pred, n_classes)
    n = m.sum(axis=1)
    return [float(m[c, c] / n[c]) if n[c] else None for c in range(n_classes)]
