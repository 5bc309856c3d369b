"""Stable pseudonyms for studies and patients, kept study dates, and what counts as identity.

A study key is ``s`` + the first 16 hex digits of SHA-256 over ``salt`` and the study's
identifier (StudyInstanceUID; else PatientID + StudyDate; else a file's content digest); a
patient key is ``pt`` + 16 hex digits over the salt, IssuerOfPatientID and PatientID, so the
studies of one patient are linked without naming them. A study date leaves only as
``--keep-dates`` keeps it (:func:`kept_study_date`: its month, or shifted by a salted number of
days per patient), or exact with the identity. :data:`LINK_FIELDS` are what every output
carries of this (:func:`link_problem` checks them where another program wrote them). The salt
comes from the ``salt`` argument, else the environment variable ``BSI_D2_SALT``, else
:data:`DEFAULT_SALT`. With the default salt anyone holding the UID can recompute the key: set a
secret ``BSI_D2_SALT`` per site for real pseudonymity, and keep it to link keys back to studies.

Input files are named in records and logs by :func:`input_label` (pseudonymous folder and file
names plus a content digest), since archives are laid out as ``<PatientID>/<file>.dcm`` or
``DOE^JOHN/IM0001.dcm``; :class:`InputLabels` applies it to paths, free text and log records.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bsi_d2.io.base import DATE_MODES, EXACT_DATE, date_mode, reader_suffixes  # noqa: F401

SALT_ENV = "BSI_D2_SALT"
DEFAULT_SALT = "bsi-d2-default-salt"  # documented and public: pseudonymous only with a site salt
KEY_HEX_DIGITS = 16

# DICOM keywords copied into outputs only with keep_identity (the toolkit's --keep-identity)
IDENTITY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
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
        # a file name that is not UTF-8 reaches Python as surrogates: hash its original bytes
        digest.update(str(part).encode("utf-8", "surrogateescape"))
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


PATIENT_PREFIX = "pt"  # patient pseudonyms: pt + 16 hex digits
DATE_SHIFT_DAYS = 365  # a patient's dates move back by 1 .. this many days (salted, per patient)
DATE_KINDS = ("month", "shifted", EXACT_DATE)  # a kept date's study_date_kind
# what links a scan to its study and patient in every output (None where unknown)
LINK_FIELDS = ("study_key", "patient_key", "study_date", "study_date_kind")
STUDY_KEY_PATTERN = re.compile(rf"s[0-9a-f]{{{KEY_HEX_DIGITS}}}")
PATIENT_KEY_PATTERN = re.compile(rf"{PATIENT_PREFIX}[0-9a-f]{{{KEY_HEX_DIGITS}}}")
DATE_PATTERNS = {  # kind -> the form of its value
    "month": re.compile(r"\d{4}-\d{2}"),
    "shifted": re.compile(r"\d{4}-\d{2}-\d{2}"),
    EXACT_DATE: re.compile(r"\d{4}-\d{2}-\d{2}"),
}


def patient_key(
    patient_id: str | None, issuer: str | None = None, salt: str | None = None
) -> str | None:
    """Salted patient pseudonym from PatientID and IssuerOfPatientID (``pt`` + 16 hex digits);
    None without a PatientID. Two studies of one patient share it; the identity is not in it."""
    if not patient_id or not str(patient_id).strip():
        return None
    return pseudonym("patient", str(issuer or "").strip(), str(patient_id).strip(), salt=salt,
                     prefix=PATIENT_PREFIX)  # fmt: skip


def kept_study_date(
    study_date: str | None,
    mode: str,
    patient_id: str | None = None,
    issuer: str | None = None,
    salt: str | None = None,
) -> tuple[str, str] | None:
    """A DICOM StudyDate (YYYYMMDD) as ``--keep-dates`` keeps it: ``(value, kind)``.

    ``month``: ``("2024-03", "month")``. ``shift``: the date moved back by a salted number of
    days (1 .. :data:`DATE_SHIFT_DAYS`) that is the same for every study of the patient, so order
    and intervals are kept but not the day: ``("2023-06-02", "shifted")``. ``exact`` (identity
    kept, :func:`date_mode`): ``("2024-03-15", "exact")``. None when the date is missing or not
    a date, or (shift) without a PatientID to shift by.
    """
    import datetime

    if mode not in (*DATE_MODES, EXACT_DATE):
        raise ValueError(f"date mode {mode!r}: choose one of {', '.join(DATE_MODES)}")
    text = str(study_date or "").strip()
    try:
        day = datetime.datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError:
        return None
    if mode == "month":
        return f"{day.year:04d}-{day.month:02d}", "month"
    if mode == EXACT_DATE:
        return day.isoformat(), EXACT_DATE
    if not patient_id or not str(patient_id).strip():
        return None
    # a hash of its own: one of the patient_key written beside the date would undo the shift
    shift = pseudonym("date-shift", str(issuer or "").strip(), str(patient_id).strip(), salt=salt)
    offset = 1 + int(shift[1:], 16) % DATE_SHIFT_DAYS
    return (day - datetime.timedelta(days=offset)).isoformat(), "shifted"


def link_problem(link: Mapping[str, Any]) -> str | None:
    """Why ``link`` (some of :data:`LINK_FIELDS`) cannot be a scan's study link, or None. The
    values are never quoted: a misplaced one may be a PatientID or a date."""
    unknown = sorted(set(link) - set(LINK_FIELDS))
    if unknown:
        return f"unknown field(s) {', '.join(unknown)}"
    for name, pattern, form in (
        ("study_key", STUDY_KEY_PATTERN, "s"),
        ("patient_key", PATIENT_KEY_PATTERN, PATIENT_PREFIX),
    ):
        value = link.get(name)
        if value is not None and not (isinstance(value, str) and pattern.fullmatch(value)):
            return f"{name} is not {form} + {KEY_HEX_DIGITS} hex digits"
    value, kind = link.get("study_date"), link.get("study_date_kind")
    if (value is None) != (kind is None):
        return "study_date and study_date_kind come together"
    if kind is None:
        return None
    if kind not in DATE_KINDS:
        return f"study_date_kind is not one of {', '.join(DATE_KINDS)}"
    if not (isinstance(value, str) and DATE_PATTERNS[kind].fullmatch(value) and _is_date(value)):
        form = "YYYY-MM" if kind == "month" else "YYYY-MM-DD"
        return f"study_date is not a {form} date, as its kind {kind} needs"
    return None


def _is_date(text: str) -> bool:
    import datetime

    try:
        datetime.date.fromisoformat(text if len(text) > len("YYYY-MM") else f"{text}-01")
    except ValueError:
        return False
    return True


def kept_link(link: Mapping[str, Any], mode: str | None) -> dict[str, Any]:
    """A study link someone else wrote (a ``.meta.json`` companion) as this run keeps it: the
    date only where ``mode`` (:func:`date_mode`) keeps one; an exact date only where identity
    is kept (``exact``), else cut to its month under ``month`` and dropped under ``shift``
    (there is no PatientID to shift by). A month or shifted date is passed on as written."""
    kept = {name: link.get(name) for name in LINK_FIELDS}
    kind = kept["study_date_kind"]
    if mode is None or kind is None:
        kept["study_date"] = kept["study_date_kind"] = None
    elif kind == EXACT_DATE and mode != EXACT_DATE:
        month = str(kept["study_date"])[: len("YYYY-MM")]
        kept["study_date"], kept["study_date_kind"] = (
            (month, "month") if mode == "month" else (None, None)
        )
    return kept


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes: an identity-free fallback identifier for images."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def content_suffix(paths: Sequence[str | Path]) -> str:
    """Six hex digits over the sorted SHA-256 of the files: what tells two scans of one study
    apart, the same in every run whatever order the files are read in."""
    return digest_suffix([file_digest(p) for p in paths])


def digest_suffix(digests: Sequence[str]) -> str:
    """:func:`content_suffix` from the files' SHA-256 hex digests."""
    return hashlib.sha256("\x1f".join(sorted(digests)).encode("ascii")).hexdigest()[:6]


# -- input files in records and logs ---------------------------------------------------------

DIGEST_HEX_DIGITS = 16  # of a file's SHA-256 in its label: enough to find it again
MIN_REDACTED_NAME = 3  # shorter stems are not looked for in free text ("e" would hit "e.g.")
# modules whose log messages name input files (as %s arguments): relabelled while inputs are read
READER_LOGGERS = ("bsi_d2.io.readers", "bsi_d2.io.dicom")
# a log record's attribute (``extra``) giving {path: SHA-256} of files it names that the reader
# has hashed already, so that labelling them reads nothing again
RECORD_DIGESTS = "input_digests"


def path_pseudonym(name: str, salt: str | None = None) -> str:
    """Salted pseudonym of one folder name or file stem (same name, same pseudonym)."""
    return pseudonym("path", name, salt=salt, prefix="p")


def input_label(
    path: str | Path,
    roots: Sequence[str | Path] = (),
    salt: str | None = None,
    keep_identity: bool = False,
    digest: str | None = None,
) -> str:
    """How an input file is named in records and logs: folder and file names may be a
    PatientID or a patient's name (``DOE^JOHN/IM0001.dcm``).

    With ``keep_identity`` the path as given. Otherwise the path relative to the input root it
    was found under (the deepest of ``roots`` holding it; else its name alone) with every folder
    name and the file stem replaced by :func:`path_pseudonym` (a reader's suffix is kept), then
    the first 16 hex digits of its content's SHA-256 where readable:
    ``p3f9a.../p77b2....dcm (sha256:0123456789abcdef)``. The same salt gives the same label.
    ``digest``: the file's SHA-256 where the caller has it (the file is then not read).
    """
    if keep_identity:
        return str(path)
    parts = [path_pseudonym(part, salt) for part in _relative_parts(Path(path), roots)]
    suffix = Path(path).suffix
    if parts and _is_reader_suffix(suffix):
        parts[-1] = path_pseudonym(Path(path).stem, salt) + suffix
    label = "/".join(parts) or path_pseudonym("", salt)
    try:
        return f"{label} (sha256:{(digest or file_digest(path))[:DIGEST_HEX_DIGITS]})"
    except OSError:  # missing, a folder, or unreadable: the pseudonymous path alone
        return label


def _relative_parts(path: Path, roots: Sequence[str | Path]) -> tuple[str, ...]:
    best: tuple[str, ...] | None = None
    for root in map(Path, roots):
        for candidate, base in ((path, root), (path.absolute(), root.absolute())):
            if candidate == base or not candidate.is_relative_to(base):
                continue
            parts = candidate.relative_to(base).parts
            if best is None or len(parts) < len(best):
                best = parts
    return best or ((path.name,) if path.name else ())


def _is_reader_suffix(suffix: str) -> bool:
    # other suffixes may be a name's second half (DOE.JOHN): they are pseudonymised with the stem
    return suffix.lower() in reader_suffixes()


class InputLabels:
    """Labels of the inputs found under ``roots`` (:func:`input_label`), cached per path, and
    the one place where input names are taken out of free text (reader messages and log
    arguments start with the file's path)."""

    def __init__(
        self,
        roots: Sequence[str | Path] = (),
        salt: str | None = None,
        keep_identity: bool = False,
    ) -> None:
        self.roots = [Path(r) for r in roots]
        self.salt = salt
        self.keep_identity = keep_identity
        self._labels: dict[str, str] = {}
        self._digests: dict[str, str] = {}

    def __call__(self, path: str | Path) -> str:
        text = str(path)
        if text not in self._labels:
            self._labels[text] = input_label(
                path, self.roots, self.salt, self.keep_identity, self._digests.pop(text, None)
            )
        return self._labels[text]

    def know(self, digests: Mapping[str, str]) -> None:
        """SHA-256 digests of files (path -> hex) already read, so that labelling them does
        not read them again (:attr:`bsi_d2.io.base.ScanImage.digests`)."""
        for path, digest in digests.items():
            if str(path) not in self._labels:
                self._digests[str(path)] = digest

    def redact(self, text: str, *paths: str | Path) -> str:
        """``text`` with each of ``paths`` (as given, absolute or resolved) replaced by its
        label, then its file name where it stands alone and its stem where it begins another
        file's name (``image DOE^JOHN.png``); a bare word such as ``empty`` is left alone."""
        if self.keep_identity or not text:
            return str(text)
        whole: dict[str, str] = {}
        names: dict[str, str] = {}  # regular expression -> pseudonym
        for raw in paths:
            path = Path(raw)
            label = self(raw)
            for form in (str(raw), str(path), str(path.absolute()), str(path.resolve())):
                whole[form] = label
            if len(path.stem) < MIN_REDACTED_NAME:
                continue
            start = r"(?<![A-Za-z0-9])"
            if path.suffix:
                pseudonymous_name = label.split(" ")[0].rsplit("/", 1)[-1]
                names[rf"{start}{re.escape(path.name)}(?![A-Za-z0-9])"] = pseudonymous_name
            names[rf"{start}{re.escape(path.stem)}(?=\.[A-Za-z0-9])"] = path_pseudonym(
                path.stem, self.salt
            )
        for form in sorted(whole, key=len, reverse=True):
            text = text.replace(form, whole[form])
        for pattern in sorted(names, key=len, reverse=True):
            text = re.sub(pattern, names[pattern], text)  # pseudonyms hold no backslash
        return text

    def is_input(self, value: Any) -> bool:
        """Whether a log argument names a file or folder under one of the roots."""
        if not isinstance(value, (str, Path)) or not self.roots:
            return False
        path = Path(value)
        if isinstance(value, str) and not path.exists():
            return False  # a message string, not a path
        return any(path.absolute().is_relative_to(root.absolute()) for root in self.roots)

    @contextmanager
    def in_logs(self, names: Sequence[str] = READER_LOGGERS) -> Iterator[None]:
        """While the block runs, log records of ``names`` show labels instead of input paths."""
        if self.keep_identity:
            yield
            return
        label_filter = _InputPathFilter(self)
        loggers = [logging.getLogger(name) for name in names]
        for logger in loggers:
            logger.addFilter(label_filter)
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeFilter(label_filter)


class _InputPathFilter(logging.Filter):
    """Replaces log arguments that are input paths by their labels (records keep their level)."""

    def __init__(self, labels: InputLabels) -> None:
        super().__init__()
        self.labels = labels

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            labels = self.labels
            labels.know(getattr(record, RECORD_DIGESTS, None) or {})
            record.args = tuple(labels(a) if labels.is_input(a) else a for a in record.args)
        return True
