"""``bsi-d2 serve``'s guards, with the ASGI test client: every route needs a session, logins
are throttled, forms need their CSRF token, uploads are refused by size before they are
decoded, names sent never become paths, and one user never sees another's job."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the web stack is optional: pip install bsi_d2[web]")
pytest.importorskip("argon2", reason="the web stack is optional: pip install bsi_d2[web]")

from web_helpers import (  # noqa: E402
    PASSWORDS,
    build_settings,
    csrf_of,
    job_id_of,
    login,
    same_server,
    upload,
    wait_done,
)

from bsi_d2.io.limits import ReadLimits  # noqa: E402
from bsi_d2.web.app import PUBLIC_PATHS, WebSettings, create_app  # noqa: E402
from bsi_d2.web.security import SESSION_COOKIE  # noqa: E402


def _routes() -> list[tuple[str, str]]:
    """(method, path) of every route the app declares, read from the app itself."""
    app = create_app(WebSettings(Path("unused-work"), Path("unused-users.toml")))
    found = []
    for route in app.routes:
        for method in sorted(getattr(route, "methods", None) or ()):
            if method != "HEAD":
                found.append((method, route.path))
    return found


ROUTES = _routes()
GUARDED = [(m, p) for m, p in ROUTES if p not in PUBLIC_PATHS]


def test_the_routes_are_all_listed():
    paths = {p for _, p in ROUTES}
    assert {
        "/upload",
        "/jobs/{job_id}",
        "/api/jobs/{job_id}",
        "/jobs/{job_id}/files/{name:path}",
        "/jobs/{job_id}/delete",
        "/history",
        "/logout",
    } <= paths
    assert PUBLIC_PATHS == {"/login"} and len(GUARDED) >= 12


@pytest.fixture(scope="module")
def served(tmp_path_factory, phantom, users_file):
    """One server with one finished job of alice's: (client, alice's CSRF token, job id)."""
    from fastapi.testclient import TestClient

    settings = build_settings(tmp_path_factory.mktemp("served"), phantom["recording"], users_file)
    with TestClient(create_app(settings), follow_redirects=False) as client:
        csrf = login(client, "alice")
        job = job_id_of(upload(client, csrf, ("scan.dcm", phantom["dicom"].read_bytes())))
        client.post(f"/jobs/{job}/run", data={"csrf_token": csrf})
        assert wait_done(client, job)["status"] == "done"
        yield client, csrf, job


@pytest.mark.parametrize(("method", "path"), GUARDED, ids=[f"{m} {p}" for m, p in GUARDED])
def test_every_route_refuses_an_anonymous_request(served, method, path):
    client, csrf, job = served
    anonymous = same_server(client)
    url = path.replace("{job_id}", job).replace("{name:path}", "bsi.json")
    data = {"csrf_token": csrf} if method == "POST" else None  # even with a valid token
    response = anonymous.request(method, url, data=data)
    if method == "GET" and not path.startswith("/api/"):
        assert response.status_code == 303 and response.headers["location"] == "/login"
    else:
        assert response.status_code == 401
    assert job not in response.text and "bsi" not in response.text.lower()
    assert client.get(f"/api/jobs/{job}").json()["status"] == "done"  # nothing was done


def test_the_login_page_and_static_files_need_no_session(make_client):
    client = make_client()
    assert client.get("/login").status_code == 200
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/no/such/page").status_code == 303  # unknown paths are refused too


def test_wrong_passwords_are_refused_and_delayed(make_client):
    client = make_client(login_delay=0.4)
    token = csrf_of(client.get("/login").text)
    for password in ("wrong-password", PASSWORDS["bob"], ""):  # bob's password is not alice's
        start = time.monotonic()
        response = client.post(
            "/login", data={"username": "alice", "password": password, "csrf_token": token}
        )
        assert response.status_code == 401 and "Wrong user name or password" in response.text
        assert time.monotonic() - start >= 0.4
    start = time.monotonic()
    response = client.post(
        "/login", data={"username": "nobody", "password": "x" * 12, "csrf_token": token}
    )
    assert response.status_code == 401 and time.monotonic() - start >= 0.4
    assert client.get("/").status_code == 303  # still logged out


def test_repeated_failures_lock_the_account_out(make_client):
    client = make_client(max_failures=3)
    token = csrf_of(client.get("/login").text)
    form = {"username": "bob", "password": "not-bobs-password", "csrf_token": token}
    assert [client.post("/login", data=form).status_code for _ in range(3)] == [401] * 3
    form["password"] = PASSWORDS["bob"]
    locked = client.post("/login", data=form)
    assert locked.status_code == 429 and "Too many failed logins" in locked.text
    login(client, "alice")  # another account is not locked


def test_session_cookie_is_httponly_samesite_and_secure_over_https(make_client):
    client = make_client()
    cookie = client.get("/login").headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    assert "secure" not in cookie.lower()  # plain HTTP (localhost): a Secure cookie would not
    client.base_url = "https://testserver"
    client.cookies.clear()
    assert "secure" in client.get("/login").headers["set-cookie"].lower()


def test_login_replaces_the_session_and_logout_ends_it(make_client):
    client = make_client()
    client.get("/login")
    before = client.cookies.get(SESSION_COOKIE)
    csrf = login(client, "alice")
    assert client.cookies.get(SESSION_COOKIE) != before  # no session fixation
    assert client.post("/logout", data={"csrf_token": csrf}).status_code == 303
    assert client.get("/").status_code == 303


def test_posts_without_the_csrf_token_are_refused(make_client, phantom):
    client = make_client()
    csrf = login(client, "alice")
    job = job_id_of(upload(client, csrf, ("scan.dcm", phantom["dicom"].read_bytes())))
    other = same_server(client)
    foreign = login(other, "alice")  # a token of another session of the same user
    for token in (None, "", "forged", foreign):
        data = {} if token is None else {"csrf_token": token}
        assert client.post(f"/jobs/{job}/run", data=data).status_code == 403
        assert client.post(f"/jobs/{job}/delete", data=data).status_code == 403
        assert client.post("/logout", data=data).status_code == 403
    response = client.post("/upload", files={"files": ("a.dcm", phantom["dicom"].read_bytes())})
    assert response.status_code == 403
    assert client.get(f"/api/jobs/{job}").json()["status"] == "uploaded"  # nothing ran
    assert len(list((client.app.state.web.work.root / "users").glob("*/*"))) == 1
    fresh = same_server(client)  # the login form needs the token of its own session
    token = csrf_of(same_server(client).get("/login").text)
    form = {"username": "alice", "password": PASSWORDS["alice"]}
    assert fresh.post("/login", data=form).status_code == 403
    fresh.get("/login")
    assert fresh.post("/login", data={**form, "csrf_token": token}).status_code == 403
    assert fresh.get("/").status_code == 303


def test_an_oversized_upload_is_refused_before_it_is_decoded(make_client, phantom, monkeypatch):
    import bsi_d2.io.readers as readers

    def never(*args, **kwargs):
        raise AssertionError("a reader was called for an upload over the limits")

    limits = ReadLimits(max_file_bytes=64 * 1024, max_json_bytes=16 * 1024)
    client = make_client(limits=limits)
    csrf = login(client, "alice")
    monkeypatch.setattr(readers, "read_scan_file", never)
    big = phantom["dicom"].read_bytes()
    assert len(big) > 3 * 64 * 1024  # over the whole body's budget of two files
    response = upload(client, csrf, ("scan.dcm", big))
    assert response.status_code == 413 and "before it was read" in response.text

    def chunks():  # no Content-Length: refused by the bytes counted as they arrive
        boundary = b"--xyz\r\n"
        yield (
            boundary
            + f'Content-Disposition: form-data; name="csrf_token"\r\n\r\n{csrf}\r\n'.encode()
        )
        yield boundary + b'Content-Disposition: form-data; name="files"; filename="s.dcm"\r\n\r\n'
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]
        yield b"\r\n--xyz--\r\n"

    multipart = {"content-type": "multipart/form-data; boundary=xyz"}
    response = client.post("/upload", content=chunks(), headers=multipart)
    assert response.status_code == 413 and "while it was sent" in response.text
    label = b'{"shapes": [], "imageData": "' + b"A" * 20_000 + b'"}'
    response = upload(client, csrf, ("scan.json", label))
    assert response.status_code == 413 and "max_json_bytes" in response.text
    work = client.app.state.web.work.root
    assert not [p for p in work.rglob("*") if p.is_file()]  # nothing of them was kept


def test_a_declared_matrix_over_the_limits_is_refused_from_the_header(make_client, phantom):
    client = make_client(limits=ReadLimits(max_frame_pixels=100_000))  # a view is 1024 x 256
    csrf = login(client, "alice")
    response = upload(client, csrf, ("scan.dcm", phantom["dicom"].read_bytes()))
    assert response.status_code == 422 and "not decoded" in response.text
    assert "max_frame_pixels" in response.text and str(client.app.state.web.work.root) not in (
        response.text
    )


@pytest.mark.parametrize(
    "name", ["../../../outside.dcm", "..\\..\\outside.dcm", "/etc/passwd.dcm", "a/../../b.png"]
)
def test_file_names_sent_never_become_paths(alice, phantom, name):
    client, csrf = alice
    data = phantom["dicom"].read_bytes() if name.endswith(".dcm") else phantom["png"].read_bytes()
    job = job_id_of(upload(client, csrf, (name, data)))
    work = client.app.state.web.work.root
    files = [p for p in work.parent.rglob("*") if p.is_file() and "outside" in p.name]
    assert files == []
    stored = [p for p in work.rglob("*") if p.is_file() and p.parent.name == "input"]
    assert len(stored) == 1 and re.fullmatch(r"[0-9a-f]{16}\.(dcm|png)", stored[0].name)
    page = client.get(f"/jobs/{job}").text
    assert "outside" not in page and "passwd" not in page  # the name is not shown either
    for url in (
        f"/jobs/{job}/files/..%2F..%2Fjob.json",
        f"/jobs/{job}/files/../job.json",
        f"/jobs/{job}/files/%2Fetc%2Fpasswd",
        "/jobs/..%2F..%2Fusers.toml",
        f"/jobs/{job}/files/dicom/..%2Fbsi.json",
    ):
        assert client.get(url).status_code == 404, url


def test_one_user_cannot_read_anothers_job(make_client, phantom):
    client = make_client()
    csrf = login(client, "alice")
    job = job_id_of(upload(client, csrf, ("scan.dcm", phantom["dicom"].read_bytes())))
    client.post(f"/jobs/{job}/run", data={"csrf_token": csrf})
    assert wait_done(client, job)["status"] == "done"
    bob = same_server(client)
    bob_csrf = login(bob, "bob")
    for url in (
        f"/jobs/{job}",
        f"/jobs/{job}/preview.png",
        f"/api/jobs/{job}",
        f"/jobs/{job}/view.png",
        f"/jobs/{job}/files/bsi.json",
        f"/jobs/{job}/files/report.html",
        f"/jobs/{job}/labelme.zip",
    ):
        assert bob.get(url).status_code == 404, url
    for url in (f"/jobs/{job}/run", f"/jobs/{job}/delete"):
        assert bob.post(url, data={"csrf_token": bob_csrf}).status_code == 404, url
    assert job not in bob.get("/history").text
    assert client.get(f"/jobs/{job}/files/bsi.json").status_code == 200  # still there
    admin = same_server(client)
    login(admin, "root")
    history = admin.get("/history").text
    assert job in history and "alice" in history
    assert admin.get(f"/jobs/{job}/files/bsi.json").status_code == 200


def test_pages_carry_a_strict_content_security_policy(alice):
    client, _ = alice
    headers = client.get("/").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"
    assert "<script>" not in client.get("/").text  # no inline script for the policy to allow
