"""Framework-neutral predicted or ground-truth instances of one image.

Both model engines return this, and post-processing, evaluation and reports read it, so nothing
downstream of the engine knows whether detectron2 or torchvision produced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bsi_d2.structures.masks import mask_to_bbox, mask_to_rle, segmentation_to_mask


@dataclass
class Instances:
    """N instances on an (height, width) image; category ids are the taxonomy's ids."""

    height: int
    width: int
    boxes: np.ndarray  # (N, 4) float32, XYXY absolute pixels
    scores: np.ndarray  # (N,) float32; 1.0 for ground truth
    category_ids: np.ndarray  # (N,) int64
    masks: np.ndarray  # (N, H, W) bool
    # the dense lesion head's (H, W) probability map, where the model has one
    lesion_probability: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def __post_init__(self) -> None:
        n = len(self.scores)
        if not (len(self.boxes) == len(self.category_ids) == len(self.masks) == n):
            raise ValueError("boxes, scores, category_ids and masks must have the same length")
        if n and self.masks.shape[1:] != (self.height, self.width):
            raise ValueError(f"masks {self.masks.shape[1:]} != image ({self.height}, {self.width})")

    @classmethod
    def empty(cls, height: int, width: int) -> Instances:
        return cls(
            height,
            width,
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.float32),
            np.zeros((0,), np.int64),
            np.zeros((0, height, width), bool),
        )

    def select(self, keep: np.ndarray) -> Instances:
        return Instances(
            self.height,
            self.width,
            self.boxes[keep],
            self.scores[keep],
            self.category_ids[keep],
            self.masks[keep],
            self.lesion_probability,
        )

    @classmethod
    def cat(cls, parts: list[Instances]) -> Instances:
        """One Instances of several on the same image, in order (detectron2's ``cat``)."""
        if not parts:
            raise ValueError("Instances.cat needs at least one Instances")
        height, width = parts[0].height, parts[0].width
        if any((p.height, p.width) != (height, width) for p in parts):
            raise ValueError("Instances.cat: all parts must be of one image size")
        return cls(
            height,
            width,
            np.concatenate([p.boxes for p in parts]).astype(np.float32).reshape(-1, 4),
            np.concatenate([p.scores for p in parts]).astype(np.float32),
            np.concatenate([p.category_ids for p in parts]).astype(np.int64),
            np.concatenate([p.masks for p in parts]).astype(bool).reshape(-1, height, width),
            next((p.lesion_probability for p in parts if p.lesion_probability is not None), None),
        )

    def to_coco(self, image_id: int | str) -> list[dict[str, Any]]:
        """COCO result records (``segmentation`` as compressed RLE, ``bbox`` XYWH)."""
        records = []
        for i in range(len(self)):
            records.append(
                {
                    "image_id": image_id,
                    "category_id": int(self.category_ids[i]),
                    "score": float(self.scores[i]),
                    "bbox": mask_to_bbox(self.masks[i]),
                    "segmentation": mask_to_rle(self.masks[i]),
                }
            )
        return records

    @classmethod
    def from_coco(cls, records: list[dict[str, Any]], height: int, width: int) -> Instances:
        """From COCO annotations or results (``score`` defaults to 1.0, ground truth)."""
        return cls.from_masks(
            height,
            width,
            [int(r["category_id"]) for r in records],
            [segmentation_to_mask(r["segmentation"], height, width) for r in records],
            [float(r.get("score", 1.0)) for r in records],
        )

    @classmethod
    def from_masks(
        cls,
        height: int,
        width: int,
        category_ids: list[int],
        masks: list[np.ndarray],
        scores: list[float] | None = None,
    ) -> Instances:
        """From (H, W) masks, boxes taken from the masks; ``scores`` default to 1.0 (ground
        truth, annotations)."""
        if not masks:
            return cls.empty(height, width)
        stacked = np.stack([np.asarray(m, dtype=bool) for m in masks])
        boxes = np.array([_xyxy(mask_to_bbox(m)) for m in stacked], dtype=np.float32)
        return cls(
            height,
            width,
            boxes,
            np.ones(len(masks), np.float32) if scores is None else np.array(scores, np.float32),
            np.array(category_ids, dtype=np.int64),
            stacked,
        )


def _xyxy(xywh: list[float]) -> list[float]:
    x, y, w, h = xywh
    return [x, y, x + w, y + h]
