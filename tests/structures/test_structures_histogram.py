"""CountHistogram: the statistics of integer count images, the numbers NumPy gives."""

from __future__ import annotations

import numpy as np
import pytest

from bsi_d2.structures.histogram import CountHistogram


def _images():
    rng = np.random.default_rng(7)
    yield rng.poisson(4.0, (64, 32)).astype(np.float32)  # a faint view
    yield rng.poisson(0.05, (31, 17)).astype(np.float64)  # mostly zeros, odd size
    yield (rng.poisson(3, (40, 40)) * 1000).astype(np.uint16)  # few, far-apart values
    yield np.full((5, 5), 9, np.float32)  # constant
    yield np.array([[3.0]], np.float32)  # one pixel


@pytest.mark.parametrize("image", list(_images()), ids=lambda a: f"{a.dtype}{a.shape}")
def test_statistics_are_numpys_on_float64(image):
    pixels = image.astype(np.float64)
    histogram = CountHistogram.of(image)
    assert histogram is not None
    assert histogram.min == float(pixels.min()) and histogram.max == float(pixels.max())
    assert histogram.total == float(pixels.sum())
    assert histogram.mean == float(pixels.mean())
    assert histogram.median() == float(np.median(pixels))
    for q in (0, 1, 50, 99, 99.9, 100):
        value = histogram.percentile(q)
        assert value is None or value == float(np.percentile(pixels, q)), q


def test_percentile_between_different_values_is_left_to_numpy():
    assert CountHistogram.of(np.array([0.0, 10.0], np.float32)).percentile(50) is None


@pytest.mark.parametrize(
    "image",
    [
        np.array([1.0, 2.5], np.float32),  # a fraction
        np.array([1.0, -1.0]),  # negative
        np.array([1.0, np.nan]),
        np.array([1.0, np.inf]),
        np.array([2.0**21]),  # beyond the bins
        np.zeros((0, 4), np.float32),
    ],
)
def test_images_without_a_histogram(image):
    assert CountHistogram.of(image) is None
