"""Assignment of instances to views. NumPy only. (Lesions are assigned to sites by the lesion
model, :mod:`bsi_d2.postprocess.lesions`.)"""

from __future__ import annotations

import numpy as np

from bsi_d2.postprocess.rasterize import mask_boxes
from bsi_d2.preprocess.merge import VIEW_ORDER
from bsi_d2.structures.instances import Instances


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
