"""Study-level preprocessing: a :class:`ScanImage` -> the merged 950 x 512 scan the model sees,
and the batch that writes prepared scans to a folder (``bsi-d2 preprocess``).

Outputs per study ``<key>``: ``<key>.png`` (8-bit display), ``<key>.counts.png`` (16-bit raw
counts, clipped at 65535), ``<key>.meta.json`` (the reader's metadata through the allow-list
:data:`META_FIELDS`, placements, view rules) and optionally ``<key>.json``, an empty Labelme file
pointing at the PNG. The readers take the study link (``study_key``, ``patient_key``, the kept
study date) back from ``<key>.meta.json`` when the PNG is read, so ``predict`` on these files
writes the same keys as ``predict`` on the DICOM. Every file is written to a temporary name and
renamed, so a crash never leaves a half-written output. Input files are named by
:func:`bsi_d2.io.pseudonym.input_label` in the report, the metadata and the log, unless identity
is kept: folder and file names may be a patient's ID or name.
"""

from __future__ import annotations

import copy
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bsi_d2.io.base import COUNTS_SUFFIX, META_SUFFIX, ScanImage, SkippedInput
from bsi_d2.io.files import atomic_path, atomic_write_bytes
from bsi_d2.io.limits import ReadLimits
from bsi_d2.io.png import write_png
from bsi_d2.io.pseudonym import LINK_FIELDS, InputLabels, digest_suffix
from bsi_d2.io.readers import iter_scans, source_digests
from bsi_d2.preprocess.merge import (
    KNEE_ROW,
    MERGED_HEIGHT,
    TARGET_MEAN,
    VIEW_ORDER,
    VIEW_WIDTH,
    ViewPlacement,
    merge_views,
    normalize_brightness,
)

logger = logging.getLogger(__name__)

MERGED_SHAPE = (MERGED_HEIGHT, VIEW_WIDTH * len(VIEW_ORDER))
DISPLAY_WINDOW = (7.0, 14.0)  # seed 001: mean of the 8-bit image
UINT16_MAX = 65535
REPORT_NAME = "preprocess_report.json"

# The only reader metadata that leaves in <key>.meta.json and the report: coded values (CS, UID
# names), numbers, pseudonymous keys and what the toolkit computed. Free text from DICOM
# (Manufacturer, ManufacturerModelName, InstitutionName, StationName, descriptions...) may name a
# site or a person; a field a reader adds later stays out until it is listed here.
META_FIELDS = (
    "format",  # dicom, png, tiff, labelme+png...
    "sop_class",  # name of the SOP class UID
    "modality",
    "image_type",
    "transfer_syntax",  # name of the transfer syntax UID
    "matrix",
    "frames",
    "bit_depth",
    "pixel_spacing_mm",
    "frame_duration_ms",
    "counts_accumulated",
    "scan_velocity_mm_s",
    "scan_length_mm",
    "whole_body_technique",
    "radionuclide",  # the code meaning of RadionuclideCodeSequence
    "counts_source",
    "counts",  # count statistics
    "layout",
    "views",  # per view: VIEW_FIELDS
    "paired_files",
    "warnings",  # the readers' own sentences
    "study_key",
    "patient_key",  # salted PatientID + IssuerOfPatientID: links a patient's studies
    "study_date",  # only as --keep-dates keeps it (its month, or shifted), else None
    "study_date_kind",  # month, shifted, or exact (with --keep-identity only)
    "series_key",
    "preprocess",  # placements and display rule, from preprocess_scan
)
VIEW_FIELDS = ("view_rule", "frame", "source_index", "counts")  # of each entry of "views"
IDENTITY_FIELDS = ("identity",)  # written only when the user keeps identity


def allowed_metadata(metadata: dict[str, Any], keep_identity: bool = False) -> dict[str, Any]:
    """``metadata`` with only :data:`META_FIELDS` (and :data:`IDENTITY_FIELDS` if asked)."""
    fields = META_FIELDS + (IDENTITY_FIELDS if keep_identity else ())
    kept = {k: copy.deepcopy(v) for k, v in metadata.items() if k in fields}
    if "views" in kept:
        views = kept["views"] if isinstance(kept["views"], dict) else {}
        kept["views"] = {
            view: {k: v for k, v in entry.items() if k in VIEW_FIELDS}
            for view, entry in views.items()
            if view in VIEW_ORDER and isinstance(entry, dict)
        }
    return kept


@dataclass
class PreparedScan:
    key: str
    counts: np.ndarray  # (950, 512) float32 raw counts; zero where no view is placed
    display: np.ndarray  # (950, 512) uint8, brightness-normalised
    placements: list[ViewPlacement]  # one per view present, back to the original view's pixels
    metadata: dict[str, Any] = field(default_factory=dict)


def preprocess_scan(scan: ScanImage, cut_below_knee: bool = False) -> PreparedScan:
    """Views (any size) or an already merged image -> the 950 x 512 merged counts and display.

    A single view fills its half and leaves the other empty (``metadata["preprocess"]
    ["empty_views"]`` says which). An already merged image keeps its values as counts; an 8-bit
    one whose mean is already in seed 001's (7, 14) window is kept as the display pixel for pixel,
    anything else is normalised.
    """
    metadata = copy.deepcopy(scan.metadata)
    if scan.merged is not None:
        counts, display, placements, info = _prepare_merged(scan, cut_below_knee)
    elif scan.views:
        unknown = set(scan.views) - set(VIEW_ORDER)
        if unknown:
            raise ValueError(f"scan {scan.key}: unknown view(s) {sorted(unknown)}")
        merged = merge_views(
            scan.views.get("anterior"), scan.views.get("posterior"), cut_below_knee=cut_below_knee
        )
        counts, display, placements = merged.counts, merged.display, list(merged.placements)
        info = {
            "layout": "views",
            "gain": merged.gain,
            "display_rule": f"linear gain to mean {TARGET_MEAN} over the views present",
        }
    else:
        raise ValueError(f"scan {scan.key}: neither views nor a merged image")
    present = [p.view for p in placements]
    region = np.zeros(MERGED_SHAPE, dtype=bool)
    for slot, view in enumerate(VIEW_ORDER):
        if view in present:
            region[:, slot * VIEW_WIDTH : (slot + 1) * VIEW_WIDTH] = True
    info.update(
        shape=list(MERGED_SHAPE),
        views_present=present,
        empty_views=[v for v in VIEW_ORDER if v not in present],
        placements=[p.to_dict() for p in placements],
        target_mean=TARGET_MEAN,
        display_mean=round(float(display[region].mean()), 3),
        cut_below_knee=bool(cut_below_knee),
    )
    metadata["preprocess"] = info
    return PreparedScan(scan.key, counts, display, placements, metadata)


def _prepare_merged(
    scan: ScanImage, cut_below_knee: bool
) -> tuple[np.ndarray, np.ndarray, list[ViewPlacement], dict[str, Any]]:
    counts = np.asarray(scan.merged, dtype=np.float32).copy()
    if counts.shape != MERGED_SHAPE:
        raise ValueError(f"scan {scan.key}: merged image {counts.shape} is not {MERGED_SHAPE}")
    if cut_below_knee:
        counts[KNEE_ROW:] = 0
    low, high = DISPLAY_WINDOW
    is_display = scan.metadata.get("bit_depth") == 8 and low < counts.mean() < high
    if is_display:
        display = np.clip(counts, 0, 255).astype(np.uint8)
        info = {"layout": "merged", "gain": 1.0, "display_rule": "8-bit display image kept as is"}
    else:
        display, gain = normalize_brightness(counts)
        info = {
            "layout": "merged",
            "gain": gain,
            "display_rule": f"linear gain to mean {TARGET_MEAN} over the whole image",
        }
    placements = [
        ViewPlacement(view, (MERGED_HEIGHT, VIEW_WIDTH), 0, slot * VIEW_WIDTH)
        for slot, view in enumerate(VIEW_ORDER)
    ]
    return counts, display, placements, info


# ------------------------------------------------------------------------------------------------
# writing


def counts_to_uint16(counts: np.ndarray) -> tuple[np.ndarray, int]:
    """Counts rounded and clipped to 0..65535, and how many pixels were clipped."""
    rounded = np.rint(np.asarray(counts, dtype=np.float64))
    clipped = int(np.count_nonzero((rounded > UINT16_MAX) | (rounded < 0)))
    return np.clip(rounded, 0, UINT16_MAX).astype(np.uint16), clipped


def write_prepared(
    prepared: PreparedScan,
    out_dir: str | Path,
    labelme: bool = False,
    sources: Sequence[str] | None = None,
    keep_identity: bool = False,
    source_digests: Sequence[str] | None = None,
) -> dict[str, str]:
    """Write one prepared scan's files into ``out_dir``; returns {kind: file name}.

    The metadata goes through :func:`allowed_metadata`. ``sources`` (labels of the input files,
    see :func:`bsi_d2.io.pseudonym.input_label`) are written when given: file paths themselves
    only when the user asked to keep identity, since folder and file names may carry it.
    """
    out_dir = Path(out_dir)
    key = prepared.key
    files = {
        "display": f"{key}.png",
        "counts": f"{key}{COUNTS_SUFFIX}",
        "meta": f"{key}{META_SUFFIX}",
    }
    counts16, clipped = counts_to_uint16(prepared.counts)
    write_png(out_dir / files["display"], prepared.display)
    write_png(out_dir / files["counts"], counts16)
    if labelme:
        files["labelme"] = f"{key}.json"
        _write_empty_labelme(out_dir / files["labelme"], files["display"])
    metadata = allowed_metadata(prepared.metadata, keep_identity)
    metadata.update(key=key, files=files, counts_clipped_pixels=clipped)
    if sources is not None:
        metadata["sources"] = list(sources)
    if source_digests is not None:  # SHA-256 of the input files: tells a rerun from a clash
        metadata["source_digests"] = sorted(source_digests)
    text = json.dumps(metadata, indent=2, sort_keys=False)
    atomic_write_bytes(out_dir / files["meta"], text.encode("utf-8"))
    return files


def _write_empty_labelme(path: Path, image_name: str) -> None:
    from bsi_d2.io.labelme import write_labelme

    with atomic_path(path) as tmp:
        write_labelme(tmp, image_name, MERGED_SHAPE[0], MERGED_SHAPE[1], [])


@dataclass
class PreprocessSummary:
    written: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        kinds = Counter(s["kind"] for s in self.skipped)
        return {"scans_written": len(self.written), "skipped": len(self.skipped), **kinds}

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.counts, "scans": self.written, "skipped": self.skipped}


def free_key(out_dir: Path, key: str, digests: Sequence[str]) -> str:
    """``key``, unless the output folder holds another scan under it (written by an earlier run
    from other files): then the key plus a suffix from this scan's content, so no run overwrites
    another's outputs and a rerun of the same files finds its own."""
    meta = out_dir / f"{key}{META_SUFFIX}"
    if not meta.is_file():
        return key
    try:
        written = json.loads(meta.read_text(encoding="utf-8")).get("source_digests")
    except (OSError, ValueError):
        written = None
    if written == sorted(digests):
        return key
    return f"{key.split('-', 1)[0]}-{digest_suffix(digests)}"


def preprocess_paths(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    recursive: bool = True,
    salt: str | None = None,
    keep_identity: bool = False,
    labelme: bool = False,
    cut_below_knee: bool = False,
    progress: bool = True,
    limits: ReadLimits | None = None,
    keep_dates: str | None = None,
) -> PreprocessSummary:
    """Read every scan under ``inputs``, write the prepared files and ``preprocess_report.json``.

    Each scan's entry in the report, like its ``<key>.meta.json``, carries its study link
    (:data:`~bsi_d2.io.pseudonym.LINK_FIELDS`); the study date only as ``keep_dates`` (month,
    shift) or ``keep_identity`` (exact) keeps it.

    Never stops at a bad file: unreadable inputs, non-scans and scans that fail to preprocess are
    recorded in the summary with the reason. Input files are named by their labels
    (:class:`bsi_d2.io.pseudonym.InputLabels`), real paths only with ``keep_identity``.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = PreprocessSummary()
    labels = InputLabels(inputs, salt, keep_identity)
    items = iter_scans(
        inputs,
        recursive=recursive,
        salt=salt,
        keep_identity=keep_identity,
        exclude=[out_dir],
        limits=limits,
        keep_dates=keep_dates,
    )
    seen: dict[tuple[str, ...], str] = {}  # the input files' digests -> their labels, this run
    with labels.in_logs():
        for item in tqdm(items, desc="preprocess", unit="item", disable=not progress):
            if isinstance(item, SkippedInput):
                reason = labels.redact(item.reason, item.path)
                skip = {"path": labels(item.path), "kind": item.kind, "reason": reason}
                summary.skipped.append(skip)
                logger.warning("skipped (%s): %s", item.kind, reason)
                continue
            labels.know(item.digests)  # hashed as the reader read the files
            sources = [labels(s) for s in item.sources]
            try:
                digests = source_digests(item)
                if tuple(sorted(digests)) in seen:
                    reason = f"{', '.join(sources)}: same content as {seen[tuple(sorted(digests))]}"
                    summary.skipped.append(
                        {"path": sources[0], "kind": "duplicate", "reason": reason}
                    )
                    logger.info("skipped (duplicate): %s", reason)
                    continue
                seen[tuple(sorted(digests))] = ", ".join(sources)
                prepared = preprocess_scan(item, cut_below_knee=cut_below_knee)
                prepared.key = free_key(out_dir, prepared.key, digests)
                files = write_prepared(
                    prepared, out_dir, labelme, sources, keep_identity, source_digests=digests
                )
            except Exception as error:  # one bad scan must not stop the batch: record it
                detail = labels.redact(f"{type(error).__name__}: {error}", *item.sources)
                reason = f"{', '.join(sources)}: preprocessing failed: {detail}"
                summary.skipped.append({"path": sources[0], "kind": "error", "reason": reason})
                logger.error("%s", reason)
                continue
            metadata = allowed_metadata(prepared.metadata)
            entry: dict[str, Any] = {
                "key": prepared.key,
                **{name: metadata.get(name) for name in LINK_FIELDS},
                "files": files,
                "views": metadata["preprocess"]["views_present"],
                "view_rules": {
                    view: info.get("view_rule") for view, info in metadata.get("views", {}).items()
                },
                "source_count": len(item.sources),
                "sources": sources,
                "warnings": metadata.get("warnings", []),
            }
            summary.written.append(entry)
    report = json.dumps(summary.to_dict(), indent=2).encode("utf-8")
    atomic_write_bytes(out_dir / REPORT_NAME, report)
    return summary
