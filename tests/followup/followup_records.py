"""Hand-written bsi.json records for the follow-up tests: a skeleton of region landmarks that
can be shifted as a whole, and lesions placed on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bsi_d2.inference.outputs import RECORD_FILE, SCANS_DIR, atomic_write_json, scan_record
from bsi_d2.io.png import write_png

PATIENT = "pt" + "a" * 16
MODEL = {"engine": "annotations", "config": None, "weights": None}
# (x, y) centroids in the merged 950 x 512 image; the posterior view is the right half
SKELETON = {
    "anterior": {
        "skull": (128.0, 200.0), "spine": (128.0, 360.0), "chest": (126.0, 330.0),
        "humerus_AR": (56.0, 312.0), "humerus_AL": (204.0, 316.0), "pelvis": (127.0, 480.0),
        "femurs": (126.0, 540.0),
    },
    "posterior": {
        "skull": (384.0, 200.0), "spine": (384.0, 360.0), "chest": (386.0, 330.0),
        "humerus_PR": (456.0, 312.0), "humerus_PL": (308.0, 316.0), "pelvis": (385.0, 480.0),
        "femurs": (386.0, 540.0),
    },
}  # fmt: skip


def landmarks(shift: tuple[float, float] = (0.0, 0.0), drop: tuple[str, ...] = ()) -> dict:
    dx, dy = shift
    return {
        view: {
            name: {
                "centroid": [x + dx, y + dy],
                "pixels": 1000,
                "bbox": [int(x + dx) - 10, int(y + dy) - 10, int(x + dx) + 10, int(y + dy) + 10],
            }
            for name, (x, y) in regions.items()
            if name not in drop
        }
        for view, regions in SKELETON.items()
    }


def lesion(
    lesion_id: int,
    site_name: str,
    centroid: dict[str, tuple[float, float]],
    pixels: int = 40,
    site: str = "bone",
) -> dict[str, Any]:
    views = [v for v in ("anterior", "posterior") if v in centroid]
    return {
        "id": lesion_id,
        "site": site,
        "site_name": site_name,
        "views": views,
        "score": 1.0,
        "pixels": {v: (pixels if v in centroid else 0) for v in ("anterior", "posterior")},
        "counted_pixels": {v: (pixels if v in centroid else 0) for v in ("anterior", "posterior")},
        "centroid": {v: list(xy) for v, xy in centroid.items()},
        "bbox": {v: [int(x) - 3, int(y) - 3, int(x) + 3, int(y) + 3] for v, (x, y) in
                 centroid.items()},
    }  # fmt: skip


def record(
    key: str,
    lesions: list[dict[str, Any]] = (),  # type: ignore[assignment]
    *,
    bsi: float = 1.0,
    date: str | None = "2024-01-10",
    kind: str | None = "exact",
    patient: str | None = PATIENT,
    status: str = "ok",
    shift: tuple[float, float] = (0.0, 0.0),
    spine_bsi: float | None = None,
    bstbi: float = 0.01,
) -> dict[str, Any]:
    """A record as ``scan_record`` writes it, with the study link of the other helper's
    records (study key, patient pseudonym, kept date)."""
    counted = [les for les in lesions if les["site"] != "decoy"]
    spine = bsi if spine_bsi is None else spine_bsi
    analysis = {
        "bsi": bsi,
        "bsi_coverage": 55.1,
        "bstbi": bstbi,
        "bstbi_anterior": bstbi,
        "bstbi_posterior": bstbi,
        "lesion_count": len(counted),
        "lesion_instances": len(counted),
        "burden_group": None,
        "abnormal": bool(counted),
        "sites": sorted({les["site_name"] for les in counted}),
        "regions": [
            {"bone": "spine", "report_name": "spine", "assessed": "both views", "bsi": spine},
            {"bone": "pelvis", "report_name": "pelvis", "assessed": "both views",
             "bsi": bsi - spine},
        ],
        "lesions": list(lesions),
        "landmarks": landmarks(shift),
    }  # fmt: skip
    if status == "failed":
        rec = scan_record(key, [], MODEL, None, error="could not read the file")
    elif status == "qc_failed":
        rec = scan_record(key, [], MODEL, analysis, qc={"status": "failed", "failed": ["counts"]})
    elif status == "not_assessed":
        rec = scan_record(key, [], MODEL, {**analysis, "bsi": None})
    else:
        rec = scan_record(key, [], MODEL, analysis)
    assert rec["status"] == status
    rec.update(study_key="s" + key[1:], patient_key=patient, study_date=date, study_date_kind=kind)
    return rec


def write_results(folder: Path, records: list[dict[str, Any]], overlay: bool = True) -> Path:
    """An output folder of ``records``: OUT/scans/<key>/bsi.json (+ a small overlay.png)."""
    for rec in records:
        scan_dir = folder / SCANS_DIR / rec["key"]
        atomic_write_json(scan_dir / RECORD_FILE, rec)
        if overlay and rec.get("overlay"):
            write_png(scan_dir / rec["overlay"], np.full((8, 4, 3), 120, np.uint8))
    return folder
