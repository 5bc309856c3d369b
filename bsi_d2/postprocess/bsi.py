"""Bone Scan Index, BSTBI and lesion burden from label maps: NumPy in, NumPy/dicts out.

Conventions (DOMAIN.md section 5):
- ``region_map``: (H, W) int, the taxonomy class id of the skeletal region at each pixel, 0 for
  none. The merged image's left half is the anterior view, the right half the posterior one.
  Decoy ids found in it are not bone (older callers paint decoys into the same map).
- ``lesion_mask``: (H, W) bool, the lesion pixels to count (the lesion model's counted pixels:
  those of bone lesions on a skeletal region, :mod:`bsi_d2.postprocess.lesions`).
- involvement(bone, view) = lesion area inside the bone's region in that view / region area.
  The views are combined by a rule (:data:`COMBINE_RULES`) and weighted by the bone's share of
  skeletal mass; the two views' weights are never added.
- A bone found in one view only is assessed from that view ("one view"); a bone found in
  neither is "not assessed": its involvement and BSI are None, never 0, and the BSI sums the
  assessed bones only (``coverage`` says what share of the skeleton they carry).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from bsi_d2.preprocess.merge import VIEW_ORDER
from bsi_d2.taxonomy import Taxonomy

BSTBI_K = 5.0
# mean: seeds 000-003; max: the view that shows more; union: each lesion once, from the view
# where it covers more of the region (a lesion seen in one view counts in full);
# anterior / posterior: that view, the other where the bone is missing in it
COMBINE_RULES = ("mean", "max", "union", "anterior", "posterior")
ASSESSED_BOTH = "both views"
ASSESSED_ONE = "one view"
NOT_ASSESSED = "not assessed"
BURDEN_GROUPS = (("none", 0, 0), ("few", 1, 3), ("medium", 4, 6), ("extensive", 7, None))


@dataclass
class BoneInvolvement:
    bone: str
    weight: float  # percent of total skeletal mass
    region_pixels: dict[str, int]  # per view
    lesion_pixels: dict[str, int]  # per view, inside the region
    involvement_per_view: dict[str, float | None]  # None where the region is absent in that view
    involvement: float | None  # views combined, 0..1; None when not assessed
    bsi: float | None  # involvement x weight, percent; None when not assessed
    assessed: str = ASSESSED_BOTH  # ASSESSED_BOTH, ASSESSED_ONE or NOT_ASSESSED


@dataclass
class BSIResult:
    bsi: float | None  # percent of total skeletal mass; None when no bone was assessed
    bones: dict[str, BoneInvolvement]
    lesion_pixels_total: int
    lesion_pixels_in_regions: int
    lesion_pixels_in_decoys: int
    lesion_pixels_outside: int
    combine: str
    coverage: float = 0.0  # percent of skeletal mass carried by the assessed bones
    bstbi: float | None = None  # mean of the views' BSTBI
    bstbi_per_view: dict[str, float | None] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def view_columns(width: int) -> dict[str, slice]:
    """Column slices of each view in a merged image (anterior left, posterior right)."""
    half = width // 2
    return {VIEW_ORDER[0]: slice(0, half), VIEW_ORDER[1]: slice(half, width)}


def combine_views(
    values: dict[str, float | None], rule: str = "mean", per_lesion: np.ndarray | None = None
) -> float | None:
    """Combine per-view involvements; views where the region is absent are left out, and a
    region absent from both gives None. ``per_lesion`` ((N, views) involvement of each lesion
    per view, NaN where the region is absent) is what the union rule reads; without it the
    union rule sees all lesion pixels of a view as one lesion, which is the max rule."""
    if rule not in COMBINE_RULES:
        raise ValueError(f"combine rule {rule!r} is not one of {COMBINE_RULES}")
    present = {v: x for v, x in values.items() if x is not None}
    if not present:
        return None
    if rule == "mean":
        return float(np.mean(list(present.values())))
    if rule == "max" or (rule == "union" and per_lesion is None):
        return float(max(present.values()))
    if rule == "union":
        if per_lesion.size == 0:
            return 0.0
        return float(min(1.0, np.nansum(np.nanmax(per_lesion, axis=1))))
    return float(present.get(rule, np.mean(list(present.values()))))


def compute_bsi(
    region_map: np.ndarray,
    lesion_mask: np.ndarray,
    taxonomy: Taxonomy,
    combine: str = "mean",
    counts: np.ndarray | None = None,
    k: float = BSTBI_K,
    decoy_map: np.ndarray | None = None,
    lesion_labels: np.ndarray | None = None,
) -> BSIResult:
    """Per-bone involvement and the BSI; per-view BSTBI too where raw ``counts`` are given.

    ``decoy_map`` ((H, W) decoy class ids) may overlap bone; its burden-excluded classes
    (bladder) are BSTBI's B. ``lesion_labels`` ((H, W) int lesion ids, the same id in both views
    for a matched lesion) let the union rule take each lesion once.
    """
    region_map = np.asarray(region_map)
    lesion_mask = np.asarray(lesion_mask, dtype=bool)
    if region_map.shape != lesion_mask.shape:
        raise ValueError(
            f"region map {region_map.shape} and lesion mask {lesion_mask.shape} differ"
        )
    if region_map.size and region_map.min() < 0:
        raise ValueError("region map holds negative class ids")
    decoy_map = np.zeros_like(region_map) if decoy_map is None else np.asarray(decoy_map)
    bone_of_class = {c.id: c.bone for c in taxonomy.region_classes if c.bone}
    columns = view_columns(region_map.shape[1])
    size = max([int(region_map.max(initial=0)), int(decoy_map.max(initial=0)), *taxonomy.ids])
    size += 1
    # One histogram over codes (region id, lesion?, view) gives every pixel count needed.
    code = region_map.astype(np.int64 if size > 2**14 else np.uint16)
    code[lesion_mask] += size
    code[:, columns[VIEW_ORDER[1]]] += 2 * size
    hist = np.bincount(code.ravel(), minlength=4 * size).reshape(2, 2, size)  # view, lesion, id
    region_hist = {v: hist[k].sum(axis=0) for k, v in enumerate(VIEW_ORDER)}
    lesion_hist = {v: hist[k, 1] for k, v in enumerate(VIEW_ORDER)}
    lesion_flat = np.flatnonzero(lesion_mask)  # the few lesion pixels, for what follows
    per_lesion = _per_lesion_pixels(region_map, lesion_flat, lesion_labels, size, columns)
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
        fractions = None
        if per_lesion is not None:
            areas = np.array([region_px[v] or np.nan for v in columns], dtype=np.float64)
            fractions = per_lesion[:, :, ids].sum(axis=2) / areas
        involvement = combine_views(per_view, combine, fractions)
        present = sum(1 for v in per_view.values() if v is not None)
        assessed = (NOT_ASSESSED, ASSESSED_ONE, ASSESSED_BOTH)[min(present, 2)]
        bones[bone] = BoneInvolvement(
            bone,
            float(weight),
            region_px,
            lesion_px,
            per_view,
            involvement,
            None if involvement is None else involvement * weight,
            assessed,
        )
    lesion_by_id = sum(lesion_hist.values())
    total = int(np.count_nonzero(lesion_mask))
    in_regions = int(lesion_by_id[list(bone_of_class)].sum())
    decoy_ids = taxonomy.decoy_ids
    in_decoys = int(np.isin(decoy_map.ravel()[lesion_flat], decoy_ids).sum())
    in_decoys += int(lesion_by_id[decoy_ids].sum())  # decoys painted into the region map
    assessed_bones = [b for b in bones.values() if b.bsi is not None]
    result = BSIResult(
        bsi=float(sum(b.bsi for b in assessed_bones)) if assessed_bones else None,
        bones=bones,
        lesion_pixels_total=total,
        lesion_pixels_in_regions=in_regions,
        lesion_pixels_in_decoys=in_decoys,
        lesion_pixels_outside=total - in_regions - in_decoys,
        combine=combine,
        coverage=float(sum(b.weight for b in assessed_bones)),
    )
    if counts is not None:
        counts = np.asarray(counts, dtype=np.float64)
        exclude = np.zeros(size, dtype=bool)  # a lookup table: cheaper than isin per pixel
        exclude[taxonomy.burden_exclude_ids] = True
        excluded = exclude[decoy_map] | exclude[region_map]
        for view, cols in columns.items():
            result.bstbi_per_view[view] = compute_bstbi(
                counts[:, cols], lesion_mask[:, cols], excluded[:, cols], k
            )
        values = [v for v in result.bstbi_per_view.values() if v is not None]
        result.bstbi = float(np.mean(values)) if values else None
    return result


def _per_lesion_pixels(
    region_map: np.ndarray,
    lesion_flat: np.ndarray,
    lesion_labels: np.ndarray | None,
    size: int,
    columns: dict[str, slice],
) -> np.ndarray | None:
    """(lesions, views, class ids) counted pixels of each lesion, from the lesion pixels only
    (``lesion_flat``: their flat indices)."""
    if lesion_labels is None:
        return None
    lesion = np.asarray(lesion_labels).ravel()[lesion_flat].astype(np.int64)
    keep = lesion > 0
    lesion, flat = lesion[keep] - 1, lesion_flat[keep]
    n = int(lesion.max(initial=-1)) + 1
    if n == 0:
        return np.zeros((0, len(columns), size))
    posterior = (flat % region_map.shape[1]) >= columns[VIEW_ORDER[1]].start
    code = (lesion * 2 + posterior) * size + region_map.ravel()[flat].astype(np.int64)
    return np.bincount(code, minlength=n * 2 * size).reshape(n, 2, size).astype(np.float64)


def compute_bstbi(
    counts: np.ndarray,
    lesion_mask: np.ndarray,
    bladder_mask: np.ndarray | None = None,
    k: float = BSTBI_K,
) -> float | None:
    """Seed 002's bone scan tumour burden index of one view on raw counts, in [0, 1]:
    K * sum_L u / ((K - 1) * sum_L u + sum_R u - sum_B u), with the bladder's pixels B left out
    of L; None for a view without counts."""
    u = np.asarray(counts, dtype=np.float64)
    lesion = np.asarray(lesion_mask, dtype=bool)
    bladder_sum = 0.0
    if bladder_mask is not None:
        bladder = np.asarray(bladder_mask, dtype=bool)
        lesion = lesion & ~bladder
        bladder_sum = float(u[bladder].sum())
    lesion_sum = float(u[lesion].sum())
    denominator = (k - 1.0) * lesion_sum + float(u.sum()) - bladder_sum
    if denominator <= 0:
        return None if lesion_sum <= 0 and float(u.sum()) <= 0 else 0.0
    # non-negative counts keep it in [0, 1]; the clip guards against rounding only
    return float(np.clip(k * lesion_sum / denominator, 0.0, 1.0))


def burden_group(lesion_count: int) -> str:
    """Seed 004's lesion-burden group: none, few (1-3), medium (4-6) or extensive (> 6)."""
    for name, lo, hi in BURDEN_GROUPS:
        if lesion_count >= lo and (hi is None or lesion_count <= hi):
            return name
    raise ValueError(f"negative lesion count {lesion_count}")
