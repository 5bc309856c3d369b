"""Phantom count views as DICOM NM whole-body files, written with pydicom.

Two layouts: one NM Image Storage file with two frames (anterior, posterior) indexed by
DetectorVector, as most cameras store a whole-body study; or, as GE Genie/Millennium exports do,
one single-frame file per view identified only by ImageID and SeriesDescription. The identity is
synthetic but realistic-looking, so de-identification downstream can be tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

NM_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.20"
IMAGE_TYPE = ["ORIGINAL", "PRIMARY", "WHOLE BODY", "EMISSION"]
VIEW_CODES = {"anterior": ("ANT", "anterior"), "posterior": ("POST", "posterior")}
CODING_SCHEME = "99BSID2"  # local scheme: no standard code is claimed for the view
START_ANGLE = {"anterior": 180.0, "posterior": 0.0}
# rows run head to feet; columns run to the patient's left (anterior) or right (posterior)
ORIENTATION = {
    "anterior": [1.0, 0.0, 0.0, 0.0, 0.0, -1.0],
    "posterior": [-1.0, 0.0, 0.0, 0.0, 0.0, -1.0],
}


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


def _base_dataset(
    identity: SyntheticIdentity,
    rows: int,
    columns: int,
    spacing_mm: float,
    sop_uid: str,
    series_uid: str,
    series_number: int,
):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = NM_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = NM_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = _uid(identity, "study")
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = _uid(identity, "frame-of-reference")
    ds.Modality = "NM"
    ds.ImageType = IMAGE_TYPE
    ds.PatientName = identity.patient_name
    ds.PatientID = identity.patient_id
    ds.PatientBirthDate = identity.birth_date
    ds.PatientSex = identity.sex
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = identity.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.StudyID = "1"
    ds.AccessionNumber = identity.patient_id[-6:]
    ds.SeriesNumber = series_number
    ds.InstanceNumber = 1
    ds.Manufacturer = "bsi_d2 phantom"
    ds.InstitutionName = "Synthetic"
    ds.BodyPartExamined = "WHOLE BODY"
    ds.ProtocolName = "Whole Body Bone"
    ds.StudyDescription = "NM WHOLE BODY BONE SCAN (SYNTHETIC)"
    ds.RadiopharmaceuticalInformationSequence = [_radiopharmaceutical()]
    ds.PatientPosition = "HFS"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.PixelSpacing = [f"{spacing_mm:.4f}", f"{spacing_mm:.4f}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    return ds


def _radiopharmaceutical():
    from pydicom.dataset import Dataset

    item = Dataset()
    item.Radiopharmaceutical = "Tc99m MDP"
    item.RadionuclideTotalDose = "740000000"
    return item


def _detector(view: str, with_view_code: bool = True):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.StartAngle = f"{START_ANGLE[view]:g}"
    item.ImageOrientationPatient = ORIENTATION[view]
    item.ImagePositionPatient = [0.0, 0.0, 0.0]
    if with_view_code:
        code = Dataset()
        code.CodeValue, code.CodeMeaning = VIEW_CODES[view]
        code.CodingSchemeDesignator = CODING_SCHEME
        item.ViewCodeSequence = [code]
    return item


def write_two_frame(
    path: Path,
    anterior: np.ndarray,
    posterior: np.ndarray,
    identity: SyntheticIdentity,
    spacing_mm: float,
) -> Path:
    """One NM file, frame 1 anterior and frame 2 posterior, indexed by DetectorVector."""
    from pydicom.tag import Tag

    rows, columns = anterior.shape
    ds = _base_dataset(
        identity, rows, columns, spacing_mm, _uid(identity, "instance"), _uid(identity, "series"), 1
    )
    ds.SeriesDescription = "WB ANT/POST"
    ds.ImageID = "WHOLE BODY"
    ds.NumberOfFrames = 2
    ds.FrameIncrementPointer = Tag("DetectorVector")
    ds.NumberOfDetectors = 2
    ds.DetectorVector = [1, 2]
    ds.NumberOfEnergyWindows = 1
    ds.EnergyWindowVector = [1, 1]
    ds.DetectorInformationSequence = [_detector("anterior"), _detector("posterior")]
    frames = np.stack([anterior, posterior]).astype("<u2")
    ds.PixelData = frames.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_one_view(
    path: Path, counts: np.ndarray, view: str, identity: SyntheticIdentity, spacing_mm: float
) -> Path:
    """One single-frame file for one view, GE style: the view is in ImageID and
    SeriesDescription and in the detector's StartAngle/orientation, with no view code."""
    from pydicom.tag import Tag

    code = VIEW_CODES[view][0]
    rows, columns = counts.shape
    ds = _base_dataset(
        identity,
        rows,
        columns,
        spacing_mm,
        _uid(identity, f"instance-{view}"),
        _uid(identity, f"series-{view}"),
        1 if view == "anterior" else 2,
    )
    ds.SeriesDescription = f"WB {code}"
    ds.ImageID = "WHOLE BODY_E"  # as GE writes it for both views: the view is elsewhere
    ds.NumberOfFrames = 1
    ds.FrameIncrementPointer = Tag("DetectorVector")
    ds.NumberOfDetectors = 1
    ds.DetectorVector = [1]
    ds.DetectorInformationSequence = [_detector(view, with_view_code=False)]
    ds.PixelData = np.asarray(counts).astype("<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
