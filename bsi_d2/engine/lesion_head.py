"""A dense lesion head beside Mask R-CNN: per-pixel lesion logits at the scan's native resolution.

Mask R-CNN finds lesions as boxes on stride-4 features with a 28 x 28 mask each, at the input
size of the config (half the native size on the CPU leaf); lesions of 5-15 px lose most of their
pixels that way. This head sees the native image through a small encoder of its own (strides 1,
2 and 4), fuses the FPN's finest level (``p2``) at stride 4, decodes to stride 2 and upsamples
the logits to native size, the way Panoptic FPN adds its semantic head beside the detector. It
is plain torch: the detectron2 engine's ``LesionRCNN`` meta-architecture and the torchvision
engine's model both hold the same module (one registry, :data:`LESION_HEAD_REGISTRY`), so a
config means the same on both.

Losses (``MODEL.LESION_HEAD.LOSS``): seed 001's focal Tversky loss
``(1 - TP / (TP + alpha FP + beta FN)) ** gamma`` with alpha 0.3, beta 0.7, gamma 0.75, pooled
over the batch; ``dice_bce`` (soft Dice plus binary cross-entropy); or both added. Pixels marked
255 in the target (crowd regions) are left out.

The probability map becomes lesion instances in :mod:`bsi_d2.postprocess.dense` (connected
components per view); the threshold is a buffer of the head, chosen on the validation split after
training, so a checkpoint carries it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from fvcore.common.registry import Registry
from torch import nn

from bsi_d2.config import LESION_META_ARCHITECTURE, ConfigValueError, cfg_get

LESION_HEAD_REGISTRY = Registry("LESION_HEAD")
LESION_HEAD_REGISTRY.__doc__ = "Dense lesion heads: (p2 features, native images) -> logits."
LOSSES = ("focal_tversky", "dice_bce", "focal_tversky_bce", "focal_dice")
SOURCES = ("dense", "rcnn", "union")
IGNORE = 255
HEAD_PREFIX = "lesion_head."  # the head's parameter names in both engines' models


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    groups = 4 if cout % 4 == 0 else 1
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(groups, cout),
        nn.ReLU(inplace=True),
    )


@LESION_HEAD_REGISTRY.register()
class NativeLesionHead(nn.Module):
    """Encoder on the native grey image (strides 1, 2, 4), fused with ``p2`` at stride 4,
    decoded to stride 2; logits upsampled bilinearly to the native size."""

    def __init__(
        self,
        in_channels: int,
        *,
        channels: Sequence[int] = (8, 16, 32),
        feature_stride: int = 4,
        pixel_mean: float = 0.0,
        pixel_std: float = 1.0,
        loss: str = "focal_tversky",
        alpha: float = 0.3,
        beta: float = 0.7,
        gamma: float = 0.75,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        loss_weight: float = 10.0,
        threshold: float = 0.5,
        min_area: int = 4,
        source: str = "union",
        rcnn_threshold: float = 0.5,
        detach_features: bool = True,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ConfigValueError(f"MODEL.LESION_HEAD.LOSS {loss!r} is not one of {LOSSES}")
        if source not in SOURCES:
            raise ConfigValueError(f"MODEL.LESION_HEAD.SOURCE {source!r} is not one of {SOURCES}")
        c1, c2, c4 = (int(c) for c in channels)
        self.feature_stride = int(feature_stride)
        self.pixel_mean, self.pixel_std = float(pixel_mean), float(pixel_std)
        self.loss_name, self.loss_weight = loss, float(loss_weight)
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)
        self.focal_alpha, self.focal_gamma = float(focal_alpha), float(focal_gamma)
        self.min_area, self.source = int(min_area), source
        self.rcnn_threshold = float(rcnn_threshold)  # Mask R-CNN lesions kept in a union
        self.detach_features = bool(detach_features)
        self.stem = _block(1, c1)  # stride 1
        self.down2 = nn.Sequential(_block(c1, c2, 2), _block(c2, c2))  # stride 2
        self.down4 = _block(c2, c4, 2)  # stride 4
        self.lateral = nn.Conv2d(in_channels, c4, 1)
        self.fuse4 = _block(2 * c4, c4)
        self.fuse2 = _block(c4 + c2, c2)
        self.predict = nn.Conv2d(c2, 1, 1)
        nn.init.normal_(self.predict.weight, std=0.01)
        nn.init.constant_(self.predict.bias, -4.0)  # lesions are rare: start near p = 0.02
        # chosen on the validation split after training; saved and loaded with the weights
        self.register_buffer("threshold", torch.tensor(float(threshold)))

    @classmethod
    def from_config(cls, cfg: Any, in_channels: int, feature_stride: int = 4) -> NativeLesionHead:
        node = "MODEL.LESION_HEAD"
        return cls(
            in_channels,
            channels=tuple(cfg_get(cfg, f"{node}.CHANNELS")),
            feature_stride=feature_stride,
            pixel_mean=float(cfg_get(cfg, "MODEL.PIXEL_MEAN")[0]),
            pixel_std=float(cfg_get(cfg, "MODEL.PIXEL_STD")[0]),
            loss=str(cfg_get(cfg, f"{node}.LOSS")),
            alpha=float(cfg_get(cfg, f"{node}.TVERSKY_ALPHA")),
            beta=float(cfg_get(cfg, f"{node}.TVERSKY_BETA")),
            gamma=float(cfg_get(cfg, f"{node}.TVERSKY_GAMMA")),
            focal_alpha=float(cfg_get(cfg, f"{node}.FOCAL_ALPHA")),
            focal_gamma=float(cfg_get(cfg, f"{node}.FOCAL_GAMMA")),
            loss_weight=float(cfg_get(cfg, f"{node}.LOSS_WEIGHT")),
            threshold=float(cfg_get(cfg, f"{node}.THRESHOLD")),
            min_area=int(cfg_get(cfg, f"{node}.MIN_AREA")),
            source=str(cfg_get(cfg, f"{node}.SOURCE")),
            rcnn_threshold=_lesion_score_threshold(cfg),
            detach_features=bool(cfg_get(cfg, f"{node}.DETACH_FEATURES")),
        )

    def forward(
        self,
        features: torch.Tensor,
        input_sizes: Sequence[tuple[int, int]],
        natives: Sequence[torch.Tensor],
    ) -> list[torch.Tensor]:
        """Logits (1, H, W) per image at its native size.

        ``features``: (B, C, h, w) at ``feature_stride`` of the padded model input;
        ``input_sizes``: each image's unpadded input size; ``natives``: (1, H, W) grey images.
        """
        sizes = [tuple(int(s) for s in n.shape[-2:]) for n in natives]
        height = _ceil_to(max(h for h, _ in sizes), 4)
        width = _ceil_to(max(w for _, w in sizes), 4)
        batch = features.new_zeros((len(natives), 1, height, width))
        for i, native in enumerate(natives):
            h, w = sizes[i]
            batch[i, :, :h, :w] = (native.to(batch.dtype) - self.pixel_mean) / self.pixel_std
        s1 = self.stem(batch)
        s2 = self.down2(s1)
        s4 = self.down4(s2)
        lateral = self.lateral(features.detach() if self.detach_features else features)
        grid = lateral.new_zeros((len(natives), lateral.shape[1], *s4.shape[-2:]))
        for i, (h_in, w_in) in enumerate(input_sizes):
            # the valid part of this image's features, resampled onto its native stride-4 grid
            valid = lateral[
                i : i + 1, :, : _ceil(h_in, self.feature_stride), : _ceil(w_in, self.feature_stride)
            ]
            h4, w4 = _ceil(sizes[i][0], 4), _ceil(sizes[i][1], 4)
            grid[i : i + 1, :, :h4, :w4] = F.interpolate(
                valid, size=(h4, w4), mode="bilinear", align_corners=False
            )
        x = self.fuse4(torch.cat([s4, grid], dim=1))
        x = F.interpolate(x, size=s2.shape[-2:], mode="bilinear", align_corners=False)
        x = self.fuse2(torch.cat([x, s2], dim=1))
        logits = F.interpolate(self.predict(x), size=(height, width), mode="bilinear")
        return [logits[i, :, :h, :w] for i, (h, w) in enumerate(sizes)]

    def settings(self) -> dict[str, Any]:
        """How the probability map becomes lesions (see :func:`dense_lesions`)."""
        return {
            "source": self.source,
            "threshold": float(self.threshold),
            "min_area": self.min_area,
            "rcnn_threshold": self.rcnn_threshold,
        }

    def losses(
        self, logits: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """``{"loss_lesion": ...}`` over the batch; targets (H, W) uint8, 1 lesion, 255 ignore."""
        prob, truth, weight = [], [], []
        for logit, target in zip(logits, targets, strict=True):
            target = target.to(logit.device)
            prob.append(logit.reshape(-1))
            truth.append((target == 1).reshape(-1).to(logit.dtype))
            weight.append((target != IGNORE).reshape(-1).to(logit.dtype))
        z, y, keep = torch.cat(prob), torch.cat(truth), torch.cat(weight)
        loss = z.sum() * 0.0  # keeps the graph (and every parameter's gradient) on any batch
        # The region terms (Tversky, Dice) are pooled over the batch and left out of a batch
        # without lesion pixels: there their smoothing constant makes 1 - 1 / (1 + FP) a steep
        # push of every probability to zero, which plain SGD follows until the map is empty.
        region = bool((y * keep).sum() > 0)
        if region and self.loss_name in ("focal_tversky", "focal_tversky_bce"):
            loss = loss + focal_tversky(
                torch.sigmoid(z), y, keep, self.alpha, self.beta, self.gamma
            )
        if self.loss_name in ("dice_bce", "focal_tversky_bce"):
            bce = F.binary_cross_entropy_with_logits(z, y, weight=keep, reduction="sum")
            loss = loss + bce / keep.sum().clamp(min=1.0)
        if region and self.loss_name in ("dice_bce", "focal_dice"):
            loss = loss + soft_dice_loss(torch.sigmoid(z), y, keep)
        if self.loss_name == "focal_dice":
            loss = loss + sigmoid_focal_loss(z, y, keep, self.focal_alpha, self.focal_gamma)
        return {"loss_lesion": loss * self.loss_weight}


def lr_factor_func(cfg: Any) -> Callable[[str], float]:
    """Learning-rate multiplier by parameter name (detectron2's ``lr_factor_func``):
    MODEL.LESION_HEAD.LR_FACTOR for the dense head's parameters, 1 for the rest."""
    factor = float(cfg_get(cfg, "MODEL.LESION_HEAD.LR_FACTOR", 1.0))
    if factor <= 0:
        raise ConfigValueError(f"MODEL.LESION_HEAD.LR_FACTOR must be positive, got {factor}")

    def func(name: str) -> float:
        name = name.removeprefix("module.")  # a DistributedDataParallel wrapper's prefix
        return factor if name.startswith(HEAD_PREFIX) else 1.0

    return func


def focal_tversky(
    prob: torch.Tensor,
    truth: torch.Tensor,
    keep: torch.Tensor,
    alpha: float = 0.3,
    beta: float = 0.7,
    gamma: float = 0.75,
    smooth: float = 1.0,
) -> torch.Tensor:
    """Seed 001's focal Tversky loss: alpha weighs false positives, beta false negatives."""
    tp = (prob * truth * keep).sum()
    fp = (prob * (1 - truth) * keep).sum()
    fn = ((1 - prob) * truth * keep).sum()
    index = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
    return (1 - index).clamp(min=0) ** gamma


def sigmoid_focal_loss(
    logits: torch.Tensor,
    truth: torch.Tensor,
    keep: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """RetinaNet's focal loss summed over the kept pixels and divided by the number of lesion
    pixels (at least 1), so a few hundred lesion pixels among a million still steer the head."""
    prob = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, truth, reduction="none")
    p_t = prob * truth + (1 - prob) * (1 - truth)
    weight = alpha * truth + (1 - alpha) * (1 - truth)
    loss = (weight * (1 - p_t) ** gamma * ce * keep).sum()
    return loss / (truth * keep).sum().clamp(min=1.0)


def soft_dice_loss(
    prob: torch.Tensor, truth: torch.Tensor, keep: torch.Tensor, smooth: float = 1.0
) -> torch.Tensor:
    inter = (prob * truth * keep).sum()
    total = (prob * keep).sum() + (truth * keep).sum()
    return 1 - (2 * inter + smooth) / (total + smooth)


def _lesion_score_threshold(cfg: Any) -> float:
    """The post-processing score threshold of the lesion class (BSI.CLASS_SCORE_THRESH or
    BSI.SCORE_THRESH), so a union keeps the Mask R-CNN lesions the report would keep."""
    from bsi_d2.postprocess.rasterize import kind_threshold, parse_class_thresholds
    from bsi_d2.taxonomy import load_taxonomy

    taxonomy = load_taxonomy(cfg_get(cfg, "BSI.TAXONOMY", None) or None)
    return kind_threshold(
        taxonomy,
        "lesion",
        float(cfg_get(cfg, "BSI.SCORE_THRESH", 0.5)),
        parse_class_thresholds(list(cfg_get(cfg, "BSI.CLASS_SCORE_THRESH", []))),
    )


def dense_lesions(
    settings: Mapping[str, Any] | None, instances: Any, probability: Any, taxonomy: Any
) -> Any:
    """``instances`` with their lesions from the head's source (``MODEL.LESION_HEAD.SOURCE``),
    ``settings`` being :meth:`NativeLesionHead.settings`: the engines' last step when the model
    has the dense head."""
    if settings is None or probability is None or not taxonomy.lesion_ids:
        return instances
    from bsi_d2.postprocess.dense import combine_lesion_sources

    prob = probability.detach().float()
    if tuple(prob.shape[-2:]) != (instances.height, instances.width):
        prob = F.interpolate(
            prob[None, None], size=(instances.height, instances.width), mode="bilinear"
        )[0, 0]
    return combine_lesion_sources(
        instances,
        prob.cpu().numpy(),
        taxonomy.lesion_ids[0],
        settings["source"],
        float(settings["threshold"]),
        int(settings["min_area"]),
        float(settings["rcnn_threshold"]),
    )


def build_lesion_head(cfg: Any, in_channels: int, feature_stride: int = 4) -> nn.Module:
    """The head MODEL.LESION_HEAD.NAME names, from the registry."""
    name = str(cfg_get(cfg, "MODEL.LESION_HEAD.NAME"))
    try:
        head_cls = LESION_HEAD_REGISTRY.get(name)
    except KeyError as err:
        raise ConfigValueError(
            f"MODEL.LESION_HEAD.NAME {name!r} is not a registered lesion head "
            f"({', '.join(sorted(n for n, _ in LESION_HEAD_REGISTRY))})"
        ) from err
    return head_cls.from_config(cfg, in_channels, feature_stride)


def has_lesion_head(cfg: Any) -> bool:
    return str(cfg_get(cfg, "MODEL.META_ARCHITECTURE")) == LESION_META_ARCHITECTURE


def _ceil(value: int, stride: int) -> int:
    return -(-int(value) // int(stride))


def _ceil_to(value: int, multiple: int) -> int:
    return _ceil(value, multiple) * multiple


CALIBRATION_THRESHOLDS = tuple(round(0.05 + 0.05 * i, 2) for i in range(19))  # 0.05 .. 0.95
CALIBRATION_FILE = "lesion_threshold.json"


def calibrate_threshold(
    predictor: Any, dataset_name: str, thresholds: Sequence[float] = CALIBRATION_THRESHOLDS
) -> dict[str, Any]:
    """Choose the head's probability threshold on a registered split (the trainers use the
    first of DATASETS.TEST, the validation split in the demo and k-fold): the one giving the
    highest pooled lesion Dice of the dense lesions there, ties to the lower threshold. Sets the
    head's ``threshold`` buffer, so the next checkpoint carries it; returns the sweep."""
    import numpy as np

    from bsi_d2.data.datasets import get_dataset_dicts
    from bsi_d2.engine.checkpoint import unwrap
    from bsi_d2.engine.predictor import build_mapper, predict_dataset
    from bsi_d2.postprocess.dense import lesion_components
    from bsi_d2.structures.masks import segmentation_to_mask

    head = unwrap(predictor.model).lesion_head
    taxonomy = predictor.taxonomy
    dicts = get_dataset_dicts(dataset_name)
    predictions, _ = predict_dataset(predictor, dicts, build_mapper(predictor.cfg, False))
    by_id = {d["image_id"]: d for d in dicts}
    tp = np.zeros(len(thresholds))
    fp = np.zeros(len(thresholds))
    fn = np.zeros(len(thresholds))
    lesion_classes = {taxonomy.id_to_contiguous[i] for i in taxonomy.lesion_ids}  # dicts'
    for image_id, instances in predictions:
        if instances.lesion_probability is None:
            continue
        record = by_id[image_id]
        h, w = instances.height, instances.width
        truth = np.zeros((h, w), bool)
        ignore = np.zeros((h, w), bool)
        for ann in record.get("annotations", []):
            if ann["category_id"] not in lesion_classes and not ann.get("iscrowd"):
                continue
            mask = segmentation_to_mask(ann["segmentation"], h, w).astype(bool)
            (ignore if ann.get("iscrowd") else truth)[mask] = True
        for k, t in enumerate(thresholds):
            masks, _ = lesion_components(instances.lesion_probability, t, head.min_area)
            pred = masks.any(axis=0) if len(masks) else np.zeros((h, w), bool)
            pred &= ~ignore
            tp[k] += np.count_nonzero(pred & truth & ~ignore)
            fp[k] += np.count_nonzero(pred & ~truth)
            fn[k] += np.count_nonzero(truth & ~pred & ~ignore)
    denom = 2 * tp + fp + fn
    dice = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    best = int(np.argmax(dice))
    head.threshold.fill_(float(thresholds[best]))
    return {
        "dataset": dataset_name,
        "criterion": "pooled lesion Dice of the dense lesions",
        "thresholds": [float(t) for t in thresholds],
        "dice": [float(d) for d in dice],
        "threshold": float(thresholds[best]),
    }
