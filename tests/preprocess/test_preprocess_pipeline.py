"""preprocess_scan on the NEMA scan and synthetic inputs, and `bsi-d2 preprocess` end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers.paths import NEMA
from PIL import Image

from bsi_d2.cli import main as cli_main
from bsi_d2.io.labelme import labelme_image, load_labelme
from bsi_d2.io.pseudonym import input_label
from bsi_d2.io.readers import ScanImage, read_scan_file
from bsi_d2.phantom.dicom_writer import build_nm_dataset, write_dataset
from bsi_d2.preprocess.pipeline import REPORT_NAME, counts_to_uint16, preprocess_scan

IDENTITY = ("Synthetic^Phantom", "PHANTOM-0", "19451231")  # name, ID, birth date in the files


def _view(rows: int = 256, cols: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lam = np.full((rows, cols), 0.5)
    lam[rows // 10 : rows * 9 // 10, cols // 3 : cols * 2 // 3] = 30.0
    return rng.poisson(lam).astype(np.uint16)


def test_nema_preprocesses_to_950x256_per_view(nema_path: Path) -> None:
    (scan,) = read_scan_file(nema_path)
    prepared = preprocess_scan(scan)
    assert prepared.counts.shape == (950, 512) and prepared.counts.dtype == np.float32
    assert prepared.display.shape == (950, 512) and prepared.display.dtype == np.uint8
    (placement,) = prepared.placements
    assert placement.view == "anterior" and placement.source_shape == (1024, 256)
    info = prepared.metadata["preprocess"]
    assert info["empty_views"] == ["posterior"] and info["views_present"] == ["anterior"]
    assert not prepared.counts[:, 256:].any()
    # the whole figure fits: every count of the 1024 x 256 view is in its 950 x 256 half
    assert prepared.counts[:, :256].sum() == scan.views["anterior"].sum() == 3596452
    assert prepared.counts.max() == 278
    assert 7 < prepared.display[:, :256].mean() < 14
    rows, cols = np.nonzero(prepared.counts[:, :256] > 0)
    src_r, src_c = placement.to_source(rows, cols)
    np.testing.assert_array_equal(scan.views["anterior"][src_r, src_c], prepared.counts[rows, cols])


def test_two_views_and_cut_below_knee() -> None:
    scan = ScanImage("k", ["a"], {"anterior": _view(seed=1), "posterior": _view(seed=2)})
    prepared = preprocess_scan(scan, cut_below_knee=True)
    assert [p.view for p in prepared.placements] == ["anterior", "posterior"]
    assert prepared.metadata["preprocess"]["empty_views"] == []
    assert not prepared.counts[640:].any() and prepared.counts[:640].any()
    assert 7 < prepared.display.mean() < 14


def test_merged_8bit_display_is_kept_16bit_is_normalised() -> None:
    rng = np.random.default_rng(3)
    display8 = rng.integers(0, 22, (950, 512)).astype(np.float32)  # mean ~10.5: already normalised
    kept = preprocess_scan(ScanImage("k8", ["x.png"], {}, display8, {"bit_depth": 8}))
    np.testing.assert_array_equal(kept.display, display8)
    np.testing.assert_array_equal(kept.counts, display8)
    assert [p.col_offset for p in kept.placements] == [0, 256]
    counts16 = rng.poisson(80, (950, 512)).astype(np.float32)
    norm = preprocess_scan(ScanImage("k16", ["y.png"], {}, counts16, {"bit_depth": 16}))
    np.testing.assert_array_equal(norm.counts, counts16)
    assert 7 < norm.display.mean() < 14 and not np.array_equal(norm.display, counts16)
    with pytest.raises(ValueError, match="not"):
        preprocess_scan(ScanImage("bad", ["z"], {}, np.zeros((10, 10)), {}))


def test_counts_png_values_are_rounded_and_clipped() -> None:
    values, clipped = counts_to_uint16(np.array([70000.0, -1.0, 3.6, 65535.0]))
    np.testing.assert_array_equal(values, [65535, 0, 4, 65535])
    assert values.dtype == np.uint16 and clipped == 2


# -- the command, end to end ----------------------------------------------------------------------
def _mixed_folder(root: Path) -> dict[str, str]:
    """A folder as exported from a PACS: good scans mixed with things to skip. Returns
    file name -> the words its skip reason must contain."""
    ident = {"PatientName": IDENTITY[0], "PatientID": IDENTITY[1], "PatientBirthDate": IDENTITY[2]}
    ant, post = _view(seed=4), _view(seed=5)
    two = build_nm_dataset(
        [ant, post],
        detectors=[{"view_code": "anterior"}, {"view_code": "posterior"}],
        attributes=ident,
    )
    write_dataset(two, root / "study1" / "wb.dcm")
    for view, frame, number in (("ANT", ant, 1), ("POST", post, 2)):
        one = build_nm_dataset(
            [frame],
            study_uid="1.2.826.0.1.99",
            series_uid="1.2.826.0.1.99.1",
            attributes={**ident, "ImageID": f"WHOLE BODY_{view}", "InstanceNumber": number},
        )
        write_dataset(one, root / "study2" / f"IM{number:04d}")  # no suffix, as PACS exports
    if NEMA.is_file():
        shutil.copy(NEMA, root / "nema.dcm")
    skips = {}
    spot = build_nm_dataset([np.ones((256, 256))], attributes=ident)
    write_dataset(spot, root / "spot.dcm")
    skips["spot.dcm"] = "256 x 256"
    ct = build_nm_dataset([np.ones((64, 64))], modality="CT", attributes=ident)
    write_dataset(ct, root / "ct.dcm")
    skips["ct.dcm"] = "modality CT"
    nopix = build_nm_dataset([ant], attributes={**ident, "StartAngle": 180})
    del nopix.PixelData
    write_dataset(nopix, root / "nopix.dcm")
    skips["nopix.dcm"] = "no pixel data"
    full = write_dataset(build_nm_dataset([ant], attributes=ident), root / "cut.dcm")
    full.write_bytes(full.read_bytes()[:-5000])
    skips["cut.dcm"] = "truncated"
    (root / "fake.dcm").write_text("not dicom at all")
    skips["fake.dcm"] = "not a DICOM file"
    (root / "empty.dcm").write_bytes(b"")
    skips["empty.dcm"] = "empty file"
    (root / "notes.txt").write_text("exported by the PACS")
    skips["notes.txt"] = "not a DICOM, PNG, TIFF"
    from pydicom.encaps import encapsulate

    part2 = build_nm_dataset([ant], attributes={**ident, "StartAngle": 180})
    part2.PixelData = encapsulate([ant.tobytes()])
    part2["PixelData"].VR = "OB"
    part2.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.92"
    write_dataset(part2, root / "part2.dcm")
    skips["part2.dcm"] = "1.2.840.10008.1.2.4.92"
    return skips


def test_preprocess_command_on_a_mixed_folder(tmp_path: Path, capsys) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    skips = _mixed_folder(inputs)
    rc = cli_main(["preprocess", str(inputs), "--out", str(out), "--labelme", "--no-progress"])
    assert rc == 0
    report = json.loads((out / REPORT_NAME).read_text())
    expected_scans = 3 if NEMA.is_file() else 2
    assert report["summary"]["scans_written"] == expected_scans
    # files are named by their labels, not their names (those may be identity)
    label = {p.name: input_label(p, [inputs]) for p in inputs.rglob("*") if p.is_file()}
    name_of = {v: k for k, v in label.items()}
    skipped = {name_of[s["path"]]: s for s in report["skipped"]}
    assert set(skipped) == set(skips)
    for name, words in skips.items():
        assert words in skipped[name]["reason"], (name, skipped[name]["reason"])
        assert skipped[name]["reason"].startswith(label[name] + ": ")
    assert skipped["spot.dcm"]["kind"] == skipped["ct.dcm"]["kind"] == "not_a_scan"
    assert skipped["cut.dcm"]["kind"] == "error"
    # broken inputs beside good scans: exit 0, but 1 under --strict
    flags = ["--no-progress", "--strict"]
    strict = ["preprocess", str(inputs), "--out", str(tmp_path / "strict"), *flags]
    assert cli_main(strict) == 1
    console = capsys.readouterr().out
    assert f"wrote {expected_scans} scan(s)" in console and label["part2.dcm"] in console

    for entry in report["scans"]:
        key = entry["key"]
        display = np.asarray(Image.open(out / f"{key}.png"))
        counts = np.asarray(Image.open(out / f"{key}.counts.png"))
        assert display.shape == counts.shape == (950, 512)
        assert display.dtype == np.uint8 and counts.dtype == np.uint16
        meta = json.loads((out / f"{key}.meta.json").read_text())
        assert meta["key"] == key and "placements" in meta["preprocess"]
        assert all("view_rule" in v for v in meta["views"].values())
        labelme = load_labelme(out / f"{key}.json")
        assert labelme.shapes == [] and (labelme.height, labelme.width) == (950, 512)
        image = labelme_image(labelme)
        assert (
            image.source == out / f"{key}.png" and image.counts_source == out / f"{key}.counts.png"
        )
    paired = [e for e in report["scans"] if e["source_count"] == 2]
    assert len(paired) == 1 and paired[0]["view_rules"] == {
        "anterior": "image_id",
        "posterior": "image_id",
    }
    assert not list(out.glob(".*tmp"))  # atomic writes leave no temporary files

    # no identity anywhere in what was written
    for path in out.iterdir():
        text = path.read_bytes()
        for secret in (*IDENTITY, "CompressedSamples", "8NM1", "BERRA"):
            assert secret.encode() not in text, (path.name, secret)


def test_keep_identity_writes_it_and_reruns_are_stable(tmp_path: Path) -> None:
    inputs, out = tmp_path / "in", tmp_path / "in" / "out"  # output inside the input
    ident = {"PatientName": IDENTITY[0], "PatientID": IDENTITY[1], "PatientBirthDate": IDENTITY[2]}
    ds = build_nm_dataset([_view(seed=6)], attributes={**ident, "StartAngle": 0})
    write_dataset(ds, inputs / "post.dcm")
    args = ["preprocess", str(inputs), "--out", str(out), "--no-progress", "--salt", "s1"]
    assert cli_main(args + ["--keep-identity"]) == 0
    (meta_path,) = out.glob("*.meta.json")
    meta = json.loads(meta_path.read_text())
    assert meta["identity"]["PatientName"] == IDENTITY[0]
    assert meta["sources"] == [str(inputs / "post.dcm")]
    assert meta["preprocess"]["empty_views"] == ["anterior"]
    assert cli_main(args) == 0  # rerun: the outputs inside the input are not read as scans
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["summary"] == {"scans_written": 1, "skipped": 0}
    assert list(out.glob("*.meta.json")) == [meta_path]
    assert IDENTITY[0] not in meta_path.read_text()
    assert cli_main(["preprocess", str(tmp_path / "nothing"), "--out", str(tmp_path / "o2")]) == 1


def test_an_output_folder_that_is_a_file_is_refused_in_one_line(tmp_path: Path, caplog) -> None:
    # before: a raw traceback
    out = tmp_path / "out"
    out.write_text("a file")
    assert cli_main(["preprocess", str(tmp_path), "--out", str(out), "--no-progress"]) == 2
    assert any("the output folder is a file" in r.getMessage() for r in caplog.records)


def test_two_runs_into_one_folder_never_overwrite_each_other(tmp_path: Path) -> None:
    # before: a second scan of a study was keyed <study>-2 by reading order, and a run with
    # only that scan wrote it as <study>, over the first run's other scan
    from bsi_d2.phantom.dicom_writer import build_nm_dataset, write_dataset

    rng = np.random.default_rng(4)
    frames = [rng.poisson(20, (1024, 256)).astype(np.uint16) for _ in range(2)]
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, seed in ((first, 1), (second, 2)):
        data = [f + seed for f in frames]
        ds = build_nm_dataset(
            data,
            detectors=[{"view_code": "anterior"}, {"view_code": "posterior"}],
            study_uid="1.2.826.0.1.99.7",
        )
        write_dataset(ds, folder / "wb.dcm")
    out = tmp_path / "out"
    assert cli_main(["preprocess", str(first), "--out", str(out), "--no-progress"]) == 0
    assert cli_main(["preprocess", str(second), "--out", str(out), "--no-progress"]) == 0
    metas = sorted(out.glob("*.meta.json"))
    assert len(metas) == 2  # both scans kept
    digests = {tuple(json.loads(m.read_text())["source_digests"]) for m in metas}
    assert len(digests) == 2
    # a rerun of the same files finds its own key again
    assert cli_main(["preprocess", str(second), "--out", str(out), "--no-progress"]) == 0
    assert len(list(out.glob("*.meta.json"))) == 2


def test_read_limits_from_the_command_line(tmp_path: Path) -> None:
    from bsi_d2.phantom.dicom_writer import build_nm_dataset, write_dataset

    frames = [np.full((1024, 256), 5, np.uint16)] * 2
    detectors = [{"view_code": "anterior"}, {"view_code": "posterior"}]
    write_dataset(build_nm_dataset(frames, detectors=detectors), tmp_path / "in" / "wb.dcm")
    out = tmp_path / "out"
    argv = ["preprocess", str(tmp_path / "in"), "--out", str(out), "--no-progress"]
    assert cli_main([*argv, "--max-file-mb", "0.1"]) == 1  # 1 MB file: nothing read
    (skip,) = json.loads((out / REPORT_NAME).read_text())["skipped"]
    assert "over the limit of" in skip["reason"] and "max_file_bytes" in skip["reason"]
    assert cli_main([*argv, "--max-frame-pixels", "1000"]) == 1
    (skip,) = json.loads((out / REPORT_NAME).read_text())["skipped"]
    assert "max_frame_pixels" in skip["reason"] and "not decoded" in skip["reason"]
    assert cli_main(argv) == 0  # the defaults read it
