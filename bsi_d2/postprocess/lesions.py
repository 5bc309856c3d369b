"""The one lesion model of a scan: each lesion found once, assigned once. NumPy/SciPy only.

Every lesion output of a scan — ``abnormal``, the sites sentence, lesion count, burden group,
per-region involvement, BSI and BSTBI — reads :class:`LesionModel`, so they cannot disagree.

Rules, in order:

1. **Appearances.** Kept lesion instances whose masks overlap by at least half of the smaller
   one are one appearance (their union): a model's duplicate or nested detections of one hot
   spot count once, while two confluent lesions that merely touch or overlap a little stay two.
2. **Lesions.** Appearances are matched across views (seed 003; Hungarian matching of
   centroids after mirroring the posterior view, :mod:`bsi_d2.postprocess.match`), so a lesion
   seen in both views is one lesion. With matching off, each appearance is a lesion.
3. **Site.** A lesion every pixel of which lies inside decoy regions (kidney, bladder) is decoy
   uptake, assigned to the decoy holding most of it. Otherwise a lesion with any pixel on a
   skeletal region is a bone lesion, assigned to the region class holding most of its bone
   pixels; where bone and a decoy overlap, the pixel is bone. A lesion on no skeletal region
   lies "outside" (reported as "other": forearm, tibia, soft tissue).
4. **Counted pixels.** The pixels of bone lesions that lie on a skeletal region, and only
   those, form the BSI's numerator and BSTBI's L.
5. A scan is abnormal when it has a bone or outside lesion; the lesion count and burden group
   count those lesions (decoy uptake is reported apart).

The same rules, given the benign class's ids as ``class_ids``, find the hot spots a model judges
benign (:func:`build_benign_model`); they are never counted in the BSI.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bsi_d2.postprocess.match import (
    DEFAULT_MATCH_RADIUS,
    count_matched_lesions,
    view_midlines,
)
from bsi_d2.postprocess.rasterize import mask_boxes
from bsi_d2.preprocess.merge import VIEW_ORDER
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import Taxonomy

SITE_BONE = "bone"
SITE_DECOY = "decoy"
SITE_OUTSIDE = "outside"
OTHER_SITE = "other"  # report name of the site of outside lesions (seed 002's template)
DUPLICATE_OVERLAP = 0.5  # shared pixels / smaller mask from which two lesion masks are one


@dataclass
class Lesion:
    """One lesion: one or two appearances (anterior, posterior) of the same hot spot."""

    id: int  # 1-based; the value of its pixels in ``LesionModel.labels``
    instances: list[int]  # indices into the kept instances
    views: list[str]
    score: float  # highest score of its instances
    site: str  # SITE_BONE, SITE_DECOY or SITE_OUTSIDE
    site_class: int  # class id of its region or decoy; 0 outside
    pixels: dict[str, int]  # per view, all its pixels
    counted: dict[str, int]  # per view, its pixels counted in the BSI (0 unless a bone lesion)
    # per view it is seen in, merged-image pixel coordinates: centroid [x, y] (to 0.1 pixel)
    # and box [x0, y0, x1, y1) of its appearance there; what follow-up matches lesions by
    centroid: dict[str, list[float]] = field(default_factory=dict)
    bbox: dict[str, list[int]] = field(default_factory=dict)

    def to_dict(self, taxonomy: Taxonomy) -> dict:
        return {
            "id": self.id,
            "site": self.site,
            "site_name": site_name(self, taxonomy),
            "views": list(self.views),
            "score": float(self.score),
            "pixels": dict(self.pixels),
            "counted_pixels": dict(self.counted),
            "centroid": {view: list(xy) for view, xy in self.centroid.items()},
            "bbox": {view: list(box) for view, box in self.bbox.items()},
        }


@dataclass
class LesionModel:
    lesions: list[Lesion]
    labels: np.ndarray  # (H, W) int32: lesion id of each pixel, 0 for none
    counted: np.ndarray  # (H, W) bool: the pixels counted in the BSI
    matched: bool  # whether appearances were matched across views
    instances_used: int  # lesion instances with at least one pixel
    pairs: list[tuple[int, int]] = field(default_factory=list)  # matched (anterior, posterior)

    def of_site(self, *sites: str) -> list[Lesion]:
        return [les for les in self.lesions if les.site in sites]

    @property
    def count(self) -> int:
        """Lesions that count for the burden: on bone or outside, not decoy uptake."""
        return len(self.of_site(SITE_BONE, SITE_OUTSIDE))

    def pixels_where(self, *sites: str) -> int:
        return sum(sum(les.pixels.values()) for les in self.of_site(*sites))


def site_name(lesion: Lesion, taxonomy: Taxonomy) -> str:
    """Report name of a lesion's site: its region's or decoy's, or "other"."""
    return taxonomy.by_id(lesion.site_class).report if lesion.site_class else OTHER_SITE


def _union_find(n: int):
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)

    return find, union


def _appearances(
    kept: Instances, lesion_index: np.ndarray, boxes: np.ndarray
) -> tuple[list[list[int]], np.ndarray]:
    """Groups of lesion instances that are one hot spot (see :data:`DUPLICATE_OVERLAP`), and
    the (H, W) int32 map of group number + 1 (0 for none); where two groups share a pixel the
    higher-scoring instance keeps it. Instances with empty masks are left out."""
    nonempty = [int(i) for i in lesion_index if boxes[i][1] > boxes[i][0]]
    find, union = _union_find(len(nonempty))
    areas = [int(np.count_nonzero(kept.masks[i])) for i in nonempty]
    for a in range(len(nonempty)):
        ra0, ra1, ca0, ca1 = boxes[nonempty[a]]
        for b in range(a + 1, len(nonempty)):
            rb0, rb1, cb0, cb1 = boxes[nonempty[b]]
            r0, r1, c0, c1 = max(ra0, rb0), min(ra1, rb1), max(ca0, cb0), min(ca1, cb1)
            if r1 <= r0 or c1 <= c0:
                continue
            shared = np.count_nonzero(
                kept.masks[nonempty[a], r0:r1, c0:c1] & kept.masks[nonempty[b], r0:r1, c0:c1]
            )
            if shared >= DUPLICATE_OVERLAP * min(areas[a], areas[b]):
                union(a, b)
    roots = sorted({find(k) for k in range(len(nonempty))})
    group_of_root = {r: g for g, r in enumerate(roots)}
    groups: list[list[int]] = [[] for _ in roots]
    group_map = np.zeros((kept.height, kept.width), dtype=np.int32)
    scores = np.asarray(kept.scores, dtype=np.float64)
    for k in sorted(range(len(nonempty)), key=lambda k: scores[nonempty[k]]):
        i = nonempty[k]
        r0, r1, c0, c1 = boxes[i]
        group_map[r0:r1, c0:c1][kept.masks[i, r0:r1, c0:c1]] = group_of_root[find(k)] + 1
    for k, i in enumerate(nonempty):
        groups[group_of_root[find(k)]].append(i)
    return groups, group_map


def _view_of_pixels(columns: np.ndarray, half: int) -> str:
    """Anterior if most pixels lie in the left half (a tie goes anterior)."""
    left = int(np.count_nonzero(columns < half))
    return VIEW_ORDER[0] if 2 * left >= columns.size else VIEW_ORDER[1]


def build_lesion_model(
    kept: Instances,
    region_map: np.ndarray,
    decoy_map: np.ndarray,
    taxonomy: Taxonomy,
    match_views: bool = True,
    match_radius: float = DEFAULT_MATCH_RADIUS,
    boxes: np.ndarray | None = None,
    class_ids: list[int] | None = None,
) -> LesionModel:
    """Appearances, lesions and their sites (see the module docstring) of a scan's kept
    instances on its skeletal ``region_map`` and ``decoy_map`` ((H, W) class ids, 0 none);
    ``class_ids`` are the classes taken as lesions (default: the taxonomy's lesion classes)."""
    boxes = mask_boxes(kept.masks) if boxes is None else boxes
    height, width = kept.height, kept.width
    half = width // 2
    ids = taxonomy.lesion_ids if class_ids is None else list(class_ids)
    lesion_index = np.flatnonzero(np.isin(kept.category_ids, ids))
    groups, group_map = _appearances(kept, lesion_index, boxes)

    # one pass over the lesion pixels only: their group, column, region and decoy
    flat = np.flatnonzero(group_map)
    pix_group = group_map.ravel()[flat] - 1
    pix_col = flat % width
    pix_region = np.asarray(region_map).ravel()[flat].astype(np.int64)
    pix_decoy = np.asarray(decoy_map).ravel()[flat].astype(np.int64)
    order = np.argsort(pix_group, kind="stable")
    starts = np.searchsorted(pix_group[order], np.arange(len(groups) + 1))

    views = []
    centroids = np.zeros((len(groups), 2), dtype=np.float64)
    group_boxes = np.zeros((len(groups), 4), dtype=np.int64)  # x0, y0, x1, y1 (exclusive)
    for g in range(len(groups)):
        sel = order[starts[g] : starts[g + 1]]
        rows, cols = flat[sel] // width, pix_col[sel]
        views.append(_view_of_pixels(cols, half))
        centroids[g] = (float(np.mean(rows)), float(np.mean(cols)))
        group_boxes[g] = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)

    pairs: list[tuple[int, int]] = []
    if match_views and len(groups) > 1:
        _, pairs = count_matched_lesions(centroids, views, view_midlines(region_map), match_radius)
    posterior_of = dict(pairs)  # anterior appearance -> its matched posterior one
    paired = set(posterior_of.values())
    members = [
        [g, *([posterior_of[g]] if g in posterior_of else [])]
        for g in range(len(groups))
        if g not in paired
    ]

    size = max([int(region_map.max(initial=0)), int(decoy_map.max(initial=0)), *taxonomy.ids]) + 1
    is_region = np.zeros(size, dtype=bool)
    is_region[[c.id for c in taxonomy.region_classes]] = True
    is_decoy = np.zeros(size, dtype=bool)
    is_decoy[taxonomy.decoy_ids] = True
    on_bone = is_region[pix_region]
    in_decoy = is_decoy[pix_decoy]

    lesions: list[Lesion] = []
    group_to_lesion = np.zeros(len(groups) + 1, dtype=np.int32)  # index: group number + 1
    for lesion_id, member in enumerate(sorted(members, key=min), start=1):
        sel = np.concatenate([order[starts[g] : starts[g + 1]] for g in member])
        bone_px = np.bincount(pix_region[sel][on_bone[sel]], minlength=size)
        if in_decoy[sel].all():
            site = SITE_DECOY
            site_class = int(np.argmax(np.bincount(pix_decoy[sel], minlength=size)))
        elif bone_px.any():
            site, site_class = SITE_BONE, int(np.argmax(bone_px))
        else:
            site, site_class = SITE_OUTSIDE, 0
        anterior = pix_col[sel] < half
        counted = on_bone[sel] if site == SITE_BONE else np.zeros(sel.size, dtype=bool)
        instance_ids = sorted(i for g in member for i in groups[g])
        by_view = sorted(member, key=lambda g: VIEW_ORDER.index(views[g]))
        lesions.append(
            Lesion(
                id=lesion_id,
                instances=instance_ids,
                views=[views[g] for g in by_view],
                score=float(kept.scores[instance_ids].max()),
                site=site,
                site_class=site_class,
                pixels={
                    VIEW_ORDER[0]: int(np.count_nonzero(anterior)),
                    VIEW_ORDER[1]: int(np.count_nonzero(~anterior)),
                },
                counted={
                    VIEW_ORDER[0]: int(np.count_nonzero(counted & anterior)),
                    VIEW_ORDER[1]: int(np.count_nonzero(counted & ~anterior)),
                },
                centroid={
                    views[g]: [round(float(centroids[g, 1]), 1), round(float(centroids[g, 0]), 1)]
                    for g in by_view
                },
                bbox={views[g]: [int(v) for v in group_boxes[g]] for g in by_view},
            )
        )
        group_to_lesion[[g + 1 for g in member]] = lesion_id

    # only the lesion pixels are touched: a full-image lookup would cost more than the rest
    labels = np.zeros((height, width), dtype=np.int32)
    pix_lesion = group_to_lesion[pix_group + 1]
    labels.ravel()[flat] = pix_lesion
    bone_lesion = np.zeros(len(lesions) + 1, dtype=bool)
    bone_lesion[[les.id for les in lesions if les.site == SITE_BONE]] = True
    counted_mask = np.zeros((height, width), dtype=bool)
    counted_mask.ravel()[flat[bone_lesion[pix_lesion] & on_bone]] = True
    return LesionModel(
        lesions=lesions,
        labels=labels,
        counted=counted_mask,
        matched=bool(match_views),
        instances_used=sum(len(g) for g in groups),
        pairs=[(groups[a][0], groups[p][0]) for a, p in pairs],
    )


def build_benign_model(
    kept: Instances,
    region_map: np.ndarray,
    decoy_map: np.ndarray,
    taxonomy: Taxonomy,
    match_views: bool = True,
    match_radius: float = DEFAULT_MATCH_RADIUS,
    boxes: np.ndarray | None = None,
) -> LesionModel:
    """The hot spots the model judges benign (the taxonomy's benign class), found and sited by
    the lesion rules: on bone, outside, or inside another decoy (kidney, bladder). The benign
    masks are left out of ``decoy_map`` here, or each would lie inside itself. Its ``counted``
    pixels are where such a hot spot lies on bone: they are never a part of the BSI."""
    benign = taxonomy.benign_ids
    others = np.where(np.isin(decoy_map, benign), 0, decoy_map) if benign else decoy_map
    return build_lesion_model(
        kept, region_map, others, taxonomy, match_views, match_radius, boxes, class_ids=benign
    )
