"""The one PNG writer: lossless, 8- or 16-bit grey, 8-bit RGB or a bilevel mask, written atomically.

Every image the toolkit writes (display and counts images, label maps, overlays, Labelme masks)
goes through :func:`png_bytes`; files through :func:`write_png`, which replaces the target only
once the whole file is on disk (:func:`bsi_d2.io.files.atomic_write_bytes`). Nothing is scaled or
reduced: 16-bit counts stay 16-bit, and the format is never JPEG. OpenCV encodes (several times
faster than Pillow at a similar size); it takes colour as BGR, so RGB is reordered here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bsi_d2.io.files import atomic_write_bytes


def png_bytes(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 or uint16 (H, W) grey image, a uint8 (H, W, 3) RGB image, or a
    bool (H, W) mask (stored as a 1-bit image)."""
    import cv2

    image = np.asarray(image)
    params: list[int] = []
    if image.dtype == bool and image.ndim == 2:
        image = image.astype(np.uint8) * 255
        params = [cv2.IMWRITE_PNG_BILEVEL, 1]
    elif image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
        # OpenCV encodes BGR; its own reordering is about ten times faster than a strided copy
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    elif not (image.ndim == 2 and image.dtype in (np.uint8, np.uint16)):
        raise ValueError(
            "PNG writer needs a uint8 or uint16 (H, W) grey image, a uint8 (H, W, 3) RGB image "
            f"or a bool (H, W) mask, got {image.dtype} of shape {image.shape}"
        )
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image), params)
    if not ok:
        raise OSError(f"PNG encoding of a {image.dtype} {image.shape} image failed")
    return encoded.tobytes()


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write ``image`` (see :func:`png_bytes`) to ``path`` atomically; returns the path."""
    try:
        data = png_bytes(image)
    except (ValueError, OSError) as error:
        raise type(error)(f"{path}: {error}") from error
    return atomic_write_bytes(path, data)
