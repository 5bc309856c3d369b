"""Every bsi_d2 data set, registered in one place from the converter's output layout.

Layout (``bsi-d2 convert``)::

    ROOT/images/<file_name>
    ROOT/annotations/instances_{all,train,val,test}.json
    ROOT/annotations/fold{K}/instances_{train,val,test}.json

Names: ``bsi_{all,train,val,test}`` and ``bsi_fold{K}_{train,val,test}``. A small catalog of our
own holds them so the torchvision engine works without detectron2; where detectron2 is installed
the same loaders and metadata also go into its DatasetCatalog / MetadataCatalog.

Training reads :func:`training_dataset_dicts`, the one place both engines get their training
images from: DATASETS.TRAIN, plus, with DATASETS.PSEUDO, pseudo-labelled scans mixed in so that
they are DATASETS.PSEUDO_RATIO of the samples (:func:`mix_pseudo_labelled`).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import random
import re
from collections.abc import Callable, Sequence
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
        if img.get("model_made"):
            record["model_made"] = True
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
    if ann.get("model_made"):
        obj["model_made"] = True
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


# -- training: labelled plus pseudo-labelled ------------------------------------------------
def coco_image_root(json_file: str | os.PathLike) -> Path:
    """Where a COCO file's ``file_name`` entries are relative to: ``ROOT/images`` for a file
    under the converter's ``ROOT/annotations/`` (fold folders too), else the file's folder (as
    ``bsi-d2 pseudo-label`` writes its ``pseudo_labels.json``)."""
    json_file = Path(json_file)
    for parent in json_file.parents:
        if parent.name == "annotations" and (parent.parent / "images").is_dir():
            return parent.parent / "images"
    return json_file.parent


def pseudo_dataset_dicts(
    source: str | os.PathLike, taxonomy: Taxonomy | str | None = None
) -> list[dict[str, Any]]:
    """DATASETS.PSEUDO's scans: a registered data set's name, else a COCO file (images found by
    :func:`coco_image_root`). Every one is marked ``model_made``, whatever its file says."""
    name = str(source)
    if name in _LOADERS:
        dicts = get_dataset_dicts(name)
    else:
        path = Path(name).expanduser()
        if not path.is_file():
            raise DatasetError(
                f"{path}: DATASETS.PSEUDO is neither a registered data set nor a COCO file"
            )
        dicts = load_bsi_coco_json(path, coco_image_root(path), taxonomy)
    return [{**d, "model_made": True} for d in dicts]


def filter_empty_annotations(dicts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The dicts with at least one non-crowd annotation (DATALOADER.FILTER_EMPTY_ANNOTATIONS)."""
    return [d for d in dicts if any(not a.get("iscrowd", 0) for a in d.get("annotations", []))]


def pseudo_sample_count(labelled: int, pseudo: int, ratio: float) -> int:
    """How many pseudo-labelled samples one pass over the mix holds so that they are ``ratio``
    of it: ``round(ratio / (1 - ratio) * labelled)``; all of them at ratio 1 (no labelled
    sample), none at ratio 0 or without any."""
    ratio = float(ratio)
    if not 0.0 <= ratio <= 1.0 or math.isnan(ratio):
        raise DatasetError(f"DATASETS.PSEUDO_RATIO must lie in [0, 1], got {ratio}")
    if pseudo == 0 or ratio == 0.0:
        return 0
    if ratio == 1.0:
        return pseudo
    return int(round(ratio / (1.0 - ratio) * labelled))


def mix_pseudo_labelled(
    labelled: Sequence[dict[str, Any]],
    pseudo: Sequence[dict[str, Any]],
    ratio: float,
    seed: int,
) -> list[dict[str, Any]]:
    """One pass of the training mix: every labelled dict once (none at ratio 1), then
    :func:`pseudo_sample_count` pseudo-labelled ones, drawn in whole seeded permutations of
    ``pseudo`` (each used as evenly as the count allows: k or k + 1 times), so that the sampler
    that shuffles the pass sees the pseudo-labelled scans as ``ratio`` of its samples. The same
    ``seed`` gives the same mix."""
    count = pseudo_sample_count(len(labelled), len(pseudo), ratio)
    rng = random.Random(int(seed))
    drawn: list[dict[str, Any]] = []
    while len(drawn) < count:
        order = list(range(len(pseudo)))
        rng.shuffle(order)
        drawn.extend(pseudo[i] for i in order[: count - len(drawn)])
    return [*([] if float(ratio) == 1.0 else labelled), *drawn]


def training_dataset_dicts(cfg: Any, seed: int | None = None) -> list[dict[str, Any]]:
    """The dicts both engines train on: DATASETS.TRAIN (without images that have no
    annotation where DATALOADER.FILTER_EMPTY_ANNOTATIONS), and with DATASETS.PSEUDO the
    pseudo-labelled scans mixed in by :func:`mix_pseudo_labelled` at DATASETS.PSEUDO_RATIO,
    drawn with ``seed`` (default SEED; a negative SEED draws one, logged)."""
    from bsi_d2.config import cfg_get

    filter_empty = bool(cfg_get(cfg, "DATALOADER.FILTER_EMPTY_ANNOTATIONS"))
    labelled = [d for name in cfg_get(cfg, "DATASETS.TRAIN") for d in get_dataset_dicts(name)]
    if filter_empty:
        kept = filter_empty_annotations(labelled)
        if len(kept) < len(labelled):
            logger.info(
                "removed %d images without annotations (DATALOADER.FILTER_EMPTY_ANNOTATIONS)",
                len(labelled) - len(kept),
            )
        labelled = kept
    source = str(cfg_get(cfg, "DATASETS.PSEUDO", "") or "")
    if not source:
        return labelled
    pseudo = pseudo_dataset_dicts(source, cfg_get(cfg, "BSI.TAXONOMY", None) or None)
    if filter_empty:
        pseudo = filter_empty_annotations(pseudo)
    ratio = float(cfg_get(cfg, "DATASETS.PSEUDO_RATIO"))
    if not pseudo:
        logger.warning("DATASETS.PSEUDO %s holds no annotated scan: labelled data only", source)
    if seed is None:
        seed = int(cfg_get(cfg, "SEED"))
    if seed < 0:
        seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
        logger.info("SEED < 0: pseudo-label mix drawn with seed %d", seed)
    mix = mix_pseudo_labelled(labelled, pseudo, ratio, seed)
    drawn = pseudo_sample_count(len(labelled), len(pseudo), ratio)
    logger.info(
        "training on %d labelled and %d pseudo-labelled samples per pass (DATASETS.PSEUDO_RATIO"
        " %.2f, %d pseudo-labelled scans)",
        len(mix) - drawn,
        drawn,
        ratio,
        len(pseudo),
    )
    return mix
