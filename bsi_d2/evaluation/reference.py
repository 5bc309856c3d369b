"""A predict output folder's records against a reference: a CSV of per-scan values (BSI, lesion
count, burden group, abnormal) or COCO ground-truth images, matched scan by scan.

The records are the bsi.json dicts of ``bsi-d2 predict`` / ``bsi-d2 bsi`` (the command reads
them; this module only sees dicts). A scan whose status is not ``ok`` has no indices: it is
listed as not assessed, never counted as 0 or normal. Keys that match nothing, on either side,
are listed, not dropped.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bsi_d2.evaluation.agreement import (
    N_BOOTSTRAP,
    auc_delong,
    continuous_agreement,
    count_agreement,
    diagnostic_agreement,
    kappa_agreement,
    roc_points,
)
from bsi_d2.evaluation.evaluator import BURDEN_GROUP_NAMES

STATUS_OK = "ok"  # a record with indices (bsi_d2.inference.outputs.STATUS_OK)
KEY_COLUMNS = ("study_key", "key", "scan", "file")  # auto-detected, first present wins
MEASURES = ("bsi", "lesion_count", "burden_group", "abnormal")
SCORES = ("bsi", "bstbi", "lesion_count")  # what may rank the scans for the AUC
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}
SHA256_PREFIX = "sha256:"


@dataclass(frozen=True)
class ReferenceRow:
    line: int  # the CSV line the row ends on (the header is line 1)
    key: str
    values: dict[str, Any]  # measure -> value, None for an empty cell


@dataclass
class ReferenceTable:
    path: Path
    key_column: str
    measures: tuple[str, ...]  # the value columns present, in MEASURES order
    rows: list[ReferenceRow]


def read_reference_csv(path: str | Path, key_column: str | None = None) -> ReferenceTable:
    """The reference CSV at ``path``: a key column (``key_column``, else the first of
    :data:`KEY_COLUMNS` present) and any of :data:`MEASURES`; column names are matched without
    case. ValueError naming the file, the line and the problem for anything unreadable."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: reference CSV not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read the reference CSV: {err}") from err
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(text.splitlines(), dialect)
    header = next(reader, None)
    if not header:
        raise ValueError(f"{path}: the reference CSV is empty")
    names = [h.strip().lower() for h in header]
    if key_column is not None:
        key = key_column.strip().lower()
        if key not in names:
            raise ValueError(
                f"{path}: no key column {key_column!r}; the columns are {', '.join(header)}"
            )
    else:
        key = next((c for c in KEY_COLUMNS if c in names), None)
        if key is None:
            raise ValueError(
                f"{path}: no key column: need one of {', '.join(KEY_COLUMNS)} (or "
                f"--reference-key COLUMN); the columns are {', '.join(header)}"
            )
    measures = tuple(m for m in MEASURES if m in names)
    if not measures:
        raise ValueError(f"{path}: no value column: need one or more of {', '.join(MEASURES)}")
    where = {name: names.index(name) for name in (key, *measures)}
    rows: list[ReferenceRow] = []
    seen: dict[str, int] = {}
    for cells in reader:
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        cells = cells + [""] * (len(names) - len(cells))
        row_key = cells[where[key]].strip()
        if not row_key:
            raise ValueError(f"{path}, line {line}: empty {key!r} cell")
        if row_key in seen:
            raise ValueError(f"{path}, line {line}: key {row_key!r} repeats line {seen[row_key]}")
        seen[row_key] = line
        values = {}
        for measure in measures:
            try:
                values[measure] = _parse(measure, cells[where[measure]].strip())
            except ValueError as err:
                raise ValueError(f"{path}, line {line}, column {measure!r}: {err}") from None
        rows.append(ReferenceRow(line, row_key, values))
    return ReferenceTable(path, key, measures, rows)


def _parse(measure: str, text: str) -> Any:
    if not text:
        return None
    if measure == "abnormal":
        word = text.lower()
        if word in _TRUE | _FALSE:
            return word in _TRUE
        raise ValueError(f"{text!r} is not yes/no, true/false or 1/0")
    if measure == "burden_group":
        group = text.lower()
        if group not in BURDEN_GROUP_NAMES:
            raise ValueError(f"{text!r} is not one of {', '.join(BURDEN_GROUP_NAMES)}")
        return group
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{text!r} is not a finite number >= 0")
    if measure == "lesion_count":
        if number != int(number):
            raise ValueError(f"{text!r} is not a whole number")
        return int(number)
    return number


# -- matching ---------------------------------------------------------------------------------


@dataclass
class ReferenceMatch:
    pairs: list[tuple[ReferenceRow, dict]]  # in the reference's order
    unmatched_reference: list[ReferenceRow]
    unmatched_records: list[dict]


def record_names(record: dict, keep_identity: bool = False) -> set[str]:
    """What a reference key may be to name ``record``: its ``key`` and ``study_key``; with
    ``keep_identity`` also each source file's path, file name and stem (``source`` holds paths
    only when predict ran with --keep-identity)."""
    names = {str(record[k]) for k in ("key", "study_key") if record.get(k)}
    if keep_identity:
        for source in record.get("source") or []:
            if not str(source).startswith(SHA256_PREFIX):
                path = Path(str(source))
                names |= {str(source), path.name, path.stem}
    return names


def match_reference(
    table: ReferenceTable, records: Sequence[dict], keep_identity: bool = False
) -> ReferenceMatch:
    """Pair each reference row with the one record its key names (:func:`record_names`).
    ValueError when a key names two records, or two keys one record."""
    index: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        for name in record_names(record, keep_identity):
            index[name].append(i)
    pairs, unmatched = [], []
    taken: dict[int, ReferenceRow] = {}
    for row in table.rows:
        hits = sorted(set(index.get(row.key, ())))
        if not hits:
            unmatched.append(row)
            continue
        if len(hits) > 1:
            keys = ", ".join(str(records[i].get("key")) for i in hits)
            raise ValueError(
                f"{table.path}, line {row.line}: key {row.key!r} matches {len(hits)} scans "
                f"({keys}); use a column that names one scan (e.g. key)"
            )
        i = hits[0]
        if i in taken:
            raise ValueError(
                f"{table.path}, line {row.line}: key {row.key!r} and {taken[i].key!r} (line "
                f"{taken[i].line}) both name scan {records[i].get('key')}"
            )
        taken[i] = row
        pairs.append((row, records[i]))
    rest = [r for i, r in enumerate(records) if i not in taken]
    return ReferenceMatch(pairs, unmatched, rest)


def not_assessed(records: Iterable[dict], match: ReferenceMatch | None = None) -> list[dict]:
    """Every record whose status is not ok: key, study key, status, the reason, and the
    reference key that named it (None where none did)."""
    named = {id(record): row.key for row, record in (match.pairs if match else ())}
    return [
        {
            "key": r.get("key"),
            "study_key": r.get("study_key"),
            "status": r.get("status"),
            "reason": r.get("error"),
            "reference_key": named.get(id(r)),
        }
        for r in records
        if r.get("status") != STATUS_OK
    ]


def unmatched_record_entry(record: dict) -> dict:
    return {k: record.get(k) for k in ("key", "study_key", "status")}


# -- statistics -------------------------------------------------------------------------------


def pair_rows(table: ReferenceTable, match: ReferenceMatch) -> list[dict]:
    """One row per matched scan: its keys, status, and the reference and predicted value of
    each measure the reference has (predicted empty where the scan was not assessed)."""
    rows = []
    for row, record in match.pairs:
        ok = record.get("status") == STATUS_OK
        out = {
            "key": record.get("key"),
            "study_key": record.get("study_key"),
            "reference_key": row.key,
            "status": record.get("status"),
        }
        for measure in table.measures:
            out[f"reference_{measure}"] = row.values[measure]
            out[f"predicted_{measure}"] = record.get(measure) if ok else None
        rows.append(out)
    return rows


def _pairs_of(
    match: ReferenceMatch, measure: str, score: str | None = None
) -> tuple[list, list, list, int]:
    """(reference, predicted, scores) values of the assessed pairs with both values, and how
    many assessed pairs lack the reference value."""
    reference, predicted, scores, missing = [], [], [], 0
    for row, record in match.pairs:
        if record.get("status") != STATUS_OK:
            continue
        value = row.values.get(measure)
        if value is None:
            missing += 1
            continue
        if record.get(measure) is None:
            continue
        reference.append(value)
        predicted.append(record[measure])
        scores.append(record.get(score) if score else None)
    return reference, predicted, scores, missing


def reference_agreement(
    table: ReferenceTable,
    records: Sequence[dict],
    keep_identity: bool = False,
    abnormal_score: str = "bsi",
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[dict, list[dict]]:
    """Agreement of the records with the reference table, and the matched pairs' rows
    (:func:`pair_rows`).

    Each measure the reference has gets a section over the assessed scans with both values:
    ``bsi`` (:func:`~bsi_d2.evaluation.agreement.continuous_agreement`), ``lesion_count``
    (``count_agreement``), ``burden_group`` (``kappa_agreement``), ``abnormal``
    (``diagnostic_agreement``, the AUC ranking by the record's ``abnormal_score``, and the
    ``roc`` curve); each with ``n_reference_missing``, the assessed scans whose cell is empty.
    """
    if abnormal_score not in SCORES:
        raise ValueError(f"abnormal score {abnormal_score!r}: choose one of {', '.join(SCORES)}")
    match = match_reference(table, records, keep_identity)
    assessed = sum(record.get("status") == STATUS_OK for _, record in match.pairs)
    result: dict[str, Any] = {
        "settings": {
            "confidence": confidence,
            "bootstrap_resamples": n_boot,
            "seed": seed,
            "abnormal_score": abnormal_score,
            "keep_identity": keep_identity,
            "key_column": table.key_column,
        },
        "measures": list(table.measures),
        "n_scans": len(records),
        "n_reference": len(table.rows),
        "n_matched": len(match.pairs),
        "n_assessed": assessed,
        "n_not_assessed_matched": len(match.pairs) - assessed,
    }
    if "bsi" in table.measures:
        ref, pred, _, missing = _pairs_of(match, "bsi")
        section = continuous_agreement(pred, ref, n_boot, seed, confidence)
        result["bsi"] = {**section, "n_reference_missing": missing}
    if "lesion_count" in table.measures:
        ref, pred, _, missing = _pairs_of(match, "lesion_count")
        section = count_agreement(pred, ref, n_boot, seed, confidence)
        result["lesion_count"] = {**section, "n_reference_missing": missing}
    if "burden_group" in table.measures:
        ref, pred, _, missing = _pairs_of(match, "burden_group")
        section = kappa_agreement(pred, ref, BURDEN_GROUP_NAMES, confidence)
        result["burden_group"] = {**section, "n_reference_missing": missing}
    if "abnormal" in table.measures:
        ref, pred, scores, missing = _pairs_of(match, "abnormal", abnormal_score)
        ranked = [(r, s) for r, s in zip(ref, scores, strict=True) if s is not None]
        labels, values = [r for r, _ in ranked], [float(s) for _, s in ranked]
        section = diagnostic_agreement(ref, pred, None, confidence)
        auc = auc_delong(labels, values, confidence)
        section.update({k: auc[k] for k in ("auc", "auc_se", "auc_ci_low", "auc_ci_high")})
        section["roc"] = roc_points(labels, values) if auc["auc"] is not None else None
        section["auc_n"] = len(ranked)
        result["abnormal"] = {**section, "n_reference_missing": missing}
    result["unmatched_reference"] = [
        {"key": r.key, "line": r.line} for r in match.unmatched_reference
    ]
    result["unmatched_predictions"] = [unmatched_record_entry(r) for r in match.unmatched_records]
    result["not_assessed"] = not_assessed(records, match)
    return result, pair_rows(table, match)


# -- COCO ground truth ------------------------------------------------------------------------


@dataclass
class ImageMatch:
    pairs: list[tuple[dict, dict]]  # (COCO image, record)
    unmatched_images: list[dict]  # {id, file_name, reason}
    unmatched_records: list[dict]


def match_images(
    images: Sequence[dict],
    image_dirs: Sequence[Path],
    records: Sequence[dict],
    keep_identity: bool = False,
) -> ImageMatch:
    """Pair each COCO image with the record of the same file: the SHA-256 of the file (its
    ``file_name`` found under the first of ``image_dirs`` holding it) against the record's
    ``source`` digests; with ``keep_identity``, against the source paths, then file names.
    ValueError when an image matches two records."""
    from bsi_d2.io.pseudonym import KEY_HEX_DIGITS, file_digest

    index: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        for source in record.get("source") or []:
            source = str(source)
            if source.startswith(SHA256_PREFIX):
                index[source].append(i)
            elif keep_identity:
                path = Path(source)
                index[str(path.resolve())].append(i)
                index[path.name].append(i)
    pairs, unmatched = [], []
    taken: set[int] = set()
    for image in images:
        name = str(image.get("file_name") or "")
        path = next((d / name for d in image_dirs if name and (d / name).is_file()), None)
        entry = {"id": image["id"], "file_name": name}
        if path is None:
            unmatched.append({**entry, "reason": "image file not found"})
            continue
        candidates = [SHA256_PREFIX + file_digest(path)[:KEY_HEX_DIGITS]]
        if keep_identity:
            candidates += [str(path.resolve()), path.name]
        hits: list[int] = []
        for candidate in candidates:
            hits = sorted(set(index.get(candidate, ())))
            if hits:
                break
        if not hits:
            unmatched.append({**entry, "reason": "no scan of this file in the predictions"})
            continue
        if len(hits) > 1:
            keys = ", ".join(str(records[i].get("key")) for i in hits)
            raise ValueError(f"COCO image {name!r} matches {len(hits)} scans ({keys})")
        taken.add(hits[0])
        pairs.append((image, records[hits[0]]))
    rest = [r for i, r in enumerate(records) if i not in taken]
    return ImageMatch(pairs, unmatched, rest)
