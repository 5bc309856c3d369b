"""Agreement statistics with CIs against published or hand-computed values."""

import numpy as np
import pytest
from scipy import stats

from bsi_d2.evaluation import roc_auc
from bsi_d2.evaluation.agreement import (
    auc_delong,
    bland_altman,
    bootstrap_correlations,
    continuous_agreement,
    correlation_agreement,
    count_agreement,
    diagnostic_agreement,
    intraclass_correlation,
    kappa_agreement,
    roc_points,
    wilson_interval,
)

# Shrout & Fleiss 1979, Table 2: 6 targets rated by 4 judges
SHROUT_FLEISS = np.array(
    [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float
)


def mean_squares(x: np.ndarray) -> tuple[float, float, float]:
    """Two-way ANOVA mean squares (targets, judges, residual), by the textbook sums."""
    n, k = x.shape
    grand = x.sum() / (n * k)
    ss_targets = sum(k * (x[i].mean() - grand) ** 2 for i in range(n))
    ss_judges = sum(n * (x[:, j].mean() - grand) ** 2 for j in range(k))
    ss_total = sum((v - grand) ** 2 for v in x.ravel())
    ss_error = ss_total - ss_targets - ss_judges
    return ss_targets / (n - 1), ss_judges / (k - 1), ss_error / ((n - 1) * (k - 1))


def test_icc_matches_shrout_fleiss_and_pingouin():
    icc = intraclass_correlation(SHROUT_FLEISS)
    # published: ICC(2,1) = 0.29, ICC(3,1) = 0.71; pingouin: ICC2 CI [0.02, 0.76], ICC3 CI
    # [0.34, 0.95] (0.946; the upper bound is given as 0.94 or 0.95 depending on rounding)
    assert icc["icc2_1"] == pytest.approx(0.29, abs=0.005)
    assert icc["icc3_1"] == pytest.approx(0.71, abs=0.006)
    assert (icc["icc2_1_ci_low"], icc["icc2_1_ci_high"]) == pytest.approx((0.02, 0.76), abs=0.005)
    assert (icc["icc3_1_ci_low"], icc["icc3_1_ci_high"]) == pytest.approx((0.34, 0.94), abs=0.01)
    assert (icc["n"], icc["k"], icc["df1"], icc["df2"]) == (6, 4, 5, 15)


def test_icc_cis_follow_the_f_formulas_by_hand():
    x = SHROUT_FLEISS
    n, k = x.shape
    bms, jms, ems = mean_squares(x)
    # Shrout & Fleiss, Table 2: BMS 11.24, JMS 32.49, EMS 1.02
    assert (bms, jms, ems) == pytest.approx((11.24, 32.49, 1.02), abs=0.005)
    icc3 = (bms - ems) / (bms + (k - 1) * ems)
    icc2 = (bms - ems) / (bms + (k - 1) * ems + k * (jms - ems) / n)
    df1, df2 = n - 1, (n - 1) * (k - 1)
    # ICC(3,1): F = BMS / EMS against F(n-1, (n-1)(k-1))
    f0 = bms / ems
    fl = f0 / stats.f.ppf(0.975, df1, df2)
    fu = f0 * stats.f.ppf(0.975, df2, df1)
    icc3_ci = ((fl - 1) / (fl + k - 1), (fu - 1) / (fu + k - 1))
    # ICC(2,1): Satterthwaite's v, then the bounds of Shrout & Fleiss / McGraw & Wong
    fj = jms / ems
    c = n * (1 + (k - 1) * icc2) - k * icc2
    v = df2 * (k * icc2 * fj + c) ** 2 / (df1 * k**2 * icc2**2 * fj**2 + c**2)
    f_star = stats.f.ppf(0.975, df1, v)
    f_star2 = stats.f.ppf(0.975, v, df1)
    low = n * (bms - f_star * ems) / (f_star * (k * jms + (k * n - k - n) * ems) + n * bms)
    high = n * (f_star2 * bms - ems) / (k * jms + (k * n - k - n) * ems + n * f_star2 * bms)

    icc = intraclass_correlation(x)
    assert icc["icc3_1"] == pytest.approx(icc3)
    assert icc["icc2_1"] == pytest.approx(icc2)
    assert (icc["icc3_1_ci_low"], icc["icc3_1_ci_high"]) == pytest.approx(icc3_ci)
    assert (icc["icc2_1_ci_low"], icc["icc2_1_ci_high"]) == pytest.approx((low, high))
    assert icc["f"] == pytest.approx(f0)
    assert icc["p"] == pytest.approx(stats.f.sf(f0, df1, df2))


def test_icc3_ignores_a_raters_offset_icc2_does_not():
    rng = np.random.default_rng(3)
    truth = rng.uniform(0, 5, 30)
    table = np.column_stack([truth + rng.normal(0, 0.3, 30), truth + rng.normal(0, 0.3, 30)])
    shifted = table + [0.0, 2.0]
    a, b = intraclass_correlation(table), intraclass_correlation(shifted)
    assert b["icc3_1"] == pytest.approx(a["icc3_1"])
    assert b["icc2_1"] < a["icc2_1"] - 0.1
    for icc in (a, b):
        for name in ("icc2_1", "icc3_1"):
            assert icc[f"{name}_ci_low"] < icc[name] < icc[f"{name}_ci_high"]


def test_bland_altman_on_five_pairs_by_hand():
    reference = [1.0, 2.0, 3.0, 4.0, 5.0]
    predicted = [1.0, 3.0, 5.0, 5.0, 6.0]  # differences 0, 1, 2, 1, 1
    ba = bland_altman(predicted, reference)
    sd = np.sqrt(2 / 4)  # squared deviations 1, 0, 1, 0, 0 over n - 1
    t4 = stats.t.ppf(0.975, 4)
    assert ba["n"] == 5
    assert ba["bias"] == pytest.approx(1.0)
    assert ba["sd"] == pytest.approx(sd)
    assert ba["mean_absolute_difference"] == pytest.approx(1.0)
    assert ba["loa_lower"] == pytest.approx(1 - 1.96 * sd)
    assert ba["loa_upper"] == pytest.approx(1 + 1.96 * sd)
    assert (ba["bias_ci_low"], ba["bias_ci_high"]) == pytest.approx(
        (1 - t4 * sd / np.sqrt(5), 1 + t4 * sd / np.sqrt(5))
    )
    half = t4 * sd * np.sqrt(3 / 5)  # Bland & Altman 1999: SE of a limit = sd sqrt(3 / n)
    assert (ba["loa_upper_ci_low"], ba["loa_upper_ci_high"]) == pytest.approx(
        (1 + 1.96 * sd - half, 1 + 1.96 * sd + half)
    )
    assert (ba["loa_lower_ci_low"], ba["loa_lower_ci_high"]) == pytest.approx(
        (1 - 1.96 * sd - half, 1 - 1.96 * sd + half)
    )
    # proportional bias: means 1, 2.5, 4, 4.5, 5.5; Sxx = 12.5, Sxy = 3
    assert ba["slope"] == pytest.approx(0.24)
    assert ba["intercept"] == pytest.approx(1 - 0.24 * 3.5)
    # residuals -.4 .24 .88 -.24 -.48: SSE 1.28, SE(slope) = sqrt(1.28 / 3 / 12.5)
    se = np.sqrt(1.28 / 3 / 12.5)
    t3 = stats.t.ppf(0.975, 3)
    assert (ba["slope_ci_low"], ba["slope_ci_high"]) == pytest.approx(
        (0.24 - t3 * se, 0.24 + t3 * se)
    )
    assert ba["slope_p"] == pytest.approx(2 * stats.t.sf(0.24 / se, 3))


def test_wilson_interval_known_values():
    # Newcombe 1998, Stat Med 17:857, Table I: 81/263 and 0/10
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=5e-5)
    assert wilson_interval(0, 0) == (None, None)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_auc_and_delong_se_on_a_tiny_example():
    labels = [True, True, True, False, False]
    scores = [0.9, 0.6, 0.2, 0.7, 0.1]
    out = auc_delong(labels, scores)
    assert out["auc"] == pytest.approx(4 / 6) == roc_auc(labels, scores)
    # per positive, the share of negatives below it: 1, 1/2, 1/2; per negative, the share of
    # positives above it: 1/3, 1. S10 = var(1, .5, .5) = 1/12, S01 = var(1/3, 1) = 2/9
    se = np.sqrt((1 / 12) / 3 + (2 / 9) / 2)
    assert out["auc_se"] == pytest.approx(se)
    z = stats.norm.ppf(0.975)
    assert out["auc_ci_low"] == max(0.0, 4 / 6 - z * se) == 0.0  # clipped to [0, 1]
    assert out["auc_ci_high"] == 1.0
    # ties count half, and the ROC curve's area is the AUC
    tied = [True, False, True, False], [0.5, 0.5, 0.8, 0.1]
    assert auc_delong(*tied)["auc"] == pytest.approx(0.875) == roc_auc(*tied)
    roc = roc_points(*tied)
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(0.875)
    assert (roc["fpr"][0], roc["tpr"][0], roc["fpr"][-1], roc["tpr"][-1]) == (0, 0, 1, 1)


def test_diagnostic_agreement_counts_and_wilson_cis():
    reference = [True, True, True, False, False]
    called = [True, True, False, True, False]
    out = diagnostic_agreement(reference, called, [0.9, 0.6, 0.2, 0.7, 0.1])
    assert (out["tp"], out["fn"], out["fp"], out["tn"]) == (2, 1, 1, 1)
    assert out["sensitivity"] == pytest.approx(2 / 3)
    assert (out["sensitivity_ci_low"], out["sensitivity_ci_high"]) == wilson_interval(2, 3)
    assert out["specificity"] == 0.5 and out["accuracy"] == pytest.approx(0.6)
    assert out["auc"] == pytest.approx(4 / 6)
    one_class = diagnostic_agreement([True, True], [True, False], [0.3, 0.1])
    assert one_class["specificity"] is None and one_class["specificity_ci_low"] is None
    assert one_class["auc"] is None and one_class["auc_ci_low"] is None


def test_kappa_with_asymptotic_ci_by_hand():
    # rows reference, columns predicted: [[20, 5], [10, 15]] of 50; po 0.7, pe 0.5, kappa 0.4
    reference = ["yes"] * 25 + ["no"] * 25
    predicted = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    out = kappa_agreement(predicted, reference, ["yes", "no"])
    assert out["kappa"] == pytest.approx(0.4) and out["agreement"] == pytest.approx(0.7)
    # Fleiss, Cohen & Everitt 1969 with p = [[.4, .1], [.2, .3]], rows .5 .5, columns .6 .4:
    term_a = 0.4 * (1 - (0.5 + 0.6) * 0.6) ** 2 + 0.3 * (1 - (0.5 + 0.4) * 0.6) ** 2
    term_b = 0.6**2 * (0.1 * (0.6 + 0.5) ** 2 + 0.2 * (0.4 + 0.5) ** 2)
    term_c = (0.4 - 0.5 * 0.6) ** 2
    se = np.sqrt((term_a + term_b - term_c) / (0.5**2 * 50))
    assert out["kappa_se"] == pytest.approx(se) == pytest.approx(0.1270, abs=1e-4)
    z = stats.norm.ppf(0.975)
    assert (out["kappa_ci_low"], out["kappa_ci_high"]) == pytest.approx(
        (0.4 - z * se, 0.4 + z * se)
    )
    assert out["confusion"] == {"yes": {"yes": 20, "no": 5}, "no": {"yes": 10, "no": 15}}
    same = kappa_agreement(["few", "few"], ["few", "few"])
    assert same["kappa"] is None and same["agreement"] == 1.0 and same["kappa_ci_low"] is None


def test_correlations_with_fisher_and_bootstrap_cis():
    rng = np.random.default_rng(0)
    reference = rng.uniform(0, 5, 25)
    predicted = reference * 1.1 + rng.normal(0, 0.5, 25)
    out = correlation_agreement(predicted, reference, n_boot=500, seed=7)
    r = stats.pearsonr(predicted, reference)[0]
    assert out["pearson_r"] == pytest.approx(r)
    assert out["spearman_rho"] == pytest.approx(stats.spearmanr(predicted, reference)[0])
    z = stats.norm.ppf(0.975)
    fisher = np.tanh(np.arctanh(r) - z / np.sqrt(22)), np.tanh(np.arctanh(r) + z / np.sqrt(22))
    assert (out["pearson_fisher_ci_low"], out["pearson_fisher_ci_high"]) == pytest.approx(fisher)
    # the percentile bootstrap over pairs, one resample at a time
    idx = np.random.default_rng(7).integers(0, 25, (500, 25))
    rs = [stats.pearsonr(predicted[i], reference[i])[0] for i in idx]
    rhos = [stats.spearmanr(predicted[i], reference[i])[0] for i in idx]
    assert (out["pearson_bootstrap_ci_low"], out["pearson_bootstrap_ci_high"]) == pytest.approx(
        tuple(np.percentile(rs, [2.5, 97.5]))
    )
    assert (out["spearman_bootstrap_ci_low"], out["spearman_bootstrap_ci_high"]) == pytest.approx(
        tuple(np.percentile(rhos, [2.5, 97.5]))
    )
    assert out["bootstrap_valid"] == 500
    again = correlation_agreement(predicted, reference, n_boot=500, seed=7)
    assert again == out
    other = correlation_agreement(predicted, reference, n_boot=500, seed=8)
    assert other["pearson_bootstrap_ci_low"] != out["pearson_bootstrap_ci_low"]


def test_bootstrap_drops_constant_resamples():
    pearson, spearman = bootstrap_correlations([1.0, 2.0, 3.0], [1.0, 3.0, 2.0], 200, 0)
    # a resample drawing one pair three times has a constant side
    assert np.isnan(pearson).any() and np.isfinite(pearson).any()
    assert np.array_equal(np.isnan(pearson), np.isnan(spearman))


def test_count_agreement_by_hand():
    predicted = [0, 2, 3, 7, 1]
    reference = [0, 3, 3, 5, 1]
    out = count_agreement(predicted, reference, n_boot=100)
    assert out["mean_absolute_error"] == pytest.approx(3 / 5)
    assert out["mean_signed_error"] == pytest.approx(1 / 5)
    assert out["exact_agreement"] == pytest.approx(3 / 5)
    assert out["spearman_rho"] == pytest.approx(stats.spearmanr(predicted, reference)[0])
    icc = intraclass_correlation(np.column_stack([reference, predicted]))
    assert out["icc2_1"] == pytest.approx(icc["icc2_1"])
    assert out["icc3_1_ci_high"] == pytest.approx(icc["icc3_1_ci_high"])


@pytest.mark.parametrize("size", [0, 1, 2])
def test_too_few_pairs_give_none_not_errors(size):
    values = [1.0, 2.0][:size]
    out = continuous_agreement(values, values, n_boot=50)
    assert out["n"] == size
    assert out["correlation"]["pearson_r"] is None
    assert out["correlation"]["pearson_bootstrap_ci_low"] is None
    assert out["bland_altman"]["slope"] is None
    if size == 0:
        assert out["bland_altman"]["bias"] is None and out["icc"]["icc2_1"] is None
    counts = count_agreement(values, values, n_boot=50)
    assert counts["spearman_rho"] is None
    assert kappa_agreement([], [])["kappa"] is None
    assert diagnostic_agreement([], [], [])["sensitivity"] is None


def test_constant_sides_give_none():
    out = continuous_agreement([1.0, 1.0, 1.0, 1.0], [0.5, 1.0, 2.0, 3.0], n_boot=50)
    assert out["correlation"]["spearman_rho"] is None
    assert out["correlation"]["pearson_fisher_ci_low"] is None
    icc = intraclass_correlation([[2.0, 2.0], [2.0, 2.0], [2.0, 2.0]])
    assert icc["icc2_1"] is None and icc["icc3_1"] is None and icc["icc3_1_ci_low"] is None
    # perfect agreement: ICC 1, but the F bounds are infinite, so no CI
    perfect = intraclass_correlation([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    assert perfect["icc3_1"] == 1.0 and perfect["icc3_1_ci_low"] is None
    ba = bland_altman([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert ba["sd"] == 0.0 and ba["bias_ci_low"] == ba["bias_ci_high"] == 0.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_values_raise(bad):
    with pytest.raises(ValueError, match="finite"):
        correlation_agreement([bad, 1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="finite"):
        bland_altman([1.0, 2.0, 3.0], [1.0, bad, 3.0])
    with pytest.raises(ValueError, match="finite"):
        intraclass_correlation([[1.0, bad], [2.0, 2.0]])
    with pytest.raises(ValueError, match="finite"):
        auc_delong([True, False], [bad, 0.1])
    with pytest.raises(ValueError, match="finite"):
        count_agreement([1, 2], [1, bad])
