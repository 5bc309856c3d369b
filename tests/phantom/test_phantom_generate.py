"""Phantoms in memory: realistic counts, anatomy per view, disjoint regions, exact truth."""

import json
from collections import Counter

import cv2
import numpy as np
import pytest
from shapely.geometry import Polygon

from bsi_d2.phantom import generate_phantom
from bsi_d2.phantom.lesions import MAX_LESIONS
from bsi_d2.postprocess.bsi import burden_group
from bsi_d2.structures.masks import polygons_to_mask, rle_to_mask
from bsi_d2.taxonomy import load_taxonomy, taxonomy_from_dict

TAX = load_taxonomy()
N = 20


@pytest.fixture(scope="module")
def phantoms():
    return [generate_phantom(i, seed=0) for i in range(N)]


def masks_of(phantom, name=None, view=None):
    return [
        rle_to_mask(r["segmentation"])
        for r in phantom.truth["instances"]
        if (name is None or r["category_name"] == name) and (view is None or r["view"] == view)
    ]


def mean_counts(phantom, name, view):
    return np.mean([phantom.merged.counts[m].mean() for m in masks_of(phantom, name, view)])


def lower_half(mask):
    rows = np.flatnonzero(mask.any(axis=1))
    out = mask.copy()
    out[: (rows[0] + rows[-1]) // 2] = False
    return out


def centre_x(phantom, name):
    return np.flatnonzero(masks_of(phantom, name)[0].any(axis=0)).mean()


def test_count_views_look_like_a_real_scan(phantoms):
    for p in phantoms:
        for counts in (p.anterior, p.posterior):
            assert counts.shape == (1024, 256) and counts.dtype == np.uint16
            assert np.median(counts) <= 2  # mostly empty background, as in NEMA NM1
            assert (60 if p.parameters["low_count"] else 120) <= counts.max() <= 1500
    normal = [p for p in phantoms if not p.parameters["low_count"]]
    low = [p for p in phantoms if p.parameters["low_count"]]
    assert normal and low, "the set needs normal and low-count scans"
    for p in normal:
        spine = p.merged.counts[masks_of(p, "spine", "posterior")[0]]
        assert 35 <= np.median(spine) <= 140  # bone 40-90 counts in the real scan
    assert max(p.parameters["total_counts"] for p in low) < min(
        p.parameters["total_counts"] for p in normal
    )


def test_posterior_view_weights_depth(phantoms):
    for p in phantoms[:6]:
        # the lumbar spine, below the sternum that brightens the anterior thoracic spine
        lumbar = {
            view: lower_half(masks_of(p, "spine", view)[0]) for view in ("anterior", "posterior")
        }
        counts = p.merged.counts
        assert counts[lumbar["posterior"]].mean() > 1.3 * counts[lumbar["anterior"]].mean()
        assert mean_counts(p, "kidney", "posterior") > 1.25 * mean_counts(p, "kidney", "anterior")


def test_posterior_is_the_mirror_of_anterior(phantoms):
    p = phantoms[0]
    # without noise and depth the views would be mirror images: their column profiles are
    ant = p.anterior.sum(axis=0).astype(float)
    post = p.posterior.sum(axis=0).astype(float)
    assert np.corrcoef(ant, post[::-1])[0, 1] > 0.9
    assert np.corrcoef(ant, post[::-1])[0, 1] > np.corrcoef(ant, post)[0, 1]


def test_each_region_once_per_view_with_the_left_right_convention(phantoms):
    for p in phantoms:
        per_view = Counter(
            (r["category_name"], r["view"])
            for r in p.truth["instances"]
            if r["category_name"] not in ("lesion", "kidney")
        )
        for name in ("skull", "spine", "chest", "pelvis", "femurs"):
            assert per_view[(name, "anterior")] == 1 and per_view[(name, "posterior")] == 1
        for name in ("humerus_AR", "humerus_AL"):
            assert per_view[(name, "anterior")] == 1 and per_view[(name, "posterior")] == 0
        for name in ("humerus_PR", "humerus_PL"):
            assert per_view[(name, "posterior")] == 1 and per_view[(name, "anterior")] == 0

        # anterior: the patient's right on the viewer's left; posterior: seen from behind
        assert centre_x(p, "humerus_AR") < centre_x(p, "humerus_AL") < 256
        assert 256 <= centre_x(p, "humerus_PL") < centre_x(p, "humerus_PR")
        kidneys = Counter(r["view"] for r in p.truth["instances"] if r["category_name"] == "kidney")
        assert kidneys == {"anterior": 2, "posterior": 2}  # one instance per kidney per view


def test_region_and_kidney_masks_are_disjoint_and_in_their_view(phantoms):
    for p in phantoms:
        cover = np.zeros((950, 512), dtype=int)
        decoy_cover = np.zeros((950, 512), dtype=int)
        for r in p.truth["instances"]:
            mask = rle_to_mask(r["segmentation"])
            assert mask.any() and mask.sum() == r["area"]
            cols = np.flatnonzero(mask.any(axis=0))
            assert (cols < 256).all() if r["view"] == "anterior" else (cols >= 256).all()
            if r["category_name"] not in ("lesion", "bladder"):
                cover += mask
            if TAX.by_id(r["category_id"]).is_decoy:
                decoy_cover += mask
        assert cover.max() == 1, p.patient
        assert decoy_cover.max() == 1, p.patient  # kidneys and bladder never overlap


def test_one_bladder_per_view_over_the_hot_bladder(phantoms):
    overlaps_pelvis = 0
    for p in phantoms:
        bladders = [r for r in p.truth["instances"] if r["category_name"] == "bladder"]
        assert Counter(r["view"] for r in bladders) == {"anterior": 1, "posterior": 1}, p.patient
        assert {r["category_id"] for r in bladders} == {12}
        for view in ("anterior", "posterior"):
            bladder = masks_of(p, "bladder", view)[0]
            pelvis = masks_of(p, "pelvis", view)[0]
            # hotter than the pelvis it lies over, in the far (posterior) view too
            assert mean_counts(p, "bladder", view) > 1.5 * mean_counts(p, "pelvis", view)
            overlaps_pelvis += bool((bladder & pelvis).any())
    assert overlaps_pelvis > 0  # a decoy may overlap a region: the bladder over the pelvis


def test_bladder_holds_the_hottest_pixels_of_the_pelvis_in_front(phantoms):
    without_lesion = [p for p in phantoms if p.truth["lesion_count"] == 0]
    assert without_lesion
    for p in without_lesion:
        # smoothed, so the hottest pixel is the hot organ, not one Poisson outlier
        smooth = cv2.GaussianBlur(p.merged.counts.astype(np.float32), (0, 0), 3.0)
        pelvis = masks_of(p, "pelvis", "anterior")[0]
        hottest = np.unravel_index(np.argmax(np.where(pelvis, smooth, -1.0)), smooth.shape)
        assert masks_of(p, "bladder", "anterior")[0][hottest], p.patient


def test_a_taxonomy_without_bladder_gets_no_bladder_instance():
    raw = TAX.to_dict()
    raw["classes"] = [c for c in raw["classes"] if c["name"] != "bladder"]
    p = generate_phantom(0, seed=0, taxonomy=taxonomy_from_dict(raw))
    assert "bladder" not in {s["label"] for s in p.shapes}
    assert not masks_of(p, "bladder")
    assert masks_of(p, "pelvis", "anterior") and masks_of(p, "kidney", "anterior")


def test_truth_masks_are_the_rasterised_labelme_polygons(phantoms):
    for p in phantoms[:5]:
        by_group: dict[int, list] = {}
        for shape in p.shapes:
            pts = shape["points"]
            assert len(pts) >= 3 and Polygon(pts).is_valid
            xy = np.asarray(pts)
            assert (xy >= 0).all() and (xy[:, 0] <= 512).all() and (xy[:, 1] <= 950).all()
            assert TAX.resolve_label(shape["label"]).name == shape["label"]
            by_group.setdefault(shape["group_id"], []).append(sum(pts, []))
        records = {r["group_id"]: r for r in p.truth["instances"]}
        assert by_group.keys() == records.keys()
        for gid, polys in by_group.items():
            expected = rle_to_mask(records[gid]["segmentation"])
            assert np.array_equal(polygons_to_mask(polys, 950, 512), expected)


def test_lesion_counts_vary_and_negatives_exist(phantoms):
    counts = [p.truth["lesion_count"] for p in phantoms]
    assert all(0 <= c <= MAX_LESIONS for c in counts)
    assert 0 in counts and max(counts) >= 4
    assert 0.1 <= counts.count(0) / len(counts) <= 0.5
    for p in phantoms:
        t = p.truth
        assert t["lesion_count"] == len(t["lesions"])
        assert t["lesion_count"] <= t["lesion_instances"] <= 2 * t["lesion_count"]
        assert t["burden_group"] == burden_group(t["lesion_count"])
        assert (t["bsi"] > 0) == (t["lesion_count"] > 0)
        assert (t["bstbi"] > 0) == (t["lesion_count"] > 0)
        for lesion in t["lesions"]:
            assert set(lesion["views"]) == set(lesion["center_merged"])
    poses = Counter(p.parameters["arm_pose"] for p in phantoms)
    assert set(poses) == {"down", "away", "crossed"}


def test_lesions_lie_mostly_on_bone(phantoms):
    inside = total = 0
    for p in phantoms:
        regions = np.zeros((950, 512), dtype=bool)
        for m in masks_of(p):
            regions |= m
        for r in p.truth["instances"]:
            if r["category_name"] == "lesion":
                mask = rle_to_mask(r["segmentation"])
                inside += (mask & regions).sum()
                total += mask.sum()
    assert total > 0 and inside / total > 0.6


def test_same_seed_same_phantom_and_other_seed_differs(phantoms):
    again = generate_phantom(3, seed=0)
    assert np.array_equal(again.anterior, phantoms[3].anterior)
    assert np.array_equal(again.posterior, phantoms[3].posterior)
    assert json.dumps(again.truth) == json.dumps(phantoms[3].truth)
    other = generate_phantom(3, seed=1)
    assert not np.array_equal(other.anterior, phantoms[3].anterior)


def test_overrides_force_lesions_and_low_counts():
    p = generate_phantom(5, seed=7, lesion_count=8, low_count=True)
    assert p.parameters["low_count"] is True
    assert 4 <= p.truth["lesion_count"] <= 8 and p.truth["bsi"] > 0
    none = generate_phantom(5, seed=7, lesion_count=0)
    assert none.truth["lesion_count"] == 0 and none.truth["bsi"] == 0.0
