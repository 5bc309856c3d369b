"""Exact statistics of a count image from its histogram: :class:`CountHistogram`.

Raw counts are integers (DICOM stored values, 16-bit PNGs), so one ``np.bincount`` pass holds
everything the readers, preprocessing and quality control ask of a view: minimum, maximum, sum,
order statistics. Each statistic here equals, bit for bit, what NumPy computes on the float64
image (``np.median``, ``np.percentile``, ``.sum()``, ``.mean()``): sums of integers below 2**53
are exact in any order, and a percentile that falls between two different values is left to
NumPy (:meth:`CountHistogram.percentile` returns None) rather than re-derived. An image that is
not integer-valued in ``[0, MAX_VALUE]`` has no histogram (:meth:`CountHistogram.of` is None)
and callers use NumPy on the pixels as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_VALUE = (1 << 20) - 1  # bins of the histogram at most; 16-bit counts need 65,536
EXACT_FLOAT64_SUM = 1 << 53  # integer sums below this are exact in float64, in any order


@dataclass(frozen=True)
class CountHistogram:
    """How many pixels hold each value of an integer-valued, non-negative image."""

    values: np.ndarray  # (K,) float64, the distinct values, ascending
    pixels: np.ndarray  # (K,) int64, how many pixels hold each
    size: int  # pixels in the image

    @classmethod
    def of(cls, image: np.ndarray) -> CountHistogram | None:
        """The histogram of ``image`` (any shape, integer or float dtype), or None when a value
        is negative, NaN, infinite, above :data:`MAX_VALUE` or not an integer, or it is empty."""
        image = np.asarray(image)
        if image.size == 0 or image.dtype.kind not in "uif":
            return None
        low, high = image.min(), image.max()
        if not (low >= 0 and high <= MAX_VALUE):  # NaN fails both
            return None
        flat = image.reshape(-1)
        whole = flat.astype(np.intp)
        if image.dtype.kind == "f" and not np.array_equal(whole, flat):
            return None  # a fraction somewhere (a rescaled or float image)
        counts = np.bincount(whole)
        present = np.flatnonzero(counts)
        return cls(present.astype(np.float64), counts[present].astype(np.int64), int(image.size))

    @property
    def min(self) -> float:
        return float(self.values[0])

    @property
    def max(self) -> float:
        return float(self.values[-1])

    @property
    def total(self) -> float:
        """``image.sum()`` in float64 (exact: the pixels are integers with a sum below 2**53)."""
        total = int(np.dot(self.values.astype(np.int64), self.pixels))
        if total >= EXACT_FLOAT64_SUM:  # never for a scan: 2**53 is ~10**16 counts
            raise OverflowError("sum of the image beyond exact float64 integers")
        return float(total)

    @property
    def mean(self) -> float:
        """``image.astype(np.float64).mean()``: the exact sum divided once, as NumPy does."""
        return float(np.float64(self.total) / np.intp(self.size))

    def value_at(self, rank: int) -> float:
        """The ``rank``-th smallest pixel value (0-based), as a sorted copy would hold it."""
        ends = np.cumsum(self.pixels)
        return float(self.values[int(np.searchsorted(ends, rank, side="right"))])

    def median(self) -> float:
        """``np.median`` of the image in float64: the middle value, or the mean of the middle
        two (exact for integers)."""
        half = self.size // 2
        if self.size % 2:
            return self.value_at(half)
        return (self.value_at(half - 1) + self.value_at(half)) / 2

    def percentile(self, q: float) -> float | None:
        """``np.percentile(image, q)`` (linear) where the values around its rank are equal, so
        that the interpolation is exact; None where NumPy's interpolation is needed."""
        rank = q / 100 * (self.size - 1)
        first = max(0, math.floor(rank) - 1)  # a rank off by one in rounding lands here too
        last = min(self.size - 1, math.floor(rank) + 2)
        value = self.value_at(first)
        return value if self.value_at(last) == value else None
