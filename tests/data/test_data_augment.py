"""Seed 000's augmentation: image and masks move together, boxes follow the masks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bsi_d2.data import augment as A


def _rectangle(
    h: int = 64, w: int = 48, top: int = 20, left: int = 14, rows: int = 24, cols: int = 12
):
    mask = np.zeros((h, w), np.uint8)
    mask[top : top + rows, left : left + cols] = 1
    return mask


def _expected_box(matrix: np.ndarray, top: int, left: int, rows: int, cols: int) -> np.ndarray:
    """Box of the rectangle's pixel centres moved by ``matrix``, widened to pixel edges."""
    corners = np.array(
        [
            [left, top],
            [left + cols - 1, top],
            [left, top + rows - 1],
            [left + cols - 1, top + rows - 1],
        ],
        dtype=float,
    )
    moved = corners @ matrix[:, :2].T + matrix[:, 2]
    return np.array([*moved.min(axis=0), *(moved.max(axis=0) + 1)])


@pytest.mark.parametrize("angle,scale", [(3.0, 1.0), (-3.0, 1.0), (2.0, 1.1), (-1.5, 0.9)])
def test_rotated_mask_box_and_area(angle, scale):
    mask = _rectangle()
    matrix = A.rotation_scale_matrix(64, 48, angle, scale)
    moved = A.warp_masks(mask[None], matrix)
    assert moved.shape == (1, 64, 48) and set(np.unique(moved)) <= {0, 1}
    box = A.masks_to_boxes(moved)[0]
    np.testing.assert_allclose(box, _expected_box(matrix, 20, 14, 24, 12), atol=1.0)
    assert moved.sum() == pytest.approx(mask.sum() * scale**2, rel=0.06)


def test_rotation_moves_image_and_mask_together():
    mask = _rectangle()
    image = mask.astype(np.float32) * 200.0
    params = A.AugmentationParams(angle=3.0, scale=1.05, brightness=1.0)
    out_image, out_masks = A.apply_augmentation(image, mask[None], params)
    bright = out_image > 100
    iou = (bright & (out_masks[0] > 0)).sum() / (bright | (out_masks[0] > 0)).sum()
    assert iou > 0.9


def test_scale_keeps_size_and_centre():
    image = np.zeros((33, 21), np.float32)
    image[16, 10] = 100.0  # the exact centre
    for scale in (0.9, 1.1):
        out = A.warp_image(image, A.rotation_scale_matrix(33, 21, 0.0, scale))
        assert out.shape == (33, 21)
        assert np.unravel_index(np.argmax(out), out.shape) == (16, 10)


def test_brightness_multiplies_and_clips_at_the_file_range():
    image = np.array([[0.0, 10.0, 200.0]], np.float32)
    np.testing.assert_allclose(A.adjust_brightness(image, 1.7), [[0.0, 17.0, 340.0]])
    np.testing.assert_allclose(A.adjust_brightness(image, 1.7, 255.0), [[0.0, 17.0, 255.0]])
    np.testing.assert_allclose(A.adjust_brightness(image, 0.8), [[0.0, 8.0, 160.0]])


def test_sampled_params_stay_in_their_ranges():
    rng = np.random.default_rng(0)
    ranges = A.AugmentationRanges()
    draws = [A.sample_params(ranges, rng) for _ in range(200)]
    angles = [d.angle for d in draws]
    assert -3.0 <= min(angles) < -2.5 and 2.5 < max(angles) <= 3.0
    assert all(0.9 <= d.scale <= 1.1 and 0.8 <= d.brightness <= 1.7 for d in draws)


def test_flip_and_class_remap():
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(A.hflip_image(image), image[:, ::-1])
    masks = np.zeros((1, 3, 4), np.uint8)
    masks[0, :, 0] = 1
    assert A.hflip_masks(masks)[0, :, 3].all()
    classes = np.array([3, 0, 5])
    np.testing.assert_array_equal(A.remap_classes(classes, {3: 5, 5: 3}), [5, 0, 3])
    np.testing.assert_array_equal(A.remap_classes(classes, [0, 1, 2, 5, 4, 3]), [5, 0, 3])


def test_boxes_and_empty_masks():
    masks = np.zeros((2, 8, 8), np.uint8)
    masks[0, 2:5, 1:3] = 1
    np.testing.assert_array_equal(A.masks_to_boxes(masks), [[1, 2, 3, 5], [0, 0, 0, 0]])
    np.testing.assert_array_equal(A.nonempty(masks), [True, False])
    assert A.nonempty(masks[:0]).shape == (0,) and A.masks_to_boxes(masks[:0]).shape == (0, 4)


@pytest.mark.parametrize(
    "size,short,longest,expected",
    [
        ((950, 512), 512, 1024, (950, 512)),
        ((950, 512), 256, 512, (475, 256)),
        ((950, 512), 800, 1333, (1333, 718)),
    ],
)
def test_shortest_edge_size(size, short, longest, expected):
    assert A.shortest_edge_size(*size, short, longest) == expected


def test_resize_masks_stay_binary():
    masks = _rectangle()[None]
    small = A.resize_masks(masks, 32, 24)
    assert small.shape == (1, 32, 24) and set(np.unique(small)) == {0, 1}
    assert small.sum() == pytest.approx(masks.sum() / 4, rel=0.1)
    assert math.isclose(A.resize_image(masks[0].astype(np.float32), 32, 24).max(), 1.0)
