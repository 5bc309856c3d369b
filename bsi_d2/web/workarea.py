"""Where ``bsi-d2 serve`` keeps what users upload and what their jobs write.

::

    WORK/users/<u + 16 hex>/<job id>/job.json     the job (Job.to_dict), written atomically
                                    /input/       the upload, under content-hash names
                                    /prepared/    the adjusted scan (swap or mirror asked for)
                                    /out/         run_batch's folder: scans/<key>/...

A user's folder is named by a pseudonym of the user name, a job by 16 random hex digits
(:data:`JOB_ID`); no path is ever built from a name a request sent, only from ids that match
:data:`JOB_ID`, so a request cannot reach outside the work area. The upload's own file names
are kept only where the server keeps identity (``--keep-identity``).
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bsi_d2.io.files import atomic_write_text
from bsi_d2.io.pseudonym import pseudonym

JOB_ID = re.compile(r"[0-9a-f]{16}")
JOB_FILE = "job.json"
INPUT_DIR = "input"
PREPARED_DIR = "prepared"
OUT_DIR = "out"

UPLOADED, QUEUED, RUNNING, DONE, FAILED, INTERRUPTED = (
    "uploaded",
    "queued",
    "running",
    "done",
    "failed",
    "interrupted",
)
ACTIVE = (QUEUED, RUNNING)  # a job the queue holds: not deleted, not run again


@dataclass
class Job:
    """One upload and its run."""

    id: str
    owner: str
    created: float  # epoch seconds
    status: str = UPLOADED
    stage: str = ""  # what a running job is doing, for the page
    scan: dict[str, Any] = field(default_factory=dict)  # what the readers found (no identity)
    adjustments: dict[str, Any] = field(default_factory=dict)  # Adjustments.to_dict()
    dicom_out: bool = False
    key: str | None = None  # the scan's content key in out/scans/
    result_status: str | None = None  # the record's status: ok, qc_failed, not_assessed, failed
    bsi: float | None = None
    error: str | None = None
    times: dict[str, float] = field(default_factory=dict)  # stage -> epoch seconds
    upload_names: list[str] = field(default_factory=list)  # only with --keep-identity
    identity: dict[str, Any] | None = None  # the DICOM's identity, only with --keep-identity

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def seconds(self, start: str, end: str) -> float | None:
        """Seconds between two recorded moments of :attr:`times`, where both are known."""
        if start in self.times and end in self.times:
            return round(self.times[end] - self.times[start], 2)
        return None


class WorkArea:
    """The jobs under ``root``; every write of a job file is atomic and serialised."""

    def __init__(self, root: str | Path, salt: str | None = None) -> None:
        self.root = Path(root)
        self.salt = salt
        self._lock = threading.Lock()

    def user_dir(self, user: str) -> Path:
        return self.root / "users" / pseudonym("web-user", user, salt=self.salt, prefix="u")

    def job_dir(self, job: Job) -> Path:
        return self.user_dir(job.owner) / job.id

    def new_job(self, owner: str) -> Job:
        job = Job(secrets.token_hex(8), owner, time.time())
        folder = self.job_dir(job)
        (folder / INPUT_DIR).mkdir(parents=True, mode=0o700)
        self.save(job)
        return job

    def save(self, job: Job) -> None:
        with self._lock:
            folder = self.job_dir(job)
            if folder.is_dir():  # a job deleted while it ran is not brought back
                atomic_write_text(folder / JOB_FILE, json.dumps(job.to_dict(), indent=1))

    def update(self, job: Job, **changes: Any) -> Job:
        for name, value in changes.items():
            setattr(job, name, value)
        self.save(job)
        return job

    def mark(self, job: Job, moment: str, **changes: Any) -> Job:
        """Record ``moment`` (e.g. ``started``) in the job's times, with any other changes."""
        job.times[moment] = time.time()
        return self.update(job, **changes)

    def load(self, job_id: str) -> Job | None:
        """The job of ``job_id``, or None (malformed id, no such job)."""
        if not JOB_ID.fullmatch(job_id or ""):
            return None
        for path in (self.root / "users").glob(f"*/{job_id}/{JOB_FILE}"):
            try:
                return Job.from_dict(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError):
                return None
        return None

    def jobs(self, owner: str | None = None) -> list[Job]:
        """Jobs of ``owner`` (None: everyone's), newest first."""
        base = self.root / "users"
        pattern = f"{self.user_dir(owner).name}/*/{JOB_FILE}" if owner else f"*/*/{JOB_FILE}"
        found = []
        for path in base.glob(pattern):
            try:
                found.append(Job.from_dict(json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError, TypeError):
                continue
        return sorted(found, key=lambda j: j.created, reverse=True)

    def delete(self, job: Job) -> None:
        with self._lock:
            shutil.rmtree(self.job_dir(job), ignore_errors=True)

    def recover(self) -> int:
        """At start-up: jobs a stopped server had queued or running are ``interrupted`` (to be
        run again from the page); returns how many."""
        count = 0
        for job in self.jobs():
            if job.status in ACTIVE:
                self.update(job, status=INTERRUPTED, stage="", error="the server stopped")
                count += 1
        return count
