"""One scan's instances -> region map, lesion mask, BSI, BSTBI and lesion burden. NumPy only.

:func:`analyse_scan` is the single scan-level computation: batch inference, the evaluation of
BSI against ground truth and the tests all call it, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bsi_d2.postprocess.assign import (
    assign_views,
    count_lesions_by_region,
    is_abnormal,
    lesion_regions,
)
from bsi_d2.postprocess.bsi import BSTBI_K, BSIResult, burden_group, compute_bsi
from bsi_d2.postprocess.match import (
    DEFAULT_MATCH_RADIUS,
    count_matched_lesions,
    instance_centroids,
    view_midlines,
)
from bsi_d2.postprocess.rasterize import (
    DEFAULT_SCORE_THRESH,
    filter_by_score,
    lesion_union,
    mask_boxes,
    rasterize_regions,
)
from bsi_d2.preprocess.merge import VIEW_ORDER
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import Taxonomy


@dataclass
class ScanAnalysis:
    """Everything post-processing knows about one scan; ``record`` is JSON-ready."""

    instances: Instances  # kept after the score thresholds
    region_map: np.ndarray  # (H, W) uint8 class ids of regions and decoys, 0 for none
    lesion_mask: np.ndarray  # (H, W) bool
    bsi: BSIResult
    views: list[str]  # per kept instance
    lesion_count: int
    lesion_count_matched: int | None
    matched_pairs: list[tuple[int, int]]  # indices into ``instances`` (anterior, posterior)
    lesions_by_region: dict[str, int]  # report name of the site -> lesion count
    abnormal: bool  # a lesion outside the decoys (see assign.is_abnormal)
    record: dict[str, Any] = field(default_factory=dict)


def region_rows(result: BSIResult, taxonomy: Taxonomy) -> list[dict[str, Any]]:
    """The record's ``regions`` list: one row per bone, in the taxonomy's weight order."""
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
                "involvement_anterior": b.involvement_per_view.get(VIEW_ORDER[0]),
                "involvement_posterior": b.involvement_per_view.get(VIEW_ORDER[1]),
                "involvement": b.involvement,
                "bsi": b.bsi,
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
    match_views: bool = False,
    match_radius: float = DEFAULT_MATCH_RADIUS,
    k: float = BSTBI_K,
) -> ScanAnalysis:
    """Per-region BSI, BSTBI (on raw ``counts``, if given) and lesion burden of one merged scan.

    Instances below their class's score threshold are dropped; region and decoy instances are
    rasterised (higher score wins an overlap) and lesions united; involvement is measured per
    view and combined with ``combine``; lesions are counted per instance and, with
    ``match_views``, once more with anterior/posterior pairs counted once (the burden group
    then uses that count). ``abnormal`` means a kept lesion lies outside the decoy organs.
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
    region_map = rasterize_regions(kept, taxonomy, boxes)
    lesion_mask = lesion_union(kept, taxonomy, boxes)
    result = compute_bsi(region_map, lesion_mask, taxonomy, combine=combine, counts=counts, k=k)
    views = assign_views(kept, boxes)
    is_lesion = np.isin(kept.category_ids, taxonomy.lesion_ids)
    lesion_count = int(np.count_nonzero(is_lesion))
    sites = lesion_regions(kept, region_map, taxonomy, boxes)

    matched_count: int | None = None
    pairs: list[tuple[int, int]] = []
    if match_views:
        lesion_idx = np.flatnonzero(is_lesion)
        centroids = instance_centroids(kept, boxes, lesion_idx)
        matched_count, local = count_matched_lesions(
            centroids, [views[i] for i in lesion_idx], view_midlines(region_map), match_radius
        )
        pairs = [(int(lesion_idx[a]), int(lesion_idx[p])) for a, p in local]

    analysis = ScanAnalysis(
        instances=kept,
        region_map=region_map,
        lesion_mask=lesion_mask,
        bsi=result,
        views=views,
        lesion_count=lesion_count,
        lesion_count_matched=matched_count,
        matched_pairs=pairs,
        lesions_by_region=count_lesions_by_region(sites, taxonomy),
        abnormal=is_abnormal(sites, taxonomy),
    )
    analysis.record = analysis_record(analysis, taxonomy)
    return analysis


def analysis_record(analysis: ScanAnalysis, taxonomy: Taxonomy) -> dict[str, Any]:
    """The post-processing part of a scan's ``bsi.json`` record (see ``inference.outputs``)."""
    result = analysis.bsi
    burden_count = (
        analysis.lesion_count_matched
        if analysis.lesion_count_matched is not None
        else analysis.lesion_count
    )
    return {
        "bsi": float(result.bsi),
        "bstbi": None if result.bstbi is None else float(result.bstbi),
        "lesion_count": int(analysis.lesion_count),
        "lesion_count_matched": analysis.lesion_count_matched,
        "burden_group": burden_group(burden_count),
        "abnormal": bool(analysis.abnormal),
        "regions": region_rows(result, taxonomy),
        "lesions_by_region": dict(analysis.lesions_by_region),
        "lesion_pixels_outside": int(result.lesion_pixels_outside),
        "lesion_pixels_in_decoys": int(result.lesion_pixels_in_decoys),
    }
