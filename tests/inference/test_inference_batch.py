"""Batch inference end to end with a real (tiny, randomly initialised) torchvision Mask R-CNN:
a folder mixing good scans and broken files, resuming after an interruption, and shards."""

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from bsi_d2.inference.batch import BatchOptions, content_key, run_batch
from bsi_d2.inference.outputs import RECORD_KEYS
from bsi_d2.io.pseudonym import input_label
from bsi_d2.postprocess.qc import QCThresholds

SCORE = 0.05  # keep the random model's detections, so every output has content


def _body(height, width, seed):
    """A crude whole-body count image: an ellipse trunk, a head, hot spots."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    cx = width / 2
    mean = 2.0 + 40.0 * (
        ((yy - height * 0.5) / (height * 0.4)) ** 2 + ((xx - cx) / (width * 0.3)) ** 2 <= 1
    )
    mean += 60.0 * ((yy - height * 0.08) ** 2 + (xx - cx) ** 2 <= (width * 0.12) ** 2)
    for _ in range(3):
        r, c = rng.integers(height // 5, height * 4 // 5), rng.integers(width // 3, width * 2 // 3)
        mean += 150.0 * ((yy - r) ** 2 + (xx - c) ** 2 <= 16)
    return rng.poisson(mean).astype(np.uint16)


def _write_ct_dicom(path):
    """A real DICOM file that is not a bone scan: a small CT slice."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "CT"
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "ID-123"
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.zeros((64, 64), np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    (root / "sub").mkdir()
    Image.fromarray(_body(950, 512, 1)).save(root / "merged_a.png")
    Image.fromarray(_body(950, 512, 2)).save(root / "sub" / "merged_b.png")
    Image.fromarray(_body(1024, 256, 3)).save(root / "sub" / "case7_ant.png")
    Image.fromarray(_body(1024, 256, 4)[:, ::-1].copy()).save(root / "sub" / "case7_post.png")
    (root / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00garbage" * 10)
    _write_ct_dicom(root / "ct_slice.dcm")
    (root / "empty.png").write_bytes(b"")
    return root


BAD_FILES = {"broken.dcm", "ct_slice.dcm", "empty.png"}
GOOD_SOURCES = [["merged_a.png"], ["merged_b.png"], ["case7_ant.png", "case7_post.png"]]


@pytest.fixture(scope="module")
def predictor(configs_dir):
    from bsi_d2.config import setup_cfg
    from bsi_d2.engine.predictor import build_predictor

    torch.manual_seed(0)
    cfg = setup_cfg(
        str(configs_dir / "mask_rcnn_R_18_FPN_cpu_bsi.yaml"),
        ["MODEL.ENGINE", "torchvision", "TEST.DETECTIONS_PER_IMAGE", 10],
    )
    predictor = build_predictor(cfg, device="cpu")
    assert predictor.engine.name == "torchvision"
    return predictor


def _options(**kw):
    kw.setdefault("score_thresh", SCORE)
    # a random model finds no skeleton, so quality control would withhold every result; these
    # tests are about the batch's plumbing (tests/postprocess/test_postprocess_qc.py: the QC)
    kw.setdefault("qc", QCThresholds(enabled=False))
    return BatchOptions(progress=False, prefetch=2, model={"engine": "torchvision"}, **kw)


def _named(inputs):
    """Input file name by its label in error records (names are not written: they may be
    identity)."""
    return {input_label(p, [inputs]): p.name for p in inputs.rglob("*") if p.is_file()}


def _records(out):
    return {p.parent.name: json.loads(p.read_text()) for p in (out / "scans").glob("*/bsi.json")}


@pytest.fixture(scope="module")
def first_run(inputs, predictor, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    result = run_batch([inputs], out, predictor, predictor.taxonomy, _options(batch_size=1))
    return out, result


def test_mixed_folder_finishes_good_scans_and_explains_bad_ones(inputs, first_run, predictor):
    out, result = first_run
    records = _records(out)
    assert len(result.done) == 3 and not result.failed
    # sources are named by content digest, not file name, unless identity is kept
    token = {
        f"sha256:{hashlib.sha256(p.read_bytes()).hexdigest()[:16]}": p.name
        for p in inputs.rglob("*.png")
    }
    named = sorted(sorted(token[s] for s in r["source"]) for r in records.values())
    assert named == sorted(GOOD_SOURCES)
    for key, record in records.items():
        assert tuple(record) == RECORD_KEYS
        assert record["status"] == "ok" and record["key"] == key and record["error"] is None
        assert record["bsi"] >= 0 and 0 <= record["bstbi"] <= 1
        scan_dir = out / "scans" / key
        for name in ("predictions.json", "labelmap.png", "overlay.png", "report.html",
                     f"{key}.png", f"{key}.json"):  # fmt: skip
            assert (scan_dir / name).is_file(), name
        assert not [p for p in scan_dir.iterdir() if ".tmp-" in p.name]
        labels = np.asarray(Image.open(scan_dir / "labelmap.png"))
        assert labels.shape == (950, 512) and labels.dtype == np.uint8
        predictions = json.loads((scan_dir / "predictions.json").read_text())
        assert predictions["instances"], "the random model returns detections at 0.05"
        kept = [i for i in predictions["instances"] if i["kept"]]
        assert len(kept) == sum(1 for i in predictions["instances"] if i["score"] >= SCORE)
        # the Labelme file opens in the project's own Labelme reader, one group per instance
        from bsi_d2.io.labelme import labelme_instances, load_labelme

        labelme = load_labelme(scan_dir / f"{key}.json")
        instances, _ = labelme_instances(labelme, predictor.taxonomy)
        assert labelme.image_path == f"{key}.png" and labelme.image_data is None
        assert 0 < len(instances) <= len(kept)

    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    named_errors = _named(inputs)
    assert sorted(named_errors[e["path"]] for e in errors) == sorted(BAD_FILES)
    for e in errors:
        assert e["path"] in e["reason"], e  # the reason names the file, by its label
    summary = (out / "bsi_summary.csv").read_text().splitlines()
    assert len(summary) == 4 and summary[0].startswith(
        "key,study_key,patient_key,study_date,study_date_kind,status,bsi,bsi_coverage,bstbi"
    )
    index = (out / "index.html").read_text()
    assert all(f"scans/{k}/report.html" in index for k in records)
    # nothing written names the patient of the DICOM that was rejected
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".csv", ".html"):
            text = path.read_text()
            assert "Doe^Jane" not in text and "ID-123" not in text


def test_rerun_after_interruption_gives_the_same_outputs(inputs, first_run, predictor, tmp_path):
    out_ref, _ = first_run
    out = tmp_path / "out"
    shutil.copytree(out_ref, out)
    victim = sorted(_records(out))[1]
    scan_dir = out / "scans" / victim
    (scan_dir / "bsi.json").unlink()  # killed before the marker
    (scan_dir / "predictions.json").write_text('{"key": "trunc')  # half-written output
    (scan_dir / ".overlay.png.tmp-99999").write_bytes(b"\x89PNG partial")
    result = run_batch([inputs], out, predictor, predictor.taxonomy, _options(batch_size=1))
    assert result.done == [victim]
    assert sorted(result.skipped) == sorted(k for k in _records(out_ref) if k != victim)
    assert _records(out) == _records(out_ref)
    assert json.loads((scan_dir / "predictions.json").read_text()) == json.loads(
        (out_ref / "scans" / victim / "predictions.json").read_text()
    )
    assert not (scan_dir / ".overlay.png.tmp-99999").exists()
    assert (out / "errors.jsonl").read_text() == (out_ref / "errors.jsonl").read_text()


def test_failed_record_is_redone_and_renamed_inputs_are_recognised(
    inputs, first_run, predictor, tmp_path
):
    out_ref, _ = first_run
    out = tmp_path / "out"
    shutil.copytree(out_ref, out)
    victim = sorted(_records(out))[0]
    record = json.loads((out / "scans" / victim / "bsi.json").read_text())
    record.update(status="failed", error="predict: out of memory")
    (out / "scans" / victim / "bsi.json").write_text(json.dumps(record))
    moved = tmp_path / "renamed"
    shutil.copytree(inputs, moved)
    (moved / "merged_a.png").rename(moved / "scan_0001.png")
    result = run_batch([moved], out, predictor, predictor.taxonomy, _options(batch_size=1))
    assert result.done == [victim] and len(result.skipped) == 2
    assert _records(out)[victim]["status"] == "ok"


def test_shards_partition_the_inputs(inputs, first_run, predictor, tmp_path):
    out_ref, _ = first_run
    keys, error_paths = [], []
    for i in range(2):
        out = tmp_path / f"shard{i}"
        result = run_batch(
            [inputs], out, predictor, predictor.taxonomy, _options(batch_size=2, shard=(i, 2))
        )
        keys.append(set(result.done))
        error_paths.append({_named(inputs)[e["path"]] for e in result.errors})
    assert keys[0].isdisjoint(keys[1]) and keys[0] | keys[1] == set(_records(out_ref))
    assert error_paths[0].isdisjoint(error_paths[1])
    assert error_paths[0] | error_paths[1] == BAD_FILES


def test_content_key_ignores_names_and_order(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"first")
    b.write_bytes(b"second")
    key = content_key([a, b])
    a.rename(tmp_path / "z.png")
    assert content_key([b, tmp_path / "z.png"]) == key
    assert content_key([b]) != key
    assert content_key([b], salt="site-secret") != content_key([b])


def test_keep_identity_writes_file_paths(inputs, predictor, tmp_path):
    single = tmp_path / "one"
    single.mkdir()
    shutil.copy(inputs / "merged_a.png", single / "merged_a.png")
    out = tmp_path / "out"
    (single / "empty.png").write_bytes(b"")
    run_batch([single], out, predictor, predictor.taxonomy, _options(keep_identity=True))
    (record,) = _records(out).values()
    assert record["source"] == [str(single / "merged_a.png")]
    (error,) = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert error["path"] == str(single / "empty.png") and error["path"] in error["reason"]
