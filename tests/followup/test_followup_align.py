"""Skeleton alignment between studies: known transforms of synthetic landmarks come back."""

import numpy as np
import pytest
from followup_records import landmarks

from bsi_d2.followup.align import align_studies, align_view, fit_landmarks

RNG = np.random.default_rng(7)
POINTS = np.array(
    [[128, 200], [128, 360], [126, 330], [56, 312], [204, 316], [127, 480], [126, 540]], float
)
NAMES = ["skull", "spine", "chest", "humerus_AR", "humerus_AL", "pelvis", "femurs"]


def similarity(points, angle_deg, scale, shift):
    a = np.radians(angle_deg)
    rotation = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    shift = np.asarray(shift, dtype=float)
    return points @ rotation.T + shift, np.hstack([rotation, shift[:, None]])


def test_a_known_translation_is_recovered():
    moved = POINTS + (12.0, -7.5)
    a = fit_landmarks(POINTS, moved, NAMES, "anterior")
    assert a.transform == "similarity" and a.landmarks == NAMES
    assert a.matrix == pytest.approx(np.array([[1, 0, 12.0], [0, 1, -7.5]]), abs=1e-9)
    assert a.residual_px == pytest.approx(0.0, abs=1e-9)
    assert a.apply([[100.0, 100.0]]) == pytest.approx(np.array([[112.0, 92.5]]))


def test_a_known_similarity_is_recovered_and_the_residual_measures_the_noise():
    moved, matrix = similarity(POINTS, 3.0, 1.04, (5.0, 9.0))
    a = fit_landmarks(POINTS, moved, NAMES, "anterior")
    assert a.matrix == pytest.approx(matrix, abs=1e-9)
    noisy = moved + RNG.normal(0, 0.5, moved.shape)
    b = fit_landmarks(POINTS, noisy, NAMES, "anterior")
    assert b.matrix[:, :2] == pytest.approx(matrix[:, :2], abs=0.01)
    assert np.abs(b.apply(POINTS) - moved).max() < 1.5  # the skeleton lands where it should
    assert 0.1 < b.residual_px < 1.0


def test_affine_recovers_an_affine_map():
    matrix = np.array([[1.02, 0.03, 4.0], [-0.02, 0.97, -3.0]])
    moved = POINTS @ matrix[:, :2].T + matrix[:, 2]
    a = fit_landmarks(POINTS, moved, NAMES, "anterior", transform="affine")
    assert a.transform == "affine" and a.matrix == pytest.approx(matrix, abs=1e-9)


def test_few_landmarks_fall_back_to_a_translation():
    moved, _ = similarity(POINTS[:2], 2.0, 1.0, (3.0, 4.0))
    a = fit_landmarks(POINTS[:2], moved, NAMES[:2], "posterior")
    assert a.transform == "translation"
    assert a.matrix[:, :2] == pytest.approx(np.eye(2))
    assert a.residual_px is not None and a.residual_px > 0  # the rotation it cannot express
    assert any("translation instead" in n for n in a.notes)


def test_a_landmark_off_the_fit_is_dropped():
    moved = POINTS + (6.0, 2.0)
    moved[3] += (30.0, -25.0)  # the right arm held differently
    a = fit_landmarks(POINTS, moved, NAMES, "anterior")
    assert a.dropped == ["humerus_AR"] and "humerus_AR" not in a.landmarks
    assert a.matrix == pytest.approx(np.array([[1, 0, 6.0], [0, 1, 2.0]]), abs=1e-9)
    assert a.residual_px == pytest.approx(0.0, abs=1e-9)


def test_an_implausible_similarity_becomes_a_translation():
    moved, _ = similarity(POINTS, 0.0, 1.5, (0.0, 0.0))
    a = fit_landmarks(POINTS, moved, NAMES, "anterior")
    assert a.transform == "translation" and any("scales by 1.50" in n for n in a.notes)


def test_no_common_landmark_is_the_identity_with_a_note():
    a = fit_landmarks(np.zeros((0, 2)), np.zeros((0, 2)), [], "anterior")
    assert a.transform == "none" and a.residual_px is None and a.notes
    assert a.apply([[10.0, 20.0]]) == pytest.approx(np.array([[10.0, 20.0]]))


def test_records_are_aligned_per_view_on_the_regions_found_in_both():
    earlier = {"landmarks": landmarks()}
    later = {"landmarks": landmarks(shift=(-9.0, 14.0), drop=("skull",))}
    views = align_studies(earlier, later)
    for view in ("anterior", "posterior"):
        a = views[view]
        assert "skull" not in a.landmarks and len(a.landmarks) == 6
        assert a.matrix[:, 2] == pytest.approx([-9.0, 14.0], abs=1e-9)
    old = align_studies({"landmarks": None}, later)
    assert old["anterior"].transform == "none"


def test_a_region_with_no_pixels_is_not_a_landmark():
    first, second = landmarks()["anterior"], landmarks(shift=(2.0, 2.0))["anterior"]
    second["skull"]["pixels"] = 0
    assert "skull" not in align_view(first, second, "anterior").landmarks
