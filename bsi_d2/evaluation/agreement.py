"""Agreement with a reference: BSI (Pearson r, Spearman rho, Bland-Altman) and lesion burden
(count errors, burden-group agreement and Cohen's kappa), and the same with confidence intervals
for ``bsi-d2 evaluate --reference``: correlations with bootstrap CIs, ICC(2,1) and ICC(3,1),
Bland-Altman with the CIs of bias and limits, kappa, sensitivity / specificity and AUC."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
from scipy import stats


def bsi_agreement(predicted: Sequence[float], reference: Sequence[float]) -> dict:
    """Correlation and Bland-Altman statistics of paired values; difference = predicted - reference.

    Correlations are None with fewer than three pairs or a constant side, where they are undefined.
    """
    pred = np.asarray(predicted, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if pred.shape != ref.shape or pred.ndim != 1:
        raise ValueError(f"need two equal-length 1-D sequences, got {pred.shape} and {ref.shape}")
    if not (np.isfinite(pred).all() and np.isfinite(ref).all()):
        raise ValueError("BSI values must be finite numbers")
    n = int(pred.size)
    out: dict = {"n": n}
    correlatable = n >= 3 and np.ptp(pred) > 0 and np.ptp(ref) > 0
    if correlatable:
        r, r_p = stats.pearsonr(pred, ref)
        rho, rho_p = stats.spearmanr(pred, ref)
        out.update(pearson_r=float(r), pearson_p=float(r_p))
        out.update(spearman_rho=float(rho), spearman_p=float(rho_p))
    else:
        out.update(pearson_r=None, pearson_p=None, spearman_rho=None, spearman_p=None)
    diff = pred - ref
    mean_diff = float(diff.mean()) if n else None
    sd = float(diff.std(ddof=1)) if n >= 2 else None
    out.update(
        mean_difference=mean_diff,
        sd_difference=sd,
        loa_lower=mean_diff - 1.96 * sd if sd is not None else None,
        loa_upper=mean_diff + 1.96 * sd if sd is not None else None,
        mean_absolute_difference=float(np.abs(diff).mean()) if n else None,
    )
    return out


def cohen_kappa(
    rater_a: Sequence[Hashable], rater_b: Sequence[Hashable], labels: Sequence[Hashable] = ()
) -> float | None:
    """Unweighted Cohen's kappa of two raters' labels of the same items, (po - pe) / (1 - pe).

    ``labels`` fixes the category order only; categories either rater uses are added. None
    without items, or when chance agreement pe is 1 (both raters give every item one label).
    """
    if len(rater_a) != len(rater_b):
        raise ValueError(f"need two equal length sequences, got {len(rater_a)} and {len(rater_b)}")
    n = len(rater_a)
    if n == 0:
        return None
    table = confusion_table(rater_a, rater_b, labels)
    counts = np.array([list(row.values()) for row in table.values()], dtype=np.float64)
    observed = np.trace(counts) / n
    chance = float(counts.sum(axis=1) @ counts.sum(axis=0)) / n**2
    if chance >= 1.0:
        return None
    return float((observed - chance) / (1.0 - chance))


def confusion_table(
    rater_a: Sequence[Hashable], rater_b: Sequence[Hashable], labels: Sequence[Hashable] = ()
) -> dict[Hashable, dict[Hashable, int]]:
    """{label of a: {label of b: items}} over ``labels`` plus any label either rater uses."""
    order = list(dict.fromkeys([*labels, *rater_a, *rater_b]))
    table = {x: dict.fromkeys(order, 0) for x in order}
    for x, y in zip(rater_a, rater_b, strict=True):
        table[x][y] += 1
    return table


def burden_agreement(
    predicted_counts: Sequence[int],
    reference_counts: Sequence[int],
    predicted_groups: Sequence[str],
    reference_groups: Sequence[str],
    groups: Sequence[str] = (),
) -> dict:
    """Agreement of per-scan lesion counts and burden groups; error = predicted - reference.

    ``groups`` orders the burden groups of ``group_confusion`` ({reference: {predicted: scans}});
    the kappa is unweighted, as the groups are compared for equality only.
    """
    pred = np.asarray(predicted_counts, dtype=np.float64)
    ref = np.asarray(reference_counts, dtype=np.float64)
    n = int(ref.size)
    if not (
        pred.shape == ref.shape == (n,) and len(predicted_groups) == len(reference_groups) == n
    ):
        raise ValueError("need equal-length 1-D sequences of counts and groups")
    error = pred - ref
    agree = [p == r for p, r in zip(predicted_groups, reference_groups, strict=True)]
    return {
        "n": n,
        "count_mean_absolute_error": float(np.abs(error).mean()) if n else None,
        "count_mean_signed_error": float(error.mean()) if n else None,
        "count_exact_agreement": float(np.mean(error == 0)) if n else None,
        "group_agreement": float(np.mean(agree)) if n else None,
        "group_kappa": cohen_kappa(reference_groups, predicted_groups, groups),
        "group_confusion": confusion_table(reference_groups, predicted_groups, groups),
    }


# -- with confidence intervals ----------------------------------------------------------------
# Every function below returns a flat dict of floats (ints for counts) and None where a value is
# undefined (too few pairs, a constant side); non-finite inputs raise ValueError. CIs are
# two-sided at ``confidence``, as ``<name>_ci_low`` / ``<name>_ci_high``.

LOA_Z = 1.96  # Bland-Altman limits: bias +- 1.96 SD, as bsi_agreement and the plots draw them
N_BOOTSTRAP = 2000
_BOOTSTRAP_CELLS = 1 << 21  # resampled values held at once; bounds memory for large n


def _finite_pair(predicted: Sequence[float], reference: Sequence[float], what: str):
    pred = np.asarray(predicted, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if pred.shape != ref.shape or pred.ndim != 1:
        raise ValueError(f"need two equal-length 1-D sequences, got {pred.shape} and {ref.shape}")
    if not (np.isfinite(pred).all() and np.isfinite(ref).all()):
        raise ValueError(f"{what} must be finite numbers")
    return pred, ref


def _number(value: float) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _ci(name: str, low: float | None, high: float | None) -> dict:
    return {
        f"{name}_ci_low": None if low is None else _number(low),
        f"{name}_ci_high": None if high is None else _number(high),
    }


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    return float(stats.norm.ppf(0.5 + confidence / 2))


def _correlatable(x: np.ndarray, y: np.ndarray) -> bool:
    return x.size >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0


def _rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair; NaN where a row is constant."""
    valid = (np.ptp(x, axis=1) > 0) & (np.ptp(y, axis=1) > 0)
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=1) / np.sqrt((xc**2).sum(axis=1) * (yc**2).sum(axis=1))
    return np.where(valid, np.clip(r, -1.0, 1.0), np.nan)


def bootstrap_correlations(
    x: Sequence[float], y: Sequence[float], n_boot: int = N_BOOTSTRAP, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Pearson r and Spearman rho of ``n_boot`` resamples of the pairs, drawn as
    ``np.random.default_rng(seed).integers(0, n, (n_boot, n))``; NaN for a resample with a
    constant side."""
    x, y = _finite_pair(x, y, "values")
    n = x.size
    idx = np.random.default_rng(seed).integers(0, n, (n_boot, n))
    pearson = np.empty(n_boot)
    spearman = np.empty(n_boot)
    step = max(1, _BOOTSTRAP_CELLS // max(n, 1))
    for start in range(0, n_boot, step):
        rows = idx[start : start + step]
        xs, ys = x[rows], y[rows]
        pearson[start : start + step] = _rowwise_pearson(xs, ys)
        ranks = stats.rankdata(xs, axis=1), stats.rankdata(ys, axis=1)
        spearman[start : start + step] = _rowwise_pearson(*ranks)
    return pearson, spearman


def _percentile_ci(values: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None, None
    tail = 50 * (1 - confidence)
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def correlation_agreement(
    predicted: Sequence[float],
    reference: Sequence[float],
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """Pearson r (Fisher-z and percentile-bootstrap CIs) and Spearman rho (bootstrap CI).

    The bootstrap resamples pairs (:func:`bootstrap_correlations`); resamples with a constant
    side are left out and ``bootstrap_valid`` counts those kept. The Fisher-z CI needs n >= 4.
    """
    pred, ref = _finite_pair(predicted, reference, "values")
    z = _z(confidence)
    n = int(pred.size)
    out: dict = {"n": n}
    keys = ("pearson_r", "pearson_p", "spearman_rho", "spearman_p", "bootstrap_valid")
    out.update(dict.fromkeys(keys))
    for name in ("pearson_fisher", "pearson_bootstrap", "spearman_bootstrap"):
        out.update(_ci(name, None, None))
    out["bootstrap_resamples"] = int(n_boot)
    if not _correlatable(pred, ref):
        return out
    r, r_p = stats.pearsonr(pred, ref)
    rho, rho_p = stats.spearmanr(pred, ref)
    out.update(pearson_r=float(r), pearson_p=float(r_p))
    out.update(spearman_rho=float(rho), spearman_p=float(rho_p))
    if n >= 4:
        with np.errstate(divide="ignore"):
            centre = np.arctanh(np.clip(r, -1.0, 1.0))
        half = z / np.sqrt(n - 3)
        out.update(_ci("pearson_fisher", np.tanh(centre - half), np.tanh(centre + half)))
    if n_boot > 0:
        pearson, spearman = bootstrap_correlations(pred, ref, n_boot, seed)
        out["bootstrap_valid"] = int(np.isfinite(pearson).sum())
        out.update(_ci("pearson_bootstrap", *_percentile_ci(pearson, confidence)))
        out.update(_ci("spearman_bootstrap", *_percentile_ci(spearman, confidence)))
    return out


def intraclass_correlation(ratings: Sequence[Sequence[float]], confidence: float = 0.95) -> dict:
    """ICC(2,1) (two-way random, absolute agreement, single rater) and ICC(3,1) (two-way mixed,
    consistency, single rater) of an n targets x k raters table, with their F-distribution CIs
    (Shrout & Fleiss 1979; McGraw & Wong 1996, the formulas pingouin uses).

    None with fewer than 2 targets or raters, or without variance; a CI is None where its F
    bound is infinite (no residual variance).
    """
    x = np.asarray(ratings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"need an n targets x k raters table, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("ratings must be finite numbers")
    _z(confidence)
    n, k = x.shape
    out: dict = {"n": int(n), "k": int(k)}
    for name in ("icc2_1", "icc3_1"):
        out[name] = None
        out.update(_ci(name, None, None))
    out.update(f=None, df1=None, df2=None, p=None)
    if n < 2 or k < 2:
        return out
    grand = x.mean()
    ss_rows = k * ((x.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((x.mean(axis=0) - grand) ** 2).sum()
    ss_error = max(((x - grand) ** 2).sum() - ss_rows - ss_cols, 0.0)
    df1, df2 = n - 1, (n - 1) * (k - 1)
    msr, msc, mse = ss_rows / df1, ss_cols / (k - 1), ss_error / df2
    out.update(df1=int(df1), df2=int(df2))
    q = 0.5 + confidence / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        denominator = msr + (k - 1) * mse
        if denominator > 0:
            icc3 = (msr - mse) / denominator
            f_rows = msr / mse if mse > 0 else np.inf
            out.update(icc3_1=float(icc3), f=_number(f_rows))
            out["p"] = float(stats.f.sf(f_rows, df1, df2)) if mse > 0 else 0.0
            f_low = f_rows / stats.f.ppf(q, df1, df2)
            f_high = f_rows * stats.f.ppf(q, df2, df1)
            out.update(
                _ci("icc3_1", (f_low - 1) / (f_low + k - 1), (f_high - 1) / (f_high + k - 1))
            )
        denominator = msr + (k - 1) * mse + k * (msc - mse) / n
        if denominator > 0:
            icc2 = (msr - mse) / denominator
            out["icc2_1"] = float(icc2)
            f_cols = msc / mse if mse > 0 else np.inf
            # Satterthwaite's degrees of freedom of the denominator (Shrout & Fleiss 1979)
            c = n * (1 + (k - 1) * icc2) - k * icc2
            v = df2 * (k * icc2 * f_cols + c) ** 2 / (df1 * (k * icc2 * f_cols) ** 2 + c**2)
            if np.isfinite(v) and v > 0:
                f_upper = stats.f.ppf(q, df1, v)
                f_lower = stats.f.ppf(q, v, df1)
                scale = k * msc + (k * n - k - n) * mse
                low = n * (msr - f_upper * mse) / (f_upper * scale + n * msr)
                high = n * (f_lower * msr - mse) / (scale + n * f_lower * msr)
                out.update(_ci("icc2_1", low, high))
    return out


def bland_altman(
    predicted: Sequence[float], reference: Sequence[float], confidence: float = 0.95
) -> dict:
    """Bland-Altman statistics of difference = predicted - reference: bias (t CI), SD, limits
    of agreement bias +- 1.96 SD, each with the CI of Bland & Altman 1999 (SE = SD sqrt(3/n),
    t quantile, n - 1 df), and proportional bias: the OLS line of difference on the pair's mean
    (slope with its t CI and p-value, intercept).
    """
    pred, ref = _finite_pair(predicted, reference, "values")
    _z(confidence)
    n = int(pred.size)
    diff = pred - ref
    means = (pred + ref) / 2
    out: dict = {"n": n}
    out["bias"] = float(diff.mean()) if n else None
    out["mean_absolute_difference"] = float(np.abs(diff).mean()) if n else None
    sd = float(diff.std(ddof=1)) if n >= 2 else None
    out["sd"] = sd
    bias = out["bias"]
    out["loa_lower"] = bias - LOA_Z * sd if sd is not None else None
    out["loa_upper"] = bias + LOA_Z * sd if sd is not None else None
    for name in ("bias", "loa_lower", "loa_upper"):
        out.update(_ci(name, None, None))
    if sd is not None:
        t = float(stats.t.ppf(0.5 + confidence / 2, n - 1))
        half_bias = t * sd / np.sqrt(n)
        half_limit = t * sd * np.sqrt(3 / n)
        out.update(_ci("bias", bias - half_bias, bias + half_bias))
        for name in ("loa_lower", "loa_upper"):
            out.update(_ci(name, out[name] - half_limit, out[name] + half_limit))
    out.update(slope=None, intercept=None, slope_p=None)
    out.update(_ci("slope", None, None))
    if n >= 3 and np.ptp(means) > 0:
        fit = stats.linregress(means, diff)
        t = float(stats.t.ppf(0.5 + confidence / 2, n - 2))
        out.update(slope=float(fit.slope), intercept=float(fit.intercept))
        out["slope_p"] = _number(fit.pvalue)
        half = t * float(fit.stderr)
        out.update(_ci("slope", fit.slope - half, fit.slope + half))
    return out


def continuous_agreement(
    predicted: Sequence[float],
    reference: Sequence[float],
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """Agreement of a continuous measure (BSI): ``correlation`` (:func:`correlation_agreement`),
    ``icc`` (:func:`intraclass_correlation` of the n x 2 table), ``bland_altman``."""
    pred, ref = _finite_pair(predicted, reference, "values")
    return {
        "n": int(pred.size),
        "correlation": correlation_agreement(pred, ref, n_boot, seed, confidence),
        "icc": intraclass_correlation(np.column_stack([ref, pred]), confidence),
        "bland_altman": bland_altman(pred, ref, confidence),
    }


def count_agreement(
    predicted: Sequence[float],
    reference: Sequence[float],
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """Agreement of per-scan lesion counts; error = predicted - reference: mean absolute and
    signed error, share of exact agreement, Spearman rho (bootstrap CI), ICC(2,1) and ICC(3,1)."""
    pred, ref = _finite_pair(predicted, reference, "lesion counts")
    n = int(pred.size)
    error = pred - ref
    correlation = correlation_agreement(pred, ref, n_boot, seed, confidence)
    icc = intraclass_correlation(np.column_stack([ref, pred]), confidence)
    return {
        "n": n,
        "mean_absolute_error": float(np.abs(error).mean()) if n else None,
        "mean_signed_error": float(error.mean()) if n else None,
        "exact_agreement": float(np.mean(error == 0)) if n else None,
        **{k: correlation[k] for k in ("spearman_rho", "spearman_p")},
        **{k: correlation[k] for k in ("spearman_bootstrap_ci_low", "spearman_bootstrap_ci_high")},
        **{k: v for k, v in icc.items() if k.startswith(("icc2_1", "icc3_1"))},
    }


def kappa_agreement(
    predicted: Sequence[Hashable],
    reference: Sequence[Hashable],
    labels: Sequence[Hashable] = (),
    confidence: float = 0.95,
) -> dict:
    """Share of equal labels and unweighted Cohen's kappa with its asymptotic CI, kappa +- z SE,
    SE from the large-sample variance of Fleiss, Cohen & Everitt 1969 (not under the null),
    clipped to [-1, 1]. ``confusion`` is {reference: {predicted: scans}} in ``labels`` order."""
    if len(predicted) != len(reference):
        raise ValueError(
            f"need two equal length sequences, got {len(predicted)} and {len(reference)}"
        )
    z = _z(confidence)
    n = len(reference)
    table = confusion_table(reference, predicted, labels)
    out: dict = {"n": n, "agreement": None, "kappa": None, "kappa_se": None}
    out.update(_ci("kappa", None, None))
    out["confusion"] = table
    if n == 0:
        return out
    p = np.array([list(row.values()) for row in table.values()], dtype=np.float64) / n
    rows, cols = p.sum(axis=1), p.sum(axis=0)
    observed, chance = float(np.trace(p)), float(rows @ cols)
    out["agreement"] = observed
    if chance >= 1.0:
        return out
    kappa = (observed - chance) / (1 - chance)
    term_a = (np.diag(p) * (1 - (rows + cols) * (1 - kappa)) ** 2).sum()
    off = p * (cols[:, None] + rows[None, :]) ** 2  # p_ij (p_.i + p_j.)^2
    np.fill_diagonal(off, 0.0)
    term_b = (1 - kappa) ** 2 * off.sum()
    term_c = (kappa - chance * (1 - kappa)) ** 2
    variance = max((term_a + term_b - term_c) / ((1 - chance) ** 2 * n), 0.0)
    se = float(np.sqrt(variance))
    out.update(kappa=float(kappa), kappa_se=se)
    out.update(_ci("kappa", max(kappa - z * se, -1.0), min(kappa + z * se, 1.0)))
    return out


def wilson_interval(
    successes: int, trials: int, confidence: float = 0.95
) -> tuple[float | None, float | None]:
    """Wilson score interval of a proportion; (None, None) without trials."""
    z = _z(confidence)
    if trials <= 0:
        return None, None
    if not 0 <= successes <= trials:
        raise ValueError(f"{successes} successes of {trials} trials")
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials**2)) / (1 + z * z / trials)
    return float(max(centre - half, 0.0)), float(min(centre + half, 1.0))


def auc_delong(labels: Sequence[bool], scores: Sequence[float], confidence: float = 0.95) -> dict:
    """AUC (Mann-Whitney, ties count half) with DeLong's standard error and the CI auc +- z SE,
    clipped to [0, 1]. The AUC needs both classes, its SE two scans of each."""
    truth = np.asarray(labels, dtype=bool)
    values = np.asarray(scores, dtype=np.float64)
    if truth.shape != values.shape or truth.ndim != 1:
        raise ValueError(f"{truth.size} labels but {values.size} scores")
    if not np.isfinite(values).all():
        raise ValueError("scores must be finite numbers")
    z = _z(confidence)
    m, k = int(truth.sum()), int((~truth).sum())
    out: dict = {"n_pos": m, "n_neg": k, "auc": None, "auc_se": None}
    out.update(_ci("auc", None, None))
    if m == 0 or k == 0:
        return out
    ranks = stats.rankdata(values)
    pos, neg = values[truth], values[~truth]
    # structural components from mid-ranks (Sun & Xu 2014): the share of the other class below
    v10 = (ranks[truth] - stats.rankdata(pos)) / k
    v01 = 1 - (ranks[~truth] - stats.rankdata(neg)) / m
    auc = float(v10.mean())
    out["auc"] = auc
    if m >= 2 and k >= 2:
        se = float(np.sqrt(v10.var(ddof=1) / m + v01.var(ddof=1) / k))
        out["auc_se"] = se
        out.update(_ci("auc", max(auc - z * se, 0.0), min(auc + z * se, 1.0)))
    return out


def roc_points(labels: Sequence[bool], scores: Sequence[float]) -> dict:
    """The empirical ROC curve, calling a scan positive when its score >= each distinct score
    (highest first): ``fpr`` and ``tpr`` from (0, 0) to (1, 1), and the ``thresholds``."""
    truth = np.asarray(labels, dtype=bool)
    values = np.asarray(scores, dtype=np.float64)
    if truth.shape != values.shape or truth.ndim != 1:
        raise ValueError(f"{truth.size} labels but {values.size} scores")
    thresholds = np.unique(values)[::-1]
    m, k = max(int(truth.sum()), 1), max(int((~truth).sum()), 1)
    tpr = [0.0] + [float((values[truth] >= t).sum() / m) for t in thresholds]
    fpr = [0.0] + [float((values[~truth] >= t).sum() / k) for t in thresholds]
    return {"fpr": fpr, "tpr": tpr, "thresholds": [float(t) for t in thresholds]}


def diagnostic_agreement(
    reference: Sequence[bool],
    predicted: Sequence[bool],
    scores: Sequence[float] | None = None,
    confidence: float = 0.95,
) -> dict:
    """Scan-level yes/no against a reference: sensitivity, specificity, accuracy, PPV, NPV with
    Wilson CIs, the 2 x 2 counts, and with ``scores`` the AUC with DeLong's CI
    (:func:`auc_delong`)."""
    truth = np.asarray(reference, dtype=bool)
    called = np.asarray(predicted, dtype=bool)
    if truth.shape != called.shape or truth.ndim != 1:
        raise ValueError(f"{truth.size} reference labels but {called.size} predicted")
    tp = int(np.count_nonzero(truth & called))
    tn = int(np.count_nonzero(~truth & ~called))
    fp = int(np.count_nonzero(~truth & called))
    fn = int(np.count_nonzero(truth & ~called))
    out: dict = {"n": int(truth.size), "tp": tp, "fp": fp, "tn": tn, "fn": fn}
    for name, hits, total in (
        ("sensitivity", tp, tp + fn),
        ("specificity", tn, tn + fp),
        ("accuracy", tp + tn, truth.size),
        ("ppv", tp, tp + fp),
        ("npv", tn, tn + fn),
    ):
        out[name] = hits / total if total else None
        out.update(_ci(name, *wilson_interval(hits, int(total), confidence)))
    if scores is not None:
        auc = auc_delong(truth, scores, confidence)
        out.update({k: auc[k] for k in ("auc", "auc_se", "auc_ci_low", "auc_ci_high")})
    return out
