from bsi_d2.preprocess.merge import (
    MERGED_HEIGHT,
    VIEW_ORDER,
    VIEW_WIDTH,
    MergedScan,
    ViewPlacement,
    body_extent,
    merge_views,
    normalize_brightness,
)
from bsi_d2.preprocess.pipeline import PreparedScan, preprocess_paths, preprocess_scan

__all__ = [
    "MERGED_HEIGHT",
    "VIEW_ORDER",
    "VIEW_WIDTH",
    "MergedScan",
    "PreparedScan",
    "ViewPlacement",
    "body_extent",
    "merge_views",
    "normalize_brightness",
    "preprocess_paths",
    "preprocess_scan",
]
