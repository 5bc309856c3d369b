"""Whose study a written DICOM object belongs to: the source's identity, or a pseudonym.

Objects meant for the source PACS must carry the source's patient and study identity to file
beside the scan; the toolkit otherwise writes no identity. So (``--dicom-out``):

- with ``--keep-identity``: the objects copy the source's Patient and General Study modules and
  reference the source images by their own UIDs: they file into the scan's study;
- by default (research export): PatientID and PatientName are the scan's salted
  ``patient_key`` (``pt`` + 16 hex digits; the study key where there is no PatientID), birth
  date, sex, accession number, referring physician and study ID are empty, and every UID of the
  source (study, series, instance, frame of reference) is replaced by a salted UID derived from
  it (``2.25.<integer>``, :func:`derived_uid`): stable per study, so a rerun writes the same
  study, and the same in every object, so the SEG and SR still reference "their" image. The
  study date is kept only as ``--keep-dates shift`` keeps it (the shifted day); ``month``
  cannot be written as a DICOM date and leaves it empty.

:func:`reference_header` makes the header the object builders read: the source header itself
with identity kept, else a copy holding only the image attributes the builders need plus the
pseudonymous identity — nothing else of the source's header (institution, device serial
numbers, operators) reaches the objects.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from bsi_d2.io.pseudonym import resolve_salt

# image attributes a reference header keeps from the source (no identity among them)
IMAGE_KEYWORDS = (
    "SOPClassUID", "Modality", "ImageType", "Rows", "Columns", "NumberOfFrames",
    "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated", "BitsStored", "HighBit",
    "PixelRepresentation", "PixelSpacing", "LossyImageCompression",
    "LossyImageCompressionRatio", "LossyImageCompressionMethod", "BodyPartExamined",
    "PatientPosition", "PatientOrientation", "ImageID", "PositionReferenceIndicator",
)  # fmt: skip
UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
# the Patient and General Study modules' identifying attributes, emptied (type 2) or set
EMPTY_KEYWORDS = (
    "PatientBirthDate", "PatientSex", "AccessionNumber", "ReferringPhysicianName", "StudyID",
    "StudyTime",
)  # fmt: skip

DEIDENTIFICATION = "bsi_d2 --dicom-out: salted pseudonyms, no identity kept"


@dataclass(frozen=True)
class Identity:
    """How an output's identity is made: kept (the source's) or pseudonymous with ``salt``."""

    keep: bool = False
    salt: str | None = None

    def uid(self, uid: str | None, kind: str = "uid") -> str | None:
        """The UID a written object uses for the source's ``uid``: itself when identity is
        kept, else :func:`derived_uid`."""
        if not uid:
            return None
        return str(uid) if self.keep else derived_uid(kind, str(uid), salt=self.salt)


def derived_uid(*parts: str, salt: str | None = None) -> str:
    """A UID (``2.25.<integer>``, PS3.5 B.2) from a salted hash of ``parts``: stable across
    runs, not reversible without the salt."""
    digest = hashlib.sha256(resolve_salt(salt).encode("utf-8"))
    for part in parts:
        digest.update(b"\x1f" + str(part).encode("utf-8", "surrogateescape"))
    return f"2.25.{int.from_bytes(digest.digest()[:16], 'big')}"  # 128 bits, as a UUID


def reference_header(
    source: Dataset, identity: Identity, link: Mapping[str, Any] | None = None
) -> Dataset:
    """The header the object builders read for ``source`` (see the module docstring)."""
    if identity.keep:
        header = copy.deepcopy(source)
        for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            if keyword in header:
                delattr(header, keyword)
        return header
    header = Dataset()
    for keyword in IMAGE_KEYWORDS:
        if keyword in source:
            setattr(header, keyword, copy.deepcopy(source[keyword].value))
    for keyword in UID_KEYWORDS:
        value = identity.uid(source.get(keyword), keyword)
        if value:
            setattr(header, keyword, value)
    if "StudyInstanceUID" not in header:  # a study without one: one per study key
        key = (link or {}).get("study_key") or header.get("SOPInstanceUID") or "unknown"
        header.StudyInstanceUID = derived_uid("study", str(key), salt=identity.salt)
    apply_pseudonym(header, link, identity)
    if "DetectorInformationSequence" in source:  # the view codes, nothing else of the detector
        header.DetectorInformationSequence = _views_only(source.DetectorInformationSequence)
    header.file_meta = _file_meta(header)
    return header


def apply_pseudonym(ds: Dataset, link: Mapping[str, Any] | None, identity: Identity) -> None:
    """Set the Patient and General Study modules of ``ds`` to the scan's pseudonym."""
    link = link or {}
    name = link.get("patient_key") or link.get("study_key") or "anonymous"
    ds.PatientName = f"{name}^"  # one name component: the family name
    ds.PatientID = str(name)
    for keyword in EMPTY_KEYWORDS:
        setattr(ds, keyword, "")
    ds.StudyDate = pseudonymous_date(link)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = DEIDENTIFICATION


def pseudonymous_date(link: Mapping[str, Any]) -> str:
    """The study date a pseudonymised object may carry: only a shifted one (YYYYMMDD)."""
    if link.get("study_date_kind") == "shifted" and link.get("study_date"):
        return str(link["study_date"]).replace("-", "")
    return ""


def _views_only(detectors: Any) -> list[Dataset]:
    items = []
    for detector in detectors:
        item = Dataset()
        for keyword in ("ViewCodeSequence", "ImageOrientationPatient", "StartAngle"):
            if keyword in detector:
                setattr(item, keyword, copy.deepcopy(detector[keyword].value))
        items.append(item)
    return items


def _file_meta(ds: Dataset) -> Any:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID")
    meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta
