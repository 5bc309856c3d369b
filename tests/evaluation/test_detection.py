"""Lesion-by-lesion detection: the matching rule, the FROC curve and its CPM, the operating point,
and the numbers :func:`evaluate_dataset` reports under ``lesion_detection``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bsi_d2.evaluation import evaluate_dataset
from bsi_d2.evaluation.detection import LesionDetectionAccumulator, match_lesions
from bsi_d2.postprocess.rasterize import kind_threshold
from bsi_d2.structures.instances import Instances
from bsi_d2.structures.masks import mask_to_rle
from bsi_d2.taxonomy import ClassDef

SHAPE = (32, 32)
SPINE, LESION = 2, 11


def rect(r0, r1, c0, c1):
    m = np.zeros(SHAPE, bool)
    m[r0:r1, c0:c1] = True
    return m


def test_a_hit_by_iou_with_the_centroid_outside():
    gt = rect(0, 10, 0, 10)
    pred = rect(5, 10, 0, 30)  # IoU 50 / 200; centroid (7, 15) right of the lesion
    assert not gt[7, 15]
    match = match_lesions([gt], [pred], [0.9])
    assert match.is_tp.tolist() == [True] and match.matched_gt.tolist() == [0]


def test_a_hit_by_centroid_inside_with_iou_below_the_threshold():
    gt = rect(0, 20, 0, 20)
    pred = rect(8, 10, 8, 10)  # IoU 4 / 400 = 0.01, centroid (9, 9) inside
    assert match_lesions([gt], [pred], [0.9]).is_tp.tolist() == [True]
    # the reverse, a large prediction over a small lesion: IoU 4 / 900, centroid (15, 15) off it
    missed = match_lesions([rect(2, 4, 2, 4)], [rect(0, 30, 0, 30)], [0.9])
    assert missed.is_tp.tolist() == [False] and missed.is_fp.tolist() == [True]


def test_a_miss_is_a_false_positive_and_a_missed_lesion():
    acc = LesionDetectionAccumulator()
    acc.add([rect(0, 5, 0, 5)], [rect(20, 25, 20, 25)], np.array([0.9]))
    result = acc.result(0.5)
    assert (result["sensitivity"], result["precision"], result["fp_per_scan"]) == (0, 0, 1)


def test_two_predictions_on_one_lesion_are_one_hit_and_one_false_positive():
    gt = rect(4, 12, 4, 12)
    # the lower score comes first: the higher one takes the lesion
    match = match_lesions([gt], [rect(5, 12, 5, 12), rect(4, 12, 4, 12)], [0.6, 0.9])
    assert match.is_tp.tolist() == [False, True] and match.is_fp.tolist() == [True, False]


def test_matching_is_greedy_by_descending_score():
    lesion_a, lesion_b = rect(0, 10, 0, 10), rect(0, 10, 12, 22)
    inside_a = rect(2, 8, 2, 8)  # hits a only
    across = rect(0, 10, 0, 16)  # hits a (IoU 0.625) and b (IoU 40 / 220)
    match = match_lesions([lesion_a, lesion_b], [inside_a, across], [0.6, 0.9])
    # in input order both would match; by score the better one takes a and the other is left
    assert match.matched_gt.tolist() == [-1, 0]
    assert match.is_tp.tolist() == [False, True]
    assert match_lesions([lesion_a, lesion_b], [inside_a, across], [0.9, 0.6]).is_tp.all()


def test_predictions_mostly_inside_ignore_regions_are_ignored():
    ignore = rect(16, 32, 16, 32)
    preds = [
        rect(20, 30, 20, 30),  # wholly inside
        rect(20, 30, 10, 20),  # 40 of 100 inside: a false positive
        rect(20, 30, 12, 22),  # 60 of 100 inside
        rect(2, 6, 2, 6),  # hits the lesion: a hit stays a hit
        np.zeros(SHAPE, bool),  # marks nothing
    ]
    match = match_lesions([rect(2, 6, 2, 6)], preds, [0.9, 0.8, 0.7, 0.6, 0.95], ignore)
    assert match.ignored.tolist() == [True, False, True, False, True]
    assert match.is_tp.tolist() == [False, False, False, True, False]
    acc = LesionDetectionAccumulator()
    acc.add([rect(2, 6, 2, 6)], preds, [0.9, 0.8, 0.7, 0.6, 0.95], ignore)
    result = acc.result(0.5)
    assert (result["n_predicted"], result["n_ignored"], result["fp_per_scan"]) == (2, 3, 1.0)
    assert [p["threshold"] for p in result["froc"]] == pytest.approx([0.8, 0.6])


def three_scans() -> LesionDetectionAccumulator:
    """Scan 1: two lesions, hit at 0.9 and 0.4, a false positive at 0.7; scan 2: one lesion,
    hit at 0.3, a false positive at 0.8; scan 3: no lesion, false positives at 0.6 and 0.2."""
    g1, g2, g3 = rect(0, 6, 0, 6), rect(10, 16, 10, 16), rect(20, 26, 20, 26)
    fp_a, fp_b = rect(28, 32, 0, 4), rect(0, 4, 28, 32)
    acc = LesionDetectionAccumulator()
    acc.add([g1, g2], [g1, fp_a, g2], np.array([0.9, 0.7, 0.4]), None)
    acc.add([g3], [fp_a, g3], np.array([0.8, 0.3]), None)
    acc.add([], [fp_a, fp_b], np.array([0.6, 0.2]), None)
    return acc


def test_froc_and_sensitivity_at_fp_by_hand():
    result = three_scans().result(0.5)
    assert (result["n_scans"], result["n_lesions"]) == (3, 3)
    # descending: 0.9 TP, 0.8 FP, 0.7 FP, 0.6 FP, 0.4 TP, 0.3 TP, 0.2 FP
    froc = [(p["threshold"], p["sensitivity"], p["fp_per_scan"]) for p in result["froc"]]
    expected = [
        (0.9, 1 / 3, 0),
        (0.8, 1 / 3, 1 / 3),
        (0.7, 1 / 3, 2 / 3),
        (0.6, 1 / 3, 1),
        (0.4, 2 / 3, 1),
        (0.3, 1, 1),
        (0.2, 1, 4 / 3),
    ]
    assert np.array(froc) == pytest.approx(np.array(expected))
    at_fp = result["sensitivity_at_fp"]
    assert list(at_fp) == ["0.25", "0.5", "1", "2", "4"]
    assert [at_fp[k] for k in at_fp] == pytest.approx([1 / 3, 1 / 3, 1, 1, 1])
    assert result["froc_score"] == pytest.approx((1 / 3 + 1 / 3 + 1 + 1 + 1) / 5)


@pytest.mark.parametrize(
    ("thresh", "expected"),
    [
        # >= 0.5: 0.9 TP, 0.8, 0.7, 0.6 FP; counts 2-2, 1-1, 1-0
        (0.5, dict(sensitivity=1 / 3, precision=1 / 4, fp_per_scan=1, mae=1 / 3, me=1 / 3, n=4)),
        # >= 0.75: 0.9 TP, 0.8 FP; counts 1-2, 1-1, 0-0
        (
            0.75,
            dict(sensitivity=1 / 3, precision=1 / 2, fp_per_scan=1 / 3, mae=1 / 3, me=-1 / 3, n=2),
        ),
        (0.95, dict(sensitivity=0, precision=None, fp_per_scan=0, mae=1, me=-1, n=0)),
    ],
)
def test_the_operating_point(thresh, expected):
    result = three_scans().result(thresh)
    assert result["sensitivity"] == pytest.approx(expected["sensitivity"])
    assert result["precision"] == pytest.approx(expected["precision"])
    assert result["fp_per_scan"] == pytest.approx(expected["fp_per_scan"])
    assert result["count_mean_absolute_error"] == pytest.approx(expected["mae"])
    assert result["count_mean_error"] == pytest.approx(expected["me"])
    assert result["n_predicted"] == expected["n"]


def test_equal_scores_make_one_froc_point():
    acc = LesionDetectionAccumulator()
    acc.add([rect(0, 6, 0, 6)], [rect(0, 6, 0, 6), rect(20, 26, 20, 26)], [0.5, 0.5])
    acc.add([], [], np.zeros(0))
    assert acc.result(0.5)["froc"] == [{"threshold": 0.5, "sensitivity": 1.0, "fp_per_scan": 0.5}]


def test_empty_cases():
    nothing = LesionDetectionAccumulator().result(0.5)
    assert (nothing["n_scans"], nothing["n_lesions"], nothing["froc"]) == (0, 0, [])
    assert set(nothing["sensitivity_at_fp"].values()) == {None}
    for key in ("froc_score", "sensitivity", "precision", "fp_per_scan"):
        assert nothing[key] is None
    assert nothing["count_mean_absolute_error"] is None

    missed = LesionDetectionAccumulator()
    missed.add([rect(0, 6, 0, 6), rect(10, 12, 10, 12)], [], np.zeros(0))
    result = missed.result(0.5)
    assert set(result["sensitivity_at_fp"].values()) == {0.0} and result["froc_score"] == 0.0
    assert (result["sensitivity"], result["precision"], result["fp_per_scan"]) == (0.0, None, 0.0)
    assert result["count_mean_error"] == -2

    no_lesions = LesionDetectionAccumulator()
    no_lesions.add([], [rect(0, 6, 0, 6)], [0.7], np.zeros(SHAPE, bool))
    no_lesions.add([], [], [], None)
    result = no_lesions.result(0.5)
    assert result["froc_score"] is None and result["sensitivity"] is None
    assert (result["precision"], result["fp_per_scan"], result["n_lesions"]) == (0.0, 0.5, 0)
    assert result["froc"] == [{"threshold": 0.7, "sensitivity": None, "fp_per_scan": 0.5}]


def test_masks_of_different_shapes_are_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        match_lesions([rect(0, 4, 0, 4)], [np.zeros((16, 16), bool)], [0.9])
    with pytest.raises(ValueError, match="2 predicted masks but 1 scores"):
        match_lesions([], [rect(0, 4, 0, 4), rect(5, 8, 5, 8)], [0.9])


# -- through evaluate_dataset ------------------------------------------------------------------


def coco(images: dict[int, list[tuple[int, np.ndarray, int]]]) -> dict:
    """COCO ground truth of 32 x 32 images: image id -> (category id, mask, iscrowd)."""
    return {
        "images": [{"id": i, "height": SHAPE[0], "width": SHAPE[1]} for i in images],
        "annotations": [
            {"image_id": i, "category_id": c, "iscrowd": crowd, "segmentation": mask_to_rle(m)}
            for i, objs in images.items()
            for c, m, crowd in objs
        ],
    }


def predicted(objs: list[tuple[int, np.ndarray, float]]) -> Instances:
    return Instances.from_masks(
        *SHAPE, [c for c, *_ in objs], [m for _, m, _ in objs], [s for *_, s in objs]
    )


def test_evaluate_dataset_reports_lesion_detection(taxonomy):
    l1, l2, l3 = rect(2, 8, 10, 16), rect(12, 18, 10, 16), rect(4, 10, 4, 10)
    crowd = rect(24, 32, 24, 32)
    gt = coco(
        {
            1: [(SPINE, rect(0, 30, 8, 18), 0), (LESION, l1, 0), (LESION, l2, 0)]
            + [(LESION, crowd, 1)],  # an ignore region, not a lesion to find
            2: [(LESION, l3, 0)],  # no prediction entry at all: missed
        }
    )
    preds = [
        (
            1,
            predicted(
                [
                    (SPINE, rect(0, 30, 8, 18), 0.95),  # not a lesion: no detection
                    (LESION, rect(3, 8, 10, 16), 0.9),  # hits l1
                    (LESION, rect(20, 24, 0, 4), 0.4),  # false positive
                    (LESION, rect(25, 31, 25, 31), 0.8),  # in the ignore region
                ]
            ),
        )
    ]
    plain = evaluate_dataset(gt, preds, taxonomy, score_thresh=0.5)["lesion_detection"]
    assert (plain["n_scans"], plain["n_lesions"], plain["n_ignored"]) == (2, 3, 1)
    froc = [(p["threshold"], p["sensitivity"], p["fp_per_scan"]) for p in plain["froc"]]
    assert np.array(froc) == pytest.approx(np.array([(0.9, 1 / 3, 0.0), (0.4, 1 / 3, 0.5)]))
    assert list(plain["sensitivity_at_fp"].values()) == pytest.approx([1 / 3] * 5)
    assert plain["froc_score"] == pytest.approx(1 / 3)
    # operating point at 0.5: the hit only; counts 1 of 2 and 0 of 1
    assert plain["operating_thresh"] == 0.5
    assert (plain["precision"], plain["fp_per_scan"], plain["n_predicted"]) == (1.0, 0.0, 1)
    assert plain["sensitivity"] == pytest.approx(1 / 3)
    assert (plain["count_mean_absolute_error"], plain["count_mean_error"]) == (1.0, -1.0)

    # the lesion class's own threshold, by name or by id, sets the operating point
    for class_thresh in ({"lesion": 0.3}, {LESION: 0.3}):
        lowered = evaluate_dataset(
            gt, preds, taxonomy, score_thresh=0.5, class_thresh=class_thresh
        )["lesion_detection"]
        assert lowered["operating_thresh"] == 0.3 and lowered["froc"] == plain["froc"]
        assert (lowered["precision"], lowered["fp_per_scan"], lowered["n_predicted"]) == (
            0.5,
            0.5,
            2,
        )
        assert (lowered["count_mean_absolute_error"], lowered["count_mean_error"]) == (0.5, -0.5)


def test_one_operating_point_needs_one_lesion_threshold(taxonomy):
    second = ClassDef(12, "lesion_soft", "lesion", ("lesion_soft",), (255, 0, 255))
    two = dataclasses.replace(taxonomy, classes=(*taxonomy.classes, second))
    assert kind_threshold(two, "lesion", 0.5, {"lesion": 0.3, 12: 0.3}) == 0.3
    assert kind_threshold(two, "decoy", 0.5, {"lesion": 0.3}) == 0.5
    with pytest.raises(ValueError, match="lesion, lesion_soft"):
        kind_threshold(two, "lesion", 0.5, {"lesion": 0.3})
