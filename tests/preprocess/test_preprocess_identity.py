"""How inputs are named without identity (``input_label``, ``InputLabels``) and the allow-list of
what ``<key>.meta.json`` carries from a reader's metadata."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from bsi_d2.io.pseudonym import InputLabels, input_label
from bsi_d2.io.readers import read_scan_file
from bsi_d2.phantom.dicom_writer import build_nm_dataset, write_dataset
from bsi_d2.preprocess import pipeline
from bsi_d2.preprocess.pipeline import preprocess_paths, preprocess_scan, write_prepared

PATIENT_ID, PATIENT_NAME = "PH64241779", "DOE^JOHN"


def _archived_file(root: Path, data: bytes = b"DICM bytes") -> Path:
    path = root / PATIENT_ID / PATIENT_NAME / "IM0001.dcm"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return path


def test_input_label_is_pseudonymous_and_stable_per_salt(tmp_path: Path) -> None:
    path = _archived_file(tmp_path)
    label = input_label(path, [tmp_path], salt="site-a")
    folder_id, folder_name, name = label.split(" ")[0].split("/")
    assert folder_id.startswith("p") and folder_name.startswith("p") and name.endswith(".dcm")
    digest = hashlib.sha256(b"DICM bytes").hexdigest()[:16]
    assert label.endswith(f" (sha256:{digest})")
    for secret in (PATIENT_ID, "DOE", "JOHN", "IM0001", tmp_path.name):
        assert secret not in label
    assert input_label(path, [tmp_path], salt="site-a") == label  # another run, same label
    assert input_label(path, [tmp_path], salt="site-b") != label
    assert input_label(path, [tmp_path], salt="site-a", keep_identity=True) == str(path)
    # the same folder name gives the same pseudonym wherever it is found
    other = input_label(path.parent / "IM0002.dcm", [tmp_path], salt="site-a")
    assert other == f"{folder_id}/{folder_name}/{other.split('/')[-1]}"  # unreadable: no digest
    assert input_label(path, [tmp_path / PATIENT_ID], salt="site-a").startswith(folder_name + "/")
    # a suffix no reader knows may be half a name (DOE.JOHN): it is pseudonymised too
    assert "JOHN" not in input_label(tmp_path / "DOE.JOHN", [tmp_path])


def test_reader_reasons_and_log_arguments_are_relabelled(tmp_path: Path, caplog) -> None:
    path = _archived_file(tmp_path)
    labels = InputLabels([tmp_path], salt="site-a")
    reason = f"{path}: modality CT is not NM; its image {PATIENT_NAME}.png and IM0001.png"
    redacted = labels.redact(reason, path, path.parent)
    assert redacted.startswith(labels(path) + ": modality CT is not NM")
    assert not [s for s in (PATIENT_ID, "DOE", "JOHN", "IM0001") if s in redacted], redacted
    reader_log = logging.getLogger("bsi_d2.io.dicom")
    with caplog.at_level(logging.WARNING), labels.in_logs():
        reader_log.warning("%s: %s", path, "no view information")
        reader_log.warning("%s: %s", str(path), "no view information")
    assert [r.getMessage() for r in caplog.records] == [f"{labels(path)}: no view information"] * 2
    assert InputLabels([tmp_path], keep_identity=True).redact(reason, path) == reason


def test_meta_json_keeps_only_the_allowed_fields(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    free_text = {
        "Manufacturer": "St Elsewhere Cameras",
        "ManufacturerModelName": "Room 3 of Dr Who",
        "InstitutionName": "St Elsewhere Hospital",
        "StationName": "NMWARD-DOE",
    }
    ds = build_nm_dataset(
        [rng.poisson(20, (1024, 256)), rng.poisson(20, (1024, 256))],
        detectors=[{"view_code": "anterior"}, {"view_code": "posterior"}],
        attributes={"PatientName": PATIENT_NAME, "PatientID": PATIENT_ID, **free_text},
    )
    # read as for --keep-identity: the writer alone decides what leaves
    (scan,) = read_scan_file(write_dataset(ds, tmp_path / "in" / "scan.dcm"), keep_identity=True)
    prepared = preprocess_scan(scan)
    prepared.metadata["station"] = "NMWARD-DOE"  # a field a reader might add one day
    prepared.metadata["views"]["anterior"]["label"] = "Room 3 of Dr Who"
    files = write_prepared(prepared, tmp_path / "out")
    text = (tmp_path / "out" / files["meta"]).read_text()
    for secret in (*free_text.values(), PATIENT_NAME, PATIENT_ID):
        assert secret not in text, secret
    meta = json.loads(text)
    written_by_the_writer = {"key", "files", "counts_clipped_pixels"}
    assert set(meta) <= set(pipeline.META_FIELDS) | written_by_the_writer
    assert {"modality", "matrix", "pixel_spacing_mm", "views", "preprocess"} <= set(meta)
    assert all(set(v) <= set(pipeline.VIEW_FIELDS) for v in meta["views"].values())
    kept = write_prepared(prepared, tmp_path / "kept", keep_identity=True)
    identity = json.loads((tmp_path / "kept" / kept["meta"]).read_text())["identity"]
    assert identity["PatientName"] == PATIENT_NAME and identity["PatientID"] == PATIENT_ID


def test_report_names_skipped_files_by_label(tmp_path: Path) -> None:
    path = _archived_file(tmp_path, b"")
    summary = preprocess_paths([tmp_path], tmp_path / "out", salt="site-a", progress=False)
    (skipped,) = summary.skipped
    label = input_label(path, [tmp_path], salt="site-a")
    assert skipped["path"] == label and skipped["reason"].startswith(label + ": empty file")
    report = (tmp_path / "out" / "preprocess_report.json").read_text()
    assert PATIENT_ID not in report and "JOHN" not in report and "IM0001" not in report
