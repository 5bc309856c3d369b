"""Lesions matched between two studies across a shifted skeleton: persistent, new, resolved."""

import numpy as np
import pytest
from followup_records import lesion, record

from bsi_d2.followup.align import align_studies
from bsi_d2.followup.match import match_lesions
from bsi_d2.postprocess.match import assign_pairs

SHIFT = (11.0, -8.0)  # the later study's whole skeleton lies 11 px right and 8 px up


def moved(x, y, dx=0.0, dy=0.0):
    return (x + SHIFT[0] + dx, y + SHIFT[1] + dy)


def changes_between(earlier, later, radius=15.0):
    return match_lesions(earlier, later, align_studies(earlier, later), radius)


def test_one_persistent_moved_lesion_one_new_one_resolved_across_a_shifted_skeleton():
    earlier = record("c1", [
        lesion(1, "spine", {"anterior": (128, 380), "posterior": (384, 380)}, pixels=40),
        lesion(2, "pelvis", {"posterior": (360, 470)}, pixels=30),
    ])  # fmt: skip
    later = record("c2", [
        # the spine lesion, grown and 3 px off where the skeleton shift puts it
        lesion(1, "spine", {"anterior": moved(128, 380, 3, 1), "posterior": moved(384, 380, 2)},
               pixels=70),
        lesion(2, "skull", {"anterior": moved(120, 205)}, pixels=25),
    ], shift=SHIFT)  # fmt: skip
    # unaligned the spine lesion lies 15 px from where it was, aligned 2 px
    changes = changes_between(earlier, later, radius=10.0)
    assert [p.later["id"] for p in changes.persistent] == [1]
    persistent = changes.persistent[0].to_dict()
    assert persistent["earlier_id"] == 1 and persistent["views"] == ["anterior", "posterior"]
    assert persistent["distance_px"] == pytest.approx(2.0, abs=0.05)
    assert persistent["pixel_change"] == 2 * 70 - 2 * 40
    assert persistent["pixel_change_per_view"] == {"anterior": 30, "posterior": 30}
    assert [les["id"] for les in changes.new] == [2]
    assert [les["id"] for les in changes.resolved] == [2]
    unaligned = match_lesions(earlier, later, align_studies({}, {}), radius=10.0)
    assert unaligned.persistent == []  # without the alignment the shift hides the match


def test_a_lesion_in_both_views_matches_when_either_view_does():
    earlier = record("c1", [lesion(1, "spine", {"anterior": (128, 380), "posterior": (384, 380)})])
    later = record("c2", [
        lesion(1, "spine", {"anterior": moved(128, 380, 1), "posterior": moved(384, 380, 40)}),
    ], shift=SHIFT)  # fmt: skip
    changes = changes_between(earlier, later)
    assert len(changes.persistent) == 1 and changes.persistent[0].views == ["anterior"]
    assert changes.new == [] and changes.resolved == []


def test_a_lesion_prefers_its_own_regions_counterpart():
    earlier = record("c1", [lesion(1, "pelvis", {"anterior": (128, 450)})])
    later = record("c2", [
        lesion(1, "spine", {"anterior": moved(128, 450, 4)}),  # nearer, another region
        lesion(2, "pelvis", {"anterior": moved(128, 450, -6)}),
    ], shift=SHIFT)  # fmt: skip
    changes = changes_between(earlier, later)
    assert [p.later["id"] for p in changes.persistent] == [2]
    assert [les["id"] for les in changes.new] == [1]


def test_lesions_apart_by_more_than_the_radius_are_new_and_resolved():
    earlier = record("c1", [lesion(1, "spine", {"anterior": (128, 380)})])
    later = record("c2", [lesion(1, "spine", {"anterior": moved(128, 380, 0, 16)})], shift=SHIFT)
    changes = changes_between(earlier, later)
    assert changes.persistent == [] and len(changes.new) == len(changes.resolved) == 1


def test_decoy_uptake_is_not_a_lesion_and_records_without_positions_are_not_matched():
    kidney = lesion(9, "kidney", {"anterior": (100, 420)}, site="decoy")
    earlier = record("c1", [kidney])
    later = record("c2", [], shift=SHIFT)
    assert changes_between(earlier, later).resolved == []
    old = record("c3", [lesion(1, "spine", {"anterior": (128, 380)})])
    del old["lesions"][0]["centroid"]
    assert changes_between(old, later) is None


def test_assign_pairs_minimises_the_total_and_pairs_only_what_saves_cost():
    # two pairs (9 + 2) cost less than one pair and two lesions left alone (1 + 7.5 + 7.5)
    cost = np.array([[1.0, 9.0], [2.0, 30.0]])
    assert sorted(assign_pairs(cost, cost <= 15.0, single=7.5)) == [(0, 1), (1, 0)]
    # at 14.5 + 2 they do not: the closest pair is kept, the others left alone
    cost = np.array([[1.0, 14.5], [2.0, 30.0]])
    assert assign_pairs(cost, cost <= 15.0, single=7.5) == [(0, 0)]
    assert assign_pairs(np.zeros((0, 2)), np.zeros((0, 2), bool), 7.5) == []
