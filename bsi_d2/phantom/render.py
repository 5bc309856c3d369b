"""Counts from shapes: paint uptake, blur like a gamma camera, draw Poisson counts.

Planar scintigraphy sums activity along the line of sight, so overlapping parts add up.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from shapely import affinity
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

SUBPIXEL_BITS = 4
BONE_SIGMA_PX = 1.7  # camera resolution, ~10 mm FWHM at 2.4 mm pixels
SOFT_SIGMA_PX = 4.0
HOT_SIGMA_PX = 1.6
# depth-dependent blur (hard preset): sigma grows with the distance from the collimator
SIGMA_NEAR_PX, SIGMA_FAR_PX = 1.1, 2.9
SCATTER_SIGMA_PX = 14.0
OUTLINE_SUPERSAMPLE = 2


@dataclass(frozen=True)
class Spot:
    """A focal source (lesion appearance or benign hot spot) in one view."""

    geometry: BaseGeometry
    intensity: float  # added uptake, relative to normal bone
    sigma: float = HOT_SIGMA_PX


def paint(canvas: np.ndarray, geometry: BaseGeometry, value: float, mode: str = "add") -> None:
    """Add ``value`` x the anti-aliased coverage of ``geometry`` to ``canvas`` in place, or with
    ``mode="max"`` keep the larger of the two (one bone drawn as overlapping pieces)."""
    if geometry.is_empty or value == 0.0:
        return
    h, w = canvas.shape
    x0, y0, x1, y1 = geometry.bounds
    c0, r0 = max(int(np.floor(x0)) - 1, 0), max(int(np.floor(y0)) - 1, 0)
    c1, r1 = min(int(np.ceil(x1)) + 2, w), min(int(np.ceil(y1)) + 2, h)
    if c1 <= c0 or r1 <= r0:
        return
    scale = 1 << SUBPIXEL_BITS
    rings = []
    for poly in getattr(geometry, "geoms", [geometry]):
        if poly.geom_type != "Polygon" or poly.is_empty:
            continue
        for ring in (poly.exterior, *poly.interiors):
            # pixel c covers [c, c+1): its centre c+0.5 maps to cv2's integer pixel c
            xy = (np.asarray(ring.coords) - (c0 + 0.5, r0 + 0.5)) * scale
            rings.append(np.rint(xy).astype(np.int32))
    if not rings:
        return
    local = np.zeros((r1 - r0, c1 - c0), dtype=np.uint8)
    cv2.fillPoly(local, rings, 255, lineType=cv2.LINE_AA, shift=SUBPIXEL_BITS)
    layer = local.astype(np.float32) * (value / 255.0)
    if mode == "max":
        np.maximum(canvas[r0:r1, c0:c1], layer, out=canvas[r0:r1, c0:c1])
    else:
        canvas[r0:r1, c0:c1] += layer


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(
        image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT
    )


def texture(shape: tuple[int, int], rng: np.random.Generator, amount: float = 0.2) -> np.ndarray:
    """Smooth multiplicative unevenness of uptake, 1 +- ``amount``."""
    coarse = rng.normal(0.0, 1.0, size=(shape[0] // 10 + 2, shape[1] // 10 + 2))
    field = cv2.resize(
        coarse.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC
    )
    return np.clip(1.0 + amount * field, 0.5, 1.5).astype(np.float32)


def expected_counts(
    bone: np.ndarray,
    soft: np.ndarray,
    spots: list[Spot],
    count_level: float,
    background: float = 0.15,  # scatter and room background, counts per pixel
) -> np.ndarray:
    """Mean counts per pixel: blurred uptake maps scaled to ``count_level`` counts at bone 1.0."""
    hot = np.zeros_like(bone)
    add_blurred_spots(hot, spots)
    mean = blur(bone, BONE_SIGMA_PX) + blur(soft, SOFT_SIGMA_PX) + hot
    return np.maximum(mean * count_level + background, 0.0).astype(np.float64)


def add_blurred_spots(
    out: np.ndarray, spots: list[Spot], gain: np.ndarray | None = None, scale: float = 1.0
) -> None:
    """Paint ``spots`` grouped by their blur, blur each group once and add it to ``out`` in
    place; ``gain`` (an array, e.g. uneven uptake) times ``scale`` multiplies a group first."""
    layers: dict[float, np.ndarray] = {}
    for spot in spots:
        layer = layers.setdefault(round(spot.sigma, 2), np.zeros_like(out))
        paint(layer, spot.geometry, spot.intensity)
    for sigma, layer in layers.items():
        if gain is not None:
            layer = layer * gain * scale
        elif scale != 1.0:
            layer = layer * scale
        out += blur(layer, sigma)


def depth_sigma(distance: float) -> float:
    """Camera blur of a source ``distance`` (0 at the collimator .. 1 across the body) away."""
    d = min(max(float(distance), 0.0), 1.0)
    return SIGMA_NEAR_PX + (SIGMA_FAR_PX - SIGMA_NEAR_PX) * d


def scatter(mean: np.ndarray, fraction: float, sigma: float = SCATTER_SIGMA_PX) -> np.ndarray:
    """Move ``fraction`` of the counts into a wide halo (Compton scatter in the body), on a
    4x coarser grid: the halo is smooth and this keeps it cheap."""
    if fraction <= 0.0:
        return mean
    h, w = mean.shape
    small = cv2.resize(mean, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
    halo = cv2.resize(blur(small, sigma / 4.0), (w, h), interpolation=cv2.INTER_LINEAR)
    return (1.0 - fraction) * mean + fraction * halo


def drawn_outline(
    geometry: BaseGeometry, sigma: float, level: float = 0.5
) -> tuple[BaseGeometry, float]:
    """Where a reader puts the edge of a blurred source: the contour at ``level`` of its peak.

    Returns the outline and the peak the blur leaves of a unit source (1 for a large lesion,
    less for one small beside the camera's resolution)."""
    s = OUTLINE_SUPERSAMPLE
    pad = 3.0 * sigma + 2.0
    x0, y0, x1, y1 = geometry.bounds
    x0, y0 = x0 - pad, y0 - pad
    w, h = int(np.ceil((x1 + pad - x0) * s)), int(np.ceil((y1 + pad - y0) * s))
    canvas = np.zeros((h, w), dtype=np.float32)
    paint(canvas, affinity.affine_transform(geometry, [s, 0, 0, s, -x0 * s, -y0 * s]), 1.0)
    blurred = blur(canvas, sigma * s)
    peak = float(blurred.max())
    if peak <= 0.0:
        return Polygon(), 0.0
    mask = (blurred >= level * peak).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        if len(c) >= 3:
            # contours run through boundary pixel centres: half a pixel inside the edge
            poly = Polygon((c[:, 0, :] + 0.5) / s + (x0, y0)).buffer(0.5 / s, 2)
            if not poly.is_empty:
                polys.append(poly)
    return (unary_union(polys) if polys else Polygon()), peak


def poisson_counts(mean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poisson counts as uint16 (saturating, as a 16-bit detector matrix would)."""
    return np.minimum(rng.poisson(mean), np.iinfo(np.uint16).max).astype(np.uint16)
