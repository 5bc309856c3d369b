"""The reader interface: file-type registry, images, Labelme inputs, pairing and batch walking."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from bsi_d2.io.base import (
    READERS,
    NotAScanError,
    ReaderBase,
    ReaderError,
    ScanImage,
    SkippedInput,
    UnsupportedFileError,
    reader_suffixes,
    register_reader,
)
from bsi_d2.io.labelme import write_labelme
from bsi_d2.io.pseudonym import content_suffix
from bsi_d2.io.readers import iter_scans, read_scan_file, reader_for
from bsi_d2.phantom.dicom_writer import build_nm_dataset, write_dataset


def _view(rows: int = 256, cols: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lam = np.full((rows, cols), 0.5)
    lam[rows // 10 : rows * 9 // 10, cols // 3 : cols * 2 // 3] = 30.0
    return rng.poisson(lam).astype(np.uint16)


ANT, POST = _view(seed=1), _view(seed=2)


def _single(path: Path, frame: np.ndarray, study: str, series: str, number: int, **attrs) -> Path:
    attributes = {"InstanceNumber": number, **attrs}
    ds = build_nm_dataset([frame], study_uid=study, series_uid=series, attributes=attributes)
    return write_dataset(ds, path)


def _scans(items: list) -> list[ScanImage]:
    return [i for i in items if isinstance(i, ScanImage)]


def _skips(items: list) -> list[SkippedInput]:
    return [i for i in items if isinstance(i, SkippedInput)]


def test_reader_is_picked_by_suffix_then_preamble(tmp_path: Path) -> None:
    no_suffix = _single(tmp_path / "IM0001", ANT, "1.2.1", "1.2.1.1", 1, StartAngle=180)
    (tmp_path / "notes.txt").write_text("hello")
    assert reader_for(no_suffix) == "dicom"
    assert reader_for(tmp_path / "a.PNG") == "image"
    assert reader_for(tmp_path / "a.tiff") == "image"
    assert reader_for(tmp_path / "a.json") == "labelme"
    assert reader_for(tmp_path / "notes.txt") is None
    with pytest.raises(UnsupportedFileError, match="notes.txt"):
        read_scan_file(tmp_path / "notes.txt")
    assert list(read_scan_file(no_suffix)[0].views) == ["anterior"]


@pytest.fixture
def registry() -> Iterator[dict]:
    """The reader registry, restored after the test."""
    saved = dict(READERS)
    yield READERS
    READERS.clear()
    READERS.update(saved)


class _FakeReader(ReaderBase):
    name: ClassVar[str] = "fake"
    suffixes: ClassVar[tuple[str, ...]] = (".fake",)

    @classmethod
    def recognises(cls, head: bytes) -> bool:
        return head.startswith(b"FAKE")

    def read(self, path: str | Path) -> list[ScanImage]:
        return [ScanImage(f"fake-{self.salt}", [str(path)])]


def test_a_new_reader_is_one_registered_class(tmp_path: Path, registry: dict) -> None:
    assert list(registry) == ["dicom", "image", "labelme"]  # all registered by importing bsi_d2.io
    register_reader(_FakeReader)
    (tmp_path / "a.fake").write_text("anything")
    (tmp_path / "IM0002").write_bytes(b"FAKE scan")
    assert reader_for(tmp_path / "a.fake") == reader_for(tmp_path / "IM0002") == "fake"
    (scan,) = read_scan_file(tmp_path / "IM0002", salt="s")
    assert scan.key == "fake-s" and scan.sources == [str(tmp_path / "IM0002")]
    assert reader_suffixes()[".fake"] == "fake"

    class _Clash(_FakeReader):
        name: ClassVar[str] = "clash"
        suffixes: ClassVar[tuple[str, ...]] = (".png",)

    with pytest.raises(ValueError, match=r"'clash': suffixes \['.png'\] are read by another"):
        register_reader(_Clash)


def test_one_view_per_file_pairs_by_study_and_series(tmp_path: Path) -> None:
    _single(tmp_path / "b.dcm", POST, "1.2.9", "1.2.9.1", 2, ImageID="WB_POST")
    _single(tmp_path / "a.dcm", ANT, "1.2.9", "1.2.9.1", 1, ImageID="WB_ANT")
    _single(tmp_path / "other.dcm", ANT, "1.2.8", "1.2.8.1", 1, StartAngle=180)
    items = list(iter_scans([tmp_path]))
    scans = _scans(items)
    assert len(scans) == 2 and not _skips(items)
    paired = next(s for s in scans if len(s.views) == 2)
    np.testing.assert_array_equal(paired.views["anterior"], ANT)
    np.testing.assert_array_equal(paired.views["posterior"], POST)
    assert sorted(Path(s).name for s in paired.sources) == ["a.dcm", "b.dcm"]
    assert {v["view_rule"] for v in paired.metadata["views"].values()} == {"image_id"}
    alone = next(s for s in scans if len(s.views) == 1)
    assert alone.key != paired.key and alone.pairing is None


def test_pairing_without_view_information_uses_instance_order(tmp_path: Path) -> None:
    _single(tmp_path / "x1.dcm", POST, "1.2.7", "1.2.7.1", 2)
    _single(tmp_path / "x2.dcm", ANT, "1.2.7", "1.2.7.1", 1)
    (scan,) = _scans(list(iter_scans([tmp_path])))
    np.testing.assert_array_equal(scan.views["anterior"], ANT)
    np.testing.assert_array_equal(scan.views["posterior"], POST)
    assert any("first (by instance/file order)" in w for w in scan.metadata["warnings"])


def test_two_scans_of_one_study_get_distinct_keys(tmp_path: Path) -> None:
    for series in ("1.2.6.1", "1.2.6.2"):
        _single(tmp_path / f"{series}a.dcm", ANT, "1.2.6", series, 1, StartAngle=180)
        _single(tmp_path / f"{series}p.dcm", POST, "1.2.6", series, 2, StartAngle=0)
    scans = _scans(list(iter_scans([tmp_path])))
    assert len(scans) == 2 and all(len(s.views) == 2 for s in scans)
    # the second scan's suffix comes from its files' content, not from the reading order
    assert scans[1].key == scans[0].key + "-" + content_suffix(scans[1].sources)
    alone = _scans(list(iter_scans([tmp_path], recursive=False)))
    assert {s.key for s in alone} == {s.key for s in scans}


def test_files_in_different_folders_are_not_paired(tmp_path: Path) -> None:
    _single(tmp_path / "one" / "a.dcm", ANT, "1.2.5", "1.2.5.1", 1, StartAngle=180)
    _single(tmp_path / "two" / "p.dcm", POST, "1.2.5", "1.2.5.1", 2, StartAngle=0)
    scans = _scans(list(iter_scans([tmp_path])))
    assert [len(s.views) for s in scans] == [1, 1]
    assert not _scans(list(iter_scans([tmp_path], recursive=False)))


def test_images_merged_single_and_paired_by_name(tmp_path: Path) -> None:
    merged = np.random.default_rng(0).integers(0, 30, (950, 512)).astype(np.uint8)
    Image.fromarray(merged).save(tmp_path / "merged.png")
    Image.fromarray(ANT).save(tmp_path / "case7_ant.png")  # 16-bit PNG
    Image.fromarray(POST).save(tmp_path / "case7_post.png")
    Image.fromarray(POST).save(tmp_path / "lonely_posterior.tif")
    scans = {
        tuple(Path(p).name for p in s.sources): s for s in _scans(list(iter_scans([tmp_path])))
    }
    assert set(scans) == {
        ("merged.png",),
        ("case7_ant.png", "case7_post.png"),
        ("lonely_posterior.tif",),
    }
    whole = scans[("merged.png",)]
    np.testing.assert_array_equal(whole.merged, merged)
    assert whole.metadata["bit_depth"] == 8 and not whole.views
    pair = scans[("case7_ant.png", "case7_post.png")]
    np.testing.assert_array_equal(pair.views["posterior"], POST)
    assert pair.views["anterior"].dtype == np.float32
    assert pair.metadata["views"]["anterior"]["view_rule"] == "file_name"
    lone = scans[("lonely_posterior.tif",)]
    assert list(lone.views) == ["posterior"] and lone.metadata["format"] == "tiff"
    assert lone.metadata["bit_depth"] == 16


def test_image_keys_do_not_depend_on_file_names(tmp_path: Path) -> None:
    Image.fromarray(ANT).save(tmp_path / "Doe_John_ant.png")
    Image.fromarray(ANT).save(tmp_path / "renamed.png")
    first = read_scan_file(tmp_path / "Doe_John_ant.png")[0]
    assert first.key == read_scan_file(tmp_path / "renamed.png")[0].key
    assert "Doe" not in repr(first.metadata) and "John" not in first.key


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.zeros((256, 256), np.uint8), "neither a whole-body view"),
        (
            np.dstack([np.zeros((950, 512), np.uint8)] * 2 + [np.full((950, 512), 9, np.uint8)]),
            "colour",
        ),
    ],
)
def test_images_that_are_not_scans(tmp_path: Path, array: np.ndarray, expected: str) -> None:
    Image.fromarray(array).save(tmp_path / "x.png")
    with pytest.raises(NotAScanError, match=expected):
        read_scan_file(tmp_path / "x.png")


def test_corrupt_image_is_a_reader_error(tmp_path: Path) -> None:
    Image.fromarray(ANT).save(tmp_path / "cut.png")
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ReaderError, match="cut.png"):
        read_scan_file(tmp_path / "cut.png")


def test_labelme_inputs(tmp_path: Path) -> None:
    images, notes = tmp_path / "images", tmp_path / "notes"
    images.mkdir()
    merged = np.random.default_rng(1).integers(0, 300, (950, 512)).astype(np.uint16)
    Image.fromarray(merged).save(images / "scan.png")
    write_labelme(notes / "scan.json", "C:\\export\\scan.png", 950, 512, [])
    (notes / "scan.png").write_bytes((images / "scan.png").read_bytes())
    write_labelme(images / "scan.json", "scan.png", 950, 512, [])
    (tmp_path / "other.json").write_text('{"hello": 1}')
    # read alone, the Labelme file supplies its image (a Windows path resolved beside it)
    (scan,) = read_scan_file(notes / "scan.json")
    np.testing.assert_array_equal(scan.merged, merged)
    assert scan.metadata["format"] == "labelme+png"
    # beside its image in the inputs it is a duplicate; JSON that is not Labelme is unsupported
    items = list(iter_scans([images, tmp_path / "other.json"]))
    kinds = sorted((Path(s.path).name, s.kind) for s in _skips(items))
    assert kinds == [("other.json", "unsupported"), ("scan.json", "duplicate")]
    assert len(_scans(items)) == 1


def test_iter_scans_never_raises_and_excludes(tmp_path: Path) -> None:
    _single(tmp_path / "a.dcm", ANT, "1.2.4", "1.2.4.1", 1, StartAngle=180)
    (tmp_path / "bad.dcm").write_bytes(b"\x00" * 10)
    out = tmp_path / "out"
    out.mkdir()
    Image.fromarray(np.zeros((950, 512), np.uint8)).save(out / "old.png")
    items = list(iter_scans([tmp_path, tmp_path / "missing"], exclude=[out]))
    assert len(_scans(items)) == 1
    reasons = {Path(s.path).name: s.reason for s in _skips(items)}
    assert set(reasons) == {"bad.dcm", "missing"}
    assert "not a DICOM file" in reasons["bad.dcm"] and "no such file" in reasons["missing"]


@pytest.mark.parametrize(
    ("values", "pattern"),
    [
        (ANT.astype(np.float32) * np.where(ANT == 0, np.nan, 1), r"NaN or infinite"),
        (np.where(ANT == 0, np.inf, ANT).astype(np.float32), r"NaN or infinite"),
        (ANT.astype(np.float32) - 1, r"negative counts.*-1"),
        (ANT.astype(np.int32) - 1, r"negative counts.*-1"),
    ],
)
def test_tiff_values_that_are_not_counts_are_refused(
    tmp_path: Path, values: np.ndarray, pattern: str
) -> None:
    Image.fromarray(values).save(tmp_path / "view_ant.tif")
    with pytest.raises(ReaderError, match=pattern) as info:
        read_scan_file(tmp_path / "view_ant.tif")
    assert "view_ant.tif" in str(info.value) and not isinstance(info.value, NotAScanError)


def test_float_tiff_counts_read_unchanged(tmp_path: Path) -> None:
    counts = ANT.astype(np.float32) * 0.25
    Image.fromarray(counts).save(tmp_path / "view_ant.tif")
    (scan,) = read_scan_file(tmp_path / "view_ant.tif")
    np.testing.assert_array_equal(scan.views["anterior"], counts)
    assert scan.metadata["bit_depth"] == 32


def test_copies_of_one_image_are_one_view_not_a_pair(tmp_path: Path) -> None:
    original = _single(tmp_path / "a.dcm", ANT, "1.2.4", "1.2.4.1", 1)
    (tmp_path / "b.dcm").write_bytes(original.read_bytes())  # same SOPInstanceUID
    items = list(iter_scans([tmp_path]))
    (scan,) = _scans(items)
    assert list(scan.views) == ["anterior"] and scan.sources == [str(original)]
    (skip,) = _skips(items)
    assert skip.kind == "duplicate" and skip.path == str(tmp_path / "b.dcm")
    assert f"same SOPInstanceUID as {original}" in skip.reason


def test_a_copy_does_not_block_pairing_with_the_real_other_view(tmp_path: Path) -> None:
    original = _single(tmp_path / "a.dcm", ANT, "1.2.3", "1.2.3.1", 1)
    (tmp_path / "a_copy.dcm").write_bytes(original.read_bytes())
    _single(tmp_path / "p.dcm", POST, "1.2.3", "1.2.3.1", 2)
    items = list(iter_scans([tmp_path]))
    (scan,) = _scans(items)
    np.testing.assert_array_equal(scan.views["anterior"], ANT)
    np.testing.assert_array_equal(scan.views["posterior"], POST)
    assert [s.kind for s in _skips(items)] == ["duplicate"]
