"""Agreement of predicted and reference BSI: Pearson r, Spearman rho and Bland-Altman."""

from __future__ import annotations

from collections.abc import Sequence

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
