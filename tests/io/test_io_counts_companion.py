"""One name for a display image's raw counts: the file preprocess and the phantoms write is the
one the image reader, the Labelme loader and the Labelme reader find (before: ``.counts`` in the
readers, ``.counts.png`` in the Labelme loader)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from bsi_d2.io.base import COUNTS_SUFFIX, ScanImage, SkippedInput, counts_path
from bsi_d2.io.labelme import labelme_image, load_labelme
from bsi_d2.io.png import write_png
from bsi_d2.io.readers import iter_scans, read_scan_file
from bsi_d2.preprocess.pipeline import preprocess_scan, write_prepared


def _view(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lam = np.full((1024, 256), 0.5)
    lam[100:900, 90:170] = 40.0
    lam[500:520, 120:140] = 900.0  # a hot spot above 255: the counts are not the display
    return rng.poisson(lam).astype(np.uint16)


def _prepared_files(folder: Path) -> tuple[Path, Path, Path, np.ndarray]:
    scan = ScanImage("k1", ["in.dcm"], {"anterior": _view(1), "posterior": _view(2)})
    scan.metadata = {"views": {v: {"view_rule": "view_code"} for v in scan.views}}
    prepared = preprocess_scan(scan)
    files = write_prepared(prepared, folder, labelme=True)
    display, counts, labelme = (folder / files[k] for k in ("display", "counts", "labelme"))
    return display, counts, labelme, np.rint(prepared.counts).astype(np.uint16)


def test_counts_file_preprocess_writes_is_the_one_every_reader_finds(tmp_path: Path) -> None:
    display, counts, labelme, expected = _prepared_files(tmp_path)
    assert counts == counts_path(display) == tmp_path / f"k1{COUNTS_SUFFIX}"
    with Image.open(counts) as image:
        assert (image.format, image.mode) == ("PNG", "I;16")  # 16-bit, never JPEG or 8-bit
    assert labelme_image(load_labelme(labelme)).counts_source == counts
    for path in (display, labelme):
        (scan,) = read_scan_file(path)
        assert scan.metadata["counts_source"] == "counts" and str(counts) in scan.sources
        assert scan.metadata["bit_depth"] == 16
        np.testing.assert_array_equal(scan.merged, expected)
    items = list(iter_scans([tmp_path]))
    scans = [i for i in items if isinstance(i, ScanImage)]
    skipped = [i for i in items if isinstance(i, SkippedInput)]
    # the counts file belongs to the display image's scan: neither a scan nor a skip of its own
    assert [s.sources for s in scans] == [[str(display), str(counts)]]
    assert (str(labelme), "duplicate") in [(s.path, s.kind) for s in skipped]
    assert str(counts) not in [s.path for s in skipped]


def test_a_tiff_display_image_has_the_same_counts_name(tmp_path: Path) -> None:
    merged = np.zeros((950, 512), np.uint8)
    merged[100:800, 50:200] = 30
    Image.fromarray(merged).save(tmp_path / "scan.tif")
    write_png(tmp_path / f"scan{COUNTS_SUFFIX}", merged.astype(np.uint16) * 20)
    (scan,) = read_scan_file(tmp_path / "scan.tif")
    assert scan.sources == [str(tmp_path / "scan.tif"), str(tmp_path / "scan.counts.png")]
    assert scan.merged.max() == 600
