"""How unsure a model is of one scan: test-time augmentation and score entropy, NumPy in, NumPy out.

An :class:`Augmentation` changes the display image the model sees and maps the instances it
returns back onto the original image; :class:`AugmentedPredictor` wraps a predictor with one, so
that :func:`~bsi_d2.inference.batch.run_batch` analyses the mapped-back instances against the
scan's own counts exactly as ``predict`` does. ``hflip`` mirrors the merged anterior | posterior
image (each view lands in the other's slot) and maps the answer back with the taxonomy's
``flip_map``; ``intensity`` scales the display by :data:`INTENSITY_FACTOR` (inside training's
brightness range, :mod:`bsi_d2.data.augment`).

For augmentations a = 1..K of one scan (the identity among them):

* ``tta``: ``U = (1 - mean_{a<b} IoU(L_a, L_b)) + w * (max_a BSI_a - min_a BSI_a)``, where
  ``L_a`` is the union of the lesion masks kept under a (two empty masks agree: IoU 1),
  ``BSI_a`` the scan's BSI in percent (0 where a found no skeleton) and ``w`` =
  :data:`BSI_WEIGHT` per BSI point; 0 exactly when every augmentation gives the same answer.
* ``entropy``: ``U = mean_i H(p_i)``, ``H(p) = -p log2 p - (1 - p) log2 (1 - p)`` (bits) over
  the scores ``p_i`` of the kept detections; 0 when none is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from bsi_d2.data.augment import adjust_brightness, hflip_image, hflip_masks, remap_classes
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import Taxonomy

IDENTITY = "identity"
INTENSITY_FACTOR = 1.25  # display gain of the ``intensity`` augmentation
BSI_WEIGHT = 1.0  # one BSI point of spread weighs as much as wholly disjoint lesion masks
TTA_FORMULA = "(1 - mean pairwise IoU of the kept lesion masks) + bsi_weight * (max - min BSI)"
ENTROPY_FORMULA = "mean over kept detections of -p log2 p - (1 - p) log2 (1 - p)"


class Augmentation:
    """The identity: a display image as it is, and the model's answer as it is."""

    name = IDENTITY

    def image(self, display: np.ndarray) -> np.ndarray:
        return display

    def restore(self, instances: Instances, taxonomy: Taxonomy) -> Instances:
        """The instances found on :meth:`image`'s output, on the original image."""
        return instances


class HorizontalFlip(Augmentation):
    """Mirror the merged image; back: mirror masks and boxes, swap classes by ``flip_map``."""

    name = "hflip"

    def image(self, display: np.ndarray) -> np.ndarray:
        return hflip_image(display)

    def restore(self, instances: Instances, taxonomy: Taxonomy) -> Instances:
        boxes = np.asarray(instances.boxes, np.float32).reshape(-1, 4).copy()
        boxes[:, [0, 2]] = instances.width - boxes[:, [2, 0]]  # XYXY pixel edges
        probability = instances.lesion_probability
        return Instances(
            instances.height,
            instances.width,
            boxes,
            instances.scores,
            remap_classes(instances.category_ids, taxonomy.flip_map),
            hflip_masks(instances.masks),
            None if probability is None else np.ascontiguousarray(probability[:, ::-1]),
        )


@dataclass(frozen=True)
class IntensityScale(Augmentation):
    """Multiply the display by ``factor``, clipped to its type's range; geometry unchanged."""

    factor: float = INTENSITY_FACTOR
    name = "intensity"

    def image(self, display: np.ndarray) -> np.ndarray:
        if not np.issubdtype(display.dtype, np.integer):
            return adjust_brightness(display, self.factor)
        top = float(np.iinfo(display.dtype).max)
        return np.rint(adjust_brightness(display, self.factor, top)).astype(display.dtype)


# augmentation name -> augmentation; ``rank-unlabelled --augment`` chooses among the others
AUGMENTATIONS: dict[str, Augmentation] = {
    a.name: a for a in (Augmentation(), HorizontalFlip(), IntensityScale())
}
DEFAULT_AUGMENTATIONS = ("hflip", "intensity")


def parse_augmentations(text: str) -> tuple[str, ...]:
    """``"hflip,intensity"`` -> the augmentations beside the identity, in the order given."""
    names = [n.strip() for n in str(text).split(",") if n.strip() and n.strip() != IDENTITY]
    unknown = sorted(set(names) - set(AUGMENTATIONS))
    if unknown:
        choices = ", ".join(n for n in AUGMENTATIONS if n != IDENTITY)
        raise ValueError(f"unknown augmentation(s) {', '.join(unknown)}; choose from {choices}")
    if not names:
        raise ValueError("at least one augmentation besides the identity is needed")
    return tuple(dict.fromkeys(names))


class AugmentedPredictor:
    """``predictor`` (display images -> instances) answering on augmented images, its answers
    mapped back onto the originals."""

    def __init__(
        self,
        predictor: Callable[[list[np.ndarray]], list[Instances]],
        augmentation: Augmentation,
        taxonomy: Taxonomy,
    ) -> None:
        self.predictor = predictor
        self.augmentation = augmentation
        self.taxonomy = taxonomy

    def __call__(self, images: Sequence[np.ndarray]) -> list[Instances]:
        seen = [self.augmentation.image(image) for image in images]
        return [self.augmentation.restore(i, self.taxonomy) for i in self.predictor(seen)]


@dataclass(frozen=True)
class ScanUncertainty:
    """One scan's uncertainty and the parts it is made of (named as the ranking's columns)."""

    uncertainty: float
    parts: dict[str, Any] = field(default_factory=dict)


def lesion_mask(
    masks: np.ndarray, category_ids: np.ndarray, kept: np.ndarray, taxonomy: Taxonomy
) -> np.ndarray:
    """(H, W) bool union of the kept lesion-class masks of (N, H, W) ``masks``."""
    masks = np.asarray(masks, bool)
    chosen = np.asarray(kept, bool) & np.isin(category_ids, taxonomy.lesion_ids)
    return masks[chosen].any(axis=0) if chosen.any() else np.zeros(masks.shape[1:], bool)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks; 1 where both are empty (they agree)."""
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def tta_uncertainty(
    names: Sequence[str],
    lesion_masks: Sequence[np.ndarray],
    bsi: Sequence[float | None],
    bsi_weight: float = BSI_WEIGHT,
) -> ScanUncertainty:
    """``tta`` uncertainty (module docstring) of one scan's answers under the augmentations
    ``names``: their lesion masks and BSIs (None: no skeleton found, counted as 0)."""
    if not len(names) == len(lesion_masks) == len(bsi) >= 2:
        raise ValueError("test-time augmentation needs two or more answers, one per name")
    ious = [mask_iou(a, b) for a, b in combinations(lesion_masks, 2)]
    values = [0.0 if b is None else float(b) for b in bsi]
    disagreement = 1.0 - float(np.mean(ious))
    spread = max(values) - min(values)
    parts: dict[str, Any] = {
        "mask_disagreement": disagreement,
        "bsi_range": spread,
        **{f"bsi_{name}": value for name, value in zip(names, bsi, strict=True)},
    }
    return ScanUncertainty(disagreement + float(bsi_weight) * spread, parts)


def binary_entropy(scores: np.ndarray) -> np.ndarray:
    """H(p) in bits of each score (0 at p = 0 or 1, 1 at p = 0.5)."""
    p = np.clip(np.asarray(scores, np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = -p * np.log2(p) - (1.0 - p) * np.log2(1.0 - p)
    return np.nan_to_num(terms, nan=0.0)


def entropy_uncertainty(scores: np.ndarray) -> ScanUncertainty:
    """``entropy`` uncertainty (module docstring) of the kept detections' ``scores``."""
    entropy = binary_entropy(scores)
    parts = {"detections": len(entropy), "entropy_max": float(entropy.max(initial=0.0))}
    return ScanUncertainty(float(entropy.mean()) if len(entropy) else 0.0, parts)
