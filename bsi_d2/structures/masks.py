"""Binary masks, COCO polygons and RLE: one implementation shared by every layer.

Polygons are rasterised with pycocotools, the same code COCO evaluation and detectron2 use, so a
polygon written by the converter and decoded by a trainer covers exactly the same pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_util

Polygon = Sequence[float]  # flat COCO polygon [x0, y0, x1, y1, ...]


def polygons_to_mask(polygons: Sequence[Polygon], height: int, width: int) -> np.ndarray:
    """Union of flat COCO polygons as an (H, W) bool mask."""
    polys = [list(map(float, p)) for p in polygons if len(p) >= 6]
    if not polys:
        return np.zeros((height, width), dtype=bool)
    rles = mask_util.frPyObjects(polys, height, width)
    return mask_util.decode(mask_util.merge(rles)).astype(bool)


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """(H, W) mask -> COCO compressed RLE with ``counts`` as str (JSON-serialisable)."""
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"]}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """COCO RLE (compressed or uncompressed) -> (H, W) bool mask."""
    if isinstance(rle.get("counts"), list):
        h, w = rle["size"]
        rle = mask_util.frPyObjects(rle, h, w)
    elif isinstance(rle.get("counts"), str):
        rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return mask_util.decode(rle).astype(bool)


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` field (polygon list or RLE) -> (H, W) bool mask."""
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, height, width)
    if isinstance(segmentation, dict):
        return rle_to_mask(segmentation)
    raise TypeError(f"unknown segmentation type {type(segmentation).__name__}")


def mask_to_bbox(mask: np.ndarray) -> list[float]:
    """Tight XYWH box (COCO convention, pixel edges) of a mask; zeros for an empty one."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    cols = np.flatnonzero(mask.any(axis=0))
    return [
        float(cols[0]),
        float(rows[0]),
        float(cols[-1] - cols[0] + 1),
        float(rows[-1] - rows[0] + 1),
    ]


def mask_to_polygons(mask: np.ndarray, tolerance: float = 0.0) -> list[list[float]]:
    """Outer contours of a mask as flat polygons (holes are not represented; use RLE for those).

    Each contour traces pixel centres, so rasterising the result loses at most a half-pixel rim;
    ``tolerance`` > 0 simplifies with Douglas-Peucker.
    """
    import cv2

    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    out = []
    for contour in contours:
        if tolerance > 0:
            contour = cv2.approxPolyDP(contour, tolerance, True)
        pts = contour.reshape(-1, 2).astype(float)
        if len(pts) >= 3:
            out.append(pts.flatten().tolist())
    return out


def mask_area(mask: np.ndarray) -> int:
    return int(np.count_nonzero(mask))


def polygons_to_rle(polygons: Sequence[Polygon], height: int, width: int) -> dict[str, Any]:
    """Union of flat COCO polygons as compressed RLE (``counts`` str), never densely decoded.

    Decodes to exactly :func:`polygons_to_mask` of the same polygons.
    """
    polys = [list(map(float, p)) for p in polygons if len(p) >= 6]
    if not polys:
        return mask_to_rle(np.zeros((height, width), dtype=bool))
    return _rle_str(mask_util.merge(mask_util.frPyObjects(polys, height, width)))


def merge_rles(rles: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Union of compressed RLEs of one image size."""
    merged = mask_util.merge([_rle_bytes(r) for r in rles], intersect=False)
    return _rle_str(merged)


def rle_area(rle: dict[str, Any]) -> int:
    """Pixel count of a compressed RLE; equals ``mask_area(rle_to_mask(rle))``."""
    return int(mask_util.area(_rle_bytes(rle)))


def rle_to_bbox(rle: dict[str, Any]) -> list[float]:
    """Tight XYWH box of a compressed RLE; equals ``mask_to_bbox(rle_to_mask(rle))``."""
    return [float(v) for v in mask_util.toBbox(_rle_bytes(rle))]


def _rle_bytes(rle: dict[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return {"size": list(rle["size"]), "counts": counts}


def _rle_str(rle: dict[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    return {
        "size": [int(s) for s in rle["size"]],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }
