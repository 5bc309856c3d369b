"""Linking scans to studies and patients without naming them: the salted ``patient_key``, study
dates kept by ``--keep-dates`` (month, or shifted per patient), the readers' metadata, and the
``<stem>.meta.json`` companion that makes ``predict`` on preprocess's PNGs write the keys of the
DICOM they came from."""

from __future__ import annotations

import csv
import datetime
import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from bsi_d2 import cli
from bsi_d2.io.base import ScanImage, SkippedInput, meta_path
from bsi_d2.io.pseudonym import (
    DATE_SHIFT_DAYS,
    LINK_FIELDS,
    date_mode,
    kept_link,
    kept_study_date,
    link_problem,
    patient_key,
)
from bsi_d2.io.readers import iter_scans, read_scan_file
from bsi_d2.phantom import generate_phantom, write_phantom
from bsi_d2.phantom.dicom_writer import build_nm_dataset, write_dataset

SALT = "site-salt"
PATIENT_ID, ISSUER = "PH64241779", "HOSPITAL-A"


def _view(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lam = np.full((256, 64), 0.5)
    lam[26:230, 21:43] = 30.0
    return rng.poisson(lam).astype(np.uint16)


def _dicom(path: Path, study_uid: str, **attributes) -> Path:
    ds = build_nm_dataset(
        [_view(1), _view(2)],
        detectors=[{"view_code": "anterior"}, {"view_code": "posterior"}],
        attributes=attributes,
        study_uid=study_uid,
    )
    return write_dataset(ds, path)


def _link(scan: ScanImage) -> dict:
    return {name: scan.metadata.get(name) for name in LINK_FIELDS}


def _scans(items) -> list[ScanImage]:
    return [i for i in items if isinstance(i, ScanImage)]


# -- patient_key ----------------------------------------------------------------------------


def test_patient_key_is_salted_stable_and_per_patient_and_issuer() -> None:
    key = patient_key(PATIENT_ID, ISSUER, SALT)
    assert key.startswith("pt") and len(key) == 18 and PATIENT_ID not in key
    assert patient_key(PATIENT_ID, ISSUER, SALT) == key  # another run, the same key
    assert patient_key(f" {PATIENT_ID} ", ISSUER, SALT) == key  # DICOM padding is not identity
    assert patient_key(PATIENT_ID, ISSUER, "other-site") != key
    assert patient_key("PH00000001", ISSUER, SALT) != key
    assert patient_key(PATIENT_ID, "HOSPITAL-B", SALT) != key  # one number, two hospitals
    assert patient_key(PATIENT_ID, None, SALT) == patient_key(PATIENT_ID, "", SALT) != key
    assert patient_key(None, ISSUER, SALT) is None and patient_key("  ", salt=SALT) is None


def test_reader_gives_two_studies_of_one_patient_one_patient_key(tmp_path: Path) -> None:
    who = {"PatientID": PATIENT_ID, "IssuerOfPatientID": ISSUER}
    first = _dicom(tmp_path / "a.dcm", "1.2.3.1", StudyDate="20240301", **who)
    second = _dicom(tmp_path / "b.dcm", "1.2.3.2", StudyDate="20240901", **who)
    other = _dicom(tmp_path / "c.dcm", "1.2.3.3", PatientID="PH00000001", IssuerOfPatientID=ISSUER)
    elsewhere = _dicom(tmp_path / "d.dcm", "1.2.3.4", PatientID=PATIENT_ID, IssuerOfPatientID="B")
    (a,), (b,), (c,), (d,) = (
        read_scan_file(p, salt=SALT) for p in (first, second, other, elsewhere)
    )
    assert (
        a.metadata["patient_key"]
        == b.metadata["patient_key"]
        == patient_key(PATIENT_ID, ISSUER, SALT)
    )
    assert a.metadata["study_key"] != b.metadata["study_key"]
    assert c.metadata["patient_key"] != a.metadata["patient_key"] != d.metadata["patient_key"]
    (again,) = read_scan_file(first, salt=SALT)
    (salted,) = read_scan_file(first, salt="other-site")
    assert _link(again) == _link(a) and salted.metadata["patient_key"] != a.metadata["patient_key"]


# -- kept study dates -------------------------------------------------------------------------


def test_kept_study_date_month_shift_and_exact() -> None:
    assert kept_study_date("20240315", "month") == ("2024-03", "month")
    assert kept_study_date("20240315", "exact") == ("2024-03-15", "exact")
    shifted, kind = kept_study_date("20240315", "shift", PATIENT_ID, ISSUER, SALT)
    back = datetime.date(2024, 3, 15) - datetime.date.fromisoformat(shifted)
    assert kind == "shifted" and 1 <= back.days <= DATE_SHIFT_DAYS
    assert kept_study_date("20240315", "shift", PATIENT_ID, ISSUER, SALT) == (shifted, kind)
    salts = [SALT, "site-b", "site-c", "site-d"]
    shifts = {kept_study_date("20240315", "shift", PATIENT_ID, ISSUER, s) for s in salts}
    assert len(shifts) > 1  # the salt decides the shift (two salts agree one time in 365)
    # the shift is not readable off the patient_key written beside it
    key = patient_key(PATIENT_ID, ISSUER, SALT)
    assert back.days != 1 + int(key[2:], 16) % DATE_SHIFT_DAYS
    # one patient's studies move together: their order and the days between them stay true
    later, _ = kept_study_date("20250102", "shift", PATIENT_ID, ISSUER, SALT)
    interval = datetime.date.fromisoformat(later) - datetime.date.fromisoformat(shifted)
    assert interval == datetime.date(2025, 1, 2) - datetime.date(2024, 3, 15)
    for missing in (None, "", "2024", "20241340", "not a date"):
        assert kept_study_date(missing, "month") is None
    assert kept_study_date("20240315", "shift") is None  # no patient to shift by
    with pytest.raises(ValueError, match="month, shift"):
        kept_study_date("20240315", "year")


def test_date_mode_is_the_option_else_exact_with_identity() -> None:
    assert date_mode(None) is None and date_mode("month") == "month"
    assert date_mode(None, keep_identity=True) == "exact"
    assert date_mode("shift", keep_identity=True) == "shift"
    with pytest.raises(ValueError, match="month, shift"):
        date_mode("exact")  # not a --keep-dates choice


@pytest.mark.parametrize(
    ("keep_dates", "keep_identity", "expected"),
    [
        (None, False, (None, None)),
        ("month", False, ("2024-03", "month")),
        (None, True, ("2024-03-15", "exact")),
        ("month", True, ("2024-03", "month")),
    ],
)
def test_dicom_reader_keeps_the_study_date_only_as_asked(
    tmp_path: Path, keep_dates, keep_identity, expected
) -> None:
    path = _dicom(tmp_path / "a.dcm", "1.2.3.1", PatientID=PATIENT_ID, StudyDate="20240315")
    (scan,) = read_scan_file(path, SALT, keep_identity, keep_dates=keep_dates)
    assert (scan.metadata["study_date"], scan.metadata["study_date_kind"]) == expected
    assert ("identity" in scan.metadata) == keep_identity


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")  # the StudyDate "2023" below
def test_dicom_reader_shifts_and_falls_back_to_series_and_acquisition_dates(tmp_path: Path) -> None:
    path = _dicom(tmp_path / "a.dcm", "1.2.3.1", PatientID=PATIENT_ID, StudyDate="20240315")
    (scan,) = read_scan_file(path, SALT, keep_dates="shift")
    assert (scan.metadata["study_date"], scan.metadata["study_date_kind"]) == kept_study_date(
        "20240315", "shift", PATIENT_ID, None, SALT
    )
    series = _dicom(tmp_path / "b.dcm", "1.2.3.2", StudyDate="", SeriesDate="20230102")
    acquired = _dicom(tmp_path / "c.dcm", "1.2.3.3", StudyDate="2023", AcquisitionDate="20220708")
    assert read_scan_file(series, keep_dates="month")[0].metadata["study_date"] == "2023-01"
    assert read_scan_file(acquired, keep_dates="month")[0].metadata["study_date"] == "2022-07"
    anonymous = _dicom(tmp_path / "d.dcm", "1.2.3.4", PatientID="", StudyDate="20240315")
    (scan,) = read_scan_file(anonymous, SALT, keep_dates="shift")
    assert _link(scan) == {"study_key": scan.key, "patient_key": None, "study_date": None,
                           "study_date_kind": None}  # fmt: skip
    with pytest.raises(ValueError, match="month, shift"):
        read_scan_file(path, keep_dates="year")


# -- the .meta.json companion -----------------------------------------------------------------

STUDY = "s0123456789abcdef"
PATIENT = "pt0123456789abcdef"


def _png(path: Path) -> Path:
    from bsi_d2.io.png import write_png

    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(
        path, np.clip(np.random.default_rng(0).poisson(10, (950, 512)), 0, 255).astype(np.uint8)
    )
    return path


def _companion(image: Path, **fields) -> Path:
    path = meta_path(image)
    path.write_text(json.dumps({"key": "anything", "matrix": [950, 512], **fields}))
    return path


def test_image_takes_its_study_link_from_the_companion(tmp_path: Path) -> None:
    image = _png(tmp_path / "scan.png")
    (bare,) = read_scan_file(image, SALT)
    assert _link(bare) == {"study_key": bare.key, "patient_key": None, "study_date": None,
                           "study_date_kind": None}  # fmt: skip
    _companion(image, study_key=STUDY, patient_key=PATIENT, study_date="2023-11-02",
               study_date_kind="shifted")  # fmt: skip
    (scan,) = read_scan_file(image, SALT, keep_dates="shift")
    assert scan.key == STUDY and _link(scan) == {
        "study_key": STUDY, "patient_key": PATIENT, "study_date": "2023-11-02",
        "study_date_kind": "shifted"}  # fmt: skip
    # without --keep-dates no date leaves, whatever the companion holds
    (undated,) = read_scan_file(image, SALT)
    assert undated.metadata["study_date"] is None and undated.metadata["patient_key"] == PATIENT
    # the companion's other fields are not the scan's
    (again,) = read_scan_file(image, SALT)
    assert again.metadata["counts_source"] == "display" and again.metadata["format"] == "png"


def test_an_exact_date_in_a_companion_needs_identity() -> None:
    exact = {"study_key": STUDY, "study_date": "2024-03-15", "study_date_kind": "exact"}
    assert kept_link(exact, "exact")["study_date"] == "2024-03-15"
    month = kept_link(exact, "month")
    assert (month["study_date"], month["study_date_kind"]) == ("2024-03", "month")
    assert kept_link(exact, "shift")["study_date"] is None
    assert kept_link(exact, None)["study_date_kind"] is None


def test_labelme_file_takes_the_companion_beside_it_or_its_image(tmp_path: Path) -> None:
    from bsi_d2.io.labelme import write_labelme

    image = _png(tmp_path / "images" / "scan.png")
    labelme = tmp_path / "labels" / "scan.json"
    labelme.parent.mkdir()
    write_labelme(labelme, "../images/scan.png", 950, 512, [])
    _companion(image, study_key=STUDY, patient_key=PATIENT)
    (scan,) = read_scan_file(labelme, SALT)
    assert scan.key == STUDY and scan.metadata["patient_key"] == PATIENT
    other = "s" + "f" * 16
    _companion(labelme, study_key=other)  # beside the JSON: it wins
    (scan,) = read_scan_file(labelme, SALT)
    assert scan.key == other and scan.metadata["patient_key"] is None


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"study_key": "s0123"}, "study_key is not s + 16 hex digits"),
        ({"patient_key": PATIENT_ID}, "patient_key is not pt + 16 hex digits"),
        ({"patient_key": 12}, "patient_key is not pt"),
        ({"study_date": "20240315", "study_date_kind": "exact"}, "study_date is not a YYYY-MM-DD"),
        ({"study_date": "2024-13", "study_date_kind": "month"}, "study_date is not a YYYY-MM date"),
        ({"study_date": "2024-03-15", "study_date_kind": "month"}, "YYYY-MM date"),
        ({"study_date": "2024-03-15", "study_date_kind": "day"}, "study_date_kind is not one of"),
        ({"study_date": "2024-03-15"}, "come together"),
    ],
)
def test_a_malformed_companion_is_warned_about_and_ignored(
    tmp_path: Path, caplog, fields, problem
) -> None:
    image = _png(tmp_path / "scan.png")
    companion = _companion(image, **{"study_key": STUDY, "patient_key": PATIENT, **fields})
    with caplog.at_level(logging.WARNING, logger="bsi_d2.io.readers"):
        (scan,) = read_scan_file(image, SALT, keep_dates="month")
    (record,) = caplog.records
    assert record.args[0] == companion and problem in record.getMessage()
    assert PATIENT_ID not in record.getMessage()  # a value is never quoted: it may be identity
    assert scan.key != STUDY and _link(scan)["patient_key"] is None  # ignored whole
    assert any(problem in w for w in scan.metadata["warnings"])
    assert link_problem({"study_key": STUDY, **fields}) is not None


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\udcff"])
def test_an_unreadable_companion_is_ignored(tmp_path: Path, caplog, text) -> None:
    image = _png(tmp_path / "scan.png")
    meta_path(image).write_bytes(text.encode("utf-8", "surrogateescape"))
    with caplog.at_level(logging.WARNING, logger="bsi_d2.io.readers"):
        (scan,) = read_scan_file(image, SALT)
    assert "metadata companion ignored" in caplog.text and scan.metadata["patient_key"] is None


def test_companions_are_not_read_as_scans(tmp_path: Path) -> None:
    image = _png(tmp_path / "scan.png")
    _companion(image, study_key=STUDY)
    items = list(iter_scans([tmp_path], salt=SALT))
    assert not [i for i in items if isinstance(i, SkippedInput)]
    assert [s.key for s in _scans(items)] == [STUDY]


# -- preprocess and predict agree -------------------------------------------------------------


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    """One phantom as a two-frame DICOM and one as two single-view files."""
    root = tmp_path_factory.mktemp("phantoms")
    write_phantom(generate_phantom(0, 0), root / "two")
    write_phantom(generate_phantom(1, 0), root / "one", one_view_per_file=True)
    return root


@pytest.mark.parametrize("keep_dates", [None, "month", "shift"])
def test_the_dicom_and_preprocess_output_read_alike(
    phantoms: Path, tmp_path: Path, keep_dates
) -> None:
    dicom = [phantoms / "two" / "dicom", phantoms / "one" / "dicom"]
    flags = ["--keep-dates", keep_dates] if keep_dates else []
    argv = ["preprocess", *map(str, dicom), "--out", str(tmp_path / "prepared"), "--salt", SALT,
            "--labelme", "--no-progress", *flags]  # fmt: skip
    assert cli.main(argv) == 0
    direct = _scans(iter_scans(dicom, salt=SALT, keep_dates=keep_dates))
    items = list(iter_scans([tmp_path / "prepared"], salt=SALT, keep_dates=keep_dates))
    prepared = _scans(items)
    assert len(direct) == len(prepared) == 2
    assert sorted(map(str, (_link(s) for s in direct))) == sorted(map(str, map(_link, prepared)))
    assert all(s.metadata["patient_key"].startswith("pt") for s in prepared)
    assert all((s.metadata["study_date"] is None) == (keep_dates is None) for s in prepared)
    # only the report is not a scan there: the companions and Labelme files belong to the PNGs
    assert {Path(i.path).name for i in items if isinstance(i, SkippedInput)
            and i.kind != "duplicate"} == {"preprocess_report.json"}  # fmt: skip
    report = json.loads((tmp_path / "prepared" / "preprocess_report.json").read_text())
    assert sorted(map(str, ({k: e[k] for k in LINK_FIELDS} for e in report["scans"]))) == sorted(
        map(str, map(_link, direct))
    )


def test_bsi_on_labelme_files_writes_the_companion_link(phantoms: Path, tmp_path: Path) -> None:
    """``bsi-d2 bsi`` end to end: each Labelme file's ``<stem>.meta.json`` gives its record
    the DICOM's study and patient keys, in bsi.json, the CSV and the index."""
    labelme = phantoms / "two" / "labelme"
    (scan,) = read_scan_file(next((phantoms / "two" / "dicom").glob("*.dcm")), SALT,
                             keep_dates="month")  # fmt: skip
    for json_file in labelme.glob("*.json"):
        if not json_file.name.endswith(".meta.json"):
            meta_path(json_file).write_text(json.dumps(_link(scan)))
    out = tmp_path / "bsi"
    argv = ["bsi", str(labelme), "--out", str(out), "--salt", SALT, "--no-progress",
            "--keep-dates", "month"]  # fmt: skip
    assert cli.main(argv) == 0
    (record_file,) = (out / "scans").glob("*/bsi.json")
    record = json.loads(record_file.read_text())
    assert {k: record[k] for k in LINK_FIELDS} == _link(scan)
    assert (
        record["study_date"] == scan.metadata["study_date"] and record["study_date_kind"] == "month"
    )
    assert record["key"].startswith("c") and record["status"] == "ok"
    (row,) = csv.DictReader(io.StringIO((out / "bsi_summary.csv").read_text()))
    assert list(row)[: 1 + len(LINK_FIELDS)] == ["key", *LINK_FIELDS]
    assert row["patient_key"] == scan.metadata["patient_key"]
    assert scan.metadata["patient_key"] in (out / "index.html").read_text()
    assert not (out / "errors.jsonl").read_text().strip()  # the companion was no input of its own


def test_predict_labelme_output_keeps_the_link_through_bsi(phantoms: Path, tmp_path: Path) -> None:
    """predict's ``<key>.json`` for correcting in Labelme has its ``<key>.meta.json``: ``bsi``
    on it writes the study and patient keys of the DICOM again."""
    from bsi_d2.inference.replay import phantom_recording, save_recording
    from bsi_d2.taxonomy import load_taxonomy

    recording = save_recording(
        tmp_path / "recording.jsonl", phantom_recording(phantoms / "two", load_taxonomy())
    )
    predicted, again = tmp_path / "predicted", tmp_path / "again"
    argv = ["predict", str(phantoms / "two" / "dicom"), "--replay", str(recording), "--out",
            str(predicted), "--salt", SALT, "--no-progress", "--keep-dates", "shift"]  # fmt: skip
    assert cli.main(argv) == 0
    (scan_dir,) = (predicted / "scans").iterdir()
    first = json.loads((scan_dir / "bsi.json").read_text())
    assert first["study_date_kind"] == "shifted"
    argv = ["bsi", str(scan_dir / f"{scan_dir.name}.json"), "--out", str(again), "--salt", SALT,
            "--no-progress", "--keep-dates", "shift"]  # fmt: skip
    assert cli.main(argv) == 0
    (record_file,) = (again / "scans").glob("*/bsi.json")
    second = json.loads(record_file.read_text())
    assert {k: second[k] for k in LINK_FIELDS} == {k: first[k] for k in LINK_FIELDS}
