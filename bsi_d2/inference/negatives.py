"""Negative mining (seed 001, section 2.5): a model's lesions on scans known to be free of
metastases are false positives by definition; written back as a benign decoy class, they teach
the next training what not to call a lesion.

:func:`mine_negatives` reads a ``bsi-d2 predict`` folder of such scans (each scan's
``predictions.json`` and display image ``<key>.png``) and writes, beside it::

    OUT/images/<key>.png                            the display image the model saw
    OUT/annotations/instances_negatives.json        COCO, the converter's layout
    OUT/labelme/<key>.json                          the same instances, to review in Labelme
    OUT/negatives.json                              what was mined, scan by scan
    OUT/taxonomy.yaml                               only where a class had to be added

Each scan the model analysed (status ``ok``) gives:

- **hard negatives**: every lesion the lesion model finds in the kept predictions (duplicates
  merged, one instance per view it is seen in), on bone or outside the regions, relabelled as
  the taxonomy's ``benign`` decoy class; lesions the model itself put inside a kidney or the
  bladder are already decoy uptake and left out. Where the taxonomy has no benign class, a
  ``hard_negative`` decoy class with the next free id is added and the taxonomy written out:
  train with it (``BSI.TAXONOMY OUT/taxonomy.yaml``);
- **the rest of the image**, so that it can join a training set: the model's kept region and
  decoy instances as pseudo-labels (its benign ones too, unless a hard negative covers them);
  no lesion, as the scan is normal (``has_lesion`` false).

Every annotation is ``model_made`` with the model's ``score``; hard negatives carry
``"hard_negative": true``: the class is certain (the scan is normal), the outline is the
model's. The alternative seed 001 found better on its data, background crops (Otsu's threshold
of the uptake, lesions excluded), needs no model; it is not made here.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bsi_d2.postprocess.analysis import analyse_scan
from bsi_d2.postprocess.lesions import DUPLICATE_OVERLAP, SITE_BONE, SITE_OUTSIDE
from bsi_d2.postprocess.match import DEFAULT_MATCH_RADIUS
from bsi_d2.postprocess.rasterize import DEFAULT_SCORE_THRESH
from bsi_d2.preprocess.merge import VIEW_ORDER
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import Taxonomy, taxonomy_from_dict

logger = logging.getLogger(__name__)

HARD_NEGATIVE = "hard_negative"  # the class added to a taxonomy without a benign class
HARD_NEGATIVE_COLOR = [255, 0, 255]
COCO_FILE = "annotations/instances_negatives.json"
SUMMARY_FILE = "negatives.json"
TAXONOMY_FILE = "taxonomy.yaml"


class MiningError(ValueError):
    """A predict folder that cannot be mined; the message names the folder or file."""


@dataclass
class MiningResult:
    out_dir: Path
    taxonomy: Taxonomy  # the classes of the COCO file (the model's, or with hard_negative)
    negative_class: str
    scans: list[dict[str, Any]] = field(default_factory=list)  # one entry per scan mined
    skipped: list[dict[str, Any]] = field(default_factory=list)  # key and why
    taxonomy_file: Path | None = None  # written where hard_negative was added

    @property
    def negatives(self) -> int:
        return sum(s["hard_negatives"] for s in self.scans)

    def summary(self) -> str:
        return (
            f"{self.negatives} hard negatives ({self.negative_class}) from {len(self.scans)} "
            f"scans, {len(self.skipped)} skipped"
        )


def negative_taxonomy(taxonomy: Taxonomy) -> tuple[Taxonomy, bool]:
    """The taxonomy of the mined set and whether it adds a class: ``taxonomy`` itself where it
    has a benign class, else it plus a ``hard_negative`` decoy with the next free id."""
    if taxonomy.benign_class is not None:
        return taxonomy, False
    raw = taxonomy.to_dict()
    raw["name"] = f"{taxonomy.name}+{HARD_NEGATIVE}"
    raw["classes"].append(
        {
            "id": max(taxonomy.ids) + 1,
            "name": HARD_NEGATIVE,
            "kind": "decoy",
            "labels": [HARD_NEGATIVE],
            "color": HARD_NEGATIVE_COLOR,
            "report": "hard negative",
        }
    )
    return taxonomy_from_dict(raw, f"{taxonomy.source or taxonomy.name} + {HARD_NEGATIVE}"), True


def scan_negatives(
    instances: Instances,
    taxonomy: Taxonomy,
    score_thresh: float = DEFAULT_SCORE_THRESH,
    class_thresh: Mapping[int | str, float] | None = None,
    match_views: bool = True,
    match_radius: float = DEFAULT_MATCH_RADIUS,
) -> tuple[Instances, Instances]:
    """(hard negatives, pseudo-labels) of one normal scan's predicted ``instances``: the masks
    of each lesion the lesion model finds on bone or outside, one per view, scored with its
    best instance; and the kept region and decoy instances, less any benign one sharing half
    its pixels (or half a negative's) with a hard negative. The negatives keep the lesion
    class id: the caller relabels them."""
    analysis = analyse_scan(
        instances, None, taxonomy, score_thresh, class_thresh,
        match_views=match_views, match_radius=match_radius,
    )  # fmt: skip
    model, kept = analysis.lesions, analysis.instances
    height, width = kept.height, kept.width
    half = width // 2
    masks, scores = [], []
    for lesion in model.of_site(SITE_BONE, SITE_OUTSIDE):
        mine = model.labels == lesion.id
        for view in lesion.views:
            in_view = np.zeros_like(mine)
            cols = slice(0, half) if view == VIEW_ORDER[0] else slice(half, width)
            in_view[:, cols] = mine[:, cols]
            if in_view.any():
                masks.append(in_view)
                scores.append(lesion.score)
    lesion_id = taxonomy.lesion_ids[0] if taxonomy.lesion_ids else 0
    negatives = Instances.from_masks(height, width, [lesion_id] * len(masks), masks, scores)
    keep = np.isin(kept.category_ids, [c.id for c in taxonomy.classes if not c.is_lesion])
    for i in np.flatnonzero(keep & np.isin(kept.category_ids, taxonomy.benign_ids)):
        area = int(np.count_nonzero(kept.masks[i]))
        for mask in masks:
            shared = int(np.count_nonzero(kept.masks[i] & mask))
            if shared and shared >= DUPLICATE_OVERLAP * min(area, int(np.count_nonzero(mask))):
                keep[i] = False
                break
    return negatives, kept.select(keep)


def _read_scan(scan_dir: Path) -> tuple[Instances, Path]:
    """A scan's predicted instances and the path of its display image."""
    from bsi_d2.inference.outputs import PREDICTIONS_FILE, read_predictions

    predictions = scan_dir / PREDICTIONS_FILE
    image = scan_dir / f"{scan_dir.name}.png"
    for path, output in ((predictions, "predictions"), (image, "labelme")):
        if not path.is_file():
            raise MiningError(f"{path}: missing; predict with --outputs including {output}")
    try:
        instances = read_predictions(predictions)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise MiningError(f"{predictions}: not a predictions file: {err}") from err
    return instances, image


def _annotation(mask: np.ndarray, category_id: int, score: float, **extra: Any) -> dict:
    from bsi_d2.structures.masks import mask_area, mask_to_bbox, mask_to_rle

    return {
        "category_id": int(category_id),
        "segmentation": mask_to_rle(mask),
        "bbox": mask_to_bbox(mask),
        "area": mask_area(mask),
        "iscrowd": 0,
        "model_made": True,
        "score": round(float(score), 4),
        **extra,
    }


def mine_negatives(
    predict_dir: str | Path,
    out_dir: str | Path,
    taxonomy: Taxonomy,
    score_thresh: float = DEFAULT_SCORE_THRESH,
    class_thresh: Mapping[int | str, float] | None = None,
    match_views: bool = True,
    match_radius: float = DEFAULT_MATCH_RADIUS,
) -> MiningResult:
    """Mine the scans of a ``bsi-d2 predict`` folder (see the module docstring) into
    ``out_dir``; ``taxonomy`` is the model's, the thresholds and matching are the report's.
    A scan that was not analysed (failed, failed quality control, not assessed) is skipped."""
    import yaml

    from bsi_d2.inference.outputs import SCANS_DIR, labelme_shapes, record_paths
    from bsi_d2.io.labelme import write_labelme

    predict_dir, out_dir = Path(predict_dir), Path(out_dir)
    scans_dir = predict_dir / SCANS_DIR
    if not scans_dir.is_dir():
        raise MiningError(f"{predict_dir}: no {SCANS_DIR}/ folder: not a bsi-d2 predict output")
    out_taxonomy, added = negative_taxonomy(taxonomy)
    negative = out_taxonomy.benign_class or out_taxonomy.by_name(HARD_NEGATIVE)
    result = MiningResult(out_dir, out_taxonomy, negative.name)
    for folder in ("images", "annotations", "labelme"):
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for record_path in record_paths(scans_dir):
        scan_dir = record_path.parent
        key = scan_dir.name
        status = "unreadable"
        try:
            status = str(json.loads(record_path.read_text(encoding="utf-8")).get("status"))
        except (OSError, json.JSONDecodeError):
            pass
        if status != "ok":
            result.skipped.append({"key": key, "reason": f"status {status}"})
            continue
        instances, image = _read_scan(scan_dir)
        negatives, pseudo = scan_negatives(
            instances, taxonomy, score_thresh, class_thresh, match_views, match_radius
        )
        image_id = len(images) + 1
        file_name = f"{key}.png"
        height, width = int(instances.height), int(instances.width)
        shutil.copyfile(image, out_dir / "images" / file_name)  # the display, byte for byte
        images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "height": height,
                "width": width,
                "has_lesion": False,
                "model_made": True,
                "labelme_file": f"{key}.json",
            }
        )
        annotations += [
            {"image_id": image_id, **_annotation(m, c, s)}
            for m, c, s in zip(pseudo.masks, pseudo.category_ids, pseudo.scores, strict=True)
        ]
        annotations += [
            {"image_id": image_id, **_annotation(m, negative.id, s, hard_negative=True)}
            for m, s in zip(negatives.masks, negatives.scores, strict=True)
        ]
        relabelled = Instances.from_masks(
            height, width, [negative.id] * len(negatives), list(negatives.masks),
            list(negatives.scores),
        )  # fmt: skip
        shapes = labelme_shapes(pseudo, out_taxonomy)
        for shape in labelme_shapes(relabelled, out_taxonomy):
            shape["group_id"] = (shape["group_id"] or 0) + len(pseudo)
            shape["description"] = (
                f"hard negative: lesion score {shape['description'].rpartition(' ')[2]} "
                "on a scan known to be normal"
            )
            shapes.append(shape)
        write_labelme(
            out_dir / "labelme" / f"{key}.json",
            f"../images/{file_name}",
            height,
            width,
            shapes,
        )
        result.scans.append(
            {
                "key": key,
                "hard_negatives": len(negatives),
                "pseudo_labels": len(pseudo),
                "scores": [round(float(s), 4) for s in negatives.scores],
            }
        )
    annotations = [{"id": n, **ann} for n, ann in enumerate(annotations, start=1)]
    coco = {
        "info": {
            "description": "bsi_d2 negative mining: a model's lesions on normal scans as "
            f"{negative.name}; every annotation model-made",
        },
        "images": images,
        "annotations": annotations,
        "categories": out_taxonomy.coco_categories(),
    }
    (out_dir / COCO_FILE).write_text(json.dumps(coco), encoding="utf-8")
    if added:
        result.taxonomy_file = out_dir / TAXONOMY_FILE
        text = yaml.safe_dump(out_taxonomy.to_dict(), sort_keys=False)
        result.taxonomy_file.write_text(text, encoding="utf-8")
    summary = {
        "negative_class": {"name": negative.name, "id": negative.id},
        "taxonomy": out_taxonomy.name,
        "taxonomy_file": TAXONOMY_FILE if added else None,
        "score_thresh": float(score_thresh),
        "class_thresh": {str(k): float(v) for k, v in (class_thresh or {}).items()},
        "coco": COCO_FILE,
        "hard_negatives": result.negatives,
        "scans": result.scans,
        "skipped": result.skipped,
        "note": "false positives of a model on scans known to be free of metastases; the "
        "outlines are the model's, to be reviewed before training",
    }
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return result
