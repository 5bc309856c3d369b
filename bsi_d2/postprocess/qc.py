"""Quality control of one analysed scan: can its indices be trusted at all? NumPy only.

A scan that fails a check gets ``status: qc_failed`` with the reasons and no indices, so a
blank, saturated or garbage image, or one where the model found no skeleton, is never reported
as a scan without metastases. The checks, each on the views present in the scan:

- ``counts_valid``: every count finite and non-negative;
- ``counts_not_constant``: the view is not one flat value (blank or filled images);
- ``counts_not_saturated``: at most ``max_flat_fraction`` of the view's pixels sit at its
  maximum, where that maximum is 50 or more (a real scan has a handful of hottest pixels; a
  saturated one has a plateau);
- ``counts_total``: total counts of the view within [``min_view_counts``, ``max_view_counts``]
  (whole-body views hold about 0.5-5 million counts; the phantoms 1.1-4.9 M, the NEMA scan
  3.6 M); skipped where display values stand in for counts;
- ``skeleton_found``: each of ``required_regions`` was found in the view (the big regions that
  any whole-body scan shows; a model that misses them has not understood the image).

Warnings do not fail a scan: pixel spacing unknown, a view missing, display values as counts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from bsi_d2.postprocess.bsi import BSIResult, view_columns

# a plateau at a maximum this low is a faint scan (the total-counts check's business), not a
# saturated one
SATURATION_MIN_VALUE = 50.0
QC_PASSED = "passed"
QC_FAILED = "failed"


@dataclass(frozen=True)
class QCThresholds:
    """The quality-control limits; ``BSI.QC.*`` in the config, ``--qc-*`` on the command line."""

    enabled: bool = True
    min_view_counts: float = 1.0e5
    max_view_counts: float = 1.0e8
    max_flat_fraction: float = 0.01
    required_regions: tuple[str, ...] = ("skull", "spine", "chest", "pelvis")  # bones

    @classmethod
    def from_config(cls, node) -> QCThresholds:
        """The limits of a config's ``BSI.QC`` node."""
        return cls(
            enabled=bool(node.ENABLED),
            min_view_counts=float(node.MIN_VIEW_COUNTS),
            max_view_counts=float(node.MAX_VIEW_COUNTS),
            max_flat_fraction=float(node.MAX_FLAT_FRACTION),
            required_regions=tuple(str(r) for r in node.REQUIRED_REGIONS),
        )


@dataclass
class QCResult:
    status: str  # QC_PASSED or QC_FAILED
    failed: list[str] = field(default_factory=list)  # one sentence per failed check
    warnings: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)  # "<check>_<view>" -> passed

    @property
    def passed(self) -> bool:
        return self.status == QC_PASSED

    def to_dict(self) -> dict:
        return asdict(self)


def quality_control(
    counts: np.ndarray,
    result: BSIResult,
    views_present: list[str] | None = None,
    counts_source: str | None = None,
    pixel_spacing_known: bool = True,
    thresholds: QCThresholds | None = None,
) -> QCResult:
    """Run the checks (module docstring) on a merged scan's ``counts`` and its BSI result."""
    limits = thresholds or QCThresholds()
    counts = np.asarray(counts, dtype=np.float64)
    columns = view_columns(counts.shape[1])
    present = list(columns) if views_present is None else [v for v in columns if v in views_present]
    out = QCResult(QC_PASSED)
    if not limits.enabled:
        out.warnings.append("quality control switched off")
        return out

    def check(name: str, view: str, ok: bool, reason: str) -> None:
        out.checks[f"{name}_{view}"] = bool(ok)
        if not ok:
            out.failed.append(f"{view} view: {reason}")

    if not present:
        out.failed.append("no view in the scan")
    for view in present:
        values = counts[:, columns[view]]
        finite = np.isfinite(values)
        valid = bool(finite.all() and (values[finite] >= 0).all())
        check("counts_valid", view, valid, "counts are negative or not finite")
        if not valid:
            continue
        low, high = float(values.min()), float(values.max())
        check("counts_not_constant", view, high > low, f"every pixel has the value {high:g}")
        if high <= low:
            continue
        flat = float(np.count_nonzero(values == high)) / values.size
        check(
            "counts_not_saturated",
            view,
            flat <= limits.max_flat_fraction or high < SATURATION_MIN_VALUE,
            f"{100 * flat:.1f} % of pixels sit at the maximum {high:g} (saturated)",
        )
        if counts_source != "display":
            total = float(values.sum())
            check(
                "counts_total",
                view,
                limits.min_view_counts <= total <= limits.max_view_counts,
                f"{total:.3g} counts, outside the plausible {limits.min_view_counts:.3g}-"
                f"{limits.max_view_counts:.3g} of a whole-body view",
            )
        missing = [
            bone
            for bone in limits.required_regions
            if bone in result.bones and not result.bones[bone].region_pixels.get(view)
        ]
        check(
            "skeleton_found",
            view,
            not missing,
            f"the model found no {', '.join(missing)}: the skeleton was not recognised",
        )
    if counts_source == "display":
        out.warnings.append("display values stood in for counts: count checks are limited")
    if not pixel_spacing_known:
        out.warnings.append("pixel spacing unknown")
    for view in columns:
        if view not in present:
            out.warnings.append(f"no {view} view in the scan")
    if out.failed:
        out.status = QC_FAILED
    return out
