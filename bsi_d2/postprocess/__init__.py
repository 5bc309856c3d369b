"""Post-processing: instances -> region map, lesion mask, BSI, BSTBI, lesion burden. NumPy only."""

from bsi_d2.postprocess.analysis import ScanAnalysis, analyse_scan
from bsi_d2.postprocess.bsi import BSIResult, burden_group, compute_bsi, compute_bstbi

__all__ = [
    "BSIResult",
    "ScanAnalysis",
    "analyse_scan",
    "burden_group",
    "compute_bsi",
    "compute_bstbi",
]
