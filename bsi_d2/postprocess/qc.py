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
- ``body_extent``: the body (projection profiles, as preprocessing cuts it) spans at least
  ``min_body_height`` of the view's rows and ``min_body_width`` of its columns, and its box is at
  least ``min_body_aspect`` times taller than wide: a whole-body view, not a spot view or a
  fragment (phantoms: 0.65-0.80 of the rows, 0.60-0.86 of the columns, aspect about 3.5; the
  NEMA scan 0.80, 0.91, 3.3). Preprocessing places views without scaling, so a spot view keeps
  its short height;
- ``skeleton_found``: each of ``required_regions`` was found in the view (the big regions that
  any whole-body scan shows; a model that misses them has not understood the image);
- ``skeleton_area``: the pixels of all the model's bone regions in the view are between
  ``min_skeleton_fraction`` and ``max_skeleton_fraction`` of the view's pixels (predictions on
  60 held-out phantoms of the CPU demo, seeds 0-2: 0.117-0.195; the limits are wide because no
  labelled real set has measured the real range yet): a few fragments, or bone painted over the
  whole body, are not a recognised skeleton.

Warnings do not fail a scan: pixel spacing unknown, a view missing, display values as counts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from bsi_d2.postprocess.bsi import BSIResult, view_columns
from bsi_d2.preprocess.merge import body_extent
from bsi_d2.structures.histogram import CountHistogram

# a plateau at a maximum this low is a faint scan (the total-counts check's business), not a
# saturated one
SATURATION_MIN_VALUE = 50.0
QC_PASSED = "passed"
QC_FAILED = "failed"


@dataclass(frozen=True)
class QCThresholds:
    """The quality-control limits: ``BSI.QC.*`` in the config (``--opts BSI.QC.KEY VALUE``)."""

    enabled: bool = True
    min_view_counts: float = 1.0e5
    max_view_counts: float = 1.0e8
    max_flat_fraction: float = 0.01
    required_regions: tuple[str, ...] = ("skull", "spine", "chest", "pelvis")  # bones
    min_body_height: float = 0.35  # fractions of the view's rows / columns
    min_body_width: float = 0.15
    min_body_aspect: float = 1.5  # body box height / width, in pixels
    min_skeleton_fraction: float = 0.04  # bone-region pixels / view pixels
    max_skeleton_fraction: float = 0.40

    @classmethod
    def from_config(cls, node) -> QCThresholds:
        """The limits of a config's ``BSI.QC`` node."""
        return cls(
            enabled=bool(node.ENABLED),
            min_view_counts=float(node.MIN_VIEW_COUNTS),
            max_view_counts=float(node.MAX_VIEW_COUNTS),
            max_flat_fraction=float(node.MAX_FLAT_FRACTION),
            required_regions=tuple(str(r) for r in node.REQUIRED_REGIONS),
            min_body_height=float(node.MIN_BODY_HEIGHT),
            min_body_width=float(node.MIN_BODY_WIDTH),
            min_body_aspect=float(node.MIN_BODY_ASPECT),
            min_skeleton_fraction=float(node.MIN_SKELETON_FRACTION),
            max_skeleton_fraction=float(node.MAX_SKELETON_FRACTION),
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
        # integer counts (every scan read from a file): one pass gives what the checks need
        histogram = CountHistogram.of(values)
        if histogram is None:
            finite = np.isfinite(values)
            valid = bool(finite.all() and (values[finite] >= 0).all())
        else:
            valid = True
        check("counts_valid", view, valid, "counts are negative or not finite")
        if not valid:
            continue
        if histogram is None:
            low, high = float(values.min()), float(values.max())
            at_high = np.count_nonzero(values == high) if high > low else 0
        else:
            low, high, at_high = histogram.min, histogram.max, int(histogram.pixels[-1])
        check("counts_not_constant", view, high > low, f"every pixel has the value {high:g}")
        if high <= low:
            continue
        flat = float(at_high) / values.size
        check(
            "counts_not_saturated",
            view,
            flat <= limits.max_flat_fraction or high < SATURATION_MIN_VALUE,
            f"{100 * flat:.1f} % of pixels sit at the maximum {high:g} (saturated)",
        )
        if counts_source != "display":
            total = float(values.sum()) if histogram is None else histogram.total
            check(
                "counts_total",
                view,
                limits.min_view_counts <= total <= limits.max_view_counts,
                f"{total:.3g} counts, outside the plausible {limits.min_view_counts:.3g}-"
                f"{limits.max_view_counts:.3g} of a whole-body view",
            )
        check_body_extent(values, view, limits, check)
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
        bone_pixels = sum(b.region_pixels.get(view, 0) or 0 for b in result.bones.values())
        share = bone_pixels / values.size
        low_share, high_share = limits.min_skeleton_fraction, limits.max_skeleton_fraction
        check(
            "skeleton_area",
            view,
            low_share <= share <= high_share,
            f"the model's bone regions cover {100 * share:.1f} % of the view, outside the "
            f"plausible {100 * low_share:g}-{100 * high_share:g} %: the skeleton was not "
            "recognised",
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


def check_body_extent(values: np.ndarray, view: str, limits: QCThresholds, check) -> None:
    """The ``body_extent`` check of one view's counts (module docstring)."""
    top, bottom, left, right = body_extent(values)
    height, width = bottom - top + 1, right - left + 1
    rows, cols = values.shape
    problems = []
    if height < limits.min_body_height * rows:
        problems.append(f"{100 * height / rows:.0f} % of the view's height")
    if width < limits.min_body_width * cols:
        problems.append(f"{100 * width / cols:.0f} % of its width")
    if height < limits.min_body_aspect * width:
        problems.append(
            f"a box {height} x {width} px, not taller than wide by {limits.min_body_aspect:g}"
        )
    check(
        "body_extent",
        view,
        not problems,
        f"the body spans {', '.join(problems)}: not a whole-body view (a spot view or a fragment?)",
    )
