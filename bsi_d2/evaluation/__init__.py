"""Evaluation: reads predictions and ground truth; knows nothing of detectron2 or torch."""

from bsi_d2.evaluation.agreement import bsi_agreement, burden_agreement, cohen_kappa
from bsi_d2.evaluation.coco_eval import GroundTruthError, coco_ap
from bsi_d2.evaluation.evaluator import evaluate_dataset, write_evaluation
from bsi_d2.evaluation.pixel import pixel_metrics
from bsi_d2.evaluation.results import (
    CocoSummary,
    EvaluationResult,
    LesionSummary,
    PixelScores,
    flatten_evaluations,
    group_by_task,
)
from bsi_d2.evaluation.scan import abnormality_score, roc_auc, scan_metrics
from bsi_d2.evaluation.tables import format_pixel_table

__all__ = [
    "CocoSummary",
    "EvaluationResult",
    "LesionSummary",
    "PixelScores",
    "flatten_evaluations",
    "group_by_task",
    "GroundTruthError",
    "abnormality_score",
    "bsi_agreement",
    "burden_agreement",
    "coco_ap",
    "cohen_kappa",
    "evaluate_dataset",
    "format_pixel_table",
    "pixel_metrics",
    "roc_auc",
    "scan_metrics",
    "write_evaluation",
]
