"""Assignments of instances to views and of lesions to skeletal regions. NumPy only."""

from __future__ import annotations

import numpy as np

from bsi_d2.postprocess.rasterize import mask_boxes
from bsi_d2.preprocess.merge import VIEW_ORDER
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import Taxonomy

OTHER_REGION = "other"  # report name for lesions in no skeletal region (DOMAIN.md section 7)


def assign_views(instances: Instances, boxes: np.ndarray | None = None) -> list[str]:
    """The view of each instance: anterior if most of its pixels lie in the merged image's left
    half, else posterior (a tie goes to the anterior view; an empty mask to its box centre)."""
    half = instances.width // 2
    boxes = mask_boxes(instances.masks) if boxes is None else boxes
    views = []
    for i in range(len(instances)):
        r0, r1, c0, c1 = boxes[i]
        if r1 <= r0:
            x0, _, x1, _ = np.asarray(instances.boxes[i], dtype=np.float64)
            left = 1 if 0.5 * (x0 + x1) < half else 0
            views.append(VIEW_ORDER[0] if left else VIEW_ORDER[1])
            continue
        crop = instances.masks[i, r0:r1, c0:c1]
        split = int(np.clip(half - c0, 0, c1 - c0))
        left = int(np.count_nonzero(crop[:, :split]))
        right = int(np.count_nonzero(crop[:, split:]))
        views.append(VIEW_ORDER[0] if left >= right else VIEW_ORDER[1])
    return views


def lesion_regions(
    instances: Instances,
    region_map: np.ndarray,
    taxonomy: Taxonomy,
    boxes: np.ndarray | None = None,
) -> list[int]:
    """For each lesion instance (in order), the region or decoy class id holding most of its
    pixels, or 0 where none of its pixels lie in one."""
    boxes = mask_boxes(instances.masks) if boxes is None else boxes
    size = max(int(region_map.max(initial=0)), max(taxonomy.ids)) + 1
    is_site = np.zeros(size, dtype=bool)
    is_site[[c.id for c in taxonomy.classes if c.is_region or c.is_decoy]] = True
    out = []
    for i in np.flatnonzero(np.isin(instances.category_ids, taxonomy.lesion_ids)):
        r0, r1, c0, c1 = boxes[i]
        labels = region_map[r0:r1, c0:c1][instances.masks[i, r0:r1, c0:c1]]
        hist = np.bincount(labels.ravel(), minlength=size)
        hist[~is_site] = 0
        out.append(int(np.argmax(hist)) if hist.any() else 0)
    return out


def count_lesions_by_region(site_ids: list[int], taxonomy: Taxonomy) -> dict[str, int]:
    """Lesion count per report name of the site (region or decoy; ``other`` for lesions in
    none), in taxonomy order; sites without lesions are left out."""
    counts: dict[str, int] = {}
    for sid in site_ids:
        name = taxonomy.by_id(sid).report if sid else OTHER_REGION
        counts[name] = counts.get(name, 0) + 1
    order = [c.report for c in taxonomy.classes] + [OTHER_REGION]
    return {name: counts[name] for name in dict.fromkeys(order) if name in counts}


def is_abnormal(site_ids: list[int], taxonomy: Taxonomy) -> bool:
    """Whether any lesion lies outside the decoys: a "lesion" mostly inside a kidney or the
    bladder is reported apart and does not by itself make the scan abnormal."""
    decoys = set(taxonomy.decoy_ids)
    return any(sid not in decoys for sid in site_ids)
