"""``bsi-d2 evaluate``: score a COCO results file (RLE masks) against COCO ground truth."""

from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict
from pathlib import Path

from bsi_d2.commands._args import add_out_argument, add_taxonomy_argument
from bsi_d2.evaluation import evaluate_dataset, format_pixel_table
from bsi_d2.evaluation.coco_eval import GroundTruthError, load_ground_truth
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import TaxonomyError, load_taxonomy

HELP = "score predictions against COCO ground truth"
logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt", required=True, type=Path, help="COCO instances JSON (ground truth)")
    parser.add_argument(
        "--predictions",
        required=True,
        type=Path,
        help="COCO results JSON: list of {image_id, category_id, score, segmentation (RLE)}",
    )
    add_taxonomy_argument(parser)
    add_out_argument(parser, "folder for evaluation.json etc. (default: print only)", default=None)
    parser.add_argument(
        "--score-thresh",
        type=float,
        default=0.5,
        help="minimum score for pixel, Dice and scan metrics (AP uses all)",
    )
    parser.add_argument("--bbox", action="store_true", help="also report box AP")


def load_results(path: Path, images: dict[int, dict]) -> list[tuple[int, Instances]]:
    """COCO result records grouped into (image_id, Instances) on the ground truth's image sizes."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: predictions file not found")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a JSON file: {err}") from err
    if not isinstance(records, list):
        raise ValueError(f"{path}: a COCO results file is a list of records")
    by_image: dict[int, list[dict]] = defaultdict(list)
    for i, rec in enumerate(records):
        missing = {"image_id", "category_id", "segmentation"} - set(rec)
        if missing:
            raise ValueError(f"{path}: record {i} lacks {sorted(missing)}")
        by_image[rec["image_id"]].append(rec)
    out = []
    for image_id, recs in by_image.items():
        if image_id not in images:
            logger.warning("%s: image id %r is not in the ground truth; ignored", path, image_id)
            continue
        img = images[image_id]
        out.append((image_id, Instances.from_coco(recs, img["height"], img["width"])))
    return out


def main(args: argparse.Namespace) -> int:
    try:
        taxonomy = load_taxonomy(args.taxonomy)
        gt, _ = load_ground_truth(args.gt)
        predictions = load_results(args.predictions, {img["id"]: img for img in gt["images"]})
        result = evaluate_dataset(
            gt,
            predictions,
            taxonomy,
            args.out,
            args.score_thresh,
            iou_types=("segm", "bbox") if args.bbox else ("segm",),
        )
    except (GroundTruthError, TaxonomyError, FileNotFoundError, ValueError) as err:
        logger.error("%s", err)
        return 2
    print(format_pixel_table(result))
    segm = result["coco"]["segm"]
    print(f"mask AP {_fmt(segm['AP'])}  AP50 {_fmt(segm['AP50'])}")
    lesion, scan = result["lesion"], result["scan"]
    print(
        f"lesion Dice pooled {_fmt(lesion['dice_pooled'])}  "
        f"mean per image {_fmt(lesion['dice_mean_per_image'])}"
    )
    print(
        f"scans: sensitivity {_fmt(scan['sensitivity'])}  specificity "
        f"{_fmt(scan['specificity'])}  accuracy {_fmt(scan['accuracy'])}  AUC {_fmt(scan['auc'])}"
        f"  ({scan['n_pos']} positive, {scan['n_neg']} negative)"
    )
    burden = result["burden"]
    print(
        f"lesion count: mean absolute error {_fmt(burden['count_mean_absolute_error'])}  "
        f"mean error {_fmt(burden['count_mean_signed_error'])}  "
        f"exact {_fmt(burden['count_exact_agreement'])}; burden group agreement "
        f"{_fmt(burden['group_agreement'])}  kappa {_fmt(burden['group_kappa'])}"
        f"  ({burden['n']} scans)"
    )
    if args.out is not None:
        print(f"written to {args.out}")
    return 0


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
