"""The FastAPI application of ``bsi-d2 serve``: :func:`create_app`.

Every route needs a logged-in session except ``/login`` and ``/static/``: one middleware refuses
the rest before routing (pages answer with a redirect to the login page, other requests with
401), so a route added later is protected without saying so. Every form post carries the
session's CSRF token (:mod:`bsi_d2.web.security`). A job is only ever found by its id and shown
to its owner or an admin; to anyone else it does not exist (404). Pages are Jinja2 templates
with autoescaping, served with a Content-Security-Policy that admits this server's own scripts,
styles and images only.

Routes: ``/login``, ``/logout``, ``/`` (upload), ``/upload``, ``/history``, ``/jobs/{id}`` (adjust,
progress, result), ``/jobs/{id}/preview.png``, ``/jobs/{id}/run``, ``/api/jobs/{id}`` (status
JSON the page polls), ``/jobs/{id}/view.png`` (overlay, toggled), ``/jobs/{id}/files/{name}``
and ``/jobs/{id}/labelme.zip`` (downloads), ``/jobs/{id}/delete``.
"""

# no ``from __future__ import annotations``: FastAPI reads the routes' annotations (Request,
# defined inside create_app) when they are declared
import asyncio
import io
import json
import math
import threading
import time
import zipfile
from collections import OrderedDict
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bsi_d2.io.base import ScanImage
from bsi_d2.io.limits import DEFAULT_LIMITS, ReadLimits
from bsi_d2.web import require
from bsi_d2.web.adjust import Adjustments, preview_png
from bsi_d2.web.jobs import HAS_DICOM_OUT, JobQueue, RunSettings, run_job
from bsi_d2.web.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    LoginThrottle,
    Session,
    SessionStore,
)
from bsi_d2.web.uploads import UploadRefused, check_upload, receive_upload
from bsi_d2.web.users import UserStore
from bsi_d2.web.workarea import (
    ACTIVE,
    DONE,
    INPUT_DIR,
    OUT_DIR,
    QUEUED,
    UPLOADED,
    Job,
    WorkArea,
)

PUBLIC_PATHS = frozenset({"/login"})
STATIC_PREFIX = "/static/"
UPLOAD_PATH = "/upload"
MAX_FORM_BYTES = 64 * 1024  # every form but the upload
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
REPORT_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'"
PREVIEW_CACHE = 4  # scans read for previews, kept in memory
# a scan folder's files offered for download: name -> (label, inline)
DOWNLOADS = {
    "report.html": ("Report (HTML)", True),
    "bsi.json": ("BSI record (bsi.json)", False),
    "predictions.json": ("Predictions (predictions.json)", False),
    "overlay.png": ("Overlay (PNG)", True),
    "labelmap.png": ("Label map (PNG)", False),
}
MEDIA_TYPES = {
    ".html": "text/html",
    ".json": "application/json",
    ".png": "image/png",
    ".dcm": "application/dicom",
}


@dataclass
class WebSettings:
    """How the server runs; ``run`` None serves the pages without a model (jobs then fail)."""

    work_dir: Path
    users_file: Path
    run: RunSettings | None = None
    limits: ReadLimits = DEFAULT_LIMITS
    keep_identity: bool = False
    salt: str | None = None
    workers: int = 1
    login_delay: float = 1.0  # seconds every failed login waits
    max_failures: int = 5  # failed logins of one name within 15 min before it is locked out
    lockout: float = 15 * 60
    session_idle: float = 30 * 60
    model_label: str = ""  # shown in the footer: engine, config, weights


@dataclass
class WebState:
    settings: WebSettings
    work: WorkArea
    users: UserStore
    sessions: SessionStore
    throttle: LoginThrottle
    queue: JobQueue | None = None
    model_lock: threading.Lock = field(default_factory=threading.Lock)
    _previews: OrderedDict[str, ScanImage] = field(default_factory=OrderedDict)
    _previews_lock: threading.Lock = field(default_factory=threading.Lock)

    def preview_scan(self, job: Job) -> ScanImage:
        """The job's scan as the readers read it, cached for the next preview."""
        with self._previews_lock:
            if job.id in self._previews:
                self._previews.move_to_end(job.id)
                return self._previews[job.id]
        settings = self.settings
        scan = check_upload(
            self.work.job_dir(job) / INPUT_DIR,
            settings.limits,
            settings.salt,
            settings.keep_identity,
        ).scan
        self.remember(job.id, scan)
        return scan

    def remember(self, job_id: str, scan: ScanImage) -> None:
        with self._previews_lock:
            self._previews[job_id] = scan
            while len(self._previews) > PREVIEW_CACHE:
                self._previews.popitem(last=False)

    def forget(self, job_id: str) -> None:
        with self._previews_lock:
            self._previews.pop(job_id, None)


def _package_dir(name: str) -> str:
    return str(resources.files("bsi_d2") / "web" / name)


def create_app(settings: WebSettings) -> Any:
    """The application; nothing is read or written until it starts (its lifespan): then the
    work area is made, interrupted jobs are marked and the job queue starts."""
    fastapi = require("fastapi")
    responses = require("fastapi.responses")
    concurrency = require("starlette.concurrency")
    exceptions = require("starlette.exceptions")
    staticfiles = require("starlette.staticfiles")
    templating = require("fastapi.templating")
    from bsi_d2.report.html import AID_LINE

    Request = fastapi.Request
    HTTPException = fastapi.HTTPException
    RedirectResponse, JSONResponse = responses.RedirectResponse, responses.JSONResponse
    Response, FileResponse = responses.Response, responses.FileResponse

    state = WebState(
        settings,
        WorkArea(settings.work_dir, settings.salt),
        UserStore(settings.users_file),
        SessionStore(idle=settings.session_idle),
        LoginThrottle(
            delay=settings.login_delay,
            lockout=settings.lockout,
            max_failures={"user": settings.max_failures, "client": 4 * settings.max_failures},
        ),
    )

    @asynccontextmanager
    async def lifespan(app: Any):
        state.work.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        state.work.recover()
        if settings.run is not None:
            run = settings.run
            state.queue = JobQueue(
                state.work,
                lambda job: run_job(job, state.work, run, state.model_lock),
                settings.workers,
            )
            state.queue.start()
        yield
        if state.queue is not None:
            state.queue.stop()

    app = fastapi.FastAPI(
        title="bsi-d2", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.state.web = state
    templates = templating.Jinja2Templates(directory=_package_dir("templates"))
    templates.env.filters["pct"] = _pct
    templates.env.filters["num"] = _num
    templates.env.filters["when"] = _when
    app.mount("/static", staticfiles.StaticFiles(directory=_package_dir("static")), "static")

    # -- the guard every request passes ----------------------------------------------------
    @app.middleware("http")
    async def guard(request: Any, call_next: Any) -> Any:
        path = request.url.path
        session = state.sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is not None and session.user is not None:
            user = state.users.get(session.user)
            if user is None:  # the account was removed from the users file
                state.sessions.drop_user(session.user)
                session = None
            else:
                session.admin = user.admin
        request.state.session = session
        public = path in PUBLIC_PATHS or path.startswith(STATIC_PREFIX)
        length = request.headers.get("content-length")
        if not public and (session is None or session.user is None):
            if request.method == "GET" and not path.startswith("/api/"):
                response = RedirectResponse("/login", 303)
            else:
                response = JSONResponse({"detail": "login required"}, 401)
        elif request.method == "POST" and path != UPLOAD_PATH and not (length or "").isdigit():
            response = JSONResponse({"detail": "Content-Length required"}, 411)
        elif request.method == "POST" and path != UPLOAD_PATH and int(length) > MAX_FORM_BYTES:
            response = JSONResponse({"detail": "form too large"}, 413)
        else:
            response = await call_next(request)
        headers = response.headers
        headers.setdefault("Content-Security-Policy", PAGE_CSP)
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Referrer-Policy", "no-referrer")
        if not path.startswith(STATIC_PREFIX):
            headers.setdefault("Cache-Control", "no-store")
        if request.url.scheme == "https":
            headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    @app.exception_handler(exceptions.HTTPException)
    async def http_error(request: Any, error: Any) -> Any:
        if request.url.path.startswith("/api/") or request.method != "GET":
            if request.headers.get("accept", "").startswith("text/html"):
                return page(request, "error.html", error.status_code, message=error.detail)
            return JSONResponse({"detail": error.detail}, error.status_code)
        return page(request, "error.html", error.status_code, message=error.detail)

    # -- helpers ----------------------------------------------------------------------------
    def page(
        request: Any, name: str, status: int = 200, session: Session | None = None, **context: Any
    ) -> Any:
        session = session or request.state.session
        base = {
            "user": session.user if session else None,
            "admin": bool(session and session.admin),
            "csrf": session.csrf if session else "",
            "aid_line": AID_LINE,
            "model_label": settings.model_label,
            "keep_identity": settings.keep_identity,
        }
        return templates.TemplateResponse(request, name, {**base, **context}, status_code=status)

    def session_of(request: Any) -> Session:
        return request.state.session

    async def checked_form(request: Any) -> Any:
        """The posted form, once its CSRF token matched the session's (else 403)."""
        form = await request.form(max_files=0, max_fields=32)
        token = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
        session = session_of(request)
        if session is None or not session.csrf_matches(str(token) if token else None):
            raise HTTPException(403, "the form's CSRF token is missing or wrong; reload the page")
        return form

    def job_for(request: Any, job_id: str) -> Job:
        """The job, for its owner or an admin; 404 for everyone else."""
        session = session_of(request)
        job = state.work.load(job_id)
        if job is None or not (job.owner == session.user or session.admin):
            raise HTTPException(404, "no such job")
        return job

    def scan_dir(job: Job) -> Path | None:
        if job.status != DONE or not job.key:
            return None
        folder = state.work.job_dir(job) / OUT_DIR / "scans" / job.key
        return folder if folder.is_dir() else None

    def downloads(job: Job) -> dict[str, Path]:
        """Download name -> file, of the job's scan folder only (names never come from a
        request: a requested name is looked up here)."""
        folder = scan_dir(job)
        if folder is None:
            return {}
        found = {name: folder / name for name in DOWNLOADS if (folder / name).is_file()}
        dicom = folder / "dicom"
        if dicom.is_dir():
            for path in sorted(dicom.iterdir()):
                if path.is_file() and not path.name.startswith("."):
                    found[f"dicom/{path.name}"] = path
        return found

    def status_of(job: Job) -> dict[str, Any]:
        position = state.queue.position(job.id) if state.queue and job.status == QUEUED else None
        started = job.times.get("queued")
        return {
            "id": job.id,
            "status": job.status,
            "stage": job.stage,
            "position": position,
            "seconds": round(time.time() - started, 1)
            if started and job.status in ACTIVE
            else job.seconds("queued", "finished"),
            "result_status": job.result_status,
            "bsi": job.bsi,
            "error": job.error,
            "upload_to_result_seconds": job.seconds("upload_started", "finished"),
        }

    def jobs_for(session: Session) -> list[Job]:
        return state.work.jobs(None if session.admin else session.user)

    # -- login -----------------------------------------------------------------------------
    @app.get("/login")
    def login_page(request: Request) -> Any:
        session = session_of(request)
        if session is not None and session.user is not None:
            return RedirectResponse("/", 303)
        fresh = session is None
        session = session or state.sessions.new()
        response = page(request, "login.html", session=session)
        if fresh:
            _set_cookie(request, response, session.token)
        return response

    @app.post("/login")
    async def login(request: Request) -> Any:
        session = session_of(request)
        form = await request.form(max_files=0, max_fields=8)
        if session is None or not session.csrf_matches(str(form.get(CSRF_FIELD) or "")):
            raise HTTPException(403, "the login form expired; reload the login page")
        name = str(form.get("username") or "").strip()[:64]
        password = str(form.get("password") or "")[:1024]
        client = request.client.host if request.client else "unknown"
        keys = (("user", name.lower()), ("client", client))
        locked = state.throttle.locked_for(*keys)
        if locked:
            await asyncio.sleep(state.throttle.delay)
            minutes = math.ceil(locked / 60)
            return page(
                request,
                "login.html",
                429,
                error="Too many failed logins: try again "
                f"in {minutes} minute{'s' if minutes != 1 else ''}.",
            )
        user = await concurrency.run_in_threadpool(state.users.authenticate, name, password)
        if user is None:
            state.throttle.failed(*keys)
            await asyncio.sleep(state.throttle.delay)
            return page(request, "login.html", 401, error="Wrong user name or password.")
        state.throttle.succeeded(keys[0])
        new = state.sessions.login(session.token, user.name, user.admin)
        response = RedirectResponse("/", 303)
        _set_cookie(request, response, new.token)
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Any:
        await checked_form(request)
        state.sessions.drop(session_of(request).token)
        response = RedirectResponse("/login", 303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # -- upload ----------------------------------------------------------------------------
    @app.get("/")
    def home(request: Request) -> Any:
        return page(
            request, "upload.html", jobs=jobs_for(session_of(request))[:5], limits=settings.limits
        )

    @app.post(UPLOAD_PATH)
    async def upload(request: Request) -> Any:
        session = session_of(request)
        job = state.work.mark(state.work.new_job(session.user), "upload_started")
        folder = state.work.job_dir(job) / INPUT_DIR
        try:
            stored = await receive_upload(
                request.headers, request.stream(), folder, session.csrf_matches, settings.limits
            )
            checked = await concurrency.run_in_threadpool(
                check_upload, folder, settings.limits, settings.salt, settings.keep_identity
            )
        except UploadRefused as refused:
            state.work.delete(job)
            return page(
                request,
                "upload.html",
                refused.status,
                error=refused.reason,
                jobs=jobs_for(session)[:5],
                limits=settings.limits,
            )
        state.remember(job.id, checked.scan)
        changes: dict[str, Any] = {"scan": checked.summary}
        if settings.keep_identity:
            changes["upload_names"] = [f.upload_name for f in stored]
            changes["identity"] = checked.scan.metadata.get("identity")
        state.work.mark(job, "uploaded", **changes)
        return RedirectResponse(f"/jobs/{job.id}", 303)

    # -- a job -----------------------------------------------------------------------------
    @app.get("/jobs/{job_id}")
    def job_page(request: Request, job_id: str) -> Any:
        job = job_for(request, job_id)
        record = None
        folder = scan_dir(job)
        if folder is not None:
            record = json.loads((folder / "bsi.json").read_text(encoding="utf-8"))
        return page(
            request,
            "job.html",
            job=job,
            progress=status_of(job),
            adjustments=Adjustments(**job.adjustments) if job.adjustments else Adjustments(),
            record=record,
            result=_result_context(record, settings.run) if record else None,
            downloads=[(name, DOWNLOADS.get(name, (name, False))[0]) for name in downloads(job)],
            has_labelme=folder is not None and (folder / f"{job.key}.json").is_file(),
            has_dicom_out=HAS_DICOM_OUT,
            can_run=job.status not in ACTIVE,
            uploaded=job.status == UPLOADED,
        )

    @app.get("/jobs/{job_id}/preview.png")
    def preview(request: Request, job_id: str) -> Any:
        job = job_for(request, job_id)
        adjustments = Adjustments.from_values(request.query_params)
        try:
            data = preview_png(state.preview_scan(job), adjustments)
        except UploadRefused as refused:
            raise HTTPException(refused.status, refused.reason) from refused
        return Response(data, media_type="image/png")

    @app.post("/jobs/{job_id}/run")
    async def run(request: Request, job_id: str) -> Any:
        form = await checked_form(request)
        job = job_for(request, job_id)
        if job.status in ACTIVE:
            raise HTTPException(409, "this job is already queued or running")
        if state.queue is None:
            raise HTTPException(503, "this server has no model to run")
        adjustments = Adjustments.from_values(form)
        state.work.update(
            job,
            adjustments=adjustments.to_dict(),
            dicom_out=HAS_DICOM_OUT and bool(form.get("dicom_out")),
        )
        state.queue.submit(job)
        return RedirectResponse(f"/jobs/{job.id}", 303)

    @app.get("/api/jobs/{job_id}")
    def job_status(request: Request, job_id: str) -> Any:
        return JSONResponse(status_of(job_for(request, job_id)))

    @app.get("/jobs/{job_id}/view.png")
    def view(request: Request, job_id: str) -> Any:
        from bsi_d2.web.viewer import render_view

        job = job_for(request, job_id)
        folder = scan_dir(job)
        if folder is None or settings.run is None:
            raise HTTPException(404, "no result yet")
        query = request.query_params
        window = Adjustments.from_values(query).window
        try:
            data = render_view(
                folder,
                str(job.key),
                settings.run.taxonomy,
                query.get("regions", "1") != "0",
                query.get("lesions", "1") != "0",
                window,
            )
        except FileNotFoundError as missing:
            raise HTTPException(404, "this result has no overlay files") from missing
        return Response(data, media_type="image/png")

    @app.get("/jobs/{job_id}/files/{name:path}")
    def download(request: Request, job_id: str, name: str) -> Any:
        job = job_for(request, job_id)
        path = downloads(job).get(name)
        if path is None:
            raise HTTPException(404, "no such file")
        inline = DOWNLOADS.get(name, (name, False))[1]
        headers = {
            "Content-Disposition": f'{"inline" if inline else "attachment"}; filename="{path.name}"'
        }
        if name == "report.html":
            headers["Content-Security-Policy"] = REPORT_CSP
        media = MEDIA_TYPES.get(path.suffix, "application/octet-stream")
        return FileResponse(path, media_type=media, headers=headers)

    @app.get("/jobs/{job_id}/labelme.zip")
    def labelme_zip(request: Request, job_id: str) -> Any:
        job = job_for(request, job_id)
        folder = scan_dir(job)
        if folder is None or not (folder / f"{job.key}.json").is_file():
            raise HTTPException(404, "no Labelme file for this job")
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for suffix in (".json", ".png", ".meta.json"):
                path = folder / f"{job.key}{suffix}"
                if path.is_file():
                    archive.write(path, path.name)
        headers = {"Content-Disposition": f'attachment; filename="{job.key}-labelme.zip"'}
        return Response(buffer.getvalue(), media_type="application/zip", headers=headers)

    @app.post("/jobs/{job_id}/delete")
    async def delete(request: Request, job_id: str) -> Any:
        await checked_form(request)
        job = job_for(request, job_id)
        if job.status in ACTIVE:
            raise HTTPException(409, "this job is queued or running; delete it when it ends")
        state.work.delete(job)
        state.forget(job.id)
        return RedirectResponse("/history", 303)

    @app.get("/history")
    def history(request: Request) -> Any:
        return page(request, "history.html", jobs=jobs_for(session_of(request)))

    return app


def _set_cookie(request: Any, response: Any, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


def _result_context(record: dict[str, Any], run: RunSettings | None) -> dict[str, Any]:
    """What the result section shows beside the record itself: the report's finding sentence
    and coverage text."""
    from bsi_d2.report.html import coverage_text, finding_text, lesion_sites

    taxonomy = run.taxonomy if run else None
    css, sentence = finding_text(record, taxonomy)
    ok = record.get("status") == "ok"
    return {
        "finding_class": css,
        "finding": sentence,
        "coverage": coverage_text(record) if ok else "",
        "sites": lesion_sites(record, taxonomy) if ok else [],
        "qc": record.get("qc") or {},
    }


def _pct(fraction: Any, digits: int = 2) -> str:
    return "—" if fraction is None else f"{100 * float(fraction):.{digits}f} %"


def _num(value: Any, digits: int = 2) -> str:
    return "—" if value is None else f"{float(value):.{digits}f}"


def _when(epoch: Any) -> str:
    return "—" if not epoch else time.strftime("%Y-%m-%d %H:%M", time.localtime(float(epoch)))
