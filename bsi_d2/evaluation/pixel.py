"""Pixel-wise precision, sensitivity and F1 per category, as seed 000 (Tables 2-3) reports them.

Per image, a category's mask is the union of its instances; TP, FP and FN are summed over all
images before the ratios are taken. A ratio without a denominator is None, not 0: sensitivity
of a class with no ground-truth pixels, precision of one never predicted. Averages are plain
means over the categories where each measure is defined, with and without the decoy classes
(kidney, bladder); "skeleton" pools the counts of every region class. Lesion classes are scored
per class but kept out of the averages, which describe the anatomy. Pixels under a ground-truth
ignore region (COCO ``iscrowd``) are removed from both sides before counting (see ``evaluator``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import Taxonomy

MaskKey = int | str
ImageMasks = Mapping[MaskKey, np.ndarray]


def confusion_counts(gt: np.ndarray, pred: np.ndarray) -> tuple[int, int, int]:
    """(TP, FP, FN) pixel counts of two same-shaped binary masks."""
    gt = np.asarray(gt, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    if gt.shape != pred.shape:
        raise ValueError(f"ground-truth mask {gt.shape} and predicted mask {pred.shape} differ")
    tp = int(np.count_nonzero(gt & pred))
    return tp, int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(gt)) - tp


def ratios(tp: int, fp: int, fn: int) -> dict[str, float | None]:
    """Precision, sensitivity and F1, each None where undefined: precision without predicted
    pixels, sensitivity without ground-truth pixels, F1 only where the class is absent from both
    sides (a class in the ground truth but never predicted has sensitivity 0 and F1 0)."""
    return {
        "precision": tp / (tp + fp) if tp + fp else None,
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
    }


def dice(gt: np.ndarray, pred: np.ndarray) -> float | None:
    """Pixel Dice of two binary masks; None when both are empty."""
    tp, fp, fn = confusion_counts(gt, pred)
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None


def category_masks(
    instances: Instances, category_ids: Iterable[int], score_thresh: float | None = None
) -> dict[int, np.ndarray]:
    """Union of each category's instances (scoring at least ``score_thresh`` when given)."""
    keep = np.ones(len(instances), dtype=bool)
    if score_thresh is not None:
        keep &= instances.scores >= score_thresh
    out = {}
    for cid in category_ids:
        sel = keep & (instances.category_ids == cid)
        out[int(cid)] = (
            instances.masks[sel].any(axis=0)
            if sel.any()
            else np.zeros((instances.height, instances.width), dtype=bool)
        )
    return out


class PixelAccumulator:
    """Sums TP/FP/FN per category over images; ``result()`` gives :func:`pixel_metrics`' dict."""

    def __init__(self, taxonomy: Taxonomy | None = None) -> None:
        self.taxonomy = taxonomy
        self.counts: dict[str, list[int]] = {}
        if taxonomy is not None:
            for c in taxonomy.classes:
                self.counts[c.name] = [0, 0, 0]

    def _name(self, key: MaskKey) -> str:
        if self.taxonomy is None:
            return str(key)
        if isinstance(key, str) and not key.isdigit():
            return self.taxonomy.by_name(key).name
        return self.taxonomy.by_id(int(key)).name

    def add(self, gt: ImageMasks, pred: ImageMasks) -> None:
        """One image: category -> (H, W) bool mask on each side; a missing key is an empty mask."""
        shape = next((np.shape(m) for m in [*gt.values(), *pred.values()]), None)
        for key in {*gt, *pred}:
            g = gt.get(key)
            p = pred.get(key)
            g = np.zeros(shape, bool) if g is None else g
            p = np.zeros(shape, bool) if p is None else p
            counts = self.counts.setdefault(self._name(key), [0, 0, 0])
            for i, v in enumerate(confusion_counts(g, p)):
                counts[i] += v

    def _kind(self, name: str) -> str:
        return "region" if self.taxonomy is None else self.taxonomy.by_name(name).kind

    def result(self) -> dict:
        per_class = {
            name: {**ratios(*c), "tp": c[0], "fp": c[1], "fn": c[2], "kind": self._kind(name)}
            for name, c in self.counts.items()
        }
        anatomy = [n for n in per_class if self._kind(n) != "lesion"]
        without_decoys = [n for n in anatomy if self._kind(n) != "decoy"]
        regions = [n for n in anatomy if self._kind(n) in ("region", "other")]
        pooled = [sum(self.counts[n][i] for n in regions) for i in range(3)]
        return {
            "per_class": per_class,
            "mean": _mean_of(per_class, anatomy),
            "mean_without_decoys": _mean_of(per_class, without_decoys),
            "skeleton": {**ratios(*pooled), "tp": pooled[0], "fp": pooled[1], "fn": pooled[2]},
        }


def _mean_of(per_class: dict[str, dict], names: Sequence[str]) -> dict:
    """Each measure's mean over the categories where it is defined (see :func:`ratios`);
    ``n_classes`` counts the categories that occur at all, on either side."""
    out: dict = {"n_classes": sum(per_class[n]["f1"] is not None for n in names)}
    for key in ("precision", "sensitivity", "f1"):
        defined = [per_class[n][key] for n in names if per_class[n][key] is not None]
        out[key] = float(np.mean(defined)) if defined else None
    return out


def pixel_metrics(
    gt_masks: ImageMasks | Sequence[ImageMasks],
    pred_masks: ImageMasks | Sequence[ImageMasks],
    taxonomy: Taxonomy | None = None,
) -> dict:
    """Pixel-wise metrics of one image's or many images' category masks.

    ``gt_masks`` / ``pred_masks``: a mapping category -> (H, W) bool union mask, or a sequence
    of such mappings, one per image. Categories are taxonomy ids or names when ``taxonomy`` is
    given (which also decides what is a decoy or a lesion), else any label, all treated as regions.
    Returns ``{"per_class": {name: {precision, sensitivity, f1, tp, fp, fn, kind}}, "mean",
    "mean_without_decoys", "skeleton"}``.
    """
    if isinstance(gt_masks, Mapping):
        gt_masks = [gt_masks]
    if isinstance(pred_masks, Mapping):
        pred_masks = [pred_masks]
    if len(gt_masks) != len(pred_masks):
        raise ValueError(f"{len(gt_masks)} ground-truth images but {len(pred_masks)} predicted")
    acc = PixelAccumulator(taxonomy)
    for gt, pred in zip(gt_masks, pred_masks, strict=True):
        acc.add(gt, pred)
    return acc.result()
