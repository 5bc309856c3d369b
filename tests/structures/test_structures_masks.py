import numpy as np
import pytest

from bsi_d2.structures.instances import Instances
from bsi_d2.structures.masks import (
    mask_to_bbox,
    mask_to_polygons,
    mask_to_rle,
    polygons_to_mask,
    rle_to_mask,
    segmentation_to_mask,
)


def test_square_polygon_rasterises_to_expected_pixels():
    # A polygon along pixel edges 2..6 covers pixels 2..5 in both directions.
    mask = polygons_to_mask([[2, 2, 6, 2, 6, 6, 2, 6]], 8, 8)
    expected = np.zeros((8, 8), bool)
    expected[2:6, 2:6] = True
    np.testing.assert_array_equal(mask, expected)


def test_rle_round_trip_keeps_every_pixel():
    rng = np.random.default_rng(0)
    mask = rng.random((13, 7)) > 0.6
    rle = mask_to_rle(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [13, 7]
    np.testing.assert_array_equal(rle_to_mask(rle), mask)
    np.testing.assert_array_equal(segmentation_to_mask(rle, 13, 7), mask)


def test_uncompressed_rle_is_decoded():
    mask = np.zeros((4, 3), bool)
    mask[1:3, 1] = True
    # column-major runs: 5 off, 2 on, 5 off
    np.testing.assert_array_equal(rle_to_mask({"size": [4, 3], "counts": [5, 2, 5]}), mask)


def test_bbox_is_tight_xywh_and_zero_for_empty():
    mask = np.zeros((8, 8), bool)
    mask[1:4, 2:7] = True
    assert mask_to_bbox(mask) == [2.0, 1.0, 5.0, 3.0]
    assert mask_to_bbox(np.zeros((3, 3), bool)) == [0.0, 0.0, 0.0, 0.0]


def test_mask_to_polygons_recovers_the_shape_up_to_its_rim():
    mask = np.zeros((20, 20), bool)
    mask[4:12, 5:15] = True
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 1
    back = polygons_to_mask(polygons, 20, 20)
    assert back.sum() <= mask.sum()
    assert back[5:11, 6:14].all() and not back[~mask].any()


def test_instances_coco_round_trip():
    masks = np.zeros((2, 8, 8), bool)
    masks[0, 1:3, 1:3] = True
    masks[1, 4:8, 2:5] = True
    inst = Instances(
        8,
        8,
        np.zeros((2, 4), np.float32),
        np.array([0.9, 0.4], np.float32),
        np.array([1, 11]),
        masks,
    )
    back = Instances.from_coco(inst.to_coco(image_id=3), 8, 8)
    np.testing.assert_array_equal(back.masks, masks)
    np.testing.assert_allclose(back.scores, [0.9, 0.4])
    np.testing.assert_array_equal(back.boxes[1], [2, 4, 5, 8])
    assert len(back.select(back.scores > 0.5)) == 1


def test_instances_reject_inconsistent_lengths():
    with pytest.raises(ValueError):
        Instances(4, 4, np.zeros((1, 4)), np.zeros(2), np.zeros(1), np.zeros((1, 4, 4), bool))
