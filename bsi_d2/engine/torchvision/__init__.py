"""The torchvision engine: torchvision's Mask R-CNN built from the same detectron2 YAML.

``model`` builds it (refusing keys it cannot honour), ``trainer`` trains it; checkpoints carry
``"engine": "torchvision"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from bsi_d2.engine.base import Engine, register_engine
from bsi_d2.structures.instances import Instances

ENGINE = "torchvision"
MASK_THRESHOLD = 0.5


@register_engine
class TorchvisionEngine(Engine):
    name = ENGINE

    def build_model(self, cfg: Any) -> Any:
        from bsi_d2.engine.torchvision.model import build_tv_model

        return build_tv_model(cfg)

    def load_weights(self, model: Any, weights: str) -> None:
        from bsi_d2.engine.checkpoint import load_model_weights

        load_model_weights(model, weights)

    def train(self, cfg: Any, resume: bool = False) -> dict[str, Any]:
        from bsi_d2.engine.torchvision import trainer

        return trainer.train(cfg, resume=resume)

    def evaluate(self, cfg: Any, weights: str | None = None) -> dict[str, Any]:
        from bsi_d2.engine.torchvision import trainer

        return trainer.evaluate(cfg, weights)

    def forward(self, model: Any, inputs: Sequence[dict[str, Any]], taxonomy: Any) -> list[Any]:
        from bsi_d2.engine.lesion_head import dense_lesions

        device = next(model.parameters()).device
        images = [item["image"].to(device).float() for item in inputs]
        head = getattr(model, "lesion_head", None)
        if head is None:
            outputs = model(images)
        else:
            outputs = model(images, natives=[item["image_native"].to(device) for item in inputs])
        out = []
        for o, image, item in zip(outputs, images, inputs, strict=True):
            h, w = int(item["height"]), int(item["width"])
            instances = to_instances(o, image.shape[-2], image.shape[-1], h, w, taxonomy)
            settings = head.settings() if head is not None else None
            out.append(dense_lesions(settings, instances, o.get("lesion_prob"), taxonomy))
        return out


def to_instances(
    output: dict[str, torch.Tensor], in_h: int, in_w: int, height: int, width: int, taxonomy: Any
) -> Instances:
    """torchvision's detections on an (in_h, in_w) input -> Instances at (height, width), with
    taxonomy ids (torchvision's label 0 is the background)."""
    from bsi_d2.engine.torchvision.model import LABEL_OFFSET

    boxes = output["boxes"].float()
    masks = output["masks"].float()  # (N, 1, in_h, in_w) probabilities
    if (in_h, in_w) != (height, width) and len(boxes):
        scale = boxes.new_tensor([width / in_w, height / in_h, width / in_w, height / in_h])
        boxes = boxes * scale
        masks = torch.nn.functional.interpolate(masks, size=(height, width), mode="bilinear")
    labels = output["labels"].cpu().numpy().astype(np.int64) - LABEL_OFFSET
    lookup = taxonomy.contiguous_to_id
    return Instances(
        height,
        width,
        boxes.cpu().numpy().astype(np.float32).reshape(-1, 4),
        output["scores"].float().cpu().numpy().astype(np.float32),
        np.array([lookup[int(k)] for k in labels], dtype=np.int64),
        (masks[:, 0] > MASK_THRESHOLD).cpu().numpy().reshape(-1, height, width),
    )
