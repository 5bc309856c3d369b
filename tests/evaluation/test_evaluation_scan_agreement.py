import numpy as np
import pytest
from scipy import stats

from bsi_d2.evaluation import bsi_agreement, roc_auc, scan_metrics
from bsi_d2.evaluation.agreement import cohen_kappa
from bsi_d2.evaluation.scan import abnormality_score
from bsi_d2.postprocess.analysis import analyse_scan
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import load_taxonomy

SPINE, KIDNEY, LESION = 2, 10, 11


def scan_instances(objs, shape=(24, 32)) -> Instances:
    """objs: (category id, (r0, r1, c0, c1), score)."""
    masks = np.zeros((len(objs), *shape), bool)
    for m, (_, (r0, r1, c0, c1), _) in zip(masks, objs, strict=True):
        m[r0:r1, c0:c1] = True
    return Instances(
        *shape,
        np.zeros((len(objs), 4), np.float32),
        np.array([s for *_, s in objs], np.float32),
        np.array([c for c, *_ in objs], np.int64),
        masks,
    )


def test_scan_metrics_on_a_constructed_set():
    truth = [True, True, True, False, False]
    scores = [0.9, 0.6, 0.2, 0.7, 0.1]
    m = scan_metrics(truth, [s >= 0.5 for s in scores], scores)
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
    m = scan_metrics([False, False], [False, True], [0.0, 0.7])
    assert m["sensitivity"] is None and m["specificity"] == 0.5 and m["auc"] is None


def test_scan_metrics_take_the_decisions_not_a_threshold():
    # the calls need not follow the ranking scores: the report decides, the scores only rank
    m = scan_metrics([True, False, True], [True, False, False], [0.2, 0.9, 0.95])
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (1, 1, 0, 1)
    assert m["auc"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="3 labels but 2 decisions"):
        scan_metrics([True, False, True], [True, False], [0.2, 0.9, 0.95])


def test_abnormality_score_is_the_threshold_where_the_call_flips():
    taxonomy = load_taxonomy()
    scan = scan_instances(
        [
            (SPINE, (2, 22, 6, 12), 0.9),
            (LESION, (8, 11, 7, 10), 0.4),  # in the spine
            (KIDNEY, (10, 16, 20, 28), 0.8),
            (LESION, (11, 14, 21, 25), 0.95),  # in the kidney: not abnormal
            (LESION, (20, 22, 14, 16), 0.2),  # in no region: abnormal
        ]
    )
    assert abnormality_score(scan, taxonomy, 0.5) == pytest.approx(0.4)
    # without a kept kidney the 0.95 "lesion" lies in no region, so it counts
    assert abnormality_score(scan, taxonomy, 0.5, {"kidney": 0.85}) == pytest.approx(0.95)
    # the call at any lesion threshold is "score >= threshold"
    score = abnormality_score(scan, taxonomy, 0.5)
    for t in (0.1, 0.2, 0.3, 0.4, 0.5, 0.96):
        called = analyse_scan(scan, None, taxonomy, 0.5, {"lesion": t}).record["abnormal"]
        assert called == (score >= t)
    assert abnormality_score(scan_instances([(SPINE, (2, 22, 6, 12), 0.9)]), taxonomy) == 0.0


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


def test_cohen_kappa_on_hand_computed_tables():
    # 2 x 2 (50 scans): agree yes 20, no 15; 5 and 10 disagree. po = 0.7, pe = .5*.6 + .5*.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx((0.7 - 0.5) / (1 - 0.5))
    # 3 x 3 and a label one side never uses: po = 3/6, pe = (2*1 + 2*2 + 1*3 + 1*0) / 36
    a = ["none", "few", "few", "medium", "extensive", "none"]
    b = ["none", "few", "medium", "medium", "medium", "few"]
    assert cohen_kappa(a, b) == pytest.approx((0.5 - 0.25) / (1 - 0.25))
    assert cohen_kappa(a, a) == 1.0


def test_cohen_kappa_undefined_cases():
    # both sides constant and equal: chance agreement is 1, kappa 0 / 0
    assert cohen_kappa(["few", "few"], ["few", "few"]) is None
    assert cohen_kappa([], []) is None
    with pytest.raises(ValueError, match="equal length"):
        cohen_kappa(["few"], ["few", "none"])


def test_cohen_kappa_matches_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn not installed")
    rng = np.random.default_rng(1)
    groups = ["none", "few", "medium", "extensive"]
    a = rng.choice(groups, 40).tolist()
    b = [x if rng.random() < 0.6 else rng.choice(groups) for x in a]
    assert cohen_kappa(a, b) == pytest.approx(metrics.cohen_kappa_score(a, b))
