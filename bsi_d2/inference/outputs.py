"""Writers for batch inference outputs; every file is written atomically (temp file + replace).

A scan's folder ``OUT/scans/<key>/`` holds predictions.json, labelmap.png, overlay.png, the
Labelme files ``<key>.json`` + ``<key>.png`` + ``<key>.meta.json`` (its study link, read back by
``bsi-d2 bsi``), report.html and, written last, bsi.json: a scan is finished exactly when its
bsi.json says ``"status": "ok"`` or ``"not_assessed"`` (analysed, but no skeletal region was
found, so it has no indices). A failed or unassessed scan's indices are None — empty in the
CSV — never zeros that read like a healthy scan. Every record, failed or not, and every CSV row
carries the scan's study link (:data:`~bsi_d2.io.pseudonym.LINK_FIELDS`: ``study_key``,
``patient_key``, the kept ``study_date`` and its kind), None where unknown.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bsi_d2.io.base import META_SUFFIX
from bsi_d2.io.files import atomic_write_text
from bsi_d2.io.png import write_png as atomic_write_png  # noqa: F401  (the name batch uses)
from bsi_d2.io.pseudonym import LINK_FIELDS
from bsi_d2.structures.instances import Instances
from bsi_d2.structures.masks import mask_to_polygons
from bsi_d2.taxonomy import Taxonomy

logger = logging.getLogger(__name__)

SCANS_DIR = "scans"  # OUT/scans/<key>/ holds each scan's files
ERRORS_DIR = "errors"  # OUT/errors/<key>.json for each failed scan
RECORD_FILE = "bsi.json"
PREDICTIONS_FILE = "predictions.json"
LABELMAP_FILE = "labelmap.png"
OVERLAY_FILE = "overlay.png"
SUMMARY_FILE = "bsi_summary.csv"
ERRORS_FILE = "errors.jsonl"
STATUS_OK = "ok"
STATUS_QC_FAILED = "qc_failed"  # analysed, but the scan failed quality control
STATUS_NOT_ASSESSED = "not_assessed"  # analysed without quality control; no region was found
STATUS_FAILED = "failed"
FINISHED_STATUSES = (STATUS_OK, STATUS_QC_FAILED, STATUS_NOT_ASSESSED)
NOT_ASSESSED_REASON = "no skeletal region was found by the model: the scan cannot be assessed"
RECORD_KEYS = (
    "key", "study_key", "patient_key", "study_date", "study_date_kind", "status", "source",
    "model", "bsi", "bsi_coverage", "combine", "regions_not_assessed",
    "bstbi", "bstbi_anterior", "bstbi_posterior", "bstbi_notes", "counts_source", "lesion_count",
    "lesion_instances", "views_matched", "lesions_in_decoys", "benign_hot_spots", "burden_group",
    "abnormal", "sites", "regions", "lesions", "lesions_by_region", "lesion_pixels_counted",
    "lesion_pixels_outside", "lesion_pixels_in_decoys", "landmarks", "qc", "overlay", "dicom",
    "error",
)  # fmt: skip
# the decisions a scan without an assessable skeleton must not carry
DECISION_KEYS = ("bsi", "bstbi", "bstbi_anterior", "bstbi_posterior", "lesion_count",
                 "benign_hot_spots", "burden_group", "abnormal")  # fmt: skip
_LIST_KEYS = ("regions_not_assessed", "bstbi_notes", "sites", "regions", "lesions")
# what ``--outputs`` chooses from: a scan's files (bsi.json always: it marks the scan done) and
# the folder's summary files
OUTPUT_FILES = {
    "bsi": RECORD_FILE,
    "predictions": PREDICTIONS_FILE,
    "labelmap": LABELMAP_FILE,
    "overlay": OVERLAY_FILE,
    "labelme": f"<key>.json + <key>.png + <key>{META_SUFFIX}",
    "report": "report.html",
    "csv": SUMMARY_FILE,
    "index": "index.html",
}
ALL_OUTPUTS = frozenset(OUTPUT_FILES)


def parse_outputs(text: str) -> frozenset[str]:
    """``"bsi,csv"`` -> the outputs to write (bsi.json is always among them); ``all``: every
    one."""
    names = {n.strip() for n in str(text).split(",") if n.strip()}
    if names == {"all"}:
        return ALL_OUTPUTS
    unknown = sorted(names - ALL_OUTPUTS)
    if unknown:
        raise ValueError(
            f"unknown output(s) {', '.join(unknown)}; choose from {', '.join(OUTPUT_FILES)}"
        )
    return frozenset(names | {"bsi"})


# -- atomic files ---------------------------------------------------------------------------


def atomic_write_json(path: str | Path, obj: Any, compact: bool = False) -> Path:
    """``obj`` as JSON, indented for a reader, or ``compact`` (one line, no spaces: for the
    machine-read files, several times faster to write, as the indenting encoder is Python's)."""
    if compact:
        text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    else:
        text = json.dumps(obj, indent=2, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def reset_scan_dir(scan_dir: Path) -> None:
    """Empty a half-written scan folder (or make a new one) before the scan is redone."""
    if scan_dir.exists():
        shutil.rmtree(scan_dir)
    scan_dir.mkdir(parents=True)


# -- per-scan files -------------------------------------------------------------------------


def scan_record(
    key: str,
    source: Sequence[str],
    model: dict[str, Any],
    analysis: dict[str, Any] | None = None,
    error: str | None = None,
    overlay: str | None = OVERLAY_FILE,
    qc: dict[str, Any] | None = None,
    link: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A scan's bsi.json record, exactly :data:`RECORD_KEYS`; ``analysis`` is
    ``ScanAnalysis.record`` for an analysed scan, None for a failed one, and ``qc`` its
    ``QCResult.to_dict()``. A scan that failed quality control is ``qc_failed`` (and one
    without any assessed region, where quality control did not run, ``not_assessed``); their
    decisions are None. ``link``: the scan's study link (:data:`~bsi_d2.io.pseudonym.
    LINK_FIELDS`, from its reader's metadata), None where it has none."""
    if analysis is None or error is not None:
        status = STATUS_FAILED
    elif qc is not None and qc.get("status") == "failed":
        status = STATUS_QC_FAILED
        error = "quality control: " + "; ".join(qc.get("failed") or [])
    elif analysis.get("bsi") is None:
        status, error = STATUS_NOT_ASSESSED, NOT_ASSESSED_REASON
    else:
        status = STATUS_OK
    base: dict[str, Any] = dict.fromkeys(RECORD_KEYS)
    base.update({k: [] for k in _LIST_KEYS})
    base["lesions_by_region"] = {}
    if analysis is not None and status != STATUS_FAILED:
        base.update({k: v for k, v in analysis.items() if k in RECORD_KEYS})
    if status in (STATUS_QC_FAILED, STATUS_NOT_ASSESSED):
        base.update(dict.fromkeys(DECISION_KEYS))
    base["qc"] = dict(qc) if qc is not None else None
    base.update({name: (link or {}).get(name) for name in LINK_FIELDS})
    base.update(
        key=key,
        status=status,
        source=[str(s) for s in source],
        model=dict(model),
        overlay=overlay if status != STATUS_FAILED else None,
        error=error,
    )
    return {k: base[k] for k in RECORD_KEYS}


def predictions_document(
    key: str, instances: Instances, taxonomy: Taxonomy, views: Sequence[str], kept: np.ndarray
) -> dict[str, Any]:
    """predictions.json: every instance the model returned, with ``kept`` marking those that
    passed the score thresholds (so thresholds can be changed later without the model)."""
    items = []
    for i, rle in enumerate(masks_to_rles(instances.masks)):
        cid = int(instances.category_ids[i])
        items.append(
            {
                "class": taxonomy.by_id(cid).name if cid in taxonomy.ids else str(cid),
                "category_id": cid,
                "score": float(instances.scores[i]),
                "box": [float(v) for v in instances.boxes[i]],  # XYXY, pixels
                "view": views[i],
                "kept": bool(kept[i]),
                "mask": rle,
            }
        )
    return {
        "key": key,
        "height": int(instances.height),
        "width": int(instances.width),
        "box_format": "XYXY",
        "instances": items,
    }


def masks_to_rles(masks: np.ndarray) -> list[dict[str, Any]]:
    """(N, H, W) bool masks -> COCO RLEs as :func:`~bsi_d2.structures.masks.mask_to_rle` makes
    them. Runs are counted over the columns a mask touches only (COCO RLE is column-major, so
    the empty columns before and after are one run of zeros each), then compressed by
    pycocotools: a lesion's few columns instead of the whole image, for every instance."""
    from pycocotools import mask as mask_utils

    masks = np.asarray(masks)
    if len(masks) == 0:
        return []
    masks = masks.astype(bool, copy=False)
    _, height, width = masks.shape
    touched = masks.any(axis=1)  # (N, W): the columns each mask touches
    uncompressed = []
    for mask, columns in zip(masks, touched, strict=True):
        uncompressed.append({"size": [height, width],
                             "counts": _column_runs(mask, np.flatnonzero(columns))})  # fmt: skip
    return [
        {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
        for rle in mask_utils.frPyObjects(uncompressed, height, width)
    ]


def _column_runs(mask: np.ndarray, columns: np.ndarray) -> list[int]:
    """Uncompressed COCO run lengths (zeros first) of ``mask`` in column-major order, from the
    columns between its first and last touched one."""
    height, width = mask.shape
    if len(columns) == 0:
        return [height * width]
    x0, x1 = int(columns[0]), int(columns[-1]) + 1
    flat = np.ascontiguousarray(mask[:, x0:x1].T).reshape(-1)
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], edges, [flat.size]))).tolist()
    if flat[0]:
        runs.insert(0, 0)  # the runs start with zeros
    runs[0] += x0 * height
    tail = (width - x1) * height
    if tail and len(runs) % 2:  # the last run is zeros: the empty columns after join it
        runs[-1] += tail
    elif tail:
        runs.append(tail)
    return runs


def read_predictions(path: str | Path) -> Instances:
    """Every instance of a predictions.json (see :func:`predictions_document`)."""
    from bsi_d2.structures.masks import rle_to_mask

    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    height, width, items = int(doc["height"]), int(doc["width"]), doc["instances"]
    if not items:
        return Instances.empty(height, width)
    return Instances(
        height,
        width,
        np.array([it["box"] for it in items], np.float32).reshape(-1, 4),
        np.array([it["score"] for it in items], np.float32),
        np.array([it["category_id"] for it in items], np.int64),
        np.stack([rle_to_mask(it["mask"]) for it in items]),
    )


@dataclass
class ScanFiles:
    """What a scan's file writers read: its folder, display image, every predicted instance,
    which passed the thresholds, and the analysis."""

    scan_dir: Path
    key: str
    display: np.ndarray
    instances: Instances  # all the model returned
    kept: np.ndarray  # (N,) bool: passed the score thresholds
    analysis: Any  # postprocess.analysis.ScanAnalysis
    taxonomy: Taxonomy
    link: dict[str, Any] = field(default_factory=dict)  # the study link (LINK_FIELDS)
    _overlay: np.ndarray | None = field(default=None, init=False, repr=False)

    def overlay(self) -> np.ndarray:
        """The overlay image (regions tinted, lesions outlined), rendered once for the PNG and
        the DICOM capture alike."""
        if self._overlay is None:
            from bsi_d2.report.overlay import render_overlay

            analysis = self.analysis
            self._overlay = render_overlay(
                self.display, analysis.area_map(), analysis.lesion_mask, self.taxonomy
            )
        return self._overlay


def write_predictions(files: ScanFiles) -> None:
    from bsi_d2.postprocess.assign import assign_views

    views = assign_views(files.instances)
    doc = predictions_document(files.key, files.instances, files.taxonomy, views, files.kept)
    atomic_write_json(files.scan_dir / PREDICTIONS_FILE, doc, compact=True)


def write_labelmap(files: ScanFiles) -> None:
    atomic_write_png(files.scan_dir / LABELMAP_FILE, files.analysis.label_map(files.taxonomy))


def write_overlay(files: ScanFiles) -> None:
    atomic_write_png(files.scan_dir / OVERLAY_FILE, files.overlay())


def write_labelme_files(files: ScanFiles) -> None:
    """``<key>.png`` (display image) and ``<key>.json`` (Labelme) for correcting in Labelme,
    and ``<key>.meta.json``, the study link, so that ``bsi-d2 bsi`` on the corrected file
    writes the scan's ``study_key`` and ``patient_key`` again. The file and every shape are
    flagged model-made (:data:`~bsi_d2.io.labelme.MODEL_MADE`), each shape with its score."""
    from bsi_d2.io.files import atomic_path
    from bsi_d2.io.labelme import write_labelme

    kept = files.analysis.instances
    image_path = files.scan_dir / f"{files.key}.png"
    atomic_write_png(image_path, files.display)
    shapes = labelme_shapes(kept, files.taxonomy)
    with atomic_path(files.scan_dir / f"{files.key}.json") as tmp:
        write_labelme(tmp, image_path.name, kept.height, kept.width, shapes, model_made=True)
    link = {name: files.link.get(name) for name in LINK_FIELDS}
    atomic_write_json(files.scan_dir / f"{files.key}{META_SUFFIX}", link)


# a scan's files before its report and bsi.json, in the order they are written
SCAN_WRITERS: dict[str, Callable[[ScanFiles], None]] = {
    "predictions": write_predictions,
    "labelmap": write_labelmap,
    "overlay": write_overlay,
    "labelme": write_labelme_files,
}


def labelme_shapes(instances: Instances, taxonomy: Taxonomy) -> list[dict[str, Any]]:
    """Labelme polygon shapes of the instances; the parts of one instance share a group_id.
    Each is flagged model-made, its score in its description (``model score 0.873``)."""
    from bsi_d2.io.labelme import labelme_shape

    shapes = []
    for i in range(len(instances)):
        label = taxonomy.by_id(int(instances.category_ids[i])).name
        for polygon in _mask_polygons(instances.masks[i], instances.boxes[i]):
            points = np.asarray(polygon, dtype=float).reshape(-1, 2)
            shapes.append(
                labelme_shape(
                    label,
                    points.tolist(),
                    "polygon",
                    group_id=i,
                    score=float(instances.scores[i]),
                )
            )
    return shapes


def _mask_polygons(mask: np.ndarray, box: np.ndarray, margin: int = 2) -> list[list[float]]:
    """:func:`~bsi_d2.structures.masks.mask_to_polygons` of ``mask``, traced in its box grown
    by ``margin`` (a tenth of the pixels or less) where the mask lies wholly inside that crop;
    the same polygons, as the crop keeps a background rim or shares the image's edge."""
    height, width = mask.shape
    x0, y0 = (max(0, int(np.floor(v)) - margin) for v in box[:2])
    x1, y1 = min(width, int(np.ceil(box[2])) + margin), min(height, int(np.ceil(box[3])) + margin)
    crop = mask[y0:y1, x0:x1]
    if x1 <= x0 or y1 <= y0 or np.count_nonzero(crop) != np.count_nonzero(mask):
        return mask_to_polygons(mask)
    if (y0 and crop[0].any()) or (x0 and crop[:, 0].any()):
        return mask_to_polygons(mask)  # touching a cut edge: the tracing would differ
    if (y1 < height and crop[-1].any()) or (x1 < width and crop[:, -1].any()):
        return mask_to_polygons(mask)
    shifted = []
    for polygon in mask_to_polygons(crop):
        points = np.asarray(polygon).reshape(-1, 2) + (x0, y0)
        shifted.append(points.reshape(-1).tolist())
    return shifted


# -- across the output folder ---------------------------------------------------------------


def record_paths(scans_dir: Path) -> list[Path]:
    """Every scan's bsi.json path under ``scans_dir``, sorted by key."""
    return sorted(scans_dir.glob(f"*/{RECORD_FILE}"))


def iter_records(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """The readable records of ``paths``, one at a time."""
    for path in paths:
        try:
            yield json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            logger.warning("%s: unreadable record skipped: %s", path, err)


def read_records(scans_dir: Path) -> list[dict[str, Any]]:
    """Every readable bsi.json under ``scans_dir``, sorted by key."""
    return list(iter_records(record_paths(scans_dir)))


SUMMARY_HEAD = (
    "key", *LINK_FIELDS, "status", "bsi", "bsi_coverage", "bstbi", "bstbi_anterior",
    "bstbi_posterior", "counts_source", "lesion_count", "lesion_instances", "lesions_in_decoys",
    "burden_group", "abnormal", "sites", "lesion_pixels_counted", "lesion_pixels_outside",
    "lesion_pixels_in_decoys", "qc_status", "qc_failed", "qc_warnings",
)  # fmt: skip
PER_BONE = ("assessed", "involvement", "bsi")


def add_bones(bones: list[str], record: dict[str, Any]) -> None:
    """Append the bones of ``record``'s regions not yet in ``bones``."""
    for row in record.get("regions") or []:
        if row["bone"] not in bones:
            bones.append(row["bone"])


def summary_columns(records: Iterable[dict[str, Any]]) -> list[str]:
    bones: list[str] = []
    for record in records:
        add_bones(bones, record)
    return bone_columns(bones)


def bone_columns(bones: Sequence[str]) -> list[str]:
    per_bone = [f"{what}_{bone}" for bone in bones for what in PER_BONE]
    return [*SUMMARY_HEAD, *per_bone, "error"]


def summary_csv(records: Sequence[dict[str, Any]]) -> str:
    """bsi_summary.csv text: one row per scan, per-bone assessment, involvement and BSI as
    columns; a value that does not exist (failed scan, region not assessed) is empty."""
    buf = io.StringIO()
    _write_summary(buf, records, summary_columns(records))
    return buf.getvalue()


def write_summary_csv(path: Path, records: Iterable[dict[str, Any]], bones: Sequence[str]) -> Path:
    """:func:`summary_csv` of ``records`` (streamed, whose regions' bones are ``bones``)
    written atomically to ``path`` row by row."""
    from bsi_d2.io.files import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        _write_summary(handle, records, bone_columns(bones))
    return Path(path)


def _write_summary(handle: Any, records: Iterable[dict[str, Any]], columns: list[str]) -> None:
    writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in records:
        row = {c: record.get(c) for c in columns}
        row["sites"] = "; ".join(record.get("sites") or [])
        qc = record.get("qc") or {}
        row["qc_status"] = qc.get("status")
        row["qc_failed"] = "; ".join(qc.get("failed") or [])
        row["qc_warnings"] = "; ".join(qc.get("warnings") or [])
        for region in record.get("regions") or []:
            for what in PER_BONE:
                row[f"{what}_{region['bone']}"] = region.get(what)
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


def errors_jsonl(errors: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(e, sort_keys=True) + "\n" for e in errors)
