"""The scan's result as a DICOM Structured Report: TID 1500 Measurement Report.

Why TID 1500 (in a Comprehensive SR document) rather than a free Comprehensive SR tree: the BSI
and its parts are measurements of the scan and of its skeletal regions, which is what TID 1500's
measurement groups (TID 1501) hold, each with a tracking identifier, a finding site and coded
measurements with units; viewers and tools that read quantitative SR (OHIF, highdicom, dcmqi)
read them without knowing this toolkit. Comprehensive SR, not Enhanced SR, so the aid statement
and quality-control reasons can sit as TEXT items in the scan's group (PS3.16 TID 1501 row 16,
"Comment"-type text evaluations), and not Comprehensive 3D SR: nothing here has 3D coordinates.

Content:

- the scan's group: BSI total (%), the weight assessed (%), BSTBI per view and mean (ratio),
  lesion count, burden group and quality-control status (coded), the model and the
  "aid, not a diagnosis" statement (text), and the source image frames it measured;
- one group per BSI bone: its BSI share (%), involvement per view and combined (ratio), skeletal
  weight (%), lesion count, and whether it was assessed (coded), with the bone's SCT code
  (and laterality) as the finding site.

A scan that failed quality control or could not be assessed carries no measurements, only its
status, the reasons and the statement: it is never written as a normal result. The report is
complete but UNVERIFIED: a physician verifies it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydicom.dataset import Dataset

from bsi_d2 import __version__
from bsi_d2.pacs import codes
from bsi_d2.pacs.geometry import SourceView
from bsi_d2.postprocess.bsi import VIEW_ORDER
from bsi_d2.report.html import AID_LINE

SR_SERIES_NUMBER = 9101
SR_SERIES_DESCRIPTION = "bsi_d2 BSI report (aid, not a diagnosis)"
MANUFACTURER = "bsi_d2"


def model_text(record: Mapping[str, Any]) -> str:
    """The model's identity as the report names it: engine, config and weights file names."""
    from pathlib import PurePath

    model = record.get("model") or {}
    parts = [f"bsi_d2 {__version__}", f"engine {model.get('engine') or 'unknown'}"]
    for what in ("config", "weights"):
        if model.get(what):  # file names only: folders may name people
            parts.append(f"{what} {PurePath(str(model[what])).name}")
    return ", ".join(parts)


def build_report(
    record: Mapping[str, Any],
    header: Dataset,
    evidence: Sequence[Dataset],
    views: Sequence[SourceView],
    series_uid: str,
    instance_uid: str,
    device_uid: str,
) -> Dataset:
    """The SR of ``record`` (a scan's bsi.json). ``header``: the study's reference header
    (:func:`~bsi_d2.pacs.identity.reference_header`), whose patient and study it files under;
    ``evidence``: the source image headers and the SEGs; ``views``: the source frames measured
    (empty where the source is not DICOM)."""
    import highdicom as hd

    algorithm = hd.sr.AlgorithmIdentification(name=MANUFACTURER, version=__version__)
    groups = [_scan_group(record, views, algorithm)]
    if record.get("status") == "ok":
        groups += [_region_group(row, algorithm) for row in record.get("regions") or []]
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=hd.sr.CodedConcept.from_code(codes.DEVICE_OBSERVER),
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=device_uid,
                name=MANUFACTURER,
                manufacturer_name=MANUFACTURER,
                model_name=model_text(record)[:64],
            ),  # fmt: skip
        )
    )
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=codes.WHOLE_BODY_BONE_SCAN,
        imaging_measurements=groups,
    )
    sr = hd.sr.ComprehensiveSR(
        evidence=[e for e in evidence if "SOPInstanceUID" in e],
        content=report[0],
        series_instance_uid=series_uid,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=SR_SERIES_DESCRIPTION,
    )
    codes.declare_scheme(sr)
    return sr


def _scan_group(record: Mapping[str, Any], views: Sequence[SourceView], algorithm) -> Any:
    import highdicom as hd

    measurements = []
    if record.get("status") == "ok":
        measurements += [
            _measure(codes.BSI, record.get("bsi"), codes.PERCENT),
            _measure(codes.BSI_COVERAGE, record.get("bsi_coverage"), codes.PERCENT),
            _measure(codes.BSTBI, record.get("bstbi"), codes.RATIO),
            *[
                _measure(codes.BSTBI_VIEW[view], record.get(f"bstbi_{view}"), codes.RATIO)
                for view in VIEW_ORDER
            ],
            _measure(codes.LESION_COUNT, record.get("lesion_count"), codes.COUNT),
        ]
    evaluations = [hd.sr.QualitativeEvaluation(codes.QC_STATUS, _qc_value(record))]
    if record.get("status") == "ok" and record.get("burden_group") in codes.BURDEN_VALUES:
        value = codes.BURDEN_VALUES[record["burden_group"]]
        evaluations.append(hd.sr.QualitativeEvaluation(codes.BURDEN_GROUP, value))
    sources = [
        hd.sr.SourceImageForMeasurementGroup.from_source_image(header, frames)
        for header, frames in source_frames(views)
    ]
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=hd.UID(), identifier=f"scan {record.get('key')}"
        ),
        finding_type=codes.SCAN_FINDINGS,
        algorithm_id=algorithm,
        measurements=[m for m in measurements if m is not None] or None,
        qualitative_evaluations=evaluations,
        source_images=sources or None,
    )
    texts = [(codes.AID_STATEMENT, AID_LINE), (codes.MODEL, model_text(record))]
    if record.get("status") != "ok" and record.get("error"):
        texts.append((codes.QC_STATUS, str(record["error"])))
    for warning in (record.get("qc") or {}).get("warnings") or []:
        texts.append((codes.QC_STATUS, f"warning: {warning}"))
    container = group[0]
    for name, value in texts:
        container.ContentSequence.append(
            hd.sr.TextContentItem(
                name=name,
                value=str(value)[:1024],
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )  # fmt: skip
        )
    return group


def _region_group(row: Mapping[str, Any], algorithm) -> Any:
    import highdicom as hd

    site, laterality = codes.bone_site(str(row["bone"]))
    measurements = [
        _measure(codes.REGION_BSI, row.get("bsi"), codes.PERCENT),
        _measure(codes.INVOLVEMENT, row.get("involvement"), codes.RATIO),
        *[
            _measure(codes.INVOLVEMENT_VIEW[view], row.get(f"involvement_{view}"), codes.RATIO)
            for view in VIEW_ORDER
        ],
        _measure(codes.SKELETAL_WEIGHT, row.get("weight"), codes.PERCENT),
    ]
    evaluations = []
    if row.get("assessed") in codes.ASSESSED_VALUES:
        value = codes.ASSESSED_VALUES[row["assessed"]]
        evaluations.append(hd.sr.QualitativeEvaluation(codes.REGION_ASSESSED, value))
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=hd.UID(), identifier=f"region {row['bone']}"
        ),
        finding_type=site,
        algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(anatomic_location=site, laterality=laterality)],
        measurements=[m for m in measurements if m is not None] or None,
        qualitative_evaluations=evaluations or None,
    )


def _measure(name, value, unit):
    import highdicom as hd

    if value is None:
        return None
    measurement = hd.sr.Measurement(name=name, value=float(value), unit=unit)
    # a DS holds 16 characters; the exact double goes beside it (PS3.3 C.18.1.1.1, Type 1C)
    measurement[0].MeasuredValueSequence[0].FloatingPointValue = float(value)
    return measurement


def _qc_value(record: Mapping[str, Any]):
    qc = record.get("qc") or {}
    if record.get("status") != "ok":
        return codes.QC_VALUES["failed"]
    if qc.get("warnings"):
        return codes.QC_VALUES["warning"]
    return codes.QC_VALUES["passed"]


def source_frames(views: Sequence[SourceView]) -> list[tuple[Dataset, list[int] | None]]:
    """Each source file of ``views`` with the frame numbers measured in it (None for a
    single-frame image)."""
    found: dict[str, tuple[Dataset, list[int]]] = {}
    for view in views:
        header, frames = found.setdefault(str(view.header.SOPInstanceUID), (view.header, []))
        frames.append(view.frame)
    return [
        (header, sorted(frames) if "NumberOfFrames" in header else None)
        for header, frames in found.values()
    ]
