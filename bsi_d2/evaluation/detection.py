"""Lesion-level (detection) scoring: sensitivity, false positives per scan and the FROC curve.

Beside the pixel-wise lesion Dice, this counts lesions. The targets are the ground-truth lesion
instances: the non-crowd annotations of the taxonomy's lesion classes (``taxonomy.lesion_ids``).
Each instance is one target; in this data a lesion is annotated once per view, so a lesion seen
in both the anterior and the posterior view is two targets (the report's lesion count matches
views; this does not). A scan is one image, both views side by side.

Matching rule, per image:

- a predicted lesion *hits* a ground-truth lesion when their mask IoU is at least 0.1
  (:data:`HIT_IOU`) or when the predicted mask's centroid (mean pixel position, rounded to the
  pixel it falls in) lies inside the ground-truth mask, so a small prediction at the centre of a
  large lesion counts;
- predictions are taken greedily in descending score (ties in input order); each takes the
  still unmatched ground-truth lesion it hits with the highest IoU (ties: the first), and is a
  true positive. Each ground-truth lesion is matched at most once, each prediction at most once;
- an unmatched prediction is a false positive, unless more than half its pixels
  (:data:`IGNORE_FRACTION`) lie in the image's ignore regions (COCO crowd annotations): then it
  is ignored, neither true nor false positive. A predicted mask without pixels marks nothing
  and is ignored too; a ground-truth mask without pixels is no target.

Because the matching is greedy by score, the matches of the predictions scoring at least t do
not depend on those below t, so one matching gives every point of the FROC curve (sensitivity
against mean false positives per scan as the threshold falls). Sensitivity at 0.25, 0.5, 1, 2
and 4 false positives per scan and their mean, the FROC score, are LUNA16's CPM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bsi_d2.postprocess.rasterize import mask_boxes

HIT_IOU = 0.1
IGNORE_FRACTION = 0.5
FP_RATES = (0.25, 0.5, 1.0, 2.0, 4.0)  # mean false positives per scan of the CPM
MATCHING_RULE = (
    "hit: mask IoU >= 0.1 or predicted centroid inside the ground-truth mask; greedy by "
    "descending score, one-to-one; unmatched predictions > 50% inside ignore regions ignored; "
    "one target per ground-truth lesion instance (per view)"
)


def fp_rate_key(rate: float) -> str:
    """``"0.25"``, ``"1"``: the key of a false-positive rate in ``sensitivity_at_fp``."""
    return f"{rate:g}"


@dataclass(frozen=True)
class ImageMatch:
    """One image's matching, in the order the predictions were given."""

    is_tp: np.ndarray  # (N,) bool: matched a ground-truth lesion
    ignored: np.ndarray  # (N,) bool: unmatched but inside ignore regions (or empty)
    matched_gt: np.ndarray  # (N,) int64: index of the matched ground-truth lesion, -1 for none
    n_gt: int  # ground-truth lesions with pixels: the image's targets

    @property
    def is_fp(self) -> np.ndarray:
        return ~self.is_tp & ~self.ignored


def hit_matrix(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N_pred, N_gt) mask IoU and whether each prediction *hits* each ground-truth mask (IoU
    at least :data:`HIT_IOU`, or the predicted centroid's pixel inside it), of (N, H, W) bool
    stacks; an empty predicted mask hits nothing."""
    gt_area = gt.sum(axis=(1, 2))
    pred_area = pred.sum(axis=(1, 2))
    pred_box, gt_box = mask_boxes(pred), mask_boxes(gt)
    n_pred, n_gt = len(pred), len(gt)
    iou = np.zeros((n_pred, n_gt), dtype=np.float64)
    hit = np.zeros((n_pred, n_gt), dtype=bool)
    for p in np.flatnonzero(pred_area):
        r0, r1, c0, c1 = pred_box[p]
        rows, cols = np.nonzero(pred[p, r0:r1, c0:c1])
        # the pixel the mean position falls in (pixel centres at integer coordinates)
        cy = int(np.floor(rows.mean() + r0 + 0.5))
        cx = int(np.floor(cols.mean() + c0 + 0.5))
        for g in range(n_gt):
            g0, g1, h0, h1 = gt_box[g]
            i0, i1, j0, j1 = max(r0, g0), min(r1, g1), max(c0, h0), min(c1, h1)
            if i1 > i0 and j1 > j0:
                inter = np.count_nonzero(pred[p, i0:i1, j0:j1] & gt[g, i0:i1, j0:j1])
                iou[p, g] = inter / (pred_area[p] + gt_area[g] - inter)
            hit[p, g] = iou[p, g] >= HIT_IOU or bool(gt[g, cy, cx])
    return iou, hit


def stack_masks(masks: Sequence[np.ndarray] | np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if len(masks) == 0:
        return np.zeros((0, *shape), dtype=bool)
    return np.ascontiguousarray(np.stack([np.asarray(m, dtype=bool) for m in masks]))


def match_lesions(
    gt_masks: Sequence[np.ndarray] | np.ndarray,
    pred_masks: Sequence[np.ndarray] | np.ndarray,
    pred_scores: Sequence[float] | np.ndarray,
    ignore: np.ndarray | None = None,
) -> ImageMatch:
    """Match one image's predicted lesion masks to its ground-truth lesion masks by the module's
    rule. Masks are (H, W) bool, as a list or an (N, H, W) array; ``ignore`` is (H, W) bool."""
    shape = next((np.shape(g[0]) for g in (gt_masks, pred_masks) if len(g)), None)
    if shape is None:
        shape = np.shape(ignore) if ignore is not None else (0, 0)
    gt = stack_masks(gt_masks, shape)
    pred = stack_masks(pred_masks, shape)
    scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(pred):
        raise ValueError(f"{len(pred)} predicted masks but {len(scores)} scores")
    if gt.shape[1:] != pred.shape[1:] or (ignore is not None and np.shape(ignore) != shape):
        raise ValueError(
            f"ground-truth masks {gt.shape[1:]}, predicted masks {pred.shape[1:]} and ignore "
            f"mask {None if ignore is None else np.shape(ignore)} differ in shape"
        )

    gt_area = gt.sum(axis=(1, 2))
    gt = gt[gt_area > 0]
    n_pred, n_gt = len(pred), len(gt)
    pred_area = pred.sum(axis=(1, 2))
    pred_box = mask_boxes(pred)
    iou, hit = hit_matrix(gt, pred)
    ignored = pred_area == 0

    is_tp = np.zeros(n_pred, dtype=bool)
    matched_gt = np.full(n_pred, -1, dtype=np.int64)
    taken = np.zeros(n_gt, dtype=bool)
    for p in np.argsort(-scores, kind="stable"):
        candidates = hit[p] & ~taken
        if ignored[p] or not candidates.any():
            continue
        g = int(np.argmax(np.where(candidates, iou[p], -1.0)))
        taken[g] = True
        is_tp[p] = True
        matched_gt[p] = g

    if ignore is not None and ignore.any():
        for p in np.flatnonzero(~is_tp & ~ignored):
            r0, r1, c0, c1 = pred_box[p]
            inside = np.count_nonzero(pred[p, r0:r1, c0:c1] & ignore[r0:r1, c0:c1])
            ignored[p] = inside > IGNORE_FRACTION * pred_area[p]
    return ImageMatch(is_tp, ignored, matched_gt, n_gt)


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


class LesionDetectionAccumulator:
    """Collects :func:`match_lesions` over images; :meth:`result` gives the detection dict."""

    def __init__(self) -> None:
        self.scores: list[np.ndarray] = []  # per image: scores of the predictions not ignored
        self.is_tp: list[np.ndarray] = []  # per image: whether each of those is a TP
        self.gt_counts: list[int] = []  # per image: ground-truth lesions
        self.n_ignored = 0

    def add(
        self,
        gt_masks: Sequence[np.ndarray] | np.ndarray,
        pred_masks: Sequence[np.ndarray] | np.ndarray,
        pred_scores: Sequence[float] | np.ndarray,
        ignore: np.ndarray | None = None,
    ) -> ImageMatch:
        """Score one image (scan); returns its matching."""
        match = match_lesions(gt_masks, pred_masks, pred_scores, ignore)
        kept = ~match.ignored
        self.scores.append(np.asarray(pred_scores, dtype=np.float64).reshape(-1)[kept])
        self.is_tp.append(match.is_tp[kept])
        self.gt_counts.append(match.n_gt)
        self.n_ignored += int(match.ignored.sum())
        return match

    def froc(self) -> list[dict[str, float | None]]:
        """One point per distinct score, descending: the threshold, the sensitivity and the
        mean false positives per scan of the predictions scoring at least it."""
        n_scans, n_lesions = len(self.gt_counts), sum(self.gt_counts)
        scores = np.concatenate([np.zeros(0), *self.scores])
        is_tp = np.concatenate([np.zeros(0, bool), *self.is_tp])
        if scores.size == 0:
            return []
        order = np.argsort(-scores, kind="stable")
        scores, is_tp = scores[order], is_tp[order]
        tp, fp = np.cumsum(is_tp), np.cumsum(~is_tp)
        # the last prediction of each run of equal scores closes that threshold's point
        last = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))
        return [
            {
                "threshold": float(scores[i]),
                "sensitivity": _ratio(int(tp[i]), n_lesions),
                "fp_per_scan": _ratio(int(fp[i]), n_scans),
            }
            for i in last
        ]

    def result(self, operating_thresh: float) -> dict:
        """The detection measures (module docstring); ratios with no denominator are None."""
        n_scans, n_lesions = len(self.gt_counts), sum(self.gt_counts)
        points = self.froc()
        at_fp: dict[str, float | None] = {}
        for rate in FP_RATES:
            # nothing predicted is the curve's start: sensitivity 0 at 0 false positives
            reached = [p["sensitivity"] for p in points if p["fp_per_scan"] <= rate]
            at_fp[fp_rate_key(rate)] = max(reached, default=0.0) if n_lesions else None
        froc_score = float(np.mean(list(at_fp.values()))) if n_lesions else None

        predicted = [int(np.count_nonzero(s >= operating_thresh)) for s in self.scores]
        tp = sum(
            int(np.count_nonzero(t[s >= operating_thresh]))
            for s, t in zip(self.scores, self.is_tp, strict=True)
        )
        n_predicted = sum(predicted)
        errors = np.array(predicted, dtype=np.float64) - np.array(self.gt_counts, np.float64)
        return {
            "n_scans": n_scans,
            "n_lesions": n_lesions,
            "matching_rule": MATCHING_RULE,
            "froc": points,
            "sensitivity_at_fp": at_fp,
            "froc_score": froc_score,
            "operating_thresh": float(operating_thresh),
            "sensitivity": _ratio(tp, n_lesions),
            "precision": _ratio(tp, n_predicted),
            "fp_per_scan": _ratio(n_predicted - tp, n_scans),
            "count_mean_absolute_error": float(np.abs(errors).mean()) if n_scans else None,
            "count_mean_error": float(errors.mean()) if n_scans else None,
            "n_predicted": n_predicted,
            "n_true_positive": tp,
            "n_ignored": self.n_ignored,
        }
