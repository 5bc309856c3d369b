"""BSI agreement plots: predicted vs reference scatter and Bland-Altman (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bsi_d2.evaluation.agreement import bsi_agreement

SCATTER_NAME = "bsi_scatter.png"
BLAND_ALTMAN_NAME = "bsi_bland_altman.png"

BsiPair = tuple[str, float, float]  # (key, predicted, reference)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


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
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    hi = float(max(predicted.max(), reference.max(), 0.1)) * 1.05
    ax.plot([0, hi], [0, hi], color="0.6", linestyle="--", linewidth=1, label="identity")
    ax.scatter(reference, predicted, s=22, color="#0072B2", alpha=0.85, edgecolors="none")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("reference BSI (%)")
    ax.set_ylabel("predicted BSI (%)")
    ax.set_title(
        f"BSI, n = {stats['n']}: Pearson r = {_fmt(stats['pearson_r'])}, "
        f"Spearman rho = {_fmt(stats['spearman_rho'])}",
        fontsize=9,
    )
    ax.legend(loc="upper left", fontsize=8, frameon=False)
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
        ax.axhline(y, color=color, linestyle=style, linewidth=1.1)
        # labels sit on the lines at the right edge, the usual Bland-Altman layout
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
