"""Follow-up of patients across studies: which studies are one patient's, in which order, and
what changed between them. Records in, JSON-ready dicts out.

Studies are linked by the records' ``patient_key`` (or a ``--studies`` map for images without
one) and ordered by ``study_date``; a patient whose studies cannot be ordered — a date missing,
two dates that may be the same day, dates of kinds that do not compare — gets an error and no
comparison: an order is never guessed. Each consecutive pair, and the baseline against the
latest study, is compared; a pair with a study that is not "ok" (failed quality control, not
assessed, failed) is "not assessable", never reported as unchanged. The wording follows seed
002's report, as measurements for the physician to confirm; a category (progression, decrease)
is suggested only against thresholds the user gave.
"""

from __future__ import annotations

import csv
import datetime
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bsi_d2.followup.align import align_studies
from bsi_d2.followup.match import DEFAULT_FOLLOWUP_RADIUS, LesionChanges, match_lesions
from bsi_d2.inference.outputs import RECORD_FILE, SCANS_DIR, STATUS_OK, record_paths
from bsi_d2.io.pseudonym import PATIENT_KEY_PATTERN
from bsi_d2.postprocess.lesions import OTHER_SITE
from bsi_d2.preprocess.merge import VIEW_ORDER
from bsi_d2.report.html import AID_LINE, SITE_ORDER

logger = logging.getLogger(__name__)

FOLLOWUP_AID = (
    "These are the software's measurements, an aid for the physician, who reviews and confirms "
    "them; this is not a diagnosis."
)
CONSECUTIVE = "consecutive"
BASELINE_TO_LATEST = "baseline to latest"
DAY_KINDS = ("exact", "shifted")  # study_date_kind of a YYYY-MM-DD date; "month": YYYY-MM
POOR_ALIGNMENT_PX = 8.0  # a landmark residual above this: the matching is to be checked
UNCHANGED_BSI = 0.005  # percentage points: a change that rounds to 0.00
UNCHANGED_BSTBI = 0.00005  # one that rounds to 0.0000
THRESHOLD_SLACK = 1e-9  # 2.05 - 1.20 is 0.8499999...: it meets a threshold of 0.85
STATUS_WORDS = {
    "qc_failed": "failed quality control",
    "not_assessed": "could not be assessed (no skeletal region was found)",
    "failed": "could not be analysed",
}


class FollowupError(ValueError):
    """Inputs that cannot be followed up (not an output folder, a bad studies map); the
    message names the input and the problem."""


@dataclass
class FollowupOptions:
    radius: float = DEFAULT_FOLLOWUP_RADIUS  # pixels within which two lesions can be one
    transform: str = "similarity"  # of the skeleton alignment (followup.align.TRANSFORMS)
    delta_bsi: float | None = None  # a BSI rise (percentage points) suggesting progression
    new_lesions: int | None = None  # new lesions suggesting progression

    @property
    def thresholds(self) -> dict[str, Any]:
        return {"progression_delta_bsi": self.delta_bsi, "new_lesions": self.new_lesions}


@dataclass
class Study:
    """One scan's record with the patient and date it is followed up by."""

    record: dict[str, Any]
    scan_dir: Path  # where its overlay lies; never written to an output
    patient_key: str | None
    date: str | None
    date_kind: str | None

    @property
    def key(self) -> str:
        return str(self.record.get("key"))

    @property
    def identity(self) -> str:
        """What makes two records one study: its study key, else its scan key."""
        return str(self.record.get("study_key") or self.record.get("key"))

    @property
    def ok(self) -> bool:
        return self.record.get("status") == STATUS_OK

    def summary(self) -> dict[str, Any]:
        r = self.record
        return {
            "key": self.key,
            "study_key": r.get("study_key"),
            "date": self.date,
            "date_kind": self.date_kind,
            "status": r.get("status"),
            "bsi": r.get("bsi"),
            "bstbi": r.get("bstbi"),
            "lesion_count": r.get("lesion_count"),
            "burden_group": r.get("burden_group"),
        }

    def label(self) -> str:
        return f"{self.date or 'undated'} ({self.key})"


@dataclass
class PatientFollowup:
    patient_key: str
    studies: list[Study]  # in date order when ``errors`` is empty
    pairs: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "patient_key": self.patient_key,
            "studies": [s.summary() for s in self.studies],
            "pairs": self.pairs,
            "errors": list(self.errors),
            "notes": list(self.notes),
        }


@dataclass
class FollowupResult:
    patients: list[PatientFollowup]
    not_linked: list[Study]  # studies with no patient to follow them up by
    options: FollowupOptions

    def to_dict(self) -> dict[str, Any]:
        return {
            "aid": AID_LINE,
            "thresholds": self.options.thresholds,
            "match_radius_px": self.options.radius,
            "transform": self.options.transform,
            "patients": [p.to_dict() for p in self.patients],
            "not_linked": [s.summary() for s in self.not_linked],
        }


# -- inputs ---------------------------------------------------------------------------------


def results_records(folder: Path) -> list[tuple[dict[str, Any], Path]]:
    """(record, scan folder) of every readable bsi.json of a ``predict`` / ``bsi`` output
    folder; :class:`FollowupError` when ``folder`` is not one."""
    folder = Path(folder)
    paths = record_paths(folder / SCANS_DIR) if folder.is_dir() else []
    if not paths:
        raise FollowupError(
            f"{folder}: not a bsi-d2 output folder (no {SCANS_DIR}/<key>/{RECORD_FILE} in it; "
            "give the --out folder of bsi-d2 predict or bsi)"
        )
    out = []
    for path in paths:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            logger.warning("%s: unreadable record skipped: %s", path, err)
            continue
        if not isinstance(record, dict) or "key" not in record or "status" not in record:
            logger.warning("%s: not a bsi-d2 record (no key and status): skipped", path)
            continue
        out.append((record, path.parent))
    if not out:
        raise FollowupError(f"{folder}: no readable {RECORD_FILE} in {SCANS_DIR}/")
    return out


def parse_study_date(text: str) -> tuple[str, str] | None:
    """A map's date -> (value, kind): ``2024-03-15`` or ``20240315`` exact, ``2024-03`` month;
    None for an empty one; ValueError for anything else."""
    text = str(text or "").strip()
    if not text:
        return None
    for pattern, kind in (("%Y-%m-%d", "exact"), ("%Y%m%d", "exact"), ("%Y-%m", "month")):
        try:
            day = datetime.datetime.strptime(text, pattern).date()
        except ValueError:
            continue
        value = day.isoformat() if kind == "exact" else f"{day.year:04d}-{day.month:02d}"
        return value, kind
    raise ValueError(f"date {text!r}: write YYYY-MM-DD, YYYYMMDD or YYYY-MM")


def read_studies_map(
    path: Path, salt: str | None = None
) -> dict[str, tuple[str, tuple[str, str] | None]]:
    """A CSV with columns ``key`` (a scan's key or a study key), ``patient`` and ``date`` (may
    be empty) -> key: (patient pseudonym, (date, kind) or None). A ``patient`` that is already a
    pseudonym (``pt`` + 16 hex digits, as records carry) is kept; any other is pseudonymised
    with the salt, so no name or ID given in the map reaches an output."""
    from bsi_d2.io.pseudonym import patient_key  # a local name: follow_up loops over patients

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise FollowupError(f"{path}: cannot read the studies map: {err.strerror}") from err
    reader = csv.DictReader(text.splitlines())
    columns = {c.strip().lower(): c for c in reader.fieldnames or []}
    if not {"key", "patient"} <= set(columns):
        raise FollowupError(f"{path}: the studies map needs the columns key, patient and date")
    out: dict[str, tuple[str, tuple[str, str] | None]] = {}
    for line, row in enumerate(reader, start=2):
        key = str(row.get(columns["key"]) or "").strip()
        patient = str(row.get(columns["patient"]) or "").strip()
        if not key and not patient:
            continue
        if not key or not patient:
            raise FollowupError(f"{path}:{line}: a row needs both a key and a patient")
        try:
            date = parse_study_date(row.get(columns["date"], "")) if "date" in columns else None
        except ValueError as err:
            raise FollowupError(f"{path}:{line}: {err}") from err
        if not PATIENT_KEY_PATTERN.fullmatch(patient):
            patient = str(patient_key(patient, salt=salt))
        entry = (patient, date)
        if out.get(key, entry) != entry:
            raise FollowupError(f"{path}:{line}: key {key} is given twice, differently")
        out[key] = entry
    return out


def build_studies(
    records: Iterable[tuple[dict[str, Any], Path]],
    studies_map: Mapping[str, tuple[str, tuple[str, str] | None]] | None = None,
) -> list[Study]:
    """:class:`Study` of each record; a map entry for its key or study key gives (and
    overrides) its patient and date."""
    studies_map = studies_map or {}
    out = []
    for record, scan_dir in records:
        patient = record.get("patient_key")
        date, kind = record.get("study_date"), record.get("study_date_kind")
        entry = studies_map.get(str(record.get("key"))) or studies_map.get(
            str(record.get("study_key"))
        )
        if entry is not None:
            patient = entry[0]
            if entry[1] is not None:
                date, kind = entry[1]
        out.append(Study(record, Path(scan_dir), patient, date, kind))
    return out


def _comparable(record: Mapping[str, Any]) -> str:
    """A record's results as text; its input labels left out (one file, two locations)."""
    return json.dumps({k: v for k, v in record.items() if k != "source"}, sort_keys=True)


def unique_studies(studies: Sequence[Study]) -> tuple[list[Study], dict[str, list[Study]]]:
    """Studies with repeats of one study collapsed (the same record in two folders), and the
    studies that appear with different records: study identity -> those records."""
    seen: dict[str, list[Study]] = {}
    for study in studies:
        seen.setdefault(study.identity, []).append(study)
    kept, conflicts = [], {}
    for identity, group in seen.items():
        if len({_comparable(s.record) for s in group}) > 1:
            conflicts[identity] = group
        else:
            kept.append(group[0])
    return kept, conflicts


# -- order ----------------------------------------------------------------------------------


def date_span(date: str, kind: str | None) -> tuple[datetime.date, datetime.date]:
    """The first and last day a study date may be: one day, or a whole month."""
    if kind == "month":
        first = datetime.datetime.strptime(date, "%Y-%m").date()
        following = first.replace(day=28) + datetime.timedelta(days=4)
        return first, following - datetime.timedelta(days=following.day)
    day = datetime.date.fromisoformat(date)
    return day, day


def order_studies(studies: Sequence[Study]) -> tuple[list[Study], str | None]:
    """The studies in date order, or (as given, the reason) where no order can be told."""
    undated = [s.key for s in studies if not s.date]
    if undated:
        return list(studies), (
            f"no study date for {', '.join(undated)}: the studies are not ordered (keep dates "
            "with --keep-dates, or give them with --studies)"
        )
    shifted = {s.date_kind == "shifted" for s in studies}
    if len(shifted) > 1:
        return list(studies), (
            "shifted and unshifted study dates are mixed: they cannot be put in one order"
        )
    try:
        spans = [(date_span(s.date, s.date_kind), s) for s in studies]  # type: ignore[arg-type]
    except ValueError as err:
        return list(studies), f"a study date cannot be read: {err}"
    spans.sort(key=lambda item: item[0])
    for (first, a), (second, b) in zip(spans, spans[1:], strict=False):
        if second[0] <= first[1]:
            return [s for _, s in spans], (
                f"studies {a.label()} and {b.label()} may be of the same day: their order is "
                "not known"
            )
    return [s for _, s in spans], None


# -- one pair ---------------------------------------------------------------------------------


def _change(before: float | None, after: float | None) -> dict[str, float | None]:
    delta = None if before is None or after is None else after - before
    return {"earlier": before, "later": after, "change": delta}


def region_changes(earlier: Mapping[str, Any], later: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per bone, its BSI in both studies and the change (None where either did not assess it)."""
    before = {r["bone"]: r for r in earlier.get("regions") or []}
    after = {r["bone"]: r for r in later.get("regions") or []}
    rows = []
    for bone in dict.fromkeys([*before, *after]):
        row = after.get(bone) or before[bone]
        change = _change((before.get(bone) or {}).get("bsi"), (after.get(bone) or {}).get("bsi"))
        rows.append({"bone": bone, "report_name": row.get("report_name", bone), **change})
    return rows


def _interval_days(earlier: Study, later: Study) -> int | None:
    """Days between two day-precise dates of one kind (shifted dates keep intervals)."""
    if not (earlier.date and later.date) or earlier.date_kind not in DAY_KINDS:
        return None
    if later.date_kind != earlier.date_kind:
        return None
    return (
        datetime.date.fromisoformat(later.date) - datetime.date.fromisoformat(earlier.date)
    ).days


def _status_words(study: Study) -> str:
    return STATUS_WORDS.get(str(study.record.get("status")), "has no result")


def compare_pair(
    earlier: Study, later: Study, span: str, options: FollowupOptions
) -> dict[str, Any]:
    """The comparison of two studies of one patient (see the module docstring)."""
    pair: dict[str, Any] = {
        "span": span,
        "earlier": earlier.summary(),
        "later": later.summary(),
        "interval_days": _interval_days(earlier, later),
        "assessable": earlier.ok and later.ok,
        "not_assessable_reason": None,
        "bsi": _change(None, None),
        "regions": [],
        "bstbi": {v: _change(None, None) for v in (*VIEW_ORDER, "mean")},
        "lesion_count": _change(None, None),
        "lesions": None,
        "lesion_note": None,
        "alignment": {},
        "category": None,
        "text": "",
    }
    if not pair["assessable"]:
        pair["not_assessable_reason"] = "; ".join(
            f"the {which} study {s.label()} {_status_words(s)}"
            for which, s in (("earlier", earlier), ("later", later))
            if not s.ok
        )
        pair["text"] = not_assessable_text(pair)
        return pair
    a, b = earlier.record, later.record
    pair["bsi"] = _change(a.get("bsi"), b.get("bsi"))
    pair["regions"] = region_changes(a, b)
    pair["bstbi"] = {
        **{v: _change(a.get(f"bstbi_{v}"), b.get(f"bstbi_{v}")) for v in VIEW_ORDER},
        "mean": _change(a.get("bstbi"), b.get("bstbi")),
    }
    pair["lesion_count"] = _change(a.get("lesion_count"), b.get("lesion_count"))
    alignments = align_studies(a, b, options.transform)
    pair["alignment"] = {v: al.to_dict() for v, al in alignments.items()}
    changes = match_lesions(a, b, alignments, options.radius)
    if changes is None:
        pair["lesion_note"] = (
            "the records carry no lesion positions (written by an older version): lesions are "
            "not matched, only counted"
        )
    else:
        pair["lesions"] = changes.to_dict()
    pair["category"] = suggest_category(pair, changes, options)
    pair["text"] = pair_text(pair, changes, options)
    return pair


def suggest_category(
    pair: Mapping[str, Any], changes: LesionChanges | None, options: FollowupOptions
) -> str | None:
    """The category the user's thresholds give: "progression", "decrease" or "below the
    thresholds"; None without thresholds, for a pair that is not assessable, or where a
    threshold cannot be checked (lesions not matched) and the other does not decide."""
    if not pair["assessable"] or (options.delta_bsi is None and options.new_lesions is None):
        return None
    delta = pair["bsi"]["change"]
    met: list[bool | None] = []  # per threshold given: met, or None where it cannot be checked
    if options.delta_bsi is not None:
        met.append(None if delta is None else delta >= options.delta_bsi - THRESHOLD_SLACK)
    if options.new_lesions is not None:
        met.append(None if changes is None else len(changes.new) >= options.new_lesions)
    if True in met:
        return "progression"
    if None in met:
        return None
    if options.delta_bsi is not None and delta <= -options.delta_bsi + THRESHOLD_SLACK:
        return "decrease"
    return "below the thresholds"


# -- wording ----------------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def site_list(lesions: Sequence[Mapping[str, Any]]) -> str:
    """The lesions' sites in seed 002's order: "pelvis, spine"; with counts where a site holds
    more than one and there are several sites ("pelvis 2, spine 1")."""
    counts: dict[str, int] = {}
    for les in lesions:
        name = str(les.get("site_name") or OTHER_SITE)
        name = "other parts" if name == OTHER_SITE else name
        counts[name] = counts.get(name, 0) + 1
    order = [s for s in SITE_ORDER if s in counts]
    order += sorted(s for s in counts if s not in SITE_ORDER and s != "other parts")
    order += ["other parts"] if "other parts" in counts else []
    if len(order) > 1 and max(counts.values()) > 1:
        return ", ".join(f"{name} {counts[name]}" for name in order)
    return ", ".join(order)


def bsi_sentence(change: Mapping[str, float | None]) -> str:
    before, after, delta = change["earlier"], change["later"], change["change"]
    if delta is None:
        return "BSI not available in both studies"
    if abs(delta) < UNCHANGED_BSI:
        return f"BSI unchanged at {after:.2f} %"
    verb = "increased" if delta > 0 else "decreased"
    return f"BSI {verb} from {before:.2f} % to {after:.2f} % ({delta:+.2f} percentage points)"


def bstbi_sentence(change: Mapping[str, float | None]) -> str:
    before, after, delta = change["earlier"], change["later"], change["change"]
    if abs(delta) < UNCHANGED_BSTBI:  # type: ignore[arg-type]
        return f"BSTBI (mean of the views) unchanged at {after:.4f}."
    return f"BSTBI (mean of the views) from {before:.4f} to {after:.4f} ({delta:+.4f})."


def lesion_clauses(pair: Mapping[str, Any], changes: LesionChanges | None) -> list[str]:
    if changes is None:
        count = pair["lesion_count"]
        return [f"lesion count from {count['earlier']} to {count['later']} (lesions not matched)"]
    new = len(changes.new)
    clauses = [
        f"{_plural(new, 'new lesion')} ({site_list(changes.new)})" if new else "no new lesion"
    ]
    if changes.resolved:
        n = len(changes.resolved)
        clauses.append(f"{_plural(n, 'lesion')} no longer seen ({site_list(changes.resolved)})")
    if changes.persistent:
        clauses.append(f"{_plural(len(changes.persistent), 'lesion')} seen in both studies")
    return clauses


def alignment_caveat(alignment: Mapping[str, Mapping[str, Any]]) -> str | None:
    """A sentence where the skeletons could not be aligned well enough to trust the matching."""
    poor = []
    for view, a in alignment.items():
        if a["transform"] == "none":
            poor.append(f"{view}: not aligned")
        elif a["residual_px"] is not None and a["residual_px"] > POOR_ALIGNMENT_PX:
            poor.append(f"{view}: landmarks {a['residual_px']:.1f} px apart after alignment")
        elif len(a["landmarks"]) < 3:
            poor.append(f"{view}: {_plural(len(a['landmarks']), 'landmark')} only")
    if not poor:
        return None
    return (
        f"The skeletons could not be aligned closely ({'; '.join(poor)}): check the lesion "
        "matching on the images."
    )


def category_sentence(category: str | None, options: FollowupOptions) -> str | None:
    if options.delta_bsi is None and options.new_lesions is None:
        return None
    given = []
    if options.delta_bsi is not None:
        given.append(f"a BSI rise of {options.delta_bsi:.2f} percentage points or more")
    if options.new_lesions is not None:
        given.append(f"{options.new_lesions} or more new lesions")
    rule = ", or ".join(given)
    if category is None:
        return f"No category suggested: the thresholds given ({rule}) cannot be checked here."
    text = f"Suggested category by the thresholds given ({rule}): {category}."
    if category == "progression":
        text += " A flare in the first months of treatment can raise uptake as well."
    return text


def pair_text(
    pair: Mapping[str, Any], changes: LesionChanges | None, options: FollowupOptions
) -> str:
    """Seed 002-style summary of an assessable pair, ending with the aid sentence."""
    sentences = ["; ".join([bsi_sentence(pair["bsi"]), *lesion_clauses(pair, changes)]) + "."]
    bstbi = pair["bstbi"]["mean"]
    if bstbi["change"] is not None:
        sentences.append(bstbi_sentence(bstbi))
    for extra in (
        alignment_caveat(pair["alignment"]) if changes is not None else None,
        category_sentence(pair["category"], options),
    ):
        if extra:
            sentences.append(extra)
    sentences.append(FOLLOWUP_AID)
    return " ".join(sentences)


def not_assessable_text(pair: Mapping[str, Any]) -> str:
    return (
        f"Not assessable: {pair['not_assessable_reason']}. No comparison is made; this is not a "
        f"finding of no change. {FOLLOWUP_AID}"
    )


# -- all patients ----------------------------------------------------------------------------


def follow_patient(
    patient_key: str, studies: Sequence[Study], options: FollowupOptions
) -> PatientFollowup:
    """One patient's studies in order and their pairs: each consecutive one, and the baseline
    against the latest where there are three or more studies."""
    ordered, error = order_studies(studies)
    patient = PatientFollowup(patient_key, ordered)
    if error:
        patient.errors.append(error)
        return patient
    if len(ordered) == 1:
        patient.notes.append("a single study: nothing to compare")
    spans = [(a, b, CONSECUTIVE) for a, b in zip(ordered, ordered[1:], strict=False)]
    if len(ordered) > 2:
        spans.append((ordered[0], ordered[-1], BASELINE_TO_LATEST))
    for earlier, later, span in spans:
        pair = compare_pair(earlier, later, span, options)
        patient.pairs.append({"patient_key": patient_key, **pair})
    return patient


def follow_up(studies: Sequence[Study], options: FollowupOptions | None = None) -> FollowupResult:
    """Every patient's follow-up (sorted by patient key); studies without a patient are
    ``not_linked``, and a patient with one study in two different records gets an error."""
    options = options or FollowupOptions()
    kept, conflicts = unique_studies(studies)
    by_patient: dict[str, list[Study]] = {}
    not_linked = []
    for study in kept:
        if study.patient_key:
            by_patient.setdefault(study.patient_key, []).append(study)
        else:
            not_linked.append(study)
    conflicted: dict[str, list[str]] = {}
    for identity, group in conflicts.items():
        for study in group:
            if study.patient_key:
                by_patient.setdefault(study.patient_key, [])
                keys = ", ".join(sorted({s.key for s in group}))
                conflicted.setdefault(study.patient_key, []).append(
                    f"study {identity} has {len(group)} different records (scan keys {keys}), "
                    "in one folder or several: keep one, and run again"
                )
            else:
                not_linked.append(study)
    patients = []
    for patient_key in sorted(by_patient):
        if patient_key in conflicted:
            ordered, _ = order_studies(by_patient[patient_key])
            errors = list(dict.fromkeys(conflicted[patient_key]))
            patients.append(PatientFollowup(patient_key, ordered, errors=errors))
        else:
            patients.append(follow_patient(patient_key, by_patient[patient_key], options))
    return FollowupResult(patients, sorted(not_linked, key=lambda s: s.key), options)
