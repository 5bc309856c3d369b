"""``bsi-d2 serve`` in a real browser: headless Chromium (Debian's, driven by Playwright) logs
in, uploads a phantom DICOM, adjusts the brightness, runs the segmentation and reads the BSI.

Screenshots of the login, upload, adjust and result pages go to a temporary folder, or to
``$BSI_D2_SCREENSHOTS`` where it is set (``BSI_D2_SCREENSHOTS=docs/screenshots pytest
tests/web -m chromium`` refreshes the ones in docs/web.md).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from helpers.chromium import CHROMIUM, MARKS, QUIET_FLAGS
from helpers.orthanc import free_port

pytestmark = list(MARKS)
pytest.importorskip("fastapi", reason="the web stack is optional: pip install bsi_d2[web]")
pytest.importorskip("uvicorn", reason="the web stack is optional: pip install bsi_d2[web]")
pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright")

from web_helpers import PASSWORDS  # noqa: E402


@pytest.fixture
def server(make_settings):
    """The app served by uvicorn on a free local port, in a thread: (base URL, app)."""
    import uvicorn

    from bsi_d2.web.app import create_app

    app = create_app(make_settings())
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    served = uvicorn.Server(config)
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not served.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert served.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", app
    served.should_exit = True
    thread.join(10)


def test_a_physician_logs_in_uploads_adjusts_runs_and_reads_the_bsi(server, phantom, tmp_path):
    from playwright.sync_api import sync_playwright

    base, app = server
    shots = Path(os.environ.get("BSI_D2_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=list(QUIET_FLAGS),
            viewport={"width": 1200, "height": 900},
        )
        try:
            page = context.new_page()
            page.goto(base + "/")
            assert page.url == base + "/login"  # every page needs a session
            page.fill("input[name=username]", "alice")
            page.fill("input[name=password]", PASSWORDS["alice"])
            page.screenshot(path=str(shots / "login.png"))
            page.click("#login button[type=submit]")
            page.wait_for_url(base + "/")

            page.set_input_files("input[type=file]", str(phantom["dicom"]))
            page.screenshot(path=str(shots / "upload.png"))
            page.click("#upload button[type=submit]")
            page.wait_for_url(f"{base}/jobs/*")
            job = page.url.rsplit("/", 1)[1]

            page.locator("#window").fill("96")  # brightness: white at display value 96
            page.wait_for_function(
                "() => { const img = document.getElementById('preview');"
                " return img.src.includes('window=96') && img.complete && img.naturalWidth > 0; }"
            )
            assert page.inner_text("#window-value") == "96"
            page.screenshot(path=str(shots / "adjust.png"), full_page=True)
            page.click("#run")
            page.wait_for_selector("#bsi", timeout=60_000)
            page.wait_for_function("() => document.getElementById('view').complete")
            bsi = page.inner_text("#bsi")
            page.screenshot(path=str(shots / "result.png"), full_page=True)
        finally:
            context.close()
    record = app.state.web.work.load(job)
    assert record.status == "done" and record.result_status == "ok"
    assert bsi == f"{record.bsi:.2f} % of skeletal mass"
    assert record.adjustments["window"] == 96
    assert all(
        (shots / f"{name}.png").stat().st_size > 1000 for name in ("login", "upload", "result")
    )
