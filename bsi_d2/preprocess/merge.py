"""Preprocessing of seeds 000/001: find the body, cut and centre each view, normalise, merge.

Raw counts stay untouched (no scaling, no clipping); brightness normalisation produces a separate
8-bit display image. Every view keeps a :class:`ViewPlacement`, the exact translation from the
original view's pixels to the merged image's, so results can be drawn back on the original scan.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

MERGED_HEIGHT = 950
VIEW_WIDTH = 256
KNEE_ROW = 640
TARGET_MEAN = 10.5  # middle of seed 001's (7, 14) window on the 8-bit scale
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
    placements: tuple[ViewPlacement, ViewPlacement]
    gain: float  # display = clip(counts * gain, 0, 255)


def _smooth(profile: np.ndarray, window: int = 9) -> np.ndarray:
    kernel = np.ones(window) / window
    return np.convolve(profile, kernel, mode="same")


def profile_extent(profile: np.ndarray, fraction: float = 0.05) -> tuple[int, int]:
    """First and last index (inclusive) where a smoothed projection profile rises above
    ``fraction`` of its range over the background (the profile's 5th percentile)."""
    smoothed = _smooth(np.asarray(profile, dtype=np.float64))
    background = np.percentile(smoothed, 5)
    peak = smoothed.max()
    if peak <= background:
        return 0, len(profile) - 1
    above = np.flatnonzero(smoothed > background + fraction * (peak - background))
    return int(above[0]), int(above[-1])


def body_extent(counts: np.ndarray, fraction: float = 0.05) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), inclusive, of the body in one view by projection profiles."""
    counts = np.asarray(counts, dtype=np.float64)
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


def normalize_brightness(counts: np.ndarray, target_mean: float = TARGET_MEAN) -> tuple[np.ndarray, float]:
    """8-bit display image ``clip(counts * gain, 0, 255)`` whose mean is ``target_mean``.

    The gain is found by bisection (the clipped mean grows monotonically with it), so the mean
    lands in seed 001's (7, 14) window whatever the count level. Returns (image, gain).
    """
    counts = np.asarray(counts, dtype=np.float32)
    if counts.mean() <= 0:
        return np.zeros(counts.shape, dtype=np.uint8), 0.0
    lo, hi = 0.0, 255.0 / max(float(counts[counts > 0].min()), 1e-6)
    for _ in range(40):
        gain = 0.5 * (lo + hi)
        if np.clip(counts * gain, 0, 255).mean() < target_mean:
            lo = gain
        else:
            hi = gain
    gain = 0.5 * (lo + hi)
    return np.clip(np.rint(counts * gain), 0, 255).astype(np.uint8), gain


def merge_views(
    anterior: np.ndarray,
    posterior: np.ndarray,
    cut_below_knee: bool = False,
    target_mean: float = TARGET_MEAN,
) -> MergedScan:
    """Anterior and posterior count images (any size) -> the 950 x 512 merged scan.

    The vertical extent is found on both views together so the two halves stay aligned row
    for row; the horizontal extent per view.
    """
    anterior = np.asarray(anterior, dtype=np.float32)
    posterior = np.asarray(posterior, dtype=np.float32)
    if anterior.ndim != 2 or posterior.ndim != 2:
        raise ValueError(f"views must be 2-D, got {anterior.shape} and {posterior.shape}")
    if anterior.shape[0] != posterior.shape[0]:
        raise ValueError(f"views differ in height: {anterior.shape} vs {posterior.shape}")
    rows = profile_extent(anterior.sum(axis=1) + posterior.sum(axis=1))
    halves, placements = [], []
    for view, counts in zip(VIEW_ORDER, (anterior, posterior), strict=True):
        cols = profile_extent(counts[rows[0] : rows[1] + 1].sum(axis=0))
        canvas, placement = place_view(counts, view, rows, cols)
        halves.append(canvas)
        placements.append(placement)
    merged = np.concatenate(halves, axis=1)
    if cut_below_knee:
        merged[KNEE_ROW:] = 0
    display, gain = normalize_brightness(merged, target_mean)
    return MergedScan(merged, display, (placements[0], placements[1]), gain)
