import numpy as np
import pytest
from scipy import stats

from bsi_d2.evaluation import bsi_agreement, roc_auc, scan_metrics


def test_scan_metrics_on_a_constructed_set():
    truth = [True, True, True, False, False]
    scores = [0.9, 0.6, 0.2, 0.7, 0.1]
    m = scan_metrics(truth, scores, score_thresh=0.5)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 1)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(1 / 2)
    assert m["accuracy"] == pytest.approx(3 / 5)
    # positive-negative pairs ranked right: (.9,.7) (.9,.1) (.6,.1) (.2,.1) of 6
    assert m["auc"] == pytest.approx(4 / 6)
    assert (m["n_pos"], m["n_neg"]) == (3, 2)


def test_auc_ties_count_half_and_one_class_is_undefined():
    assert roc_auc([True, False], [0.5, 0.5]) == pytest.approx(0.5)
    assert roc_auc([True, True], [0.1, 0.9]) is None
    m = scan_metrics([False, False], [0.0, 0.7])
    assert m["sensitivity"] is None and m["specificity"] == 0.5 and m["auc"] is None


def test_agreement_matches_scipy_and_bland_altman_by_hand():
    rng = np.random.default_rng(0)
    reference = rng.uniform(0, 5, 20)
    predicted = reference * 1.1 + rng.normal(0, 0.3, 20)
    a = bsi_agreement(predicted.tolist(), reference.tolist())
    assert a["n"] == 20
    assert a["pearson_r"] == pytest.approx(stats.pearsonr(predicted, reference)[0])
    assert a["pearson_p"] == pytest.approx(stats.pearsonr(predicted, reference)[1])
    assert a["spearman_rho"] == pytest.approx(stats.spearmanr(predicted, reference)[0])
    diff = predicted - reference
    assert a["mean_difference"] == pytest.approx(diff.mean())
    sd = np.sqrt(((diff - diff.mean()) ** 2).sum() / (len(diff) - 1))
    assert a["loa_lower"] == pytest.approx(diff.mean() - 1.96 * sd)
    assert a["loa_upper"] == pytest.approx(diff.mean() + 1.96 * sd)


def test_agreement_small_or_constant_inputs():
    a = bsi_agreement([1.0, 2.0], [1.5, 2.5])
    assert a["pearson_r"] is None and a["mean_difference"] == pytest.approx(-0.5)
    assert a["sd_difference"] == pytest.approx(0.0)
    assert bsi_agreement([1.0, 1.0, 1.0], [0.0, 1.0, 2.0])["spearman_rho"] is None
    with pytest.raises(ValueError):
        bsi_agreement([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        bsi_agreement([float("nan"), 1.0, 2.0], [1.0, 2.0, 3.0])
