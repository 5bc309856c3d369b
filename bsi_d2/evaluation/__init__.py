"""Evaluation: reads predictions and ground truth; knows nothing of detectron2 or torch."""

from bsi_d2.evaluation.agreement import (
    auc_delong,
    bland_altman,
    bsi_agreement,
    burden_agreement,
    cohen_kappa,
    continuous_agreement,
    correlation_agreement,
    count_agreement,
    diagnostic_agreement,
    intraclass_correlation,
    kappa_agreement,
    roc_points,
    wilson_interval,
)
from bsi_d2.evaluation.benign import BenignMalignantAccumulator
from bsi_d2.evaluation.coco_eval import GroundTruthError, coco_ap
from bsi_d2.evaluation.evaluator import evaluate_dataset, write_evaluation
from bsi_d2.evaluation.pixel import pixel_metrics
from bsi_d2.evaluation.reference import (
    ReferenceTable,
    match_images,
    match_reference,
    read_reference_csv,
    reference_agreement,
)
from bsi_d2.evaluation.results import (
    CocoSummary,
    EvaluationResult,
    LesionClassification,
    LesionSummary,
    PixelScores,
    flatten_evaluations,
    group_by_task,
)
from bsi_d2.evaluation.scan import abnormality_score, roc_auc, scan_metrics
from bsi_d2.evaluation.tables import format_pixel_table

__all__ = [
    "BenignMalignantAccumulator",
    "CocoSummary",
    "EvaluationResult",
    "LesionClassification",
    "LesionSummary",
    "PixelScores",
    "flatten_evaluations",
    "group_by_task",
    "GroundTruthError",
    "ReferenceTable",
    "abnormality_score",
    "auc_delong",
    "bland_altman",
    "bsi_agreement",
    "burden_agreement",
    "coco_ap",
    "cohen_kappa",
    "continuous_agreement",
    "correlation_agreement",
    "count_agreement",
    "diagnostic_agreement",
    "evaluate_dataset",
    "format_pixel_table",
    "intraclass_correlation",
    "kappa_agreement",
    "match_images",
    "match_reference",
    "pixel_metrics",
    "read_reference_csv",
    "reference_agreement",
    "roc_auc",
    "roc_points",
    "scan_metrics",
    "wilson_interval",
    "write_evaluation",
]
