"""Dense lesion probability map -> lesion instances, exact on hand-built maps."""

import numpy as np
import pytest

from bsi_d2.postprocess.dense import combine_lesion_sources, lesion_components
from bsi_d2.structures.instances import Instances

LESION, SKULL = 11, 1


def hand_map():
    """16 x 16 scan, two views of 8 columns: a 2 x 2 blob (0.9) and a 3 x 1 bar (0.6) in the
    anterior view, a 2 x 3 blob straddling the seam (0.7), one stray pixel (0.95)."""
    p = np.zeros((16, 16), np.float32)
    p[2:4, 1:3] = 0.9
    p[10:13, 4] = 0.6
    p[6:8, 6:9] = 0.7  # columns 6, 7 anterior; 8 posterior
    p[14, 14] = 0.95
    return p


def test_components_per_view_with_mean_scores_and_min_area():
    masks, scores = lesion_components(hand_map(), 0.5, min_area=2)
    pairs = sorted((int(m.sum()), round(float(s), 4)) for m, s in zip(masks, scores, strict=True))
    # the seam splits the 2 x 3 blob into 2 x 2 (anterior) and 2 x 1 (posterior); the stray
    # pixel is below min_area
    assert pairs == [(2, 0.7), (3, 0.6), (4, 0.7), (4, 0.9)]
    assert not any(m[:, :8].any() and m[:, 8:].any() for m in masks)  # no lesion on the seam


def test_threshold_is_inclusive_and_empty_maps_give_nothing():
    masks, _ = lesion_components(hand_map(), 0.6, min_area=1)
    assert len(masks) == 5  # 0.6 itself is kept
    masks, scores = lesion_components(np.zeros((16, 16)), 0.5)
    assert masks.shape == (0, 16, 16) and scores.shape == (0,)


def _rcnn():
    skull = np.zeros((16, 16), bool)
    skull[:6, :6] = True
    lesion = np.zeros((16, 16), bool)
    lesion[10:13, 3:5] = True  # overlaps the 0.6 bar
    weak = np.zeros((16, 16), bool)
    weak[0, 10:12] = True
    return Instances.from_masks(
        16, 16, [SKULL, LESION, LESION], [skull, lesion, weak], [0.99, 0.8, 0.1]
    )


def test_sources():
    prob, rcnn = hand_map(), _rcnn()
    same = combine_lesion_sources(rcnn, prob, LESION, "rcnn", 0.5, 2)
    assert np.array_equal(same.masks, rcnn.masks) and same.lesion_probability is not None
    dense = combine_lesion_sources(rcnn, prob, LESION, "dense", 0.5, 2)
    assert list(dense.category_ids) == [SKULL] + [LESION] * 4
    assert dense.masks[0].sum() == 36  # regions untouched
    union = combine_lesion_sources(rcnn, prob, LESION, "union", 0.5, 2, rcnn_threshold=0.2)
    lesions = union.masks[union.category_ids == LESION]
    # the R-CNN lesion joins the bar it overlaps into one 6-px lesion scored 0.8; the weak one
    # (0.1 < 0.2) is not added
    areas = sorted(int(m.sum()) for m in lesions)
    assert areas == [2, 4, 4, 6]
    bar = next(i for i, m in enumerate(union.masks) if m.sum() == 6)
    assert union.scores[bar] == pytest.approx(0.8)
    assert not union.masks[:, 0, 10:12].any()


def test_bad_source_and_shape():
    with pytest.raises(ValueError, match="lesion source"):
        combine_lesion_sources(_rcnn(), hand_map(), LESION, "both", 0.5)
    with pytest.raises(ValueError, match="lesion probability"):
        combine_lesion_sources(_rcnn(), np.zeros((8, 8)), LESION, "dense", 0.5)
