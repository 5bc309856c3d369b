"""Quality control through the batch runner on the real NEMA scan: its reader warnings reach the
record, and a model that finds no skeleton makes it qc_failed, never a normal finding."""

import json

from bsi_d2.inference.batch import BatchOptions, run_batch
from bsi_d2.structures.instances import Instances


def test_nema_without_a_skeleton_fails_qc_and_keeps_the_reader_warnings(
    nema_path, taxonomy, tmp_path
):
    def finds_nothing(images):
        return [Instances.empty(*image.shape) for image in images]

    options = BatchOptions(progress=False)
    result = run_batch([nema_path], tmp_path, finds_nothing, taxonomy, options)
    assert result.qc_failed == result.done and len(result.done) == 1
    (path,) = (tmp_path / "scans").glob("*/bsi.json")
    record = json.loads(path.read_text())
    assert record["status"] == "qc_failed" and record["bsi"] is None
    # the counts of the real scan pass; the missing skeleton fails
    assert record["qc"]["checks"]["counts_total_anterior"] is True
    assert record["qc"]["checks"]["skeleton_found_anterior"] is False
    # before: the reader's warning was lost between preprocessing and the outputs
    assert (
        "no view information in the file: taken as anterior; check it" in record["qc"]["warnings"]
    )
    assert "no posterior view in the scan" in record["qc"]["warnings"]
