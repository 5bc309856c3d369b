import numpy as np
import pytest

from bsi_d2.report.overlay import lesion_outline, render_overlay

H, W = 60, 40
GREY = 100


def scene():
    display = np.full((H, W), GREY, np.uint8)
    region = np.zeros((H, W), np.int32)
    region[25:45, 2:15] = 2  # spine, anterior half
    region[25:45, 24:36] = 10  # kidney, posterior half
    lesion = np.zeros((H, W), bool)
    lesion[30:36, 5:11] = True  # 6 x 6 inside the spine
    return display, region, lesion


def test_regions_tinted_lesions_outlined_background_grey(taxonomy):
    display, region, lesion = scene()
    out = render_overlay(display, region, lesion, taxonomy)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    spine = np.array(taxonomy.by_name("spine").color)
    kidney = np.array(taxonomy.by_name("kidney").color)
    blend = lambda c: np.rint(0.65 * GREY + 0.35 * c)  # noqa: E731
    assert (out[40, 3] == blend(spine)).all()
    assert (out[40, 30] == blend(kidney)).all()
    assert (out[50, 5] == GREY).all()  # no region: untouched grey
    red = np.array(taxonomy.by_name("lesion").color)
    for r, c in [(30, 5), (30, 8), (35, 10), (31, 6)]:  # within two pixels of the edge
        assert (out[r, c] == red).all(), (r, c)
    assert (out[32:34, 7:9] == blend(spine)).all()  # the lesion's centre stays visible


def test_divider_and_view_labels(taxonomy):
    display, region, lesion = scene()
    out = render_overlay(display, region, lesion, taxonomy)
    assert (out[:, W // 2] == 255).all()
    plain = render_overlay(display, region, lesion, taxonomy, labels=False)
    changed = np.any(out != plain, axis=2)
    assert changed[:16, : W // 2].any()  # ANT
    assert changed[:16, W // 2 + 1 :].any()  # POST
    assert not changed[16:].any()


def test_lesion_outline_width():
    mask = np.zeros((10, 10), bool)
    mask[2:8, 2:8] = True
    one = lesion_outline(mask, width=1)
    assert one.sum() == 6 * 6 - 4 * 4
    two = lesion_outline(mask, width=2)
    assert two.sum() == 6 * 6 - 2 * 2


def test_unknown_ids_stay_grey_and_shapes_must_match(taxonomy):
    display, region, lesion = scene()
    region[50:55, 2:10] = 99
    out = render_overlay(display, region, np.zeros_like(lesion), taxonomy, labels=False)
    assert (out[52, 4] == GREY).all()
    with pytest.raises(ValueError, match="same shape"):
        render_overlay(display, region[:, :10], lesion, taxonomy)
