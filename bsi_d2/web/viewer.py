"""The result's overlay as the page shows it: regions tinted and lesions outlined, each toggled,
over the scan in the window the user chose; drawn by the report's own
:func:`~bsi_d2.report.overlay.render_overlay` from the files ``run_batch`` wrote (the display
``<key>.png`` and ``labelmap.png``, whose lesion pixels carry the lesion class id)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bsi_d2.taxonomy import Taxonomy


def _grey(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.ndim != 2:
        raise FileNotFoundError(f"{path.name}: no grey-level image")
    return image


def result_layers(scan_dir: Path, key: str, taxonomy: Taxonomy) -> tuple[np.ndarray, ...]:
    """(display, area map, lesion mask) of one analysed scan's folder."""
    display = _grey(scan_dir / f"{key}.png").astype(np.uint8)
    labels = _grey(scan_dir / "labelmap.png")
    lesion_id = taxonomy.lesion_ids[0] if taxonomy.lesion_ids else 255
    lesions = labels == lesion_id
    return display, np.where(lesions, 0, labels).astype(np.uint8), lesions


def render_view(
    scan_dir: Path,
    key: str,
    taxonomy: Taxonomy,
    regions: bool = True,
    lesions: bool = True,
    window: int = 255,
) -> bytes:
    """PNG of the overlay with the chosen layers over the windowed scan."""
    from bsi_d2.io.png import png_bytes
    from bsi_d2.report.overlay import render_overlay
    from bsi_d2.web.adjust import window_display

    display, area, lesion = result_layers(scan_dir, key, taxonomy)
    image = render_overlay(
        window_display(display, window),
        area if regions else np.zeros_like(area),
        lesion if lesions else np.zeros_like(lesion),
        taxonomy,
    )
    return png_bytes(image)
