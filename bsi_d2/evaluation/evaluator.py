"""Score a model's predicted instances against COCO ground truth: every measure of DOMAIN.md §6.

The engines (detectron2 and torchvision) and the demo all call :func:`evaluate_dataset` with
framework-neutral :class:`Instances`, so the numbers they report are computed the same way.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from bsi_d2.evaluation.coco_eval import (
    GroundTruthError,
    coco_ap,
    load_ground_truth,
    prepare_ground_truth,
)
from bsi_d2.evaluation.pixel import PixelAccumulator, category_masks, dice
from bsi_d2.evaluation.scan import scan_metrics
from bsi_d2.evaluation.tables import format_pixel_table
from bsi_d2.postprocess.rasterize import class_thresholds, filter_by_score
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import Taxonomy

logger = logging.getLogger(__name__)


def evaluate_dataset(
    ground_truth: str | Path | dict,
    predictions: Sequence[tuple[int, Instances]],
    taxonomy: Taxonomy,
    output_dir: str | Path | None = None,
    score_thresh: float = 0.5,
    class_thresh: Mapping[int | str, float] | None = None,
    *,
    iou_types: Sequence[str] = ("segm",),
) -> dict:
    """COCO AP, pixel-wise metrics, lesion Dice and scan-level metastasis metrics.

    ``ground_truth``: COCO instances JSON path or dict, category ids from ``taxonomy``.
    ``predictions``: (image_id, predicted instances); an image without an entry counts as one
    with nothing predicted. Pixel, Dice and scan metrics use instances scoring at least
    ``score_thresh`` (or their class's entry in ``class_thresh``, by class name or id, as in
    post-processing); AP uses all of them. ``iou_types`` may add "bbox" to "segm".
    With ``output_dir``, writes evaluation.json, coco_segm_results.json and pixel_table.md.
    """
    data, where = load_ground_truth(ground_truth)
    data = prepare_ground_truth(data, taxonomy)
    images = {img["id"]: img for img in data["images"]}
    annotations = defaultdict(list)
    for ann in data["annotations"]:
        if ann["image_id"] not in images:
            raise GroundTruthError(
                f"{where}: annotation {ann['id']} names unknown image {ann['image_id']}"
            )
        annotations[ann["image_id"]].append(ann)

    predicted: dict[int, Instances] = {}
    for image_id, instances in predictions:
        if image_id not in images:
            logger.warning("%s: prediction for unknown image id %r ignored", where, image_id)
            continue
        img = images[image_id]
        if (instances.height, instances.width) != (img["height"], img["width"]):
            raise ValueError(
                f"{where}: image {image_id} is {img['height']}x{img['width']} but its "
                f"prediction is {instances.height}x{instances.width}"
            )
        predicted[image_id] = instances

    class_ids = taxonomy.ids
    lesion_ids = taxonomy.lesion_ids
    thresholds = class_thresholds(taxonomy, score_thresh, class_thresh)
    lesion_thresh = float(min(thresholds[lesion_ids])) if lesion_ids else float(score_thresh)
    pixel = PixelAccumulator(taxonomy)
    lesion_tp = lesion_fp = lesion_fn = 0
    per_image_dice: list[float] = []
    scan_truth: list[bool] = []
    scan_scores: list[float] = []
    results: list[dict] = []
    for image_id, img in images.items():
        gt = Instances.from_coco(annotations[image_id], img["height"], img["width"])
        pred = predicted.get(image_id, Instances.empty(img["height"], img["width"]))
        results.extend(pred.to_coco(image_id))
        gt_masks = category_masks(gt, class_ids)
        kept = filter_by_score(pred, taxonomy, score_thresh, class_thresh)
        pred_masks = category_masks(kept, class_ids)
        pixel.add(gt_masks, pred_masks)

        gt_lesion = _union(gt_masks, lesion_ids, gt)
        pred_lesion = _union(pred_masks, lesion_ids, pred)
        tp = int(np.count_nonzero(gt_lesion & pred_lesion))
        lesion_tp += tp
        lesion_fp += int(np.count_nonzero(pred_lesion)) - tp
        lesion_fn += int(np.count_nonzero(gt_lesion)) - tp
        image_dice = dice(gt_lesion, pred_lesion)
        if image_dice is not None:
            per_image_dice.append(image_dice)

        is_lesion = np.isin(pred.category_ids, lesion_ids)
        scan_truth.append(bool(np.isin(gt.category_ids, lesion_ids).any()))
        scan_scores.append(float(pred.scores[is_lesion].max()) if is_lesion.any() else 0.0)

    pooled = 2 * lesion_tp + lesion_fp + lesion_fn
    coco = {t: coco_ap(data, results, taxonomy, t) for t in iou_types}
    evaluation = {
        "coco": coco,
        "pixel": pixel.result(),
        "lesion": {
            "dice_pooled": 2 * lesion_tp / pooled if pooled else None,
            "dice_mean_per_image": float(np.mean(per_image_dice)) if per_image_dice else None,
            "n_images_with_lesions": len(per_image_dice),
            "tp": lesion_tp,
            "fp": lesion_fp,
            "fn": lesion_fn,
        },
        "scan": scan_metrics(scan_truth, scan_scores, lesion_thresh),
        "n_images": len(images),
        "n_predicted_images": len(predicted),
        "score_thresh": float(score_thresh),
        "class_thresh": {str(k): float(v) for k, v in (class_thresh or {}).items()},
        "taxonomy": taxonomy.name,
    }
    if output_dir is not None:
        write_evaluation(evaluation, results, output_dir)
    return evaluation


def _union(masks: dict[int, np.ndarray], ids: Sequence[int], like: Instances) -> np.ndarray:
    out = np.zeros((like.height, like.width), dtype=bool)
    for cid in ids:
        out |= masks[cid]
    return out


def write_evaluation(evaluation: dict, results: list[dict], output_dir: str | Path) -> Path:
    """evaluation.json, coco_segm_results.json and pixel_table.md under ``output_dir``."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(evaluation, indent=2), encoding="utf-8")
    (out / "coco_segm_results.json").write_text(json.dumps(results), encoding="utf-8")
    (out / "pixel_table.md").write_text(format_pixel_table(evaluation), encoding="utf-8")
    return out
