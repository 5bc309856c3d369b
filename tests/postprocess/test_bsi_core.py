"""compute_bsi against hand computations on small constructed label maps."""

import numpy as np
import pytest

from bsi_d2.postprocess.bsi import burden_group, combine_views, compute_bsi, compute_bstbi
from bsi_d2.taxonomy import load_taxonomy

TAX = load_taxonomy()
SKULL, SPINE, HUM_AR, HUM_PR, KIDNEY = 1, 2, 4, 6, 10


def _maps():
    # 10 x 20 merged image: columns 0..9 anterior, 10..19 posterior.
    region = np.zeros((10, 20), int)
    lesion = np.zeros((10, 20), bool)
    region[0:4, 0:5] = SKULL  # anterior skull, 20 px
    region[0:4, 10:15] = SKULL  # posterior skull, 20 px
    region[5:10, 0:2] = HUM_AR  # anterior right humerus, 10 px
    region[5:10, 18:20] = HUM_PR  # posterior right humerus, 10 px
    region[5:7, 5:8] = KIDNEY
    lesion[0:2, 0:5] = True  # 10 px of anterior skull
    lesion[0:1, 10:15] = True  # 5 px of posterior skull
    lesion[5:10, 0:1] = True  # 5 px of anterior humerus; posterior humerus clean
    lesion[5, 5] = True  # in the kidney
    lesion[9, 9] = True  # outside every region
    return region, lesion


def test_bsi_equals_hand_computation():
    region, lesion = _maps()
    result = compute_bsi(region, lesion, TAX)
    skull = result.bones["skull"]
    assert skull.involvement_per_view == {"anterior": 0.5, "posterior": 0.25}
    assert skull.involvement == pytest.approx(0.375)
    hum = result.bones["humerus_right"]
    assert hum.involvement_per_view == {"anterior": 0.5, "posterior": 0.0}
    assert result.bones["spine"].involvement_per_view == {"anterior": None, "posterior": None}
    expected = 0.375 * 18.4 + 0.25 * 1.65
    assert result.bsi == pytest.approx(expected)
    assert result.lesion_pixels_total == 22
    assert result.lesion_pixels_in_regions == 20
    assert result.lesion_pixels_in_decoys == 1
    assert result.lesion_pixels_outside == 1


@pytest.mark.parametrize(
    ("rule", "expected"), [("mean", 0.375), ("max", 0.5), ("anterior", 0.5), ("posterior", 0.25)]
)
def test_combine_rules(rule, expected):
    region, lesion = _maps()
    assert compute_bsi(region, lesion, TAX, combine=rule).bones["skull"].involvement == expected


def test_combine_skips_absent_view_and_rejects_unknown_rule():
    assert combine_views({"anterior": 0.2, "posterior": None}) == 0.2
    with pytest.raises(ValueError):
        combine_views({"anterior": 0.2}, "median")


def test_bstbi_formula():
    counts = np.full((4, 4), 2.0)
    lesion = np.zeros((4, 4), bool)
    lesion[0, 0:2] = True
    counts[0, 0:2] = 10.0
    bladder = np.zeros((4, 4), bool)
    bladder[3, 3] = True
    # K * 20 / ((K - 1) * 20 + total 48 - bladder 2), K = 5
    assert compute_bstbi(counts, lesion, bladder) == pytest.approx(100 / (80 + 48 - 2))
    assert compute_bstbi(counts, np.zeros((4, 4), bool)) == 0.0


def test_whole_body_lesion_gives_bstbi_one_without_bladder():
    counts = np.ones((3, 3))
    assert compute_bstbi(counts, np.ones((3, 3), bool)) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("n", "group"),
    [
        (0, "none"),
        (1, "few"),
        (3, "few"),
        (4, "medium"),
        (6, "medium"),
        (7, "extensive"),
        (30, "extensive"),
    ],
)
def test_burden_groups(n, group):
    assert burden_group(n) == group
