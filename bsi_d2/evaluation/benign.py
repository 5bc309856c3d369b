"""Lesion-level benign-versus-malignant figures (seed 004): is each hot spot called what it is?

Beside finding lesions (:mod:`~bsi_d2.evaluation.detection`), a model with a benign class
(``taxonomy.benign_class``) tells benign hot spots from metastases. This scores that call, hot
spot by hot spot:

- **Targets**: the truth hot spots, every non-crowd ground-truth instance of a lesion class
  (malignant) or of the benign class (benign) with pixels, one per instance (so per view).
- **Calls**: the predictions of those classes that pass their score thresholds, as the report
  shows them.
- **Matching**: the detection rule (hit: mask IoU >= 0.1 or the predicted centroid inside the
  truth mask; greedy by descending score, one to one), over both classes at once, so a truth
  hot spot takes at most one call: the highest-scoring free prediction that hits it, whatever
  its class. Truth hot spots no call matches are *not detected* and counted apart; they are in
  none of the figures below.
- Over the matched hot spots, a malignant one called lesion is a true positive, a benign one
  called benign a true negative: **accuracy** (TP + TN) / matched, **sensitivity** TP /
  malignant matched, **specificity** TN / benign matched.
- **AUC** (Mann-Whitney, malignant positive) of the score rule P(lesion) = the score of a lesion
  call, 1 - the score of a benign call, over the matched hot spots.
- **Lesion false positives on benign truth**: lesion calls that hit a benign truth hot spot and
  no malignant one, whether or not the matching gave them that hot spot (a second lesion call
  on one benign hot spot counts too), per scan. Calls lying mostly in ignore regions are left
  out, as in the detection.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bsi_d2.evaluation.detection import hit_matrix, match_lesions, stack_masks
from bsi_d2.evaluation.scan import roc_auc

CLASSIFICATION_RULE = (
    "targets: ground-truth lesion (malignant) and benign instances, one per instance (per "
    "view); calls: lesion and benign predictions passing their thresholds, matched together by "
    "the detection rule (IoU >= 0.1 or centroid inside; greedy by score, one to one); figures "
    "over matched targets, unmatched targets counted as not detected"
)
SCORE_RULE = "P(lesion) = score of a lesion call, 1 - score of a benign call"


def _ratio(num: int, den: int) -> float | None:
    return float(num / den) if den else None


class BenignMalignantAccumulator:
    """Collects the calls of each scan (:meth:`add`); :meth:`result` gives the figures."""

    def __init__(self) -> None:
        self.truth_malignant: list[bool] = []  # per matched truth hot spot
        self.called_lesion: list[bool] = []  # ... whether its call was a lesion
        self.p_lesion: list[float] = []  # ... and the call's P(lesion)
        self.n_malignant = 0  # every truth target
        self.n_benign = 0
        self.lesion_on_benign = 0
        self.n_scans = 0

    def add(
        self,
        gt_masks: Sequence[np.ndarray] | np.ndarray,
        gt_malignant: Sequence[bool] | np.ndarray,
        pred_masks: Sequence[np.ndarray] | np.ndarray,
        pred_lesion: Sequence[bool] | np.ndarray,
        pred_scores: Sequence[float] | np.ndarray,
        ignore: np.ndarray | None = None,
    ) -> None:
        """One scan: its truth hot spots (masks, and True for a malignant one) and its calls
        (masks, True for a lesion call and False for a benign one, scores), all (H, W) bool."""
        gt_malignant = np.asarray(gt_malignant, dtype=bool).reshape(-1)
        pred_lesion = np.asarray(pred_lesion, dtype=bool).reshape(-1)
        scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
        if len(gt_malignant) != len(gt_masks) or not len(pred_lesion) == len(scores) == len(
            pred_masks
        ):
            raise ValueError(
                f"{len(gt_masks)} truth masks with {len(gt_malignant)} classes, "
                f"{len(pred_masks)} predicted masks with {len(pred_lesion)} classes and "
                f"{len(scores)} scores"
            )
        shape = next((np.shape(g[0]) for g in (gt_masks, pred_masks) if len(g)), None)
        shape = shape or (np.shape(ignore) if ignore is not None else (0, 0))
        gt = stack_masks(gt_masks, shape)
        keep = gt.any(axis=(1, 2))  # match_lesions drops empty truth masks too
        gt, gt_malignant = gt[keep], gt_malignant[keep]
        pred = stack_masks(pred_masks, shape)
        self.n_scans += 1
        self.n_malignant += int(gt_malignant.sum())
        self.n_benign += int((~gt_malignant).sum())
        match = match_lesions(gt, pred, scores, ignore)
        for p in np.flatnonzero(match.is_tp):
            g = int(match.matched_gt[p])
            self.truth_malignant.append(bool(gt_malignant[g]))
            self.called_lesion.append(bool(pred_lesion[p]))
            self.p_lesion.append(float(scores[p] if pred_lesion[p] else 1.0 - scores[p]))
        _, hit = hit_matrix(gt, pred)
        on_benign = hit[:, ~gt_malignant].any(axis=1) & ~hit[:, gt_malignant].any(axis=1)
        self.lesion_on_benign += int(np.count_nonzero(on_benign & pred_lesion & ~match.ignored))

    def result(self) -> dict:
        """The figures of the module docstring; ratios without a denominator are None."""
        truth = np.asarray(self.truth_malignant, dtype=bool)
        called = np.asarray(self.called_lesion, dtype=bool)
        tp = int(np.count_nonzero(truth & called))
        fn = int(np.count_nonzero(truth & ~called))
        tn = int(np.count_nonzero(~truth & ~called))
        fp = int(np.count_nonzero(~truth & called))
        return {
            "rule": CLASSIFICATION_RULE,
            "score_rule": SCORE_RULE,
            "n_scans": self.n_scans,
            "n_malignant": self.n_malignant,
            "n_benign": self.n_benign,
            "n_malignant_matched": tp + fn,
            "n_benign_matched": tn + fp,
            "n_not_detected": self.n_malignant + self.n_benign - len(truth),
            "malignant_called_lesion": tp,
            "malignant_called_benign": fn,
            "benign_called_benign": tn,
            "benign_called_lesion": fp,
            "accuracy": _ratio(tp + tn, len(truth)),
            "sensitivity": _ratio(tp, tp + fn),
            "specificity": _ratio(tn, tn + fp),
            "auc": roc_auc(truth, self.p_lesion),
            "lesion_fp_on_benign": self.lesion_on_benign,
            "lesion_fp_on_benign_per_scan": _ratio(self.lesion_on_benign, self.n_scans),
        }
