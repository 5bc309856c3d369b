"""Matching lesions across views so a lesion seen in both counts once (seed 003). NumPy/SciPy.

The posterior view is a mirror image of the anterior one: a posterior point mirrored about the
posterior half's body midline and moved onto the anterior half's midline lands where the same
structure appears anteriorly (rows are shared: the merge aligns the views row for row).
"""

from __future__ import annotations

import numpy as np

from bsi_d2.postprocess.rasterize import mask_boxes
from bsi_d2.preprocess.merge import VIEW_ORDER
from bsi_d2.structures.instances import Instances

DEFAULT_MATCH_RADIUS = 20.0  # pixels, about 45 mm at 2.2-2.4 mm per pixel


def instance_centroids(
    instances: Instances, boxes: np.ndarray | None = None, index: np.ndarray | None = None
) -> np.ndarray:
    """(K, 2) float64 centroids (row, col) of the masks of instances ``index`` (default all);
    box centres for empty masks."""
    index = np.arange(len(instances)) if index is None else np.asarray(index, dtype=np.int64)
    if boxes is None:
        boxes = np.zeros((len(instances), 4), np.int64)
        boxes[index] = mask_boxes(instances.masks[index])
    out = np.zeros((len(index), 2), dtype=np.float64)
    for k, i in enumerate(index):
        r0, r1, c0, c1 = boxes[i]
        rr, cc = np.nonzero(instances.masks[i, r0:r1, c0:c1])
        if rr.size:
            out[k] = (rr.mean() + r0, cc.mean() + c0)
        else:
            x0, y0, x1, y1 = np.asarray(instances.boxes[i], dtype=np.float64)
            out[k] = (0.5 * (y0 + y1), 0.5 * (x0 + x1))
    return out


def view_midlines(region_map: np.ndarray) -> dict[str, float]:
    """Body midline column of each half of the merged image: the mean column of its region
    pixels, or the half's centre (where preprocessing centres the body) if it has none."""
    width = region_map.shape[1]
    half = width // 2
    # every 4th row: a midline estimate needs no more, and this runs on every scan
    per_column = np.count_nonzero(region_map[::4], axis=0)
    out = {}
    for view, (start, stop) in zip(VIEW_ORDER, ((0, half), (half, width)), strict=True):
        weights = per_column[start:stop]
        total = int(weights.sum())
        if total:
            out[view] = float(np.dot(weights, np.arange(start, stop)) / total)
        else:
            out[view] = 0.5 * (start + stop - 1)
    return out


def mirror_to_anterior(points: np.ndarray, midlines: dict[str, float]) -> np.ndarray:
    """Posterior (row, col) points mirrored about the posterior midline, onto the anterior half."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    mirrored = points.copy()
    mirrored[:, 1] = midlines[VIEW_ORDER[0]] + midlines[VIEW_ORDER[1]] - points[:, 1]
    return mirrored


def match_points(
    anterior: np.ndarray, posterior_mirrored: np.ndarray, radius: float = DEFAULT_MATCH_RADIUS
) -> list[tuple[int, int]]:
    """Pairs (i, j) of anterior point i and mirrored posterior point j, one-to-one, at most
    ``radius`` apart, minimising the summed distance plus ``radius / 2`` for each point left
    unpaired (:func:`assign_pairs`).

    So a pair is made only where it saves distance: of two lesions near each other, a close
    pair is kept and the others stay single, rather than forcing as many pairs as fit inside
    the radius (which would pair a lesion with its neighbour's other view)."""
    a = np.asarray(anterior, dtype=np.float64).reshape(-1, 2)
    p = np.asarray(posterior_mirrored, dtype=np.float64).reshape(-1, 2)
    dist = np.linalg.norm(a[:, None, :] - p[None, :, :], axis=2)
    return assign_pairs(dist, dist <= radius, 0.5 * radius)


def assign_pairs(cost: np.ndarray, allowed: np.ndarray, single: float) -> list[tuple[int, int]]:
    """One-to-one pairs (i, j) with ``allowed[i, j]``, minimising the summed ``cost`` plus
    ``single`` for each row or column left unpaired (the matrix padded with "unpaired" rows and
    columns, solved by the Hungarian algorithm): a pair is made only where it costs less than
    leaving both alone."""
    from scipy.optimize import linear_sum_assignment

    n, m = cost.shape
    if n == 0 or m == 0:
        return []
    # dearer than leaving every row and column unpaired
    forbidden = (float(np.max(cost, where=allowed, initial=0.0)) + 2 * single) * (n + m + 1) + 1.0
    padded = np.full((n + m, m + n), forbidden)
    padded[:n, :m] = np.where(allowed, cost, forbidden)
    padded[np.arange(n), m + np.arange(n)] = single
    padded[n + np.arange(m), np.arange(m)] = single
    padded[n:, m:] = 0.0
    rows, cols = linear_sum_assignment(padded)
    return [
        (int(i), int(j))
        for i, j in zip(rows, cols, strict=True)
        if i < n and j < m and allowed[i, j]
    ]


def count_matched_lesions(
    centroids: np.ndarray,
    views: list[str],
    midlines: dict[str, float],
    radius: float = DEFAULT_MATCH_RADIUS,
) -> tuple[int, list[tuple[int, int]]]:
    """Lesion count with lesions seen in both views counted once, and the matched pairs as
    indices into ``centroids`` (anterior, posterior)."""
    views_arr = np.asarray(views)
    ant = np.flatnonzero(views_arr == VIEW_ORDER[0])
    post = np.flatnonzero(views_arr == VIEW_ORDER[1])
    pairs = match_points(centroids[ant], mirror_to_anterior(centroids[post], midlines), radius)
    matched = [(int(ant[i]), int(post[j])) for i, j in pairs]
    return len(centroids) - len(matched), matched
