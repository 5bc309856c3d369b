"""Follow-up scored against phantom truth: the exact route reproduces the truth's change."""

from __future__ import annotations

import json

import pytest

from bsi_d2.cli import main as cli_main
from bsi_d2.evaluation.followup import read_truths, score_followup, score_pair, truth_lesion_of


def _truth(key: str, bsi: float, ref: float, lesions: dict[int, tuple[float, float]]) -> dict:
    return {
        "study_key": key,
        "bsi": bsi,
        "reference": {"bsi": ref},
        "lesion_count": len(lesions),
        "lesions": [
            {"lesion_id": i, "center_merged": {"anterior": list(xy)}} for i, xy in lesions.items()
        ],
    }


def _pair(earlier: str, later: str, change: float, new: list, resolved: list, kept: int) -> dict:
    return {
        "span": "consecutive",
        "assessable": True,
        "earlier": {"study_key": earlier},
        "later": {"study_key": later},
        "bsi": {"change": change},
        "lesion_count": {"change": len(new) - len(resolved)},
        "lesions": {
            "new": [{"centroid": {"anterior": xy}} for xy in new],
            "resolved": [{"centroid": {"anterior": xy}} for xy in resolved],
            "persistent": [{}] * kept,
        },
    }


def test_a_reported_lesion_is_the_nearest_truth_lesion_within_the_radius():
    truth = _truth("s1", 0.0, 0.0, {1: (10.0, 10.0), 2: (30.0, 10.0)})
    assert truth_lesion_of({"centroid": {"anterior": [12.0, 11.0]}}, truth) == 1
    assert truth_lesion_of({"centroid": {"anterior": [27.0, 10.0]}}, truth) == 2
    assert truth_lesion_of({"centroid": {"anterior": [60.0, 60.0]}}, truth) is None
    # a view the truth does not show the lesion in finds nothing
    assert truth_lesion_of({"centroid": {"posterior": [10.0, 10.0]}}, truth) is None


def test_new_and_resolved_lesions_are_scored_against_the_truths_lesion_ids():
    earlier = _truth("s1", 1.0, 0.9, {1: (10.0, 10.0), 2: (30.0, 10.0)})
    later = _truth("s2", 1.5, 1.3, {2: (31.0, 10.0), 3: (50.0, 50.0), 4: (80.0, 20.0)})
    # reported: lesion 3 new (right), a false new one at (5, 90), lesion 1 resolved (right)
    pair = _pair("s1", "s2", 0.4, new=[[50.0, 51.0], [5.0, 90.0]], resolved=[[10.0, 9.0]], kept=1)
    score = score_pair(pair, earlier, later)
    assert score["true_delta_bsi"] == pytest.approx(0.5)
    assert score["true_delta_reference_bsi"] == pytest.approx(0.4)
    assert score["new"] == {"true": 2, "reported": 2, "reported_right": 1, "true_found": 1,
                            "precision": 0.5, "recall": 0.5}  # fmt: skip
    assert score["resolved"]["recall"] == 1.0 and score["resolved"]["precision"] == 1.0
    assert score["persistent"] == {"true": 1, "reported": 1}


def test_pairs_without_truth_or_not_assessable_are_listed_not_scored():
    truths = {"s1": _truth("s1", 1.0, 1.0, {}), "s2": _truth("s2", 2.0, 2.0, {})}
    document = {"patients": [{"pairs": [
        _pair("s1", "s2", 1.0, [], [], 0),
        _pair("s1", "s9", 1.0, [], [], 0),
        {**_pair("s1", "s2", 1.0, [], [], 0), "assessable": False},
    ]}]}  # fmt: skip
    score = score_followup(document, truths)
    assert score["pairs_scored"] == 1
    assert score["pairs_without_truth"] == [["s1", "s9"]]
    assert score["pairs_not_assessable"] == [["s1", "s2"]]


def test_truth_folder_without_study_keys_is_refused(tmp_path):
    (tmp_path / "truth").mkdir()
    (tmp_path / "truth" / "phantom_0000.json").write_text("{}")
    with pytest.raises(ValueError, match="--follow-up"):
        read_truths(tmp_path)


def test_followup_of_truth_annotations_reproduces_the_true_change(tmp_path):
    phantoms, results, followup = tmp_path / "ph", tmp_path / "bsi", tmp_path / "fu"
    assert cli_main(["phantom", "--scans", "2", "--follow-up", "2", "--seed", "2",
                     "--workers", "1", "--out", str(phantoms)]) == 0  # fmt: skip
    assert cli_main(["bsi", str(phantoms / "labelme"), "--out", str(results),
                     "--keep-dates", "shift", "--no-progress"]) == 0  # fmt: skip
    assert cli_main(["followup", str(results), "--out", str(followup),
                     "--truth", str(phantoms)]) == 0  # fmt: skip
    score = json.loads((followup / "truth_agreement.json").read_text())
    # 2 patients x (2 consecutive pairs + baseline to latest)
    assert score["pairs_scored"] == 6 and not score["pairs_without_truth"]
    for pair in score["pairs"]:
        assert pair["delta_bsi"] == pytest.approx(pair["true_delta_bsi"], abs=1e-9)
    consecutive = score["consecutive"]  # seed 2: lesions appear and resolve between studies
    assert consecutive["new"]["true"] >= 3 and consecutive["resolved"]["true"] >= 1
    for fate in ("new", "resolved"):
        counts = consecutive[fate]
        assert counts["true_found"] == counts["true"] == counts["reported_right"]
