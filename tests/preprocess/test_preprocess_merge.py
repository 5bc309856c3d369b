"""Body extent, cut and centre to 950 x 256, brightness normalisation and merging (seed 001)."""

from __future__ import annotations

import numpy as np
import pytest

from bsi_d2.preprocess.merge import (
    KNEE_ROW,
    MERGED_HEIGHT,
    VIEW_WIDTH,
    ViewPlacement,
    body_extent,
    merge_views,
    normalize_brightness,
    profile_extent,
)


def _body(rows: int, cols: int, top: int, bottom: int, left: int, right: int, seed: int = 0):
    """Poisson counts: a bright rectangle 'body' on a faint background."""
    rng = np.random.default_rng(seed)
    lam = np.full((rows, cols), 0.3)
    lam[top : bottom + 1, left : right + 1] = 40.0
    return rng.poisson(lam).astype(np.float32)


def _check_placement(view: np.ndarray, merged: np.ndarray, p: ViewPlacement) -> None:
    """merged[r, c] == view[r - row_offset, c - col_offset] wherever both exist."""
    rows, cols = np.mgrid[0 : view.shape[0], 0 : view.shape[1]]
    mr, mc = p.to_merged(rows, cols)
    inside = (mr >= 0) & (mr < MERGED_HEIGHT) & (mc >= 0) & (mc < merged.shape[1])
    inside &= (mc // VIEW_WIDTH) == (0 if p.view == "anterior" else 1)
    np.testing.assert_array_equal(merged[mr[inside], mc[inside]], view[inside])
    sr, sc = p.to_source(mr, mc)
    np.testing.assert_array_equal(sr, rows)
    np.testing.assert_array_equal(sc, cols)


def test_body_extent_finds_the_rectangle() -> None:
    top, bottom, left, right = body_extent(_body(1024, 256, 90, 860, 60, 190))
    assert abs(top - 90) <= 5 and abs(bottom - 860) <= 5
    assert abs(left - 60) <= 5 and abs(right - 190) <= 5


def test_profile_shorter_than_the_smoothing_window() -> None:
    # np.convolve(mode="same") used to return the kernel's length for short profiles
    low, high = profile_extent(np.array([0.0, 0.0, 5.0, 5.0, 0.0]))
    assert 0 <= low <= 2 and 3 <= high <= 4
    assert profile_extent(np.array([3.0])) == (0, 0)


def test_1024x512_view_is_centred_not_cropped() -> None:
    # body off-centre in a wide matrix: a blind crop of the first 256 columns would cut it
    anterior = _body(1024, 512, 100, 850, 300, 460, seed=1)
    posterior = _body(1024, 512, 100, 850, 40, 200, seed=2)
    merged = merge_views(anterior, posterior)
    assert merged.counts.shape == (950, 512) and merged.display.shape == (950, 512)
    for view, half, p in zip((anterior, posterior), (0, 1), merged.placements, strict=True):
        part = merged.counts[:, half * VIEW_WIDTH : (half + 1) * VIEW_WIDTH]
        cols = np.flatnonzero(part.sum(axis=0) > part.sum(axis=0).max() * 0.5)
        centre = (cols[0] + cols[-1]) / 2
        assert abs(centre - VIEW_WIDTH / 2) <= 3  # body centred in its half
        assert part.sum() == pytest.approx(view[100:851].sum(), rel=0.01)  # whole body kept
        assert p.source_shape == (1024, 512)
        _check_placement(view, merged.counts, p)
    assert merged.placements[0].row_offset == merged.placements[1].row_offset  # rows aligned


def test_views_are_placed_anterior_left_posterior_right() -> None:
    anterior = _body(1024, 256, 100, 850, 80, 170, seed=3)
    posterior = np.zeros_like(anterior)
    posterior[100:851, 80:171] = 7.0
    merged = merge_views(anterior, posterior)
    assert [p.view for p in merged.placements] == ["anterior", "posterior"]
    assert set(np.unique(merged.counts[:, 256:])) == {0.0, 7.0}
    assert merged.counts[:, :256].max() > 7
    assert merged.placements[1].col_offset >= 256


def test_taller_than_950_keeps_the_head() -> None:
    view = _body(1100, 256, 5, 1090, 80, 170, seed=4)
    view[5:15] = 500.0  # the 'head' rows
    merged = merge_views(view, view)
    offset = merged.placements[0].row_offset
    assert -5 <= offset <= 0  # the extent starts at the head, the feet are cut
    assert merged.counts[5 + offset : 15 + offset, :256].mean() > 400


def test_single_view_leaves_the_other_half_empty() -> None:
    view = _body(1024, 256, 100, 850, 80, 170, seed=5)
    merged = merge_views(view, None)
    assert [p.view for p in merged.placements] == ["anterior"]
    assert not merged.counts[:, 256:].any() and not merged.display[:, 256:].any()
    # the gain is set on the present half: its mean is the target, not twice it
    assert 7 < merged.display[:, :256].mean() < 14
    only_posterior = merge_views(None, view)
    assert [p.view for p in only_posterior.placements] == ["posterior"]
    np.testing.assert_array_equal(only_posterior.counts[:, 256:], merged.counts[:, :256])
    with pytest.raises(ValueError, match="at least one"):
        merge_views(None, None)


@pytest.mark.parametrize("level", [0.2, 3.0, 40.0, 3000.0])
def test_brightness_mean_lands_in_the_seed_001_window(level: float) -> None:
    counts = _body(950, 512, 100, 850, 100, 400, seed=6) * (level / 40.0)
    display, gain = normalize_brightness(counts)
    assert display.dtype == np.uint8
    assert 7 < display.mean() < 14
    np.testing.assert_array_equal(display, np.clip(np.rint(counts * gain), 0, 255))


def test_brightness_mask_and_empty_image() -> None:
    counts = np.zeros((10, 20), np.float32)
    counts[:, :10] = np.arange(10)[None, :] + 1
    mask = np.zeros_like(counts, bool)
    mask[:, :10] = True
    display, _ = normalize_brightness(counts, 10.5, mask=mask)
    assert 10 < display[:, :10].mean() < 11
    assert normalize_brightness(np.zeros((4, 4)))[1] == 0.0


def test_cut_below_knee_and_errors() -> None:
    view = _body(1024, 256, 100, 850, 80, 170, seed=7)
    merged = merge_views(view, view, cut_below_knee=True)
    assert not merged.counts[KNEE_ROW:].any() and not merged.display[KNEE_ROW:].any()
    assert merged.counts[: KNEE_ROW - 50].any()
    with pytest.raises(ValueError, match="height"):
        merge_views(view, view[:1000])
    with pytest.raises(ValueError, match="2-D"):
        merge_views(view[None], None)


def test_placement_round_trips_through_dict() -> None:
    p = ViewPlacement("posterior", (1024, 256), -37, 254)
    assert ViewPlacement.from_dict(p.to_dict()) == p


def _brightness_images():
    rng = np.random.default_rng(3)
    yield rng.poisson(2.0, (950, 512)).astype(np.float32), None  # sum above 2**24 at first gains
    half = np.zeros((950, 512), bool)
    half[:, :256] = True
    yield rng.poisson(30.0, (950, 512)).astype(np.float32), half
    yield (rng.poisson(0.01, (60, 40)) * 4000).astype(np.float32), None  # nearly empty
    yield rng.uniform(0, 50, (60, 40)).astype(np.float32), None  # not integers: no histogram


@pytest.mark.parametrize("target", [10.5, 10.3, 200.0])
@pytest.mark.parametrize("image, mask", list(_brightness_images()))
def test_brightness_from_the_histogram_is_the_pixelwise_bisection(image, mask, target, monkeypatch):
    """The same gain and display as bisecting on every pixel (the histogram switched off)."""
    from bsi_d2.preprocess import merge

    display, gain = normalize_brightness(image, target, mask=mask)
    monkeypatch.setattr(merge.CountHistogram, "of", classmethod(lambda cls, image: None))
    plain_display, plain_gain = normalize_brightness(image, target, mask=mask)
    assert gain == plain_gain
    np.testing.assert_array_equal(display, plain_display)


def test_hot_clip_is_numpys_percentile():
    from bsi_d2.preprocess.merge import clip_hot

    counts = np.random.default_rng(5).poisson(6.0, (128, 64)).astype(np.float32)
    counts[10, 10] = 5000
    ceiling = np.percentile(counts.astype(np.float64), 99)
    np.testing.assert_array_equal(clip_hot(counts), np.minimum(counts.astype(np.float64), ceiling))
