"""Reading whole-body scans from DICOM: the NEMA file, each layout and view rule, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from bsi_d2.io import gdcm_decode
from bsi_d2.io.base import NotAScanError, ReaderError
from bsi_d2.io.dicom import decode_counts
from bsi_d2.io.pseudonym import SALT_ENV, study_key
from bsi_d2.io.readers import read_scan_file
from bsi_d2.phantom.dicom_writer import ORIENTATION, build_nm_dataset, write_dataset
from bsi_d2.preprocess.merge import body_extent

NEMA = Path(__file__).parents[2].parent / "shared" / "data" / "nema-nm1" / "nema-nm1_j2kr.dcm"
needs_nema = pytest.mark.skipif(not NEMA.is_file(), reason=f"NEMA NM1 file not found at {NEMA}")


def _view(rows: int = 256, cols: int = 64, level: float = 4.0, seed: int = 0) -> np.ndarray:
    """A tall body-like count image: a bright column of 'bone' on Poisson background."""
    rng = np.random.default_rng(seed)
    lam = np.full((rows, cols), 0.5)
    lam[rows // 10 : rows * 9 // 10, cols // 3 : cols * 2 // 3] = level * 10
    return rng.poisson(lam).astype(np.uint16)


ANT, POST = _view(seed=1), _view(level=2.0, seed=2)


def _read_one(path: Path, **kwargs) -> object:
    scans = read_scan_file(path, **kwargs)
    assert len(scans) == 1
    return scans[0]


# -- the real scan --------------------------------------------------------------------------------
@needs_nema
def test_nema_decodes_with_known_statistics() -> None:
    scan = _read_one(NEMA)
    assert list(scan.views) == ["anterior"]
    counts = scan.views["anterior"]
    assert counts.shape == (1024, 256)
    assert counts.max() == 278 and np.median(counts) == 1 and counts.min() == 0
    assert np.percentile(counts, 99) == 92
    assert counts.sum() == 3596452  # the file's CountsAccumulated: lossless decode
    meta = scan.metadata
    assert meta["pixel_spacing_mm"] == [2.26, 2.26]
    assert meta["transfer_syntax"].startswith("JPEG 2000")
    assert meta["views"]["anterior"]["view_rule"] == "frame_order"  # ImageID WHOLE BODY_E: no view
    assert any("taken as anterior" in w for w in meta["warnings"])


@needs_nema
def test_nema_body_extent_is_plausible() -> None:
    counts = _read_one(NEMA).views["anterior"]
    top, bottom, left, right = body_extent(counts)
    assert top < 150  # head near the top
    assert 800 < bottom < 1000  # feet near the bottom
    assert bottom - top > 0.65 * 1024  # the figure spans most of the rows
    assert left < 40 and right > 200  # arms reach the sides of the 256 columns


@needs_nema
def test_nema_metadata_has_no_identity() -> None:
    meta = _read_one(NEMA).metadata
    text = repr(meta)
    for secret in ("CompressedSamples", "8NM1", "BERRA", "St. John", "20040826", "19970806"):
        assert secret not in text
    kept = _read_one(NEMA, keep_identity=True).metadata["identity"]
    assert kept["PatientName"] == "CompressedSamples^NM1" and kept["PatientID"] == "8NM1"


# -- view rules -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("detectors", "rule"),
    [
        ([{"view_code": "posterior"}, {"view_code": "anterior"}], "view_code"),
        ([{"view_code": "Posterior"}, {"view_code": "Anterior"}], "view_code"),
        ([{"view_code": "LT POST RT"}, {"view_code": "RT ANT LT"}], "view_code"),  # vendor text
        ([{"orientation": "posterior"}, {"orientation": "anterior"}], "orientation"),
        ([{"start_angle": 0.0}, {"start_angle": 180.0}], "start_angle"),
        # view code outranks a contradicting angle
        ([{"view_code": "posterior", "start_angle": 180}, {"view_code": "anterior"}], "view_code"),
    ],
)
def test_two_frame_views_follow_the_rule_not_the_order(
    tmp_path: Path, detectors: list, rule: str
) -> None:
    path = write_dataset(build_nm_dataset([POST, ANT], detectors=detectors), tmp_path / "wb.dcm")
    scan = _read_one(path)
    np.testing.assert_array_equal(scan.views["anterior"], ANT)
    np.testing.assert_array_equal(scan.views["posterior"], POST)
    assert {v["view_rule"] for v in scan.metadata["views"].values()} == {rule}
    assert scan.metadata["views"]["posterior"]["frame"] == 0
    if any("start_angle" in d and "view_code" in d for d in detectors):
        # before: the contradiction was resolved without a word
        assert scan.metadata["warnings"] == [
            "frame 1: view_code says posterior but start_angle says anterior; view_code was "
            "used (it ranks first); check the file"
        ]
    else:
        assert scan.metadata["warnings"] == []


@pytest.mark.parametrize(
    ("attributes", "view", "rule"),
    [
        ({"StartAngle": 180}, "anterior", "start_angle"),
        ({"StartAngle": 0}, "posterior", "start_angle"),
        ({"StartAngle": 355, "ImageID": "WB ANT"}, "posterior", "start_angle"),
        ({"ImageOrientationPatient": ORIENTATION["posterior"]}, "posterior", "orientation"),
        ({"ViewPosition": "POSTERIOR"}, "posterior", "view_position"),
        ({"ImageID": "WHOLE BODY_POST"}, "posterior", "image_id"),
        (
            {"ImageID": "WHOLE BODY_E", "SeriesDescription": "WB Ant"},
            "anterior",
            "series_description",
        ),
        ({"SeriesDescription": "Whole body ANT/POST"}, "anterior", "frame_order"),  # ambiguous
    ],
)
def test_one_view_file_without_detector_sequence(
    tmp_path: Path, attributes: dict, view: str, rule: str
) -> None:
    ds = build_nm_dataset([ANT], detectors=None, attributes=attributes)
    scan = _read_one(write_dataset(ds, tmp_path / "one.dcm"))
    assert list(scan.views) == [view]
    assert scan.metadata["views"][view]["view_rule"] == rule
    assert scan.pairing is not None  # waits for its partner in iter_scans
    assert bool(scan.metadata["warnings"]) == (rule == "frame_order")


def test_frame_order_fallback_warns(tmp_path: Path) -> None:
    path = write_dataset(build_nm_dataset([ANT, POST], detectors=[{}, {}]), tmp_path / "x.dcm")
    scan = _read_one(path)
    np.testing.assert_array_equal(scan.views["anterior"], ANT)
    assert {v["view_rule"] for v in scan.metadata["views"].values()} == {"frame_order"}
    assert any("frame order" in w for w in scan.metadata["warnings"])


def test_conflicting_views_fall_back_to_frame_order(tmp_path: Path) -> None:
    detectors = [{"view_code": "anterior"}, {"view_code": "anterior"}]
    scan = _read_one(
        write_dataset(build_nm_dataset([ANT, POST], detectors=detectors), tmp_path / "c.dcm")
    )
    assert scan.metadata["views"]["posterior"]["view_rule"] == "frame_order"
    assert any("both anterior" in w for w in scan.metadata["warnings"])


def test_one_known_frame_implies_the_other(tmp_path: Path) -> None:
    detectors = [{}, {"start_angle": 180}]
    scan = _read_one(
        write_dataset(build_nm_dataset([POST, ANT], detectors=detectors), tmp_path / "k.dcm")
    )
    np.testing.assert_array_equal(scan.views["posterior"], POST)
    assert scan.metadata["views"]["posterior"]["view_rule"] == "complement"


def test_energy_windows_keep_the_first_windows_frames(tmp_path: Path) -> None:
    frames = [ANT, POST, ANT // 2, POST // 2]
    ds = build_nm_dataset(frames, detectors=[{"view_code": "anterior"}, {"view_code": "posterior"}])
    ds.DetectorVector, ds.EnergyWindowVector = [1, 2, 1, 2], [1, 1, 2, 2]
    ds.NumberOfEnergyWindows = 2
    scan = _read_one(write_dataset(ds, tmp_path / "ew.dcm"))
    np.testing.assert_array_equal(scan.views["anterior"], ANT)
    np.testing.assert_array_equal(scan.views["posterior"], POST)


# -- layouts and encodings ------------------------------------------------------------------------
@pytest.mark.parametrize("syntax", [None, RLELossless, JPEG2000Lossless])
def test_compressed_syntaxes_decode_losslessly(tmp_path: Path, syntax: str | None) -> None:
    ds = build_nm_dataset(
        [ANT, POST], detectors=[{"view_code": "anterior"}, {"view_code": "posterior"}]
    )
    path = write_dataset(ds, tmp_path / "z.dcm", syntax)
    if syntax is not None:
        assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    scan = _read_one(path)
    np.testing.assert_array_equal(scan.views["anterior"], ANT)
    np.testing.assert_array_equal(scan.views["posterior"], POST)


def _pydicom_test_file(name: str) -> Path:
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name)
    if found is None:
        pytest.skip(f"pydicom test file {name} not installed")
    return Path(found)


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
    ],
)
def test_real_files_in_other_syntaxes_decode_like_the_uncompressed_one(name: str) -> None:
    reference = _pydicom_test_file("MR_small.dcm")
    path = _pydicom_test_file(name)
    expected = decode_counts(pydicom.dcmread(reference), reference)
    np.testing.assert_array_equal(decode_counts(pydicom.dcmread(path), path), expected)


def test_real_ct_file_is_not_a_scan() -> None:
    path = _pydicom_test_file("CT_small.dcm")
    with pytest.raises(NotAScanError, match="modality CT"):
        read_scan_file(path)


def test_1024x512_matrix_and_secondary_capture(tmp_path: Path) -> None:
    wide = _view(rows=1024, cols=512, seed=3)
    ds = build_nm_dataset(
        [wide], sop_class="1.2.840.10008.5.1.4.1.1.7", attributes={"ImageID": "WB ANT"}
    )
    scan = _read_one(write_dataset(ds, tmp_path / "sc.dcm"))
    assert scan.views["anterior"].shape == (1024, 512)
    assert scan.metadata["sop_class"] == "Secondary Capture Image Storage"


def test_rescale_slope_is_applied(tmp_path: Path) -> None:
    ds = build_nm_dataset(
        [ANT], attributes={"RescaleSlope": 2, "RescaleIntercept": 0, "StartAngle": 180}
    )
    scan = _read_one(write_dataset(ds, tmp_path / "r.dcm"))
    np.testing.assert_array_equal(scan.views["anterior"], ANT.astype(np.float32) * 2)


# -- not whole-body scans -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {"frames": [np.ones((256, 256))], "image_type": ("ORIGINAL", "PRIMARY", "STATIC")},
            "static",
        ),
        ({"frames": [np.ones((256, 256))]}, "256 x 256 matrix"),
        (
            {"frames": [np.ones((128, 128))] * 4, "image_type": ("ORIGINAL", "PRIMARY", "TOMO")},
            "tomo",
        ),
        ({"frames": [np.ones((512, 512))], "modality": "CT"}, "modality CT"),
    ],
)
def test_non_whole_body_files_are_not_scans(tmp_path: Path, kwargs: dict, expected: str) -> None:
    path = write_dataset(build_nm_dataset(**kwargs), tmp_path / "n.dcm")
    with pytest.raises(NotAScanError, match=expected) as info:
        read_scan_file(path)
    assert str(path) in str(info.value)


def test_colour_screen_capture_is_not_a_scan(tmp_path: Path) -> None:
    ds = build_nm_dataset([ANT], attributes={"StartAngle": 180})
    rgb = np.zeros((256, 64, 3), np.uint8)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = rgb.tobytes()
    with pytest.raises(NotAScanError, match="screen capture"):
        read_scan_file(write_dataset(ds, tmp_path / "rgb.dcm"))


# -- broken files ---------------------------------------------------------------------------------
def _truncated(tmp_path: Path) -> Path:
    path = write_dataset(
        build_nm_dataset([ANT], attributes={"StartAngle": 180}), tmp_path / "t.dcm"
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - ANT.nbytes // 2])
    return path


def _not_dicom(tmp_path: Path) -> Path:
    path = tmp_path / "notes.dcm"
    path.write_text("this is a text file, not DICOM\n" * 20)
    return path


def _no_pixels(tmp_path: Path) -> Path:
    ds = build_nm_dataset([ANT], attributes={"StartAngle": 180})
    del ds.PixelData
    return write_dataset(ds, tmp_path / "nopix.dcm")


def _part2_jpeg2000(tmp_path: Path) -> Path:
    ds = build_nm_dataset([ANT], attributes={"StartAngle": 180})
    ds.PixelData = encapsulate([ANT.tobytes()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.92"
    return write_dataset(ds, tmp_path / "part2.dcm")


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.dcm"
    path.write_bytes(b"")
    return path


BROKEN = {
    "truncated": (_truncated, "truncated or corrupt"),
    "not_dicom": (_not_dicom, "not a DICOM file"),
    "no_pixels": (_no_pixels, r"no pixel data"),
    "undecodable": (_part2_jpeg2000, r"JPEG 2000 Part 2.*1\.2\.840\.10008\.1\.2\.4\.92.*install"),
    "empty": (_empty, "empty file"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_files_raise_clear_errors(tmp_path: Path, case: str) -> None:
    make, pattern = BROKEN[case]
    path = make(tmp_path)
    with pytest.raises(ReaderError, match=pattern) as info:
        read_scan_file(path)
    assert str(path) in str(info.value)
    assert not isinstance(info.value, NotAScanError)


# -- pseudonyms -----------------------------------------------------------------------------------
def test_study_key_is_stable_salted_and_identity_free(tmp_path: Path, monkeypatch) -> None:
    ds = build_nm_dataset([ANT], attributes={"StartAngle": 180}, study_uid="1.2.3.4")
    path = write_dataset(ds, tmp_path / "k.dcm")
    monkeypatch.delenv(SALT_ENV, raising=False)
    key = _read_one(path).key
    assert key == _read_one(path).key == study_key("1.2.3.4")
    assert "1.2.3.4" not in key
    assert _read_one(path, salt="site-secret").key != key
    monkeypatch.setenv(SALT_ENV, "site-secret")
    assert _read_one(path).key == _read_one(path, salt="site-secret").key


# -- counts sanity --------------------------------------------------------------------------------
def _bits(frame: np.ndarray, stored: int, high: int | None = None, signed: bool = False) -> object:
    ds = build_nm_dataset([frame], attributes={"StartAngle": 180})
    ds.BitsStored, ds.HighBit = stored, stored - 1 if high is None else high
    if signed:
        ds.PixelRepresentation = 1
        ds.PixelData = frame.astype(np.int16).tobytes()
    return ds


def _hot(value: int) -> np.ndarray:
    frame = ANT.astype(np.int32)
    frame[100, 30] = value  # the hottest pixel: a bladder or a lesion
    return frame


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        # pydicom masks to BitsStored: 1000 used to read as 232, cutting the hottest pixels
        (lambda: _bits(_hot(1000).astype(np.uint16), 8), r"values up to 1000 .*BitsStored 8"),
        (lambda: _bits(_hot(-3000), 12, signed=True), r"values down to -3000 .*BitsStored 12"),
        (lambda: _bits(ANT, 12, high=15), r"HighBit 15 .*BitsStored 12"),
        (lambda: _bits(ANT, 17), r"BitsStored 17 .*BitsAllocated 16"),
        (lambda: _bits(_hot(-5), 16, signed=True), r"negative counts.*-5.*PixelRepresentation"),
        (
            lambda: build_nm_dataset([ANT], attributes={"RescaleSlope": -1, "StartAngle": 180}),
            r"negative counts.*RescaleSlope -1",
        ),
    ],
)
def test_counts_outside_the_declared_range_are_refused(tmp_path: Path, make, pattern: str) -> None:
    path = write_dataset(make(), tmp_path / "bad_counts.dcm")
    with pytest.raises(ReaderError, match=pattern) as info:
        read_scan_file(path)
    assert str(path) in str(info.value)
    assert not isinstance(info.value, NotAScanError)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: _bits(ANT, 12), ANT),  # 12 of 16 bits, values within them
        (lambda: _bits(_hot(4095).astype(np.uint16), 12), _hot(4095)),
        (lambda: _bits(ANT, 16, signed=True), ANT),  # signed, as the NEMA file is
        (
            lambda: build_nm_dataset(
                [ANT], attributes={"RescaleIntercept": 5, "RescaleSlope": 1, "StartAngle": 180}
            ),
            ANT.astype(np.float32) + 5,
        ),
    ],
)
def test_counts_within_the_declared_range_read_unchanged(
    tmp_path: Path, make, expected: np.ndarray
) -> None:
    scan = _read_one(write_dataset(make(), tmp_path / "good.dcm"))
    np.testing.assert_array_equal(scan.views["anterior"], expected.astype(np.float32))


def _float_pixels(frame: np.ndarray, keyword: str = "FloatPixelData") -> object:
    ds = build_nm_dataset([np.zeros(frame.shape)], attributes={"StartAngle": 180})
    del ds.PixelData, ds.BitsStored, ds.HighBit, ds.PixelRepresentation
    dtype = np.float32 if keyword == "FloatPixelData" else np.float64
    ds.BitsAllocated = 8 * np.dtype(dtype).itemsize
    setattr(ds, keyword, frame.astype(dtype).tobytes())
    return ds


@pytest.mark.parametrize("keyword", ["FloatPixelData", "DoubleFloatPixelData"])
def test_float_pixel_data_reads_as_counts(tmp_path: Path, keyword: str) -> None:
    counts = ANT.astype(np.float32) * 0.5
    scan = _read_one(write_dataset(_float_pixels(counts, keyword), tmp_path / "float.dcm"))
    np.testing.assert_array_equal(scan.views["anterior"], counts)


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        (np.nan, r"FloatPixelData .*1 NaN or infinite value"),
        (np.inf, r"FloatPixelData .*1 NaN or infinite value"),
        (-2.0, r"negative counts.*-2"),
    ],
)
def test_float_pixel_data_that_is_not_counts_is_refused(
    tmp_path: Path, value: float, pattern: str
) -> None:
    counts = ANT.astype(np.float32)
    counts[50, 20] = value
    path = write_dataset(_float_pixels(counts), tmp_path / "float.dcm")
    with pytest.raises(ReaderError, match=pattern) as info:
        read_scan_file(path)
    assert str(path) in str(info.value) and "no pixel data" not in str(info.value)


# -- truncated, header-less and undecodable files ---------------------------------------------
def _jpeg_ls_frame(rows: int, cols: int) -> bytes:
    """A JPEG-LS codestream start (SOI, SOF55 of rows x cols) and scan bytes, no end marker."""
    sof = (
        b"\xff\xf7\x00\x0b\x10"
        + rows.to_bytes(2, "big")
        + cols.to_bytes(2, "big")
        + b"\x01\x01\x11\x00"
    )
    return b"\xff\xd8" + sof + b"\xff\xda\x00\x08\x01\x01\x00\x00\x00\x00" + bytes(range(256)) * 8


def _compressed(tmp_path: Path, syntax: str) -> Path:
    ds = build_nm_dataset([ANT], attributes={"StartAngle": 180})
    if syntax == JPEG2000Lossless:
        return write_dataset(ds, tmp_path / "c.dcm", syntax)
    ds.PixelData = encapsulate([_jpeg_ls_frame(*ANT.shape)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = syntax
    return write_dataset(ds, tmp_path / "c.dcm")


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, JPEGLSLossless])
def test_truncated_compressed_pixel_data_is_reported_as_truncated(
    tmp_path: Path, syntax: str
) -> None:
    # before: pydicom dropped the whole dataset at the missing delimiter: "modality (missing)"
    path = _compressed(tmp_path, syntax)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 500])
    with pytest.raises(ReaderError, match="truncated or corrupt compressed pixel data") as info:
        read_scan_file(path)
    assert syntax in str(info.value) and not isinstance(info.value, NotAScanError)


def test_file_cut_inside_the_header_is_truncated(tmp_path: Path) -> None:
    # before: pydicom kept the elements before the cut: "no pixel data in the file"
    path = write_dataset(
        build_nm_dataset([ANT], attributes={"StartAngle": 180}), tmp_path / "h.dcm"
    )
    data = path.read_bytes()
    uid = data.index(b"1.2.826")  # a UID value in the dataset (after the file meta)
    uid = data.index(b"1.2.826", uid + 200)
    path.write_bytes(data[: uid + 5])
    with pytest.raises(ReaderError, match="truncated: the file ends inside") as info:
        read_scan_file(path)
    assert not isinstance(info.value, NotAScanError)


def test_file_without_part10_header_reads_with_a_warning(tmp_path: Path) -> None:
    # before: "not a DICOM file (... Use force=True ...)"
    ds = build_nm_dataset([ANT], attributes={"StartAngle": 180})
    del ds.file_meta
    path = tmp_path / "raw.dcm"
    ds.save_as(path, implicit_vr=True, little_endian=True)
    assert path.read_bytes()[128:132] != b"DICM"
    scan = _read_one(path)
    np.testing.assert_array_equal(scan.views["anterior"], ANT)
    assert "no DICOM file header (read with force)" in scan.metadata["warnings"]


def test_non_dicom_bytes_are_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.dcm"
    path.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(ReaderError, match="not a DICOM file") as info:
        read_scan_file(path)
    assert str(path) in str(info.value)


def _jpeg_extended_12bit(tmp_path: Path) -> Path:
    ds = build_nm_dataset([ANT], attributes={"StartAngle": 180})
    ds.BitsStored, ds.HighBit = 12, 11
    ds.PixelData = encapsulate([b"\x00\x01garbage, not a JPEG codestream" * 8])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.51"
    return write_dataset(ds, tmp_path / "jply.dcm")


def test_jpeg_extended_12bit_without_gdcm_names_the_decoder_limit(tmp_path: Path, monkeypatch):
    # before: only "could not be decoded, truncated or corrupt"
    monkeypatch.setattr(gdcm_decode, "gdcm_available", lambda: False)
    with pytest.raises(ReaderError, match=r"12 bits stored: .*bsi_d2\[gdcm\]") as info:
        read_scan_file(_jpeg_extended_12bit(tmp_path))
    assert "jply.dcm" in str(info.value)


# pydicom's copy of GDCM's test scan: a whole-body NM image, JPEG Extended, 12 bits stored
JPEG_LOSSY = Path(pydicom.__file__).parent / "data" / "test_files" / "JPEG-lossy.dcm"
needs_gdcm = pytest.mark.skipif(
    not gdcm_decode.gdcm_available(), reason="python-gdcm absent (pip install 'bsi_d2[gdcm]')"
)


@needs_gdcm
def test_jpeg_extended_12bit_decodes_through_gdcm() -> None:
    # before: "could not be decoded, truncated or corrupt" for a valid file
    ds = pydicom.dcmread(JPEG_LOSSY)
    assert (ds.file_meta.TransferSyntaxUID, ds.BitsStored) == ("1.2.840.10008.1.2.4.51", 12)
    with pytest.raises(Exception, match="12-bit"):
        ds.pixel_array  # noqa: B018 - pydicom alone cannot
    counts = decode_counts(ds, JPEG_LOSSY)
    assert counts.shape == (1, 1024, 256)
    assert counts[0, 420, 140] == 244  # the value pydicom's own GDCM tests expect
    assert 0 <= counts.min() and counts.max() < 4096


@needs_gdcm
def test_pydicom_never_runs_gdcm_in_this_process(tmp_path: Path) -> None:
    from pydicom.pixels import get_decoder

    decode_counts(pydicom.dcmread(_compressed(tmp_path, JPEG2000Lossless)), tmp_path / "x.dcm")
    assert "gdcm" not in get_decoder(JPEG2000Lossless).available_plugins


@needs_gdcm
def test_corrupt_jpeg_extended_12bit_is_reported_and_the_next_file_decodes(tmp_path: Path):
    # in one process GDCM crashed on the file after a 12-bit decode; each file has its child
    ds = pydicom.dcmread(JPEG_LOSSY)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[:600] + bytes(3000) + frame[3600:]])
    path = write_dataset(ds, tmp_path / "corrupt.dcm")
    good = decode_counts(pydicom.dcmread(JPEG_LOSSY), JPEG_LOSSY)
    with pytest.raises(ReaderError, match="could not be decoded by GDCM") as info:
        decode_counts(pydicom.dcmread(path), path)
    assert "corrupt.dcm" in str(info.value)
    np.testing.assert_array_equal(decode_counts(pydicom.dcmread(JPEG_LOSSY), JPEG_LOSSY), good)


def test_decoder_tracebacks_are_not_printed(tmp_path: Path, capsys, caplog) -> None:
    # before: pydicom logged each plugin's traceback (ERROR pydicom.pixels.decoders.base)
    path = _compressed(tmp_path, JPEG2000Lossless)
    ds = pydicom.dcmread(path)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[:200] + bytes(64) + frame[200 : len(frame) // 2]])
    ds.save_as(path)
    with caplog.at_level("WARNING"), pytest.raises(ReaderError, match="corrupt"):
        read_scan_file(path)
    assert "Traceback" not in capsys.readouterr().err
    assert not [r for r in caplog.records if r.levelno >= 30]
