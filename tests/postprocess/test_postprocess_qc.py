"""Quality control: the real NEMA scan and phantoms pass; blank, saturated, negative, NaN,
too-faint scans and scans without a recognised skeleton fail, with their reasons."""

import numpy as np
import pytest

from bsi_d2 import phantom
from bsi_d2.io.readers import read_scan_file
from bsi_d2.postprocess.analysis import analyse_scan
from bsi_d2.postprocess.bsi import compute_bsi
from bsi_d2.postprocess.qc import QCThresholds, quality_control
from bsi_d2.preprocess.pipeline import preprocess_scan
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import load_taxonomy

TAX = load_taxonomy()


def _all_regions(shape, views=("anterior", "posterior"), side=50):
    """A BSI result in which every region was found in ``views``, each a ``side``-pixel square
    (50: about 10 % of a 950 x 256 view in bone, as in a whole-body scan)."""
    region = np.zeros(shape, np.uint8)
    half = shape[1] // 2
    ids = [c.id for c in TAX.region_classes]
    for view in views:
        c0 = 0 if view == "anterior" else half
        for k, cid in enumerate(ids):
            region[10 + 60 * k : 10 + 60 * k + side, c0 + 10 : c0 + 10 + side] = cid
    return compute_bsi(region, np.zeros(shape, bool), TAX)


@pytest.fixture(scope="module")
def nema(nema_path):
    return preprocess_scan(read_scan_file(nema_path)[0])


def test_the_real_nema_scan_passes(nema):
    views = nema.metadata["preprocess"]["views_present"]
    result = _all_regions(nema.counts.shape, views)
    qc = quality_control(nema.counts, result, views, "counts", True)
    assert qc.passed, qc.failed
    assert qc.checks["counts_total_anterior"] and "no posterior view in the scan" in qc.warnings


@pytest.mark.parametrize("index", range(5))
def test_phantoms_pass(index):
    ph = phantom.generate_phantom(index, seed=3)
    instances = Instances.from_coco(ph.truth["instances"], *ph.merged.counts.shape)
    analysis = analyse_scan(instances, ph.merged.counts, TAX)
    qc = quality_control(ph.merged.counts, analysis.bsi, ["anterior", "posterior"], "counts")
    assert qc.passed, qc.failed
    assert qc.warnings == []


def _garbage(kind, shape=(950, 512)):
    rng = np.random.default_rng(0)
    counts = rng.poisson(5.0, size=shape).astype(np.float32)
    if kind == "blank":
        return np.zeros(shape, np.float32)
    if kind == "saturated_16bit":
        return np.full(shape, 65535.0, np.float32)
    if kind == "plateau":
        counts[100:600, :] = 65535.0
    elif kind == "negative":
        counts[5, 5] = -3.0
    elif kind == "nan":
        counts[5, 5] = np.nan
    elif kind == "faint":
        counts = (rng.random(shape) < 0.01).astype(np.float32)
    return counts


@pytest.mark.parametrize(
    ("kind", "check", "words"),
    [
        ("blank", "counts_not_constant", "every pixel has the value 0"),
        ("saturated_16bit", "counts_not_constant", "every pixel has the value 65535"),
        ("plateau", "counts_not_saturated", "sit at the maximum 65535 (saturated)"),
        ("negative", "counts_valid", "negative or not finite"),
        ("nan", "counts_valid", "negative or not finite"),
        ("faint", "counts_total", "outside the plausible"),
    ],
)
def test_garbage_counts_fail_with_a_reason(kind, check, words):
    counts = _garbage(kind)
    qc = quality_control(counts, _all_regions(counts.shape), None, "counts", True)
    assert not qc.passed
    assert qc.checks[f"{check}_anterior"] is False
    assert any(words in reason for reason in qc.failed), qc.failed


def test_no_skeleton_found_fails():
    ph = phantom.generate_phantom(0, seed=3)
    analysis = analyse_scan(Instances.empty(950, 512), ph.merged.counts, TAX)
    qc = quality_control(ph.merged.counts, analysis.bsi, None, "counts", True)
    assert not qc.passed and qc.checks["counts_total_anterior"]
    assert qc.checks["skeleton_found_anterior"] is False
    assert "found no skull, spine, chest, pelvis" in qc.failed[0]


def test_display_values_skip_the_total_and_say_so():
    counts = _garbage("faint")
    qc = quality_control(counts, _all_regions(counts.shape), None, "display", True)
    assert "counts_total_anterior" not in qc.checks
    assert "display values stood in for counts: count checks are limited" in qc.warnings


def test_thresholds_are_the_users():
    counts = _garbage("faint")
    lenient = QCThresholds(min_view_counts=10.0)
    assert quality_control(counts, _all_regions(counts.shape), None, "counts", True, lenient).passed
    off = QCThresholds(enabled=False)
    assert quality_control(_garbage("blank"), _all_regions(counts.shape), thresholds=off).passed


def test_a_spot_view_fails_the_body_extent():
    # a 256 x 256 chest spot view placed on the 950-row canvas without scaling
    ph = phantom.generate_phantom(0, seed=3)
    counts = np.zeros_like(ph.merged.counts)
    counts[300:556] = ph.merged.counts[300:556]
    qc = quality_control(counts, _all_regions(counts.shape), None, "counts", True)
    assert qc.checks["body_extent_anterior"] is False
    assert any("not a whole-body view" in r and "of the view's height" in r for r in qc.failed)


@pytest.mark.parametrize(("side", "words"), [(8, "cover 0.2 %"), (200, "cover 55.9 %")])
def test_fragments_or_bone_everywhere_fail_the_skeleton_area(side, words):
    ph = phantom.generate_phantom(0, seed=3)
    counts = ph.merged.counts
    qc = quality_control(counts, _all_regions(counts.shape, side=side), None, "counts", True)
    assert qc.checks["skeleton_found_anterior"] and qc.checks["skeleton_area_anterior"] is False
    assert any(words in r and "outside the plausible 4-40 %" in r for r in qc.failed), qc.failed


@pytest.mark.parametrize("kind", ["phantom", "blank", "saturated", "flat_plateau"])
def test_checks_from_the_histogram_are_the_checks_on_the_pixels(kind, monkeypatch):
    """Integer counts are checked from their histogram: the same result as on the pixels."""
    from bsi_d2.postprocess import qc as qc_module

    counts = phantom.generate_phantom(1, seed=4).merged.counts.copy()
    if kind == "blank":
        counts[:, :256] = 0
    elif kind == "saturated":
        counts[100:400, 300:400] = counts.max()
    elif kind == "flat_plateau":
        counts[:] = 60.0
    result = _all_regions(counts.shape)
    fast = quality_control(counts, result, ["anterior", "posterior"], "counts", True)
    monkeypatch.setattr(qc_module.CountHistogram, "of", classmethod(lambda cls, image: None))
    plain = quality_control(counts, result, ["anterior", "posterior"], "counts", True)
    assert fast.to_dict() == plain.to_dict()
