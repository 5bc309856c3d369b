"""Seed 000's training augmentation, one NumPy/OpenCV operation per function.

Rotation (-3..3 degrees) and scale (0.9..1.1) act about the image centre and keep the output size;
brightness multiplies intensities (x0.8..x1.7). Images are float (H, W) arrays in their own
value scale, masks (N, H, W) uint8/bool; the same matrix moves both, so they stay aligned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from bsi_d2.structures.masks import mask_to_bbox


@dataclass(frozen=True)
class AugmentationRanges:
    """Uniform sampling ranges (low, high); (0, 0) rotation / (1, 1) scale or brightness is off."""

    rotation: tuple[float, float] = (-3.0, 3.0)
    scale: tuple[float, float] = (0.9, 1.1)
    brightness: tuple[float, float] = (0.8, 1.7)


@dataclass(frozen=True)
class AugmentationParams:
    """One draw from :class:`AugmentationRanges`."""

    angle: float = 0.0  # degrees, counter-clockwise as displayed
    scale: float = 1.0
    brightness: float = 1.0


def sample_params(ranges: AugmentationRanges, rng: Any = np.random) -> AugmentationParams:
    """Draw rotation, scale and brightness uniformly (``rng``: a Generator or ``np.random``,
    which detectron2 and torch DataLoader workers seed per worker)."""
    return AugmentationParams(
        angle=float(rng.uniform(*ranges.rotation)),
        scale=float(rng.uniform(*ranges.scale)),
        brightness=float(rng.uniform(*ranges.brightness)),
    )


def rotation_scale_matrix(height: int, width: int, angle: float, scale: float) -> np.ndarray:
    """(2, 3) affine matrix rotating by ``angle`` degrees and scaling by ``scale`` about the
    image centre."""
    centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    return cv2.getRotationMatrix2D(centre, float(angle), float(scale))


def warp_image(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Bilinear affine warp of an (H, W) float image; outside pixels become 0 (no counts)."""
    h, w = image.shape[:2]
    return cv2.warpAffine(
        np.ascontiguousarray(image, dtype=np.float32),
        matrix,
        (w, h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )


def warp_masks(masks: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Nearest-neighbour affine warp of (N, H, W) masks, so they stay binary."""
    n, h, w = masks.shape
    out = np.zeros((n, h, w), dtype=np.uint8)
    for i in range(n):
        out[i] = cv2.warpAffine(
            np.ascontiguousarray(masks[i], dtype=np.uint8),
            matrix,
            (w, h),
            flags=cv2.INTER_NEAREST,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
    return out


def adjust_brightness(
    image: np.ndarray, factor: float, max_value: float | None = None
) -> np.ndarray:
    """Multiply intensities by ``factor``; clip at ``max_value`` (the file's range) if given."""
    out = image.astype(np.float32) * np.float32(factor)
    if max_value is not None:
        np.minimum(out, np.float32(max_value), out=out)
    return out


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an (H, W) float image."""
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)


def resize_masks(masks: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of (N, H, W) masks."""
    if masks.shape[1:] == (height, width):
        return masks.astype(np.uint8, copy=False)
    out = np.zeros((masks.shape[0], height, width), dtype=np.uint8)
    for i, m in enumerate(masks):
        out[i] = cv2.resize(m.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    return out


def shortest_edge_size(height: int, width: int, short_edge: int, max_size: int) -> tuple[int, int]:
    """detectron2's ResizeShortestEdge target: short side ``short_edge``, long side at most
    ``max_size``; returns (new_height, new_width)."""
    scale = short_edge / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def hflip_image(image: np.ndarray) -> np.ndarray:
    """Mirror left-right: in a merged scan this moves each view into the other's slot."""
    return np.ascontiguousarray(image[:, ::-1])


def hflip_masks(masks: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(masks[:, :, ::-1])


def remap_classes(classes: np.ndarray, mapping: Mapping[int, int] | Sequence[int]) -> np.ndarray:
    """Classes after a flip: ``mapping[c]`` for each class (identity where not listed)."""
    if isinstance(mapping, Mapping):
        return np.array([int(mapping.get(int(c), int(c))) for c in classes], dtype=np.int64)
    table = np.asarray(mapping, dtype=np.int64)
    return table[np.asarray(classes, dtype=np.int64)]


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight (N, 4) XYXY boxes (pixel edges) of (N, H, W) masks; zeros for an empty mask."""
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for i, m in enumerate(masks):
        x, y, w, h = mask_to_bbox(m)
        boxes[i] = (x, y, x + w, y + h)
    return boxes


def nonempty(masks: np.ndarray) -> np.ndarray:
    """(N,) bool: which masks still hold a pixel."""
    return masks.reshape(len(masks), -1).any(axis=1) if len(masks) else np.zeros(0, bool)


def apply_augmentation(
    image: np.ndarray,
    masks: np.ndarray,
    params: AugmentationParams,
    max_value: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate and scale image and masks with one matrix, then scale the image's brightness."""
    h, w = image.shape[:2]
    if params.angle != 0.0 or params.scale != 1.0:
        matrix = rotation_scale_matrix(h, w, params.angle, params.scale)
        image = warp_image(image, matrix)
        masks = warp_masks(masks, matrix)
    if params.brightness != 1.0:
        image = adjust_brightness(image, params.brightness, max_value)
    return image, masks
