"""Sending DICOM files to a PACS: C-ECHO then C-STORE (pynetdicom), or STOW-RS (DICOMweb).

Files are named in messages by their path relative to the folder given (the toolkit's output
folders have pseudonymous names); no patient attribute is ever printed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

DICOM_MAGIC = b"DICM"
DEFAULT_CALLING_AET = "BSI_D2"
WARNING_STATUSES = (0xB000, 0xB006, 0xB007)  # stored, with coercion or elements discarded


class PeerError(RuntimeError):
    """The peer could not be reached, refused the association or the verification."""


@dataclass
class StoreResult:
    path: str  # relative to the folder given
    sop_instance_uid: str | None
    status: int | None
    ok: bool
    message: str = ""


def is_part10(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:132] == DICOM_MAGIC
    except OSError:
        return False


def find_dicom_files(paths: Iterable[str | Path]) -> list[tuple[Path, str]]:
    """Part-10 files under ``paths`` (files or folders, recursive), each with its name relative
    to the folder it was found in, sorted."""
    found = []
    for root in map(Path, paths):
        if root.is_file():
            if is_part10(root):
                found.append((root, root.name))
            continue
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if is_part10(path):
                found.append((path, str(path.relative_to(root))))
    return found


def _associate(ae, host: str, port: int, called_aet: str):
    from pynetdicom import evt

    answers: list = []  # the peer's A-ASSOCIATE response, for its rejection reason
    handlers = [(evt.EVT_ACSE_RECV, lambda event: answers.append(event.primitive))]
    assoc = ae.associate(host, int(port), ae_title=called_aet, evt_handlers=handlers)
    if assoc.is_established:
        return assoc
    peer = f"{called_aet}@{host}:{port}"
    if assoc.is_rejected:
        reason = next((getattr(a, "reason_str", None) for a in answers if hasattr(a, "result")),
                      None)  # fmt: skip
        raise PeerError(f"{peer} rejected the association: {reason or 'no reason given'}")
    if assoc.is_aborted and answers:
        raise PeerError(f"{peer} aborted the association")
    raise PeerError(f"{peer}: connection refused or no answer (is the PACS running there?)")


def echo(
    host: str,
    port: int,
    called_aet: str,
    calling_aet: str = DEFAULT_CALLING_AET,
    timeout: float = 10,
) -> None:
    """C-ECHO the peer; :class:`PeerError` with the reason when it does not answer success."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(Verification)
    assoc = _associate(ae, host, port, called_aet)
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if not status or int(status.Status) != 0:
        code = getattr(status, "Status", None)
        raise PeerError(f"{called_aet}@{host}:{port}: C-ECHO failed (status {code})")


def store_files(
    files: Sequence[tuple[Path, str]],
    host: str,
    port: int,
    called_aet: str,
    calling_aet: str = DEFAULT_CALLING_AET,
    timeout: float = 30,
) -> list[StoreResult]:
    """C-ECHO, then C-STORE every file over one association; a file that cannot be read or
    that the peer refuses is recorded and the rest go on."""
    import pydicom
    from pynetdicom import AE

    echo(host, port, called_aet, calling_aet, timeout)
    results, datasets = [], []
    contexts: dict[str, set[str]] = {}
    for path, name in files:
        try:
            ds = pydicom.dcmread(path)
        except Exception as err:  # noqa: BLE001 - one unreadable file, not the batch
            results.append(StoreResult(name, None, None, False, f"unreadable: {err}"))
            continue
        contexts.setdefault(str(ds.SOPClassUID), set()).add(str(ds.file_meta.TransferSyntaxUID))
        datasets.append((name, ds))
    if not datasets:
        return results
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for sop_class, syntaxes in list(contexts.items())[:128]:
        ae.add_requested_context(sop_class, sorted(syntaxes))
    assoc = _associate(ae, host, port, called_aet)
    try:
        for name, ds in datasets:
            uid = str(ds.SOPInstanceUID)
            if not assoc.is_established:
                assoc = _associate(ae, host, port, called_aet)
            try:
                status = assoc.send_c_store(ds)
            except Exception as err:  # noqa: BLE001 - e.g. no accepted context for this class
                results.append(StoreResult(name, uid, None, False, str(err)))
                continue
            code = int(status.Status) if status else None
            ok = code == 0 or code in WARNING_STATUSES
            message = (
                "" if code == 0 else f"status 0x{code:04X}" if code is not None else "no reply"
            )
            results.append(StoreResult(name, uid, code, ok, message))
    finally:
        if assoc.is_established:
            assoc.release()
    return results


def stow_rs(
    files: Sequence[tuple[Path, str]],
    url: str,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 60,
) -> list[StoreResult]:
    """STOW-RS every file in one multipart/related POST to ``{url}/studies``."""
    import base64
    import urllib.error
    import urllib.request

    import pydicom

    boundary = uuid.uuid4().hex
    body, uids = bytearray(), []
    for path, name in files:
        data = Path(path).read_bytes()
        uids.append((name, str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)))
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        body += data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        url.rstrip("/") + "/studies",
        data=bytes(body),
        method="POST",
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        },
    )
    if username is not None:
        token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            reply = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        raise PeerError(f"{url}: STOW-RS refused: HTTP {err.code} {err.reason}") from err
    except urllib.error.URLError as err:
        raise PeerError(f"{url}: cannot reach the DICOMweb server: {err.reason}") from err
    stored = {_uid(item) for item in (reply.get("00081199") or {}).get("Value", [])}
    failed = {_uid(item) for item in (reply.get("00081198") or {}).get("Value", [])}
    return [
        StoreResult(name, uid, 0 if uid in stored else None, uid in stored and uid not in failed,
                    "" if uid in stored else "not in the server's list of stored instances")
        for name, uid in uids
    ]  # fmt: skip


def _uid(item: dict) -> str | None:
    value = (item.get("00081155") or {}).get("Value") or [None]
    return value[0]
