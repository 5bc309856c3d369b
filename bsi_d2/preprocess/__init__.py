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

__all__ = [
    "MERGED_HEIGHT",
    "VIEW_ORDER",
    "VIEW_WIDTH",
    "MergedScan",
    "ViewPlacement",
    "body_extent",
    "merge_views",
    "normalize_brightness",
]
