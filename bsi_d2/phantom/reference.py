"""The reference BSI of a phantom from its generative geometry, apart from the post-processing.

Each metastasis is a shape on a known bone in the body frame. Its involvement of that bone's BSI
region is an area fraction computed with shapely (no rasterisation, no views, no code from
``bsi_d2.postprocess``); the BSI is the weighted sum over regions, with the weights of the
taxonomy file. The image-space truth beside it (the masks an annotator draws in each view,
combined by the toolkit's view rule) is the other half of the truth; how far the two differ is
what projection, blur, visibility and the view rule do to the number.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

METHOD = "area fraction of each BSI region in the body frame (shapely), weighted by bone mass"


def geometric_reference(
    regions: Mapping[str, BaseGeometry],
    lesions: Iterable,
    weights: Mapping[str, float],
    labelled: set[int] | None = None,
) -> dict:
    """Reference involvement and BSI of ``lesions`` (objects with ``lesion_id``, ``bone`` and
    ``outline``) over ``regions`` (bone key -> outline in the same frame).

    A lesion counts in the region of the bone it lies on, wherever it projects; overlapping
    lesions count once. ``labelled`` (lesion ids an annotator drew in at least one view) gives
    ``bsi_labelled`` beside ``bsi`` (all metastases, seen or not).
    """
    lesions = list(lesions)
    everywhere = unary_union(list(regions.values())) if regions else None

    def involvement(subset: list) -> dict[str, float]:
        out = {}
        for bone, region in regions.items():
            if bone not in weights or region.is_empty:
                continue
            shapes = [m.outline for m in subset if m.bone == bone]
            inside = unary_union(shapes).intersection(region) if shapes else None
            out[bone] = float(inside.area / region.area) if inside is not None else 0.0
        return out

    def bsi(inv: dict[str, float]) -> float:
        return float(sum(weights[b] * v for b, v in inv.items()))

    inv_all = involvement(lesions)
    seen = [m for m in lesions if labelled is None or m.lesion_id in labelled]
    inv_seen = involvement(seen)
    outside = [
        m.lesion_id
        for m in lesions
        if m.bone not in regions or everywhere is None or not m.outline.intersects(everywhere)
    ]
    return {
        "method": METHOD,
        "bsi": bsi(inv_all),
        "bsi_per_bone": {b: weights[b] * v for b, v in inv_all.items()},
        "involvement": inv_all,
        "bsi_labelled": bsi(inv_seen),
        "metastases": len(lesions),
        "metastases_labelled": len(seen),
        "outside_regions": outside,
    }
