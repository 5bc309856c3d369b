"""One scan's instances -> region and decoy maps, the lesion model, BSI, BSTBI and lesion burden.

:func:`analyse_scan` is the single scan-level computation: batch inference, ``bsi-d2 bsi`` on
annotations, the evaluation and the tests all call it, so they cannot disagree. Every lesion
output is read from one :class:`~bsi_d2.postprocess.lesions.LesionModel`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bsi_d2.postprocess.assign import assign_views
from bsi_d2.postprocess.bsi import BSTBI_K, NOT_ASSESSED, BSIResult, burden_group, compute_bsi
from bsi_d2.postprocess.lesions import (
    OTHER_SITE,
    SITE_BONE,
    SITE_DECOY,
    SITE_OUTSIDE,
    LesionModel,
    build_benign_model,
    build_lesion_model,
    site_name,
)
from bsi_d2.postprocess.match import DEFAULT_MATCH_RADIUS
from bsi_d2.postprocess.rasterize import (
    DEFAULT_SCORE_THRESH,
    filter_by_score,
    label_image,
    mask_boxes,
    rasterize_regions,
)
from bsi_d2.preprocess.merge import VIEW_ORDER
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import Taxonomy

COUNTS_FROM_DISPLAY = "display"  # counts_source of a scan whose raw counts were not available

# the record's model "engine" where annotations, not a model, gave the instances
ANNOTATIONS_ENGINE = "annotations"


@dataclass
class ScanAnalysis:
    """Everything post-processing knows about one scan; ``record`` is JSON-ready."""

    instances: Instances  # kept after the score thresholds
    region_map: np.ndarray  # (H, W) uint8 class ids of skeletal regions, 0 for none
    decoy_map: np.ndarray  # (H, W) uint8 class ids of decoys (kidney, bladder), 0 for none
    lesions: LesionModel
    bsi: BSIResult
    views: list[str]  # per kept instance
    record: dict[str, Any] = field(default_factory=dict)
    benign: LesionModel | None = None  # hot spots judged benign; None without a benign class

    @property
    def lesion_mask(self) -> np.ndarray:
        """(H, W) bool: every pixel of a kept lesion, wherever it lies."""
        return self.lesions.labels > 0

    @property
    def lesion_count(self) -> int:
        return self.lesions.count

    @property
    def abnormal(self) -> bool:
        return self.lesions.count > 0

    def area_map(self) -> np.ndarray:
        """(H, W) uint8 region ids with decoy ids drawn over them, as an annotator outlines a
        kidney over the ribs: what the overlay colours."""
        return np.where(self.decoy_map > 0, self.decoy_map, self.region_map).astype(np.uint8)

    def label_map(self, taxonomy: Taxonomy) -> np.ndarray:
        """The uint8 image of ``labelmap.png``: :meth:`area_map` with lesion pixels as the
        lesion class id."""
        lesion_id = taxonomy.lesion_ids[0] if taxonomy.lesion_ids else 255
        return label_image(self.area_map(), self.lesion_mask, lesion_id)


def region_rows(
    result: BSIResult, taxonomy: Taxonomy, involved: set[str] | None = None
) -> list[dict[str, Any]]:
    """The record's ``regions`` list: one row per bone, in the taxonomy's weight order;
    ``involved`` are the bones holding counted lesion pixels."""
    report_of_bone: dict[str, str] = {}
    for c in taxonomy.region_classes:
        if c.bone:
            report_of_bone.setdefault(c.bone, c.report)
    rows = []
    for bone, b in result.bones.items():
        rows.append(
            {
                "bone": bone,
                "report_name": report_of_bone.get(bone, bone),
                "weight": b.weight,
                "assessed": b.assessed,
                "region_pixels_anterior": b.region_pixels[VIEW_ORDER[0]],
                "region_pixels_posterior": b.region_pixels[VIEW_ORDER[1]],
                "lesion_pixels_anterior": b.lesion_pixels[VIEW_ORDER[0]],
                "lesion_pixels_posterior": b.lesion_pixels[VIEW_ORDER[1]],
                "involvement_anterior": b.involvement_per_view.get(VIEW_ORDER[0]),
                "involvement_posterior": b.involvement_per_view.get(VIEW_ORDER[1]),
                "involvement": b.involvement,
                "bsi": b.bsi,
                "involved": bone in (involved or set()),
            }
        )
    return rows


def analyse_scan(
    instances: Instances,
    counts: np.ndarray | None,
    taxonomy: Taxonomy,
    score_thresh: float = DEFAULT_SCORE_THRESH,
    class_thresh: Mapping[int | str, float] | None = None,
    combine: str = "mean",
    match_views: bool = True,
    match_radius: float = DEFAULT_MATCH_RADIUS,
    k: float = BSTBI_K,
    counts_source: str | None = None,
) -> ScanAnalysis:
    """Per-region BSI, per-view BSTBI (on raw ``counts``, if given) and lesion burden of one
    merged scan.

    Instances below their class's score threshold are dropped; skeletal regions and decoys are
    rasterised into separate maps (the higher score wins an overlap within each); the lesion
    model (:mod:`bsi_d2.postprocess.lesions`) finds each lesion once — matched across views
    unless ``match_views`` is False — and assigns it to a region, a decoy or "outside";
    involvement is measured per view on its counted pixels and combined with ``combine``.
    ``counts_source`` ("display" where display values stand in for counts) is recorded.
    """
    if counts is not None and np.shape(counts) != (instances.height, instances.width):
        raise ValueError(
            f"counts {np.shape(counts)} do not match the image ({instances.height}, "
            f"{instances.width})"
        )
    if instances.masks.dtype != bool:  # crops are used as boolean indices below
        instances = Instances(
            instances.height, instances.width, instances.boxes, instances.scores,
            instances.category_ids, instances.masks.astype(bool),
        )  # fmt: skip
    kept = filter_by_score(instances, taxonomy, score_thresh, class_thresh)
    boxes = mask_boxes(kept.masks)
    region_map = rasterize_regions(kept, taxonomy, boxes, kinds=("region",))
    decoy_map = rasterize_regions(kept, taxonomy, boxes, kinds=("decoy",))
    model = build_lesion_model(
        kept, region_map, decoy_map, taxonomy, match_views, match_radius, boxes
    )
    result = compute_bsi(
        region_map,
        model.counted,
        taxonomy,
        combine=combine,
        counts=counts,
        k=k,
        decoy_map=decoy_map,
        lesion_labels=model.labels,
    )
    benign = None
    if taxonomy.benign_class is not None:
        benign = build_benign_model(
            kept, region_map, decoy_map, taxonomy, match_views, match_radius, boxes
        )
    analysis = ScanAnalysis(
        instances=kept,
        region_map=region_map,
        decoy_map=decoy_map,
        lesions=model,
        bsi=result,
        views=assign_views(kept, boxes),
        benign=benign,
    )
    analysis.record = analysis_record(analysis, taxonomy, counts_source)
    return analysis


def lesions_by_site(model: LesionModel, taxonomy: Taxonomy) -> dict[str, int]:
    """Lesion count per report name of the site (region, decoy, or "other"), in taxonomy
    order with "other" last; sites without lesions are left out."""
    counts: dict[str, int] = {}
    for lesion in model.lesions:
        name = site_name(lesion, taxonomy)
        counts[name] = counts.get(name, 0) + 1
    order = [c.report for c in taxonomy.classes] + [OTHER_SITE]
    return {name: counts[name] for name in dict.fromkeys(order) if name in counts}


def benign_hot_spots(model: LesionModel | None, taxonomy: Taxonomy) -> dict[str, Any] | None:
    """The record's ``benign_hot_spots``: the hot spots the model judges benign, listed apart
    from the lesions and never counted in the BSI; None where the taxonomy has no benign
    class (the model cannot judge). ``count`` takes a hot spot seen in both views once (when
    views are matched); ``sites`` are the report names of where they lie ("other" outside
    every region), in taxonomy order."""
    if model is None:
        return None
    return {
        "count": len(model.lesions),
        "instances": int(model.instances_used),
        "sites": list(lesions_by_site(model, taxonomy)),
        "by_site": lesions_by_site(model, taxonomy),
        "hot_spots": [
            {k: v for k, v in spot.to_dict(taxonomy).items() if k != "counted_pixels"}
            for spot in model.lesions
        ],
        "note": "judged benign by the model, not counted in the BSI; for the physician to "
        "confirm, as every finding",
    }


def involved_sites(rows: list[dict[str, Any]], model: LesionModel) -> list[str]:
    """Report names of the regions holding counted lesion pixels, in row order, then "other"
    where a lesion lies outside every region: what the report's sites sentence names."""
    names = [r["report_name"] for r in rows if r["involved"]]
    if model.of_site(SITE_OUTSIDE):
        names.append(OTHER_SITE)
    return list(dict.fromkeys(names))


def bstbi_notes(
    analysis: ScanAnalysis, taxonomy: Taxonomy, counts_given: bool, counts_source: str | None
) -> list[str]:
    """What a reader of the BSTBI must know: no counts, no bladder, display values as counts."""
    if not counts_given:
        return ["not computed: no raw counts"]
    notes = []
    exclude = taxonomy.burden_exclude_ids
    if not exclude:
        notes.append("the taxonomy has no bladder class: bladder counts are not subtracted")
    elif not np.isin(analysis.decoy_map, exclude).any():
        notes.append("no bladder was segmented: bladder counts are not subtracted")
    if counts_source == COUNTS_FROM_DISPLAY:
        notes.append("display values stood in for raw counts (no counts companion file)")
    return notes


def skeleton_landmarks(region_map: np.ndarray, taxonomy: Taxonomy) -> dict[str, dict]:
    """The record's ``landmarks``: per view (its half of the merged image), per skeletal region
    found there, ``{"centroid": [x, y], "pixels": n, "bbox": [x0, y0, x1, y1]}`` in merged-image
    pixels (centroid to 0.1 pixel, box end exclusive): what follow-up aligns two studies by."""
    from scipy import ndimage

    width = region_map.shape[1]
    half = width // 2
    names = {c.id: c.name for c in taxonomy.region_classes}
    out: dict[str, dict] = {}
    for view, (x0, x1) in zip(VIEW_ORDER, ((0, half), (half, width)), strict=True):
        part = region_map[:, x0:x1]
        regions = {}
        # find_objects gives each class's box in one pass; the sums then read only that box
        for class_id, box in enumerate(ndimage.find_objects(part), start=1):
            if box is None or class_id not in names:
                continue
            inside = part[box] == class_id
            per_row = np.count_nonzero(inside, axis=1)
            per_col = np.count_nonzero(inside, axis=0)
            n = int(per_row.sum())
            rows, cols = box
            x = x0 + cols.start + float(per_col @ np.arange(per_col.size)) / n
            y = rows.start + float(per_row @ np.arange(per_row.size)) / n
            regions[names[class_id]] = {
                "centroid": [round(x, 1), round(y, 1)],
                "pixels": n,
                "bbox": [x0 + cols.start, rows.start, x0 + cols.stop, rows.stop],
            }
        out[view] = regions
    return out


def analysis_record(
    analysis: ScanAnalysis, taxonomy: Taxonomy, counts_source: str | None = None
) -> dict[str, Any]:
    """The post-processing part of a scan's ``bsi.json`` record (see ``inference.outputs``)."""
    result, model = analysis.bsi, analysis.lesions
    involved = {bone for bone, b in result.bones.items() if sum(b.lesion_pixels.values()) > 0}
    rows = region_rows(result, taxonomy, involved)
    per_view = result.bstbi_per_view
    counted = int(np.count_nonzero(model.counted))
    return {
        "bsi": None if result.bsi is None else float(result.bsi),
        "bsi_coverage": float(result.coverage),
        "combine": result.combine,
        "regions_not_assessed": [r["bone"] for r in rows if r["assessed"] == NOT_ASSESSED],
        "bstbi": None if result.bstbi is None else float(result.bstbi),
        "bstbi_anterior": per_view.get(VIEW_ORDER[0]),
        "bstbi_posterior": per_view.get(VIEW_ORDER[1]),
        "bstbi_notes": bstbi_notes(analysis, taxonomy, bool(per_view), counts_source),
        "counts_source": counts_source,
        "lesion_count": int(model.count),
        "lesion_instances": int(model.instances_used),
        "views_matched": bool(model.matched),
        "lesions_in_decoys": len(model.of_site(SITE_DECOY)),
        "benign_hot_spots": benign_hot_spots(analysis.benign, taxonomy),
        "burden_group": burden_group(model.count),
        "abnormal": bool(analysis.abnormal),
        "sites": involved_sites(rows, model),
        "regions": rows,
        "lesions": [lesion.to_dict(taxonomy) for lesion in model.lesions],
        "lesions_by_region": lesions_by_site(model, taxonomy),
        "lesion_pixels_counted": counted,
        "lesion_pixels_outside": model.pixels_where(SITE_BONE, SITE_OUTSIDE) - counted,
        "lesion_pixels_in_decoys": int(model.pixels_where(SITE_DECOY)),
        "landmarks": skeleton_landmarks(analysis.region_map, taxonomy),
    }
