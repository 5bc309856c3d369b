import subprocess
from pathlib import Path

import cv2
import numpy as np
from helpers.chromium import CHROMIUM, MARKS, QUIET_FLAGS

from bsi_d2.report import render_overlay, save_png, write_scan_report
from bsi_d2.taxonomy import load_taxonomy

pytestmark = list(MARKS)


def screenshot(page: Path, png: Path, profile: Path) -> None:
    subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            *QUIET_FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={png}",
            "--window-size=1200,1600",
            page.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def test_scan_report_renders_in_chromium(tmp_path):
    taxonomy = load_taxonomy()
    scan_dir = tmp_path / "scan"
    scan_dir.mkdir()
    display = np.full((190, 104), 60, np.uint8)
    region = np.zeros(display.shape, np.int32)
    region[20:170, 20:32] = 2
    region[20:170, 72:84] = 2
    lesion = np.zeros(display.shape, bool)
    lesion[60:70, 22:30] = True
    save_png(render_overlay(display, region, lesion, taxonomy), scan_dir / "overlay.png")
    record = {
        "key": "render-check",
        "status": "ok",
        "source": [],
        "abnormal": True,
        "model": {"config": "c.yaml", "weights": "w.pth", "engine": "torchvision"},
        "bsi": 0.12,
        "bstbi": 0.01,
        "bsi_coverage": 8.3,
        "bstbi_anterior": 0.02,
        "bstbi_posterior": 0.0,
        "bstbi_notes": ["no bladder was segmented: bladder counts are not subtracted"],
        "lesion_count": 1,
        "lesion_instances": 1,
        "views_matched": True,
        "burden_group": "few",
        "sites": ["spine"],
        "lesions_by_region": {"spine": 1},
        "regions": [
            {
                "bone": "spine",
                "report_name": "spine",
                "weight": 8.3,
                "assessed": "both views",
                "involved": True,
                "involvement_anterior": 0.03,
                "involvement_posterior": 0.0,
                "involvement": 0.015,
                "bsi": 0.12,
            }
        ],
        "lesion_pixels_outside": 0,
        "lesion_pixels_in_decoys": 0,
        "overlay": "overlay.png",
        "error": None,
    }
    page = write_scan_report(scan_dir, record)
    png = tmp_path / "shot.png"
    screenshot(page, png, tmp_path / "profile")
    assert png.is_file()
    image = cv2.imread(str(png))
    assert image is not None and image.shape[:2] == (1600, 1200)
    assert image.std() > 10  # not a blank page
    # the abnormal finding box is drawn in its pale red
    pixels = image.reshape(-1, 3).astype(int)
    assert np.all(pixels == (233, 235, 255), axis=1).any()
    # the overlay image loaded: spine-tinted pixels (BGR) are on the page
    assert (np.abs(pixels - (121, 102, 69)).max(axis=1) <= 3).sum() > 100
