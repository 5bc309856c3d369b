"""Evaluation plots (matplotlib, Agg): BSI predicted vs reference scatter and Bland-Altman, and
the lesion-detection FROC curve."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bsi_d2.evaluation.agreement import bsi_agreement
from bsi_d2.evaluation.detection import FP_RATES, fp_rate_key

SCATTER_NAME = "bsi_scatter.png"
BLAND_ALTMAN_NAME = "bsi_bland_altman.png"
FROC_NAME = "lesion_froc.png"

BsiPair = tuple[str, float, float]  # (key, predicted, reference)
BLUE = "#0072B2"  # the points of every agreement plot


def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def draw_bsi_scatter(
    ax: Any,
    reference: np.ndarray,
    predicted: np.ndarray,
    n: int,
    pearson_r: float | None,
    spearman_rho: float | None,
) -> None:
    """Predicted against reference BSI with the identity line; r and rho in the title."""
    hi = float(max(predicted.max(), reference.max(), 0.1)) * 1.05
    ax.plot([0, hi], [0, hi], color="0.6", linestyle="--", linewidth=1, label="identity")
    ax.scatter(reference, predicted, s=22, color=BLUE, alpha=0.85, edgecolors="none")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("reference BSI (%)")
    ax.set_ylabel("predicted BSI (%)")
    ax.set_title(
        f"BSI, n = {n}: Pearson r = {_fmt(pearson_r)}, Spearman rho = {_fmt(spearman_rho)}",
        fontsize=9,
    )
    ax.legend(loc="upper left", fontsize=8, frameon=False)


def draw_limit_line(ax: Any, y: float, text: str, color: str, style: str) -> None:
    """A Bland-Altman line, labelled on the line at the right edge (the usual layout)."""
    ax.axhline(y, color=color, linestyle=style, linewidth=1.1)
    ax.annotate(
        text,
        xy=(1, y),
        xycoords=("axes fraction", "data"),
        xytext=(-4, 3),
        textcoords="offset points",
        ha="right",
        va="bottom",
        fontsize=8,
        color=color,
    )


def plot_bsi_agreement(pairs: Sequence[BsiPair], out_dir: str | Path) -> tuple[Path, Path]:
    """Write bsi_scatter.png (identity line, r and rho in the title) and bsi_bland_altman.png
    (mean difference, limits of agreement) to ``out_dir``; returns their paths."""
    if not pairs:
        raise ValueError("no (key, predicted, reference) BSI pairs to plot")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    predicted = np.array([p for _, p, _ in pairs], dtype=np.float64)
    reference = np.array([r for _, _, r in pairs], dtype=np.float64)
    stats = bsi_agreement(predicted, reference)
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    draw_bsi_scatter(
        ax, reference, predicted, stats["n"], stats["pearson_r"], stats["spearman_rho"]
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    scatter_path = out / SCATTER_NAME
    fig.savefig(scatter_path)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    means = (predicted + reference) / 2
    ax.scatter(means, predicted - reference, s=22, color="#0072B2", alpha=0.85, edgecolors="none")
    md = stats["mean_difference"]
    lines = [(md, f"mean {md:.3f}", "#D55E00", "-")]
    if stats["sd_difference"] is not None:
        lines += [
            (stats["loa_upper"], f"+1.96 SD {stats['loa_upper']:.3f}", "0.35", "--"),
            (stats["loa_lower"], f"-1.96 SD {stats['loa_lower']:.3f}", "0.35", "--"),
        ]
    ax.axhline(0, color="0.8", linewidth=0.8)
    for y, text, color, style in lines:
        draw_limit_line(ax, y, text, color, style)
    diffs = predicted - reference
    ys = [*diffs, *(y for y, *_ in lines), 0.0]
    span = max(max(ys) - min(ys), 1e-3)
    ax.set_ylim(min(ys) - 0.12 * span, max(ys) + 0.18 * span)
    ax.set_xlabel("mean of predicted and reference BSI (%)")
    ax.set_ylabel("predicted - reference BSI (%)")
    ax.set_title(f"Bland-Altman, n = {stats['n']} (limits: mean ± 1.96 SD)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    ba_path = out / BLAND_ALTMAN_NAME
    fig.savefig(ba_path)
    plt.close(fig)
    return scatter_path, ba_path


def plot_froc(detection: Mapping[str, Any], out_dir: str | Path) -> Path:
    """Write lesion_froc.png to ``out_dir``: sensitivity against mean false positives per scan
    (log axis), from ``evaluation["lesion_detection"]`` (:mod:`bsi_d2.evaluation.detection`),
    with its sensitivities at 0.25 .. 4 false positives per scan marked; returns its path."""
    curve = [
        (float(p["fp_per_scan"]), float(p["sensitivity"]))
        for p in detection.get("froc") or ()
        if p.get("fp_per_scan") is not None and p.get("sensitivity") is not None
    ]
    if not curve:
        raise ValueError("no FROC points with a sensitivity and a false-positive rate to plot")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # points run with falling threshold, so both coordinates only grow; a log axis has no 0,
    # so the points without false positives set where the curve starts at the left edge
    fp = np.array([c[0] for c in curve])
    sens = np.array([c[1] for c in curve])
    lo = min(FP_RATES[0] / 2, float(fp[fp > 0].min()) if (fp > 0).any() else 1.0)
    hi = max(FP_RATES[-1] * 2, float(fp.max()) * 1.2)
    start = float(sens[fp == 0].max()) if (fp == 0).any() else 0.0
    xs = [lo, *fp[fp > 0], hi]
    ys = [start, *sens[fp > 0], float(sens[-1])]
    at_fp = detection.get("sensitivity_at_fp") or {}
    marks = [(r, at_fp.get(fp_rate_key(r))) for r in FP_RATES]
    marks = [(r, v) for r, v in marks if v is not None]

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=100)
    ax.plot(xs, ys, color="#0072B2", linewidth=1.5, drawstyle="steps-post")
    for rate in FP_RATES:
        ax.axvline(rate, color="0.75", linestyle=":", linewidth=1)
    if marks:
        ax.scatter(
            [r for r, _ in marks],
            [v for _, v in marks],
            s=30,
            color="#D55E00",
            zorder=3,
            label="at 0.25, 0.5, 1, 2, 4 FP/scan",
        )
        ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    # label the CPM's rates plainly; log minor labels (2 x 10^-1 ...) would crowd them
    ax.set_xticks(FP_RATES, [fp_rate_key(r) for r in FP_RATES])
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("mean false positives per scan")
    ax.set_ylabel("lesion sensitivity")
    ax.set_title(
        f"Lesion FROC, {detection.get('n_lesions', '?')} lesions in "
        f"{detection.get('n_scans', '?')} scans: FROC score {_fmt(detection.get('froc_score'))}",
        fontsize=9,
    )
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    path = out / FROC_NAME
    fig.savefig(path)
    plt.close(fig)
    return path
