"""The agreement page of ``bsi-d2 evaluate --reference``: one self-contained HTML file (plots
inline as base64 PNG) with a BSI scatter, a Bland-Altman plot, the ROC curve of ``abnormal``,
the statistics with their CIs, and the scans not assessed or not matched."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bsi_d2.report.html import esc, fmt_num, html_table, render_page
from bsi_d2.report.plots import BLUE, draw_bsi_scatter, draw_limit_line, pyplot

PAGE_NAME = "agreement.html"
LISTED = 100  # rows of each scan list on the page; agreement.json has them all
VERMILION, GREY = "#D55E00", "0.35"


def _data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _render(draw, size: tuple[float, float]) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=size, dpi=100)
    try:
        draw(ax)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        return _data_uri(fig)
    finally:
        plt.close(fig)


def scatter_png(reference: np.ndarray, predicted: np.ndarray, bsi: dict) -> str:
    """Predicted against reference BSI with the identity line, as a data URI."""
    corr = bsi["correlation"]

    def draw(ax) -> None:
        draw_bsi_scatter(
            ax, reference, predicted, bsi["n"], corr["pearson_r"], corr["spearman_rho"]
        )

    return _render(draw, (4.5, 4.5))


def bland_altman_png(reference: np.ndarray, predicted: np.ndarray, ba: dict) -> str:
    """Difference against mean, with the bias and limits of agreement as lines and their CIs
    as bands, as a data URI."""

    def draw(ax) -> None:
        ax.scatter(
            (predicted + reference) / 2,
            predicted - reference,
            s=22,
            color=BLUE,
            alpha=0.85,
            edgecolors="none",
        )
        ax.axhline(0, color="0.8", linewidth=0.8)
        lines = [("bias", "bias", VERMILION, "-")]
        if ba["sd"] is not None:
            lines += [("loa_upper", "+1.96 SD", GREY, "--"), ("loa_lower", "-1.96 SD", GREY, "--")]
        for name, label, color, style in lines:
            y = ba[name]
            draw_limit_line(ax, y, f"{label} {y:.3f}", color, style)
            low, high = ba[f"{name}_ci_low"], ba[f"{name}_ci_high"]
            if low is not None and high is not None:
                ax.axhspan(low, high, color=color, alpha=0.12, linewidth=0)
        ax.set_xlabel("mean of predicted and reference BSI (%)")
        ax.set_ylabel("predicted - reference BSI (%)")
        ax.set_title(
            f"Bland-Altman, n = {ba['n']} (limits: bias ± 1.96 SD; bands: their CIs)", fontsize=9
        )

    return _render(draw, (6, 4.5))


def roc_png(abnormal: dict, score: str) -> str:
    """The ROC curve of the predicted ``score`` against the reference's abnormal, as a data URI."""
    roc = abnormal["roc"]

    def draw(ax) -> None:
        ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="chance")
        ax.plot(roc["fpr"], roc["tpr"], color=BLUE, linewidth=1.5, label=f"ranked by {score}")
        if abnormal["sensitivity"] is not None and abnormal["specificity"] is not None:
            ax.scatter(
                [1 - abnormal["specificity"]],
                [abnormal["sensitivity"]],
                s=30,
                color=VERMILION,
                zorder=3,
                label="the model's call",
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_aspect("equal")
        ax.set_xlabel("1 - specificity")
        ax.set_ylabel("sensitivity")
        ax.set_title(
            f"Abnormal, n = {abnormal['auc_n']}: AUC {_fmt(abnormal['auc'])} "
            f"[{_fmt(abnormal['auc_ci_low'])}, {_fmt(abnormal['auc_ci_high'])}]",
            fontsize=9,
        )
        ax.legend(loc="lower right", fontsize=8, frameon=False)

    return _render(draw, (4.5, 4.5))


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _row(label: str, section: dict, name: str, digits: int = 3, ci: str | None = None) -> list:
    """[label, estimate, CI, n]; ``ci`` names the CI's keys when they are not ``name``'s."""
    low, high = section.get(f"{ci or name}_ci_low"), section.get(f"{ci or name}_ci_high")
    interval = (
        "&mdash;" if low is None or high is None else f"{low:.{digits}f} .. {high:.{digits}f}"
    )
    return [esc(label), fmt_num(section.get(name), digits), interval, esc(section.get("n"))]


def statistics_rows(agreement: dict) -> list[list[str]]:
    """The rows of the statistics table, for the measures the reference has."""
    rows = []
    bsi = agreement.get("bsi")
    if bsi:
        corr, icc, ba = bsi["correlation"], bsi["icc"], bsi["bland_altman"]
        rows += [
            _row("BSI: Pearson r (Fisher z CI)", corr, "pearson_r", ci="pearson_fisher"),
            _row("BSI: Pearson r (bootstrap CI)", corr, "pearson_r", ci="pearson_bootstrap"),
            _row("BSI: Spearman rho (bootstrap CI)", corr, "spearman_rho", ci="spearman_bootstrap"),
            _row("BSI: ICC(2,1), absolute agreement", icc, "icc2_1"),
            _row("BSI: ICC(3,1), consistency", icc, "icc3_1"),
            _row("BSI: bias, predicted - reference (%)", ba, "bias"),
            _row("BSI: lower limit of agreement (%)", ba, "loa_lower"),
            _row("BSI: upper limit of agreement (%)", ba, "loa_upper"),
            _row(f"BSI: proportional bias, slope (p {_fmt(ba['slope_p'])})", ba, "slope"),
        ]
    counts = agreement.get("lesion_count")
    if counts:
        rows += [
            _row("Lesion count: mean absolute error", counts, "mean_absolute_error", 2),
            _row("Lesion count: mean error, predicted - reference", counts, "mean_signed_error", 2),
            _row("Lesion count: exact agreement", counts, "exact_agreement"),
            _row(
                "Lesion count: Spearman rho (bootstrap CI)",
                counts,
                "spearman_rho",
                ci="spearman_bootstrap",
            ),  # fmt: skip
            _row("Lesion count: ICC(2,1)", counts, "icc2_1"),
            _row("Lesion count: ICC(3,1)", counts, "icc3_1"),
        ]
    groups = agreement.get("burden_group")
    if groups:
        rows += [
            _row("Burden group: agreement", groups, "agreement"),
            _row("Burden group: Cohen's kappa (asymptotic CI)", groups, "kappa"),
        ]
    abnormal = agreement.get("abnormal")
    if abnormal:
        rows += [
            _row(f"Abnormal: {name} (Wilson CI)", abnormal, key)
            for name, key in (
                ("sensitivity", "sensitivity"),
                ("specificity", "specificity"),
                ("accuracy", "accuracy"),
                ("positive predictive value", "ppv"),
                ("negative predictive value", "npv"),
            )
        ]
        auc = _row("Abnormal: AUC (DeLong CI)", abnormal, "auc")
        auc[3] = esc(abnormal.get("auc_n"))
        rows.append(auc)
    return rows


def _scan_list(title: str, entries: Sequence[dict], columns: Sequence[str]) -> str:
    if not entries:
        return ""
    rows = [[esc(entry.get(c)) for c in columns] for entry in entries[:LISTED]]
    more = len(entries) - LISTED
    note = f'<p class="muted">and {more} more; see agreement.json.</p>' if more > 0 else ""
    return (
        f"<h2>{esc(title)} ({len(entries)})</h2>"
        + html_table(list(columns), rows, numeric_from=len(columns))
        + note
    )


def _figures(agreement: dict, rows: Sequence[dict]) -> list[tuple[str, str]]:
    """(data URI, alt text) of each plot the data allow."""
    figures = []
    bsi = agreement.get("bsi")
    pairs = [
        (r["reference_bsi"], r["predicted_bsi"])
        for r in rows
        if r.get("reference_bsi") is not None and r.get("predicted_bsi") is not None
    ]
    if bsi and bsi["n"] and pairs:
        reference = np.array([p[0] for p in pairs], dtype=np.float64)
        predicted = np.array([p[1] for p in pairs], dtype=np.float64)
        figures.append((scatter_png(reference, predicted, bsi), "predicted vs reference BSI"))
        figures.append(
            (bland_altman_png(reference, predicted, bsi["bland_altman"]), "Bland-Altman plot")
        )
    abnormal = agreement.get("abnormal")
    if abnormal and abnormal.get("roc"):
        score = (agreement.get("settings") or {}).get("abnormal_score", "score")
        figures.append((roc_png(abnormal, score), "ROC curve of abnormal"))
    return figures


def agreement_html(agreement: dict, rows: Sequence[dict]) -> str:
    """The page for ``agreement`` (:func:`bsi_d2.evaluation.reference.reference_agreement`'s
    dict, with ``inputs``) and its matched pairs' ``rows``."""
    settings = agreement.get("settings") or {}
    level = f"{100 * float(settings.get('confidence', 0.95)):g}\u00a0% CI"
    parts = []
    figures = _figures(agreement, rows)
    if figures:
        images = "".join(f'<img src="{uri}" alt="{esc(alt)}">' for uri, alt in figures)
        parts.append(f'<div class="plots">{images}</div>')
    parts.append("<h2>Statistics</h2>")
    parts.append(html_table(["Measure", "Estimate", level, "n"], statistics_rows(agreement)))
    parts.append(
        '<p class="muted narrow">Only scans the model assessed (status ok) are compared; a scan '
        "not assessed is listed below, never counted as 0 or normal. Bootstrap: "
        f"{esc(settings.get('bootstrap_resamples'))} percentile resamples of the pairs, seed "
        f"{esc(settings.get('seed'))}.</p>"
    )
    parts.append(
        _scan_list(
            "Not assessed by the model",
            agreement.get("not_assessed") or [],
            ("key", "study_key", "status", "reference_key", "reason"),
        )
    )
    parts.append(
        _scan_list(
            "Reference keys without a scan",
            agreement.get("unmatched_reference") or [],
            ("key", "line"),
        )
    )
    parts.append(
        _scan_list(
            "Scans without a reference row",
            agreement.get("unmatched_predictions") or [],
            ("key", "study_key", "status"),
        )
    )
    inputs = agreement.get("inputs") or {}
    subtitle = (
        f"{agreement.get('n_matched', 0)} of {agreement.get('n_scans', 0)} scan(s) matched to "
        f"{agreement.get('n_reference', 0)} reference row(s); {agreement.get('n_assessed', 0)} "
        f"assessed. Predictions {inputs.get('predictions', '?')}, reference "
        f"{inputs.get('reference', '?')}."
    )
    return render_page("Agreement with the reference", subtitle, "\n".join(parts))


def write_agreement_page(out_dir: str | Path, agreement: dict, rows: Sequence[dict]) -> Path:
    """Write ``out_dir/agreement.html`` (:func:`agreement_html`); returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / PAGE_NAME
    path.write_text(agreement_html(agreement, rows), encoding="utf-8")
    return path
