"""Follow-up outputs: ``followup_pairs.csv`` (one row per pair), ``followup.json``, a page per
patient (``patients/<patient_key>.html``: BSI trend, studies, pairs, overlays side by side) and
``index.html`` listing the patients. Files are named by pseudonymous keys only; no input path
reaches an output. Every file is written atomically.
"""

from __future__ import annotations

import base64
import csv
import datetime
import io
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bsi_d2.followup.compare import (
    FOLLOWUP_AID,
    FollowupResult,
    PatientFollowup,
    Study,
    date_span,
    site_list,
)
from bsi_d2.inference.outputs import atomic_write_json
from bsi_d2.io.files import atomic_path, atomic_write_text
from bsi_d2.preprocess.merge import VIEW_ORDER
from bsi_d2.report.html import esc, fmt_num, html_table, render_page

PAIRS_FILE = "followup_pairs.csv"
JSON_FILE = "followup.json"
PATIENTS_DIR = "patients"
INDEX_FILE = "index.html"

PAIR_HEAD = (
    "patient_key", "span",
    "earlier_key", "earlier_study_key", "earlier_date", "earlier_date_kind", "earlier_status",
    "later_key", "later_study_key", "later_date", "later_date_kind", "later_status",
    "interval_days", "assessable", "not_assessable_reason",
    "bsi_earlier", "bsi_later", "delta_bsi",
    "bstbi_earlier", "bstbi_later", "delta_bstbi", "delta_bstbi_anterior", "delta_bstbi_posterior",
    "lesion_count_earlier", "lesion_count_later", "delta_lesion_count",
    "new_lesions", "resolved_lesions", "persistent_lesions", "new_lesion_sites",
    "resolved_lesion_sites", "residual_px_anterior", "residual_px_posterior", "category", "text",
)  # fmt: skip


def file_name(key: str) -> str:
    """A key as a file name: keys are letters and digits, but a hand-edited record's may not
    be, and must not reach outside the output folder."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(key)) or "_"


# -- followup_pairs.csv ---------------------------------------------------------------------


def pair_row(pair: Mapping[str, Any]) -> dict[str, Any]:
    """One CSV row of a pair; per-bone BSI changes as ``delta_bsi_<bone>`` columns."""
    row: dict[str, Any] = {"patient_key": pair["patient_key"], "span": pair["span"]}
    for which in ("earlier", "later"):
        study = pair[which]
        for name in ("key", "study_key", "date", "date_kind", "status"):
            row[f"{which}_{name}"] = study.get(name)
    for name in ("interval_days", "assessable", "not_assessable_reason", "category", "text"):
        row[name] = pair.get(name)
    bsi, bstbi, count = pair["bsi"], pair["bstbi"], pair["lesion_count"]
    row.update(bsi_earlier=bsi["earlier"], bsi_later=bsi["later"], delta_bsi=bsi["change"])
    mean = bstbi["mean"]
    row.update(bstbi_earlier=mean["earlier"], bstbi_later=mean["later"], delta_bstbi=mean["change"])
    for view in VIEW_ORDER:
        row[f"delta_bstbi_{view}"] = bstbi[view]["change"]
    row.update(
        lesion_count_earlier=count["earlier"],
        lesion_count_later=count["later"],
        delta_lesion_count=count["change"],
    )
    lesions = pair.get("lesions")
    if lesions is not None:
        row.update(
            new_lesions=len(lesions["new"]),
            resolved_lesions=len(lesions["resolved"]),
            persistent_lesions=len(lesions["persistent"]),
            new_lesion_sites=site_list(lesions["new"]),
            resolved_lesion_sites=site_list(lesions["resolved"]),
        )
    for view, alignment in (pair.get("alignment") or {}).items():
        row[f"residual_px_{view}"] = alignment.get("residual_px")
    for region in pair.get("regions") or []:
        row[f"delta_bsi_{region['bone']}"] = region["change"]
    return row


def pairs_csv(result: FollowupResult) -> str:
    rows = [pair_row(p) for patient in result.patients for p in patient.pairs]
    bones = list(dict.fromkeys(k for row in rows for k in row if k.startswith("delta_bsi_")))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*PAIR_HEAD, *bones], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


# -- the BSI trend ----------------------------------------------------------------------------


def _plot_date(study: Study) -> datetime.date | None:
    """Where a study sits on the time axis: its day, or the middle of its month."""
    if not study.date:
        return None
    try:
        first, last = date_span(study.date, study.date_kind)
    except ValueError:
        return None
    return first + (last - first) / 2


def trend_png(studies: Sequence[Study]) -> bytes:
    """PNG of the patient's BSI over time (in study order where dates are missing); a study
    without a result is a grey dotted line, never a value."""
    from bsi_d2.report.plots import pyplot

    dates = [_plot_date(s) for s in studies]
    by_date = all(d is not None for d in dates)
    xs: list[Any] = dates if by_date else list(range(1, len(studies) + 1))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.2), dpi=100)
    ok = [(x, float(s.record["bsi"])) for x, s in zip(xs, studies, strict=True) if s.ok]
    if ok:
        ax.plot([x for x, _ in ok], [y for _, y in ok], marker="o", color="#0072B2")
    missing = [x for x, s in zip(xs, studies, strict=True) if not s.ok]
    for k, x in enumerate(missing):
        ax.axvline(x, color="0.6", linestyle=":", label="no result" if k == 0 else None)
    if missing:
        ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.set_ylim(bottom=0, top=max([0.5, *(1.15 * y for _, y in ok)]))
    ax.set_ylabel("BSI (% of skeletal mass)")
    ax.set_xlabel("study date" if by_date else "study (dates missing: not in time order)")
    if not by_date:
        ax.set_xticks(xs)
    ax.grid(alpha=0.3)
    if by_date:
        fig.autofmt_xdate()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


# -- pages ----------------------------------------------------------------------------------


def _date_text(study: Mapping[str, Any]) -> str:
    date, kind = study.get("date"), study.get("date_kind")
    if not date:
        return "undated"
    return f"{date} (shifted)" if kind == "shifted" else str(date)


def _pair_title(pair: Mapping[str, Any]) -> str:
    return f"{_date_text(pair['earlier'])} \u2192 {_date_text(pair['later'])}"


def _studies_table(patient: PatientFollowup) -> str:
    rows = []
    for s in patient.studies:
        summary = s.summary()
        status = esc(summary["status"])
        if not s.ok:
            status = f'<span class="status-failed">{status}</span>'
        rows.append(
            [
                esc(_date_text(summary)),
                esc(summary["key"]),
                status,
                fmt_num(summary["bsi"], 2),
                fmt_num(summary["bstbi"], 4),
                esc(summary["lesion_count"]),
                esc(summary["burden_group"] or ""),
            ]
        )
    headers = ["Date", "Scan key", "Status", "BSI (%)", "BSTBI", "Lesions", "Burden"]
    return html_table(headers, rows, numeric_from=3)


def _lesion_counts(pair: Mapping[str, Any]) -> list[str]:
    """New, no longer seen and persistent lesion counts (a dash where lesions were not
    matched)."""
    lesions = pair.get("lesions")
    if lesions is None:
        return ["&mdash;"] * 3
    return [esc(len(lesions[k])) for k in ("new", "resolved", "persistent")]


def _pairs_table(patient: PatientFollowup) -> str:
    rows = []
    for k, pair in enumerate(patient.pairs, start=1):
        link = f'<a href="#pair-{k}">{esc(_pair_title(pair))}</a> ({esc(pair["span"])})'
        if not pair["assessable"]:
            rows.append([link, '<span class="status-failed">not assessable</span>', *[""] * 6])
            continue
        rows.append(
            [
                link,
                esc(pair["category"] or ""),
                fmt_num(pair["bsi"]["change"], 2),
                fmt_num(pair["bstbi"]["mean"]["change"], 4),
                esc(pair["lesion_count"]["change"]),
                *_lesion_counts(pair),
            ]
        )
    headers = ["Pair", "Category", "ΔBSI (pp)", "ΔBSTBI", "ΔLesions", "New", "No longer", "Both"]
    return html_table(headers, rows, numeric_from=2)


def _overlay_figure(
    study: Mapping[str, Any], overlays: Mapping[str, str | None], which: str
) -> str:
    target = overlays.get(str(study["key"]))
    caption = f"{which}: {esc(_date_text(study))} ({esc(study['key'])})"
    if target is None:
        return (
            f'<div class="figure"><p class="muted">No overlay image for this scan (not written, '
            f'or the scan has no result).</p><div class="caption">{caption}</div></div>'
        )
    return (
        f'<div class="figure"><img src="{esc(quote(target))}" width="512" '
        f'alt="regions and lesions over the {which.lower()} scan">'
        f'<div class="caption">{caption}</div></div>'
    )


def _lesion_lists(lesions: Mapping[str, Any]) -> str:
    parts = []
    for title, key in (("New lesions", "new"), ("No longer seen", "resolved")):
        items = lesions[key]
        if not items:
            continue
        rows = [
            [
                esc(les["id"]),
                esc(les["site_name"]),
                esc(", ".join(les["views"])),
                esc(les["pixels"]),
            ]
            for les in items
        ]
        which = "later" if key == "new" else "earlier"
        parts.append(f"<h3>{esc(title)}</h3>")
        parts.append(html_table([f"Lesion ({which} study)", "Site", "Views", "Pixels"], rows, 3))
    if lesions["persistent"]:
        rows = [
            [
                esc(f"{p['earlier_id']} \u2192 {p['later_id']}"),
                esc(p["site_name"]),
                esc(", ".join(p["views"])),
                esc(p["distance_px"]),
                esc(p["pixels_earlier"]),
                esc(p["pixels_later"]),
                esc(f"{p['pixel_change']:+d}"),
            ]
            for p in lesions["persistent"]
        ]
        headers = ["Lesion", "Site", "Matched in", "Distance (px)", "Pixels before",
                   "Pixels after", "Change"]  # fmt: skip
        parts.append("<h3>Seen in both studies</h3>")
        parts.append(html_table(headers, rows, numeric_from=3))
    return "".join(parts)


def _alignment_table(alignment: Mapping[str, Mapping[str, Any]]) -> str:
    rows = [
        [
            esc(view),
            esc(a["transform"]),
            esc(", ".join(a["landmarks"])),
            fmt_num(a["residual_px"], 1),
            esc("; ".join(a["notes"])),
        ]
        for view, a in alignment.items()
    ]
    return html_table(["View", "Transform", "Landmarks", "Residual (px)", "Notes"], rows, 3)


def _region_table(regions: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        [
            esc(str(r["bone"]).replace("_", " ")),
            fmt_num(r["earlier"], 2),
            fmt_num(r["later"], 2),
            fmt_num(r["change"], 2),
        ]
        for r in regions
        if r["earlier"] is not None or r["later"] is not None
    ]
    return html_table(["Region", "BSI before (%)", "BSI after (%)", "Change (pp)"], rows)


def _pair_section(k: int, pair: Mapping[str, Any], overlays: Mapping[str, str | None]) -> str:
    # colour only what the user's thresholds call progression; a result never looks "normal"
    if not pair["assessable"]:
        box = '<div class="finding failed">'
    elif pair["category"] == "progression":
        box = '<div class="finding abnormal">'
    else:
        box = '<div class="finding" style="border: 1px solid #d0d7de">'
    days = f", {esc(pair['interval_days'])} days" if pair["interval_days"] is not None else ""
    parts = [
        f'<h2 id="pair-{k}">{esc(_pair_title(pair))} '
        f'<span class="muted">({esc(pair["span"])}{days})</span></h2>',
        f"{box}<p><strong>{esc(pair['text'])}</strong></p></div>",
    ]
    if pair["assessable"]:
        parts.append(_region_table(pair["regions"]))
        if pair.get("lesions") is not None:
            parts.append(_lesion_lists(pair["lesions"]))
        if pair.get("lesion_note"):
            parts.append(f'<p class="muted">{esc(pair["lesion_note"])}</p>')
        parts.append("<h3>Skeleton alignment</h3>" + _alignment_table(pair["alignment"]))
    parts.append(
        '<div class="cols">'
        + _overlay_figure(pair["earlier"], overlays, "Earlier")
        + _overlay_figure(pair["later"], overlays, "Later")
        + "</div>"
    )
    return "\n".join(parts)


def patient_html(patient: PatientFollowup, overlays: Mapping[str, str | None]) -> str:
    """A patient's page; ``overlays`` maps scan keys to their overlay's path beside the page
    (None where there is none)."""
    parts = ['<p><a href="../index.html">&larr; all patients</a></p>']
    for error in patient.errors:
        parts.append(
            f'<div class="finding failed"><p><strong>Not compared: {esc(error)}</strong></p></div>'
        )
    for note in patient.notes:
        parts.append(f'<p class="muted">{esc(note)}</p>')
    if patient.studies:
        image = base64.b64encode(trend_png(patient.studies)).decode("ascii")
        parts.append(
            '<h2>BSI over time</h2><div class="plots">'
            f'<img src="data:image/png;base64,{image}" alt="BSI of each study over time"></div>'
        )
    parts.append("<h2>Studies</h2>" + _studies_table(patient))
    if patient.pairs:
        parts.append("<h2>Pairs</h2>" + _pairs_table(patient))
        parts.append(
            '<p class="muted">pp: percentage points of BSI. Lesions are matched after aligning '
            "the skeletons from their regions' centroids; a lesion seen in both studies lies "
            "within the match radius in at least one view.</p>"
        )
    for k, pair in enumerate(patient.pairs, start=1):
        parts.append(_pair_section(k, pair, overlays))
    parts.append(f'<p class="muted">{esc(FOLLOWUP_AID)}</p>')
    subtitle = f"{len(patient.studies)} stud{'y' if len(patient.studies) == 1 else 'ies'}, "
    subtitle += f"{len(patient.pairs)} pair(s) compared"
    return render_page(f"Follow-up: patient {patient.patient_key}", subtitle, "\n".join(parts))


def _index_row(patient: PatientFollowup) -> list[str]:
    link = (
        f'<a href="{PATIENTS_DIR}/{esc(quote(file_name(patient.patient_key)))}.html">'
        f"{esc(patient.patient_key)}</a>"
    )
    dates = [s.date for s in patient.studies if s.date]
    overall = patient.pairs[-1] if patient.pairs else None
    if patient.errors:
        status = '<span class="status-failed">not compared</span>'
    elif overall is None:
        status = "single study"
    elif not overall["assessable"]:
        status = '<span class="status-failed">first to last not assessable</span>'
    else:
        status = esc(overall["category"] or "compared")
    change = overall["bsi"]["change"] if overall is not None else None
    return [
        link,
        esc(len(patient.studies)),
        esc(dates[0] if dates else ""),
        esc(dates[-1] if dates else ""),
        status,
        fmt_num(change, 2),
    ]


def index_html(result: FollowupResult) -> str:
    parts = []
    if result.patients:
        headers = ["Patient", "Studies", "First", "Last", "Result", "ΔBSI first→last (pp)"]
        rows = [_index_row(p) for p in result.patients]
        parts.append("<h2>Patients</h2>" + html_table(headers, rows, numeric_from=5))
    else:
        parts.append('<p class="muted">No study is linked to a patient.</p>')
    errors = [(p.patient_key, e) for p in result.patients for e in p.errors]
    if errors:
        rows = [[esc(k), esc(e)] for k, e in errors]
        parts.append("<h2>Patients not compared</h2>" + html_table(["Patient", "Why"], rows, 99))
    if result.not_linked:
        rows = [
            [esc(s.key), esc(s.record.get("study_key") or ""), esc(s.date or "")]
            for s in result.not_linked
        ]
        parts.append(
            "<h2>Not linked to a patient</h2><p>These scans carry no patient pseudonym; give "
            "them one with --studies MAP.csv (columns key, patient, date).</p>"
            + html_table(["Scan key", "Study key", "Date"], rows, 99)
        )
    subtitle = f"{len(result.patients)} patient(s), {len(result.not_linked)} scan(s) not linked"
    return render_page("Bone scan follow-up", subtitle, "\n".join(parts))


# -- writing --------------------------------------------------------------------------------


def copy_overlays(patient: PatientFollowup, folder: Path) -> dict[str, str | None]:
    """Copy each study's overlay.png to ``folder/<scan key>.png``; scan key -> its path
    relative to the patient's page (None where the scan has none)."""
    out: dict[str, str | None] = {}
    for study in patient.studies:
        name = study.record.get("overlay")
        # only the file name: a record's path never leads outside its scan folder
        source = study.scan_dir / Path(str(name)).name if name else None
        if source is None or not source.is_file():
            out[study.key] = None
            continue
        target = folder / f"{file_name(study.key)}.png"
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
        out[study.key] = f"{folder.name}/{target.name}"
    return out


def write_followup(out: Path, result: FollowupResult) -> list[Path]:
    """Write every follow-up output into ``out`` (see the module docstring); returns them."""
    out = Path(out)
    written = [
        atomic_write_text(out / PAIRS_FILE, pairs_csv(result)),
        atomic_write_json(out / JSON_FILE, result.to_dict()),
    ]
    patients_dir = out / PATIENTS_DIR
    for patient in result.patients:
        overlays = copy_overlays(patient, patients_dir / file_name(patient.patient_key))
        page = patients_dir / f"{file_name(patient.patient_key)}.html"
        written.append(atomic_write_text(page, patient_html(patient, overlays)))
    written.append(atomic_write_text(out / INDEX_FILE, index_html(result)))
    return written
