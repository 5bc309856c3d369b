"""Upload-to-result seconds of ``bsi-d2 serve``, measured as a browser would see them.

``python -m bsi_d2.web.timing --scan FILE [--runs N] -- SERVE-OPTIONS`` starts ``bsi-d2 serve
SERVE-OPTIONS`` on a free local port with a temporary work area and account, waits for the
model to load, then ``N`` times: logs in, uploads ``FILE``, asks for the run at once and polls
the status route until the result is there. It prints one JSON line per run: the seconds from
the upload's first byte to the finished result as the client saw them, and the server's own
split (upload and reading checks, waiting in the queue, the run). Standard library only on the
client side, so it needs nothing the server does not.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Browser:
    """A cookie-keeping client of one server."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> tuple[str, str]:
        with self.opener.open(self.base + path, timeout=600) as response:
            return response.geturl(), response.read().decode("utf-8")

    def post(self, path: str, body: bytes, content_type: str) -> tuple[str, str]:
        request = urllib.request.Request(
            self.base + path, data=body, headers={"Content-Type": content_type}, method="POST"
        )
        with self.opener.open(request, timeout=600) as response:
            return response.geturl(), response.read().decode("utf-8")

    def post_form(self, path: str, fields: dict[str, str]) -> tuple[str, str]:
        body = urllib.parse.urlencode(fields).encode("ascii")
        return self.post(path, body, "application/x-www-form-urlencoded")

    def login(self, user: str, password: str) -> str:
        _, page = self.get("/login")
        _, page = self.post_form(
            "/login", {"username": user, "password": password, "csrf_token": _csrf(page)}
        )
        return _csrf(page)

    def upload(self, csrf: str, scan: Path) -> str:
        boundary = secrets.token_hex(16)
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{csrf}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
            f'filename="{scan.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        body = head + scan.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        url, _ = self.post("/upload", body, f"multipart/form-data; boundary={boundary}")
        return url.rsplit("/", 1)[1]


def _csrf(page: str) -> str:
    found = CSRF.search(page)
    if not found:
        raise RuntimeError("no CSRF token in the page (not logged in?)")
    return found.group(1)


def measure(base: str, user: str, password: str, scan: Path, poll: float = 0.2) -> dict[str, Any]:
    """One upload, run at once, polled to its end; seconds as the client and server saw them."""
    browser = Browser(base)
    csrf = browser.login(user, password)
    start = time.perf_counter()
    job = browser.upload(csrf, scan)
    uploaded = time.perf_counter()
    browser.post_form(f"/jobs/{job}/run", {"csrf_token": csrf})
    while True:
        _, text = browser.get(f"/api/jobs/{job}")
        status = json.loads(text)
        if status["status"] not in ("queued", "running"):
            break
        time.sleep(poll)
    end = time.perf_counter()
    return {
        "job": job,
        "status": status["status"],
        "result_status": status["result_status"],
        "bsi": status["bsi"],
        "client_upload_to_result_s": round(end - start, 2),
        "client_upload_s": round(uploaded - start, 2),
        "server_upload_to_result_s": status["upload_to_result_seconds"],
        "server_queue_and_run_s": status["seconds"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bsi_d2.web.timing", description=__doc__)
    parser.add_argument("--scan", type=Path, required=True, help="the scan file to upload")
    parser.add_argument("--runs", type=int, default=3, help="uploads, one after another (3)")
    parser.add_argument("serve", nargs=argparse.REMAINDER, help="-- then bsi-d2 serve options")
    args = parser.parse_args(argv)
    serve = [a for a in args.serve if a != "--"]
    from bsi_d2.web.users import add_user

    with tempfile.TemporaryDirectory(prefix="bsi-d2-timing-") as tmp:
        work, user, password = Path(tmp) / "work", "timing", secrets.token_urlsafe(16)
        users = Path(tmp) / "users.toml"
        add_user(users, user, password)
        port = _free_port()
        command = [
            sys.executable,
            "-m",
            "bsi_d2.cli",
            "serve",
            *serve,
            "--work",
            str(work),
            "--users",
            str(users),
            "--port",
            str(port),
        ]
        started = time.perf_counter()
        server = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        base = f"http://127.0.0.1:{port}"
        try:
            while True:
                if server.poll() is not None:
                    raise RuntimeError(server.stderr.read().decode(errors="replace")[-2000:])
                try:
                    Browser(base).get("/login")
                    break
                except (urllib.error.URLError, ConnectionError):
                    time.sleep(0.2)
            print(json.dumps({"server_start_s": round(time.perf_counter() - started, 2)}))
            for _ in range(max(1, args.runs)):
                print(json.dumps(measure(base, user, password, args.scan)), flush=True)
        finally:
            server.terminate()
            server.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
