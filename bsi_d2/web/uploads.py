"""The upload: a multipart body streamed to disk under limits, then read by the project's readers.

Checks, in the order they cost nothing, so an oversized upload is refused before it is written
(let alone decoded):

1. ``Content-Length`` against what :class:`~bsi_d2.io.limits.ReadLimits` admits for
   :data:`MAX_FILES` files (413 before a byte of the body is read);
2. the CSRF token: the ``X-CSRF-Token`` header, or the form's ``csrf_token`` field, which must
   come before the first file (403 before a byte of a file is written);
3. while streaming, each file's byte count against ``max_file_bytes`` (``max_json_bytes`` for a
   Labelme file) and the body's against the total (413; what was written is removed);
4. the file types, by suffix or the DICOM preamble (415);
5. the readers themselves (:func:`check_upload`): the DICOM header's or the image's declared
   matrix before decoding, then everything ``bsi-d2 predict`` checks; exactly one scan must come
   out of the upload (422 otherwise, with the readers' reasons).

Files are stored as ``<stem><view><suffix>``: ``stem`` 16 hex digits of SHA-256 over the files'
contents, ``view`` ``_ANT``/``_POST`` where an image's name said which view it is (the image
reader takes a single view's name from it, and pairs views by it; DICOM files say so in their
header), ``suffix`` from a fixed list. The upload's own name is never used for
a path; it is returned (for ``--keep-identity``) and otherwise forgotten.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bsi_d2.io.base import COUNTS_SUFFIX, ScanImage, SkippedInput, view_from_text
from bsi_d2.io.limits import DEFAULT_LIMITS, ReadLimits
from bsi_d2.web import require
from bsi_d2.web.security import CSRF_FIELD, CSRF_HEADER

MAX_FILES = 2  # two one-view DICOM files, two view images, or a Labelme file and its image
FORM_OVERHEAD = 64 * 1024  # boundaries, part headers and the small fields
MAX_FIELD_BYTES = 1024
SUFFIXES = {
    ".dcm": ".dcm",
    ".dicom": ".dcm",
    ".dic": ".dcm",
    ".ima": ".dcm",
    ".png": ".png",
    ".tif": ".tif",
    ".tiff": ".tif",
    ".json": ".json",
}
VIEW_TAGS = {"anterior": "_ANT", "posterior": "_POST"}
PART_SUFFIX = ".part"


class UploadRefused(Exception):
    """An upload not taken; ``status`` is the HTTP status, the message says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class StoredFile:
    name: str  # the pseudonymous name in the job's input folder
    size: int
    digest: str  # SHA-256, hex
    kind: str  # dicom, image, counts, labelme
    upload_name: str = field(default="", repr=False)  # the browser's name: identity, maybe


def upload_budget(limits: ReadLimits = DEFAULT_LIMITS) -> int:
    """The largest body an upload of :data:`MAX_FILES` files within ``limits`` can have."""
    return MAX_FILES * max(limits.max_file_bytes, limits.max_json_bytes) + FORM_OVERHEAD


def upload_kind(upload_name: str) -> tuple[str, str] | None:
    """(kind, stored suffix) by the upload's suffix; None where it names no known type (then
    the first bytes decide, :func:`sniff_kind`)."""
    lower = upload_name.lower()
    if lower.endswith(COUNTS_SUFFIX):
        return "counts", COUNTS_SUFFIX
    suffix = SUFFIXES.get(os.path.splitext(lower)[1])
    if suffix is None:
        return None
    kind = {".dcm": "dicom", ".json": "labelme"}.get(suffix, "image")
    return kind, suffix


def sniff_kind(path: Path) -> tuple[str, str] | None:
    """A file without a known suffix is a DICOM file if it has the preamble; else unknown."""
    with open(path, "rb") as handle:
        head = handle.read(132)
    return ("dicom", ".dcm") if head[128:132] == b"DICM" else None


class _Receiver:
    """Callbacks of python-multipart's streaming parser: writes file parts to ``dest`` under
    temporary names, counting and hashing, and refuses as soon as a limit is passed."""

    def __init__(
        self, dest: Path, limits: ReadLimits, verified: bool, csrf_ok: Callable[[str | None], bool]
    ) -> None:
        self.dest = dest
        self.limits = limits
        self.verified = verified
        self.csrf_ok = csrf_ok
        self.files: list[dict[str, Any]] = []
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._field: bytearray | None = None
        self._field_name = ""
        self._file: dict[str, Any] | None = None

    # -- parser callbacks ------------------------------------------------------------------
    def on_part_begin(self) -> None:
        self._disposition, self._field, self._file = b"", None, None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        if len(self._header_value) > MAX_FIELD_BYTES:
            raise UploadRefused(400, "a part header of the upload is too long")

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        multipart = require("python_multipart.multipart")
        _, options = multipart.parse_options_header(self._disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" not in options:
            self._field, self._field_name = bytearray(), name
            return
        if not self.verified:
            raise UploadRefused(403, "the form's CSRF token is missing or wrong")
        upload_name = options[b"filename"].decode("utf-8", "replace")
        if not upload_name:  # an empty file input sends a part with no name and no bytes
            self._file = {"skip": True}
            return
        if len([f for f in self.files if not f.get("skip")]) >= MAX_FILES:
            raise UploadRefused(400, f"at most {MAX_FILES} files per scan")
        kind = upload_kind(upload_name)
        json_file = kind is not None and kind[0] == "labelme"
        path = self.dest / f"{len(self.files)}{PART_SUFFIX}"
        self._file = {
            "path": path,
            "handle": open(path, "wb"),  # noqa: SIM115 - closed in on_part_end or cleanup
            "hash": hashlib.sha256(),
            "size": 0,
            "kind": kind,
            "limit": self.limits.max_json_bytes if json_file else self.limits.max_file_bytes,
            "json": json_file,
            "upload_name": upload_name,
        }
        self.files.append(self._file)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._field is not None:
            self._field.extend(chunk)
            if len(self._field) > MAX_FIELD_BYTES:
                raise UploadRefused(400, f"form field {self._field_name!r} is too long")
            return
        if self._file is None or self._file.get("skip"):
            return
        self._file["size"] += len(chunk)
        reason = self.limits.file_size_reason(self._file["size"], json=self._file["json"])
        if reason is not None:
            raise UploadRefused(413, f"upload refused while it was sent: {reason}")
        self._file["hash"].update(chunk)
        self._file["handle"].write(chunk)

    def on_part_end(self) -> None:
        if self._field is not None:
            if self._field_name == CSRF_FIELD and not self.verified:
                self.verified = self.csrf_ok(self._field.decode("utf-8", "replace"))
            self._field = None
        elif self._file is not None and not self._file.get("skip"):
            self._file["handle"].close()
        self._file = None

    def cleanup(self) -> None:
        for entry in self.files:
            if "handle" in entry:
                entry["handle"].close()
                entry["path"].unlink(missing_ok=True)


async def receive_upload(
    headers: Mapping[str, str],
    chunks: AsyncIterator[bytes],
    dest: Path,
    csrf_ok: Callable[[str | None], bool],
    limits: ReadLimits = DEFAULT_LIMITS,
) -> list[StoredFile]:
    """Stream a multipart upload into ``dest`` (checks 1-4 of the module docstring); the files
    stored, under their pseudonymous names. Raises :class:`UploadRefused`, leaving ``dest``
    as it was."""
    multipart = require("python_multipart.multipart")
    content_type = headers.get("content-type", "")
    kind, params = multipart.parse_options_header(content_type)
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise UploadRefused(400, "the upload must be a multipart/form-data form")
    budget = upload_budget(limits)
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise UploadRefused(400, "malformed Content-Length")
        if int(declared) > budget:
            raise UploadRefused(
                413,
                f"upload refused before it was read: {int(declared):,} "
                f"bytes, over the limit of {budget:,} bytes for {MAX_FILES} "
                "files (ReadLimits.max_file_bytes)",
            )
    header_token = headers.get(CSRF_HEADER)
    receiver = _Receiver(dest, limits, bool(header_token) and csrf_ok(header_token), csrf_ok)
    callbacks = {
        name: getattr(receiver, name)
        for name in (
            "on_part_begin",
            "on_part_data",
            "on_part_end",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
        )
    }
    parser = multipart.MultipartParser(params[b"boundary"], callbacks)
    received = 0
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > budget:
                raise UploadRefused(413, f"upload refused while it was sent: over {budget:,} bytes")
            parser.write(chunk)
        parser.finalize()
        if not receiver.verified:
            raise UploadRefused(403, "the form's CSRF token is missing or wrong")
        files = [f for f in receiver.files if not f.get("skip")]
        if not files:
            raise UploadRefused(400, "no file was uploaded")
        return _store(files, dest)
    except UploadRefused:
        receiver.cleanup()
        raise
    except Exception as error:  # the parser's own errors: a malformed body
        receiver.cleanup()
        raise UploadRefused(400, f"malformed upload ({type(error).__name__})") from error


def _store(files: list[dict[str, Any]], dest: Path) -> list[StoredFile]:
    """Rename the received parts to their pseudonymous names (module docstring)."""
    for entry in files:
        entry["kind"] = entry["kind"] or sniff_kind(entry["path"])
        if entry["kind"] is None:
            raise UploadRefused(415, "not a DICOM, PNG, TIFF or Labelme JSON file")
    digests = sorted(entry["hash"].hexdigest() for entry in files)
    stem = hashlib.sha256("+".join(digests).encode("ascii")).hexdigest()[:16]
    stored, taken = [], set()
    for index, entry in enumerate(files):
        kind, suffix = entry["kind"]
        base = os.path.splitext(entry["upload_name"])[0]
        tag = VIEW_TAGS.get(view_from_text(base) or "", "") if kind == "image" else ""
        name = f"{stem}{tag}{suffix}"
        if name in taken:
            name = f"{stem}{tag}_{index + 1}{suffix}"
        taken.add(name)
        os.replace(entry["path"], dest / name)
        stored.append(
            StoredFile(name, entry["size"], entry["hash"].hexdigest(), kind, entry["upload_name"])
        )
    _point_labelme_at_image(stored, dest)
    return stored


def _point_labelme_at_image(stored: list[StoredFile], dest: Path) -> None:
    """A Labelme file uploaded with its image names the image by the upload's name: point it at
    the stored name, so the reader finds it (and reads the scan once, from the image)."""
    labelme = [f for f in stored if f.kind == "labelme"]
    images = [f for f in stored if f.kind == "image"]
    if len(labelme) != 1 or len(images) != 1:
        return
    path = dest / labelme[0].name
    try:
        document = json.loads(path.read_text(encoding="utf-8"))  # within max_json_bytes
    except (OSError, UnicodeDecodeError, ValueError):
        return  # the reader says what is wrong with it
    if isinstance(document, dict):
        document["imagePath"] = images[0].name
        path.write_text(json.dumps(document), encoding="utf-8")


@dataclass
class CheckedScan:
    scan: ScanImage
    summary: dict[str, Any]  # what the page shows: format, layout, views, warnings


def check_upload(
    folder: Path,
    limits: ReadLimits = DEFAULT_LIMITS,
    salt: str | None = None,
    keep_identity: bool = False,
) -> CheckedScan:
    """Read the upload in ``folder`` as ``predict`` would; exactly one scan, or
    :class:`UploadRefused` with the readers' reasons (the server's paths taken out)."""
    from bsi_d2.io.readers import iter_scans

    scans, problems = [], []
    items = iter_scans(
        [folder], recursive=False, salt=salt, keep_identity=keep_identity, limits=limits
    )
    for item in items:
        if isinstance(item, SkippedInput):
            if item.kind != "duplicate":
                problems.append(_local(str(item.reason), folder))
        else:
            scans.append(item)
    if problems:
        raise UploadRefused(422, "; ".join(problems))
    if len(scans) != 1:
        raise UploadRefused(
            422,
            f"the upload holds {len(scans)} scans; upload one study "
            "(a two-view file, or its anterior and posterior files)",
        )
    scan = scans[0]
    meta = scan.metadata
    summary = {
        "format": meta.get("format"),
        "layout": meta.get("layout"),
        "views": sorted(scan.views) if scan.merged is None else ["anterior", "posterior"],
        "matrix": meta.get("matrix"),
        "counts_source": meta.get("counts_source", "counts"),
        "warnings": [_local(str(w), folder) for w in meta.get("warnings") or []],
        "study_key": meta.get("study_key"),
    }
    return CheckedScan(scan, summary)


def _local(text: str, folder: Path) -> str:
    """``text`` without the server's folder in front of the stored names."""
    return text.replace(f"{folder}{os.sep}", "").replace(str(folder), "the upload")
