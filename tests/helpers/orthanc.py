"""A real Orthanc PACS for tests: Debian's /usr/sbin/Orthanc on free loopback ports, with a
generated config (no remote access, authentication on with a random password per run, the
called AE title checked), its storage in the test's folder."""

from __future__ import annotations

import base64
import json
import secrets
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")  # Debian orthanc-dicomweb
AET = "ORTHANC"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Orthanc:
    host: str
    dicom_port: int
    http_port: int
    user: str
    password: str
    log: Path
    process: subprocess.Popen
    aet: str = AET

    @property
    def dicomweb(self) -> str | None:
        """The DICOMweb root, where the plugin is installed."""
        return f"http://{self.host}:{self.http_port}/dicom-web" if DICOMWEB.exists() else None

    def rest(self, path: str, body: object | None = None) -> object:
        if body is None or isinstance(body, bytes):
            data = body
        else:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        request = urllib.request.Request(f"http://{self.host}:{self.http_port}{path}", data=data)
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            payload = response.read()
        try:
            return json.loads(payload)
        except ValueError:
            return payload

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_orthanc(folder: Path) -> Orthanc:
    folder.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(16)
    dicom_port, http_port = free_port(), free_port()
    config = {
        "Name": "bsi_d2-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": AET,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {"bsi": password},
        "DicomCheckCalledAet": True,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": True,
        "Plugins": [str(DICOMWEB)] if DICOMWEB.exists() else [],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "StableAge": 1,
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config))
    log = folder / "orthanc.log"
    with open(log, "wb") as log_file:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [str(ORTHANC), str(path)], stdout=log_file, stderr=subprocess.STDOUT
        )
    server = Orthanc("127.0.0.1", dicom_port, http_port, "bsi", password, log, process)
    deadline = time.monotonic() + 30
    while True:
        try:
            server.rest("/system")
            return server
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"Orthanc did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.2)
