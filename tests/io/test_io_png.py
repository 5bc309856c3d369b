"""The one PNG writer: lossless in every mode it takes, atomic, and refusing what it cannot keep."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bsi_d2.io.png import png_bytes, write_png


def _read(data: bytes) -> tuple[str, np.ndarray]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return image.mode, np.asarray(image)


@pytest.mark.parametrize(
    ("image", "mode"),
    [
        (np.arange(48, dtype=np.uint8).reshape(6, 8), "L"),
        (np.arange(48, dtype=np.uint16).reshape(6, 8) * 1300, "I;16"),  # up to 61100
        (np.arange(48 * 3, dtype=np.uint8).reshape(6, 8, 3), "RGB"),  # channel order kept
        (np.eye(6, 8, dtype=bool), "1"),
    ],
)
def test_png_round_trips_pixel_exact(image: np.ndarray, mode: str) -> None:
    found_mode, pixels = _read(png_bytes(image))
    assert found_mode == mode
    np.testing.assert_array_equal(pixels, image)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((4, 4), np.float32),
        np.zeros((4, 4), np.int32),
        np.zeros((4, 4, 4), np.uint8),  # RGBA
        np.zeros((4, 4, 3), np.uint16),
    ],
)
def test_png_refuses_what_it_cannot_store_losslessly(image: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8 or uint16"):
        png_bytes(image)
    with pytest.raises(ValueError, match="bad.png"):
        write_png(tmp_path / "bad.png", image)
    assert list(tmp_path.iterdir()) == []


def test_write_png_replaces_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "counts.png"
    write_png(target, np.full((3, 5), 7, np.uint16))
    write_png(target, np.full((3, 5), 9, np.uint16))
    assert _read(target.read_bytes())[1].tolist() == [[9] * 5] * 3
    assert [p.name for p in target.parent.iterdir()] == ["counts.png"]  # no temp file left
