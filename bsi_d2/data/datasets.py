"""Every bsi_d2 data set, registered in one place from the converter's output layout.

Layout (``bsi-d2 convert``)::

    ROOT/images/<file_name>
    ROOT/annotations/instances_{all,train,val,test}.json
    ROOT/annotations/fold{K}/instances_{train,val,test}.json

Names: ``bsi_{all,train,val,test}`` and ``bsi_fold{K}_{train,val,test}``. A small catalog of our
own holds them so the torchvision engine works without detectron2; where detectron2 is installed
the same loaders and metadata also go into its DatasetCatalog / MetadataCatalog.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bsi_d2.taxonomy import Taxonomy, load_taxonomy

logger = logging.getLogger(__name__)

ENV_ROOT = "BSI_D2_DATASETS"
DEFAULT_ROOT = "datasets/bsi"
BOX_MODE_XYWH_ABS = 1  # detectron2's BoxMode.XYWH_ABS, as an int so no import is needed

# name -> annotation file relative to ROOT
_SPLITS: dict[str, str] = {
    "bsi_all": "annotations/instances_all.json",
    "bsi_train": "annotations/instances_train.json",
    "bsi_val": "annotations/instances_val.json",
    "bsi_test": "annotations/instances_test.json",
}
_FOLD_DIR = re.compile(r"^fold(\d+)$")
_FOLD_SPLITS = ("train", "val", "test")

_LOADERS: dict[str, Callable[[], list[dict[str, Any]]]] = {}
_METADATA: dict[str, dict[str, Any]] = {}


class DatasetError(ValueError):
    """A data set that cannot be read; the message names the file and the problem."""


class DatasetNotRegisteredError(DatasetError, KeyError):
    """A data set name the config uses but no annotation file under the root provides."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


# -- our catalog ----------------------------------------------------------------------------
def register_dataset(
    name: str, loader: Callable[[], list[dict[str, Any]]], metadata: dict[str, Any]
) -> None:
    """Register (or replace) ``name`` in our catalog and, if installed, in detectron2's."""
    _LOADERS[name] = loader
    _METADATA[name] = dict(metadata)
    if importlib.util.find_spec("detectron2") is None:
        return
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(**metadata)


def registered_names() -> list[str]:
    return sorted(_LOADERS)


def get_dataset_dicts(name: str) -> list[dict[str, Any]]:
    """detectron2-format dicts of a registered data set."""
    if name not in _LOADERS:
        raise DatasetNotRegisteredError(
            f"data set {name!r} is not registered (registered: {registered_names() or 'none'}); "
            f"is BSI.DATASET_ROOT or ${ENV_ROOT} the converter's output folder, and does it hold "
            "the annotation file for this split?"
        )
    return _LOADERS[name]()


def get_metadata(name: str) -> dict[str, Any]:
    if name not in _METADATA:
        raise DatasetNotRegisteredError(f"data set {name!r} is not registered")
    return dict(_METADATA[name])


def num_images(name: str) -> int:
    return len(get_dataset_dicts(name))


# -- the layout -----------------------------------------------------------------------------
def _get_meta(taxonomy: Taxonomy) -> dict[str, Any]:
    """Metadata shared by every split: classes, colours, id mapping, evaluator type."""
    return {**taxonomy.metadata(), "evaluator_type": "coco"}


def dataset_splits(root: str | os.PathLike) -> dict[str, str]:
    """name -> annotation file (relative to root) for every split present under ``root``."""
    root = Path(root)
    splits = {name: rel for name, rel in _SPLITS.items() if (root / rel).is_file()}
    annotations = root / "annotations"
    if annotations.is_dir():
        for fold_dir in sorted(annotations.iterdir()):
            match = _FOLD_DIR.match(fold_dir.name)
            if not (match and fold_dir.is_dir()):
                continue
            for split in _FOLD_SPLITS:
                rel = f"annotations/{fold_dir.name}/instances_{split}.json"
                if (root / rel).is_file():
                    splits[f"bsi_fold{int(match.group(1))}_{split}"] = rel
    return splits


_REGISTERED: dict[str, tuple[str, str]] = {}  # name -> (root, taxonomy source) it came from


def register_all(
    root: str | os.PathLike | None = None, taxonomy: Taxonomy | str | None = None
) -> list[str]:
    """Register every split found under ``root`` (default: env BSI_D2_DATASETS, then
    ``datasets/bsi``). Registering the same root and taxonomy again is a no-op; another root
    replaces the earlier registration of the same names. Returns the names registered."""
    root = Path(root or os.environ.get(ENV_ROOT, DEFAULT_ROOT)).expanduser().resolve()
    tax = load_taxonomy(taxonomy)
    key = (str(root), tax.source or tax.name)
    meta = _get_meta(tax)
    splits = dataset_splits(root)
    if not splits:
        logger.warning("no annotations/instances_*.json under %s: no data set registered", root)
    for name, rel in splits.items():
        if _REGISTERED.get(name) == key:
            continue
        json_file = root / rel
        image_root = root / "images"
        loader = partial(load_bsi_coco_json, json_file, image_root, tax)
        register_dataset(
            name, loader, {**meta, "json_file": str(json_file), "image_root": str(image_root)}
        )
        _REGISTERED[name] = key
    return sorted(splits)


# -- the loader -----------------------------------------------------------------------------
def load_bsi_coco_json(
    json_file: str | os.PathLike, image_root: str | os.PathLike, taxonomy: Taxonomy | str | None
) -> list[dict[str, Any]]:
    """A COCO instances file -> detectron2-format dicts (read with pycocotools).

    Category ids become the taxonomy's contiguous ids; images without annotations (negative
    samples) are kept; polygons with fewer than three points are dropped (as detectron2 does);
    uncompressed RLE is compressed. Raises :class:`DatasetError` naming the file for bad input.
    """
    from pycocotools.coco import COCO

    json_file = Path(json_file)
    image_root = Path(image_root)
    tax = load_taxonomy(taxonomy)
    if not json_file.is_file():
        raise DatasetError(f"{json_file}: annotation file not found")
    try:
        coco = COCO(str(json_file))
    except (ValueError, KeyError, TypeError) as err:
        raise DatasetError(f"{json_file}: not a COCO instances file: {err}") from err
    to_contiguous = tax.id_to_contiguous
    unknown = sorted(set(coco.getCatIds()) - set(to_contiguous))
    if unknown:
        raise DatasetError(
            f"{json_file}: category ids {unknown} are not in taxonomy {tax.name!r} "
            f"(ids {sorted(to_contiguous)})"
        )

    dicts = []
    for image_id in sorted(coco.getImgIds()):
        img = coco.imgs[image_id]
        record: dict[str, Any] = {
            "file_name": str(image_root / img["file_name"]),
            "height": int(img["height"]),
            "width": int(img["width"]),
            "image_id": image_id,
        }
        if "has_lesion" in img:
            record["has_lesion"] = bool(img["has_lesion"])
        if img.get("counts_file_name"):
            record["counts_file_name"] = str(image_root / img["counts_file_name"])
        annotations = []
        for ann in coco.imgToAnns.get(image_id, []):
            obj = _annotation_record(ann, record, to_contiguous, json_file)
            if obj is not None:
                annotations.append(obj)
        record["annotations"] = annotations
        dicts.append(record)
    return dicts


def _annotation_record(
    ann: dict[str, Any], image: dict[str, Any], to_contiguous: dict[int, int], json_file: Path
) -> dict[str, Any] | None:
    from pycocotools import mask as mask_util

    where = f"{json_file}: annotation {ann.get('id')} of image {image['image_id']}"
    if "bbox" not in ann or "category_id" not in ann:
        raise DatasetError(f"{where}: needs 'bbox' and 'category_id'")
    obj: dict[str, Any] = {
        "bbox": [float(v) for v in ann["bbox"]],
        "bbox_mode": BOX_MODE_XYWH_ABS,
        "category_id": to_contiguous[int(ann["category_id"])],
        "iscrowd": int(ann.get("iscrowd", 0)),
    }
    segm = ann.get("segmentation")
    if isinstance(segm, dict):
        if isinstance(segm.get("counts"), list):
            segm = mask_util.frPyObjects(segm, *segm["size"])
            segm["counts"] = segm["counts"].decode("ascii")
        obj["segmentation"] = segm
    elif isinstance(segm, list):
        polygons = [list(map(float, p)) for p in segm if len(p) % 2 == 0 and len(p) >= 6]
        if not polygons:
            logger.warning("%s: no polygon with three or more points; annotation skipped", where)
            return None
        obj["segmentation"] = polygons
    elif segm is not None:
        raise DatasetError(f"{where}: segmentation is neither polygons nor RLE")
    return obj
