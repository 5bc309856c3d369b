"""Per-scan metastasis yes/no: sensitivity, specificity, accuracy and AUC (seed 002).

A scan is positive when the report would call it abnormal, decided for both sides by the one
function the report uses, :func:`bsi_d2.postprocess.analysis.analyse_scan`: on the scan's
ground-truth instances (ignore regions are not instances; every score counts) for the truth, on
its predicted instances at the evaluation's score thresholds for the call. Abnormal means a
lesion on bone or outside every region; uptake in a decoy organ (kidney, bladder) does not make
a scan positive. Which lesion is which is post-processing's rule, not repeated here.

The AUC ranks scans by :func:`abnormality_score`: the highest lesion threshold at which the
report would still call the scan abnormal, region and decoy thresholds held fixed, so in effect
the best score among the predicted lesions that are not decoy uptake of the kept decoys (0 for a
scan no lesion threshold makes abnormal). Lowering the lesion threshold only adds lesion pixels,
which can turn a scan abnormal but never back, so at lesion threshold t the call is exactly
"abnormality_score >= t": the ROC curve is that of the graded decision, with every lesion
class's threshold moved together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import rankdata

from bsi_d2.postprocess.analysis import analyse_scan
from bsi_d2.postprocess.rasterize import class_thresholds
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import Taxonomy


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


def abnormality_score(
    instances: Instances,
    taxonomy: Taxonomy,
    score_thresh: float = 0.5,
    class_thresh: Mapping[int | str, float] | None = None,
) -> float:
    """The highest lesion threshold at which ``analyse_scan`` still calls the scan abnormal, 0.0
    if none does.

    Region and decoy classes keep their thresholds; the lesion classes' common threshold is
    searched over the predicted lesion scores, by bisection since lowering it only adds lesions.
    """
    table = class_thresholds(taxonomy, score_thresh, class_thresh)
    lesion_ids = taxonomy.lesion_ids
    candidates = np.unique(instances.scores[np.isin(instances.category_ids, lesion_ids)])

    def abnormal_at(lesion_thresh: float) -> bool:
        by_id = {int(cid): float(table[cid]) for cid in taxonomy.ids}
        by_id.update({int(cid): lesion_thresh for cid in lesion_ids})
        analysis = analyse_scan(
            instances, None, taxonomy, score_thresh=score_thresh, class_thresh=by_id
        )
        return bool(analysis.record["abnormal"])

    if candidates.size == 0 or not abnormal_at(float(candidates[0])):
        return 0.0
    lo, hi = 0, candidates.size - 1  # abnormal at candidates[lo]; the answer is in [lo, hi]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if abnormal_at(float(candidates[mid])):
            lo = mid
        else:
            hi = mid - 1
    return float(candidates[lo])


def scan_metrics(
    positive: Sequence[bool], called: Sequence[bool], ranking: Sequence[float]
) -> dict:
    """Scan-level metrics from the truth, the decisions graded, and scores ranking the scans
    for the AUC (see :func:`abnormality_score`)."""
    truth = np.asarray(positive, dtype=bool)
    decision = np.asarray(called, dtype=bool)
    scores = np.asarray(ranking, dtype=np.float64)
    if decision.shape != truth.shape or scores.shape != truth.shape:
        raise ValueError(
            f"{truth.size} labels but {decision.size} decisions and {scores.size} scores"
        )
    tp = int(np.count_nonzero(truth & decision))
    tn = int(np.count_nonzero(~truth & ~decision))
    fp = int(np.count_nonzero(~truth & decision))
    fn = int(np.count_nonzero(truth & ~decision))
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
    }
