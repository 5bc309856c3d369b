"""The geometric reference BSI on hand-built shapes, and the half-maximum outline rule."""

import math
from dataclasses import dataclass

import pytest
from shapely.geometry import Point, box

from bsi_d2.phantom.reference import geometric_reference
from bsi_d2.phantom.render import drawn_outline

WEIGHTS = {"spine": 8.3, "chest": 8.7}


@dataclass(frozen=True)
class Lesion:
    lesion_id: int
    bone: str | None
    outline: object


def regions():
    # spine 10 x 100 = 1000 px; chest 100 x 100 = 10000 px, overlapping the spine in projection
    return {"spine": box(45, 0, 55, 100), "chest": box(0, 0, 100, 100)}


def test_area_fraction_times_weight():
    ref = geometric_reference(regions(), [Lesion(1, "spine", box(45, 10, 55, 20))], WEIGHTS)
    assert ref["involvement"]["spine"] == pytest.approx(0.1)
    assert ref["involvement"]["chest"] == 0.0
    assert ref["bsi"] == pytest.approx(0.83)


def test_a_lesion_counts_for_its_own_bone_wherever_it_projects():
    # a rib lesion projecting over the spine is chest disease, not spine disease
    ref = geometric_reference(regions(), [Lesion(1, "chest", box(45, 10, 55, 20))], WEIGHTS)
    assert ref["involvement"]["spine"] == 0.0
    assert ref["involvement"]["chest"] == pytest.approx(100 / 10000)


def test_overlapping_lesions_count_once_and_are_clipped_to_the_region():
    lesions = [
        Lesion(1, "spine", box(45, 10, 55, 20)),
        Lesion(2, "spine", box(45, 15, 55, 25)),  # overlaps the first by 50 px
        Lesion(3, "spine", box(40, 90, 60, 110)),  # half outside the spine's outline
    ]
    ref = geometric_reference(regions(), lesions, WEIGHTS)
    assert ref["involvement"]["spine"] == pytest.approx((150 + 100) / 1000)


def test_unlabelled_and_outside_lesions():
    lesions = [
        Lesion(1, "spine", box(45, 10, 55, 20)),
        Lesion(2, "spine", box(45, 50, 55, 60)),
        Lesion(3, None, box(200, 0, 210, 10)),  # a tibia: in no BSI region
    ]
    ref = geometric_reference(regions(), lesions, WEIGHTS, labelled={1, 3})
    assert ref["bsi"] == pytest.approx(8.3 * 0.2)
    assert ref["bsi_labelled"] == pytest.approx(8.3 * 0.1)
    assert ref["outside_regions"] == [3]
    assert (ref["metastases"], ref["metastases_labelled"]) == (3, 2)


def test_half_maximum_outline_of_a_large_source_is_the_source():
    disc = Point(50, 50).buffer(15, 64)
    outline, peak = drawn_outline(disc, sigma=1.7)
    assert peak == pytest.approx(1.0, abs=0.01)
    assert outline.area == pytest.approx(disc.area, rel=0.04)
    assert outline.symmetric_difference(disc).area < 0.08 * disc.area


def test_half_maximum_outline_of_a_small_source_is_wider_and_its_peak_lower():
    disc = Point(50, 50).buffer(1.5, 32)
    outline, peak = drawn_outline(disc, sigma=2.5)
    assert peak < 0.5
    # a point-like source's half maximum lies at sigma * sqrt(2 ln 2) = 2.94 px
    radius = math.sqrt(outline.area / math.pi)
    assert radius == pytest.approx(2.5 * math.sqrt(2 * math.log(2)), rel=0.1)
