"""Lesion instances from a dense lesion probability map, and the choice of lesion source.

NumPy in, NumPy out. A lesion is a connected component (8-connected) of the pixels at or above
the threshold, found in each view's half of the merged image apart, so no lesion straddles the
seam; its score is the mean probability of its pixels. :func:`combine_lesion_sources` gives the
instances the rest of the toolkit sees: Mask R-CNN's lesions (``rcnn``), the dense map's
(``dense``), or the components of both together (``union``); regions and decoys are Mask R-CNN's
in every case.
"""

from __future__ import annotations

import cv2
import numpy as np

from bsi_d2.structures.instances import Instances

SOURCES = ("dense", "rcnn", "union")


def lesion_components(
    probability: np.ndarray, threshold: float, min_area: int = 1, views: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) bool masks and (N,) scores of the components of ``probability >= threshold``
    with at least ``min_area`` pixels, each view's column band (``views`` equal bands) apart."""
    probability = np.asarray(probability, dtype=np.float32)
    height, width = probability.shape
    above = probability >= float(threshold)
    bounds = np.linspace(0, width, int(views) + 1).round().astype(int)
    masks: list[np.ndarray] = []
    scores: list[float] = []
    for c0, c1 in zip(bounds[:-1], bounds[1:], strict=True):
        band = above[:, c0:c1].astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(band, connectivity=8)
        for label in range(1, n):
            if stats[label, cv2.CC_STAT_AREA] < min_area:
                continue
            mask = np.zeros((height, width), dtype=bool)
            mask[:, c0:c1] = labels == label
            masks.append(mask)
            scores.append(float(probability[mask].mean()))
    if not masks:
        return np.zeros((0, height, width), dtype=bool), np.zeros((0,), dtype=np.float32)
    return np.stack(masks), np.asarray(scores, dtype=np.float32)


def combine_lesion_sources(
    instances: Instances,
    probability: np.ndarray | None,
    lesion_id: int,
    source: str,
    threshold: float,
    min_area: int = 1,
    rcnn_threshold: float = 0.0,
) -> Instances:
    """``instances`` with their lesions taken from ``source``.

    ``union``: components of the dense pixels at or above ``threshold`` together with Mask
    R-CNN's lesion masks scoring at least ``rcnn_threshold``; a component's score is the larger
    of its mean probability and the best Mask R-CNN lesion score inside it.
    """
    if source not in SOURCES:
        raise ValueError(f"lesion source {source!r} is not one of {SOURCES}")
    if probability is None:
        return instances
    probability = np.asarray(probability, dtype=np.float32)
    if source == "rcnn":
        return _with_probability(instances, probability)
    is_lesion = instances.category_ids == lesion_id
    others = instances.select(~is_lesion)
    if probability.shape != (instances.height, instances.width):
        raise ValueError(
            f"lesion probability {probability.shape} != image ({instances.height}, "
            f"{instances.width})"
        )
    rcnn = instances.select(is_lesion & (instances.scores >= rcnn_threshold))
    if source == "union" and len(rcnn):
        boost = np.zeros_like(probability)
        for mask, score in zip(rcnn.masks, rcnn.scores, strict=True):
            np.maximum(boost, np.where(mask, max(float(score), threshold), 0.0), out=boost)
        masks, _ = lesion_components(np.maximum(probability, boost), threshold, min_area)
        scores = np.array(
            [max(float(probability[m].mean()), float(boost[m].max())) for m in masks],
            dtype=np.float32,
        )
    else:
        masks, scores = lesion_components(probability, threshold, min_area)
    dense = Instances.from_masks(
        instances.height, instances.width, [lesion_id] * len(masks), list(masks), list(scores)
    )
    return _with_probability(Instances.cat([others, dense]), probability)


def _with_probability(instances: Instances, probability: np.ndarray) -> Instances:
    from dataclasses import replace

    return replace(instances, lesion_probability=probability)
