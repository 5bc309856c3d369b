"""Reports for a physician: overlays, per-scan and batch HTML pages, evaluation plots.

Outputs never claim a diagnosis; every page carries :data:`AID_LINE`.
"""

from bsi_d2.report.html import (
    AID_LINE,
    NORMAL_FINDING,
    write_evaluation_page,
    write_index,
    write_scan_report,
)
from bsi_d2.report.overlay import render_overlay, save_png
from bsi_d2.report.plots import plot_bsi_agreement

__all__ = [
    "AID_LINE",
    "NORMAL_FINDING",
    "plot_bsi_agreement",
    "render_overlay",
    "save_png",
    "write_evaluation_page",
    "write_index",
    "write_scan_report",
]
