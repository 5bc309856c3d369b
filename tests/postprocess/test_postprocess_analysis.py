"""analyse_scan and its parts on hand-drawn instances in a 20 x 40 merged image.

Columns 0..19 are the anterior view, 20..39 the posterior one.
"""

import json

import numpy as np
import pytest
from hand_drawn import H, W, box, make

from bsi_d2.postprocess.analysis import analyse_scan
from bsi_d2.postprocess.assign import assign_views
from bsi_d2.postprocess.bsi import compute_bsi
from bsi_d2.postprocess.match import (
    count_matched_lesions,
    match_points,
    mirror_to_anterior,
    view_midlines,
)
from bsi_d2.postprocess.rasterize import (
    filter_by_score,
    label_image,
    lesion_union,
    mask_boxes,
    rasterize_regions,
)
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import load_taxonomy

TAX = load_taxonomy()
SKULL, SPINE, CHEST, HUM_AR, PELVIS, KIDNEY, LESION = 1, 2, 3, 4, 8, 10, 11


def test_overlap_goes_to_higher_score_whatever_the_order():
    a = (SKULL, 0.9, box(0, 10, 0, 10))
    b = (SPINE, 0.6, box(5, 15, 5, 15))
    for inst in (make(a, b), make(b, a)):
        region = rasterize_regions(inst, TAX)
        assert region[7, 7] == SKULL
        assert region[12, 12] == SPINE
        assert region[0, 0] == SKULL and region[19, 19] == 0
    swapped = make((SKULL, 0.6, box(0, 10, 0, 10)), (SPINE, 0.9, box(5, 15, 5, 15)))
    assert rasterize_regions(swapped, TAX)[7, 7] == SPINE


def test_equal_scores_go_to_the_earlier_instance_and_lesions_are_not_regions():
    inst = make(
        (SKULL, 0.8, box(0, 10, 0, 10)),
        (SPINE, 0.8, box(0, 10, 0, 10)),
        (LESION, 0.99, box(2, 4, 2, 4)),
    )
    region = rasterize_regions(inst, TAX)
    assert set(np.unique(region)) == {0, SKULL}
    lesion = lesion_union(inst, TAX)
    assert lesion.sum() == 4 and lesion[2:4, 2:4].all()
    labels = label_image(region, lesion, LESION)
    assert labels.dtype == np.uint8 and labels[3, 3] == LESION and labels[5, 5] == SKULL


def test_mask_boxes_are_tight_and_empty_masks_give_zeros():
    masks = np.stack([box(3, 7, 30, 33), np.zeros((H, W), bool)])
    np.testing.assert_array_equal(mask_boxes(masks), [[3, 7, 30, 33], [0, 0, 0, 0]])


def test_rasterisation_equals_full_image_reference():
    rng = np.random.default_rng(0)
    items = []
    for _ in range(12):
        r, c = rng.integers(0, H - 3), rng.integers(0, W - 3)
        m = np.zeros((H, W), bool)
        m[r : r + rng.integers(2, 9), c : c + rng.integers(2, 15)] = True
        m &= rng.random((H, W)) < 0.8
        items.append((int(rng.choice([SKULL, SPINE, CHEST, KIDNEY])), float(rng.random()), m))
    inst = make(*items)
    reference = np.zeros((H, W), np.uint8)
    for i in np.argsort(inst.scores, kind="stable"):
        reference[inst.masks[i]] = inst.category_ids[i]
    np.testing.assert_array_equal(rasterize_regions(inst, TAX), reference)


def test_views_follow_the_majority_of_pixels():
    inst = make(
        (SKULL, 1.0, box(0, 5, 0, 10)),  # all anterior
        (SKULL, 1.0, box(0, 5, 25, 35)),  # all posterior
        (CHEST, 1.0, box(0, 5, 14, 27)),  # 6 columns left of 20, 7 right
        (CHEST, 1.0, box(0, 5, 12, 24)),  # 8 left, 4 right
        (CHEST, 1.0, box(0, 5, 15, 25)),  # 5 and 5: a tie goes anterior
    )
    assert assign_views(inst) == ["anterior", "posterior", "posterior", "anterior", "anterior"]


@pytest.mark.parametrize(
    ("score_thresh", "class_thresh", "kept_ids"),
    [
        (0.5, None, [SKULL, LESION]),
        (0.5, {"lesion": 0.8}, [SKULL]),
        (0.5, {LESION: 0.2, "spine": 0.35}, [SKULL, SPINE, LESION]),
        (0.1, {"skull": 0.95}, [SPINE, LESION]),
    ],
)
def test_per_class_thresholds(score_thresh, class_thresh, kept_ids):
    inst = make(
        (SKULL, 0.9, box(0, 4, 0, 4)),
        (SPINE, 0.4, box(5, 9, 0, 4)),
        (LESION, 0.6, box(0, 2, 0, 2)),
        (99, 1.0, box(0, 2, 0, 2)),  # a class the taxonomy does not know is never kept
    )
    kept = filter_by_score(inst, TAX, score_thresh, class_thresh)
    assert kept.category_ids.tolist() == kept_ids


def test_threshold_for_unknown_class_is_an_error():
    with pytest.raises(ValueError, match="unknown class"):
        filter_by_score(make(), TAX, 0.5, {"tibia": 0.3})


def test_lesion_in_kidney_and_outside_are_reported_apart():
    inst = make(
        (SKULL, 0.9, box(0, 10, 0, 10)),  # anterior skull, 100 px
        (SKULL, 0.9, box(0, 10, 20, 30)),  # posterior skull, 100 px
        (KIDNEY, 0.9, box(12, 16, 4, 8)),  # 16 px
        (LESION, 0.9, box(0, 5, 0, 2)),  # 10 px in the anterior skull
        (LESION, 0.9, box(12, 14, 4, 8)),  # 8 px in the kidney
        (LESION, 0.9, box(17, 20, 30, 33)),  # 9 px outside every region
    )
    counts = np.ones((H, W), np.float32)
    a = analyse_scan(inst, counts, TAX, match_views=False)
    skull = a.bsi.bones["skull"]
    assert skull.involvement_per_view == {"anterior": 0.1, "posterior": 0.0}
    assert a.bsi.bsi == pytest.approx(0.05 * 18.4)
    assert a.record["lesion_pixels_in_decoys"] == 8
    assert a.record["lesion_pixels_outside"] == 9
    assert a.record["lesion_pixels_counted"] == 10
    assert a.record["lesion_count"] == 2 and a.record["lesions_in_decoys"] == 1
    assert a.record["lesions_by_region"] == {"skull": 1, "kidney": 1, "other": 1}
    assert a.record["sites"] == ["skull", "other"]
    assert a.record["burden_group"] == "few" and a.record["abnormal"] is True
    # BSTBI per view on ones, only the 10 skull pixels in L: K * 10 / ((K - 1) * 10 + 400)
    assert a.record["bstbi_anterior"] == pytest.approx(50 / 440)
    assert a.record["bstbi_posterior"] == 0.0
    assert a.record["views_matched"] is False


def test_lesion_site_is_the_region_holding_most_of_it():
    inst = make(
        (SKULL, 0.9, box(0, 10, 0, 10)),
        (SPINE, 0.9, box(10, 20, 0, 10)),
        (LESION, 0.9, box(8, 13, 0, 2)),  # 4 px skull, 6 px spine
    )
    a = analyse_scan(inst, None, TAX)
    assert a.record["lesions_by_region"] == {"spine": 1}
    assert a.record["sites"] == ["skull", "spine"]  # both hold counted pixels
    assert [les["site_name"] for les in a.record["lesions"]] == ["spine"]


def test_a_lesion_only_in_the_kidney_does_not_make_the_scan_abnormal():
    kidney_only = make((KIDNEY, 0.9, box(12, 16, 4, 8)), (LESION, 0.9, box(12, 14, 4, 8)))
    a = analyse_scan(kidney_only, None, TAX)
    assert a.lesion_count == 0 and a.record["abnormal"] is False
    assert a.record["lesions_by_region"] == {"kidney": 1}
    outside = make((LESION, 0.9, box(12, 14, 4, 8)))
    assert analyse_scan(outside, None, TAX).record["abnormal"] is True


def test_record_is_json_and_regions_follow_the_weights():
    a = analyse_scan(make((SKULL, 0.9, box(0, 5, 0, 5))), None, TAX)
    record = json.loads(json.dumps(a.record))
    assert [r["bone"] for r in record["regions"]] == list(TAX.weights)
    skull = record["regions"][0]
    assert skull["report_name"] == "skull" and skull["weight"] == 18.4
    assert skull["involvement_anterior"] == 0.0 and skull["involvement_posterior"] is None
    assert skull["assessed"] == "one view"
    assert record["bstbi"] is None and record["bsi"] == 0.0 and record["bsi_coverage"] == 18.4
    assert record["bstbi_notes"] == ["not computed: no raw counts"]
    assert record["burden_group"] == "none" and record["abnormal"] is False
    humerus = next(r for r in record["regions"] if r["bone"] == "humerus_right")
    assert humerus["report_name"] == "humerus" and humerus["assessed"] == "not assessed"


def test_counts_of_wrong_shape_are_rejected():
    with pytest.raises(ValueError, match="counts"):
        analyse_scan(make(), np.ones((3, 3)), TAX)


def test_bincount_bsi_equals_isin_reference():
    rng = np.random.default_rng(1)
    region = rng.choice([0, SKULL, SPINE, CHEST, HUM_AR, 6, PELVIS, 9, KIDNEY], size=(30, 50))
    lesion = rng.random((30, 50)) < 0.3
    result = compute_bsi(region, lesion, TAX)  # decoys painted into the region map still work
    for bone, b in result.bones.items():
        ids = [c.id for c in TAX.region_classes if c.bone == bone]
        for view, cols in (("anterior", slice(0, 25)), ("posterior", slice(25, 50))):
            in_region = np.isin(region[:, cols], ids)
            assert b.region_pixels[view] == in_region.sum()
            assert b.lesion_pixels[view] == (in_region & lesion[:, cols]).sum()
    assert result.lesion_pixels_in_decoys == (lesion & (region == KIDNEY)).sum()
    assert result.lesion_pixels_outside == (lesion & (region == 0)).sum()


# -- matching across views ------------------------------------------------------------------


def test_mirror_maps_posterior_onto_anterior_about_the_midlines():
    midlines = {"anterior": 10.0, "posterior": 30.0}
    pts = np.array([[5.0, 33.0], [7.0, 30.0]])
    np.testing.assert_allclose(mirror_to_anterior(pts, midlines), [[5.0, 7.0], [7.0, 10.0]])


def test_midlines_from_region_map_or_half_centres():
    region = np.zeros((H, W), np.uint8)
    region[:, 4:9] = SPINE  # anterior midline 6
    assert view_midlines(region) == {"anterior": 6.0, "posterior": 29.5}


def test_hungarian_matching_respects_the_radius_and_is_one_to_one():
    a = np.array([[0.0, 0.0], [10.0, 0.0], [50.0, 50.0]])
    p = np.array([[10.0, 1.0], [0.0, 1.0], [0.0, 2.0]])
    pairs = sorted(match_points(a, p, radius=3.0))
    assert pairs == [(0, 1), (1, 0)]
    assert match_points(a, p, radius=0.5) == []
    assert match_points(a[:0], p) == []


def test_lesion_seen_in_both_views_counts_once():
    spine_a = box(0, 20, 8, 12)  # anterior midline 9.5
    spine_p = box(0, 20, 28, 32)  # posterior midline 29.5
    items = [
        (SPINE, 0.9, spine_a),
        (SPINE, 0.9, spine_p),
        (LESION, 0.9, box(2, 4, 4, 6)),  # anterior, viewer's left of the spine: col 4.5
        (LESION, 0.9, box(2, 4, 33, 35)),  # posterior col 33.5 -> mirrored 9.5+29.5-33.5 = 5.5
        (LESION, 0.9, box(15, 17, 14, 16)),  # anterior only
        (LESION, 0.9, box(15, 17, 33, 35)),  # posterior, mirrored col 5.5: too far from col 14.5
    ]
    a = analyse_scan(make(*items), None, TAX, match_radius=5.0)
    assert a.record["lesion_instances"] == 4
    assert a.lesion_count == 3
    assert a.lesions.pairs == [(2, 3)]
    assert [les["views"] for les in a.record["lesions"]] == [
        ["anterior", "posterior"],
        ["anterior"],
        ["posterior"],
    ]
    assert analyse_scan(make(*items), None, TAX, match_views=False).lesion_count == 4
    count, _ = count_matched_lesions(np.zeros((0, 2)), [], view_midlines(a.region_map))
    assert count == 0


def test_uint8_masks_are_read_as_masks_not_indices():
    inst = make((SKULL, 0.9, box(0, 10, 0, 10)), (LESION, 0.9, box(0, 5, 0, 2)))
    as_uint8 = Instances(H, W, inst.boxes, inst.scores, inst.category_ids,
                         inst.masks.astype(np.uint8))  # fmt: skip
    assert analyse_scan(as_uint8, None, TAX).bsi.bsi == analyse_scan(inst, None, TAX).bsi.bsi > 0


def test_matching_keeps_a_close_pair_rather_than_pairing_neighbours():
    # anterior A at 0 and B at 11; mirrored posterior P at 0 (A's other view) and Q at -13:
    # A-P (0) with B and Q single (10 + 10) beats the two pairs B-P (11) + A-Q (13)
    a = np.array([[0.0, 0.0], [0.0, 11.0]])
    p = np.array([[0.0, 0.0], [0.0, -13.0]])
    assert match_points(a, p, radius=20.0) == [(0, 0)]
    # far apart from any other, both pairs are kept
    assert sorted(match_points(a, np.array([[0.0, 11.5], [0.0, 0.5]]), radius=20.0)) == [
        (0, 1),
        (1, 0),
    ]
