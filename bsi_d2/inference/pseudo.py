"""Pseudo-labels: a model's predictions on unlabelled scans, kept where it is trusted, as Labelme
files to review and one COCO file to train on (``bsi-d2 pseudo-label``, ``bsi-d2 self-train``).

Which predictions are kept is decided per class by a score threshold chosen on a labelled
validation split (:func:`choose_thresholds`, the rule in :data:`THRESHOLD_RULE`): the lowest
threshold at which the validation predictions reaching it have a precision of at least the
target (0.9 by default), a prediction counting as right when it matches a ground-truth instance
of its class at mask IoU >= 0.5. A class that never reaches the target gets no threshold, so no
pseudo-label. The thresholds, and how they were chosen, go to ``DIR/thresholds.json``.

The scans themselves run through :func:`bsi_d2.inference.batch.run_batch` as ``predict`` runs
them (pseudonymous keys, resumable), the kept instances written as model-made Labelme files
beside the merged image (``DIR/scans/<key>/<key>.json``). :func:`export_pseudo_coco` reads those
files back, exactly as ``bsi-d2 convert`` would, into ``DIR/pseudo_labels.json``: one image per
scan that passed quality control and kept at least one instance, its annotations
``"model_made": true`` with the model's score, ``file_name`` relative to ``DIR``. A shape a
reviewer corrected and unticked in Labelme is exported as a human annotation.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bsi_d2.inference import outputs as out
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import Taxonomy

logger = logging.getLogger(__name__)

THRESHOLDS_FILE = "thresholds.json"
PSEUDO_COCO_FILE = "pseudo_labels.json"
DEFAULT_TARGET_PRECISION = 0.9
DEFAULT_MATCH_IOU = 0.5
THRESHOLD_RULE = (
    "per class, the lowest score threshold at which the validation predictions scoring at least "
    "it have precision >= target_precision; a prediction is a true positive when it matches a "
    "ground-truth instance of its class at mask IoU >= match_iou (greedy by descending score, "
    "each ground truth matched once, as COCO matches); an unmatched prediction lying in crowd "
    "(ignore) regions by >= match_iou of its area is left out; a class that never reaches the "
    "target has no threshold (null) and gets no pseudo-label"
)


class PseudoLabelError(ValueError):
    """Pseudo-labelling that cannot go on; the message names the file and the problem."""


# -- matching on the validation split -------------------------------------------------------
def match_image(
    predicted: Instances, truth: Instances, ignore: np.ndarray | None, iou: float
) -> tuple[np.ndarray, np.ndarray]:
    """(true positive, ignored), each (N,) bool over ``predicted``: per class, predictions in
    descending score (ties in order) each take the unmatched ground truth of their class with
    the highest mask IoU >= ``iou``; an unmatched one is ignored where ``ignore`` (the crowd
    regions) covers at least ``iou`` of it."""
    from pycocotools import mask as mask_utils

    n = len(predicted)
    is_tp, ignored = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    if n == 0:
        return is_tp, ignored
    pred_rles = out.masks_to_rles(predicted.masks)
    gt_rles = out.masks_to_rles(truth.masks)
    gt_ids = np.asarray(truth.category_ids, dtype=np.int64)
    scores = np.asarray(predicted.scores, dtype=np.float64)
    for class_id in np.unique(predicted.category_ids):
        mine = np.flatnonzero(predicted.category_ids == class_id)
        theirs = np.flatnonzero(gt_ids == class_id)
        if not len(theirs):
            continue
        overlap = np.asarray(
            mask_utils.iou(
                [pred_rles[i] for i in mine], [gt_rles[j] for j in theirs], [0] * len(theirs)
            ),
            dtype=np.float64,
        ).reshape(len(mine), len(theirs))
        taken = np.zeros(len(theirs), dtype=bool)
        for row in np.argsort(-scores[mine], kind="stable"):
            candidates = (overlap[row] >= iou) & ~taken
            if candidates.any():
                taken[int(np.argmax(np.where(candidates, overlap[row], -1.0)))] = True
                is_tp[mine[row]] = True
    if ignore is not None and ignore.any():
        crowd = out.masks_to_rles(ignore[None])
        inside = np.asarray(mask_utils.iou(pred_rles, crowd, [1]), dtype=np.float64).reshape(-1)
        ignored = ~is_tp & (inside >= iou)
    return is_tp, ignored


def precision_threshold(
    scores: Sequence[float], is_tp: Sequence[bool], n_truth: int, target: float
) -> dict[str, Any]:
    """The lowest score threshold at which the predictions scoring at least it have precision
    >= ``target``; with that precision, the recall over ``n_truth`` ground-truth instances and
    the counts. ``threshold`` is None where no threshold reaches the target."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    hits = np.asarray(is_tp, dtype=bool).reshape(-1)
    found: dict[str, Any] = {
        "threshold": None,
        "precision": None,
        "recall": None,
        "kept": 0,
        "true_positives": 0,
        "predictions": int(len(scores)),
        "ground_truth": int(n_truth),
        "reason": None,
    }
    if not len(scores):
        found["reason"] = "no prediction of this class on the validation split"
        return found
    order = np.argsort(-scores, kind="stable")
    scores, hits = scores[order], hits[order]
    cumulative = np.cumsum(hits)
    # a threshold keeps every prediction scoring at least it: candidates end where scores fall
    ends = np.flatnonzero(np.r_[scores[1:] != scores[:-1], True])
    precision = cumulative[ends] / (ends + 1)
    reached = np.flatnonzero(precision >= target)
    if not len(reached):
        found["reason"] = (
            f"precision never reaches {target:g} (at most {float(precision.max()):.3f})"
        )
        return found
    end = int(ends[reached[-1]])
    found.update(
        threshold=float(scores[end]),
        precision=float(precision[reached[-1]]),
        recall=float(cumulative[end] / n_truth) if n_truth else None,
        kept=end + 1,
        true_positives=int(cumulative[end]),
    )
    return found


def _validation_images(
    json_file: Path, image_root: Path
) -> tuple[list[dict[str, Any]], dict[int, list[dict[str, Any]]]]:
    from bsi_d2.evaluation.coco_eval import GroundTruthError, load_ground_truth

    try:
        data, _ = load_ground_truth(json_file)
    except GroundTruthError as err:
        raise PseudoLabelError(str(err)) from err
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann.get("image_id"), []).append(ann)
    if not data["images"]:
        raise PseudoLabelError(f"{json_file}: the validation split holds no image")
    for img in data["images"]:
        if "file_name" not in img:
            raise PseudoLabelError(f"{json_file}: image {img['id']} has no file_name")
        img["path"] = image_root / img["file_name"]
    return data["images"], by_image


def _read_display(path: Path, json_file: Path) -> np.ndarray:
    """The image as ``predict`` hands a merged PNG to the model: its pixels, as stored."""
    from bsi_d2.io.base import ReaderError
    from bsi_d2.io.readers import image_array

    try:
        array, _ = image_array(path.read_bytes(), path)
    except (OSError, ReaderError) as err:
        raise PseudoLabelError(f"{json_file}: validation image {path}: {err}") from err
    return array


def choose_thresholds(
    predictor: Any,
    json_file: str | Path,
    taxonomy: Taxonomy,
    target_precision: float = DEFAULT_TARGET_PRECISION,
    match_iou: float = DEFAULT_MATCH_IOU,
    image_root: str | Path | None = None,
) -> dict[str, Any]:
    """Run ``predictor`` (display images -> Instances: a model, or a recording) on a labelled
    validation split (a COCO file with taxonomy ids; images under ``image_root``, by default
    :func:`~bsi_d2.data.datasets.coco_image_root`) and choose each class's threshold by
    :data:`THRESHOLD_RULE`. Returns the document written to ``thresholds.json``."""
    from bsi_d2.data.datasets import coco_image_root
    from bsi_d2.evaluation.coco_eval import ground_truth_instances

    if not 0.0 < float(target_precision) <= 1.0:
        raise PseudoLabelError(f"target precision must lie in (0, 1], got {target_precision}")
    if not 0.0 < float(match_iou) <= 1.0:
        raise PseudoLabelError(f"match IoU must lie in (0, 1], got {match_iou}")
    json_file = Path(json_file)
    root = Path(image_root) if image_root is not None else coco_image_root(json_file)
    images, by_image = _validation_images(json_file, root)
    scores: dict[int, list[float]] = {c: [] for c in taxonomy.ids}
    hits: dict[int, list[bool]] = {c: [] for c in taxonomy.ids}
    truths: Counter[int] = Counter()
    batch = max(1, int(getattr(predictor, "batch_size", 1)))
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        displays = [_read_display(img["path"], json_file) for img in chunk]
        for img, display in zip(chunk, displays, strict=True):
            if display.shape != (int(img["height"]), int(img["width"])):
                raise PseudoLabelError(
                    f"{json_file}: image {img['path']} is {display.shape[0]} x "
                    f"{display.shape[1]}, the file says {img['height']} x {img['width']}"
                )
        for img, predicted in zip(chunk, predictor(displays), strict=True):
            annotations = by_image.get(img["id"], [])
            unknown = {a["category_id"] for a in annotations} - set(taxonomy.ids)
            if unknown:
                raise PseudoLabelError(
                    f"{json_file}: category ids {sorted(unknown)} are not in taxonomy "
                    f"{taxonomy.name!r}"
                )
            truth, ignore = ground_truth_instances(annotations, int(img["height"]),
                                                   int(img["width"]))  # fmt: skip
            truths.update(
                int(c) for c, m in zip(truth.category_ids, truth.masks, strict=True) if m.any()
            )
            is_tp, ignored = match_image(predicted, truth, ignore, float(match_iou))
            for i in np.flatnonzero(~ignored):
                class_id = int(predicted.category_ids[i])
                if class_id in scores:
                    scores[class_id].append(float(predicted.scores[i]))
                    hits[class_id].append(bool(is_tp[i]))
    per_class = {
        taxonomy.by_id(c).name: precision_threshold(
            scores[c], hits[c], truths[c], float(target_precision)
        )
        for c in taxonomy.ids
    }
    chosen = {name: entry["threshold"] for name, entry in per_class.items()}
    logger.info(
        "thresholds chosen on %d validation images: %s",
        len(images),
        ", ".join(f"{k} {'-' if v is None else f'{v:.3f}'}" for k, v in chosen.items()),
    )
    return {
        "rule": THRESHOLD_RULE,
        "target_precision": float(target_precision),
        "match_iou": float(match_iou),
        "validation": {"file": json_file.name, "images": len(images)},
        "thresholds": chosen,
        "per_class": per_class,
    }


# -- thresholds files -----------------------------------------------------------------------
def read_thresholds(path: str | Path, taxonomy: Taxonomy) -> dict[str, Any]:
    """A thresholds file: as :func:`choose_thresholds` writes it, or a plain ``{class:
    threshold}`` mapping; null, or a class left out, means no pseudo-label of that class.
    Raises :class:`PseudoLabelError` naming the file for anything else."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PseudoLabelError(f"{path}: thresholds file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PseudoLabelError(f"{path}: not a JSON thresholds file: {err}") from err
    table = raw.get("thresholds", raw) if isinstance(raw, dict) else None
    if not isinstance(table, dict):
        raise PseudoLabelError(f"{path}: expected {{class: threshold}} or a 'thresholds' object")
    chosen: dict[str, float | None] = {c.name: None for c in taxonomy.classes}
    for label, value in table.items():
        class_def = taxonomy.resolve_label(str(label))
        if class_def is None:
            raise PseudoLabelError(f"{path}: class {label!r} is not in taxonomy {taxonomy.name!r}")
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0.0 <= float(value) <= 1.0
        ):
            raise PseudoLabelError(
                f"{path}: threshold of {label!r} must be a number in [0, 1] or null, got {value!r}"
            )
        chosen[class_def.name] = None if value is None else float(value)
    doc = dict(raw) if isinstance(raw, dict) and "thresholds" in raw else {"given": path.name}
    doc["thresholds"] = chosen
    return doc


def threshold_table(thresholds: Mapping[str, float | None]) -> dict[str, float]:
    """{class: threshold} for the batch, a class without a threshold never kept (inf)."""
    return {name: math.inf if value is None else float(value) for name, value in thresholds.items()}


# -- the unlabelled scans -------------------------------------------------------------------
def pseudo_label_scans(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    predictor: Any,
    taxonomy: Taxonomy,
    thresholds: Mapping[str, Any],
    options: Any = None,
) -> dict[str, Any]:
    """Run ``predictor`` over ``inputs`` into ``out_dir`` keeping what ``thresholds`` (a
    :func:`choose_thresholds` / :func:`read_thresholds` document) keeps, and export the COCO
    file; {"batch": BatchResult, "thresholds": path, **export summary}. ``options`` (a
    :class:`~bsi_d2.inference.batch.BatchOptions`) is used with its class thresholds replaced
    and ``labelme`` and ``predictions`` among its outputs. A rerun resumes the folder; with
    other thresholds than it was made with it is an error, as its finished scans kept others."""
    from bsi_d2.inference.batch import BatchOptions, run_batch

    out_dir = Path(out_dir)
    path = out_dir / THRESHOLDS_FILE
    chosen = dict(thresholds["thresholds"])
    if path.is_file() and out.record_paths(out_dir / out.SCANS_DIR):
        earlier = read_thresholds(path, taxonomy)["thresholds"]
        if earlier != chosen:
            changed = sorted(k for k in chosen if earlier.get(k) != chosen[k])
            raise PseudoLabelError(
                f"{path}: {out_dir} was pseudo-labelled with other thresholds (differing for "
                f"{', '.join(changed)}); use another output folder or the same thresholds"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    out.atomic_write_json(path, dict(thresholds))
    options = options if options is not None else BatchOptions()
    options.class_thresh = threshold_table(chosen)
    options.outputs = frozenset(options.outputs | {"labelme", "predictions"})
    result = run_batch(inputs, out_dir, predictor, taxonomy, options)
    summary = export_pseudo_coco(out_dir, taxonomy, chosen)
    return {"batch": result, "thresholds": str(path), **summary}


def export_pseudo_coco(
    out_dir: str | Path, taxonomy: Taxonomy, thresholds: Mapping[str, float | None] | None = None
) -> dict[str, Any]:
    """``out_dir/pseudo_labels.json`` from the Labelme files of the finished scans under
    ``out_dir/scans/`` (module docstring); the summary of what it holds and left out."""
    from bsi_d2.io.labelme import LabelmeError, labelme_image, labelme_instances, load_labelme

    out_dir = Path(out_dir)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    left_out: Counter[str] = Counter()
    per_class: Counter[str] = Counter({c.name: 0 for c in taxonomy.classes})
    lesion_ids = set(taxonomy.lesion_ids)
    for record in out.iter_records(out.record_paths(out_dir / out.SCANS_DIR)):
        key = str(record.get("key"))
        if record.get("status") != out.STATUS_OK:
            left_out[str(record.get("status"))] += 1
            continue
        labelme_path = out_dir / out.SCANS_DIR / key / f"{key}.json"
        try:
            labelme = load_labelme(labelme_path)
            image = labelme_image(labelme)
            instances, _ = labelme_instances(
                labelme, taxonomy, height=image.height, width=image.width, unknown_labels="skip"
            )
        except LabelmeError as err:
            logger.warning("%s: left out of the pseudo-labels: %s", labelme_path, err)
            left_out["unreadable_labelme"] += 1
            continue
        things = [inst for inst in instances if not inst.is_ignore]
        if not things:
            left_out["nothing_kept"] += 1
            continue
        image_id = len(images) + 1
        record_image: dict[str, Any] = {
            "id": image_id,
            "file_name": image.source.relative_to(out_dir).as_posix(),  # type: ignore[union-attr]
            "height": image.height,
            "width": image.width,
            "has_lesion": any(inst.category_id in lesion_ids for inst in things),
            "labelme_file": labelme_path.relative_to(out_dir).as_posix(),
            "key": key,
        }
        if labelme.model_made:
            record_image["model_made"] = True
        images.append(record_image)
        for inst in things:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": inst.category_id,
                    "iscrowd": 0,
                    "segmentation": inst.segmentation,
                    "area": inst.area,
                    "bbox": inst.bbox,
                    **inst.provenance(),
                }
            )
            per_class[inst.label] += 1
    coco = {
        "info": {
            "description": "bsi_d2 pseudo-labels (model-made; review before trusting)",
            "taxonomy": taxonomy.name,
            "thresholds": dict(thresholds or {}),
            "left_out": dict(left_out),
        },
        "licenses": [],
        "categories": taxonomy.coco_categories(),
        "images": images,
        "annotations": annotations,
    }
    path = out.atomic_write_json(out_dir / PSEUDO_COCO_FILE, coco)
    logger.info(
        "%d pseudo-labelled scans, %d instances in %s (left out: %s)",
        len(images),
        len(annotations),
        path,
        dict(left_out) or "none",
    )
    return {
        "coco_file": str(path),
        "images": len(images),
        "annotations": len(annotations),
        "per_class": dict(per_class),
        "left_out": dict(left_out),
    }
