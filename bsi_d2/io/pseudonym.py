"""Stable pseudonyms for studies, and the list of what counts as identity.

A study key is ``s`` + the first 16 hex digits of SHA-256 over ``salt`` and the study's
identifier (StudyInstanceUID; else PatientID + StudyDate; else a file's content digest). The salt
comes from the ``salt`` argument, else the environment variable ``BSI_D2_SALT``, else
:data:`DEFAULT_SALT`. With the default salt anyone holding the UID can recompute the key: set a
secret ``BSI_D2_SALT`` per site for real pseudonymity, and keep it to link keys back to studies.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

SALT_ENV = "BSI_D2_SALT"
DEFAULT_SALT = "bsi-d2-default-salt"  # documented and public: pseudonymous only with a site salt
KEY_HEX_DIGITS = 16

# DICOM keywords copied into outputs only with keep_identity (the toolkit's --keep-identity)
IDENTITY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "StudyDate",
    "AccessionNumber",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "InstitutionName",
)


def resolve_salt(salt: str | None = None) -> str:
    """The salt to use: the argument, else ``$BSI_D2_SALT``, else :data:`DEFAULT_SALT`."""
    if salt:
        return salt
    return os.environ.get(SALT_ENV) or DEFAULT_SALT


def pseudonym(*parts: str, salt: str | None = None, prefix: str = "s") -> str:
    """``prefix`` + 16 hex digits of SHA-256 over the salt and ``parts``; stable across runs."""
    digest = hashlib.sha256(resolve_salt(salt).encode("utf-8"))
    for part in parts:
        digest.update(b"\x1f")  # unit separator: ("ab", "c") and ("a", "bc") differ
        digest.update(str(part).encode("utf-8"))
    return prefix + digest.hexdigest()[:KEY_HEX_DIGITS]


def study_key(
    study_uid: str | None = None,
    patient_id: str | None = None,
    study_date: str | None = None,
    fallback: str | None = None,
    salt: str | None = None,
) -> str:
    """Pseudonymous study key from the best identifier available (see the module docstring)."""
    if study_uid:
        return pseudonym("study", study_uid, salt=salt)
    if patient_id and study_date:
        return pseudonym("patient-date", patient_id, study_date, salt=salt)
    if fallback:
        return pseudonym("content", fallback, salt=salt)
    raise ValueError("no identifier to derive a study key from")


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes: an identity-free fallback identifier for images."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
