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
