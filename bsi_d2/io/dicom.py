"""Whole-body bone scans from DICOM: which files are scans, which frame is which view, counts.

Layouts handled (DOMAIN.md section 1): NM Image Storage with two frames (anterior, posterior);
one view per file (GE Genie/Millennium, paired later by study and series); Secondary Capture
copies with Modality NM. Compressed transfer syntaxes decode through pydicom's pixel plugins.

A frame's view is found by the first rule that answers, recorded as ``view_rule``:

1. ``view_code``: the detector's ViewCodeSequence meaning/value (ANT..., POST...);
2. ``orientation``: the detector's ImageOrientationPatient (normal towards +y, posterior, means
   the camera looks from the front: anterior; the posterior view is mirrored left-right);
3. ``start_angle``: StartAngle near 180 is anterior, near 0 posterior;
4. ``view_position``, ``image_id``, ``series_description``: ANT/POST in ViewPosition, ImageID,
   SeriesDescription (one-view files only: they describe the file, not a frame);
5. ``frame_order``: first frame anterior, second posterior, with a warning.

Per-frame rules read the detector's item of DetectorInformationSequence and, for a one-frame file,
the same attributes at the top level (files without the sequence).

Before any pixel is decoded the header is checked against :class:`~bsi_d2.io.limits.ReadLimits`
(a deflated file is inflated only as far as its header, then counted against what that header
declares); after decoding, stored values outside BitsStored and counts that are negative, NaN or
infinite are refused rather than cut or passed on.
"""

from __future__ import annotations

import hashlib
import io
import logging
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, ClassVar
from warnings import catch_warnings, simplefilter

import numpy as np

from bsi_d2.io.base import (
    DICOM_SUFFIXES,
    SNIFF_BYTES,
    NotAScanError,
    ReaderBase,
    ReaderError,
    ScanImage,
    check_file_size,
    count_stats,
    negative_problem,
    nonfinite_problem,
    register_reader,
    view_from_text,
    view_shape_reason,
)
from bsi_d2.io.limits import DEFAULT_LIMITS, ReadLimits
from bsi_d2.io.pseudonym import (
    IDENTITY_KEYWORDS,
    RECORD_DIGESTS,
    date_mode,
    kept_study_date,
    patient_key,
    pseudonym,
    study_key,
)
from bsi_d2.taxonomy import VIEWS

logger = logging.getLogger(__name__)

NOT_WHOLE_BODY_TYPES = ("STATIC", "TOMO", "RECON TOMO", "GATED", "GATED TOMO", "DYNAMIC")
EXPECTED_SPACING_MM = (1.5, 3.5)  # whole-body scans are ~2.2-2.4 mm; far outside means rescale
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
DICOM_PREFIX = b"DICM"  # after the 128-byte preamble of a Part-10 file
DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian: the whole dataset zipped
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
FIRST_PIXEL_TAG = 0x7FE00008  # FloatPixelData; PixelData (7FE0,0010) and trailing padding follow
INFLATE_CHUNK = 1 << 20
JPEG_FAMILY = "1.2.840.10008.1.2.4."  # JPEG, JPEG-LS, JPEG 2000, HTJ2K: frames carry their own size
# JPEG start-of-frame markers (not DHT C4, JPG C8, DAC CC) and JPEG-LS SOF55 (F7)
JPEG_SOF_MARKERS = frozenset([*range(0xC0, 0xD0)]) - {0xC4, 0xC8, 0xCC} | {0xF7}
TRAILER_SLACK = 1 << 20
# loggers of pydicom and its decoder plugins, whose records (tracebacks) readers collect
QUIET_LOGGERS = (
    "pydicom",
    "pylibjpeg",
    "openjpeg",
    "libjpeg",
    "jpeg_ls",
    "gdcm",
)  # after the pixels only trailing padding or signatures may follow

# transfer syntax UID prefix -> what to install to decode it
_PLUGIN_HINTS = {
    "1.2.840.10008.1.2.4.5": "pylibjpeg and pylibjpeg-libjpeg (JPEG)",
    "1.2.840.10008.1.2.4.7": "pylibjpeg and pylibjpeg-libjpeg (JPEG lossless)",
    "1.2.840.10008.1.2.4.8": "pylibjpeg and pylibjpeg-libjpeg, or pyjpegls (JPEG-LS)",
    "1.2.840.10008.1.2.4.9": "pylibjpeg and pylibjpeg-openjpeg (JPEG 2000)",
    "1.2.840.10008.1.2.4.20": "pylibjpeg and pylibjpeg-openjpeg (HTJ2K)",
    "1.2.840.10008.1.2.5": "pylibjpeg-rle (RLE)",
}


def _plugin_hint(uid: str) -> str:
    for prefix, hint in _PLUGIN_HINTS.items():
        if uid.startswith(prefix) and not uid.startswith("1.2.840.10008.1.2.4.92"):
            return hint
    return (
        "python-gdcm if it supports this syntax, or convert the file to an uncompressed "
        "transfer syntax (e.g. gdcmconv --raw, dcmdjpeg)"
    )


@register_reader
class DicomReader(ReaderBase):
    """DICOM files (NM Image Storage, Secondary Capture with Modality NM, ...)."""

    name: ClassVar[str] = "dicom"
    suffixes: ClassVar[tuple[str, ...]] = DICOM_SUFFIXES

    @classmethod
    def recognises(cls, head: bytes) -> bool:
        """A Part-10 file: 128-byte preamble, then "DICM"."""
        return head[128:132] == DICOM_PREFIX

    def read(self, path: str | Path) -> list[ScanImage]:
        return read_dicom(
            path,
            salt=self.salt,
            keep_identity=self.keep_identity,
            limits=self.limits,
            keep_dates=self.keep_dates,
        )


def read_dicom(
    path: str | Path,
    salt: str | None = None,
    keep_identity: bool = False,
    limits: ReadLimits | None = None,
    keep_dates: str | None = None,
) -> list[ScanImage]:
    """One DICOM file -> one scan (two frames) or one single-view scan, to pair later.

    The metadata links it to its study and patient (:func:`dataset_link`): ``study_key``,
    ``patient_key`` and, as ``keep_dates`` (or ``keep_identity``) keeps it, the study date.
    Raises :class:`NotAScanError` for files that are not whole-body emission scans and
    :class:`ReaderError` for files that cannot be read or exceed ``limits``; both name the file
    and the problem.
    """
    path = Path(path)
    limits = limits if limits is not None else DEFAULT_LIMITS
    notes: list[str] = []
    data = read_file_bytes(path, limits)
    digest = hashlib.sha256(data).hexdigest()
    ds = read_dataset(path, limits, notes, data)
    # what the file is before how large it is: a CT volume is "not a scan", not "too large"
    reason = _content_reason(ds)
    if reason is not None:
        raise NotAScanError(f"{path}: {reason}")
    check_declared_size(ds, path, limits)
    reason = _shape_reason(ds)
    if reason is not None:
        raise NotAScanError(f"{path}: {reason}")
    frames = decode_counts(ds, path, limits)
    frames, frame_numbers = select_frames(ds, frames, path)
    assignments, warnings = identify_views(ds, frame_numbers)
    warnings = notes + warnings
    for warning in warnings:
        logger.warning("%s: %s", path, warning, extra={RECORD_DIGESTS: {str(path): digest}})
    key = dataset_study_key(ds, path, salt)
    metadata = dataset_metadata(ds, keep_identity, salt)
    metadata["study_key"] = key
    metadata.update(dataset_link(ds, salt, date_mode(keep_dates, keep_identity)))
    metadata["warnings"] = warnings + spacing_warnings(metadata.get("pixel_spacing_mm"))
    metadata["layout"] = "views"
    metadata["views"] = {
        view: {
            "view_rule": rule,
            "frame": int(number),
            "source_index": 0,
            "counts": count_stats(frame),
        }
        for (view, rule), frame, number in zip(assignments, frames, frame_numbers, strict=True)
    }
    views = {view: frame for (view, _), frame in zip(assignments, frames, strict=True)}
    pairing = None
    if len(views) == 1:
        pairing = {
            "group": ("dicom", str(path.parent), key),
            "subgroup": metadata.get("series_key"),
            "order": int(ds.get("InstanceNumber") or 0),
            "instance": str(ds.get("SOPInstanceUID", "") or "") or None,
        }
    scan = ScanImage(key, [str(path)], views, None, metadata, pairing)
    scan.digests[str(path)] = digest
    return [scan]


def read_file_bytes(path: Path, limits: ReadLimits) -> bytes:
    """The whole file, read once after the size check: parsed from memory and hashed for the
    content key (:attr:`ScanImage.digests`) without opening the file again."""
    check_file_size(path, limits)
    return path.read_bytes()


def read_dataset(
    path: Path,
    limits: ReadLimits | None = None,
    notes: list[str] | None = None,
    data: bytes | None = None,
) -> Any:
    """The dataset of a DICOM file (its bytes ``data`` where already read), pixel data not yet
    parsed; ReaderError for empty, oversized, non-DICOM, unparseable or truncated files and for
    deflated files inflating beyond their header.

    A file without the Part-10 header (preamble + "DICM") is read with ``force`` and accepted when
    it has the elements of an image; ``notes`` receives a warning saying so.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    limits = limits if limits is not None else DEFAULT_LIMITS
    if data is None:
        data = read_file_bytes(path, limits)
    else:
        check_file_size(path, limits)
    force = not DicomReader.recognises(data[:SNIFF_BYTES])
    try:
        if not force:
            syntax = _file_meta(data).get("TransferSyntaxUID")
            if syntax == DEFLATED:
                # pydicom inflates the whole dataset in memory
                check_deflated(io.BytesIO(data), path, limits)
        # pixel data is parsed when decoded: non-scans (CT series...) are judged by header
        with quiet_pydicom() as messages:
            ds = pydicom.dcmread(io.BytesIO(data), defer_size="64 KB", force=force)
    except ReaderError:
        raise
    except InvalidDicomError as error:
        raise ReaderError(f"{path}: not a DICOM file ({error})") from error
    except Exception as error:  # pydicom raises many types on truncated headers
        if force:
            raise ReaderError(
                f"{path}: not a DICOM file (no DICOM file header, and read with force: "
                f"{type(error).__name__}: {error})"
            ) from error
        raise ReaderError(
            f"{path}: unreadable DICOM header, truncated or corrupt "
            f"({type(error).__name__}: {error})"
        ) from error
    if force:
        _accept_forced(ds, path)
        if notes is not None:
            notes.append("no DICOM file header (read with force)")
    reason = _truncation_reason(ds, path, messages, data)
    if reason is not None:
        raise ReaderError(f"{path}: {reason}")
    meta_class = str(getattr(ds.get("file_meta", {}), "MediaStorageSOPClassUID", ""))
    if meta_class == DICOMDIR_CLASS or "DirectoryRecordSequence" in ds:
        raise ReaderError(f"{path}: a DICOMDIR index, not an image")
    return ds


def _file_meta(data: bytes) -> Any:
    """The file meta information (group 0002, always Explicit VR Little Endian) of a Part-10
    file's bytes: the elements after the preamble up to the first of another group."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import read_dataset as read_elements

    source = DicomBytesIO(data)
    source.seek(SNIFF_BYTES)
    return read_elements(source, False, True, stop_when=lambda tag, vr, length: tag >> 16 != 2)


def _accept_forced(ds: Any, path: Path) -> None:
    """ReaderError unless a dataset read with ``force`` has an image's elements; sets the
    transfer syntax pydicom found when the file has no file meta to say it."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    missing = [k for k in ("Rows", "Columns") if k not in ds]
    if "SOPClassUID" not in ds and "Modality" not in ds:
        missing.insert(0, "SOPClassUID/Modality")
    if _pixel_keyword(ds) is None:
        missing.append("PixelData")
    if missing:
        raise ReaderError(
            f"{path}: not a DICOM file (no 128-byte preamble and 'DICM' prefix, and read with "
            f"force it lacks {', '.join(missing)})"
        )
    if not hasattr(ds, "file_meta"):
        ds.file_meta = FileMetaDataset()
    if ds.file_meta.get("TransferSyntaxUID") is not None:
        return
    pixels = ds.get_item(_pixel_keyword(ds))
    if getattr(pixels, "length", 0) == 0xFFFFFFFF:
        raise ReaderError(
            f"{path}: no DICOM file header and encapsulated (compressed) pixel data: the "
            "transfer syntax is unknown; not decoded"
        )
    implicit, little = ds.original_encoding
    ds.file_meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian
        if implicit
        else ExplicitVRLittleEndian
        if little
        else ExplicitVRBigEndian
    )


class _Collect(logging.Handler):
    def __init__(self, messages: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def quiet_pydicom() -> Iterator[list[str]]:
    """pydicom's and its decoders' warnings and log records (tracebacks included) collected in
    the yielded list instead of printed: the reader's message says what went wrong, once."""
    messages: list[str] = []
    handler = _Collect(messages)
    # not thread-safe, like catch_warnings: another thread's pydicom records are collected too
    saved = []
    for name in QUIET_LOGGERS:
        log = logging.getLogger(name)
        saved.append((log, log.handlers, log.propagate))
        log.handlers, log.propagate = [handler], False
    try:
        with catch_warnings(record=True) as caught:
            simplefilter("always")
            try:
                yield messages
            finally:
                messages.extend(str(w.message) for w in caught)
    finally:
        for log, handlers, propagate in saved:
            log.handlers, log.propagate = handlers, propagate


def _truncation_reason(ds: Any, path: Path, messages: list[str], data: bytes) -> str | None:
    """Why a dataset pydicom read from the file's bytes ``data`` is cut short (it reads what is
    there and warns, or not), or None: an element whose value runs past the end of the file, or
    no delimiter before it."""
    syntax = getattr(ds.get("file_meta", {}), "TransferSyntaxUID", None)
    label = syntax_label(syntax)
    if any("End of file reached" in m for m in messages):
        import pydicom

        # pydicom drops the whole dataset then: is the header before the pixels intact?
        with quiet_pydicom() as header_messages:
            header = pydicom.dcmread(
                io.BytesIO(data), stop_before_pixels=True, force=True, defer_size=1024
            )
        if not any("End of file reached" in m for m in header_messages) and (
            _truncation_reason(header, path, header_messages, data) is None and "Rows" in header
        ):
            return (
                f"truncated or corrupt compressed pixel data in {label}: the file ends "
                "before the pixel data's sequence delimiter"
            )
        return "truncated: the file ends inside an element of the header (no delimiter found)"
    if syntax == DEFLATED:
        return None  # positions are in the inflated stream, not the file
    size = len(data)
    end = 0
    for tag in list(ds.keys()):
        element = ds.get_item(tag)
        if not hasattr(element, "value_tell"):
            continue  # converted already: read in full
        if element.length == 0xFFFFFFFF:
            end = max(end, element.value_tell + len(element.value or b"") + 8)
            continue
        present = len(element.value) if element.value is not None else size - element.value_tell
        if present < element.length:
            keyword = _tag_keyword(tag)
            what = f"{keyword or 'element'} ({tag >> 16:04X},{tag & 0xFFFF:04X})"
            amount = f"{max(present, 0):,} of its {element.length:,} bytes present"
            if tag >= FIRST_PIXEL_TAG:
                kind = "compressed pixel data" if syntax and syntax.is_compressed else "pixel data"
                return (
                    f"truncated or corrupt {kind} in {label}: the file ends inside {what}, {amount}"
                )
            return f"truncated: the file ends inside {what} of the header, {amount}"
        end = max(end, element.value_tell + element.length)
    if 0 < size - end < 8:
        return f"truncated: the file ends inside an element header ({size - end} byte(s) left)"
    return None


def _tag_keyword(tag: int) -> str:
    from pydicom.datadict import keyword_for_tag

    return keyword_for_tag(tag)


def syntax_label(syntax: Any) -> str:
    """A transfer syntax as its name and UID, for messages."""
    if syntax is None:
        return "an unknown transfer syntax"
    return f"'{syntax.name}' ({syntax})" if syntax.name != str(syntax) else f"{syntax}"


def check_deflated(handle: BinaryIO, path: Path, limits: ReadLimits) -> None:
    """ReaderError unless a deflated file's header (read from ``handle``, the file ``path``) is
    within ``limits`` and the whole dataset inflates to no more than that header declares;
    inflates in chunks, keeping only the header."""
    with handle:
        handle.seek(_dataset_offset(handle, path))
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        prefix = bytearray()
        wanted = 64 << 10
        while True:
            prefix += _inflate(inflater, handle, wanted - len(prefix), path)
            header, end, pixel_length = _parse_header(bytes(prefix))
            if end is not None or inflater.eof:
                break
            if wanted >= limits.max_header_bytes:
                raise ReaderError(
                    f"{path}: no pixel data within the first {limits.max_header_bytes:,} inflated "
                    "bytes: header too long or corrupt (ReadLimits.max_header_bytes); not read"
                )
            wanted = min(4 * wanted, limits.max_header_bytes)
        if end is None:
            return  # the whole dataset is in the prefix: nothing more to inflate
        check_declared_size(header, path, limits)
        declared = _declared_pixel_bytes(header)
        allowed = end + 12 + declared + 1 + TRAILER_SLACK  # element header, value, odd padding
        if pixel_length not in (None, 0xFFFFFFFF) and pixel_length > declared + 1:
            raise ReaderError(
                f"{path}: pixel data element of {pixel_length:,} bytes, but the header declares "
                f"{declared:,} bytes of pixels; not read"
            )
        total = len(prefix)
        while total <= allowed and not inflater.eof:
            chunk = _inflate(inflater, handle, min(INFLATE_CHUNK, allowed + 1 - total), path)
            if not chunk:
                break
            total += len(chunk)
        if total > allowed:
            raise ReaderError(
                f"{path}: deflated data inflates beyond {allowed:,} bytes, the most its header "
                f"declares ({_matrix_text(header)}); not read further"
            )


def _dataset_offset(handle: BinaryIO, path: Path) -> int:
    """Offset of the dataset after the preamble and the (never deflated) group 0002 meta."""
    handle.seek(132)
    while True:
        start = handle.tell()
        head = handle.read(8)
        if len(head) < 8:
            raise ReaderError(f"{path}: file meta information ends before the dataset")
        group, _, vr = struct.unpack("<HH2s", head[:6])
        if group != 0x0002:
            return start
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UN", b"UT", b"UC", b"UR", b"OD", b"OL", b"OV"):
            length = struct.unpack("<I", handle.read(4))[0]
        else:
            length = struct.unpack("<H", head[6:8])[0]
        handle.seek(length, 1)


def _inflate(inflater: Any, handle: BinaryIO, limit: int, path: Path) -> bytes:
    """Up to ``limit`` more inflated bytes (fewer at the stream's end); never more."""
    out = bytearray()
    try:
        while len(out) < limit and not inflater.eof:
            data = inflater.unconsumed_tail or handle.read(INFLATE_CHUNK)
            if not data:
                break
            out += inflater.decompress(data, limit - len(out))
    except zlib.error as error:
        raise ReaderError(f"{path}: deflated data is corrupt ({error})") from error
    return bytes(out)


def _parse_header(data: bytes) -> tuple[Any, int | None, int | None]:
    """(header, offset of the first pixel element or None, that element's length) of
    inflated Explicit VR Little Endian bytes; None when the pixels are not reached."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import read_dataset as read_elements

    found: list[int] = []

    def at_pixels(tag: int, vr: str | None, length: int) -> bool:
        if tag >= FIRST_PIXEL_TAG:
            found.append(length)
            return True
        return False

    source = DicomBytesIO(data)
    try:
        header = read_elements(source, False, True, stop_when=at_pixels)
    except Exception:  # a prefix cut inside an element: more must be inflated
        return None, None, None
    return header, (source.tell() if found else None), (found[0] if found else None)


def _declared_pixel_bytes(ds: Any) -> int:
    rows, cols, frames, samples = _declared_matrix(ds)
    bits = _integer(ds, "BitsAllocated", 16)
    return (rows * cols * frames * samples * bits + 7) // 8


def _declared_matrix(ds: Any) -> tuple[int, int, int, int]:
    """(rows, columns, frames, samples per pixel) as the header declares them."""
    return (
        _integer(ds, "Rows", 0),
        _integer(ds, "Columns", 0),
        _integer(ds, "NumberOfFrames", 1),
        _integer(ds, "SamplesPerPixel", 1),
    )


def _matrix_text(ds: Any) -> str:
    rows, cols, frames, _ = _declared_matrix(ds)
    return f"{frames} frame(s) of {rows} x {cols} at {_integer(ds, 'BitsAllocated', 16)} bits"


def _integer(ds: Any, keyword: str, default: int) -> int:
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default  # unparseable counts as absent: the shape check or the decoder refuses it


def check_declared_size(ds: Any, path: Path, limits: ReadLimits) -> None:
    """ReaderError when Rows x Columns x NumberOfFrames (x SamplesPerPixel) exceed ``limits``."""
    reason = limits.pixel_reason(*_declared_matrix(ds))
    if reason is not None:
        raise ReaderError(f"{path}: {reason}")


def not_whole_body_reason(ds: Any) -> str | None:
    """Why a dataset is not a whole-body emission scan to analyse, or None if it is one."""
    return _content_reason(ds) or _shape_reason(ds)


def _pixel_keyword(ds: Any) -> str | None:
    return next((keyword for keyword in PIXEL_KEYWORDS if keyword in ds), None)


def _content_reason(ds: Any) -> str | None:
    """Why a dataset's modality, photometry or image type is not a whole-body scan's, or None."""
    modality = str(ds.get("Modality", "") or "")
    if modality != "NM":
        return f"modality {modality or '(missing)'} is not NM: not a bone scan"
    if _pixel_keyword(ds) is None:
        return None  # decode_counts reports the missing pixel data as an error
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "") or "")
    if samples > 1 or (photometric and not photometric.startswith("MONOCHROME")):
        return f"{photometric or 'colour'} image: a screen capture, not count data"
    image_type = [v.upper() for v in _strings(ds, "ImageType")]
    if "WHOLE BODY" not in image_type:
        found = [t for t in NOT_WHOLE_BODY_TYPES if t in image_type]
        if found:
            joined = "\\".join(image_type)
            return f"ImageType {joined}: {found[0].lower()} image, not a whole-body scan"
    return None


def _shape_reason(ds: Any) -> str | None:
    """Why a dataset's matrix cannot be a whole-body view, or None."""
    if _pixel_keyword(ds) is None:
        return None
    rows, cols, _, _ = _declared_matrix(ds)
    reason = view_shape_reason(rows, cols)
    return None if reason is None else f"{rows} x {cols} matrix: {reason}"


def check_pixel_format(ds: Any, path: Path, keyword: str) -> None:
    """ReaderError for BitsAllocated, BitsStored, HighBit or PixelRepresentation that no count
    image has, checked from the header before decoding."""
    bits = _integer(ds, "BitsAllocated", 0)
    if keyword != "PixelData":
        wanted = 32 if keyword == "FloatPixelData" else 64
        if bits != wanted:
            raise ReaderError(f"{path}: {keyword} with BitsAllocated {bits}, not {wanted}")
        return
    if bits not in (8, 16, 32):
        raise ReaderError(f"{path}: BitsAllocated {bits}: counts are 8, 16 or 32-bit integers")
    stored = _integer(ds, "BitsStored", bits)
    if not 1 <= stored <= bits:
        raise ReaderError(f"{path}: BitsStored {stored} exceeds BitsAllocated {bits} (or is < 1)")
    high = _integer(ds, "HighBit", stored - 1)
    if high != stored - 1:
        raise ReaderError(
            f"{path}: HighBit {high} with BitsStored {stored}: DICOM requires HighBit = "
            "BitsStored - 1, so the values' position in the stored bits is unknown"
        )
    if _integer(ds, "PixelRepresentation", 0) not in (0, 1):
        raise ReaderError(f"{path}: PixelRepresentation {ds.PixelRepresentation} is not 0 or 1")


def decode_counts(ds: Any, path: Path, limits: ReadLimits | None = None) -> np.ndarray:
    """(frames, rows, cols) float32 counts, modality rescale applied; ReaderError if undecodable,
    beyond ``limits``, outside the declared BitsStored range, negative, NaN or infinite."""
    from pydicom.pixels import get_decoder, pixel_array

    keyword = _pixel_keyword(ds)
    if keyword is None:
        raise ReaderError(
            f"{path}: no pixel data in the file (neither PixelData (7FE0,0010) nor "
            "FloatPixelData (7FE0,0008) nor DoubleFloatPixelData (7FE0,0009))"
        )
    check_declared_size(ds, path, limits if limits is not None else DEFAULT_LIMITS)
    check_pixel_format(ds, path, keyword)
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is None:
        raise ReaderError(f"{path}: no TransferSyntaxUID in the file meta")
    label = syntax_label(syntax)
    if syntax.is_compressed and str(syntax).startswith(JPEG_FAMILY):
        check_codestream_sizes(ds, path)
    if syntax.is_compressed:
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError as error:
            raise ReaderError(
                f"{path}: cannot decode transfer syntax {label}: no pydicom pixel decoder "
                f"exists for it; install {_plugin_hint(str(syntax))}"
            ) from error
        _drop_inprocess_gdcm(decoder)
        if not decoder.is_available:
            raise ReaderError(
                f"{path}: cannot decode transfer syntax {label}: no installed plugin; "
                f"install {_plugin_hint(str(syntax))}"
            )
    if _needs_gdcm(syntax, ds):
        pixels, messages = _decode_gdcm(path, label), []
    else:
        try:
            # raw stored values: pydicom >= 3 masks to BitsStored, which would hide (and cut)
            # overflow
            with quiet_pydicom() as messages:
                pixels = pixel_array(ds, correct_unused_bits=False)
        except Exception as error:  # plugins and pydicom raise many types on bad data
            raise ReaderError(
                f"{path}: pixel data in {label} could not be decoded, truncated or corrupt "
                f"({type(error).__name__}: {error})"
            ) from error
    for message in messages:
        logger.debug("%s: while decoding: %s", path, message)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = pixels[None]
    if pixels.ndim != 3 or pixels.shape[0] != n_frames:
        raise ReaderError(f"{path}: pixel array {pixels.shape} does not match {n_frames} frame(s)")
    if keyword == "PixelData":
        check_stored_range(ds, pixels, path)
    problem = nonfinite_problem(pixels)
    if problem is not None:
        raise ReaderError(f"{path}: {keyword} holds {problem}: not counts")
    counts = pixels.astype(np.float32)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    rescale = f"RescaleSlope {slope:g} and RescaleIntercept {intercept:g}"
    if slope != 1 or intercept != 0:
        counts = counts * np.float32(slope) + np.float32(intercept)
    problem = nonfinite_problem(counts)
    if problem is not None:
        raise ReaderError(f"{path}: counts after {rescale} hold {problem}: not counts")
    problem = negative_problem(counts)
    if problem is not None:
        if float(pixels.min()) >= 0:
            cause = rescale
        elif keyword == "PixelData":
            cause = "PixelRepresentation 1 (signed) stored values below 0"
        else:
            cause = f"{keyword} values below 0"
        raise ReaderError(f"{path}: {problem} from {cause}: counts cannot be negative")
    return counts


JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"


def _drop_inprocess_gdcm(decoder: Any) -> None:
    """Take pydicom's GDCM plugin off ``decoder`` where another plugin can decode: it is tried
    first once python-gdcm is installed, and GDCM in this process can crash it
    (:mod:`bsi_d2.io.gdcm_decode` runs GDCM in a child process instead)."""
    if "gdcm" in decoder.available_plugins and len(decoder.available_plugins) > 1:
        decoder.remove_plugin("gdcm")


def _needs_gdcm(syntax: Any, ds: Any) -> bool:
    """JPEG Extended with more than 8 bits stored: pylibjpeg-libjpeg and Pillow decode only
    8-bit lossy JPEG and pydicom 3.0's GDCM plugin refuses 12-bit, so only GDCM's own reader
    (:mod:`bsi_d2.io.gdcm_decode`) decodes it."""
    return str(syntax) == JPEG_EXTENDED and _integer(ds, "BitsStored", 8) > 8


def _decode_gdcm(path: Path, label: str) -> np.ndarray:
    """Stored values of a JPEG Extended 12-bit file through python-gdcm, or ReaderError."""
    from bsi_d2.io.gdcm_decode import INSTALL_HINT, GDCMError, decode_with_gdcm, gdcm_available

    if not gdcm_available():
        raise ReaderError(
            f"{path}: cannot decode {label} with 12 bits stored: pylibjpeg and Pillow decode only "
            f"8-bit lossy JPEG and pydicom's GDCM plugin refuses 12-bit; {INSTALL_HINT}, or "
            "decompress the file first (gdcmconv --raw, dcmdjpeg)"
        )
    try:
        return decode_with_gdcm(path)
    except GDCMError as error:
        raise ReaderError(
            f"{path}: pixel data in {label} could not be decoded by GDCM, truncated or corrupt "
            f"({error})"
        ) from error


def check_codestream_sizes(ds: Any, path: Path) -> None:
    """ReaderError when a JPEG-family frame's own header declares another size than Rows x
    Columns: decoders allocate what the codestream says, which the limits have not seen."""
    from pydicom.encaps import generate_frames

    rows, cols, frames, _ = _declared_matrix(ds)
    try:
        encoded = generate_frames(ds.PixelData, number_of_frames=frames)
        for index, frame in zip(range(frames), encoded, strict=False):
            size = _codestream_size(frame)
            if size is not None and size != (rows, cols):
                raise ReaderError(
                    f"{path}: frame {index + 1}'s codestream declares {size[0]} x {size[1]} "
                    f"pixels, the header {rows} x {cols}; not decoded"
                )
    except ReaderError:
        raise
    except Exception:  # unparseable encapsulation: the decoder reports it
        return


def _codestream_size(frame: bytes) -> tuple[int, int] | None:
    """(rows, columns) a JPEG 2000 / HTJ2K SIZ or a JPEG / JPEG-LS SOF declares, or None."""
    if frame[:4] == b"\xff\x4f\xff\x51" and len(frame) >= 24:  # SOC then SIZ
        width, height, x_offset, y_offset = struct.unpack(">IIII", frame[8:24])
        return height - y_offset, width - x_offset
    if frame[:2] != b"\xff\xd8":
        return None
    position = 2
    while position + 9 <= len(frame) and frame[position] == 0xFF:
        marker = frame[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in JPEG_SOF_MARKERS:
            height, width = struct.unpack(">HH", frame[position + 5 : position + 9])
            return (height, width) if height else None  # 0: the height comes later (DNL)
        if marker == 0xDA:  # a scan before any frame header
            return None
        position += 2 + struct.unpack(">H", frame[position + 2 : position + 4])[0]
    return None


def check_stored_range(ds: Any, pixels: np.ndarray, path: Path) -> None:
    """ReaderError when stored values lie outside what BitsStored and PixelRepresentation allow.

    Bits above HighBit may hold old overlays, but in count data they are the hottest pixels'
    high bits: masking them (as pydicom does) would cut bladder and lesions, so the file is refused.
    """
    stored = _integer(ds, "BitsStored", _integer(ds, "BitsAllocated", 16))
    signed = _integer(ds, "PixelRepresentation", 0) == 1
    low, high = (
        (-(1 << (stored - 1)), (1 << (stored - 1)) - 1) if signed else (0, (1 << stored) - 1)
    )
    found_low, found_high = int(pixels.min()), int(pixels.max())
    if found_high > high or found_low < low:
        found = f"up to {found_high}" if found_high > high else f"down to {found_low}"
        kind = "signed" if signed else "unsigned"
        raise ReaderError(
            f"{path}: stored values {found} exceed BitsStored {stored} ({kind}, {low}..{high}): "
            "header and pixels disagree, and cutting them would change the hottest counts"
        )


def select_frames(ds: Any, frames: np.ndarray, path: Path) -> tuple[np.ndarray, list[int]]:
    """The one or two frames that are views: with several energy windows, the first window's."""
    numbers = list(range(frames.shape[0]))
    if len(numbers) > 2:
        windows = [int(v) for v in _vector(ds, "EnergyWindowVector", len(numbers))]
        if windows:
            first = min(windows)
            numbers = [i for i, w in enumerate(windows) if w == first]
    if not 1 <= len(numbers) <= 2:
        raise ReaderError(
            f"{path}: {frames.shape[0]} frames and no way to tell which are the two whole-body "
            "views (expected 1 or 2, or one pair per energy window)"
        )
    return frames[numbers], numbers


def identify_views(ds: Any, frame_numbers: list[int]) -> tuple[list[tuple[str, str]], list[str]]:
    """(view, rule) for each frame, in frame order, and warnings; views are distinct."""
    single = len(frame_numbers) == 1
    found: list[tuple[str | None, str]] = []
    warnings: list[str] = []
    for number in frame_numbers:
        sources = [_detector_item(ds, number)] + ([ds] if single else [])
        sources = [s for s in sources if s is not None]
        found.append(_first_answer(ds, sources, single))
        warnings += _disagreements(found[-1], sources, number)
    views = [view for view, _ in found]
    if single:
        if views[0] is None:
            warnings.append("no view information in the file: taken as anterior; check it")
            return [("anterior", "frame_order")], warnings
        return [(views[0], found[0][1])], warnings
    if views[0] is not None and views[1] is not None and views[0] != views[1]:
        return [(v, r) for v, r in found], warnings
    known = [i for i, v in enumerate(views) if v is not None]
    if len(known) == 1:
        i = known[0]
        other = VIEWS[1 - VIEWS.index(views[i])]
        warnings.append(
            f"view of frame {frame_numbers[1 - i] + 1} unknown: taken as {other}, the other "
            f"frame being {views[i]} by {found[i][1]}"
        )
        result = list(found)
        result[1 - i] = (other, "complement")
        return [(v, r) for v, r in result], warnings
    problem = "unknown" if not known else f"both {views[0]}"
    warnings.append(
        f"frame views {problem}: taken by frame order (first anterior, second posterior); "
        "check them"
    )
    return [("anterior", "frame_order"), ("posterior", "frame_order")], warnings


def _frame_rules() -> list[tuple[str, Callable[[Any], str | None]]]:
    """The per-frame view rules, in the order they are trusted."""
    return [
        ("view_code", _view_from_code),
        ("orientation", _view_from_orientation),
        ("start_angle", _view_from_start_angle),
    ]


def _disagreements(answer: tuple[str | None, str], sources: list[Any], number: int) -> list[str]:
    """A warning for each lower-ranked rule that names the other view than the rule used: a
    reader must know the file contradicts itself, and which rule won."""
    view, used = answer
    if view is None:
        return []
    out = []
    for rule, function in _frame_rules():
        other = next((v for v in map(function, sources) if v is not None), None)
        if rule != used and other is not None and other != view:
            out.append(
                f"frame {number + 1}: {used} says {view} but {rule} says {other}; "
                f"{used} was used (it ranks first); check the file"
            )
    return out


def _first_answer(ds: Any, sources: list[Any], single: bool) -> tuple[str | None, str]:
    for rule, function in _frame_rules():
        for source in sources:
            view = function(source)
            if view is not None:
                return view, rule
    if single:
        for rule, keyword in (
            ("view_position", "ViewPosition"),
            ("image_id", "ImageID"),
            ("series_description", "SeriesDescription"),
        ):
            view = view_from_text(ds.get(keyword))
            if view is not None:
                return view, rule
    return None, "frame_order"


def _view_from_code(source: Any) -> str | None:
    for item in source.get("ViewCodeSequence") or []:
        text = f"{item.get('CodeMeaning', '')} {item.get('CodeValue', '')}"
        view = view_from_text(text)
        if view is not None:
            return view
    return None


def _view_from_orientation(source: Any) -> str | None:
    values = source.get("ImageOrientationPatient")
    if values is None or len(values) != 6:
        return None
    row, col = np.asarray(values[:3], float), np.asarray(values[3:], float)
    normal_y = float(np.cross(row, col)[1])
    if abs(normal_y) < 0.5:
        return None
    return "anterior" if normal_y > 0 else "posterior"


def _view_from_start_angle(source: Any) -> str | None:
    value = source.get("StartAngle")
    if value is None or value == "":
        return None
    angle = float(value) % 360.0
    if abs(angle - 180.0) <= 45.0:
        return "anterior"
    if min(angle, 360.0 - angle) <= 45.0:
        return "posterior"
    return None


def _vector(ds: Any, keyword: str, n_frames: int) -> list[int]:
    values = ds.get(keyword)
    if values is None:
        return []
    values = [values] if isinstance(values, int | float) else list(values)
    return values if len(values) == n_frames else []


def _detector_item(ds: Any, frame: int) -> Any | None:
    sequence = ds.get("DetectorInformationSequence") or []
    if not sequence:
        return None
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    detectors = _vector(ds, "DetectorVector", n_frames)
    if detectors and 1 <= int(detectors[frame]) <= len(sequence):
        return sequence[int(detectors[frame]) - 1]
    if len(sequence) == n_frames:
        return sequence[frame]
    return sequence[0] if len(sequence) == 1 else None


def dataset_study_key(ds: Any, path: Path, salt: str | None) -> str:
    """Pseudonymous key: StudyInstanceUID, else PatientID + StudyDate, else SOPInstanceUID."""
    fallback = str(ds.get("SOPInstanceUID", "") or "") or str(path.resolve())
    return study_key(
        study_uid=str(ds.get("StudyInstanceUID", "") or ""),
        patient_id=str(ds.get("PatientID", "") or ""),
        study_date=str(ds.get("StudyDate", "") or ""),
        fallback=fallback,
        salt=salt,
    )


STUDY_DATE_KEYWORDS = ("StudyDate", "SeriesDate", "AcquisitionDate")  # the first one given


def dataset_link(ds: Any, salt: str | None, mode: str | None) -> dict[str, Any]:
    """``patient_key`` (PatientID + IssuerOfPatientID, salted) and the study date as ``mode``
    (:func:`~bsi_d2.io.pseudonym.date_mode`) keeps it, with its kind; None where unknown."""
    patient_id, issuer = _text(ds, "PatientID"), _text(ds, "IssuerOfPatientID")
    kept = None
    for keyword in STUDY_DATE_KEYWORDS if mode is not None else ():
        kept = kept_study_date(_text(ds, keyword), mode, patient_id, issuer, salt)
        if kept is not None:
            break
    value, kind = kept if kept is not None else (None, None)
    return {
        "patient_key": patient_key(patient_id, issuer, salt),
        "study_date": value,
        "study_date_kind": kind,
    }


def _text(ds: Any, keyword: str) -> str | None:
    value = ds.get(keyword)
    return None if value is None or value == "" else str(value)


def _strings(ds: Any, keyword: str) -> list[str]:
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


def _number(ds: Any, keyword: str) -> float | None:
    value = ds.get(keyword)
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def dataset_metadata(
    ds: Any, keep_identity: bool = False, salt: str | None = None
) -> dict[str, Any]:
    """Acquisition facts without identity (no names, IDs, dates, UIDs unless keep_identity)."""
    syntax = ds.file_meta.get("TransferSyntaxUID")
    sop_class = ds.get("SOPClassUID")
    spacing = ds.get("PixelSpacing")
    series_uid = _text(ds, "SeriesInstanceUID")
    metadata: dict[str, Any] = {
        "format": "dicom",
        "sop_class": getattr(sop_class, "name", None) if sop_class else None,
        "modality": _text(ds, "Modality"),
        "image_type": _strings(ds, "ImageType"),
        "transfer_syntax": getattr(syntax, "name", None) if syntax else None,
        "manufacturer": _text(ds, "Manufacturer"),
        "model": _text(ds, "ManufacturerModelName"),
        "matrix": [int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)],
        "frames": int(ds.get("NumberOfFrames", 1) or 1),
        "pixel_spacing_mm": [float(v) for v in spacing] if spacing else None,
        "frame_duration_ms": _number(ds, "ActualFrameDuration"),
        "counts_accumulated": _number(ds, "CountsAccumulated"),
        "scan_velocity_mm_s": _number(ds, "ScanVelocity"),
        "scan_length_mm": _number(ds, "ScanLength"),
        "whole_body_technique": _strings(ds, "WholeBodyTechnique") or None,
        "radionuclide": _radionuclide(ds),
        "series_key": pseudonym("series", series_uid, salt=salt) if series_uid else None,
    }
    if keep_identity:
        metadata["identity"] = {k: _text(ds, k) for k in IDENTITY_KEYWORDS}
    return metadata


def _radionuclide(ds: Any) -> str | None:
    for item in ds.get("RadiopharmaceuticalInformationSequence") or []:
        for code in item.get("RadionuclideCodeSequence") or []:
            if code.get("CodeMeaning"):
                return str(code.CodeMeaning)
    return None


def spacing_warnings(spacing: list[float] | None) -> list[str]:
    if not spacing:
        return ["no PixelSpacing: the model expects about 2.2-2.4 mm pixels"]
    low, high = EXPECTED_SPACING_MM
    if not all(low <= s <= high for s in spacing):
        return [
            f"pixel spacing {spacing} mm is far from the 2.2-2.4 mm the model was trained on "
            "(no rescaling is done)"
        ]
    return []
