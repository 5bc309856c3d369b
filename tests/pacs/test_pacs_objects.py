"""``predict --dicom-out`` on phantom DICOM: the SR holds bsi.json's numbers, the SEGs map back
onto labelmap.png and reference the source frame, identity is kept only when asked."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from bsi_d2.cli import main as cli
from bsi_d2.inference.replay import phantom_recording, save_recording
from bsi_d2.io.readers import read_scan_file
from bsi_d2.pacs import codes
from bsi_d2.pacs.geometry import to_merged
from bsi_d2.pacs.identity import Identity
from bsi_d2.pacs.writer import NOT_DICOM_NOTE, write_dicom_objects
from bsi_d2.preprocess.pipeline import preprocess_scan
from bsi_d2.taxonomy import load_taxonomy

hd = pytest.importorskip("highdicom")
TAXONOMY = load_taxonomy()


def _phantoms(root: Path, *flags: str) -> Path:
    assert cli(["phantom", "--scans", "2", "--out", str(root), "--workers", "1", *flags]) == 0
    save_recording(root / "recording.jsonl", phantom_recording(root, TAXONOMY))
    return root


def _predict(phantoms: Path, out: Path, *flags: str) -> Path:
    argv = ["predict", str(phantoms / "dicom"), "--replay", str(phantoms / "recording.jsonl")]
    assert cli([*argv, "--out", str(out), "--dicom-out", "--no-progress", *flags]) == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom_out")
    two_frame = _phantoms(root / "two_frame")
    one_view = _phantoms(root / "one_view", "--one-view-per-file")
    return {
        "pseudonymised": (two_frame, _predict(two_frame, root / "pseudo", "--keep-dates", "shift")),
        "kept": (two_frame, _predict(two_frame, root / "kept", "--keep-identity")),
        "one_view": (one_view, _predict(one_view, root / "one_view_out", "--keep-identity")),
    }


def _scans(out: Path) -> list[tuple[dict, Path]]:
    found = []
    for record_path in sorted((out / "scans").glob("*/bsi.json")):
        found.append((json.loads(record_path.read_text()), record_path.parent))
    assert found
    return found


def _sources(record: dict, phantoms: Path) -> list[Path]:
    """The DICOM files of a record (kept identity: its source paths; otherwise by study key)."""
    files = sorted((phantoms / "dicom").glob("*.dcm"))
    keyed = {}
    for path in files:
        (scan,) = read_scan_file(path)
        keyed.setdefault(scan.key, []).append(path)
    return keyed[record["study_key"]]


def _placements(sources: list[Path]):
    from bsi_d2.io.readers import iter_scans

    (scan,) = [s for s in iter_scans([str(p) for p in sources]) if hasattr(s, "views")]
    return scan, {p.view: p for p in preprocess_scan(scan).placements}


def _num_items(ds) -> dict[tuple[str, str], float]:
    """(tracking identifier, concept code value) -> value of every NUM item of an SR."""
    out = {}

    def walk(items, tracking):
        for item in items:
            name = item.ConceptNameCodeSequence[0].CodeValue
            if item.ValueType == "TEXT" and name == "112039":  # Tracking Identifier
                tracking = str(item.TextValue)
        for item in items:
            name = item.ConceptNameCodeSequence[0].CodeValue
            if item.ValueType == "NUM":
                value = item.MeasuredValueSequence[0]
                out[(tracking, name)] = float(value.get("FloatingPointValue", value.NumericValue))
            if "ContentSequence" in item:
                walk(item.ContentSequence, tracking)

    walk(ds.ContentSequence, None)
    return out


@pytest.mark.parametrize("run", ["pseudonymised", "kept", "one_view"])
def test_the_sr_holds_the_records_bsi_and_region_values(runs, run):
    _, out = runs[run]
    for record, scan_dir in _scans(out):
        assert record["status"] == "ok" and "sr.dcm" in record["dicom"]["files"]
        sr = hd.sr.srread(scan_dir / "dicom" / "sr.dcm")
        assert sr.VerificationFlag == "UNVERIFIED"
        values = _num_items(sr)
        scan = f"scan {record['key']}"
        assert values[(scan, codes.BSI.value)] == record["bsi"]
        assert values[(scan, codes.BSTBI.value)] == record["bstbi"]
        assert values[(scan, codes.LESION_COUNT.value)] == record["lesion_count"]
        for row in record["regions"]:
            region = f"region {row['bone']}"
            assert values[(region, codes.REGION_BSI.value)] == row["bsi"]
            for view in ("anterior", "posterior"):
                expected = row[f"involvement_{view}"]
                got = values.get((region, codes.INVOLVEMENT_VIEW[view].value))
                assert got == expected
        groups = sr.content.get_image_measurement_groups()
        assert len(groups) == 1 + len(record["regions"])  # highdicom's own parser reads them
        assert b"not a diagnosis" in (scan_dir / "dicom" / "sr.dcm").read_bytes()


@pytest.mark.parametrize("run", ["kept", "one_view"])
def test_the_segs_map_back_onto_the_label_map_and_name_the_source_frame(runs, run):
    phantoms, out = runs[run]
    for record, scan_dir in _scans(out):
        sources = _sources(record, phantoms)
        scan, placements = _placements(sources)
        label_map = np.asarray(Image.open(scan_dir / "labelmap.png"))
        rebuilt = np.zeros_like(label_map)
        layers: dict[str, np.ndarray] = {}
        for view, placement in placements.items():
            seg = hd.seg.segread(scan_dir / "dicom" / f"seg_{view}.dcm")
            entry = scan.metadata["views"][view]
            source = pydicom.dcmread(sources[entry["source_index"]], stop_before_pixels=True)
            frame = entry["frame"] + 1
            ref = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
            ref = ref.SourceImageSequence[0]
            assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
            if "NumberOfFrames" in source and int(source.NumberOfFrames) > 1:
                assert int(ref.ReferencedFrameNumber) == frame
            assert seg.StudyInstanceUID == source.StudyInstanceUID
            assert seg.PatientID == source.PatientID
            pixels = seg.get_pixels_by_source_frame(
                source.SOPInstanceUID,
                source_frame_numbers=[frame] if "NumberOfFrames" in source else None,
                combine_segments=False,
            )[0]
            for index, item in enumerate(seg.SegmentSequence):
                placed = to_merged(pixels[..., index].astype(bool), placement, label_map.shape)
                name = str(item.SegmentLabel)
                layers[name] = layers.get(name, np.zeros(label_map.shape, bool)) | placed
        from bsi_d2.pacs.seg import ordered_classes

        for cls in ordered_classes(TAXONOMY):
            if cls.name in layers:
                rebuilt[layers[cls.name]] = cls.id
        assert label_map.any()
        np.testing.assert_array_equal(rebuilt, label_map)


def test_pseudonymised_objects_carry_the_patient_key_and_derived_uids_only(runs):
    phantoms, out = runs["pseudonymised"]
    for record, scan_dir in _scans(out):
        (source_path,) = _sources(record, phantoms)
        source = pydicom.dcmread(source_path, stop_before_pixels=True)
        secrets = [str(source.PatientName), str(source.PatientID), source.StudyInstanceUID,
                   source.SOPInstanceUID, str(source.AccessionNumber), str(source.PatientBirthDate),
                   str(source.StudyDate)]  # fmt: skip
        for name in record["dicom"]["files"]:
            path = scan_dir / "dicom" / name
            ds = pydicom.dcmread(path)
            assert ds.PatientID == record["patient_key"]
            assert ds.PatientIdentityRemoved == "YES"
            assert ds.StudyInstanceUID == Identity(salt=None).uid(
                source.StudyInstanceUID, "StudyInstanceUID"
            )
            assert ds.StudyDate == record["study_date"].replace("-", "")  # the shifted day
            raw = path.read_bytes()
            leaked = [s for s in secrets if s and s.encode() in raw]
            assert not leaked, f"{name} carries {leaked}"
        seg = pydicom.dcmread(scan_dir / "dicom" / "seg_anterior.dcm")
        ref = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
        uid = ref.SourceImageSequence[0].ReferencedSOPInstanceUID
        assert uid == Identity().uid(source.SOPInstanceUID, "SOPInstanceUID")


def test_a_rerun_writes_the_same_object_uids(runs, tmp_path):
    phantoms, out = runs["pseudonymised"]
    again = _predict(phantoms, tmp_path / "again", "--keep-dates", "shift")
    for (record, scan_dir), (_, scan_again) in zip(_scans(out), _scans(again), strict=True):
        for name in record["dicom"]["files"]:
            first = pydicom.dcmread(scan_dir / "dicom" / name, stop_before_pixels=True)
            second = pydicom.dcmread(scan_again / "dicom" / name, stop_before_pixels=True)
            assert (first.SOPInstanceUID, first.SeriesInstanceUID) == (
                second.SOPInstanceUID, second.SeriesInstanceUID)  # fmt: skip


def test_a_scan_that_failed_quality_control_gets_no_measurements(tmp_path):
    record = {
        "key": "k1", "status": "qc_failed", "study_key": "s0123456789abcdef",
        "patient_key": None, "bsi": None, "regions": [], "model": {"engine": "torchvision"},
        "error": "quality control: counts too low", "qc": {"status": "failed", "warnings": []},
    }  # fmt: skip
    overlay = np.zeros((950, 512, 3), np.uint8)
    entry = write_dicom_objects(tmp_path, record, TAXONOMY, overlay=overlay)
    assert entry["files"] == ["sc.dcm", "sr.dcm"] and entry["notes"] == [NOT_DICOM_NOTE]
    sr = pydicom.dcmread(tmp_path / "dicom" / "sr.dcm")
    assert _num_items(sr) == {}
    text = (tmp_path / "dicom" / "sr.dcm").read_bytes()
    assert codes.QC_VALUES["failed"].value.encode() in text and b"counts too low" in text
    assert codes.QC_VALUES["passed"].value.encode() not in text
    sc = pydicom.dcmread(tmp_path / "dicom" / "sc.dcm")
    assert sc.BurnedInAnnotation == "YES" and sc.pixel_array.shape[1:] == (512, 3)


@pytest.mark.skipif(shutil.which("dsrdump") is None, reason="dcmtk (dsrdump) is not installed")
def test_dcmtk_renders_the_sr(runs):
    _, out = runs["pseudonymised"]
    record, scan_dir = _scans(out)[0]
    shown = subprocess.run(["dsrdump", str(scan_dir / "dicom" / "sr.dcm")], capture_output=True,
                           text=True, check=True).stdout  # fmt: skip
    assert "Bone Scan Index" in shown and "UNVERIFIED" in shown
    assert f"{record['bsi']:.6f}"[:6] in shown


@pytest.mark.skipif(
    shutil.which("dciodvfy") is None, reason="dicom3tools (dciodvfy) is not installed"
)
@pytest.mark.parametrize("run", ["pseudonymised", "kept", "one_view"])
def test_dciodvfy_finds_no_error_in_the_objects(runs, run):
    _, out = runs[run]
    for record, scan_dir in _scans(out):
        for name in record["dicom"]["files"]:
            checked = subprocess.run(["dciodvfy", str(scan_dir / "dicom" / name)],
                                     capture_output=True, text=True, timeout=120)  # fmt: skip
            errors = [line for line in checked.stderr.splitlines() if line.startswith("Error")]
            assert not errors, f"{name}: {errors}"
