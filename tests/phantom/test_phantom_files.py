"""Phantoms on disk: DICOM read back with pydicom, Labelme through the toolkit's converter,
PNGs, truth and manifest, determinism across runs and worker counts, the CLI."""

import json

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian

from bsi_d2 import cli
from bsi_d2.data.convert import convert_labelme_folder
from bsi_d2.io.base import ScanImage
from bsi_d2.io.readers import iter_scans
from bsi_d2.phantom import folder as folder_module
from bsi_d2.phantom import generate_phantom, write_phantoms
from bsi_d2.structures.masks import rle_to_mask, segmentation_to_mask


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantoms")
    paths = write_phantoms(out, 2, seed=0, workers=1)
    return out, paths


def test_layout_and_manifest(written):
    out, paths = written
    assert [p.name for p in paths] == ["phantom_0000.json", "phantom_0001.json"]
    for pid in ("phantom_0000", "phantom_0001"):
        for rel in (
            f"dicom/{pid}.dcm",
            f"labelme/{pid}.png",
            f"labelme/{pid}.counts.png",
            f"labelme/{pid}.json",
            f"truth/{pid}.json",
        ):
            assert (out / rel).is_file(), rel
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["ids"] == ["phantom_0000", "phantom_0001"]
    assert manifest["seed"] == 0 and manifest["version"] and manifest["failed"] == []
    assert "bladder" in manifest["bladder_instances"] and "pelvis" in manifest["bladder_instances"]


def test_two_frame_dicom_reads_back(written):
    out, _ = written
    ds = pydicom.dcmread(out / "dicom" / "phantom_0000.dcm")
    phantom = generate_phantom(0, seed=0)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.20" == ds.file_meta.MediaStorageSOPClassUID
    assert ds.Modality == "NM" and list(ds.ImageType) == [
        "ORIGINAL",
        "PRIMARY",
        "WHOLE BODY",
        "EMISSION",
    ]
    assert int(ds.NumberOfFrames) == 2
    assert list(ds.FrameIncrementPointer) == [Tag("EnergyWindowVector"), Tag("DetectorVector")]
    assert list(ds.DetectorVector) == [1, 2]
    views = [
        (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning)
        for code in (item.ViewCodeSequence[0] for item in ds.DetectorInformationSequence)
    ]
    # DICOM CID 26 (Nuclear Medicine Projection); before: a local "anterior"/"posterior" code
    standard = [codes.cid26.AnteriorProjection, codes.cid26.PosteriorProjection]
    assert views == [(c.value, c.scheme_designator, c.meaning) for c in standard]
    assert [float(i.StartAngle) for i in ds.DetectorInformationSequence] == [180.0, 0.0]
    iop = [list(map(float, i.ImageOrientationPatient)) for i in ds.DetectorInformationSequence]
    assert iop[0][0] == 1.0 and iop[1][0] == -1.0  # posterior mirrored left-right
    assert [float(v) for v in ds.PixelSpacing] == [2.4, 2.4]
    frames = ds.pixel_array
    assert frames.shape == (2, 1024, 256)
    assert np.array_equal(frames[0], phantom.anterior)
    assert np.array_equal(frames[1], phantom.posterior)
    assert str(ds.PatientName) and ds.PatientID and len(ds.PatientBirthDate) == 8


def test_one_view_per_file_variant(tmp_path):
    write_phantoms(tmp_path, 1, seed=0, workers=1, one_view_per_file=True)
    ant = pydicom.dcmread(tmp_path / "dicom" / "phantom_0000_ANT.dcm")
    post = pydicom.dcmread(tmp_path / "dicom" / "phantom_0000_POST.dcm")
    phantom = generate_phantom(0, seed=0)
    assert ant.StudyInstanceUID == post.StudyInstanceUID
    assert ant.SOPInstanceUID != post.SOPInstanceUID
    assert "ANT" in ant.SeriesDescription and "POST" in post.SeriesDescription
    assert ant.ImageID == post.ImageID == "WHOLE BODY_E"
    assert int(ant.NumberOfFrames) == 1
    assert np.array_equal(ant.pixel_array, phantom.anterior)
    assert np.array_equal(post.pixel_array, phantom.posterior)
    assert not (tmp_path / "dicom" / "phantom_0000.dcm").exists()


def test_toolkit_reader_finds_both_views(written, tmp_path):
    write_phantoms(tmp_path, 1, seed=0, workers=1, one_view_per_file=True)
    phantom = generate_phantom(0, seed=0)
    for source in (written[0] / "dicom" / "phantom_0000.dcm", tmp_path / "dicom"):
        scans = [s for s in iter_scans([source]) if isinstance(s, ScanImage)]
        assert len(scans) == 1
        assert np.array_equal(scans[0].views["anterior"], phantom.anterior)
        assert np.array_equal(scans[0].views["posterior"], phantom.posterior)
        assert phantom.identity.patient_id not in json.dumps(scans[0].metadata)


def test_pngs_hold_the_merged_scan(written):
    out, _ = written
    phantom = generate_phantom(1, seed=0)
    display = cv2.imread(str(out / "labelme" / "phantom_0001.png"), cv2.IMREAD_UNCHANGED)
    counts = cv2.imread(str(out / "labelme" / "phantom_0001.counts.png"), cv2.IMREAD_UNCHANGED)
    assert display.dtype == np.uint8 and display.shape == (950, 512)
    assert counts.dtype == np.uint16 and counts.shape == (950, 512)
    assert np.array_equal(display, phantom.merged.display)
    assert np.array_equal(counts, phantom.merged.counts.astype(np.uint16))
    assert 7 < display.mean() < 14  # seed 001's brightness window


def test_labelme_converts_without_repair_to_the_truth_masks(written, tmp_path):
    out, _ = written
    labelme = json.loads((out / "labelme" / "phantom_0000.json").read_text())
    assert labelme["imagePath"] == "phantom_0000.png" and labelme["imageData"] is None
    assert (labelme["imageHeight"], labelme["imageWidth"]) == (950, 512)
    report = convert_labelme_folder(out / "labelme", tmp_path / "coco", workers=1)
    assert report.ok and report.errors == [] and report.files_converted == 2
    assert report.repairs == [] and report.skipped_shapes == [] and report.unknown_labels == {}
    assert report.instances_per_class["bladder"] == 4  # one per view, two scans
    coco = json.loads((tmp_path / "coco" / "annotations" / "instances_all.json").read_text())
    assert {"id": 12, "name": "bladder", "supercategory": "decoy"} in coco["categories"]
    for image in coco["images"]:
        truth = json.loads(
            (out / "truth" / image["file_name"].replace(".png", ".json")).read_text()
        )
        anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        assert len(anns) == len(truth["instances"])
        assert sum(a["category_id"] == 12 for a in anns) == 2
        expected = sorted(
            (r["category_id"], rle_to_mask(r["segmentation"]).tobytes()) for r in truth["instances"]
        )
        got = sorted(
            (a["category_id"], segmentation_to_mask(a["segmentation"], 950, 512).tobytes())
            for a in anns
        )
        assert got == expected


def test_files_identical_across_runs_n_and_workers(written, tmp_path):
    out, _ = written
    write_phantoms(tmp_path, 3, seed=0, workers=2)
    for rel in (
        "truth/phantom_0001.json",
        "labelme/phantom_0001.json",
        "labelme/phantom_0001.png",
        "labelme/phantom_0001.counts.png",
        "dicom/phantom_0001.dcm",
    ):
        assert (tmp_path / rel).read_bytes() == (out / rel).read_bytes(), rel


def test_cli_writes_phantoms(tmp_path, capsys):
    argv = ["phantom", "--scans", "1", "--out", str(tmp_path), "--workers", "1", "--seed", "3"]
    assert cli.main(argv) == 0
    assert "not for diagnosis" in capsys.readouterr().out
    truth = json.loads((tmp_path / "truth" / "phantom_0000.json").read_text())
    assert truth["seed"] == 3 and truth["image"] == "labelme/phantom_0000.png"


def test_batch_goes_on_past_a_failing_patient(tmp_path, monkeypatch):
    real = folder_module.generate_phantom

    def failing(index, seed=0, **kwargs):
        if index == 1:
            raise RuntimeError("simulated failure")
        return real(index, seed, **kwargs)

    monkeypatch.setattr(folder_module, "generate_phantom", failing)
    paths = write_phantoms(tmp_path, 3, seed=0, workers=1)
    assert [p.name for p in paths] == ["phantom_0000.json", "phantom_0002.json"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["failed"] == [
        {"patient": "phantom_0001", "error": "RuntimeError: simulated failure"}
    ]
