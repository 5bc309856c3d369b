"""Per-scan metastasis yes/no: sensitivity, specificity, accuracy and AUC (seed 002).

A scan is positive when its ground truth holds any lesion instance, and predicted positive when
any predicted lesion instance scores at least the threshold; the AUC ranks scans by their
highest lesion score (0 for a scan with no predicted lesion).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata


def roc_auc(labels: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties); None without both
    positive and negative scans."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(labels.sum())
    n_neg = int(labels.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(scores)
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def scan_metrics(
    positive: Sequence[bool], max_scores: Sequence[float], score_thresh: float = 0.5
) -> dict:
    """Scan-level metrics from ground-truth labels and each scan's highest lesion score."""
    truth = np.asarray(positive, dtype=bool)
    scores = np.asarray(max_scores, dtype=np.float64)
    if truth.shape != scores.shape:
        raise ValueError(f"{truth.size} labels but {scores.size} scores")
    called = scores >= score_thresh
    tp = int(np.count_nonzero(truth & called))
    tn = int(np.count_nonzero(~truth & ~called))
    fp = int(np.count_nonzero(~truth & called))
    fn = int(np.count_nonzero(truth & ~called))
    n_pos, n_neg = tp + fn, tn + fp
    return {
        "sensitivity": tp / n_pos if n_pos else None,
        "specificity": tn / n_neg if n_neg else None,
        "accuracy": (tp + tn) / truth.size if truth.size else None,
        "auc": roc_auc(truth, scores),
        "n_pos": n_pos,
        "n_neg": n_neg,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "score_thresh": float(score_thresh),
    }
