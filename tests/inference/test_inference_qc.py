"""Quality control through the batch runner on the real NEMA scan: its reader warnings reach the
record, and a model that finds no skeleton makes it qc_failed, never a normal finding."""

import json
from pathlib import Path

import pytest

from bsi_d2.inference.batch import BatchOptions, run_batch
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import load_taxonomy

NEMA = Path(__file__).resolve().parents[3] / "shared" / "data" / "nema-nm1" / "nema-nm1_j2kr.dcm"


@pytest.mark.skipif(not NEMA.is_file(), reason=f"{NEMA} is not there")
def test_nema_without_a_skeleton_fails_qc_and_keeps_the_reader_warnings(tmp_path):
    def finds_nothing(images):
        return [Instances.empty(*image.shape) for image in images]

    result = run_batch(
        [NEMA], tmp_path, finds_nothing, load_taxonomy(), BatchOptions(progress=False)
    )
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
