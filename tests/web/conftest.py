"""Fixtures of the web tests: one phantom scan and a recording of it (the replay predictor
stands in for a model), accounts, and a logged-in test client of ``bsi-d2 serve``'s app.

The web stack is optional (``pip install bsi_d2[web]``): each test module skips itself where
FastAPI is absent, and this file imports it only inside fixtures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from web_helpers import PASSWORDS, build_settings, login

from bsi_d2 import cli
from bsi_d2.inference.replay import phantom_recording, save_recording
from bsi_d2.taxonomy import load_taxonomy


@pytest.fixture(scope="session")
def phantom(tmp_path_factory) -> dict[str, Path]:
    """One phantom patient (DICOM, Labelme, truth) and a recording of its truth as
    predictions, keyed by the display ``predict`` makes of the DICOM."""
    root = tmp_path_factory.mktemp("web_phantom")
    assert cli.main(["phantom", "--scans", "1", "--out", str(root), "--workers", "1"]) == 0
    recording = save_recording(root / "recording.jsonl", phantom_recording(root, load_taxonomy()))
    return {
        "root": root,
        "dicom": root / "dicom" / "phantom_0000.dcm",
        "labelme": root / "labelme" / "phantom_0000.json",
        "png": root / "labelme" / "phantom_0000.png",
        "counts": root / "labelme" / "phantom_0000.counts.png",
        "recording": recording,
    }


@pytest.fixture(scope="session")
def users_file(tmp_path_factory) -> Path:
    """alice and bob (users) and root (admin); hashed once for the session."""
    from bsi_d2.web.users import add_user

    path = tmp_path_factory.mktemp("web_users") / "users.toml"
    for name, password in PASSWORDS.items():
        add_user(path, name, password, admin=name == "root")
    return path


@pytest.fixture
def make_settings(tmp_path, phantom, users_file) -> Callable[..., Any]:
    """WebSettings on a fresh work area (:func:`web_helpers.build_settings`)."""

    def make(**changes: Any) -> Any:
        return build_settings(
            tmp_path / f"server{len(list(tmp_path.glob('server*')))}",
            phantom["recording"],
            users_file,
            **changes,
        )

    return make


@pytest.fixture
def make_client(make_settings) -> Iterator[Callable[..., Any]]:
    """A test client (lifespan running) of an app made by ``make_settings(**changes)``."""
    from fastapi.testclient import TestClient

    from bsi_d2.web.app import create_app

    clients = []

    def make(**changes: Any) -> Any:
        client = TestClient(create_app(make_settings(**changes)), follow_redirects=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def alice(make_client) -> tuple[Any, str]:
    """A client logged in as alice, and her CSRF token."""
    client = make_client()
    return client, login(client, "alice")
