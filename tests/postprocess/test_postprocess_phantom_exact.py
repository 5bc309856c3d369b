"""Plumbing: phantom ground truth fed in as if predicted (score 1.0) gives back the phantom's
own truth — BSI, per-region involvement per view, per-view BSTBI, lesion counts — to 1e-6, on
20 phantoms.

The phantom's indices are computed by the same post-processing (``phantom.truth.build_truth``
calls ``analyse_scan``), so this checks that nothing is lost between masks, COCO records and
the record, not the definitions; those are checked by hand-computed cases in
test_postprocess_lesion_model.py and test_bsi_core.py. The lesion count is the exception: the
truth counts distinct metastases by their ``lesion_id``, so matching across views is tested
against an independent number.
"""

import pytest

from bsi_d2 import phantom
from bsi_d2.postprocess.analysis import analyse_scan
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import load_taxonomy

TAX = load_taxonomy()
SEED = 2024
INDICES = range(20)
SEEN: dict[int, tuple[float, int]] = {}  # index -> (BSI, lesion instances), for the coverage check


def _summary(truth):
    return truth["bsi"], truth["lesion_instances"]


@pytest.mark.parametrize("index", INDICES)
def test_truth_in_gives_truth_out(index):
    ph = phantom.generate_phantom(index, seed=SEED)
    truth = ph.truth
    SEEN[index] = _summary(truth)
    counts = ph.merged.counts
    instances = Instances.from_coco(truth["instances"], *counts.shape)
    assert (instances.scores == 1.0).all()

    a = analyse_scan(instances, counts, TAX)

    assert a.bsi.bsi == pytest.approx(truth["bsi"], abs=1e-6)
    assert a.record["bsi"] == pytest.approx(truth["bsi"], abs=1e-6)
    assert a.record["bstbi"] == pytest.approx(truth["bstbi"], abs=1e-6)
    for view in ("anterior", "posterior"):
        assert a.record[f"bstbi_{view}"] == pytest.approx(truth["bstbi_per_view"][view], abs=1e-6)
    for bone, expected in truth["involvement"].items():
        got = a.bsi.bones[bone]
        for view in ("anterior", "posterior"):
            if expected[view] is None:
                assert got.involvement_per_view[view] is None, (bone, view)
            else:
                assert got.involvement_per_view[view] == pytest.approx(expected[view], abs=1e-6)
        assert got.involvement == pytest.approx(expected["combined"], abs=1e-6)
        assert got.bsi == pytest.approx(truth["bsi_per_bone"][bone], abs=1e-6)
    rows = {r["bone"]: r for r in a.record["regions"]}
    assert rows.keys() == truth["involvement"].keys()
    assert a.record["lesion_instances"] == truth["lesion_instances"]
    # a metastasis drawn in both views carries one lesion_id: matching must pair them
    assert a.record["lesion_count"] == truth["lesion_count"]
    assert a.record["burden_group"] == truth["burden_group"]
    assert a.record["abnormal"] == (truth["lesion_count"] > 0)


def test_phantoms_cover_scans_with_and_without_lesions():
    """The exactness above means little unless the phantoms include both kinds of scan."""
    for index in INDICES:
        if index not in SEEN:
            SEEN[index] = _summary(phantom.generate_phantom(index, seed=SEED).truth)
    with_lesions = sum(1 for bsi, lesions in SEEN.values() if bsi > 0 and lesions > 0)
    assert 5 <= with_lesions < len(INDICES)
