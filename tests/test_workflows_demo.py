"""The demo's evaluation: the model is scored on every scan it segmented, quality control or not."""

from __future__ import annotations

import json

from bsi_d2.inference import outputs as out
from bsi_d2.workflows.demo import _analysed_records


def test_scans_failing_quality_control_are_still_scored(tmp_path):
    # before: only status ok entered the pixel metrics and AP, so a scan failing quality
    # control counted as one where the model predicted nothing
    scans = tmp_path / out.SCANS_DIR
    for key, status, has_predictions in [
        ("a", out.STATUS_OK, True),
        ("b", out.STATUS_QC_FAILED, True),
        ("c", out.STATUS_NOT_ASSESSED, True),
        ("d", out.STATUS_FAILED, False),
    ]:
        folder = scans / key
        folder.mkdir(parents=True)
        (folder / out.RECORD_FILE).write_text(json.dumps({"key": key, "status": status}))
        if has_predictions:
            (folder / out.PREDICTIONS_FILE).write_text("{}")
    (scans / "e").mkdir()  # interrupted: no record yet
    found = [record["key"] for _, record in _analysed_records(tmp_path)]
    assert found == ["a", "b", "c"]


def test_a_rerun_of_a_demo_scores_its_model_on_the_same_scans_alike(tmp_path):
    """rerun_demo (ablations, learning experiments) links the demo's phantoms, split and model
    and repeats predict + evaluate: the same model gives the same numbers; a --label-benign demo
    trains and scores with the benign taxonomy."""
    from bsi_d2.workflows.demo import DemoOptions, rerun_demo, run_demo

    tiny = ["INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "160",
            "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "160",
            "SOLVER.IMS_PER_BATCH", "1"]  # fmt: skip
    options = DemoOptions(out=tmp_path / "demo", scans=6, split=(0.5, 0.17, 0.33), iterations=2,
                          device="cpu", workers=1, label_benign=True, opts=tiny)  # fmt: skip
    first = run_demo(options)
    again = rerun_demo(tmp_path / "demo", tmp_path / "again")
    assert again["metrics"] == first["metrics"]
    assert (tmp_path / "again" / "train").resolve() == (tmp_path / "demo" / "train").resolve()
    evaluation = json.loads((tmp_path / "demo" / "evaluation" / "evaluation.json").read_text())
    assert "lesion_classification" in evaluation  # the benign taxonomy reached the evaluation
    labels = {
        s["label"]
        for f in (tmp_path / "demo" / "phantoms" / "labelme").glob("*.json")
        for s in json.loads(f.read_text())["shapes"]
    }
    assert "benign" in labels
