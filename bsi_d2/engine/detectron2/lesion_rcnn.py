"""``LesionRCNN``: detectron2's GeneralizedRCNN with the dense lesion head beside its ROI heads.

Registered in detectron2's ``META_ARCH_REGISTRY`` (``MODEL.META_ARCHITECTURE: LesionRCNN``), the
way Panoptic FPN adds its semantic head: the backbone, RPN and ROI heads are GeneralizedRCNN's,
the head (:mod:`bsi_d2.engine.lesion_head`, the same module the torchvision engine builds) reads
``p2`` and the sample's ``image_native``, and trains on its ``lesion_target``. Inference outputs
gain ``lesion_prob`` (H, W) at the requested size and ``lesion_settings``, which the engine and
the evaluator turn into lesion instances (:func:`~bsi_d2.engine.lesion_head.dense_lesions`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from torch import nn

from bsi_d2.config import LESION_META_ARCHITECTURE
from bsi_d2.engine.lesion_head import build_lesion_head

FEATURE = "p2"


@META_ARCH_REGISTRY.register()
class LesionRCNN(GeneralizedRCNN):
    @configurable
    def __init__(self, *, lesion_head: nn.Module, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lesion_head = lesion_head

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        ret = super().from_config(cfg)
        shape = ret["backbone"].output_shape()[FEATURE]
        ret["lesion_head"] = build_lesion_head(cfg, shape.channels, shape.stride)
        return ret

    def _natives(self, batched_inputs: list[dict[str, Any]]) -> list[torch.Tensor]:
        if any("image_native" not in x for x in batched_inputs):
            raise ValueError("LesionRCNN needs the native images (mapper: image_native)")
        return [x["image_native"].to(self.device) for x in batched_inputs]

    def forward(self, batched_inputs: list[dict[str, Any]]):
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)
        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        logits = self.lesion_head(
            features[FEATURE], images.image_sizes, self._natives(batched_inputs)
        )
        targets = [x["lesion_target"].to(self.device) for x in batched_inputs]
        return {**detector_losses, **proposal_losses, **self.lesion_head.losses(logits, targets)}

    def inference(self, batched_inputs, detected_instances=None, do_postprocess=True):
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        proposals, _ = self.proposal_generator(images, features, None)
        results, _ = self.roi_heads(images, features, proposals, None)
        logits = self.lesion_head(
            features[FEATURE], images.image_sizes, self._natives(batched_inputs)
        )
        if not do_postprocess:
            return results
        outputs = GeneralizedRCNN._postprocess(results, batched_inputs, images.image_sizes)
        settings = self.lesion_head.settings()
        for out, logit, x in zip(outputs, logits, batched_inputs, strict=True):
            size = (int(x.get("height", logit.shape[-2])), int(x.get("width", logit.shape[-1])))
            prob = torch.sigmoid(logit.float())[None]
            if tuple(prob.shape[-2:]) != size:
                prob = F.interpolate(prob, size=size, mode="bilinear", align_corners=False)
            out["lesion_prob"] = prob[0, 0]
            out["lesion_settings"] = settings
        return outputs


assert LesionRCNN.__name__ == LESION_META_ARCHITECTURE  # the registry keys by class name
