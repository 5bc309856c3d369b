"""Dataset dict -> training/inference sample, the same for both engines.

Reads 8- and 16-bit scans without clipping to 8 bits, replicates the grey image to three
channels, applies seed 000's augmentation to image and masks together, and recomputes boxes from
the transformed masks. Output (torch tensors, framework-neutral)::

    {"file_name", "image_id", "height", "width",             # height/width: the original size
     "image": float32 (3, H, W) in the image's own value scale,
     "instances": {"boxes": float32 (N, 4) XYXY, "classes": int64 (N,) contiguous ids,
                   "masks": uint8 (N, H, W)}}                 # only if the dict has annotations

With ``native_lesions`` (the dense lesion head, META_ARCHITECTURE LesionRCNN) it adds the scan
before resizing, which that head reads at native resolution, and its lesion target::

     "image_native": float32 (1, H0, W0),                    # augmented, not resized
     "lesion_target": uint8 (H0, W0)                          # 1 lesion, 255 crowd, else 0
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bsi_d2.config import LESION_META_ARCHITECTURE, ConfigValueError
from bsi_d2.data import augment as A
from bsi_d2.structures.masks import segmentation_to_mask

IMAGE_FORMATS = ("display", "counts")


class ImageReadError(ValueError):
    """An image that cannot be used; the message names the file and the problem."""


def read_grey_image(path: str | Path) -> tuple[np.ndarray, float]:
    """A scan image as (H, W) float32 in its own value scale, and the maximum its type holds.

    PNG/TIFF go through the toolkit's one image reader (:func:`bsi_d2.io.readers.image_array`),
    which keeps 16 bits (PIL mode I;16; detectron2's read_image would clip to 8) and refuses
    colour screen captures; ``.npy`` arrays (raw counts) are read as they are.
    """
    from bsi_d2.io.base import ReaderError
    from bsi_d2.io.readers import image_array

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: image file not found")
    if path.suffix.lower() == ".npy":
        array = np.load(path)
        if array.ndim != 2:
            raise ImageReadError(f"{path}: expected a 2-D array, got shape {array.shape}")
        return array.astype(np.float32), float("inf")
    try:
        array, bits = image_array(path.read_bytes(), path)
    except ReaderError as err:
        raise ImageReadError(str(err)) from err
    max_value = {8: 255.0, 16: 65535.0}.get(bits, float("inf"))
    return array.astype(np.float32), max_value


class BsiDatasetMapper:
    """Callable mapping one detectron2-format dataset dict to a sample (see module docstring).

    Build it with explicit arguments (tests, scripts) or from a config with
    :meth:`from_config`, detectron2's ``@configurable`` pattern without needing detectron2.
    """

    def __init__(
        self,
        is_train: bool = True,
        *,
        augment: A.AugmentationRanges | None = None,
        hflip: bool = False,
        hflip_prob: float = 0.5,
        flip_map: Mapping[int, int] | Sequence[int] | None = None,
        image_format: str = "display",
        min_size: Sequence[int] | int | None = None,
        max_size: int | None = None,
        native_lesions: bool = False,
        lesion_classes: Sequence[int] = (),
        rng: Any = None,
    ) -> None:
        """
        Args:
            is_train: training samples are augmented; test samples are not.
            augment: sampling ranges of seed 000's augmentation, None for none.
            hflip: flip left-right with probability ``hflip_prob`` and remap classes.
            flip_map: contiguous class id -> contiguous class id after a flip; required with
                ``hflip`` since a flip swaps the views and the sides.
            image_format: "display" reads ``file_name``; "counts" reads ``counts_file_name``.
            min_size, max_size: detectron2's ResizeShortestEdge (a random choice of ``min_size``
                when training); None keeps the native size.
            native_lesions: add ``image_native`` and ``lesion_target`` (module docstring).
            lesion_classes: contiguous ids of the lesion classes, for ``lesion_target``.
            rng: a NumPy Generator; None uses ``np.random``, which the data loaders seed.
        """
        if image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format {image_format!r} is not one of {IMAGE_FORMATS}")
        if hflip and flip_map is None:
            raise ValueError("hflip needs a flip_map: a flip swaps views and left/right classes")
        self.is_train = is_train
        self.augment = augment if is_train else None
        self.hflip = hflip and is_train
        self.hflip_prob = float(hflip_prob)
        self.flip_map = flip_map if flip_map is not None else {}
        self.image_format = image_format
        if isinstance(min_size, int):
            min_size = (min_size,)
        self.min_size = tuple(int(s) for s in min_size) if min_size else None
        self.max_size = int(max_size) if max_size else None
        self.native_lesions = bool(native_lesions)
        self.lesion_classes = tuple(int(c) for c in lesion_classes)
        self.rng = rng  # None: np.random at call time (a module does not pickle into workers)

    @classmethod
    def from_config(cls, cfg: Any, is_train: bool = True) -> BsiDatasetMapper:
        """Arguments from INPUT.* and BSI.TAXONOMY of a bsi_d2 config."""
        from bsi_d2.taxonomy import load_taxonomy

        aug = cfg.INPUT.BSI_AUG
        ranges = None
        if is_train and aug.ENABLED:
            ranges = A.AugmentationRanges(
                rotation=tuple(float(v) for v in aug.ROTATION),
                scale=tuple(float(v) for v in aug.SCALE),
                brightness=tuple(float(v) for v in aug.BRIGHTNESS),
            )
        flip_map = None
        taxonomy = load_taxonomy(cfg.BSI.TAXONOMY)
        if aug.HFLIP:
            flip_map = contiguous_flip_map(taxonomy)
        if is_train:
            min_size, max_size = cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN
            if cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING != "choice":
                raise ConfigValueError("INPUT.MIN_SIZE_TRAIN_SAMPLING: only 'choice' is supported")
        else:
            min_size, max_size = cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST
        return cls(
            is_train,
            augment=ranges,
            hflip=bool(aug.HFLIP),
            hflip_prob=float(aug.HFLIP_PROB),
            flip_map=flip_map,
            image_format=str(cfg.INPUT.INTENSITY),
            min_size=min_size,
            max_size=max_size,
            native_lesions=cfg.MODEL.META_ARCHITECTURE == LESION_META_ARCHITECTURE,
            lesion_classes=[taxonomy.id_to_contiguous[i] for i in taxonomy.lesion_ids],
        )

    # -- the mapping ------------------------------------------------------------------------
    def __call__(self, dataset_dict: dict[str, Any]) -> dict[str, Any]:
        path = dataset_dict["file_name"]
        if self.image_format == "counts":
            if not dataset_dict.get("counts_file_name"):
                raise ImageReadError(f"{path}: INPUT.INTENSITY counts but no counts_file_name")
            path = dataset_dict["counts_file_name"]
        image, max_value = read_grey_image(path)
        height = int(dataset_dict.get("height", image.shape[0]))
        width = int(dataset_dict.get("width", image.shape[1]))
        if image.shape != (height, width):
            raise ImageReadError(
                f"{path}: image is {image.shape[0]} x {image.shape[1]}, "
                f"the annotation says {height} x {width}"
            )
        return self.map_image(image, dataset_dict, max_value, source=str(path))

    def map_image(
        self,
        image: np.ndarray,
        dataset_dict: dict[str, Any] | None = None,
        max_value: float | None = None,
        source: str = "<array>",
    ) -> dict[str, Any]:
        """The sample for an (H, W) grey image already in memory (e.g. a merged scan being
        predicted); ``dataset_dict`` adds annotations and ids, ``max_value`` is the range
        brightness is clipped to."""
        import torch

        record = copy.copy(dataset_dict or {})
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 2:
            raise ImageReadError(f"{source}: expected a grey (H, W) image, got {image.shape}")
        height, width = image.shape
        record.setdefault("height", height)
        record.setdefault("width", width)
        annotations = record.pop("annotations", None)
        masks, classes = self._decode(annotations, height, width, source)
        crowd = 0
        if self.native_lesions and annotations:
            # crowd regions ride along through the augmentation, then mark the target's ignore
            crowd_masks = self._decode_crowd(annotations, height, width)
            crowd = len(crowd_masks)
            masks = np.concatenate([masks, crowd_masks]) if crowd else masks

        rng = self.rng if self.rng is not None else np.random
        if self.augment is not None:
            params = A.sample_params(self.augment, rng)
            image, masks = A.apply_augmentation(image, masks, params, max_value)
        if self.hflip and rng.random() < self.hflip_prob:
            image = A.hflip_image(image)
            masks = A.hflip_masks(masks)
            classes = A.remap_classes(classes, self.flip_map)
        if self.native_lesions:
            record["image_native"] = torch.from_numpy(np.ascontiguousarray(image[None]))
            if annotations is not None:
                record["lesion_target"] = self._lesion_target(masks, classes, crowd)
            if crowd:
                masks = masks[: len(masks) - crowd]

        if self.min_size:
            short_edge = int(rng.choice(self.min_size)) if self.is_train else self.min_size[-1]
            new_h, new_w = A.shortest_edge_size(
                height, width, short_edge, self.max_size or max(height, width) * 4
            )
            image = A.resize_image(image, new_h, new_w)
            masks = A.resize_masks(masks, new_h, new_w)

        image3 = np.repeat(image[None], 3, axis=0)
        record["image"] = torch.from_numpy(np.ascontiguousarray(image3, dtype=np.float32))
        if annotations is not None:
            keep = A.nonempty(masks)
            masks = masks[keep]
            record["instances"] = {
                "boxes": torch.from_numpy(A.masks_to_boxes(masks)),
                "classes": torch.from_numpy(classes[keep].astype(np.int64)),
                "masks": torch.from_numpy(np.ascontiguousarray(masks, dtype=np.uint8)),
            }
        return record

    def _lesion_target(self, masks: np.ndarray, classes: np.ndarray, crowd: int) -> Any:
        import torch

        things = masks[: len(masks) - crowd]
        target = np.zeros(masks.shape[1:], dtype=np.uint8)
        lesion = np.isin(classes, self.lesion_classes)
        if lesion.any():
            target[things[lesion].any(axis=0)] = 1
        if crowd:
            target[masks[len(masks) - crowd :].any(axis=0)] = 255
        return torch.from_numpy(target)

    @staticmethod
    def _decode_crowd(annotations: list[dict[str, Any]], height: int, width: int) -> np.ndarray:
        crowd = [a for a in annotations if a.get("iscrowd", 0) and "segmentation" in a]
        return _stack_masks(crowd, height, width)

    @staticmethod
    def _decode(
        annotations: list[dict[str, Any]] | None, height: int, width: int, path: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W) uint8 masks and (N,) classes of the non-crowd annotations."""
        things = [a for a in annotations or [] if not a.get("iscrowd", 0)]
        if any("segmentation" not in a for a in things):
            raise ValueError(f"{path}: an annotation without segmentation cannot train masks")
        masks = _stack_masks(things, height, width)
        classes = np.array([int(a["category_id"]) for a in things], dtype=np.int64)
        return masks, classes


def _stack_masks(annotations: list[dict[str, Any]], height: int, width: int) -> np.ndarray:
    """(N, H, W) uint8 masks of annotations that all have a segmentation."""
    masks = np.zeros((len(annotations), height, width), dtype=np.uint8)
    for i, ann in enumerate(annotations):
        masks[i] = segmentation_to_mask(ann["segmentation"], height, width)
    return masks


def contiguous_flip_map(taxonomy: Any) -> dict[int, int]:
    """The taxonomy's flip map (class id -> class id) in contiguous ids."""
    to_c = taxonomy.id_to_contiguous
    return {to_c[a]: to_c[b] for a, b in taxonomy.flip_map.items()}
