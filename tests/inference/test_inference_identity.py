"""Patient identity never leaves through file paths: an archive laid out as
``<PatientID>/<PatientName>.dcm`` (phantoms with their synthetic identity, a truncated copy, a CT
slice, an empty file, a file without view information) through ``bsi-d2 preprocess`` and
``bsi-d2 predict``; nothing written or logged names the patient, or gives the study date in any
form, unless ``--keep-identity`` (``--keep-dates``: only the month, or the shifted date)."""

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.paths import CPU_CONFIG

from bsi_d2 import cli
from bsi_d2.inference.replay import display_digest, instances_entry, save_recording
from bsi_d2.io.pseudonym import input_label, kept_study_date
from bsi_d2.io.readers import read_scan_file
from bsi_d2.phantom import write_phantoms
from bsi_d2.phantom.dicom_writer import build_nm_dataset, write_dataset

# a random model finds no skeleton: quality control off, so records keep their content
OPTS = ["--opts", "MODEL.ENGINE", "torchvision", "TEST.DETECTIONS_PER_IMAGE", "10",
        "BSI.QC.ENABLED", "False"]  # fmt: skip
SALT = "site-salt"
MIN_BINARY_SECRET = 5  # shorter strings turn up by chance in compressed pixels


def _identity(path: Path) -> dict[str, str]:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return {
        "name": str(ds.PatientName),
        "id": str(ds.PatientID),
        "birth": str(ds.PatientBirthDate),
        "study": str(ds.StudyDate),
    }


def _date_forms(date: str) -> set[str]:
    """A DICOM date (YYYYMMDD) as it could be written: as stored, ISO, and its month."""
    iso = f"{date[:4]}-{date[4:6]}-{date[6:]}"
    return {date, iso, iso[:7], f"{date[6:]}.{date[4:6]}.{date[:4]}", iso.replace("-", "/")}


def _ct_slice(path: Path, identity: dict[str, str]) -> None:
    ct = build_nm_dataset(
        [np.ones((64, 64))],
        modality="CT",
        attributes={"PatientName": identity["name"], "PatientID": identity["id"]},
    )
    write_dataset(ct, path)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """``archive/<PatientID>/<PatientName>.dcm`` for two phantoms, plus files that fail; returns
    the archive, the identity strings and {kind: file}."""
    phantoms = tmp_path_factory.mktemp("phantoms")
    write_phantoms(phantoms, 2, seed=0, workers=1)
    root = tmp_path_factory.mktemp("archive")
    secrets: set[str] = set()
    files: dict[str, Path] = {}
    identities = []
    for i, source in enumerate(sorted((phantoms / "dicom").glob("*.dcm"))):
        ident = _identity(source)
        identities.append(ident)
        folder = root / ident["id"]
        folder.mkdir()
        files[f"scan{i}"] = Path(shutil.copy(source, folder / f"{ident['name']}.dcm"))
        secrets |= {ident["id"], ident["name"], ident["birth"], *ident["name"].split("^")}
        secrets |= _date_forms(ident["study"])
    first, second = identities
    cut = root / first["id"] / f"{first['name']}_cut.dcm"
    cut.write_bytes(files["scan0"].read_bytes()[:-5000])
    files["truncated"] = cut
    files["empty"] = root / first["id"] / f"{first['birth']}.dcm"
    files["empty"].write_bytes(b"")
    files["ct"] = root / second["id"] / f"CT_{second['name']}.dcm"
    _ct_slice(files["ct"], second)
    # no view information: the DICOM reader logs a warning naming the file
    viewless = build_nm_dataset(
        [np.random.default_rng(0).poisson(20, (1024, 256))],
        attributes={"PatientName": second["name"], "PatientID": second["id"]},
    )
    files["viewless"] = write_dataset(viewless, root / second["id"] / f"{second['birth']}.dcm")
    return root, sorted(secrets), files


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from bsi_d2.config import setup_cfg
    from bsi_d2.engine.checkpoint import save_checkpoint
    from bsi_d2.engine.predictor import build_predictor

    torch.manual_seed(0)
    model = build_predictor(setup_cfg(str(CPU_CONFIG), OPTS[1:]), device="cpu").model
    return save_checkpoint(tmp_path_factory.mktemp("model"), "tiny.pth", model)


def _predict(inputs, out, weights, *flags):
    argv = ["predict", *map(str, inputs), "--config-file", str(CPU_CONFIG),
            "--weights", str(weights), "--out", str(out), "--score-thresh", "0.05",
            "--no-progress", "--salt", SALT, *flags, *OPTS]  # fmt: skip
    return cli.main(argv)


def _leaks(text: str, secrets) -> list[str]:
    """The identity strings in ``text``, each as a whole word (``Greta``, not ``Gretagraph``)."""
    return [
        s for s in secrets if re.search(rf"(?<![A-Za-z0-9]){re.escape(s)}(?![A-Za-z0-9])", text)
    ]


def _leaks_in_folder(folder: Path, secrets) -> dict[str, list[str]]:
    found = {}
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        try:
            leaks = _leaks(data.decode("utf-8"), secrets)
        except UnicodeDecodeError:  # PNG: look for the longer strings in its bytes
            leaks = [s for s in secrets if len(s) >= MIN_BINARY_SECRET and s.encode() in data]
        if leaks:
            found[str(path.relative_to(folder))] = leaks
    return found


def _logged(caplog, capsys) -> str:
    captured = capsys.readouterr()
    messages = [r.getMessage() for r in caplog.records]
    return "\n".join([captured.out, captured.err, caplog.text, *messages])


def test_preprocess_and_predict_write_and_log_no_identity(
    archive, weights, tmp_path, caplog, capsys
):
    root, secrets, files = archive
    caplog.set_level(logging.DEBUG)
    prepared, predicted = tmp_path / "prepared", tmp_path / "predicted"
    argv = ["preprocess", str(root), "--out", str(prepared), "--no-progress", "--salt", SALT]
    assert cli.main(argv) == 0
    assert _predict([root], predicted, weights) == 0

    assert _leaks_in_folder(prepared, secrets) == {}
    assert _leaks_in_folder(predicted, secrets) == {}
    logged = _logged(caplog, capsys)
    assert _leaks(logged, secrets) == []
    assert "no view information" in logged  # the reader's warning was logged, relabelled

    # each failed file is named by its label: the same salt finds it again
    label = {kind: input_label(path, [root], SALT) for kind, path in files.items()}
    report = json.loads((prepared / "preprocess_report.json").read_text())
    skipped = {s["path"]: s for s in report["skipped"]}
    assert set(skipped) == {label["truncated"], label["empty"], label["ct"]}
    assert skipped[label["ct"]]["reason"].startswith(label["ct"] + ": modality CT")
    assert sorted(s for e in report["scans"] for s in e["sources"]) == sorted(
        label[k] for k in ("scan0", "scan1", "viewless")
    )
    errors = [json.loads(line) for line in (predicted / "errors.jsonl").read_text().splitlines()]
    assert {e["path"] for e in errors} == {label["truncated"], label["empty"], label["ct"]}
    assert all(e["source"] == [e["path"]] and e["path"] in e["reason"] for e in errors)
    for record_file in (predicted / "errors").glob("*.json"):
        assert json.loads(record_file.read_text())["path"] in skipped  # one label per file


def test_keep_identity_names_the_files(archive, weights, tmp_path, caplog):
    root, _, files = archive
    caplog.set_level(logging.INFO)
    bad = [files["truncated"], files["empty"]]
    prepared, predicted = tmp_path / "prepared", tmp_path / "predicted"
    flags = ["--no-progress", "--keep-identity"]
    argv = ["preprocess", *map(str, bad), "--out", str(prepared), *flags]
    # both exit 1: every input failed, which is what this test is about
    assert cli.main(argv) == 1
    assert _predict(bad, predicted, weights, "--keep-identity") == 1
    report = json.loads((prepared / "preprocess_report.json").read_text())
    assert {s["path"] for s in report["skipped"]} == {str(p) for p in bad}
    errors = [json.loads(line) for line in (predicted / "errors.jsonl").read_text().splitlines()]
    assert {e["path"] for e in errors} == {str(p) for p in bad}
    assert str(files["truncated"]) in caplog.text


def _recording(files: dict[str, Path], path: Path) -> Path:
    """A recording answering for the two phantoms with no instance: no model is needed to see
    what the records carry."""
    from bsi_d2.preprocess.pipeline import preprocess_scan
    from bsi_d2.structures.instances import Instances

    entries = []
    for kind in ("scan0", "scan1"):
        (scan,) = read_scan_file(files[kind])
        display = preprocess_scan(scan).display
        entries.append(instances_entry(display_digest(display), Instances.empty(*display.shape)))
    return save_recording(path, entries)


@pytest.mark.parametrize("keep_dates", [None, "month", "shift"])
def test_study_dates_leave_only_as_kept_and_patients_only_as_keys(
    archive, tmp_path, caplog, capsys, keep_dates
):
    root, secrets, files = archive
    caplog.set_level(logging.DEBUG)
    flags = ["--no-progress", "--salt", SALT] + (["--keep-dates", keep_dates] if keep_dates else [])
    prepared, predicted = tmp_path / "prepared", tmp_path / "predicted"
    assert cli.main(["preprocess", str(root), "--out", str(prepared), *flags]) == 0
    recording = _recording(files, tmp_path / "recording.jsonl")
    argv = ["predict", str(root), "--replay", str(recording), "--out", str(predicted), *flags]
    assert cli.main(argv) == 0

    kept: dict[str, tuple[str, str] | None] = {}  # PatientID -> the date as kept
    for kind in ("scan0", "scan1"):
        ident = _identity(files[kind])
        kept[ident["id"]] = keep_dates and kept_study_date(
            ident["study"], keep_dates, ident["id"], None, SALT
        )
    # what may be written: the kept date, and of the true date only what the kept one shows
    allowed = {value for value, _ in filter(None, kept.values())}
    hidden = [s for s in secrets if not any(a.startswith(s) for a in allowed)]
    assert _leaks_in_folder(prepared, hidden) == {}
    assert _leaks_in_folder(predicted, hidden) == {}
    assert _leaks(_logged(caplog, capsys), hidden) == []

    records = [json.loads(p.read_text()) for p in (predicted / "scans").glob("*/bsi.json")]
    dated = [r for r in records if r["study_date"] is not None]
    assert sorted(r["study_date"] for r in dated) == sorted(allowed)
    assert {r["study_date_kind"] for r in dated} <= {"month", "shifted"}
    assert len({r["patient_key"] for r in records}) == 2  # two patients, viewless file of one
    assert all(
        r["study_key"].startswith("s") and r["patient_key"].startswith("pt") for r in records
    )
    metas = [json.loads(p.read_text()) for p in prepared.glob("*.meta.json")]
    assert sorted((m["study_key"], m["patient_key"]) for m in metas) == sorted(
        (r["study_key"], r["patient_key"]) for r in records
    )  # preprocess and predict name each study and patient alike
    assert sorted(filter(None, (m["study_date"] for m in metas))) == sorted(allowed)
