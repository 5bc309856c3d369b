"""``--dicom-out``: a scan's SR, SEG and Secondary Capture, written into ``<scan>/dicom/``.

Files: ``sr.dcm`` (TID 1500 measurement report, :mod:`bsi_d2.pacs.sr`), ``seg_anterior.dcm`` and
``seg_posterior.dcm`` (one SEG per view, :mod:`bsi_d2.pacs.seg`; only for a DICOM source) and
``sc.dcm`` (the overlay, :mod:`bsi_d2.pacs.capture`). Identity follows
:mod:`bsi_d2.pacs.identity`. The objects' own UIDs are derived from the study and from a digest
of what they hold, so a rerun of the same scan with the same model writes the same objects
(storing them twice replaces, never duplicates) and a changed result writes new ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from bsi_d2.pacs.geometry import SourceView
from bsi_d2.pacs.identity import (
    DEIDENTIFICATION,
    Identity,
    apply_pseudonym,
    derived_uid,
    reference_header,
)
from bsi_d2.pacs.seg import SegmentMasks
from bsi_d2.taxonomy import Taxonomy

DICOM_DIR = "dicom"
SR_FILE = "sr.dcm"
SC_FILE = "sc.dcm"
SEG_FILE = "seg_{view}.dcm"
NOT_DICOM_NOTE = "no SEG: the scan was not read from DICOM, so there is no source image to refer to"


def write_dicom_objects(
    scan_dir: str | Path,
    record: Mapping[str, Any],
    taxonomy: Taxonomy,
    views: Sequence[SourceView] = (),
    masks: SegmentMasks | None = None,
    overlay: np.ndarray | None = None,
    identity: Identity | None = None,
) -> dict[str, Any]:
    """Write the scan's DICOM objects; returns the record's ``dicom`` entry: ``files`` (names
    under ``dicom/``), ``segmentations`` (per view: frame, segment number -> class, pixels that
    lie outside the source) and ``notes``."""
    from bsi_d2.pacs.capture import build_capture, burn_in_band
    from bsi_d2.pacs.seg import build_segmentation
    from bsi_d2.pacs.sr import build_report, model_text

    identity = identity or Identity()
    link = {k: record.get(k) for k in ("study_key", "patient_key", "study_date", "study_date_kind")}
    out_dir = Path(scan_dir) / DICOM_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    ref_views = _reference_views(views, identity, link)
    study = ref_views[0].header if ref_views else study_header(link, identity)
    study_uid = str(study.StudyInstanceUID)
    content = _content_digest(record, masks)
    model_name = model_text(record)

    def uid(*kind: str) -> str:
        return derived_uid("object", study_uid, content, *kind, salt=identity.salt)

    written: dict[str, Dataset] = {}
    summaries, notes = [], []
    if not ref_views:
        notes.append(NOT_DICOM_NOTE)
    elif masks is not None:
        for number, view in enumerate(ref_views, start=1):
            seg, summary = build_segmentation(
                view, view.header, masks, taxonomy, uid("seg-series"), uid("seg", view.view),
                number, model_name,
            )  # fmt: skip
            summaries.append(summary)
            if seg is not None:
                written[SEG_FILE.format(view=view.view)] = seg
            else:
                notes.append(f"no SEG for the {view.view} view: no segment in its source frame")
    if overlay is not None:
        image = burn_in_band(
            overlay, bsi=record.get("bsi") if record.get("status") == "ok" else None
        )
        written[SC_FILE] = build_capture(image, study, uid("sc-series"), uid("sc"), model_name)
    evidence = [v.header for v in ref_views] + list(written.values())
    if not evidence:
        raise ValueError("an SR needs a source image or the overlay capture to refer to")
    written[SR_FILE] = build_report(
        record, study, _distinct(evidence), ref_views, uid("sr-series"), uid("sr"),
        derived_uid("device", "bsi_d2", salt=identity.salt),
    )  # fmt: skip
    for name, ds in written.items():
        if not identity.keep:  # the builders copy the patient module, not these
            ds.PatientIdentityRemoved = "YES"
            ds.DeidentificationMethod = DEIDENTIFICATION
        save_dataset(ds, out_dir / name)
    return {"files": sorted(written), "segmentations": summaries, "notes": notes}


def study_header(link: Mapping[str, Any], identity: Identity) -> Dataset:
    """A study for a scan that was not read from DICOM: a UID from its study key, the
    pseudonymous patient (there is no identity to keep)."""
    header = Dataset()
    key = str(link.get("study_key") or "unknown")
    header.StudyInstanceUID = derived_uid("study", key, salt=identity.salt)
    header.Modality = "NM"
    apply_pseudonym(header, link, identity)
    return header


def save_dataset(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` as a Part-10 file, atomically."""
    from bsi_d2.io.files import atomic_path

    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path


def _reference_views(
    views: Sequence[SourceView], identity: Identity, link: Mapping[str, Any]
) -> list[SourceView]:
    """``views`` with each source file's header replaced by its reference header (one per
    file, shared by the views a two-frame file holds)."""
    headers: dict[int, Dataset] = {}
    out = []
    for view in views:
        key = id(view.header)
        if key not in headers:
            headers[key] = reference_header(view.header, identity, link)
        out.append(replace(view, header=headers[key]))
    return out


def _distinct(datasets: Sequence[Dataset]) -> list[Dataset]:
    seen: dict[str, Dataset] = {}
    for ds in datasets:
        seen.setdefault(str(ds.get("SOPInstanceUID") or id(ds)), ds)
    return list(seen.values())


def _content_digest(record: Mapping[str, Any], masks: SegmentMasks | None) -> str:
    digest = hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode("utf-8"))
    if masks is not None:
        for array in (masks.region_map, masks.decoy_map, masks.lesion_mask):
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:32]
