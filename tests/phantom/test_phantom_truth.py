"""The truth builder on hand-made cases: BSI and BSTBI against hand computation, disjointness."""

import numpy as np
import pytest
from shapely.geometry import Polygon, box

from bsi_d2.phantom.truth import (
    LabeledInstance,
    build_truth,
    labelme_shapes,
    make_disjoint,
    polygon_points,
)
from bsi_d2.structures.masks import polygons_to_mask, rle_to_mask
from bsi_d2.taxonomy import load_taxonomy

TAX = load_taxonomy()


def rect(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def constructed_case():
    """A 100 x 400 merged image: anterior columns 0..199, posterior 200..399."""
    instances = [
        LabeledInstance("spine", "anterior", [rect(10, 20, 30, 40)], 1),  # 400 px
        LabeledInstance("spine", "posterior", [rect(300, 20, 320, 40)], 2),  # 400 px
        LabeledInstance("chest", "anterior", [rect(50, 50, 70, 70), rect(80, 50, 100, 70)], 3),
        LabeledInstance("lesion", "anterior", [rect(10, 20, 20, 30)], 4, lesion_id=1),  # 100
        LabeledInstance("lesion", "posterior", [rect(300, 20, 305, 40)], 5, lesion_id=1),  # 100
        LabeledInstance("lesion", "anterior", [rect(50, 50, 60, 70)], 6, lesion_id=2),  # 200
    ]
    counts = np.full((100, 400), 2.0)
    for inst in instances[3:]:
        counts[polygons_to_mask(inst.flat(), 100, 400)] = 10.0
    return instances, counts


def test_constructed_case_matches_hand_computation():
    instances, counts = constructed_case()
    truth = build_truth(instances, counts, TAX)
    # spine 100/400 in each view -> 0.25 x 8.3; chest 200/800 anterior only -> 0.25 x 8.7
    assert truth["involvement"]["spine"] == {"anterior": 0.25, "posterior": 0.25, "combined": 0.25}
    assert truth["involvement"]["chest"] == {"anterior": 0.25, "posterior": None, "combined": 0.25}
    assert truth["bsi_per_bone"]["spine"] == pytest.approx(0.25 * 8.3)
    assert truth["bsi_per_bone"]["chest"] == pytest.approx(0.25 * 8.7)
    assert truth["bsi_per_bone"]["skull"] is None  # found in neither view: not assessed
    assert truth["bsi"] == pytest.approx(2.075 + 2.175)
    # BSTBI per view = 5 sum_L / (4 sum_L + sum_R), lesion px at 10, others at 2; anterior:
    # 300 lesion px of 20000, posterior 100; the record's BSTBI is their mean
    anterior = 5 * 3000 / (4 * 3000 + 3000 + 19700 * 2)
    posterior = 5 * 1000 / (4 * 1000 + 1000 + 19900 * 2)
    assert truth["bstbi_per_view"] == pytest.approx({"anterior": anterior, "posterior": posterior})
    assert truth["bstbi"] == pytest.approx((anterior + posterior) / 2)
    assert truth["lesion_instances"] == 3
    assert truth["lesion_count"] == 2  # lesion 1 is seen in both views
    assert truth["burden_group"] == "few"
    chest = next(r for r in truth["instances"] if r["category_name"] == "chest")
    assert chest["area"] == 800 and chest["bbox"] == [50.0, 50.0, 50.0, 20.0]
    assert rle_to_mask(chest["segmentation"]).sum() == 800
    assert truth["bsi_detail"]["lesion_pixels_total"] == 400
    assert truth["lesion_pixels_counted"] == 400


def test_lesion_outside_regions_does_not_count():
    instances, counts = constructed_case()
    instances.append(
        LabeledInstance("lesion", "anterior", [rect(150, 80, 160, 90)], 7, lesion_id=3)
    )
    truth = build_truth(instances, counts, TAX)
    assert truth["bsi"] == pytest.approx(2.075 + 2.175)
    assert truth["lesion_pixels_outside"] == 100
    assert truth["lesion_count"] == 3


def test_overlapping_regions_are_refused():
    instances = [
        LabeledInstance("spine", "anterior", [rect(10, 10, 30, 30)], 1),
        LabeledInstance("chest", "anterior", [rect(25, 10, 50, 30)], 2),
    ]
    with pytest.raises(ValueError, match="chest .* overlaps spine"):
        build_truth(instances, np.ones((60, 120)), TAX)


def test_a_decoy_may_overlap_a_region():
    instances = [
        LabeledInstance("pelvis", "anterior", [rect(10, 10, 50, 40)], 1),
        LabeledInstance("bladder", "anterior", [rect(20, 20, 35, 32)], 2),  # over the pelvis
        LabeledInstance("kidney", "anterior", [rect(60, 10, 70, 30)], 3),
    ]
    truth = build_truth(instances, np.ones((60, 120)), TAX)
    areas = {r["category_name"]: r["area"] for r in truth["instances"]}
    assert areas == {"pelvis": 40 * 30, "bladder": 15 * 12, "kidney": 10 * 20}


def test_regions_overlapping_each_other_are_refused_beside_a_decoy():
    instances = [
        LabeledInstance("spine", "anterior", [rect(10, 10, 30, 30)], 1),
        LabeledInstance("bladder", "anterior", [rect(15, 15, 40, 25)], 2),
        LabeledInstance("chest", "anterior", [rect(25, 10, 50, 30)], 3),
    ]
    with pytest.raises(ValueError, match="chest .* overlaps spine"):
        build_truth(instances, np.ones((60, 120)), TAX)


def test_overlapping_decoys_are_refused():
    instances = [
        LabeledInstance("pelvis", "anterior", [rect(10, 10, 50, 40)], 1),
        LabeledInstance("kidney", "anterior", [rect(10, 10, 30, 30)], 2),
        LabeledInstance("bladder", "anterior", [rect(25, 20, 40, 35)], 3),
    ]
    with pytest.raises(ValueError, match=r"bladder \(anterior\) overlaps kidney on 50 pixels"):
        build_truth(instances, np.ones((60, 120)), TAX)


def test_make_disjoint_leaves_no_shared_pixel():
    outlines = {
        "spine": box(40, 10, 60, 90),
        "chest": box(10, 20, 90, 60),
        "kidney_right": Polygon([(20, 50), (45, 50), (45, 80), (20, 80)]),
    }
    disjoint = make_disjoint(outlines)
    masks = {
        k: polygons_to_mask([sum(p, []) for p in polygon_points(g)], 100, 100)
        for k, g in disjoint.items()
    }
    stack = np.stack(list(masks.values())).astype(int)
    assert stack.sum(axis=0).max() == 1
    assert masks["spine"].sum() == 20 * 80  # the highest priority keeps all its pixels
    assert masks["chest"].any() and masks["kidney_right"].any()


def test_polygon_with_hole_is_cut_into_hole_free_polygons():
    ring = box(10, 10, 50, 50).difference(box(25, 25, 35, 35))
    polys = polygon_points(ring)
    assert len(polys) >= 2
    assert all(Polygon(p).is_valid and not Polygon(p).interiors for p in polys)
    mask = polygons_to_mask([sum(p, []) for p in polys], 60, 60)
    assert mask.sum() == 40 * 40 - 10 * 10
    assert not mask[30, 30]


def test_labelme_shapes_share_group_id_per_instance():
    instances, _ = constructed_case()
    shapes = labelme_shapes(instances)
    chest = [s for s in shapes if s["label"] == "chest"]
    assert len(chest) == 2 and {s["group_id"] for s in chest} == {3}
    assert all(s["shape_type"] == "polygon" and len(s["points"]) >= 3 for s in shapes)


def test_a_metastasis_wholly_behind_the_bladder_is_counted_as_hidden():
    instances, counts = constructed_case()
    instances += [
        LabeledInstance("pelvis", "anterior", [rect(100, 60, 180, 100)], 7),
        LabeledInstance("bladder", "anterior", [rect(120, 70, 160, 95)], 8),
        LabeledInstance("lesion", "anterior", [rect(130, 75, 140, 85)], 9, lesion_id=3),
        LabeledInstance("lesion", "anterior", [rect(150, 85, 170, 99)], 10, lesion_id=4),
    ]
    truth = build_truth(instances, counts, TAX)
    # lesion 3 lies wholly inside the bladder; lesion 4 reaches the bare pelvis
    assert truth["lesions_hidden_by_decoys"] == 1
    assert truth["lesion_count"] == 3
