"""What every scan reader shares: the scan type, the errors, the reader interface and registry.

A reader is a class with a ``name``, the file ``suffixes`` it reads, ``recognises`` (for files
without a known suffix, from their first :data:`SNIFF_BYTES` bytes) and ``read``; it takes the
pseudonym salt, identity handling, :class:`~bsi_d2.io.limits.ReadLimits` and how study dates are
kept (:class:`ScanReader`). :func:`register_reader` puts it in :data:`READERS`, where
:func:`bsi_d2.io.readers.read_scan_file` finds it by file type; the concrete readers
(:mod:`bsi_d2.io.dicom`, :mod:`bsi_d2.io.readers`) import this module, never each other.

The header checks every reader makes before decoding (file size, whole-body view shape) and
after (counts that cannot be counts) live here too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np

from bsi_d2.io.limits import DEFAULT_LIMITS, ReadLimits
from bsi_d2.structures.histogram import CountHistogram

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic", ".ima")
IMAGE_SUFFIXES = (".png", ".tif", ".tiff")
LABELME_SUFFIXES = (".json",)
# the raw-count companion of a display image <stem>.png/.tif is <stem>.counts.png (16-bit), as
# `bsi-d2 preprocess` and the phantoms write it and the image and Labelme readers look for it
COUNTS_SUFFIX = ".counts.png"
META_SUFFIX = ".meta.json"  # <stem>.meta.json: what preprocess (or the phantom) knew of a scan
SNIFF_BYTES = 132  # a DICOM file's 128-byte preamble and "DICM"

MIN_VIEW_ASPECT = 1.8  # rows / columns of a whole-body view: 1024x256 is 4, 1024x512 is 2
MIN_VIEW_ROWS = 256
MAX_VIEW_ROWS = 4096  # 4x the 1024 rows of a whole-body view; taller is a strip or a stitched image
MAX_VIEW_ASPECT = 10  # rows / columns: 1024x256 is 4, 2048x256 is 8; 60000x1400 (43) is no view


class ReaderError(Exception):
    """A file that cannot be read as a scan; the message names the file and the problem."""


class NotAScanError(ReaderError):
    """A readable file that is not a whole-body emission scan (spot view, SPECT, CT, ...)."""


class UnsupportedFileError(ReaderError):
    """A file of a type no reader handles."""


@dataclass
class ScanImage:
    """One study's whole-body scan: raw count views, or an already merged 950 x 512 image."""

    key: str  # stable pseudonymous study key (no identity)
    sources: list[str]  # files it came from
    views: dict[str, np.ndarray] = field(default_factory=dict)  # view -> raw counts (H, W)
    merged: np.ndarray | None = None  # set instead of views for already-merged 950x512 images
    metadata: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable, identity-free
    # in-memory hint for pairing single views of one study; never written
    pairing: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    # source file -> SHA-256 of the bytes the reader read from it, hashed as they were read (the
    # content key needs no second read); a source missing here was not hashed. Never written
    digests: dict[str, str] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class SkippedInput:
    path: str
    reason: str
    kind: str = "error"  # "error" (broken/unreadable), "not_a_scan", "unsupported", "duplicate"


# -- the reader interface -------------------------------------------------------------------------
class ScanReader(Protocol):
    """A reader of one file type, as :func:`bsi_d2.io.readers.read_scan_file` uses it."""

    name: ClassVar[str]  # the key in READERS, e.g. "dicom"
    suffixes: ClassVar[tuple[str, ...]]  # lower-case, with the dot

    def __init__(
        self,
        salt: str | None = None,
        keep_identity: bool = False,
        limits: ReadLimits | None = None,
        keep_dates: str | None = None,
    ) -> None: ...

    @classmethod
    def recognises(cls, head: bytes) -> bool:
        """Whether a file whose suffix names no reader is of this type, by its first bytes."""
        ...

    def read(self, path: str | Path) -> list[ScanImage]:
        """The scans in ``path`` (single views stay unpaired); raises :class:`ReaderError`."""
        ...


DATE_MODES = ("month", "shift")  # how --keep-dates keeps a study date (pseudonym.kept_study_date)
EXACT_DATE = "exact"  # the date itself: only where identity is kept (--keep-identity)


def date_mode(keep_dates: str | None, keep_identity: bool = False) -> str | None:
    """How a study date is kept: ``keep_dates`` (month, shift) where given, else the exact date
    where identity is kept (the identity holds it already), else None: no date."""
    if keep_dates is not None and keep_dates not in DATE_MODES:
        raise ValueError(f"date mode {keep_dates!r}: choose one of {', '.join(DATE_MODES)}")
    return keep_dates or (EXACT_DATE if keep_identity else None)


class ReaderBase:
    """What every reader is given: the pseudonym salt, identity handling, the limits and
    ``keep_dates`` (``month``, ``shift`` or None; :func:`date_mode`)."""

    name: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        salt: str | None = None,
        keep_identity: bool = False,
        limits: ReadLimits | None = None,
        keep_dates: str | None = None,
    ) -> None:
        self.salt = salt
        self.keep_identity = keep_identity
        self.limits = limits if limits is not None else DEFAULT_LIMITS
        self.keep_dates = keep_dates
        self.date_mode = date_mode(keep_dates, keep_identity)  # ValueError for a bad mode

    @classmethod
    def recognises(cls, head: bytes) -> bool:
        return False  # known by suffix only


READERS: dict[str, type[ScanReader]] = {}  # filled by register_reader as reader modules load

R = TypeVar("R", bound="type[ScanReader]")


def register_reader(reader: R) -> R:
    """Class decorator: file types ``reader.suffixes`` are read by ``reader`` (one per suffix)."""
    taken = {s: other.name for other in READERS.values() for s in other.suffixes}
    clash = sorted(s for s in reader.suffixes if taken.get(s, reader.name) != reader.name)
    if clash:
        raise ValueError(f"reader {reader.name!r}: suffixes {clash} are read by another reader")
    READERS[reader.name] = reader
    return reader


def reader_suffixes() -> dict[str, str]:
    """Suffix -> name of the registered reader that reads it."""
    return {s: reader.name for reader in READERS.values() for s in reader.suffixes}


def counts_path(image_path: str | Path) -> Path:
    """Where the raw counts of the display image ``image_path`` are: ``<stem>.counts.png``."""
    image_path = Path(image_path)
    return image_path.with_name(image_path.stem + COUNTS_SUFFIX)


def meta_path(scan_path: str | Path) -> Path:
    """Where what preprocess (or the phantom) knew of the scan ``scan_path`` (an image or its
    Labelme JSON) is: ``<stem>.meta.json``."""
    scan_path = Path(scan_path)
    return scan_path.with_name(scan_path.stem + META_SUFFIX)


def meta_companion(scan_path: str | Path, image_path: str | Path | None = None) -> Path | None:
    """The ``<stem>.meta.json`` of a scan that exists: beside ``scan_path`` (an image, or a
    Labelme JSON), else beside the JSON's ``image_path``; None where there is none."""
    candidates = [meta_path(scan_path)] + ([meta_path(image_path)] if image_path else [])
    return next((c for c in candidates if c.is_file()), None)


# -- checks every reader makes --------------------------------------------------------------------
def count_stats(counts: np.ndarray) -> dict[str, float]:
    """Summary of a count image (for metadata and sanity checks): from its histogram where the
    counts are integers (the same numbers, one pass), else from the pixels in float64."""
    histogram = CountHistogram.of(counts)
    p99 = histogram.percentile(99) if histogram is not None else None
    if histogram is not None and p99 is not None:
        return {
            "min": histogram.min,
            "max": histogram.max,
            "mean": round(histogram.mean, 4),
            "median": histogram.median(),
            "p99": p99,
            "total": histogram.total,
        }
    counts = np.asarray(counts, dtype=np.float64)
    return {
        "min": float(counts.min()),
        "max": float(counts.max()),
        "mean": round(float(counts.mean()), 4),
        "median": float(np.median(counts)),
        "p99": float(np.percentile(counts, 99)),
        "total": float(counts.sum()),
    }


def view_from_text(text: str | None) -> str | None:
    """'anterior' or 'posterior' when ``text`` names exactly one (ANT, RT ANT LT, POST...)."""
    if not text:
        return None
    upper = str(text).upper()
    found = {
        view
        for view, pattern in (
            ("anterior", r"(?<![A-Z])ANT(ERIOR)?(?![A-Z])"),
            ("posterior", r"(?<![A-Z])POST(ERIOR)?(?![A-Z])"),
        )
        if re.search(pattern, upper)
    }
    return found.pop() if len(found) == 1 else None


def view_shape_reason(rows: int, cols: int) -> str | None:
    """Why a rows x cols matrix cannot be a whole-body view, or None when it can."""
    if rows < MIN_VIEW_ROWS or rows < MIN_VIEW_ASPECT * cols:
        return (
            f"a spot view, SPECT or capture, not a whole-body view (needs rows >= {MIN_VIEW_ROWS} "
            f"and >= {MIN_VIEW_ASPECT} x columns)"
        )
    if rows > MAX_VIEW_ROWS or rows > MAX_VIEW_ASPECT * cols:
        return (
            f"a strip, not a whole-body view (at most {MAX_VIEW_ROWS} rows and "
            f"{MAX_VIEW_ASPECT} x columns)"
        )
    return None


def is_whole_body_shape(shape: tuple[int, ...]) -> bool:
    return view_shape_reason(*shape[:2]) is None


def nonfinite_problem(values: np.ndarray) -> str | None:
    """How many values are NaN or infinite, as a reason, or None (no array-sized temporary)."""
    if values.size == 0 or values.dtype.kind != "f":
        return None
    if np.isfinite(values.min()) and np.isfinite(values.max()):  # NaN and inf reach min or max
        return None
    return f"{int(np.count_nonzero(~np.isfinite(values))):,} NaN or infinite value(s)"


def negative_problem(values: np.ndarray) -> str | None:
    """The lowest value as a reason when it is below 0, or None."""
    if values.size == 0 or values.dtype.kind == "u":
        return None
    low = float(values.min())
    return f"negative counts (down to {low:g})" if low < 0 else None


def counts_problem(values: np.ndarray) -> str | None:
    """What makes decoded values impossible as counts (NaN, infinite, negative), or None."""
    return nonfinite_problem(values) or negative_problem(values)


def check_file_size(path: Path, limits: ReadLimits, json: bool = False) -> None:
    """ReaderError for an empty file or one over the size limit, by ``stat``, before reading."""
    size = path.stat().st_size
    if size == 0:
        raise ReaderError(f"{path}: empty file (0 bytes)")
    reason = limits.file_size_reason(size, json=json)
    if reason is not None:
        raise ReaderError(f"{path}: {reason}")
