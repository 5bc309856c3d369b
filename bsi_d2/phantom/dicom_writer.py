"""Synthetic DICOM NM whole-body files, written with pydicom: the phantoms' and the tests'.

:func:`build_nm_dataset` makes any NM dataset a reader test needs (one or more frames; detector
items with or without a view code, orientation or start angle; top-level attributes; another
modality or SOP class); :func:`write_dataset` writes it, compressed if asked. The phantom's two
layouts are built with it: :func:`write_two_frame`, one NM Image Storage file with two frames
(anterior, posterior) indexed by DetectorVector, as most cameras store a whole-body study, and
:func:`write_one_view`, one single-frame file per view, as GE Genie/Millennium exports do, with
the view only in ImageID, SeriesDescription and the detector's geometry (no view code). The
phantom identity is synthetic but realistic-looking, so de-identification downstream can be
tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

NM_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.20"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
IMAGE_TYPE = ("ORIGINAL", "PRIMARY", "WHOLE BODY", "EMISSION")
# ViewCodeSequence item (CodeValue, CodingSchemeDesignator, CodeMeaning): DICOM CID 26, Nuclear
# Medicine Projection, SNOMED CT
VIEW_CODES = {
    "anterior": ("399321004", "SCT", "Anterior projection"),
    "posterior": ("399001007", "SCT", "Posterior projection"),
}
LOCAL_SCHEME = "99BSID2"  # private scheme ("99" prefix) for a test's own code meanings
VIEW_ABBREVIATIONS = {"anterior": "ANT", "posterior": "POST"}  # in series and image names
START_ANGLE = {"anterior": 180.0, "posterior": 0.0}
# detector ImageOrientationPatient: rows run head to feet; columns to the patient's left
# (anterior) or right (posterior), the posterior view being mirrored left-right
ORIENTATION = {
    "anterior": [1.0, 0.0, 0.0, 0.0, 0.0, -1.0],
    "posterior": [-1.0, 0.0, 0.0, 0.0, 0.0, -1.0],
}
# NM Multi-frame module: a WHOLE BODY image's frames are indexed by energy window and detector
FRAME_INCREMENT_POINTER = [0x00540010, 0x00540020]  # EnergyWindowVector, DetectorVector


def build_nm_dataset(
    frames: list[np.ndarray],
    *,
    detectors: list[dict[str, Any]] | None = None,
    attributes: dict[str, Any] | None = None,
    modality: str = "NM",
    sop_class: str = NM_IMAGE_STORAGE,
    image_type: tuple[str, ...] = IMAGE_TYPE,
    study_uid: str | None = None,
    series_uid: str | None = None,
    instance_uid: str | None = None,
    pixel_spacing: float = 2.26,
) -> Any:
    """An NM dataset with ``frames`` (uint16 (H, W) each) as a synthetic whole-body scan.

    ``detectors``: one dict per frame with any of ``view_code`` (a view, coded as
    :data:`VIEW_CODES`, or any other text, taken as the CodeMeaning of a local code),
    ``orientation`` (a view or six direction cosines), ``start_angle`` (a view or degrees),
    ``position`` (ImagePositionPatient); None leaves out DetectorInformationSequence.
    ``attributes``: keyword -> value set at the top level last (e.g. StartAngle, ImageID,
    SeriesDescription, PatientName, InstanceNumber). UIDs not given are generated.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = np.stack([np.asarray(f, dtype=np.uint16) for f in frames])
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = instance_uid or generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.ImageType = list(image_type)
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientName = "Synthetic^Phantom"
    ds.PatientID = "PHANTOM-0"
    ds.PatientBirthDate = ""
    ds.Manufacturer = "bsi_d2 synthetic"
    ds.InstanceNumber = 1
    ds.Rows, ds.Columns = pixels.shape[1:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [pixel_spacing, pixel_spacing]
    ds.NumberOfFrames = len(frames)
    ds.FrameIncrementPointer = FRAME_INCREMENT_POINTER
    ds.EnergyWindowVector = [1] * len(frames)
    ds.NumberOfEnergyWindows = 1
    if detectors is not None:
        ds.DetectorVector = list(range(1, len(detectors) + 1))
        ds.NumberOfDetectors = len(detectors)
        ds.DetectorInformationSequence = [_detector_item(spec) for spec in detectors]
    else:
        ds.DetectorVector = [1] * len(frames)
        ds.NumberOfDetectors = 1
    for keyword, value in (attributes or {}).items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.astype("<u2").tobytes()
    return ds


def _detector_item(spec: dict[str, Any]) -> Any:
    """One DetectorInformationSequence item from a ``detectors`` entry of build_nm_dataset."""
    from pydicom.dataset import Dataset

    item = Dataset()
    if "view_code" in spec:
        value, scheme, meaning = VIEW_CODES.get(
            spec["view_code"], ("LOCAL", LOCAL_SCHEME, spec["view_code"])
        )
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
        item.ViewCodeSequence = [code]
    if "orientation" in spec:
        item.ImageOrientationPatient = ORIENTATION.get(spec["orientation"], spec["orientation"])
    if "position" in spec:
        item.ImagePositionPatient = spec["position"]
    if "start_angle" in spec:
        item.StartAngle = START_ANGLE.get(spec["start_angle"], spec["start_angle"])
    return item


def write_dataset(ds: Any, path: str | Path, transfer_syntax: str | None = None) -> Path:
    """Write ``ds`` as a DICOM file (with preamble and file meta), compressed if asked."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if transfer_syntax is not None:
        ds.compress(transfer_syntax)
    ds.save_as(path, enforce_file_format=True)
    return path


# -- phantoms -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticIdentity:
    """Made-up patient identity and study key for one phantom (deterministic per patient)."""

    patient_name: str
    patient_id: str
    birth_date: str
    sex: str
    study_date: str
    uid_seed: str  # entropy for the study/series/instance UIDs

    @classmethod
    def sample(cls, rng: np.random.Generator, uid_seed: str) -> SyntheticIdentity:
        family = [
            "Moreau",
            "Tanaka",
            "Okafor",
            "Lindqvist",
            "Novak",
            "Haddad",
            "Silva",
            "Chen",
            "Kowalski",
            "Brennan",
            "Rossi",
            "Petrov",
        ]
        given = [
            "Ana",
            "Ben",
            "Chiara",
            "Dmitri",
            "Eun",
            "Farid",
            "Greta",
            "Hugo",
            "Ines",
            "Jonas",
            "Kemi",
            "Lior",
        ]
        year = int(rng.integers(1935, 1980))
        return cls(
            patient_name=f"{family[int(rng.integers(len(family)))]}^"
            f"{given[int(rng.integers(len(given)))]}",
            patient_id=f"PH{int(rng.integers(10**7, 10**8))}",
            birth_date=f"{year:04d}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}",
            sex="M" if rng.random() < 0.5 else "F",
            study_date=f"2024{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}",
            uid_seed=uid_seed,
        )


def _uid(identity: SyntheticIdentity, what: str) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[identity.uid_seed, what])


def study_uid(identity: SyntheticIdentity) -> str:
    """The StudyInstanceUID of the phantom's files (both layouts)."""
    return _uid(identity, "study")


def study_link(identity: SyntheticIdentity) -> dict[str, str | None]:
    """Study key, patient key and shifted study date of the phantom's DICOM, as a reader derives
    them with the salt of ``$BSI_D2_SALT`` or the default (what ``<id>.meta.json`` holds)."""
    from bsi_d2.io.pseudonym import kept_study_date, patient_key, study_key

    kept = kept_study_date(identity.study_date, "shift", identity.patient_id, None, salt=None)
    date, kind = kept if kept is not None else (None, None)
    return {
        "study_key": study_key(study_uid=study_uid(identity), salt=None),
        "patient_key": patient_key(identity.patient_id, None, salt=None),
        "study_date": date,
        "study_date_kind": kind,
    }


def _phantom_attributes(identity: SyntheticIdentity, series_number: int) -> dict[str, Any]:
    """The phantom's patient, study and acquisition attributes (all synthetic)."""
    from pydicom.dataset import Dataset

    radiopharmaceutical = Dataset()
    radiopharmaceutical.Radiopharmaceutical = "Tc99m MDP"
    radiopharmaceutical.RadionuclideTotalDose = "740000000"
    return {
        "FrameOfReferenceUID": _uid(identity, "frame-of-reference"),
        "PatientName": identity.patient_name,
        "PatientID": identity.patient_id,
        "PatientBirthDate": identity.birth_date,
        "PatientSex": identity.sex,
        "StudyDate": identity.study_date,
        "SeriesDate": identity.study_date,
        "ContentDate": identity.study_date,
        "StudyTime": "101500",
        "SeriesTime": "101500",
        "ContentTime": "101500",
        "StudyID": "1",
        "AccessionNumber": identity.patient_id[-6:],
        "SeriesNumber": series_number,
        "Manufacturer": "bsi_d2 phantom",
        "InstitutionName": "Synthetic",
        "BodyPartExamined": "WHOLE BODY",
        "ProtocolName": "Whole Body Bone",
        "StudyDescription": "NM WHOLE BODY BONE SCAN (SYNTHETIC)",
        "RadiopharmaceuticalInformationSequence": [radiopharmaceutical],
        "PatientPosition": "HFS",
    }


def _phantom_detector(view: str, with_view_code: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {"orientation": view, "position": [0.0, 0.0, 0.0], "start_angle": view}
    return {"view_code": view, **spec} if with_view_code else spec


def write_two_frame(
    path: Path,
    anterior: np.ndarray,
    posterior: np.ndarray,
    identity: SyntheticIdentity,
    spacing_mm: float,
) -> Path:
    """One NM file, frame 1 anterior and frame 2 posterior, indexed by DetectorVector."""
    ds = build_nm_dataset(
        [anterior, posterior],
        detectors=[_phantom_detector("anterior"), _phantom_detector("posterior")],
        attributes={
            **_phantom_attributes(identity, series_number=1),
            "SeriesDescription": "WB ANT/POST",
            "ImageID": "WHOLE BODY",
        },
        study_uid=study_uid(identity),
        series_uid=_uid(identity, "series"),
        instance_uid=_uid(identity, "instance"),
        pixel_spacing=spacing_mm,
    )
    return write_dataset(ds, path)


def write_one_view(
    path: Path, counts: np.ndarray, view: str, identity: SyntheticIdentity, spacing_mm: float
) -> Path:
    """One single-frame file for one view, GE style: the view is in ImageID and
    SeriesDescription and in the detector's StartAngle/orientation, with no view code."""
    ds = build_nm_dataset(
        [counts],
        detectors=[_phantom_detector(view, with_view_code=False)],
        attributes={
            **_phantom_attributes(identity, series_number=1 if view == "anterior" else 2),
            "SeriesDescription": f"WB {VIEW_ABBREVIATIONS[view]}",
            "ImageID": "WHOLE BODY_E",  # as GE writes it for both views: the view is elsewhere
        },
        study_uid=study_uid(identity),
        series_uid=_uid(identity, f"series-{view}"),
        instance_uid=_uid(identity, f"instance-{view}"),
        pixel_spacing=spacing_mm,
    )
    return write_dataset(ds, path)
