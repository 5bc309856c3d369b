"""Preprocessing of seeds 000/001: find the body, cut and centre each view, normalise, merge.

Raw counts stay untouched (no scaling, no clipping); brightness normalisation produces a separate
8-bit display image. Every view keeps a :class:`ViewPlacement`, the exact translation from the
original view's pixels to the merged image's, so results can be drawn back on the original scan.

Steps (DOMAIN.md section 2):

1. Body extent by projection profiles: the row profile of both views together (so the halves stay
   aligned row for row), then the column profile of each view within those rows. A profile is
   smoothed (9-sample box) and the extent is where it exceeds its minimum plus 5 % of its range.
   Counts are clipped at their 99th percentile first, so a hot bladder or injection site cannot
   dominate the profile.
2. Cut and centre each view on a 950 x 256 canvas without scaling: an extent that fits is centred;
   a taller one keeps the head (rows past 950 below it are dropped), a wider one (arms out on a
   512-wide matrix) keeps the centre. Nothing that fits is cropped, the extent only sets the offset.
3. Brightness rule: ``display = clip(rint(counts * gain), 0, 255)`` as uint8, one linear gain for
   the whole merged image, chosen by bisection so that the mean of the *clipped* 8-bit values over
   the views present is 10.5 (to rounding), the middle of seed 001's (7, 14) window. A single-view
   scan's empty half is left out of that mean. Where even full saturation of every non-zero pixel
   cannot reach the target (an almost empty image) the largest gain is used and the mean stays
   below 7.
4. Optionally (``cut_below_knee``) rows from 640 on are set to zero in counts and display.
5. Anterior on the left (columns 0-255), posterior on the right (256-511).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from bsi_d2.structures.histogram import CountHistogram

MERGED_HEIGHT = 950
VIEW_WIDTH = 256
KNEE_ROW = 640
TARGET_MEAN = 10.5  # middle of seed 001's (7, 14) window on the 8-bit scale
HOT_PERCENTILE = 99.0  # counts above it do not weigh more in the body-extent profiles
VIEW_ORDER = ("anterior", "posterior")  # left, right in the merged image


@dataclass(frozen=True)
class ViewPlacement:
    """merged[r, c] == view[r - row_offset, c - col_offset] wherever both exist."""

    view: str
    source_shape: tuple[int, int]
    row_offset: int
    col_offset: int  # includes the view's slot: +256 for the posterior view

    def to_merged(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return rows + self.row_offset, cols + self.col_offset

    def to_source(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return rows - self.row_offset, cols - self.col_offset

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ViewPlacement:
        return cls(d["view"], tuple(d["source_shape"]), int(d["row_offset"]), int(d["col_offset"]))


@dataclass
class MergedScan:
    counts: np.ndarray  # (950, 512) raw counts, float32, zero outside the views
    display: np.ndarray  # (950, 512) uint8, brightness-normalised
    placements: tuple[ViewPlacement, ...]  # one per view present, anterior first
    gain: float  # display = clip(rint(counts * gain), 0, 255)


def _smooth(profile: np.ndarray, window: int = 9) -> np.ndarray:
    # np.convolve(mode="same") returns the longer of its inputs: never let the kernel be longer
    window = max(1, min(window, len(profile)))
    kernel = np.ones(window) / window
    return np.convolve(profile, kernel, mode="same")


def profile_extent(profile: np.ndarray, fraction: float = 0.05) -> tuple[int, int]:
    """First and last index (inclusive) where a smoothed projection profile rises above
    ``fraction`` of its range over the background (the profile's minimum: a body that fills
    nearly every row leaves too few background rows for a percentile)."""
    if len(profile) == 0:
        raise ValueError("empty projection profile")
    smoothed = _smooth(np.asarray(profile, dtype=np.float64))
    background = smoothed.min()
    peak = smoothed.max()
    if peak <= background:
        return 0, len(profile) - 1
    above = np.flatnonzero(smoothed > background + fraction * (peak - background))
    return int(above[0]), int(above[-1])


def clip_hot(counts: np.ndarray, percentile: float = HOT_PERCENTILE) -> np.ndarray:
    """Counts clipped at their ``percentile``: a hot bladder or injection site would otherwise
    dominate the projection profiles and shrink the extent to itself."""
    counts = np.asarray(counts, dtype=np.float64)
    ceiling = hot_ceiling(counts, percentile)
    return np.minimum(counts, ceiling) if ceiling > 0 else counts


def hot_ceiling(counts: np.ndarray, percentile: float = HOT_PERCENTILE) -> float:
    """``np.percentile(counts, percentile)`` (0 for no pixels), from the counts' histogram
    where that gives the same number."""
    if counts.size == 0:
        return 0.0
    histogram = CountHistogram.of(counts)
    ceiling = histogram.percentile(percentile) if histogram is not None else None
    if ceiling is None:
        ceiling = float(np.percentile(np.asarray(counts, dtype=np.float64), percentile))
    return ceiling


def body_extent(counts: np.ndarray, fraction: float = 0.05) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), inclusive, of the body in one view by projection profiles."""
    counts = clip_hot(counts)
    top, bottom = profile_extent(counts.sum(axis=1), fraction)
    left, right = profile_extent(counts[top : bottom + 1].sum(axis=0), fraction)
    return top, bottom, left, right


def _placement_1d(start: int, stop: int, source_len: int, canvas_len: int, keep: str) -> int:
    """Offset o so that canvas index = source index + o, centring [start, stop] on the canvas;
    an extent longer than the canvas keeps its ``keep`` end ("start" or "centre")."""
    extent = stop - start + 1
    if extent <= canvas_len:
        return (canvas_len - extent) // 2 - start
    if keep == "start":
        return -start
    return (canvas_len - extent) // 2 - start


def place_view(
    counts: np.ndarray,
    view: str,
    rows: tuple[int, int],
    cols: tuple[int, int],
    height: int = MERGED_HEIGHT,
    width: int = VIEW_WIDTH,
) -> tuple[np.ndarray, ViewPlacement]:
    """Cut and centre one view onto a (height, width) canvas without scaling."""
    h, w = counts.shape
    dr = _placement_1d(rows[0], rows[1], h, height, keep="start")  # keep the head
    dc = _placement_1d(cols[0], cols[1], w, width, keep="centre")
    canvas = np.zeros((height, width), dtype=np.float32)
    r0, r1 = max(0, dr), min(height, h + dr)
    c0, c1 = max(0, dc), min(width, w + dc)
    canvas[r0:r1, c0:c1] = counts[r0 - dr : r1 - dr, c0 - dc : c1 - dc]
    slot = VIEW_ORDER.index(view) * width
    return canvas, ViewPlacement(view, (h, w), dr, dc + slot)


def normalize_brightness(
    counts: np.ndarray, target_mean: float = TARGET_MEAN, mask: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """8-bit display image ``clip(rint(counts * gain), 0, 255)`` whose mean is ``target_mean``.

    The mean is taken over ``mask`` (default: every pixel). The gain is found by bisection (the
    clipped mean grows monotonically with it), so the mean lands in seed 001's (7, 14) window
    whatever the count level. Returns (image, gain).
    """
    counts = np.asarray(counts, dtype=np.float32)
    region = counts if mask is None else counts[np.asarray(mask, dtype=bool)]
    histogram = CountHistogram.of(region)
    if histogram is not None:
        positive = histogram.values[histogram.values > 0]
    else:
        positive = region[region > 0]
    if positive.size == 0:
        return np.zeros(counts.shape, dtype=np.uint8), 0.0
    # at this gain every non-zero pixel saturates: the largest mean any gain can give
    lo, hi = 0.0, 255.0 / max(float(positive.min()), 1e-6)
    for _ in range(50):
        gain = 0.5 * (lo + hi)
        if _display_mean_below(region, histogram, gain, target_mean):
            lo = gain
        else:
            hi = gain
    gain = 0.5 * (lo + hi)
    return np.clip(np.rint(counts * gain), 0, 255).astype(np.uint8), gain


FLOAT32_EXACT = 1 << 24  # integers up to this are exact in float32, and so are their sums


def _display_mean_below(
    region: np.ndarray, histogram: CountHistogram | None, gain: float, target_mean: float
) -> bool:
    """Whether ``np.clip(np.rint(region * gain), 0, 255).mean() < target_mean``, as NumPy
    computes it on the float32 ``region``, taken from the histogram where that is certain.

    Each distinct value maps to the same 8-bit level as its pixels do (the same float32
    operations), so the levels' exact sum is known. Below 2**24 NumPy's float32 sum is exact in
    any order and the mean is that sum divided as ``_mean`` divides it; above, even the float32
    sum's worst rounding (under 3 % for 2**19 pixels) leaves the mean far above the target.
    """
    if histogram is not None:
        levels = np.clip(np.rint(histogram.values.astype(np.float32) * gain), 0, 255)
        total = int(np.dot(levels.astype(np.int64), histogram.pixels))
        if total < FLOAT32_EXACT:
            total32 = np.float32(total)
            return bool(total32.dtype.type(total32 / np.intp(histogram.size)) < target_mean)
        if 2 * histogram.size * (abs(target_mean) + 1) < FLOAT32_EXACT:
            return False
    return bool(np.clip(np.rint(region * gain), 0, 255).mean() < target_mean)


def merge_views(
    anterior: np.ndarray | None,
    posterior: np.ndarray | None,
    cut_below_knee: bool = False,
    target_mean: float = TARGET_MEAN,
) -> MergedScan:
    """Anterior and posterior count images (any size) -> the 950 x 512 merged scan.

    The vertical extent is found on both views together so the two halves stay aligned row
    for row; the horizontal extent per view. One view may be ``None`` (a single-view study): its
    half stays zero, it has no placement, and the brightness gain is set on the present half only.
    """
    given = {
        view: None if counts is None else np.asarray(counts, dtype=np.float32)
        for view, counts in zip(VIEW_ORDER, (anterior, posterior), strict=True)
    }
    present = {view: counts for view, counts in given.items() if counts is not None}
    if not present:
        raise ValueError("merge_views needs at least one view")
    shapes = {view: counts.shape for view, counts in present.items()}
    if any(len(shape) != 2 or 0 in shape for shape in shapes.values()):
        raise ValueError(f"views must be non-empty 2-D arrays, got {shapes}")
    if len({shape[0] for shape in shapes.values()}) > 1:
        raise ValueError(f"views differ in height: {shapes}")
    clipped = {view: clip_hot(counts) for view, counts in present.items()}
    rows = profile_extent(sum(counts.sum(axis=1) for counts in clipped.values()))
    halves, placements = [], []
    mask = np.zeros((MERGED_HEIGHT, VIEW_WIDTH * len(VIEW_ORDER)), dtype=bool)
    for slot, view in enumerate(VIEW_ORDER):
        counts = given[view]
        if counts is None:
            halves.append(np.zeros((MERGED_HEIGHT, VIEW_WIDTH), dtype=np.float32))
            continue
        cols = profile_extent(clipped[view][rows[0] : rows[1] + 1].sum(axis=0))
        canvas, placement = place_view(counts, view, rows, cols)
        halves.append(canvas)
        placements.append(placement)
        mask[:, slot * VIEW_WIDTH : (slot + 1) * VIEW_WIDTH] = True
    merged = np.concatenate(halves, axis=1)
    if cut_below_knee:
        merged[KNEE_ROW:] = 0
    display, gain = normalize_brightness(merged, target_mean, mask=mask)
    return MergedScan(merged, display, tuple(placements), gain)
