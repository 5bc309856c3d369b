"""Coded concepts of the DICOM objects ``--dicom-out`` writes.

Anatomy and findings use SNOMED CT (SCT) and DICOM (DCM) codes where a code exists; each one is
taken from pydicom's concept dictionary by name, so a misspelt name fails at import instead of
writing an unknown code. The BSI and its parts have no standard code: they carry codes of the
toolkit's private scheme :data:`SCHEME` ("99" prefix, PS3.16 section 8.2: local schemes), which
each SR and SEG declares in its CodingSchemeIdentificationSequence.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from bsi_d2.postprocess.bsi import ASSESSED_BOTH, ASSESSED_ONE, BURDEN_GROUPS, NOT_ASSESSED
from bsi_d2.taxonomy import BENIGN_NAME, ClassDef

SCHEME = "99BSID2"
SCHEME_NAME = "bsi_d2 local codes"
SCHEME_RESPONSIBLE = "bsi_d2 project"


def local(value: str, meaning: str) -> Code:
    """A code of the toolkit's private scheme."""
    return Code(value, SCHEME, meaning)


BSI = local("BSI", "Bone Scan Index")
BSI_COVERAGE = local("BSICOV", "Skeletal weight assessed")
REGION_BSI = local("RBSI", "Bone Scan Index contribution of region")
INVOLVEMENT = local("INV", "Region involvement")
INVOLVEMENT_VIEW = {
    "anterior": local("INVA", "Region involvement, anterior view"),
    "posterior": local("INVP", "Region involvement, posterior view"),
}
SKELETAL_WEIGHT = local("WEIGHT", "Skeletal weight of region")
BSTBI = local("BSTBI", "Bone scan tumour burden index, mean of views")
BSTBI_VIEW = {
    "anterior": local("BSTBIA", "Bone scan tumour burden index, anterior view"),
    "posterior": local("BSTBIP", "Bone scan tumour burden index, posterior view"),
}
LESION_COUNT = local("LESCNT", "Number of lesions counted")
REGION_LESION_COUNT = local("RLESCNT", "Number of lesions counted in region")
BURDEN_GROUP = local("BURDEN", "Lesion burden group")
QC_STATUS = local("QC", "Quality control status")
REGION_ASSESSED = local("ASSESSED", "Region assessed")
AID_STATEMENT = local("AID", "Use of this result")
MODEL = local("MODEL", "Model")
WHOLE_BODY_BONE_SCAN = local("WBBS", "Whole-body bone scintigraphy")
SCAN_FINDINGS = local("SCAN", "Whole-body bone scan")
SEGMENT_ALGORITHM_FAMILY = codes.DCM.ArtificialIntelligence
DEVICE_OBSERVER = codes.DCM.Device  # the SR's observer: this software, not a person

# the values of coded qualitative evaluations
QC_VALUES = {
    "passed": local("QCPASS", "Passed quality control"),
    "warning": local("QCWARN", "Passed quality control with warnings"),
    "failed": local("QCFAIL", "Failed quality control: result withheld"),
}
ASSESSED_VALUES = {
    ASSESSED_BOTH: local("BOTHVIEWS", "Assessed in both views"),
    ASSESSED_ONE: local("ONEVIEW", "Assessed in one view"),
    NOT_ASSESSED: local("NOTASSESSED", "Not assessed"),
}
BURDEN_VALUES = {
    name: local(f"BURDEN{name.upper()}"[:16], f"Lesion burden group: {name}")
    for name, _, _ in BURDEN_GROUPS
}

UCUM = "UCUM"
PERCENT = Code("%", UCUM, "percent")
RATIO = Code("1", UCUM, "no units")
COUNT = Code("{lesions}", UCUM, "lesions")

VIEW_CODES = {
    "anterior": codes.SCT.AnteriorProjection,
    "posterior": codes.SCT.PosteriorProjection,
}
LATERALITY = {"right": codes.SCT.Right, "left": codes.SCT.Left}

# taxonomy bone / class names -> SCT anatomy; a custom class not here gets a local code
_ANATOMY = {
    "skull": codes.SCT.Skull,
    "spine": codes.SCT.Spine,
    "chest": codes.SCT.BoneStructureOfThorax,
    "humerus": codes.SCT.Humerus,
    "pelvis": codes.SCT.BoneStructureOfPelvis,
    "femurs": codes.SCT.Femur,
    "femur": codes.SCT.Femur,
    "kidney": codes.SCT.Kidney,
    "bladder": codes.SCT.Bladder,
}
ANATOMIC_CATEGORY = codes.SCT.AnatomicalStructure
ABNORMAL_CATEGORY = codes.SCT.MorphologicallyAbnormalStructure
LESION_TYPE = codes.SCT.Lesion
BENIGN_TYPE = local("BENIGN", "Hot spot judged benign by the model")


def bone_site(bone: str) -> tuple[Code, Code | None]:
    """A BSI bone's anatomy code and laterality: ``humerus_right`` -> (Humerus, Right)."""
    stem, _, side = bone.rpartition("_")
    if side in LATERALITY and stem:
        return _anatomy(stem), LATERALITY[side]
    return _anatomy(bone), None


def segment_codes(cls: ClassDef) -> tuple[Code, Code]:
    """(segmented property category, type) of a taxonomy class's SEG segment."""
    if cls.is_lesion:
        return ABNORMAL_CATEGORY, LESION_TYPE
    if cls.is_decoy and cls.name == BENIGN_NAME:  # uptake, not an organ
        return ABNORMAL_CATEGORY, BENIGN_TYPE
    if cls.is_region and cls.bone:
        return ANATOMIC_CATEGORY, bone_site(cls.bone)[0]
    return ANATOMIC_CATEGORY, _anatomy(cls.name)


def _anatomy(name: str) -> Code:
    return _ANATOMY.get(name) or local(name.upper()[:16], name.replace("_", " "))


def coding_scheme_item() -> Dataset:
    """The CodingSchemeIdentificationSequence item that declares :data:`SCHEME`."""
    item = Dataset()
    item.CodingSchemeDesignator = SCHEME
    item.CodingSchemeName = SCHEME_NAME
    item.CodingSchemeResponsibleOrganization = SCHEME_RESPONSIBLE
    return item


def declare_scheme(ds: Dataset) -> None:
    """Add :func:`coding_scheme_item` to ``ds`` (once)."""
    from pydicom.sequence import Sequence

    existing = ds.get("CodingSchemeIdentificationSequence") or Sequence()
    if not any(item.get("CodingSchemeDesignator") == SCHEME for item in existing):
        existing.append(coding_scheme_item())
    ds.CodingSchemeIdentificationSequence = existing
