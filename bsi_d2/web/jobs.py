"""The job queue of ``bsi-d2 serve``: uploads run one at a time through ``run_batch``.

A job is queued by its id; ``workers`` threads (one by default) take jobs in order and run
:func:`run_job`. The model is called under one lock whatever the number of workers, so two
uploads never run it at once on a small machine; more workers only let one job read and write
while another is in the model. Each job's stage is written to its ``job.json`` as it moves
(reading the scan, running the model, writing the results), which the page polls.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import queue
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bsi_d2.inference.batch import BatchOptions, run_batch
from bsi_d2.inference.outputs import SCANS_DIR, read_records
from bsi_d2.io.limits import DEFAULT_LIMITS
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import Taxonomy
from bsi_d2.web.adjust import Adjustments, write_adjusted
from bsi_d2.web.uploads import check_upload
from bsi_d2.web.workarea import (
    DONE,
    FAILED,
    INPUT_DIR,
    OUT_DIR,
    PREPARED_DIR,
    QUEUED,
    RUNNING,
    Job,
    WorkArea,
)

logger = logging.getLogger(__name__)

Predictor = Callable[[list[np.ndarray]], list[Instances]]
# whether DICOM SR/SEG objects can be written here (the dicom extra: highdicom)
HAS_DICOM_OUT = importlib.util.find_spec("highdicom") is not None


@dataclass
class RunSettings:
    """What every job runs with: the model, its taxonomy and the batch options built from the
    config (thresholds, quality control, read limits, the record's model entry)."""

    predictor: Predictor
    taxonomy: Taxonomy
    options: BatchOptions


class StagedPredictor:
    """``predictor`` under ``lock``, telling ``stage`` when the model starts and ends."""

    def __init__(
        self, predictor: Predictor, lock: threading.Lock, stage: Callable[[str], None]
    ) -> None:
        self.predictor = predictor
        self.lock = lock
        self.stage = stage

    def __call__(self, images: list[np.ndarray]) -> list[Instances]:
        self.stage("waiting for the model")
        with self.lock:
            self.stage("running the model")
            predictions = self.predictor(images)
        self.stage("writing the results")
        return predictions


def job_options(base: BatchOptions, job: Job) -> BatchOptions:
    """The batch options of one job: the server's, with the job's crop and DICOM choice."""
    adjustments = Adjustments(**job.adjustments)
    changes: dict[str, Any] = dict(
        cut_below_knee=adjustments.cut_below_knee,
        progress=False,
        prefetch=0,
        writers=0,
        recursive=False,
        batch_size=1,
        dicom_out=HAS_DICOM_OUT and bool(job.dicom_out),
    )
    return dataclasses.replace(base, **changes)


def run_job(job: Job, work: WorkArea, settings: RunSettings, model_lock: threading.Lock) -> Job:
    """Run one job's scan through ``run_batch`` into its ``out/`` folder; the job as it ended."""
    folder = work.job_dir(job)
    adjustments = Adjustments(**job.adjustments)
    options = job_options(settings.options, job)
    work.mark(job, "started", status=RUNNING, stage="reading the scan", error=None)
    inputs: Sequence[Path] = [folder / INPUT_DIR]
    if adjustments.changes_views:
        checked = check_upload(
            folder / INPUT_DIR,
            options.limits or DEFAULT_LIMITS,
            options.salt,
            options.keep_identity,
        )
        shutil.rmtree(folder / PREPARED_DIR, ignore_errors=True)
        inputs = [write_adjusted(checked.scan, adjustments, folder / PREPARED_DIR)]
    out_dir = folder / OUT_DIR
    shutil.rmtree(out_dir, ignore_errors=True)  # a rerun with other choices starts afresh
    predictor = StagedPredictor(
        settings.predictor, model_lock, lambda stage: work.update(job, stage=stage)
    )
    result = run_batch(inputs, out_dir, predictor, settings.taxonomy, options)
    records = read_records(out_dir / SCANS_DIR)
    if not records:
        reasons = "; ".join(str(e.get("reason")) for e in result.errors) or "no result"
        return work.mark(job, "finished", status=FAILED, stage="", error=reasons)
    record = records[0]
    return work.mark(
        job,
        "finished",
        status=DONE,
        stage="",
        key=record["key"],
        result_status=record["status"],
        bsi=record.get("bsi"),
        error=record.get("error"),
    )


class JobQueue:
    """Jobs waiting to run, in order, and the ``workers`` threads that run them."""

    def __init__(self, work: WorkArea, run: Callable[[Job], Any], workers: int = 1) -> None:
        self.work = work
        self.run = run
        self.workers = max(1, int(workers))
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._waiting: list[str] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"bsi-d2-job-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def submit(self, job: Job) -> None:
        with self._lock:
            self.work.mark(job, "queued", status=QUEUED, stage="waiting in the queue", error=None)
            self._waiting.append(job.id)
        self._queue.put(job.id)

    def position(self, job_id: str) -> int | None:
        """1 for the next job to run; None where ``job_id`` is not waiting."""
        with self._lock:
            return self._waiting.index(job_id) + 1 if job_id in self._waiting else None

    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            with self._lock:
                if job_id in self._waiting:
                    self._waiting.remove(job_id)
            job = self.work.load(job_id)
            if job is None or job.status != QUEUED:  # deleted while it waited
                continue
            try:
                self.run(job)
            except Exception as error:  # noqa: BLE001 - one job's failure, not the server's
                logger.exception("job %s failed", job_id)
                self.work.mark(
                    job,
                    "finished",
                    status=FAILED,
                    stage="",
                    error=f"{type(error).__name__}: {error}",
                )
