"""Helpers of the web tests: logging in, the upload form, waiting for a job."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

from bsi_d2.inference.batch import BatchOptions
from bsi_d2.inference.replay import ReplayPredictor
from bsi_d2.taxonomy import load_taxonomy

PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22", "root": "root-password-333"}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def login(client: Any, name: str, password: str | None = None) -> str:
    """Log ``name`` in on ``client``; the session's CSRF token."""
    token = csrf_of(client.get("/login").text)
    response = client.post(
        "/login",
        data={"username": name, "password": password or PASSWORDS[name], "csrf_token": token},
    )
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/").text)


def upload(client: Any, csrf: str, *files: tuple[str, bytes]) -> Any:
    """POST the upload form with ``files`` as (name sent, bytes)."""
    parts = [("files", (name, data, "application/octet-stream")) for name, data in files]
    return client.post("/upload", data={"csrf_token": csrf}, files=parts)


def job_id_of(response: Any) -> str:
    assert response.status_code == 303, response.text[:2000]
    return response.headers["location"].rsplit("/", 1)[1]


def wait_done(client: Any, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/api/jobs/{job_id}").json()
        if status["status"] not in ("queued", "running"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def build_settings(
    root: Path, recording: Path, users_file: Path, predictor: Any = None, **changes: Any
) -> Any:
    """WebSettings with a work area under ``root``, a copy of ``users_file`` and the replay of
    ``recording`` as the model (or ``predictor``); ``changes`` replace the settings' fields."""
    from bsi_d2.web.app import WebSettings
    from bsi_d2.web.jobs import RunSettings

    root.mkdir(parents=True, exist_ok=True)
    taxonomy = load_taxonomy()
    users = shutil.copy(users_file, root / "users.toml")
    predictor = predictor or ReplayPredictor.from_file(recording, taxonomy)
    options = BatchOptions(model={"config": None, "weights": None, "engine": "replay"})
    settings = WebSettings(
        work_dir=root / "work",
        users_file=Path(users),
        run=RunSettings(predictor, taxonomy, options),
        login_delay=0.05,
        model_label="replay of a recording: the phantom's truth stands in for a model",
    )
    for name, value in changes.items():
        setattr(settings, name, value)
    return settings


def same_server(client: Any) -> Any:
    """Another browser on ``client``'s server: its own cookies, the same app (not started
    again)."""
    from fastapi.testclient import TestClient

    return TestClient(client.app, base_url=str(client.base_url), follow_redirects=False)
