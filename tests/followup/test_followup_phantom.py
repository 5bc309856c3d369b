"""Follow-up on records the real post-processing makes: a phantom scan, and a later study of it
with the whole body moved, one metastasis gone and one new; through the command line."""

import json
from pathlib import Path

import numpy as np
import pytest
from followup_records import PATIENT, write_results

from bsi_d2 import cli, phantom
from bsi_d2.followup import build_studies, follow_up
from bsi_d2.inference.outputs import scan_record
from bsi_d2.postprocess.analysis import analyse_scan
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import load_taxonomy

TAX = load_taxonomy()
MODEL = {"engine": "annotations", "config": None, "weights": None}
SHIFT = (6, 4)  # rows, columns: the patient lies 6 pixels lower and 4 to the right
GONE = 5  # lesion_id of the skull metastasis (both views) that is no longer seen
COPIED = 28  # the posterior pelvis lesion's instance, copied 25 rows lower as a new one
HALF = 256  # the merged image's anterior half ends here


def _record(key, analysis, date):
    rec = scan_record(key, [], MODEL, analysis.record)
    rec.update(study_key="s" + key[1:], patient_key=PATIENT, study_date=date,
               study_date_kind="exact")  # fmt: skip
    return rec


@pytest.fixture(scope="module")
def studies():
    ph = phantom.generate_phantom(4, seed=2024)
    truth, counts = ph.truth["instances"], ph.merged.counts
    height, width = counts.shape
    instances = Instances.from_coco(truth, height, width)
    assert truth[COPIED]["lesion_id"] == 6 and truth[COPIED]["view"] == "posterior"
    baseline = analyse_scan(instances, counts, TAX)

    keep = [i for i, r in enumerate(truth) if r.get("lesion_id") != GONE]
    masks = np.roll(instances.masks[keep], SHIFT, axis=(1, 2))
    new = np.roll(instances.masks[COPIED], (SHIFT[0] + 25, SHIFT[1]), axis=(0, 1))
    category_ids = [int(c) for c in instances.category_ids[keep]] + [TAX.lesion_ids[0]]
    later = Instances.from_masks(height, width, category_ids, [*masks, new])
    follow = analyse_scan(later, np.roll(counts, SHIFT, axis=(0, 1)), TAX)
    return _record("c1", baseline, "2024-01-10"), _record("c2", follow, "2024-07-10")


def test_records_carry_lesion_positions_and_skeleton_landmarks(studies):
    baseline, _ = studies
    for les in baseline["lesions"]:
        assert set(les["centroid"]) == set(les["views"]) == set(les["bbox"])
        for view, (x, y) in les["centroid"].items():
            x0, y0, x1, y1 = les["bbox"][view]
            assert x0 <= x < x1 and y0 <= y < y1
            assert (x < HALF) == (view == "anterior")
    landmarks = baseline["landmarks"]
    assert set(landmarks) == {"anterior", "posterior"}
    assert {"skull", "spine", "pelvis", "humerus_AR"} <= set(landmarks["anterior"])
    assert "humerus_AR" not in landmarks["posterior"]
    skull = landmarks["anterior"]["skull"]
    assert skull["pixels"] > 0 and len(skull["bbox"]) == 4 and skull["centroid"][0] < 256


def test_the_shift_is_recovered_and_the_gone_and_new_lesions_are_found(studies):
    baseline, later = studies
    patient = follow_up(build_studies([(baseline, Path(".")), (later, Path("."))]))
    (pair,) = patient.patients[0].pairs
    for view in ("anterior", "posterior"):
        alignment = pair["alignment"][view]
        assert alignment["transform"] == "similarity"
        assert alignment["matrix"][0][2] == pytest.approx(SHIFT[1], abs=0.5)
        assert alignment["matrix"][1][2] == pytest.approx(SHIFT[0], abs=0.5)
        assert alignment["residual_px"] < 1.0
    lesions = pair["lesions"]
    assert [les["site_name"] for les in lesions["new"]] == ["pelvis"]
    assert [les["site_name"] for les in lesions["resolved"]] == ["skull"]
    assert len(lesions["persistent"]) == baseline["lesion_count"] - 1
    assert all(p["distance_px"] < 1.0 and p["pixel_change"] == 0 for p in lesions["persistent"])
    assert pair["bsi"]["change"] == pytest.approx(later["bsi"] - baseline["bsi"])
    assert "1 new lesion (pelvis); 1 lesion no longer seen (skull)" in pair["text"]


def test_the_command_runs_on_real_records(studies, tmp_path):
    folder = write_results(tmp_path / "run", list(studies), overlay=False)
    out = tmp_path / "out"
    argv = ["followup", str(folder), "--out", str(out), "--progression-delta-bsi", "0.1"]
    assert cli.main(argv) == 0
    doc = json.loads((out / "followup.json").read_text())
    (pair,) = doc["patients"][0]["pairs"]
    delta = studies[1]["bsi"] - studies[0]["bsi"]
    expected = "progression" if delta >= 0.1 else "decrease" if delta <= -0.1 else "below"
    assert pair["assessable"] and pair["category"].startswith(expected)
    assert pair["lesions"]["new"] and (out / "patients" / f"{PATIENT}.html").is_file()
