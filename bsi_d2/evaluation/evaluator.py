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

from bsi_d2.evaluation.agreement import burden_agreement
from bsi_d2.evaluation.benign import BenignMalignantAccumulator
from bsi_d2.evaluation.coco_eval import (
    GroundTruthError,
    coco_ap,
    ground_truth_instances,
    load_ground_truth,
    prepare_ground_truth,
)
from bsi_d2.evaluation.detection import LesionDetectionAccumulator
from bsi_d2.evaluation.pixel import PixelAccumulator, category_masks, dice
from bsi_d2.evaluation.scan import abnormality_score, scan_metrics
from bsi_d2.evaluation.tables import format_pixel_table
from bsi_d2.postprocess.analysis import analyse_scan
from bsi_d2.postprocess.bsi import BURDEN_GROUPS
from bsi_d2.postprocess.rasterize import filter_by_score, kind_threshold
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import Taxonomy

logger = logging.getLogger(__name__)
BURDEN_GROUP_NAMES = tuple(name for name, *_ in BURDEN_GROUPS)


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
    """COCO AP, pixel-wise metrics, lesion Dice and detection, scan-level metastasis metrics and
    lesion burden.

    ``ground_truth``: COCO instances JSON path or dict, category ids from ``taxonomy``. Its
    crowd annotations (``iscrowd: 1``) are ignore regions, not instances: their union is removed
    from both sides before the pixel and lesion counts, and they never make a scan positive.
    ``predictions``: (image_id, predicted instances); an image without an entry counts as one
    with nothing predicted. Pixel, Dice, scan and burden metrics use instances scoring at least
    ``score_thresh`` (or their class's entry in ``class_thresh``, by class name or id, as in
    post-processing); AP and the lesion detection's FROC curve use all of them, the detection's
    operating point the lesion classes' one threshold (ValueError where they differ).
    ``iou_types`` may add "bbox" to "segm".
    The scan call, lesion count and burden group of each side are
    :func:`~bsi_d2.postprocess.analysis.analyse_scan`'s, as in the report (see ``scan``).
    Keys: coco, pixel, lesion, lesion_detection (lesion by lesion: FROC, sensitivity at 0.25-4
    false positives per scan, count error; see :mod:`~bsi_d2.evaluation.detection`),
    lesion_classification (only with a benign class in the taxonomy: benign versus malignant
    hot spot by hot spot, accuracy, sensitivity, specificity, AUC and lesion false positives on
    benign truth per scan; see :mod:`~bsi_d2.evaluation.benign`), scan,
    burden (see :func:`~bsi_d2.evaluation.agreement.burden_agreement`), n_images,
    n_predicted_images, score_thresh, class_thresh, taxonomy.
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
    pixel = PixelAccumulator(taxonomy)
    detection = LesionDetectionAccumulator()
    benign_ids = taxonomy.benign_ids
    classification = BenignMalignantAccumulator() if benign_ids else None
    lesion_thresh = kind_threshold(taxonomy, "lesion", score_thresh, class_thresh)
    lesion_tp = lesion_fp = lesion_fn = 0
    per_image_dice: list[float] = []
    truth_records: list[dict] = []
    called_records: list[dict] = []
    scan_ranking: list[float] = []
    results: list[dict] = []
    for image_id, img in images.items():
        gt, ignore = ground_truth_instances(annotations[image_id], img["height"], img["width"])
        pred = predicted.get(image_id, Instances.empty(img["height"], img["width"]))
        results.extend(pred.to_coco(image_id))
        gt_masks = _outside(category_masks(gt, class_ids), ignore)
        kept = filter_by_score(pred, taxonomy, score_thresh, class_thresh)
        pred_masks = _outside(category_masks(kept, class_ids), ignore)
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
        gt_lesions = np.isin(gt.category_ids, lesion_ids)
        pred_lesions = np.isin(pred.category_ids, lesion_ids)
        detection.add(
            gt.masks[gt_lesions], pred.masks[pred_lesions], pred.scores[pred_lesions], ignore
        )
        if classification is not None:
            gt_spots = np.isin(gt.category_ids, [*lesion_ids, *benign_ids])
            calls = np.isin(kept.category_ids, [*lesion_ids, *benign_ids])
            classification.add(
                gt.masks[gt_spots],
                np.isin(gt.category_ids[gt_spots], lesion_ids),
                kept.masks[calls],
                np.isin(kept.category_ids[calls], lesion_ids),
                kept.scores[calls],
                ignore,
            )

        # the report's own analysis decides both sides; ground truth scores 1, so all of it counts
        truth_records.append(analyse_scan(gt, None, taxonomy, score_thresh=0.0).record)
        called = analyse_scan(
            pred, None, taxonomy, score_thresh=score_thresh, class_thresh=class_thresh
        )
        called_records.append(called.record)
        scan_ranking.append(abnormality_score(pred, taxonomy, score_thresh, class_thresh))

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
        "lesion_detection": detection.result(lesion_thresh),
        **({"lesion_classification": classification.result()} if classification else {}),
        "scan": scan_metrics(
            [r["abnormal"] for r in truth_records],
            [r["abnormal"] for r in called_records],
            scan_ranking,
        ),
        "burden": burden_agreement(
            [r["lesion_count"] for r in called_records],
            [r["lesion_count"] for r in truth_records],
            [r["burden_group"] for r in called_records],
            [r["burden_group"] for r in truth_records],
            BURDEN_GROUP_NAMES,
        ),
        "n_images": len(images),
        "n_predicted_images": len(predicted),
        "score_thresh": float(score_thresh),
        "class_thresh": {str(k): float(v) for k, v in (class_thresh or {}).items()},
        "taxonomy": taxonomy.name,
    }
    if output_dir is not None:
        write_evaluation(evaluation, results, output_dir)
    return evaluation


def _outside(masks: dict[int, np.ndarray], ignore: np.ndarray) -> dict[int, np.ndarray]:
    return {cid: m & ~ignore for cid, m in masks.items()} if ignore.any() else masks


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
