"""Plain HTML reports (inline CSS, no JavaScript, no external assets) for a physician to check.

Every page carries :data:`AID_LINE`. Only the fields named in the record schema are rendered,
so an identity field that slips into a record never reaches a page; every string is escaped.
Wording follows seed 002's report template (DOMAIN.md section 7), phrased as model findings.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from string import Template
from urllib.parse import quote

from bsi_d2.evaluation.tables import pixel_table_rows
from bsi_d2.postprocess.analysis import ANNOTATIONS_ENGINE as ENGINE_NAME
from bsi_d2.taxonomy import Taxonomy, load_taxonomy

AID_LINE = (
    "This result was produced by software as an aid for a physician, who reviews and confirms "
    "it; it is not a diagnosis."
)
NORMAL_FINDING = "No abnormal uptake suggestive of metastasis was detected by the model."
QC_FAILED_FINDING = (
    "This scan did not pass quality control, so the model's result is withheld; this is not a "
    "normal finding. The scan needs to be read without the model."
)
NOT_ASSESSED_FINDING = (
    "The model found no skeletal region in this scan, so it could not assess it; this is not a "
    "normal finding."
)
BENIGN_NOTE = (
    "The model judges these hot spots benign and leaves them out of the BSI. This is the "
    "model's judgement, not a diagnosis: the physician decides whether each one is benign."
)
# the order seed 002's template names sites in; other report names follow, "other" last
SITE_ORDER = ("skull", "spine", "chest/ribs", "humerus", "pelvis", "femur")
OTHER_SITE = "other"


def _template() -> Template:
    text = (resources.files("bsi_d2") / "report" / "templates" / "page.html").read_text("utf-8")
    return Template(text)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bsi_d2")
    except PackageNotFoundError:  # an uninstalled checkout still renders its pages
        return ""


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def render_page(title: str, subtitle: str, body: str) -> str:
    """The page shell around ``body`` (already escaped HTML); title and subtitle are escaped."""
    return _template().substitute(
        title=esc(title),
        subtitle=esc(subtitle),
        body=body,
        aid_line=esc(AID_LINE),
        version=esc(_version()),
    )


def fmt_num(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "&mdash;" if value is None else f"{float(value):.{digits}f}{suffix}"


def _pct(fraction: float | None, digits: int = 2) -> str:
    return "&mdash;" if fraction is None else f"{100 * float(fraction):.{digits}f}&nbsp;%"


def html_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    numeric_from: int = 1,
    row_classes: Sequence[str] | None = None,
) -> str:
    """An HTML table; cells are already-escaped HTML, columns from ``numeric_from`` align right."""
    head = "".join(
        f'<th class="num">{esc(h)}</th>' if i >= numeric_from else f"<th>{esc(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = []
    for r, row in enumerate(rows):
        cls = f' class="{row_classes[r]}"' if row_classes and row_classes[r] else ""
        cells = "".join(
            f'<td class="num">{c}</td>' if i >= numeric_from else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# -- one scan ----------------------------------------------------------------------------------


def lesion_sites(record: dict, taxonomy: Taxonomy | None = None) -> list[str]:
    """Report names of the sites the lesion model found lesions in (the record's ``sites``:
    every region holding counted lesion pixels, "other" for lesions outside every region), in
    seed 002's order. Decoy uptake is never a site."""
    taxonomy = taxonomy or _default_taxonomy()
    decoys = {name for c in taxonomy.of_kind("decoy") for name in (c.report, c.name)}
    sites = {s for s in record.get("sites") or [] if s not in decoys}
    known = [s for s in SITE_ORDER if s in sites]
    rest = sorted(s for s in sites if s not in SITE_ORDER and s != OTHER_SITE)
    return known + rest + ([OTHER_SITE] if OTHER_SITE in sites else [])


@lru_cache(maxsize=1)
def _default_taxonomy() -> Taxonomy:
    return load_taxonomy()


def lesion_number(record: dict) -> int | None:
    """Lesions found (seen in both views counted once unless matching was off); None for a
    scan without a result."""
    count = record.get("lesion_count")
    return None if count is None else int(count)


def _join(words: Sequence[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _by(record: dict) -> str:
    """Who found the lesions: the model, or the annotations ``bsi-d2 bsi`` read."""
    engine = (record.get("model") or {}).get("engine")
    return "marked in the annotations" if engine == ENGINE_NAME else "detected by the model"


def finding_text(record: dict, taxonomy: Taxonomy | None = None) -> tuple[str, str]:
    """(css class, sentence) summarising the model's finding in seed 002's report wording."""
    if record.get("status") == "qc_failed":
        return "failed", QC_FAILED_FINDING
    if record.get("status") == "not_assessed":
        return "failed", NOT_ASSESSED_FINDING
    if record.get("status") != "ok":
        return "failed", "The analysis of this scan failed; the model gives no result for it."
    if not record.get("abnormal"):
        return "normal", NORMAL_FINDING.replace("detected by the model", _by(record))
    n = lesion_number(record)
    what = "A single lesion" if n == 1 else f"Multiple lesions ({n})" if n > 1 else "Lesions"
    verb = "was" if n == 1 else "were"
    sites = lesion_sites(record, taxonomy)
    named = ["other parts" if s == OTHER_SITE else s for s in sites]
    where = f" in the {_join(named)}" if sites else ""
    return "abnormal", (
        f"{what} with abnormal uptake {verb} {_by(record)}{where}. "
        "Each finding needs confirmation by the reading physician."
    )


def _region_rows(record: dict) -> tuple[list[list[str]], list[str]]:
    rows, classes = [], []
    for r in record.get("regions") or []:
        label = esc(str(r.get("bone") or r.get("report_name") or "").replace("_", " "))
        assessed = r.get("assessed") or ""
        if r.get("involved"):
            label = f'<span class="flag">{label}</span>'
        if assessed == "not assessed":
            rows.append([label, "not assessed", "", "", fmt_num(r.get("weight"), 2, "&nbsp;%"), ""])
            classes.append("muted")
            continue
        note = ' <span class="muted">(one view)</span>' if assessed == "one view" else ""
        rows.append(
            [
                label + note,
                _pct(r.get("involvement_anterior")),
                _pct(r.get("involvement_posterior")),
                _pct(r.get("involvement")),
                fmt_num(r.get("weight"), 2, "&nbsp;%"),
                fmt_num(r.get("bsi"), 2, "&nbsp;%"),
            ]
        )
        classes.append("")
    rows.append(
        [
            "Total (BSI)",
            "",
            "",
            "",
            fmt_num(record.get("bsi_coverage"), 2, "&nbsp;%"),
            fmt_num(record.get("bsi"), 2, "&nbsp;%"),
        ]
    )
    classes.append("total")
    return rows, classes


def coverage_text(record: dict) -> str:
    """The sentence that says how much of the skeleton the BSI speaks for."""
    regions = record.get("regions") or []
    missing = [str(r.get("bone")).replace("_", " ") for r in regions if r.get("assessed") ==
               "not assessed"]  # fmt: skip
    one_view = [str(r.get("bone")).replace("_", " ") for r in regions if r.get("assessed") ==
                "one view"]  # fmt: skip
    text = (
        f"Regions assessed cover {float(record.get('bsi_coverage') or 0):.1f} % of skeletal "
        "mass; the rest of the skeleton (distal arms and legs, hands, feet) is not part of the "
        "index."
    )
    if missing:
        text += f" Not found in either view, so not assessed: {', '.join(missing)}."
    if one_view:
        text += f" Found in one view only, assessed from it: {', '.join(one_view)}."
    return text


def _bstbi_text(record: dict) -> str:
    if record.get("bstbi") is None:
        notes = "; ".join(record.get("bstbi_notes") or []) or "not computed"
        return esc(notes)
    return fmt_num(record.get("bstbi"), 4) + " (mean of the views)"


def scan_report_html(record: dict, taxonomy: Taxonomy | None = None) -> str:
    """The scan report page for one bsi.json record (see :func:`write_scan_report`)."""
    key = record.get("key") or "unnamed scan"
    status = record.get("status", "failed")
    css, sentence = finding_text(record, taxonomy)
    parts = [f'<div class="finding {css}"><p><strong>{esc(sentence)}</strong></p>']
    if status != "ok":
        parts.append(
            f"<p>Reason: {esc(record.get('error') or 'not recorded')}</p>"
            "<p>This scan needs to be read without the model.</p></div>"
        )
        parts.append(_model_section(record))
        subtitle = {"not_assessed": "Not assessed", "qc_failed": "Failed quality control"}.get(
            status, "Analysis failed"
        )
        return render_page(f"Bone scan report: {key}", subtitle, "\n".join(parts))
    if record.get("abnormal"):
        parts.append(
            "<p>Possible bone metastases at the sites named, for the physician to confirm or "
            "reject; the rest of the skeleton is to be checked by the physician as well.</p>"
        )
    benign = benign_text(record)
    if benign is not None:
        parts.append(f"<p>Hot spots the model judges benign: {esc(benign)}. {esc(BENIGN_NOTE)}</p>")
    parts.append("</div>")

    facts = [
        ("Bone Scan Index (BSI)", fmt_num(record.get("bsi"), 2, "&nbsp;% of skeletal mass")),
        ("Tumour burden index (BSTBI)", _bstbi_text(record)),
        ("BSTBI anterior", fmt_num(record.get("bstbi_anterior"), 4)),
        ("BSTBI posterior", fmt_num(record.get("bstbi_posterior"), 4)),
        ("Lesions", _lesion_count_text(record)),
        ("Burden group", esc(record.get("burden_group") or "none")),
    ]
    sites = lesion_sites(record, taxonomy)
    if sites:
        facts.append(("Sites", esc(", ".join(sites))))
    if benign is not None:
        facts.append(("Hot spots judged benign", esc(f"{benign}, not counted in the BSI")))
    for label, name in (("Patient (pseudonym)", "patient_key"), ("Study (pseudonym)", "study_key")):
        if record.get(name):
            facts.append((label, esc(record[name])))
    if record.get("study_date"):
        facts.append(
            ("Study date", esc(f"{record['study_date']} ({record.get('study_date_kind')})"))
        )
    if record.get("lesions_in_decoys"):
        facts.append(
            (
                f"Uptake in {_decoy_names(taxonomy)}",
                esc(f"{record['lesions_in_decoys']} (not counted)"),
            )
        )
    if record.get("bstbi") is not None and record.get("bstbi_notes"):
        facts.append(("BSTBI notes", esc("; ".join(record["bstbi_notes"]))))
    qc = record.get("qc") or {}
    if qc:
        warnings = "; ".join(qc.get("warnings") or [])
        facts.append(
            (
                "Quality control",
                esc(qc.get("status", "")) + (f" ({esc(warnings)})" if warnings else ""),
            )
        )
    facts_html = "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in facts)

    figure = ""
    if record.get("overlay"):
        figure = (
            f'<div class="figure"><img src="{esc(quote(str(record["overlay"])))}" '
            f'alt="regions and lesions over the scan" width="512">'
            '<div class="caption">Anterior view left, posterior view right. Coloured areas: '
            "skeletal regions found by the model; outlined: lesions.</div></div>"
        )
    side = [f'<h2>Summary</h2><dl class="facts">{facts_html}</dl>']
    rows, classes = _region_rows(record)
    side.append("<h2>Per region</h2>")
    side.append(
        html_table(
            ["Region", "Anterior", "Posterior", "Combined", "Weight", "BSI"],
            rows,
            row_classes=classes,
        )
    )
    side.append(f'<p class="coverage">{esc(coverage_text(record))}</p>')
    side.append(
        '<p class="muted">Involvement = lesion area / region area per view, views combined '
        f"({esc(record.get('combine') or 'mean')}); weight = the region's share of total skeletal "
        "mass. A lesion seen in both views is one lesion.</p>"
    )
    side.append("<h2>Lesion pixels not counted in the BSI</h2>")
    side.append(
        html_table(
            ["Where", "Pixels"],
            [
                [
                    "Outside every skeletal region",
                    esc(int(record.get("lesion_pixels_outside") or 0)),
                ],
                [
                    "Inside kidney / other decoy regions",
                    esc(int(record.get("lesion_pixels_in_decoys") or 0)),
                ],
            ],
        )
    )
    parts.append(f'<div class="cols">{figure}<div class="side">{"".join(side)}</div></div>')
    parts.append(_model_section(record))
    by = _by(record)
    if record.get("abnormal"):
        subtitle = f"Abnormal uptake {by.replace('detected', 'flagged')}"
    else:
        subtitle = f"No abnormal uptake {by}"
    return render_page(f"Bone scan report: {key}", subtitle, "\n".join(parts))


def benign_summary(record: dict) -> dict | None:
    """The record's ``benign_hot_spots`` where it holds at least one hot spot, else None."""
    block = record.get("benign_hot_spots")
    if not isinstance(block, dict) or not int(block.get("count") or 0):
        return None
    return block


def benign_text(record: dict) -> str | None:
    """ "3 (spine 2, pelvis 1)": how many hot spots the model judges benign, and where (in
    seed 002's site order); None where it judges none benign."""
    block = benign_summary(record)
    if block is None:
        return None
    by_site = {str(k): int(v) for k, v in (block.get("by_site") or {}).items()}
    known = [s for s in SITE_ORDER if s in by_site]
    rest = sorted(s for s in by_site if s not in SITE_ORDER and s != OTHER_SITE)
    order = known + rest + ([OTHER_SITE] if OTHER_SITE in by_site else [])
    where = ", ".join(f"{s} {by_site[s]}" for s in order)
    return f"{int(block['count'])} ({where})" if where else str(int(block["count"]))


def _decoy_names(taxonomy: Taxonomy | None) -> str:
    """ "kidney / bladder": the report names of the taxonomy's decoy classes."""
    taxonomy = taxonomy or _default_taxonomy()
    names = dict.fromkeys(c.report for c in taxonomy.of_kind("decoy"))
    return " / ".join(names) or "decoys"


def _lesion_count_text(record: dict) -> str:
    count = int(record.get("lesion_count") or 0)
    instances = record.get("lesion_instances")
    how = "matched across views" if record.get("views_matched") else "views counted apart"
    if instances is None:
        return esc(str(count))
    return esc(f"{count} ({instances} outlined in the views, {how})")


def _model_section(record: dict) -> str:
    model = record.get("model") or {}
    rows = [
        ["Pseudonymous key", esc(record.get("key"))],
        ["Engine", esc(model.get("engine"))],
        ["Config", esc(model.get("config"))],
        ["Weights", esc(model.get("weights"))],
        ["Input files", esc(len(record.get("source") or []))],
    ]
    return "<h2>Model and input</h2>" + html_table(["Item", "Value"], rows, numeric_from=99)


def write_scan_report(scan_dir: Path, record: dict, taxonomy: Taxonomy | None = None) -> Path:
    """Write ``scan_dir/report.html`` for one scan's record (the bsi.json schema); returns it.

    The overlay is linked by the record's relative ``overlay`` path, not embedded.
    """
    scan_dir = Path(scan_dir)
    scan_dir.mkdir(parents=True, exist_ok=True)
    path = scan_dir / "report.html"
    path.write_text(scan_report_html(record, taxonomy), encoding="utf-8")
    return path


# -- the batch index ----------------------------------------------------------------------------


def _report_link(record: dict) -> str:
    target = record.get("report") or f"{record.get('key')}/report.html"
    return f'<a href="{esc(quote(str(target)))}">{esc(record.get("key"))}</a>'


INDEX_PAGE_ROWS = 500  # rows per index page; a larger batch's index is split into pages
INDEX_HEADERS = ["Key", "Patient", "Model finding", "Sites", "Burden", "BSI (%)", "BSTBI",
                 "Lesions"]  # fmt: skip
FAILED_HEADERS = ["Key", "Status", "Reason"]


def _index_row(r: dict, taxonomy: Taxonomy | None) -> list[str]:
    finding = (
        '<span class="flag">abnormal uptake flagged</span>'
        if r.get("abnormal")
        else "no abnormal uptake detected"
    )
    sites = ", ".join(lesion_sites(r, taxonomy)) if r.get("abnormal") else ""
    return [
        _report_link(r),
        esc(r.get("patient_key")) or '<span class="muted">&mdash;</span>',
        finding,
        esc(sites) or '<span class="muted">&mdash;</span>',
        esc(r.get("burden_group") or "none"),
        fmt_num(r.get("bsi"), 2),
        fmt_num(r.get("bstbi"), 4),
        esc(lesion_number(r)),
    ]


def _failed_row(r: dict) -> list[str]:
    return [
        esc(r.get("key")),
        f'<span class="status-failed">{esc(r.get("status"))}</span>',
        esc(r.get("error") or "not recorded"),
    ]


def _index_subtitle(ok: int, flagged: int, failed: int) -> str:
    return (
        f"{ok} scan(s) analysed, {flagged} with abnormal uptake flagged, "
        f"{failed} failed or not assessed"
    )


def index_page_name(page: int) -> str:
    """File name of index page ``page`` (1-based): index.html, index-2.html, ..."""
    return "index.html" if page == 1 else f"index-{page}.html"


def _page_nav(page: int, pages: int) -> str:
    """First / previous / next / last links; plain links, no JavaScript."""
    if pages <= 1:
        return ""

    def link(target: int, text: str) -> str:
        if target < 1 or target > pages or target == page:
            return f'<span class="muted">{text}</span>'
        return f'<a href="{index_page_name(target)}">{text}</a>'

    return (
        f'<p class="nav">{link(1, "&laquo; first")} &middot; {link(page - 1, "&lsaquo; previous")}'
        f" &middot; page {page} of {pages} &middot; {link(page + 1, 'next &rsaquo;')} &middot; "
        f"{link(pages, 'last &raquo;')}</p>"
    )


def _index_body(
    ok_rows: list[list[str]], failed_rows: list[list[str]], any_ok: bool, nav: str = ""
) -> str:
    parts = [nav, "<h2>Scans</h2>"] if nav else ["<h2>Scans</h2>"]
    if ok_rows:
        parts.append(html_table(INDEX_HEADERS, ok_rows, numeric_from=5))
    elif not any_ok:
        parts.append('<p class="muted">No scan was analysed.</p>')
    if failed_rows:
        parts.append("<h2>Failed or not assessed: no result, to be read without the model</h2>")
        parts.append(html_table(FAILED_HEADERS, failed_rows, numeric_from=99))
    if nav:
        parts.append(nav)
    return "\n".join(parts)


def index_html(records: Sequence[dict], taxonomy: Taxonomy | None = None) -> str:
    """The batch overview page: one row per analysed scan, failed or skipped inputs apart."""
    ok = [r for r in records if r.get("status") == "ok"]
    failed = [r for r in records if r.get("status") != "ok"]
    flagged = sum(1 for r in ok if r.get("abnormal"))
    body = _index_body(
        [_index_row(r, taxonomy) for r in ok], [_failed_row(r) for r in failed], bool(ok)
    )
    return render_page(
        "Bone scan batch report", _index_subtitle(len(ok), flagged, len(failed)), body
    )


def write_index_pages(
    out_dir: Path,
    ok_records: Iterable[dict],
    other_records: Iterable[dict],
    counts: tuple[int, int, int],
    taxonomy: Taxonomy | None = None,
    page_rows: int = INDEX_PAGE_ROWS,
) -> list[Path]:
    """The batch overview as static pages of ``page_rows`` rows (analysed scans, then the
    failed or not assessed), linked first / previous / next / last: index.html, index-2.html...
    Up to ``page_rows`` scans it is exactly :func:`index_html`'s page. Records are streamed and
    each page written when full, so memory does not grow with the batch; ``counts`` are (ok,
    flagged, other) over all records, as the subtitle says them. Written atomically; pages of
    an earlier, longer index are removed."""
    from bsi_d2.io.files import atomic_write_text

    out_dir = Path(out_dir)
    ok_total, flagged, other_total = counts
    page_rows = max(1, page_rows)
    pages = max(1, -(-(ok_total + other_total) // page_rows))
    subtitle = _index_subtitle(ok_total, flagged, other_total)
    written: list[Path] = []
    ok_rows: list[list[str]] = []
    failed_rows: list[list[str]] = []

    def flush() -> None:
        page = len(written) + 1
        nav = _page_nav(page, pages)
        body = _index_body(ok_rows, failed_rows, bool(ok_total), nav)
        title = "Bone scan batch report" + (f" (page {page} of {pages})" if pages > 1 else "")
        path = out_dir / index_page_name(page)
        written.append(atomic_write_text(path, render_page(title, subtitle, body)))
        ok_rows.clear()
        failed_rows.clear()

    for r in ok_records:
        ok_rows.append(_index_row(r, taxonomy))
        if len(ok_rows) == page_rows:
            flush()
    for r in other_records:
        failed_rows.append(_failed_row(r))
        if len(ok_rows) + len(failed_rows) == page_rows:
            flush()
    if ok_rows or failed_rows or not written:
        flush()
    keep = {p.name for p in written}
    for stale in out_dir.glob("index-*.html"):
        if stale.name not in keep:
            stale.unlink(missing_ok=True)
    return written


def write_index(out_dir: Path, records: list[dict], taxonomy: Taxonomy | None = None) -> Path:
    """Write ``out_dir/index.html`` linking each scan's ``<key>/report.html`` (or its record's
    ``report`` path); returns it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "index.html"
    path.write_text(index_html(records, taxonomy), encoding="utf-8")
    return path


# -- evaluation -------------------------------------------------------------------------------


def _metric(value: float | None, digits: int = 2) -> str:
    return _pct(value, digits)


def _block(title: str, content: str) -> str:
    return f'<div class="block"><h2>{esc(title)}</h2>{content}</div>'


def _summary_blocks(evaluation: dict) -> list[str]:
    blocks = []
    for iou_type, summary in (evaluation.get("coco") or {}).items():
        label = "mask" if iou_type == "segm" else "box"
        rows = [[k, _metric(summary.get(k))] for k in ("AP", "AP50", "AP75") if k in summary]
        blocks.append(_block(f"COCO {label} AP", html_table(["Measure", "Value"], rows)))
    lesion = evaluation.get("lesion")
    if lesion:
        n = lesion.get("n_images_with_lesions", "")
        blocks.append(
            _block(
                "Lesion Dice",
                html_table(
                    ["Measure", "Value"],
                    [
                        ["Pooled over all images", _metric(lesion.get("dice_pooled"))],
                        [
                            f"Mean per image ({esc(n)} with lesions)",
                            _metric(lesion.get("dice_mean_per_image")),
                        ],
                    ],
                ),
            )
        )
    scan = evaluation.get("scan")
    if scan:
        blocks.append(
            _block(
                "Per scan: metastasis yes / no",
                html_table(
                    ["Measure", "Value"],
                    [
                        ["Sensitivity", _metric(scan.get("sensitivity"))],
                        ["Specificity", _metric(scan.get("specificity"))],
                        ["Accuracy", _metric(scan.get("accuracy"))],
                        ["AUC (max lesion score)", fmt_num(scan.get("auc"), 3)],
                        [
                            "Positive / negative scans",
                            f"{esc(scan.get('n_pos'))} / {esc(scan.get('n_neg'))}",
                        ],
                    ],
                ),
            )
        )
    burden = evaluation.get("burden")
    if burden:
        blocks.append(
            _block(
                "Per scan: lesion count and burden group",
                html_table(
                    ["Measure", "Value"],
                    [
                        [
                            "Count error, mean absolute",
                            fmt_num(burden.get("count_mean_absolute_error")),
                        ],
                        [
                            "Count error, mean (predicted - truth)",
                            fmt_num(burden.get("count_mean_signed_error")),
                        ],
                        ["Exact count", _metric(burden.get("count_exact_agreement"))],
                        ["Burden group agreement", _metric(burden.get("group_agreement"))],
                        ["Burden group Cohen's kappa", fmt_num(burden.get("group_kappa"), 3)],
                        ["Scans", esc(burden.get("n"))],
                    ],
                ),
            )
        )
    return blocks


def _pixel_block(evaluation: dict) -> str:
    pixel = evaluation.get("pixel")
    if not pixel:
        return ""
    rows = pixel_table_rows(pixel)
    averages = {"Average", "Average (w/o decoys)", "Skeleton (pooled)"}
    table = html_table(
        ["Category", "Precision", "Sensitivity", "F1"],
        [[esc(r[0]), *(esc(c) + ("&nbsp;%" if c != "-" else "") for c in r[1:])] for r in rows],
        row_classes=["avg" if r[0] in averages else "" for r in rows],
    )
    note = (
        '<p class="muted narrow">TP, FP and FN summed over all images before the ratios; '
        "averages are means over categories, the skeleton row pools all region classes; "
        f"predictions scoring at least {esc(evaluation.get('score_thresh', ''))}.</p>"
    )
    return _block("Pixel-wise metrics per category", table + note)


def _per_class_ap_block(evaluation: dict) -> str:
    coco = evaluation.get("coco") or {}
    names: list[str] = []
    for summary in coco.values():
        names += [n for n in summary.get("per_class") or {} if n not in names]
    if not names:
        return ""
    types = list(coco)
    headers = ["Category", *("Mask AP" if t == "segm" else "Box AP" for t in types)]
    rows = [
        [esc(n), *(_metric((coco[t].get("per_class") or {}).get(n)) for t in types)] for n in names
    ]
    return _block("COCO AP per category", html_table(headers, rows))


def _detection_block(evaluation: dict, froc_plot: str | None) -> str:
    detection = evaluation.get("lesion_detection")
    if not detection:
        return ""  # an evaluation.json from before lesion-by-lesion scoring
    at_fp = detection.get("sensitivity_at_fp") or {}
    thresh = detection.get("operating_thresh", evaluation.get("score_thresh", ""))
    rows = [
        [f"Sensitivity at {esc(rate)} FP per scan", _metric(at_fp.get(rate))]
        for rate in ("0.25", "0.5", "1", "2", "4")
    ]
    rows += [
        ["FROC score (mean of the five)", fmt_num(detection.get("froc_score"), 3)],
        [f"Sensitivity at score &ge; {esc(thresh)}", _metric(detection.get("sensitivity"))],
        [f"Precision at score &ge; {esc(thresh)}", _metric(detection.get("precision"))],
        [f"FP per scan at score &ge; {esc(thresh)}", fmt_num(detection.get("fp_per_scan"))],
        ["Count error, mean absolute", fmt_num(detection.get("count_mean_absolute_error"))],
        [
            "Lesions predicted / true",
            f"{esc(detection.get('n_predicted'))} / {esc(detection.get('n_lesions'))}",
        ],
        ["Scans", esc(detection.get("n_scans"))],
    ]
    note = f'<p class="muted narrow">Matching: {esc(detection.get("matching_rule", ""))}.</p>'
    image = (
        f'<div class="plots"><img src="{esc(quote(froc_plot))}" alt="lesion FROC curve"></div>'
        if froc_plot
        else ""
    )
    return _block("Lesion detection", html_table(["Measure", "Value"], rows) + note + image)


def evaluation_html(
    evaluation: dict,
    agreement: dict | None,
    plots: tuple[str, str] | None,
    froc_plot: str | None = None,
) -> str:
    """The evaluation page; ``plots`` are the relative names of the two BSI plots, ``froc_plot``
    that of the lesion FROC curve."""
    parts = [f'<div class="cols">{"".join(_summary_blocks(evaluation))}</div>']
    parts.append(
        f'<div class="cols">{_pixel_block(evaluation)}{_per_class_ap_block(evaluation)}</div>'
    )
    detection = _detection_block(evaluation, froc_plot)
    if detection:
        parts.append(f'<div class="cols">{detection}</div>')
    failed = evaluation.get("failed") or []
    if failed:
        rows = [[esc(f.get("file_name")), esc(f.get("error"))] for f in failed]
        parts.append(
            _block(
                f"Images not scored ({len(failed)})",
                html_table(["File", "Reason"], rows, numeric_from=99),
            )
        )
    if agreement and plots:
        numbers = html_table(
            ["Measure", "Value"],
            [
                ["Pairs", esc(agreement["n"])],
                ["Pearson r", fmt_num(agreement.get("pearson_r"), 3)],
                ["Spearman rho", fmt_num(agreement.get("spearman_rho"), 3)],
                [
                    "Mean difference (predicted - reference)",
                    fmt_num(agreement.get("mean_difference"), 3, "&nbsp;%"),
                ],
                [
                    "Limits of agreement (&plusmn; 1.96 SD)",
                    f"{fmt_num(agreement.get('loa_lower'), 3)} .. "
                    f"{fmt_num(agreement.get('loa_upper'), 3)}",
                ],
            ],
        )
        images = "".join(
            f'<img src="{esc(quote(p))}" alt="{esc(alt)}">'
            for p, alt in zip(
                plots, ("predicted vs reference BSI", "Bland-Altman plot"), strict=True
            )
        )
        parts.append(
            _block(
                "BSI agreement with the reference", numbers + f'<div class="plots">{images}</div>'
            )
        )
    else:
        parts.append(
            _block(
                "BSI agreement with the reference",
                '<p class="muted">No reference BSI values were given.</p>',
            )
        )
    return render_page(
        "Model evaluation",
        f"{evaluation.get('n_images', '?')} image(s), taxonomy {evaluation.get('taxonomy', '?')}",
        "\n".join(parts),
    )


def write_evaluation_page(
    out_dir: Path, evaluation: dict, bsi_pairs: Sequence[tuple[str, float, float]] = ()
) -> Path:
    """Write ``out_dir/evaluation.html`` (and the BSI plots when pairs are given, the lesion FROC
    curve when the evaluation has ground-truth lesions); returns it.

    ``evaluation`` is :func:`bsi_d2.evaluation.evaluate_dataset`'s dict; ``bsi_pairs`` are
    (key, predicted BSI, reference BSI).
    """
    from bsi_d2.evaluation.agreement import bsi_agreement
    from bsi_d2.report.plots import plot_bsi_agreement, plot_froc

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    agreement = plots = None
    if bsi_pairs:
        agreement = bsi_agreement([p for _, p, _ in bsi_pairs], [t for _, _, t in bsi_pairs])
        scatter, ba = plot_bsi_agreement(bsi_pairs, out_dir)
        plots = (scatter.name, ba.name)
    detection = evaluation.get("lesion_detection") or {}
    froc_plot = None
    if detection.get("n_lesions") and detection.get("froc"):
        froc_plot = plot_froc(detection, out_dir).name
    path = out_dir / "evaluation.html"
    path.write_text(evaluation_html(evaluation, agreement, plots, froc_plot), encoding="utf-8")
    return path
