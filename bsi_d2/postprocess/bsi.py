"""Bone Scan Index, BSTBI and lesion burden from label maps: NumPy in, NumPy/dicts out.

Conventions (DOMAIN.md section 5):
- ``region_map``: (H, W) int, the taxonomy class id of the region or decoy at each pixel, 0 for
  none. The merged image's left half is the anterior view, the right half the posterior one.
- ``lesion_mask``: (H, W) bool, every lesion pixel, regardless of region.
- involvement(bone, view) = lesion area inside the bone's region in that view / region area;
  the views are combined (mean by default) and weighted by the bone's share of skeletal mass.
  The two views' weights are never added.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from bsi_d2.preprocess.merge import VIEW_ORDER
from bsi_d2.taxonomy import Taxonomy

BSTBI_K = 5.0
COMBINE_RULES = ("mean", "max", "anterior", "posterior")
BURDEN_GROUPS = (("none", 0, 0), ("few", 1, 3), ("medium", 4, 6), ("extensive", 7, None))


@dataclass
class BoneInvolvement:
    bone: str
    weight: float  # percent of total skeletal mass
    region_pixels: dict[str, int]  # per view
    lesion_pixels: dict[str, int]  # per view, inside the region
    involvement_per_view: dict[str, float | None]  # None where the region is absent in that view
    involvement: float  # views combined, 0..1
    bsi: float  # involvement x weight, percent


@dataclass
class BSIResult:
    bsi: float  # percent of total skeletal mass
    bones: dict[str, BoneInvolvement]
    lesion_pixels_total: int
    lesion_pixels_in_regions: int
    lesion_pixels_in_decoys: int
    lesion_pixels_outside: int
    combine: str
    bstbi: float | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def view_columns(width: int) -> dict[str, slice]:
    """Column slices of each view in a merged image (anterior left, posterior right)."""
    half = width // 2
    return {VIEW_ORDER[0]: slice(0, half), VIEW_ORDER[1]: slice(half, width)}


def combine_views(values: dict[str, float | None], rule: str = "mean") -> float:
    """Combine per-view involvements; views where the region is absent are left out."""
    if rule not in COMBINE_RULES:
        raise ValueError(f"combine rule {rule!r} is not one of {COMBINE_RULES}")
    present = {v: x for v, x in values.items() if x is not None}
    if not present:
        return 0.0
    if rule == "mean":
        return float(np.mean(list(present.values())))
    if rule == "max":
        return float(max(present.values()))
    return float(present.get(rule, np.mean(list(present.values()))))


def compute_bsi(
    region_map: np.ndarray,
    lesion_mask: np.ndarray,
    taxonomy: Taxonomy,
    combine: str = "mean",
    counts: np.ndarray | None = None,
    k: float = BSTBI_K,
) -> BSIResult:
    """Per-bone involvement and the BSI; BSTBI too where raw ``counts`` are given."""
    region_map = np.asarray(region_map)
    lesion_mask = np.asarray(lesion_mask, dtype=bool)
    if region_map.shape != lesion_mask.shape:
        raise ValueError(
            f"region map {region_map.shape} and lesion mask {lesion_mask.shape} differ"
        )
    if region_map.size and region_map.min() < 0:
        raise ValueError("region map holds negative class ids")
    bone_of_class = {c.id: c.bone for c in taxonomy.region_classes if c.bone}
    columns = view_columns(region_map.shape[1])
    size = max([int(region_map.max(initial=0)), *taxonomy.ids]) + 1
    # One histogram over codes (region id, lesion?, view) gives every pixel count needed.
    code = region_map.astype(np.int64 if size > 2**14 else np.uint16)
    code[lesion_mask] += size
    code[:, columns[VIEW_ORDER[1]]] += 2 * size
    hist = np.bincount(code.ravel(), minlength=4 * size).reshape(2, 2, size)  # view, lesion, id
    region_hist = {v: hist[k].sum(axis=0) for k, v in enumerate(VIEW_ORDER)}
    lesion_hist = {v: hist[k, 1] for k, v in enumerate(VIEW_ORDER)}
    bones: dict[str, BoneInvolvement] = {}
    for bone, weight in taxonomy.weights.items():
        ids = [cid for cid, b in bone_of_class.items() if b == bone]
        region_px: dict[str, int] = {}
        lesion_px: dict[str, int] = {}
        per_view: dict[str, float | None] = {}
        for view in columns:
            area = int(region_hist[view][ids].sum())
            hit = int(lesion_hist[view][ids].sum())
            region_px[view], lesion_px[view] = area, hit
            per_view[view] = hit / area if area else None
        involvement = combine_views(per_view, combine)
        bones[bone] = BoneInvolvement(
            bone, float(weight), region_px, lesion_px, per_view, involvement, involvement * weight
        )
    lesion_by_id = sum(lesion_hist.values())
    total = int(np.count_nonzero(lesion_mask))
    in_regions = int(lesion_by_id[list(bone_of_class)].sum())
    in_decoys = int(lesion_by_id[taxonomy.decoy_ids].sum())
    result = BSIResult(
        bsi=float(sum(b.bsi for b in bones.values())),
        bones=bones,
        lesion_pixels_total=total,
        lesion_pixels_in_regions=in_regions,
        lesion_pixels_in_decoys=in_decoys,
        lesion_pixels_outside=total - in_regions - in_decoys,
        combine=combine,
    )
    if counts is not None:
        exclude_ids = taxonomy.burden_exclude_ids
        excluded = np.isin(region_map, exclude_ids) if exclude_ids else None
        result.bstbi = compute_bstbi(counts, lesion_mask, excluded, k)
    return result


def compute_bstbi(
    counts: np.ndarray,
    lesion_mask: np.ndarray,
    bladder_mask: np.ndarray | None = None,
    k: float = BSTBI_K,
) -> float:
    """Seed 002's bone scan tumour burden index on raw counts, in [0, 1]:
    K * sum_L u / ((K - 1) * sum_L u + sum_R u - sum_B u)."""
    u = np.asarray(counts, dtype=np.float64)
    lesion_sum = float(u[np.asarray(lesion_mask, dtype=bool)].sum())
    bladder_sum = float(u[bladder_mask].sum()) if bladder_mask is not None else 0.0
    denominator = (k - 1.0) * lesion_sum + float(u.sum()) - bladder_sum
    return k * lesion_sum / denominator if denominator > 0 else 0.0


def burden_group(lesion_count: int) -> str:
    """Seed 004's lesion-burden group: none, few (1-3), medium (4-6) or extensive (> 6)."""
    for name, lo, hi in BURDEN_GROUPS:
        if lesion_count >= lo and (hi is None or lesion_count <= hi):
            return name
    raise ValueError(f"negative lesion count {lesion_count}")
