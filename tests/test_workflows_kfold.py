"""The k-fold summary's numbers, from fold evaluations made by hand (no training)."""

from __future__ import annotations

import pytest

from bsi_d2.workflows.kfold import _overall, format_summary, summarise


def evaluation(at_1fp: float | None, froc_score: float | None) -> dict:
    mean = {"precision": 0.9, "sensitivity": 0.8, "f1": 0.85}
    return {
        "coco": {"segm": {"AP": 0.5, "per_class": {"skull": 0.6}}},
        "pixel": {"mean": mean, "mean_without_decoys": mean, "per_class": {}},
        "lesion_detection": {
            "sensitivity_at_fp": {"0.25": 0.1, "0.5": 0.2, "1": at_1fp, "2": 0.6, "4": 0.7},
            "froc_score": froc_score,
        },
    }


def test_folds_summarise_lesion_detection_as_mean_and_sd():
    folds = [
        {"per_class": {}, "overall": _overall(evaluation(0.5, 0.4))},
        {"per_class": {}, "overall": _overall(evaluation(0.7, 0.6))},
        {"per_class": {}, "overall": _overall(evaluation(None, None))},  # a fold without lesions
    ]
    overall = summarise(folds)["overall"]
    assert overall["lesion_sensitivity_at_1fp"]["mean"] == pytest.approx(0.6)
    assert overall["lesion_sensitivity_at_1fp"]["sd"] == pytest.approx(0.1414, abs=1e-4)
    assert overall["lesion_froc_score"]["mean"] == pytest.approx(0.5)
    assert overall["lesion_froc_score"]["n"] == 2
    table = format_summary({"folds": 3, "per_class": {}, "overall": overall})
    assert "- lesion_froc_score: 50.00 ± 14.14" in table


def test_an_old_evaluation_has_no_lesion_detection_numbers():
    old = evaluation(0.5, 0.4)
    del old["lesion_detection"]
    overall = _overall(old)
    assert overall["lesion_sensitivity_at_1fp"] is None and overall["lesion_froc_score"] is None
