"""Agreement with a reference: BSI (Pearson r, Spearman rho, Bland-Altman) and lesion burden
(count errors, burden-group agreement and Cohen's kappa)."""

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
