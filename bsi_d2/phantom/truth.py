"""Ground truth of a phantom: annotator-like polygons, exact masks and the true BSI.

The polygons written to Labelme are the truth: instance masks are their pycocotools
rasterisation, so the converter reproduces them pixel for pixel. Region and kidney polygons are
made disjoint in a fixed priority order with a small gap; the bladder, a decoy, may lie over a
region as it does in projection; lesions lie over them all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from shapely import affinity, set_precision
from shapely.geometry import LineString, Polygon, box
from shapely.geometry.base import BaseGeometry
from shapely.ops import split, unary_union

from bsi_d2.postprocess.bsi import burden_group
from bsi_d2.preprocess.merge import VIEW_WIDTH, ViewPlacement
from bsi_d2.structures.masks import mask_area, mask_to_bbox, mask_to_rle, polygons_to_mask
from bsi_d2.taxonomy import Taxonomy

# a higher-priority outline keeps its pixels where two overlap in projection
REGION_PRIORITY = (
    "spine",
    "skull",
    "pelvis",
    "femurs",
    "humerus_right",
    "humerus_left",
    "chest",
    "kidney_right",
    "kidney_left",
)
GAP_PX = 1.2  # > 1 px, so no pixel centre can fall inside two rasterised outlines
VIEW_MARGIN_PX = 0.6  # keeps each view's outlines off the column where the views meet
MIN_POLYGON_AREA = 4.0
GRID = 0.01  # coordinates are written with two decimals


@dataclass
class LabeledInstance:
    """One instance: a class, a view and one or more hole-free polygons in the merged frame."""

    category: str
    view: str
    polygons: list[list[list[float]]]  # [[ [x, y], ... ], ...]
    group_id: int = 0
    lesion_id: int | None = None

    def flat(self) -> list[list[float]]:
        return [[c for xy in poly for c in xy] for poly in self.polygons]


def make_disjoint(
    outlines: dict[str, BaseGeometry], order=REGION_PRIORITY, gap: float = GAP_PX
) -> dict[str, BaseGeometry]:
    """Subtract every higher-priority outline (grown by ``gap``) from each lower one; outlines
    whose key is not in ``order`` are left out."""
    taken: list[BaseGeometry] = []
    out: dict[str, BaseGeometry] = {}
    for key in order:
        if key not in outlines:
            continue
        geom = outlines[key]
        if taken:
            geom = geom.difference(unary_union(taken).buffer(gap, 3))
        out[key] = geom
        taken.append(geom)
    return out


def view_box(placement: ViewPlacement, height: int, margin: float = VIEW_MARGIN_PX) -> Polygon:
    """The merged-image columns of ``placement``'s view, shrunk by ``margin`` at the seam."""
    half = float(VIEW_WIDTH)
    left = 0.0 if placement.view == "anterior" else half + margin
    right = half - margin if placement.view == "anterior" else 2.0 * half
    return box(left, 0.0, right, float(height))


def to_merged(geometry: BaseGeometry, placement: ViewPlacement, height: int) -> BaseGeometry:
    """A view-frame shape in the merged frame, clipped to its view's half."""
    moved = affinity.translate(geometry, placement.col_offset, placement.row_offset)
    return moved.intersection(view_box(placement, height))


def polygon_points(geometry: BaseGeometry) -> list[list[list[float]]]:
    """Valid, hole-free polygons of at least three points on a 0.01 px grid."""
    out: list[list[list[float]]] = []
    for poly in _polygons(set_precision(geometry, GRID)):
        for piece in _without_holes(poly):
            piece = piece.simplify(0.05)
            if piece.is_empty or piece.area < MIN_POLYGON_AREA:
                continue
            pts = [[round(x, 2), round(y, 2)] for x, y in piece.exterior.coords[:-1]]
            if len(pts) >= 3 and Polygon(pts).is_valid:
                out.append(pts)
    return out


def _polygons(geometry: BaseGeometry) -> list[Polygon]:
    if geometry.is_empty:
        return []
    if geometry.geom_type == "Polygon":
        return [geometry]
    return [p for g in getattr(geometry, "geoms", []) for p in _polygons(g)]


def _without_holes(poly: Polygon) -> list[Polygon]:
    """Cut a polygon with holes by vertical lines through them (Labelme has no holes)."""
    if not poly.interiors:
        return [poly]
    x = poly.interiors[0].centroid.x
    _, y0, _, y1 = poly.bounds
    pieces = split(poly, LineString([(x, y0 - 1.0), (x, y1 + 1.0)]))
    return [q for piece in _polygons(pieces) for q in _without_holes(piece)]


def labelme_shapes(instances: list[LabeledInstance]) -> list[dict]:
    """Labelme shapes: one polygon each, the instance's parts sharing its group_id."""
    return [
        {
            "label": inst.category,
            "points": poly,
            "group_id": inst.group_id,
            "shape_type": "polygon",
            "flags": {},
            "description": "",
        }
        for inst in instances
        for poly in inst.polygons
    ]


def build_truth(
    instances: list[LabeledInstance],
    counts: np.ndarray,
    taxonomy: Taxonomy,
) -> dict:
    """Instance masks, per-region involvement, BSI, BSTBI and lesion burden of one image.

    The indices come from the toolkit's own post-processing (:func:`analyse_scan` on the masks
    as if predicted with score 1), so the exactness test that feeds them back is a plumbing
    test: it checks that nothing between a mask and a record is lost, not the definitions.
    The lesion count is the truth's own: appearances of one metastasis share a ``lesion_id``;
    a metastasis every appearance of which lies inside a decoy outline (behind the bladder) is
    one a reader cannot tell from the decoy's uptake, so it is counted apart as hidden.

    Raises ValueError if two region masks or two decoy masks share a pixel: the truth would be
    ambiguous. A decoy may overlap a region (the bladder lies over the pelvis in projection).
    """
    from bsi_d2.postprocess.analysis import analyse_scan
    from bsi_d2.structures.instances import Instances

    height, width = counts.shape
    # regions and decoys are checked apart: only a clash of the same kind is ambiguous
    kind_maps = {kind: np.zeros((height, width), dtype=np.int32) for kind in ("region", "decoy")}
    records, masks = [], []
    for inst in instances:
        cls = taxonomy.by_name(inst.category)
        mask = polygons_to_mask(inst.flat(), height, width)
        if not cls.is_lesion:
            kind_map = kind_maps["decoy" if cls.is_decoy else "region"]
            clash = mask & (kind_map > 0)
            if clash.any():
                other = taxonomy.by_id(int(kind_map[clash].flat[0])).name
                raise ValueError(
                    f"{inst.category} ({inst.view}) overlaps {other} on {int(clash.sum())} pixels"
                )
            kind_map[mask] = cls.id
        masks.append(mask)
        records.append(
            {
                "category_id": cls.id,
                "category_name": cls.name,
                "view": inst.view,
                "group_id": inst.group_id,
                "segmentation": mask_to_rle(mask),
                "bbox": mask_to_bbox(mask),
                "area": mask_area(mask),
                "lesion_id": inst.lesion_id,
            }
        )
    truth_instances = Instances.from_masks(
        height, width, [r["category_id"] for r in records], masks
    )
    analysis = analyse_scan(truth_instances, counts, taxonomy, score_thresh=0.0)
    result, record = analysis.bsi, analysis.record
    lesions = [
        (inst, mask)
        for inst, mask in zip(instances, masks, strict=True)
        if taxonomy.by_name(inst.category).is_lesion
    ]
    decoy = kind_maps["decoy"] > 0
    hidden_by_id: dict[object, bool] = {}
    for k, (inst, mask) in enumerate(lesions):
        key = inst.lesion_id if inst.lesion_id is not None else ("single", k)
        inside = not (mask & ~decoy).any()
        hidden_by_id[key] = hidden_by_id.get(key, True) and inside
    hidden = sum(hidden_by_id.values())
    count = len(hidden_by_id) - hidden
    return {
        "instances": records,
        "bsi": result.bsi,
        "bsi_per_bone": {b: v.bsi for b, v in result.bones.items()},
        "involvement": {
            b: {
                **{view: v.involvement_per_view[view] for view in v.involvement_per_view},
                "combined": v.involvement,
            }
            for b, v in result.bones.items()
        },
        "bstbi": result.bstbi,
        "bstbi_per_view": dict(result.bstbi_per_view),
        "lesion_instances": len(lesions),
        "lesion_count": count,
        "lesions_hidden_by_decoys": hidden,
        "burden_group": burden_group(count),
        "lesion_pixels_counted": record["lesion_pixels_counted"],
        "lesion_pixels_outside": record["lesion_pixels_outside"],
        "lesion_pixels_in_decoys": record["lesion_pixels_in_decoys"],
        "bsi_detail": result.to_dict(),
    }
