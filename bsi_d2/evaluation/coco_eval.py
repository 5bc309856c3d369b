"""COCO ground truth for evaluation, and COCO mask (and box) AP per class with pycocotools'
COCOeval, quietly (COCOeval itself ignores detections matched to crowd regions)."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bsi_d2.structures.instances import Instances
from bsi_d2.structures.masks import mask_area, mask_to_bbox, segmentation_to_mask
from bsi_d2.taxonomy import Taxonomy

SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


class GroundTruthError(ValueError):
    """A ground-truth COCO file that cannot be scored; the message names the file."""


def load_ground_truth(source: str | Path | dict) -> tuple[dict, str]:
    """A COCO instances dict and a name for messages, from a path or a dict (copied)."""
    if isinstance(source, dict):
        data, where = copy.deepcopy(source), "<ground-truth dict>"
    else:
        path = Path(source)
        where = str(path)
        if not path.is_file():
            raise GroundTruthError(f"{path}: ground-truth COCO file not found")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise GroundTruthError(f"{path}: not a JSON file: {err}") from err
    for key in ("images", "annotations"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise GroundTruthError(f"{where}: a COCO instances file needs a list under {key!r}")
    for i, img in enumerate(data["images"]):
        if not all(k in img for k in ("id", "height", "width")):
            raise GroundTruthError(f"{where}: images[{i}] needs 'id', 'height' and 'width'")
    return data, where


def prepare_ground_truth(data: dict, taxonomy: Taxonomy) -> dict:
    """Fill what COCOeval needs and annotation tools often leave out (ids, area, iscrowd, bbox,
    categories), without changing any mask."""
    images = {img["id"]: img for img in data["images"]}
    data.setdefault("categories", taxonomy.coco_categories())
    data.setdefault("info", {})
    for i, ann in enumerate(data["annotations"]):
        ann.setdefault("id", i + 1)
        ann.setdefault("iscrowd", 0)
        if "area" not in ann or "bbox" not in ann:
            img = images[ann["image_id"]]
            mask = segmentation_to_mask(ann["segmentation"], img["height"], img["width"])
            ann.setdefault("area", float(mask_area(mask)))
            ann.setdefault("bbox", mask_to_bbox(mask))
    return data


def ground_truth_instances(
    annotations: Sequence[dict], height: int, width: int
) -> tuple[Instances, np.ndarray]:
    """One image's ground-truth instances and its ignore mask, the union of its crowd regions
    (``iscrowd: 1``, e.g. Labelme ``__ignore__`` shapes), which are no instance of any class."""
    things = [a for a in annotations if not a.get("iscrowd", 0)]
    ignore = np.zeros((height, width), dtype=bool)
    for ann in annotations:
        if ann.get("iscrowd", 0):
            ignore |= segmentation_to_mask(ann["segmentation"], height, width).astype(bool)
    return Instances.from_coco(things, height, width), ignore


def coco_ap(
    ground_truth: dict,
    results: Sequence[dict[str, Any]],
    taxonomy: Taxonomy,
    iou_type: str = "segm",
) -> dict:
    """COCO AP summary and AP per class, as fractions 0..1 like every other metric here.

    ``ground_truth`` is a prepared COCO dict (see :func:`prepare_ground_truth`); ``results`` are
    COCO result records. Classes without ground truth have AP None.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    # a class with crowd regions only has nothing to find: AP None, as pycocotools has it
    gt_ids = sorted({a["category_id"] for a in ground_truth["annotations"] if not a.get("iscrowd")})
    names = {c.id: c.name for c in taxonomy.classes}
    empty = {k: None for k in SUMMARY_KEYS}
    if not gt_ids:
        return {**empty, "per_class": {n: None for n in names.values()}}
    records = [dict(r) for r in results]
    if iou_type == "segm":
        for r in records:
            r.pop("bbox", None)  # loadRes would otherwise take the box's area for the mask's
    if not records:
        per_class = {n: (0.0 if cid in gt_ids else None) for cid, n in names.items()}
        return {**{k: 0.0 for k in SUMMARY_KEYS}, "per_class": per_class}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        dt = gt.loadRes(records)
        ev = COCOeval(gt, dt, iou_type)
        ev.params.catIds = gt_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    summary = {k: _defined(v) for k, v in zip(SUMMARY_KEYS, ev.stats[:6], strict=True)}
    precision = ev.eval["precision"]  # (iou, recall, class, area, max_dets)
    per_class: dict[str, float | None] = {n: None for n in names.values()}
    for k, cid in enumerate(gt_ids):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        per_class[names.get(cid, str(cid))] = float(p.mean()) if p.size else None
    return {**summary, "per_class": per_class}


def _defined(value: float) -> float | None:
    return None if value < 0 else float(value)
