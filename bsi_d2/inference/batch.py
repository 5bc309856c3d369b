"""Batch inference over folders of scans: sharded, resumable, one broken file never stops it.

For each scan the reader finds: a content key (hash of its files' bytes, not their names); skip
it if another shard owns the key or its bsi.json already says ``ok``; otherwise preprocess,
predict in batches, analyse (:func:`bsi_d2.postprocess.analysis.analyse_scan`) and write its
folder, bsi.json last. Inputs the reader rejects and scans that fail are recorded in
``OUT/errors/`` (one file each, so parallel shards never write the same file) and gathered into
``OUT/errors.jsonl``, ``OUT/bsi_summary.csv`` and ``OUT/index.html`` at the end of every run.
Errors and log lines name input files by :func:`bsi_d2.io.pseudonym.input_label` (folder and file
names may be a patient's ID or name) unless ``keep_identity``. Each record carries the scan's
study link from its reader (``study_key``, ``patient_key``; the study date as ``keep_dates`` keeps
it), the same whether the scan was read from its DICOM or from ``preprocess``'s PNG of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bsi_d2.inference import outputs as out
from bsi_d2.io.limits import ReadLimits
from bsi_d2.io.pseudonym import LINK_FIELDS, InputLabels
from bsi_d2.postprocess.analysis import analyse_scan
from bsi_d2.postprocess.match import DEFAULT_MATCH_RADIUS
from bsi_d2.postprocess.qc import QCThresholds, quality_control
from bsi_d2.postprocess.rasterize import DEFAULT_SCORE_THRESH, passes_thresholds
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import Taxonomy

logger = logging.getLogger(__name__)

SCANS_DIR = out.SCANS_DIR
ERRORS_DIR = out.ERRORS_DIR
NOT_ERRORS = ("duplicate",)  # reader skips that lose nothing: a Labelme file whose image is read


@dataclass
class BatchOptions:
    """How a batch runs; the post-processing fields are passed on to ``analyse_scan``."""

    batch_size: int = 4
    score_thresh: float = DEFAULT_SCORE_THRESH
    class_thresh: Mapping[int | str, float] | None = None
    combine: str = "mean"
    match_views: bool = True
    match_radius: float = DEFAULT_MATCH_RADIUS
    cut_below_knee: bool = False
    shard: tuple[int, int] = (0, 1)
    recursive: bool = True
    salt: str | None = None
    keep_identity: bool = False  # name input files by path in records, errors and logs
    keep_dates: str | None = None  # study dates kept as month or shift (None: no date kept)
    progress: bool = True
    prefetch: int = 8  # scans read and preprocessed ahead of the model, in a thread
    qc: QCThresholds = field(default_factory=QCThresholds)  # quality control of every scan
    limits: ReadLimits | None = None  # checked before decoding (None: the readers' defaults)
    model: dict[str, Any] = field(default_factory=dict)  # the record's "model" entry
    outputs: frozenset[str] = out.ALL_OUTPUTS  # which files to write (bsi.json always)
    writers: int = 2  # threads analysing and writing scans beside the model (0: inline)
    dicom_out: bool = False  # also write SR, SEG and Secondary Capture (bsi_d2.pacs.writer)


@dataclass
class BatchResult:
    done: list[str] = field(default_factory=list)  # keys finished by this run
    skipped: list[str] = field(default_factory=list)  # keys already finished before it
    failed: list[str] = field(default_factory=list)  # keys that failed
    qc_failed: list[str] = field(default_factory=list)  # keys done but failing quality control
    errors: list[dict[str, Any]] = field(default_factory=list)  # every error this run recorded
    other_shards: int = 0

    def summary(self) -> str:
        rejected = len(self.errors) - len(self.failed)
        return (
            f"{len(self.done)} scans done ({len(self.qc_failed)} failing quality control), "
            f"{len(self.skipped)} already done, {len(self.failed)} failed, "
            f"{rejected} inputs rejected"
        )


# -- keys and shards ------------------------------------------------------------------------


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (0 <= i < n) -> (i, n)."""
    try:
        index, count = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise ValueError(f"shard {text!r} is not of the form i/n, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {text!r}: need 0 <= i < n")
    return index, count


def in_shard(key: str, shard: tuple[int, int]) -> bool:
    """Whether ``key`` belongs to shard (i, n): a hash of the key, so every run agrees."""
    index, count = shard
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count == index


def content_key(sources: Sequence[str | Path], salt: str | None = None) -> str:
    """Resume key of a scan: ``c`` + 16 hex digits over the sorted SHA-256 digests of its
    files' bytes, so renaming or moving files does not make a finished scan run again."""
    from bsi_d2.io.pseudonym import file_digest

    return key_of_digests([file_digest(s) for s in sources], salt)


def key_of_digests(digests: Sequence[str], salt: str | None = None) -> str:
    """:func:`content_key` from the files' SHA-256 hex digests."""
    from bsi_d2.io.pseudonym import pseudonym

    return pseudonym("content", *sorted(digests), salt=salt, prefix="c")


def source_labels(paths: Sequence[str], digests: Sequence[str], keep_identity: bool) -> list[str]:
    """The record's ``source`` entries: file paths only if asked (names may carry identity),
    else each file's SHA-256 prefix, which finds the file again without naming anyone."""
    if keep_identity:
        return [str(p) for p in paths]
    return [f"sha256:{d[:16]}" for d in digests]


def _input_key(path: str | Path, salt: str | None) -> str:
    """Key of a rejected input file: its content where readable, else its path."""
    try:
        return content_key([path], salt)
    except OSError:
        from bsi_d2.io.pseudonym import pseudonym

        return pseudonym("path", str(path), salt=salt, prefix="p")


# -- state on disk --------------------------------------------------------------------------


def is_done(scan_dir: Path) -> bool:
    """A scan is finished when its bsi.json is in place and says it was analysed (``ok``, or
    ``not_assessed`` where no skeleton was found); a failed scan is redone."""
    try:
        record = json.loads((scan_dir / out.RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return record.get("status") in out.FINISHED_STATUSES


def record_error(
    out_dir: Path,
    key: str,
    path: str | Path,
    stage: str,
    reason: str,
    source=(),
    labels: InputLabels | None = None,
) -> dict[str, Any]:
    """Write one error record to ``OUT/errors/<key>.json`` and return it. Its files are named
    by ``labels`` (default: pseudonymous file names alone), in the record, the reason and the
    log line alike."""
    labels = labels or InputLabels()
    files = [path, *source]
    entry = {
        "key": key,
        "path": labels(path),
        "source": [labels(s) for s in source] or [labels(path)],
        "stage": stage,
        "reason": labels.redact(reason, *files),
    }
    out.atomic_write_json(out_dir / ERRORS_DIR / f"{key}.json", entry)
    logger.warning("%s: %s failed: %s", entry["path"], stage, entry["reason"])
    return entry


def _clear_shard_errors(out_dir: Path, shard: tuple[int, int]) -> None:
    """Forget this shard's old errors; those that persist are recorded again by this run."""
    for path in (out_dir / ERRORS_DIR).glob("*.json"):
        if in_shard(path.stem, shard):
            path.unlink(missing_ok=True)


def finalize_outputs(
    out_dir: str | Path,
    taxonomy: Taxonomy | None = None,
    outputs: frozenset[str] = out.ALL_OUTPUTS,
) -> BatchTotals:
    """Rebuild errors.jsonl, bsi_summary.csv and index.html (paged beyond
    :data:`~bsi_d2.report.html.INDEX_PAGE_ROWS` scans) from what is on disk, whichever shard
    finishes last leaving them complete. Records are streamed from disk, never all held, so
    memory stays flat however many scans the folder holds. Returns the folder's totals."""
    from bsi_d2.report.html import write_index_pages

    out_dir = Path(out_dir)
    errors = []
    for path in sorted((out_dir / ERRORS_DIR).glob("*.json")):
        try:
            errors.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as err:
            logger.warning("%s: unreadable error record: %s", path, err)
    out.atomic_write_text(out_dir / out.ERRORS_FILE, out.errors_jsonl(errors))
    scans_dir = out_dir / SCANS_DIR
    paths = out.record_paths(scans_dir)
    totals = BatchTotals()
    bones: list[str] = []
    for record in out.iter_records(paths):  # pass 1: counts and the CSV's bone columns
        totals.add(record)
        out.add_bones(bones, record)
    if "csv" in outputs:
        out.write_summary_csv(out_dir / out.SUMMARY_FILE, out.iter_records(paths), bones)
    if "index" in outputs:
        # each report is linked by its path in the folder; bsi.json keeps its fixed keys
        def linked(ok: bool) -> Iterator[dict[str, Any]]:
            for r in out.iter_records(paths):
                if (r.get("status") == out.STATUS_OK) == ok:
                    yield {**r, "report": f"{SCANS_DIR}/{r.get('key')}/report.html"}

        write_index_pages(out_dir, linked(True), linked(False), totals.page_counts(), taxonomy)
    return totals


@dataclass
class BatchTotals:
    """What an output folder holds, counted from its records."""

    ok: int = 0
    flagged: int = 0  # ok and abnormal
    other: int = 0  # failed, failing quality control or not assessed
    keys: int = 0

    def add(self, record: dict[str, Any]) -> None:
        self.keys += 1
        if record.get("status") == out.STATUS_OK:
            self.ok += 1
            self.flagged += bool(record.get("abnormal"))
        else:
            self.other += 1

    def page_counts(self) -> tuple[int, int, int]:
        return self.ok, self.flagged, self.other


# -- the run --------------------------------------------------------------------------------


@dataclass
class _Prepared:
    key: str
    paths: list[str]  # input files, for error messages
    source: list[str]  # the record's "source" entries (see source_labels)
    counts: np.ndarray
    display: np.ndarray
    counts_source: str = "counts"  # "display" where display values stand in for counts
    annotation: Instances | None = None  # the scan's instances when annotations stand in
    views_present: list[str] | None = None
    pixel_spacing_known: bool = False
    warnings: list[str] = field(default_factory=list)  # the reader's and preprocessing's
    link: dict[str, Any] = field(default_factory=dict)  # the study link (LINK_FIELDS)
    dicom_views: list[Any] = field(default_factory=list)  # pacs.geometry.SourceView, --dicom-out


def study_link(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The study link of a scan (:data:`~bsi_d2.io.pseudonym.LINK_FIELDS`) from its reader's
    metadata; None where unknown."""
    return {name: metadata.get(name) for name in LINK_FIELDS}


def _prefetch(items: Iterable[Any], depth: int) -> Iterator[Any]:
    """Iterate ``items`` in a background thread, up to ``depth`` ahead (depth 0: inline)."""
    if depth <= 0:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def work() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(end)
        except BaseException as err:  # handed to the consumer, raised there
            q.put(err)

    thread = threading.Thread(target=work, daemon=True, name="bsi-d2-prefetch")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


AnnotationReader = Callable[[Sequence[str], tuple[int, int]], Instances]


class BatchRunner:
    """Runs ``predictor`` over inputs into ``out_dir``; see the module docstring. Without a
    predictor, ``annotations`` (the scan's files, image shape -> instances) supply each scan's
    instances instead (``bsi-d2 bsi``)."""

    def __init__(
        self,
        predictor: Callable[[list[np.ndarray]], list[Instances]] | None,
        taxonomy: Taxonomy,
        out_dir: str | Path,
        options: BatchOptions | None = None,
        annotations: AnnotationReader | None = None,
    ) -> None:
        if predictor is None and annotations is None:
            raise ValueError("a batch needs a predictor or annotations")
        self.predictor = predictor
        self.annotations = annotations
        self.taxonomy = taxonomy
        self.out_dir = Path(out_dir)
        self.options = options or BatchOptions()
        self.result = BatchResult()
        self.labels = InputLabels(salt=self.options.salt, keep_identity=self.options.keep_identity)

    # -- reading ------------------------------------------------------------------------
    def _prepared(self, inputs: Sequence[str | Path]) -> Iterator[_Prepared | None]:
        """Scans of this shard still to do, preprocessed; None for each one skipped or failed
        (so the progress bar moves for every scan)."""
        from bsi_d2.io.base import ScanImage, SkippedInput
        from bsi_d2.io.readers import iter_scans, source_digests
        from bsi_d2.preprocess.pipeline import preprocess_scan

        opts = self.options
        items = iter_scans(
            list(inputs),
            recursive=opts.recursive,
            salt=opts.salt,
            keep_identity=opts.keep_identity,
            exclude=[self.out_dir],
            limits=opts.limits,
            keep_dates=opts.keep_dates,
        )
        seen: dict[str, list[str]] = {}  # content key -> files, within this run
        for item in items:
            if isinstance(item, SkippedInput):
                key = _input_key(item.path, opts.salt)
                if item.kind in NOT_ERRORS:
                    logger.info("skipped: %s", self.labels.redact(item.reason, item.path))
                elif in_shard(key, opts.shard):
                    self._error(key, item.path, item.kind, str(item.reason))
                else:
                    self.result.other_shards += 1
                yield None
                continue
            if not isinstance(item, ScanImage):
                continue
            paths = [str(s) for s in item.sources]
            try:
                digests = source_digests(item)  # hashed as the reader read the files
                self.labels.know(item.digests)
            except OSError as err:
                self._error(_input_key(paths[0], opts.salt), paths[0], "read", str(err))
                yield None
                continue
            key = key_of_digests(digests, opts.salt)
            if not in_shard(key, opts.shard):
                self.result.other_shards += 1
                continue
            if key in seen:
                logger.info(
                    "%s: same content as %s, analysed once",
                    [self.labels(p) for p in paths],
                    [self.labels(p) for p in seen[key]],
                )
                yield None
                continue
            seen[key] = paths
            if is_done(self.out_dir / SCANS_DIR / key):
                self.result.skipped.append(key)
                yield None
                continue
            source = source_labels(paths, digests, opts.keep_identity)
            link = study_link(item.metadata)
            try:
                prepared = preprocess_scan(item, cut_below_knee=opts.cut_below_knee)
            except Exception as err:  # noqa: BLE001 - any failure of one scan is recorded
                self._fail(key, paths, source, "preprocess", err, link)
                yield None
                continue
            dicom_views = self._dicom_views(item, prepared) if opts.dicom_out else []
            annotation = None
            if self.annotations is not None:
                try:
                    annotation = self.annotations(paths, prepared.display.shape)
                except Exception as err:  # noqa: BLE001 - a bad annotation fails its scan only
                    self._fail(key, paths, source, "annotation", err, link)
                    yield None
                    continue
            yield _Prepared(
                key,
                paths,
                source,
                prepared.counts,
                prepared.display,
                str(prepared.metadata.get("counts_source", "counts")),
                annotation,
                list(prepared.metadata.get("preprocess", {}).get("views_present") or []),
                prepared.metadata.get("pixel_spacing_mm") is not None,
                [str(w) for w in prepared.metadata.get("warnings") or []],
                link,
                dicom_views,
            )

    def _dicom_views(self, item: Any, prepared: Any) -> list[Any]:
        """The scan's source frames for its SEG (``--dicom-out``); none where it was not read
        from DICOM or its headers cannot be read again (then it gets SR and capture only)."""
        from bsi_d2.pacs.geometry import source_views

        if item.metadata.get("format") != "dicom":
            return []
        try:
            return source_views(item.sources, item.metadata.get("views") or {}, prepared.placements)
        except Exception as err:  # noqa: BLE001 - the scan is still analysed, without a SEG
            logger.warning("%s: no SEG: its DICOM header could not be read again: %s",
                           self.labels(item.sources[0]), type(err).__name__)  # fmt: skip
            return []

    # -- bookkeeping --------------------------------------------------------------------
    def _error(self, key: str, path: str | Path, stage: str, reason: str, source=()) -> None:
        try:
            entry = record_error(self.out_dir, key, path, stage, reason, source, self.labels)
        except OSError as err:  # a full disk must not also stop the scans that follow
            label, reason = self.labels(path), self.labels.redact(reason, path, *source)
            logger.error("%s: cannot record the error (%s): %s", label, err, reason)
            entry = {"key": key, "path": label, "stage": stage, "reason": reason}
        self.result.errors.append(entry)

    def _fail(
        self,
        key: str,
        paths: list[str],
        source: list[str],
        stage: str,
        err: BaseException,
        link: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a scan that failed: an error entry naming its files, and a failed bsi.json
        (with the scan's study link where it is known)."""
        # exception texts (an annotation reader's above all) may name the scan's files
        reason = self.labels.redact(f"{type(err).__name__}: {err}", *paths)
        self._error(key, paths[0] if paths else key, stage, reason, paths)
        self.result.failed.append(key)
        scan_dir = self.out_dir / SCANS_DIR / key
        try:
            scan_dir.mkdir(parents=True, exist_ok=True)
            record = out.scan_record(
                key, source, self.options.model, error=f"{stage}: {reason}", link=link
            )
            out.atomic_write_json(scan_dir / out.RECORD_FILE, record)
        except OSError as write_err:
            logger.error("%s: cannot record the failure: %s", scan_dir, write_err)

    # -- one scan -----------------------------------------------------------------------
    def write_scan(self, scan: _Prepared, instances: Instances) -> dict[str, Any]:
        """Analyse one scan's instances and write its folder (the files of ``outputs``, see
        :data:`~bsi_d2.inference.outputs.SCAN_WRITERS`), bsi.json last."""
        opts, tax = self.options, self.taxonomy
        scan_dir = self.out_dir / SCANS_DIR / scan.key
        out.reset_scan_dir(scan_dir)
        analysis = analyse_scan(
            instances,
            scan.counts,
            tax,
            score_thresh=opts.score_thresh,
            class_thresh=opts.class_thresh,
            combine=opts.combine,
            match_views=opts.match_views,
            match_radius=opts.match_radius,
            counts_source=scan.counts_source,
        )
        kept = passes_thresholds(
            instances.category_ids, instances.scores, tax, opts.score_thresh, opts.class_thresh
        )
        written = out.ScanFiles(
            scan_dir, scan.key, scan.display, instances, kept, analysis, tax, scan.link
        )
        for name, writer in out.SCAN_WRITERS.items():
            if name in opts.outputs:
                writer(written)
        qc = quality_control(
            scan.counts,
            analysis.bsi,
            scan.views_present,
            scan.counts_source,
            scan.pixel_spacing_known,
            opts.qc,
        )
        qc.warnings[:0] = [w for w in scan.warnings if w not in qc.warnings]
        record = out.scan_record(
            scan.key,
            scan.source,
            opts.model,
            analysis=analysis.record,
            qc=qc.to_dict(),
            overlay=out.OVERLAY_FILE if "overlay" in opts.outputs else None,
            link=scan.link,
        )
        if "report" in opts.outputs:
            from bsi_d2.report.html import write_scan_report

            write_scan_report(scan_dir, record, tax)
        if opts.dicom_out:
            record["dicom"] = self._write_dicom(scan, written, record)
        out.atomic_write_json(scan_dir / out.RECORD_FILE, record)
        (self.out_dir / ERRORS_DIR / f"{scan.key}.json").unlink(missing_ok=True)
        return record

    def _write_dicom(self, scan: _Prepared, written: out.ScanFiles, record: dict) -> dict:
        """The scan's SR, SEG and capture (``--dicom-out``); a failure is recorded as the
        scan's error entry and in its record, and its BSI still stands."""
        from bsi_d2.pacs.identity import Identity
        from bsi_d2.pacs.seg import SegmentMasks
        from bsi_d2.pacs.writer import write_dicom_objects

        analysis = written.analysis
        masks = SegmentMasks(analysis.region_map, analysis.decoy_map, analysis.lesion_mask)
        try:
            identity = Identity(keep=self.options.keep_identity, salt=self.options.salt)
            return write_dicom_objects(written.scan_dir, record, self.taxonomy, scan.dicom_views,
                                       masks, written.overlay(), identity)  # fmt: skip
        except Exception as err:  # noqa: BLE001 - one scan's objects, not the batch
            reason = self.labels.redact(f"{type(err).__name__}: {err}", *scan.paths)
            self._error(scan.key, scan.paths[0], "dicom_out", reason, scan.paths)
            return {"files": [], "segmentations": [], "notes": [], "error": reason}

    # -- the loop -----------------------------------------------------------------------
    def _flush(self, batch: list[_Prepared], writing: _Writing) -> None:
        """Predict a batch and hand each scan to the writers."""
        if not batch:
            return
        try:
            if self.predictor is None:
                predictions = [s.annotation for s in batch]
            else:
                predictions = self.predictor([s.display for s in batch])
        except Exception as err:  # noqa: BLE001 - retry one by one to isolate the culprit
            if len(batch) == 1:
                scan = batch[0]
                self._fail(scan.key, scan.paths, scan.source, "predict", err, scan.link)
                writing.bar.update(1)
                return
            reason = self.labels.redact(str(err), *(p for s in batch for p in s.paths))
            logger.warning("batch of %d failed (%s); retrying scan by scan", len(batch), reason)
            for scan in batch:
                self._flush([scan], writing)
            return
        for scan, instances in zip(batch, predictions, strict=True):
            writing.submit(scan, instances)

    def _written(self, scan: _Prepared, outcome: Future) -> None:
        """Book one scan the writers finished (in the main thread: the result is not shared)."""
        try:
            record = outcome.result()
        except Exception as err:  # noqa: BLE001 - one scan's failure must not stop the rest
            self._fail(scan.key, scan.paths, scan.source, "postprocess", err, scan.link)
            return
        self.result.done.append(scan.key)
        if record["status"] == out.STATUS_QC_FAILED:
            self.result.qc_failed.append(scan.key)

    def run(self, inputs: Sequence[str | Path]) -> BatchResult:
        """Process every input (files or folders); returns what this run did."""
        from tqdm import tqdm

        opts = self.options
        self.labels = InputLabels(inputs, opts.salt, opts.keep_identity)
        (self.out_dir / SCANS_DIR).mkdir(parents=True, exist_ok=True)
        (self.out_dir / ERRORS_DIR).mkdir(parents=True, exist_ok=True)
        _clear_shard_errors(self.out_dir, opts.shard)
        batch: list[_Prepared] = []
        with (
            tqdm(unit="scan", disable=not opts.progress, desc="predict", dynamic_ncols=True) as bar,
            self.labels.in_logs(),
            _Writing(self, bar) as writing,
        ):
            try:
                for item in _prefetch(self._prepared(inputs), opts.prefetch):
                    if item is None:
                        bar.update(1)
                        continue
                    batch.append(item)
                    if len(batch) >= max(1, opts.batch_size):
                        self._flush(batch, writing)
                        batch = []
                self._flush(batch, writing)
            except Exception as err:  # noqa: BLE001 - a reader crash ends reading, not the run
                self._flush(batch, writing)
                reason = self.labels.redact(str(err), *inputs)
                logger.error("reading inputs stopped early: %s", reason)
                self._error("reader", inputs[0] if inputs else "", "read", repr(err), inputs)
        finalize_outputs(self.out_dir, self.taxonomy, opts.outputs)
        return self.result


class _Writing:
    """Scans being analysed and written by ``writers`` threads while the model runs; at most
    a few wait, so memory does not grow with the run. With 0 writers each scan is written at
    once, in the caller's thread. Threads rather than processes: a scan's masks (tens of MB)
    would have to be copied to a process, and OpenCV, zlib and NumPy release the GIL."""

    def __init__(self, runner: BatchRunner, bar: Any) -> None:
        self.runner = runner
        self.bar = bar
        workers = max(0, runner.options.writers)
        self.pool = ThreadPoolExecutor(workers, "bsi-d2-write") if workers else None
        self.limit = 2 * workers
        self.pending: deque[tuple[_Prepared, Future]] = deque()

    def submit(self, scan: _Prepared, instances: Instances) -> None:
        if self.pool is None:
            outcome: Future = Future()
            try:
                outcome.set_result(self.runner.write_scan(scan, instances))
            except Exception as err:  # noqa: BLE001 - booked as the scan's failure
                outcome.set_exception(err)
            self._book(scan, outcome)
            return
        self.pending.append((scan, self.pool.submit(self.runner.write_scan, scan, instances)))
        while self.pending and (len(self.pending) > self.limit or self.pending[0][1].done()):
            self._book(*self.pending.popleft())

    def _book(self, scan: _Prepared, outcome: Future) -> None:
        self.runner._written(scan, outcome)
        self.bar.update(1)

    def __enter__(self) -> _Writing:
        return self

    def __exit__(self, *exc: object) -> None:
        while self.pending:
            self._book(*self.pending.popleft())
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def run_batch(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    predictor: Callable[[list[np.ndarray]], list[Instances]] | None,
    taxonomy: Taxonomy,
    options: BatchOptions | None = None,
    annotations: AnnotationReader | None = None,
) -> BatchResult:
    """Batch inference of ``inputs`` into ``out_dir`` (see :class:`BatchRunner`)."""
    return BatchRunner(predictor, taxonomy, out_dir, options, annotations).run(inputs)
