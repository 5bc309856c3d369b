"""Typed evaluation results, and the one flattening that feeds ``metrics.json``.

:func:`~bsi_d2.evaluation.evaluator.evaluate_dataset` returns the nested dict written as
``evaluation.json``; :meth:`EvaluationResult.from_dict` gives it types, so k-fold, the demo,
``bsi-d2 train`` and ``bsi-d2 evaluate`` read ``result.segm.ap`` or ``result.lesion.dice_pooled``
instead of key paths. :meth:`EvaluationResult.flatten` is what both engines log, with the same
keys and the same units (fractions, never percent):

    segm/AP  segm/AP50 ... segm/AP-<class>     COCO mask AP, overall and per class
    pixel/skeleton/f1  pixel/<class>/f1 ...    pixel-wise precision, sensitivity, F1
    lesion/dice_pooled  lesion/dice_mean_per_image   pixel-wise lesion Dice
    lesion/sensitivity_at_{0.25,0.5,1,2,4}fp         lesion by lesion: sensitivity at that many
    lesion/froc_score                                false positives per scan, and their mean
    lesion/detection_sensitivity  lesion/detection_precision  lesion/fp_per_scan
    lesion/count_mean_absolute_error  lesion/count_mean_error   (at the lesion threshold)
    lesion_classification/accuracy  .../sensitivity  .../specificity  .../auc
    lesion_classification/lesion_fp_on_benign_per_scan   benign versus malignant hot spots
                                                     (with a benign class only)
    scan/sensitivity  scan/specificity  scan/auc ...
    burden/count_mean_absolute_error  burden/group_kappa ...
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@dataclass(frozen=True)
class CocoSummary:
    """COCO AP of one IoU type (fractions; None where undefined)."""

    ap: float | None = None
    ap50: float | None = None
    ap75: float | None = None
    aps: float | None = None
    apm: float | None = None
    apl: float | None = None
    per_class: dict[str, float | None] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, tree: Mapping[str, Any]) -> CocoSummary:
        values = [_number(tree.get(k)) for k in COCO_KEYS]
        per_class = {str(k): _number(v) for k, v in (tree.get("per_class") or {}).items()}
        return cls(*values, per_class=per_class)

    def flatten(self, prefix: str) -> dict[str, float]:
        values = dict(
            zip(
                COCO_KEYS,
                (self.ap, self.ap50, self.ap75, self.aps, self.apm, self.apl),
                strict=True,
            )
        )
        out = {f"{prefix}/{k}": v for k, v in values.items() if v is not None}
        out.update({f"{prefix}/AP-{c}": v for c, v in self.per_class.items() if v is not None})
        return out


@dataclass(frozen=True)
class PixelScores:
    precision: float | None = None
    sensitivity: float | None = None
    f1: float | None = None

    @classmethod
    def from_dict(cls, tree: Mapping[str, Any] | None) -> PixelScores:
        tree = tree or {}
        return cls(
            _number(tree.get("precision")),
            _number(tree.get("sensitivity")),
            _number(tree.get("f1")),
        )


@dataclass(frozen=True)
class LesionSummary:
    dice_pooled: float | None = None
    dice_mean_per_image: float | None = None
    n_images_with_lesions: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def sensitivity(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None


@dataclass(frozen=True)
class FrocPoint:
    threshold: float
    sensitivity: float | None
    fp_per_scan: float | None


@dataclass(frozen=True)
class LesionDetection:
    """Lesion-by-lesion detection (:mod:`bsi_d2.evaluation.detection`); empty when an older
    ``evaluation.json`` has none. ``sensitivity_at_fp`` is keyed "0.25", "0.5", "1", "2", "4"."""

    n_scans: int = 0
    n_lesions: int = 0
    matching_rule: str = ""
    froc: tuple[FrocPoint, ...] = ()
    sensitivity_at_fp: dict[str, float | None] = field(default_factory=dict)
    froc_score: float | None = None
    operating_thresh: float | None = None
    sensitivity: float | None = None
    precision: float | None = None
    fp_per_scan: float | None = None
    count_mean_absolute_error: float | None = None
    count_mean_error: float | None = None
    n_predicted: int = 0

    @classmethod
    def from_dict(cls, tree: Mapping[str, Any] | None) -> LesionDetection:
        tree = tree or {}
        return cls(
            n_scans=int(tree.get("n_scans") or 0),
            n_lesions=int(tree.get("n_lesions") or 0),
            matching_rule=str(tree.get("matching_rule") or ""),
            froc=tuple(
                FrocPoint(
                    float(p["threshold"]),
                    _number(p.get("sensitivity")),
                    _number(p.get("fp_per_scan")),
                )
                for p in tree.get("froc") or ()
            ),
            sensitivity_at_fp={
                str(k): _number(v) for k, v in (tree.get("sensitivity_at_fp") or {}).items()
            },
            froc_score=_number(tree.get("froc_score")),
            operating_thresh=_number(tree.get("operating_thresh")),
            sensitivity=_number(tree.get("sensitivity")),
            precision=_number(tree.get("precision")),
            fp_per_scan=_number(tree.get("fp_per_scan")),
            count_mean_absolute_error=_number(tree.get("count_mean_absolute_error")),
            count_mean_error=_number(tree.get("count_mean_error")),
            n_predicted=int(tree.get("n_predicted") or 0),
        )

    def flatten(self, prefix: str = "lesion") -> dict[str, float]:
        values = {f"sensitivity_at_{k}fp": v for k, v in self.sensitivity_at_fp.items()}
        values.update(
            {
                "froc_score": self.froc_score,
                "detection_sensitivity": self.sensitivity,
                "detection_precision": self.precision,
                "fp_per_scan": self.fp_per_scan,
                "count_mean_absolute_error": self.count_mean_absolute_error,
                "count_mean_error": self.count_mean_error,
            }
        )
        return {f"{prefix}/{k}": v for k, v in values.items() if v is not None}


CLASSIFICATION_KEYS = ("accuracy", "sensitivity", "specificity", "auc",
                       "lesion_fp_on_benign_per_scan")  # fmt: skip


@dataclass(frozen=True)
class LesionClassification:
    """Benign versus malignant, hot spot by hot spot (:mod:`bsi_d2.evaluation.benign`); empty
    where the taxonomy has no benign class."""

    n_malignant: int = 0
    n_benign: int = 0
    n_not_detected: int = 0
    accuracy: float | None = None
    sensitivity: float | None = None
    specificity: float | None = None
    auc: float | None = None
    lesion_fp_on_benign_per_scan: float | None = None

    @classmethod
    def from_dict(cls, tree: Mapping[str, Any] | None) -> LesionClassification:
        tree = tree or {}
        counts = [int(tree.get(k) or 0) for k in ("n_malignant", "n_benign", "n_not_detected")]
        return cls(*counts, *(_number(tree.get(k)) for k in CLASSIFICATION_KEYS))

    def flatten(self, prefix: str = "lesion_classification") -> dict[str, float]:
        values = {k: getattr(self, k) for k in CLASSIFICATION_KEYS}
        return {f"{prefix}/{k}": v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class EvaluationResult:
    """One data set's evaluation (the numbers of ``evaluation.json``)."""

    coco: dict[str, CocoSummary]
    skeleton: PixelScores
    per_class: dict[str, PixelScores]
    lesion: LesionSummary
    scan: dict[str, float | None]
    burden: dict[str, float | None]
    n_images: int
    lesion_detection: LesionDetection = field(default_factory=LesionDetection)
    lesion_classification: LesionClassification = field(default_factory=LesionClassification)

    @classmethod
    def from_dict(cls, tree: Mapping[str, Any]) -> EvaluationResult:
        pixel = tree.get("pixel") or {}
        lesion = tree.get("lesion") or {}
        return cls(
            coco={k: CocoSummary.from_dict(v) for k, v in (tree.get("coco") or {}).items()},
            skeleton=PixelScores.from_dict(pixel.get("skeleton")),
            per_class={
                k: PixelScores.from_dict(v) for k, v in (pixel.get("per_class") or {}).items()
            },
            lesion=LesionSummary(
                _number(lesion.get("dice_pooled")),
                _number(lesion.get("dice_mean_per_image")),
                int(lesion.get("n_images_with_lesions") or 0),
                int(lesion.get("tp") or 0),
                int(lesion.get("fp") or 0),
                int(lesion.get("fn") or 0),
            ),
            scan={k: _number(v) for k, v in (tree.get("scan") or {}).items()},
            burden={
                k: _number(v)
                for k, v in (tree.get("burden") or {}).items()
                if not isinstance(v, Mapping)
            },
            n_images=int(tree.get("n_images") or 0),
            lesion_detection=LesionDetection.from_dict(tree.get("lesion_detection")),
            lesion_classification=LesionClassification.from_dict(tree.get("lesion_classification")),
        )

    @property
    def segm(self) -> CocoSummary:
        return self.coco.get("segm", CocoSummary())

    def flatten(self) -> dict[str, float]:
        """The numbers as ``{"task/metric": fraction}`` (module docstring): what both engines
        write to ``metrics.json`` and detectron2's EvalHook stores."""
        out: dict[str, float] = {}
        for iou_type, summary in self.coco.items():
            out.update(summary.flatten(iou_type))
        pixel = {"skeleton": self.skeleton, **self.per_class}
        for name, scores in pixel.items():
            for metric in ("precision", "sensitivity", "f1"):
                value = getattr(scores, metric)
                if value is not None:
                    out[f"pixel/{name}/{metric}"] = value
        for metric in ("dice_pooled", "dice_mean_per_image"):
            value = getattr(self.lesion, metric)
            if value is not None:
                out[f"lesion/{metric}"] = value
        out.update(self.lesion_detection.flatten("lesion"))
        out.update(self.lesion_classification.flatten())
        for task, values in (("scan", self.scan), ("burden", self.burden)):
            out.update({f"{task}/{k}": v for k, v in values.items() if v is not None})
        return out


def flatten_evaluations(
    results: Mapping[str, Mapping[str, Any] | EvaluationResult],
) -> dict[str, float]:
    """:meth:`EvaluationResult.flatten` of each data set; keys prefixed ``<name>/`` where there
    is more than one (detectron2's rule for several test sets)."""
    out: dict[str, float] = {}
    for name, result in results.items():
        typed = (
            result if isinstance(result, EvaluationResult) else EvaluationResult.from_dict(result)
        )
        prefix = "" if len(results) == 1 else f"{name}/"
        out.update({f"{prefix}{k}": v for k, v in typed.flatten().items()})
    return out


def group_by_task(flat: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """``{"segm/AP": x}`` -> ``{"segm": {"AP": x}}``: the shape detectron2's evaluators return,
    which its EvalHook flattens back to the same keys."""
    out: dict[str, dict[str, float]] = {}
    for key, value in flat.items():
        task, _, metric = key.partition("/")
        out.setdefault(task, {})[metric] = value
    return out
