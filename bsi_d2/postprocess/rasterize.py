"""Instances -> label maps: score thresholds, the region map and the lesion mask. NumPy only.

Every instance is touched through the bounding box of its mask, never as a full image, so a
scan with tens of instances costs little more than the pixels they cover.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import Taxonomy

DEFAULT_SCORE_THRESH = 0.5


def parse_class_thresholds(items: list[str] | list[list[Any]]) -> dict[str, float]:
    """``["lesion=0.3", ...]`` or the config's ``[["lesion", 0.3], ...]`` -> {class: thresh}."""
    out: dict[str, float] = {}
    for item in items:
        if isinstance(item, str):
            name, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"class threshold {item!r} is not CLASS=VALUE")
        else:
            name, value = item
        try:
            out[str(name).strip()] = float(value)
        except ValueError:
            raise ValueError(f"class threshold {item!r}: {value!r} is not a number") from None
    return out


def class_thresholds(
    taxonomy: Taxonomy,
    score_thresh: float = DEFAULT_SCORE_THRESH,
    class_thresh: Mapping[int | str, float] | None = None,
) -> np.ndarray:
    """Threshold per class id as a lookup array (index = class id); ``class_thresh`` keys may be
    class ids or class names and override ``score_thresh`` for those classes."""
    table = np.full(max(taxonomy.ids) + 1, float(score_thresh), dtype=np.float64)
    for cls, value in (class_thresh or {}).items():
        try:
            cid = taxonomy.by_name(cls).id if isinstance(cls, str) else taxonomy.by_id(cls).id
        except KeyError:
            raise ValueError(f"class threshold for unknown class {cls!r}") from None
        table[cid] = float(value)
    return table


def kind_threshold(
    taxonomy: Taxonomy,
    kind: str,
    score_thresh: float = DEFAULT_SCORE_THRESH,
    class_thresh: Mapping[int | str, float] | None = None,
) -> float:
    """The one threshold of the classes of ``kind`` (e.g. "lesion"), as :func:`class_thresholds`
    resolves it; ``score_thresh`` when the taxonomy has no class of that kind. ValueError when
    those classes have different thresholds, which no single operating point can stand for."""
    table = class_thresholds(taxonomy, score_thresh, class_thresh)
    ids = [c.id for c in taxonomy.of_kind(kind)]
    values = sorted({float(table[cid]) for cid in ids})
    if len(values) > 1:
        names = ", ".join(taxonomy.by_id(cid).name for cid in ids)
        raise ValueError(f"the {kind} classes ({names}) have different score thresholds {values}")
    return values[0] if values else float(score_thresh)


def passes_thresholds(
    category_ids: np.ndarray,
    scores: np.ndarray,
    taxonomy: Taxonomy,
    score_thresh: float = DEFAULT_SCORE_THRESH,
    class_thresh: Mapping[int | str, float] | None = None,
) -> np.ndarray:
    """(N,) bool: instances of known classes whose score reaches their class's threshold."""
    table = class_thresholds(taxonomy, score_thresh, class_thresh)
    ids = np.asarray(category_ids, dtype=np.int64)
    known = np.isin(ids, taxonomy.ids)
    thresh = np.where(known, table[np.clip(ids, 0, len(table) - 1)], np.inf)
    return np.asarray(scores, dtype=np.float64) >= thresh


def filter_by_score(
    instances: Instances,
    taxonomy: Taxonomy,
    score_thresh: float = DEFAULT_SCORE_THRESH,
    class_thresh: Mapping[int | str, float] | None = None,
) -> Instances:
    """The instances that pass :func:`passes_thresholds`."""
    keep = passes_thresholds(
        instances.category_ids, instances.scores, taxonomy, score_thresh, class_thresh
    )
    return instances if keep.all() else instances.select(keep)


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """(N, 4) int64 tight boxes [r0, r1, c0, c1) of (N, H, W) bool masks; empty masks give zeros."""
    masks = np.asarray(masks, dtype=bool)
    n, height, width = masks.shape
    out = np.zeros((n, 4), dtype=np.int64)
    if n == 0:
        return out
    if width % 8 == 0 and masks.flags.c_contiguous:
        # eight pixels per 64-bit word: the row scan reads whole words
        rows = masks.reshape(n, height, width // 8, 8).view(np.uint64)[..., 0].any(axis=2)
    else:
        rows = masks.any(axis=2)
    for i in range(n):
        r = np.flatnonzero(rows[i])
        if r.size == 0:
            continue
        c = np.flatnonzero(masks[i, r[0] : r[-1] + 1].any(axis=0))
        out[i] = (r[0], r[-1] + 1, c[0], c[-1] + 1)
    return out


def _paint_order(scores: np.ndarray) -> np.ndarray:
    """Indices in painting order: ascending score, so the highest score is painted last and
    wins; among equal scores the earlier instance is painted last and wins."""
    index = np.arange(len(scores))
    return np.lexsort((-index, scores))


def rasterize_regions(
    instances: Instances,
    taxonomy: Taxonomy,
    boxes: np.ndarray | None = None,
    kinds: tuple[str, ...] = ("region", "decoy"),
) -> np.ndarray:
    """(H, W) uint8 map of the instances of the classes of ``kinds`` (class id, 0 for none);
    where instances overlap the higher score wins. ``boxes`` are :func:`mask_boxes`, if known.
    Post-processing rasterises skeletal regions and decoys into separate maps, so a decoy
    never hides the bone under it."""
    if max(taxonomy.ids) > 255:
        raise ValueError("class ids above 255 do not fit the uint8 region map")
    region_map = np.zeros((instances.height, instances.width), dtype=np.uint8)
    area_ids = [c.id for c in taxonomy.classes if c.kind in kinds]
    boxes = mask_boxes(instances.masks) if boxes is None else boxes
    ids = np.asarray(instances.category_ids)
    for i in _paint_order(np.asarray(instances.scores, dtype=np.float64)):
        if ids[i] not in area_ids:
            continue
        r0, r1, c0, c1 = boxes[i]
        if r1 <= r0:
            continue
        crop = region_map[r0:r1, c0:c1]
        crop[instances.masks[i, r0:r1, c0:c1]] = ids[i]
    return region_map


def lesion_union(
    instances: Instances, taxonomy: Taxonomy, boxes: np.ndarray | None = None
) -> np.ndarray:
    """(H, W) bool union of every lesion instance's mask."""
    lesion_mask = np.zeros((instances.height, instances.width), dtype=bool)
    boxes = mask_boxes(instances.masks) if boxes is None else boxes
    for i in np.flatnonzero(np.isin(instances.category_ids, taxonomy.lesion_ids)):
        r0, r1, c0, c1 = boxes[i]
        lesion_mask[r0:r1, c0:c1] |= instances.masks[i, r0:r1, c0:c1]
    return lesion_mask


def label_image(region_map: np.ndarray, lesion_mask: np.ndarray, lesion_id: int) -> np.ndarray:
    """uint8 label image for ``labelmap.png``: region ids with lesion pixels as ``lesion_id``."""
    out = np.asarray(region_map, dtype=np.uint8).copy()
    out[np.asarray(lesion_mask, dtype=bool)] = lesion_id
    return out
