"""Limits before decoding: file sizes by stat, declared sizes from headers, bombs refused unread.

Every bomb here is small on disk and is made in the test; the ``no_decoding`` fixture fails the
test if any pixel data is decoded (or a deflated file inflated whole), so a regression fails
instead of allocating gigabytes.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, TiffImagePlugin
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset as write_elements
from pydicom.filewriter import write_file_meta_info
from pydicom.pixels.decoders.base import Decoder
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from bsi_d2.io.base import NotAScanError, ReaderError, ScanImage, SkippedInput
from bsi_d2.io.dicom import DicomReader
from bsi_d2.io.labelme import write_labelme
from bsi_d2.io.limits import DEFAULT_LIMITS, ReadLimits
from bsi_d2.io.readers import ImageReader, LabelmeReader, iter_scans, read_scan_file
from bsi_d2.phantom.dicom_writer import build_nm_dataset, write_dataset

MiB = 1 << 20
DETECTORS = [{"view_code": "anterior"}, {"view_code": "posterior"}]
ANT = np.random.default_rng(1).poisson(3.0, (256, 64)).astype(np.uint16)


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding pixels (DICOM, PNG, TIFF) or inflating a deflated DICOM whole fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        pytest.fail("pixel data was decoded: the limits were not checked from the header")

    for owner, name in (
        (Decoder, "as_array"),
        (Decoder, "iter_array"),
        (ImageFile.ImageFile, "load"),
        (TiffImagePlugin.TiffImageFile, "load"),
    ):
        monkeypatch.setattr(owner, name, refuse)
    monkeypatch.setattr(zlib, "decompress", refuse)  # pydicom inflates deflated files with it


# -- bombs, made small -----------------------------------------------------------------------------
def _deflated_zeros(n_bytes: int) -> bytes:
    """Raw deflate of ``n_bytes`` zeros, not final: one 16 MiB block compressed once, repeated."""
    block_size = 16 * MiB
    full, rest = divmod(n_bytes, block_size)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = packer.compress(bytes(block_size)) + packer.flush(zlib.Z_FULL_FLUSH)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return block * full + packer.compress(bytes(rest)) + packer.flush(zlib.Z_FULL_FLUSH)


def _deflated(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush(zlib.Z_FULL_FLUSH)


def _element(group: int, element: int, vr: bytes, length: int) -> bytes:
    return struct.pack("<HH2s2xI", group, element, vr, length)


def _deflated_bomb(
    path: Path, rows: int, cols: int, frames: int, pixel_bytes: int, padding_bytes: int = 0
) -> Path:
    """A Deflated Explicit VR Little Endian NM file inflating to ``pixel_bytes`` of pixels and
    ``padding_bytes`` of Data Set Trailing Padding, a few MB on disk."""
    ds = build_nm_dataset([np.zeros((2, 2))] * frames, detectors=DETECTORS[:frames])
    ds.Rows, ds.Columns = rows, cols
    del ds.PixelData
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta = DicomBytesIO()
    write_file_meta_info(meta, ds.file_meta)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_elements(body, ds)
    stream = _deflated(body.getvalue() + _element(0x7FE0, 0x0010, b"OW", pixel_bytes))
    stream += _deflated_zeros(pixel_bytes)
    if padding_bytes:
        stream += _deflated(_element(0xFFFC, 0xFFFC, b"OB", padding_bytes))
        stream += _deflated_zeros(padding_bytes)
    stream += zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS).flush()  # the final block
    path.write_bytes(bytes(128) + b"DICM" + meta.getvalue() + stream)
    return path


def _rle_zeros(rows: int, cols: int) -> bytes:
    """One RLE Lossless frame of 16-bit zeros: two segments of 128-byte runs (PS3.5 Annex G)."""
    segment = b"\x81\x00" * (rows * cols // 128)
    return struct.pack("<16I", 2, 64, 64 + len(segment), *([0] * 13)) + segment * 2


def _png(path: Path, rows: int, cols: int) -> Path:
    """A valid 8-bit grey PNG of zeros, compressed row by row without the image in memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    packer = zlib.compressobj(1)
    rows_per_step = max(1, MiB // (cols + 1))
    step = bytes((cols + 1) * rows_per_step)  # each row: filter byte 0, then the pixels
    parts = [packer.compress(step) for _ in range(rows // rows_per_step)]
    parts += [packer.compress(bytes((cols + 1) * (rows % rows_per_step))), packer.flush()]
    header = struct.pack(">IIBBBBB", cols, rows, 8, 0, 0, 0, 0)
    data = chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data)
    return path


def _tiff_header(path: Path, rows: int, cols: int) -> Path:
    """A 16-bit grey TIFF whose header declares rows x cols; its strip is never written."""
    tags = [(256, cols), (257, rows), (258, 16), (259, 1), (262, 1), (273, 8), (277, 1)]
    tags += [(278, rows), (279, rows * cols * 2)]
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", t, 4, 1, v) for t, v in tags)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0))
    return path


def _sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as handle:
        handle.truncate(size)  # no blocks on disk: the size is only what stat reports
    return path


# -- the limits themselves -------------------------------------------------------------------------
def test_default_limits_admit_every_real_whole_body_layout() -> None:
    for rows, cols, frames in ((1024, 256, 2), (1024, 512, 2), (2048, 1024, 4), (950, 512, 1)):
        assert DEFAULT_LIMITS.pixel_reason(rows, cols, frames) is None
    assert DEFAULT_LIMITS.file_size_reason(20 * MiB) is None
    assert "max_frames" in DEFAULT_LIMITS.pixel_reason(1024, 256, 5)
    assert "max_frame_pixels" in DEFAULT_LIMITS.pixel_reason(8192, 4096, 1)
    assert "max_total_pixels" in ReadLimits(max_frames=8).pixel_reason(4096, 4096, 8)
    assert ReadLimits() == DEFAULT_LIMITS


# -- file size, by stat --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("big.dcm", DEFAULT_LIMITS.max_file_bytes + 1),
        ("big.png", DEFAULT_LIMITS.max_file_bytes + 1),
        ("big.tif", DEFAULT_LIMITS.max_file_bytes + 1),
        ("big.json", DEFAULT_LIMITS.max_json_bytes + 1),
    ],
)
def test_oversized_files_are_refused_by_stat_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, size: int
) -> None:
    path = _sparse(tmp_path / name, size)
    original = {method: getattr(Path, method) for method in ("read_bytes", "read_text")}
    for method, function in original.items():

        def guarded(self: Path, *args: object, _function=function, **kwargs: object) -> object:
            if self == path:
                pytest.fail(f"{self.name} was read before its size was checked")
            return _function(self, *args, **kwargs)

        monkeypatch.setattr(Path, method, guarded)
    with pytest.raises(ReaderError, match=r"over the limit of .* MiB \(ReadLimits\.max_") as info:
        read_scan_file(path)
    assert str(path) in str(info.value)
    (skipped,) = list(iter_scans([path]))
    assert isinstance(skipped, SkippedInput) and skipped.kind == "error"
    assert "over the limit" in skipped.reason


# -- DICOM: declared size, from the header ---------------------------------------------------------
def test_deflated_dicom_declaring_gigabytes_is_refused_from_the_header(
    tmp_path: Path, no_decoding: None
) -> None:
    # 32768 x 32768 16-bit pixels: the dataset inflates to 2 GiB from a 2 MB file
    path = _deflated_bomb(tmp_path / "bomb.dcm", 32768, 32768, 1, pixel_bytes=2 << 30)
    assert path.stat().st_size < 4 * MiB
    with pytest.raises(ReaderError, match=r"32768 x 32768 .*over the limit") as info:
        read_scan_file(path)
    assert str(path) in str(info.value) and "max_frame_pixels" in str(info.value)


def test_deflated_dicom_inflating_beyond_its_header_is_refused(
    tmp_path: Path, no_decoding: None
) -> None:
    # a plausible 2 x 1024 x 256 scan header, then 2 GiB of trailing padding to inflate
    path = _deflated_bomb(
        tmp_path / "padded.dcm", 1024, 256, 2, pixel_bytes=1024 * 256 * 2 * 2, padding_bytes=2 << 30
    )
    with pytest.raises(ReaderError, match=r"inflates beyond .* its header declares") as info:
        read_scan_file(path)
    assert str(path) in str(info.value)


def test_deflated_scan_within_limits_still_reads(tmp_path: Path) -> None:
    ds = build_nm_dataset([ANT, ANT // 2], detectors=DETECTORS)
    block = ds.private_block(0x0009, "bsi_d2 test", create=True)
    block.add_new(0x10, "OB", bytes(300_000))  # a header longer than the first inflated chunk
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    (scan,) = read_scan_file(write_dataset(ds, tmp_path / "deflated.dcm"))
    np.testing.assert_array_equal(scan.views["anterior"], ANT)
    np.testing.assert_array_equal(scan.views["posterior"], ANT // 2)


def test_rle_dicom_declaring_huge_frames_is_refused_without_decoding(
    tmp_path: Path, no_decoding: None
) -> None:
    ds = build_nm_dataset([np.zeros((2, 2))] * 2, detectors=DETECTORS)
    ds.Rows, ds.Columns = 12288, 4096
    ds.PixelData = encapsulate([_rle_zeros(12288, 4096)] * 2)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = RLELossless
    path = write_dataset(ds, tmp_path / "rle.dcm")
    with pytest.raises(ReaderError, match=r"12288 x 4096 .*over the limit") as info:
        read_scan_file(path)
    assert str(path) in str(info.value) and "max_frame_pixels" in str(info.value)


def test_jpeg2000_frame_declaring_another_size_is_refused_without_decoding(
    tmp_path: Path, no_decoding: None
) -> None:
    ds = build_nm_dataset([ANT], attributes={"StartAngle": 180})
    path = write_dataset(ds, tmp_path / "j2k.dcm", JPEG2000Lossless)
    data = bytearray(path.read_bytes())
    siz = data.index(b"\xff\x4f\xff\x51")  # SOC, SIZ: Xsiz and Ysiz follow Lsiz and Rsiz
    data[siz + 8 : siz + 16] = struct.pack(">II", 40000, 40000)  # what the decoder would allocate
    path.write_bytes(bytes(data))
    with pytest.raises(ReaderError, match=r"codestream declares 40000 x 40000 .*256 x 64"):
        read_scan_file(path)


# -- PNG/TIFF: declared size, from the lazily opened image ----------------------------------------
@pytest.mark.parametrize(
    ("name", "make"),
    [
        # 84 MP: under Pillow's default guard (89 MP), so it was decoded and taken as a view
        ("strip_ant.png", lambda p: _png(p, 60000, 1400)),
        # 20 MP: between the frame limit and twice it, where Pillow only warns
        ("wide_ant.png", lambda p: _png(p, 5000, 4000)),
        # 900 MP: Pillow's own DecompressionBombError, which used to surface raw
        ("huge_ant.tif", lambda p: _tiff_header(p, 30000, 30000)),
    ],
)
def test_image_bombs_are_refused_before_decoding(
    tmp_path: Path, no_decoding: None, name: str, make
) -> None:
    path = make(tmp_path / name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ReaderError, match=r"over the limit of 16,777,216 pixels") as info:
            read_scan_file(path)
    assert str(path) in str(info.value) and "max_frame_pixels" in str(info.value)
    assert "DecompressionBomb" not in str(info.value)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_labelme_image_bomb_is_refused_with_a_clear_message(
    tmp_path: Path, no_decoding: None
) -> None:
    _png(tmp_path / "scan.png", 60000, 1400)
    path = write_labelme(tmp_path / "scan.json", "scan.png", 60000, 1400, [])
    with pytest.raises(ReaderError, match=r"over the limit of 16,777,216 pixels") as info:
        read_scan_file(path)
    assert "scan.png" in str(info.value) and "DecompressionBomb" not in str(info.value)


@pytest.mark.parametrize("kind", ["png", "dicom"])
def test_implausible_view_shapes_are_not_scans(
    tmp_path: Path, no_decoding: None, kind: str
) -> None:
    # within the pixel limits, but no whole-body view is 16000 rows, or 40 rows per column
    if kind == "png":
        path = _png(tmp_path / "strip_ant.png", 16000, 400)
    else:
        ds = build_nm_dataset([np.zeros((8192, 256))], attributes={"StartAngle": 180})
        path = write_dataset(ds, tmp_path / "strip.dcm")
    with pytest.raises(NotAScanError, match=r"a strip, not a whole-body view") as info:
        read_scan_file(path)
    assert str(path) in str(info.value)


# -- the limits argument ---------------------------------------------------------------------------
def test_limits_reach_every_reader_and_a_batch_goes_on(tmp_path: Path) -> None:
    scans, notes = tmp_path / "scans", tmp_path / "notes"
    dicom = write_dataset(build_nm_dataset([ANT, ANT], detectors=DETECTORS), scans / "wb.dcm")
    Image.fromarray(ANT).save(scans / "case_ant.png")
    merged = np.zeros((950, 512), np.uint16)
    notes.mkdir()
    Image.fromarray(merged).save(notes / "m.png")
    labelme = write_labelme(notes / "m.json", "m.png", 950, 512, [])
    tiny = ReadLimits(max_frame_pixels=1000)
    for reader, path in (
        (DicomReader(limits=tiny), dicom),
        (ImageReader(limits=tiny), scans / "case_ant.png"),
        (LabelmeReader(limits=tiny), labelme),
    ):
        with pytest.raises(ReaderError, match=r"max_frame_pixels") as info:
            reader.read(path)
        assert path.name in str(info.value)
    with pytest.raises(ReaderError, match=r"declares 2 frames, over the limit of 1"):
        read_scan_file(dicom, limits=ReadLimits(max_frames=1))
    with pytest.raises(ReaderError, match=r"max_json_bytes"):
        read_scan_file(labelme, limits=ReadLimits(max_json_bytes=10))
    items = list(iter_scans([scans], limits=ReadLimits(max_frames=1)))
    (skipped,) = [i for i in items if isinstance(i, SkippedInput)]
    assert skipped.path == str(dicom) and skipped.kind == "error"
    assert str(dicom) in skipped.reason and "max_frames" in skipped.reason
    assert [Path(s.sources[0]).name for s in items if isinstance(s, ScanImage)] == ["case_ant.png"]
