"""Patient identity never leaves through file paths: an archive laid out as
``<PatientID>/<PatientName>.dcm`` (phantoms with their synthetic identity, a truncated copy, a CT
slice, an empty file, a file without view information) through ``bsi-d2 preprocess`` and
``bsi-d2 predict``; nothing written or logged names the patient unless ``--keep-identity``."""

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
from bsi_d2.io.pseudonym import input_label
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
    }


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
