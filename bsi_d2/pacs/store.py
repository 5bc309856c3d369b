"""Sending DICOM files to a PACS: C-ECHO then C-STORE (pynetdicom), or STOW-RS (DICOMweb, the
standard library only).

Nothing here prints or logs a patient attribute, nor a path: messages name the peer and the
reason, and a caller names each file by its path relative to the folder given
(:func:`relative_name`; the toolkit's output folders have pseudonymous names).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pynetdicom and pydicom are imported where a transfer runs
    from urllib.error import HTTPError

    from pydicom import Dataset
    from pynetdicom import AE
    from pynetdicom.association import Association

logger = logging.getLogger(__name__)

DICOM_MAGIC = b"DICM"  # after the 128-byte preamble of a Part-10 file
DEFAULT_CALLING_AET = "BSI_D2"
WARNING_STATUSES = frozenset({0xB000, 0xB006, 0xB007})  # stored: coerced, discarded, mismatched
MAX_CONTEXTS = 128  # presentation contexts one association can propose (odd IDs 1..255)
STOW_CHUNK_BYTES = 64 * 2**20  # one STOW-RS request carries at most this much (or one file)

# DICOM PS3.18 (STOW-RS) failure and warning reasons, and the storage statuses they reuse
_STOW_REASONS = {
    0x0110: "processing failure",
    0x0122: "SOP class not supported",
    0x0124: "not authorised",
    0xA700: "out of resources",
    0xA900: "data set does not match the SOP class",
    0xB000: "elements coerced",
    0xB006: "elements discarded",
    0xB007: "data set does not match the SOP class",
    0xC000: "cannot understand",
    0xC122: "referenced transfer syntax not supported",
    0xC123: "the instance conflicts with one already stored",
}


class PeerError(RuntimeError):
    """The peer could not be reached, or refused the association, the verification or the
    request as a whole; the message names the peer and the reason."""


@dataclass(frozen=True)
class StoreResult:
    """What became of one file: stored (``ok``, perhaps with a warning in ``message``) or not."""

    path: Path
    sop_instance_uid: str | None
    status: int | None  # the peer's status (C-STORE) or failure / warning reason (STOW-RS)
    ok: bool
    message: str = ""


@dataclass(frozen=True)
class _Peer:
    host: str
    port: int
    called_aet: str
    calling_aet: str
    timeout: float

    def __str__(self) -> str:
        return f"{self.called_aet}@{self.host}:{self.port}"


@dataclass(frozen=True)
class _Header:
    path: Path
    sop_class: str
    sop_instance: str
    transfer_syntax: str


def is_part10(path: Path) -> bool:
    """Whether ``path`` starts with the 128-byte preamble and ``DICM`` of a Part-10 file."""
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:132] == DICOM_MAGIC
    except OSError:
        return False


def find_dicom_files(paths: Iterable[str | Path]) -> list[Path]:
    """The Part-10 files among ``paths`` and under the folders among them (recursive), sorted.

    Files without the preamble and ``DICM`` are left out, as are DICOMDIR indexes (they describe
    media, they are not instances to store) and the temp files of writes in progress.
    Raises :class:`FileNotFoundError` for a path that does not exist.
    """
    from bsi_d2.io.files import TMP_MARK

    found: set[Path] = set()
    for root in map(Path, paths):
        if not root.exists():
            raise FileNotFoundError(f"{root} does not exist")
        candidates = [root] if root.is_file() else (p for p in root.rglob("*") if p.is_file())
        for path in candidates:
            if path.name.upper() == "DICOMDIR" or TMP_MARK in path.name:
                continue
            if is_part10(path):
                found.add(path)
    return sorted(found)


def relative_name(path: Path, roots: Iterable[str | Path]) -> str:
    """``path`` as a message names it: relative to the first of ``roots`` holding it (a root that
    is the file itself gives its name), else its bare name."""
    for root in map(Path, roots):
        if path == root:
            return path.name
        if path.is_relative_to(root):
            return path.relative_to(root).as_posix()
    return path.name


# --- DIMSE: C-ECHO and C-STORE ------------------------------------------------------------------


def echo(
    host: str,
    port: int,
    called_aet: str,
    calling_aet: str = DEFAULT_CALLING_AET,
    timeout: float = 10,
) -> None:
    """C-ECHO ``called_aet`` at ``host:port``; :class:`PeerError` saying why when the peer cannot
    be reached, rejects or aborts the association, or answers anything but success."""
    from pynetdicom.sop_class import Verification

    peer = _Peer(host, int(port), called_aet, calling_aet, timeout)
    assoc = _associate(_application_entity(peer, [(Verification, [])]), peer)
    try:
        _verify(assoc, peer)
    finally:
        _close(assoc)


def store_files(
    files: Sequence[str | Path],
    host: str,
    port: int,
    called_aet: str,
    calling_aet: str = DEFAULT_CALLING_AET,
    timeout: float = 30,
) -> list[StoreResult]:
    """C-ECHO, then C-STORE each of ``files`` to ``called_aet`` at ``host:port``; one result per
    file, in the order given.

    The presentation contexts come from the files' SOP classes and transfer syntaxes; all files go
    over one association (one per 128 contexts). A file that cannot be read, or that the peer
    refuses, is recorded and the rest go on; an association that drops mid-batch is made again
    and the file it dropped on sent once more. Warnings 0xB000, 0xB006 and 0xB007 count as stored.
    Raises :class:`PeerError` when the peer cannot be reached or refuses the association or the
    C-ECHO before anything is sent; ``timeout`` bounds each network step, in seconds.
    """
    peer = _Peer(host, int(port), called_aet, calling_aet, timeout)
    results: dict[Path, StoreResult] = {}
    headers = []
    for path in map(Path, files):
        try:
            headers.append(_read_header(path))
        except Exception as err:  # noqa: BLE001 - one unreadable file, not the batch
            results[path] = StoreResult(path, None, None, False, _unreadable(err, path))
    if not headers:
        echo(host, port, called_aet, calling_aet, min(timeout, 10))
    for group_number, group in enumerate(_context_groups(headers)):
        try:
            results.update(_store_group(group, peer, verify=group_number == 0))
        except PeerError as err:
            if group_number == 0:
                raise
            for header in group:  # a later association failed: the earlier files are stored
                results[header.path] = StoreResult(
                    header.path, header.sop_instance, None, False, f"not sent: {err}"
                )
    return [results[path] for path in map(Path, files)]


def _store_group(headers: list[_Header], peer: _Peer, verify: bool) -> dict[Path, StoreResult]:
    """Store ``headers``' files over one association (made again where it drops)."""
    from pynetdicom.sop_class import Verification

    ae = _application_entity(peer, [(Verification, []), *_contexts(headers)])
    assoc = _associate(ae, peer)
    results: dict[Path, StoreResult] = {}
    try:
        if verify:
            _verify(assoc, peer)
        for number, header in enumerate(headers):
            try:
                dataset = _read_dataset(header.path)
            except Exception as err:  # noqa: BLE001 - one unreadable file, not the batch
                results[header.path] = StoreResult(
                    header.path, header.sop_instance, None, False, _unreadable(err, header.path)
                )
                continue
            for _ in range(2):  # a second time where the association dropped
                if not assoc.is_established:
                    try:
                        assoc = _associate(ae, peer)
                    except PeerError as err:
                        for rest in headers[number:]:
                            results.setdefault(
                                rest.path,
                                StoreResult(rest.path, rest.sop_instance, None, False,
                                            f"not sent: the association dropped and {err}"),
                            )  # fmt: skip
                        return results
                result = _send(assoc, dataset, header, peer)
                if result is not None:
                    break
                # no answer: pynetdicom may not have seen the abort yet; end it here, start afresh
                assoc.abort()
                logger.warning("%s dropped the association mid-batch", peer)
            else:
                result = StoreResult(
                    header.path, header.sop_instance, None, False,
                    f"{peer} dropped the association twice while receiving this file",
                )  # fmt: skip
            results[header.path] = result
    finally:
        _close(assoc)
    return results


def _send(assoc: Association, dataset: Dataset, header: _Header, peer: _Peer) -> StoreResult | None:
    """C-STORE ``dataset``; None when no answer came (the association dropped or timed out)."""
    from pydicom.uid import UID
    from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS

    try:
        status = assoc.send_c_store(dataset)
    except ValueError as err:  # pynetdicom: no accepted presentation context, or not encodable
        message = (
            f"{peer} accepted no presentation context for {UID(header.sop_class).name} in "
            f"{UID(header.transfer_syntax).name}"
            if "presentation context" in str(err)
            else f"cannot be encoded for sending: {err}"
        )
        return StoreResult(header.path, header.sop_instance, None, False, message)
    if "Status" not in status:
        return None
    code = int(status.Status)
    if code == 0x0000:
        return StoreResult(header.path, header.sop_instance, code, True, "")
    description = STORAGE_SERVICE_CLASS_STATUS.get(code, ("", "unknown status"))[1]
    message = f"status 0x{code:04X} ({description})"
    if status.get("ErrorComment"):
        message += f": {status.ErrorComment}"
    ok = code in WARNING_STATUSES
    return StoreResult(header.path, header.sop_instance, code, ok, ("warning: " if ok else "") +
                       message)  # fmt: skip


def _read_header(path: Path) -> _Header:
    import pydicom

    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    _check_identifiers(dataset)
    return _Header(
        path,
        str(dataset.SOPClassUID),
        str(dataset.SOPInstanceUID),
        str(dataset.file_meta.TransferSyntaxUID),
    )


def _read_dataset(path: Path) -> Dataset:
    import pydicom

    dataset = pydicom.dcmread(path)
    _check_identifiers(dataset)
    return dataset


def _check_identifiers(dataset: Dataset) -> None:
    """ValueError unless ``dataset`` names its SOP class, instance and transfer syntax (a file cut
    short after its meta header does not)."""
    meta = getattr(dataset, "file_meta", None)
    if not (dataset.get("SOPClassUID") and dataset.get("SOPInstanceUID")):
        raise ValueError("no SOP Class UID or SOP Instance UID (a file cut short?)")
    if meta is None or not meta.get("TransferSyntaxUID"):
        raise ValueError("no Transfer Syntax UID in the file meta information")


def _unreadable(err: Exception, path: Path) -> str:
    """``err`` in words, without the path (it may hold names above the folder given)."""
    text = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return f"cannot be read as DICOM: {text.replace(str(path), path.name)}"


def _contexts(headers: Iterable[_Header]) -> list[tuple[str, list[str]]]:
    """Presentation contexts, (SOP class, [transfer syntax]), for ``headers``: each SOP class in
    each file's own syntax, so nothing is re-encoded, plus Implicit VR Little Endian (which every
    SCP accepts) as a fallback for the uncompressed ones; pynetdicom converts between those."""
    from pydicom.uid import UID, ImplicitVRLittleEndian

    contexts: dict[tuple[str, str], None] = {}
    for header in headers:
        contexts[header.sop_class, header.transfer_syntax] = None
        syntax = UID(header.transfer_syntax)
        if not (syntax.is_compressed or syntax.is_deflated):
            contexts[header.sop_class, ImplicitVRLittleEndian] = None
    return [(sop_class, [syntax]) for sop_class, syntax in contexts]


def _context_groups(headers: list[_Header]) -> Iterator[list[_Header]]:
    """``headers`` split by SOP class into groups whose contexts (with Verification) fit in one
    association; one group in all but unusual batches."""
    by_class: dict[str, list[_Header]] = {}
    for header in headers:
        by_class.setdefault(header.sop_class, []).append(header)
    group: list[_Header] = []
    for members in by_class.values():
        if group and len(_contexts(group + members)) + 1 > MAX_CONTEXTS:
            yield group
            group = []
        group += members
    if group:
        yield group


def _application_entity(peer: _Peer, contexts: list[tuple[str, list[str]]]) -> AE:
    from pynetdicom import AE

    ae = AE(ae_title=peer.calling_aet)
    ae.connection_timeout = ae.acse_timeout = ae.dimse_timeout = peer.timeout
    ae.network_timeout = max(peer.timeout, 60)
    for sop_class, syntaxes in contexts:
        ae.add_requested_context(sop_class, syntaxes or None)
    return ae


def _associate(ae: AE, peer: _Peer) -> Association:
    """An established association with ``peer``, or :class:`PeerError` saying why not."""
    from pynetdicom import evt

    opened: list[bool] = []
    received: list[object] = []  # the peer's A-ASSOCIATE answer or abort
    handlers = [
        (evt.EVT_CONN_OPEN, lambda event: opened.append(True)),
        (evt.EVT_ACSE_RECV, lambda event: received.append(event.primitive)),
    ]
    started = time.monotonic()
    try:
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.called_aet, evt_handlers=handlers)
    except socket.gaierror as err:  # pynetdicom resolves the name before it connects
        reason = f"the host name cannot be resolved ({err.strerror})"
        raise PeerError(f"cannot reach {peer}: {reason}") from err
    if assoc.is_established:
        return assoc
    if not opened:
        waited = time.monotonic() - started
        raise PeerError(f"cannot reach {peer}: {_connection_failure(peer, waited)}")
    answer = assoc.acceptor.primitive
    if assoc.is_rejected and answer is not None:
        raise PeerError(
            f"{peer} rejected the association ({answer.result_str}, by the "
            f"{answer.source_str}): {answer.reason_str}" + _rejection_hint(answer, peer)
        )
    if answer is not None and answer.result == 0:
        raise PeerError(
            f"{peer} accepted the association but none of the presentation contexts proposed "
            "(SOP classes or transfer syntaxes it does not store)"
        )
    if received:
        raise PeerError(f"{peer} aborted the association request")
    raise PeerError(
        f"{peer} accepted the connection but did not answer the association request within "
        f"{peer.timeout:g} s"
    )


def _connection_failure(peer: _Peer, waited: float) -> str:
    """Why a TCP connection to ``peer`` failed, in words (pynetdicom logs it but keeps nothing):
    found by trying once more, unless the first try already ran out of time."""
    if waited >= 0.9 * peer.timeout:
        return f"no answer within {peer.timeout:g} s (host down, or a firewall drops the packets)"
    try:
        with socket.create_connection((peer.host, peer.port), timeout=peer.timeout):
            return "the connection failed, then succeeded on a second try (an unsteady network?)"
    except ConnectionRefusedError:
        return "the connection was refused (nothing listens on that port, or a firewall refuses)"
    except TimeoutError:
        return f"no answer within {peer.timeout:g} s (host down, or a firewall drops the packets)"
    except socket.gaierror as err:
        return f"the host name cannot be resolved ({err.strerror})"
    except OSError as err:  # host or network unreachable, ...
        return f"{(err.strerror or str(err)).lower()}"


def _rejection_hint(answer: object, peer: _Peer) -> str:
    diagnostic = (getattr(answer, "result_source", None), getattr(answer, "diagnostic", None))
    if diagnostic == (1, 7):
        return f" (is the PACS's AE title {peer.called_aet!r}?)"
    if diagnostic == (1, 3):
        return f" (the PACS does not know this side's AE title {peer.calling_aet!r})"
    return ""


def _verify(assoc: Association, peer: _Peer) -> None:
    status = assoc.send_c_echo()
    if "Status" not in status:
        raise PeerError(f"{peer} did not answer the C-ECHO (the association dropped or timed out)")
    if int(status.Status) != 0x0000:
        raise PeerError(f"{peer} answered the C-ECHO with status 0x{int(status.Status):04X}")


def _close(assoc: Association) -> None:
    if assoc.is_established:
        assoc.release()


# --- DICOMweb: STOW-RS --------------------------------------------------------------------------


def stow_rs(
    files: Sequence[str | Path],
    url: str,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 60,
) -> list[StoreResult]:
    """STOW-RS ``files`` to the DICOMweb root ``url`` (POST ``{url}/studies``, multipart/related
    of application/dicom parts, HTTP basic authentication when ``username`` is given); one result
    per file, in the order given, from the server's ReferencedSOPSequence and FailedSOPSequence.

    Files go in requests of up to 64 MiB. Raises :class:`PeerError` when the server cannot be
    reached or refuses the first request as a whole (authentication, no STOW-RS service there);
    a later request refused is recorded for its files.
    """
    endpoint = url.rstrip("/") + "/studies"
    results: dict[Path, StoreResult] = {}
    parts: list[tuple[_Header, bytes]] = []
    for path in map(Path, files):
        try:
            parts.append((_read_header(path), path.read_bytes()))
        except Exception as err:  # noqa: BLE001 - one unreadable file, not the batch
            results[path] = StoreResult(path, None, None, False, _unreadable(err, path))
    for number, chunk in enumerate(_stow_chunks(parts)):
        try:
            reply = _stow_post(endpoint, [data for _, data in chunk], username, password, timeout)
        except PeerError as err:
            if number == 0:
                raise
            for header, _ in chunk:
                results[header.path] = StoreResult(
                    header.path, header.sop_instance, None, False, f"not stored: {err}"
                )
            continue
        results.update(_stow_results([header for header, _ in chunk], reply))
    return [results[path] for path in map(Path, files)]


def _stow_chunks(parts: list[tuple[_Header, bytes]]) -> Iterator[list[tuple[_Header, bytes]]]:
    chunk: list[tuple[_Header, bytes]] = []
    size = 0
    for part in parts:
        if chunk and size + len(part[1]) > STOW_CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(part)
        size += len(part[1])
    if chunk:
        yield chunk


def _stow_post(
    endpoint: str, datasets: list[bytes], username: str | None, password: str | None,
    timeout: float,
) -> dict:  # fmt: skip
    """POST ``datasets`` as one multipart/related request; the server's JSON answer (also that
    of a 409 Conflict, which lists what failed), else :class:`PeerError`."""
    import base64
    import urllib.error
    import urllib.request
    import uuid

    boundary = f"bsi_d2-{uuid.uuid4().hex}"
    body = bytearray()
    for data in datasets:
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii")
        body += data + b"\r\n"
    body += f"--{boundary}--\r\n".encode("ascii")
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    request = urllib.request.Request(endpoint, data=bytes(body), method="POST")
    request.add_header("Content-Type", content_type)
    request.add_header("Accept", "application/dicom+json")
    if username is not None:
        token = base64.b64encode(f"{username}:{password or ''}".encode()).decode("ascii")
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            payload = response.read()
    except urllib.error.HTTPError as err:
        payload = err.read()
        if err.code == 409 and _json_or_none(payload) is not None:
            return _json_or_none(payload)  # every instance failed; the reasons are listed
        raise PeerError(f"{endpoint} refused the STOW-RS request: {_http_reason(err)}") from err
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        if isinstance(reason, OSError) and reason.strerror:
            reason = reason.strerror.lower()
        raise PeerError(f"cannot reach {endpoint}: {reason}") from err
    reply = _json_or_none(payload)
    if reply is None:
        raise PeerError(f"{endpoint} answered STOW-RS with something other than DICOM JSON")
    return reply


def _json_or_none(payload: bytes) -> dict | None:
    import json

    try:
        reply = json.loads(payload or b"{}")
    except ValueError:
        return None
    return reply if isinstance(reply, dict) else None


def _http_reason(err: HTTPError) -> str:
    hints = {
        401: "authentication failed (check --user and the password)",
        403: "this user may not store there",
        404: "no STOW-RS service at that address (is the URL the DICOMweb root?)",
        413: "the request is too large for the server",
        415: "the server does not take multipart/related application/dicom",
    }
    return f"HTTP {err.code} {err.reason}" + (f": {hints[err.code]}" if err.code in hints else "")


def _stow_results(headers: list[_Header], reply: dict) -> dict[Path, StoreResult]:
    """Each of ``headers`` as the STOW-RS answer ``reply`` (DICOM JSON) has it."""
    stored = {_item_uid(item): item for item in _sequence(reply, "00081199")}
    failed = {_item_uid(item): item for item in _sequence(reply, "00081198")}
    results = {}
    for header in headers:
        uid = header.sop_instance
        if uid in failed:
            code = _item_code(failed[uid], "00081197")
            reason = _STOW_REASONS.get(code, "no reason given") if code is not None else ""
            message = f"failure reason 0x{code:04X} ({reason})" if code is not None else "failed"
            results[header.path] = StoreResult(header.path, uid, code, False, message)
        elif uid in stored:
            code = _item_code(stored[uid], "00081196")
            message = (
                f"warning 0x{code:04X} ({_STOW_REASONS.get(code, 'no reason given')})"
                if code is not None else ""
            )  # fmt: skip
            results[header.path] = StoreResult(header.path, uid, code or 0, True, message)
        else:
            results[header.path] = StoreResult(
                header.path, uid, None, False, "the server's answer does not list this instance"
            )
    return results


def _sequence(dataset: dict, tag: str) -> list[dict]:
    return [item for item in (dataset.get(tag) or {}).get("Value") or [] if isinstance(item, dict)]


def _item_uid(item: dict) -> str | None:
    values = (item.get("00081155") or {}).get("Value") or [None]
    return values[0]


def _item_code(item: dict, tag: str) -> int | None:
    values = (item.get(tag) or {}).get("Value") or [None]
    return int(values[0]) if values[0] is not None else None
