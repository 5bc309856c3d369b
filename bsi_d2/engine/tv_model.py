"""torchvision's Mask R-CNN built from the same detectron2-style config keys.

The torchvision engine must mean the same thing as the detectron2 engine for a given YAML file, so
every key that changes the model is either mapped onto torchvision's arguments or, where
torchvision cannot express its value, refused by :func:`check_supported` with the key's name.

Differences kept on purpose (they do not change what a config asks for, only how the weights are
laid out): RESNETS.STRIDE_IN_1X1 (torchvision strides in the 3x3 conv), ROIAlign vs ROIAlignV2
(torchvision's pooler is not half-pixel aligned), and the box-regression loss's smooth-L1 beta.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

_MISSING = object()  # a key the config lacks
_REQUIRED = object()  # cfg_get without a default

# torchvision labels count background as 0, so contiguous class k is label k + 1
LABEL_OFFSET = 1


class UnsupportedConfigError(ValueError):
    """A config value the torchvision engine cannot honour; the message names the key."""


def cfg_get(cfg: Any, key: str, default: Any = _REQUIRED) -> Any:
    """``cfg.A.B.C`` for ``key="A.B.C"``; ``default`` where a node lacks the key."""
    node = cfg
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif not isinstance(node, dict) and hasattr(node, part):
            node = getattr(node, part)
        elif default is not _REQUIRED:
            return default
        else:
            raise KeyError(f"config has no key {key}")
    return node


@dataclass(frozen=True)
class _Rule:
    key: str
    allowed: Callable[[Any], bool]
    expected: str


def _eq(value: Any) -> Callable[[Any], bool]:
    return lambda v: v == value


def _in(*values: Any) -> Callable[[Any], bool]:
    return lambda v: v in values


def _seq_eq(value: Sequence[Any]) -> Callable[[Any], bool]:
    return lambda v: list(v) == list(value)


_LEVELS = ["res2", "res3", "res4", "res5"]
_P_LEVELS = ["p2", "p3", "p4", "p5"]

# The explicit check list: a key absent from the config passes (D1's reduced config lacks some).
RULES: tuple[_Rule, ...] = (
    _Rule("MODEL.META_ARCHITECTURE", _eq("GeneralizedRCNN"), "GeneralizedRCNN"),
    _Rule("MODEL.BACKBONE.NAME", _eq("build_resnet_fpn_backbone"), "build_resnet_fpn_backbone"),
    _Rule("MODEL.MASK_ON", _eq(True), "True (the engine is Mask R-CNN)"),
    _Rule("MODEL.KEYPOINT_ON", _eq(False), "False"),
    _Rule("MODEL.LOAD_PROPOSALS", _eq(False), "False"),
    _Rule("MODEL.RESNETS.DEPTH", _in(18, 34, 50, 101), "one of 18, 34, 50, 101"),
    _Rule("MODEL.RESNETS.NUM_GROUPS", _eq(1), "1 (ResNeXt is not built by this engine)"),
    _Rule("MODEL.RESNETS.WIDTH_PER_GROUP", _eq(64), "64"),
    _Rule("MODEL.RESNETS.RES5_DILATION", _eq(1), "1"),
    _Rule("MODEL.RESNETS.NORM", _in("FrozenBN", "BN"), "FrozenBN or BN"),
    _Rule("MODEL.RESNETS.OUT_FEATURES", _seq_eq(_LEVELS), str(_LEVELS)),
    _Rule(
        "MODEL.RESNETS.DEFORM_ON_PER_STAGE", lambda v: not any(v), "all False (no deformable conv)"
    ),
    _Rule("MODEL.RESNETS.STEM_OUT_CHANNELS", _eq(64), "64"),
    _Rule("MODEL.FPN.IN_FEATURES", _seq_eq(_LEVELS), str(_LEVELS)),
    _Rule("MODEL.FPN.NORM", _eq(""), "'' (no FPN norm)"),
    _Rule("MODEL.FPN.FUSE_TYPE", _eq("sum"), "sum"),
    _Rule("MODEL.ANCHOR_GENERATOR.NAME", _eq("DefaultAnchorGenerator"), "DefaultAnchorGenerator"),
    _Rule("MODEL.ANCHOR_GENERATOR.OFFSET", _eq(0.0), "0.0"),
    _Rule("MODEL.PROPOSAL_GENERATOR.NAME", _eq("RPN"), "RPN"),
    _Rule("MODEL.RPN.HEAD_NAME", _eq("StandardRPNHead"), "StandardRPNHead"),
    _Rule("MODEL.RPN.IN_FEATURES", _seq_eq([*_P_LEVELS, "p6"]), str([*_P_LEVELS, "p6"])),
    _Rule("MODEL.RPN.BBOX_REG_WEIGHTS", _seq_eq([1.0, 1.0, 1.0, 1.0]), "(1.0, 1.0, 1.0, 1.0)"),
    _Rule("MODEL.RPN.CONV_DIMS", _seq_eq([-1]), "[-1]"),
    _Rule("MODEL.RPN.IOU_LABELS", _seq_eq([0, -1, 1]), "[0, -1, 1]"),
    _Rule("MODEL.ROI_HEADS.NAME", _eq("StandardROIHeads"), "StandardROIHeads"),
    _Rule("MODEL.ROI_HEADS.IN_FEATURES", _seq_eq(_P_LEVELS), str(_P_LEVELS)),
    _Rule("MODEL.ROI_HEADS.IOU_THRESHOLDS", lambda v: len(v) == 1, "a single threshold"),
    _Rule("MODEL.ROI_HEADS.PROPOSAL_APPEND_GT", _eq(True), "True"),
    _Rule("MODEL.ROI_BOX_HEAD.NAME", _eq("FastRCNNConvFCHead"), "FastRCNNConvFCHead"),
    _Rule("MODEL.ROI_BOX_HEAD.NORM", _eq(""), "'' (no box-head norm)"),
    _Rule("MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", _eq(False), "False"),
    _Rule("MODEL.ROI_BOX_HEAD.POOLER_TYPE", _in("ROIAlign", "ROIAlignV2"), "ROIAlign(V2)"),
    _Rule("MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES", _eq(False), "False"),
    _Rule("MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE", _eq(False), "False"),
    _Rule("MODEL.ROI_BOX_HEAD.USE_FED_LOSS", _eq(False), "False"),
    _Rule("MODEL.ROI_MASK_HEAD.NAME", _eq("MaskRCNNConvUpsampleHead"), "MaskRCNNConvUpsampleHead"),
    _Rule("MODEL.ROI_MASK_HEAD.NORM", _eq(""), "'' (no mask-head norm)"),
    _Rule("MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", _eq(False), "False"),
    _Rule("MODEL.ROI_MASK_HEAD.POOLER_TYPE", _in("ROIAlign", "ROIAlignV2"), "ROIAlign(V2)"),
    _Rule("INPUT.MIN_SIZE_TRAIN_SAMPLING", _eq("choice"), "choice"),
    _Rule("INPUT.CROP.ENABLED", _eq(False), "False"),
    _Rule("TEST.AUG.ENABLED", _eq(False), "False"),
    _Rule("TEST.PRECISE_BN.ENABLED", _eq(False), "False"),
    _Rule("SOLVER.REFERENCE_WORLD_SIZE", _eq(0), "0"),
    _Rule(
        "SOLVER.LR_SCHEDULER_NAME",
        _in("WarmupMultiStepLR", "WarmupCosineLR"),
        "WarmupMultiStepLR or WarmupCosineLR",
    ),
    _Rule("SOLVER.WARMUP_METHOD", _in("linear", "constant"), "linear or constant"),
    _Rule(
        "DATALOADER.SAMPLER_TRAIN", _eq("TrainingSampler"), "TrainingSampler (infinite shuffling)"
    ),
)


def check_supported(cfg: Any) -> None:
    """Raise :class:`UnsupportedConfigError` naming every key the engine cannot honour."""
    problems = []
    for rule in RULES:
        value = cfg_get(cfg, rule.key, _MISSING)
        if value is _MISSING:
            continue
        if not rule.allowed(value):
            problems.append(f"{rule.key}={value!r} (torchvision engine supports {rule.expected})")
    depth = int(cfg_get(cfg, "MODEL.RESNETS.DEPTH", 50))
    res2 = cfg_get(cfg, "MODEL.RESNETS.RES2_OUT_CHANNELS", _MISSING)
    expected_res2 = 64 if depth < 50 else 256
    if res2 is not _MISSING and int(res2) != expected_res2:
        problems.append(
            f"MODEL.RESNETS.RES2_OUT_CHANNELS={res2!r} (ResNet-{depth} has {expected_res2})"
        )
    try:
        _anchor_levels(cfg)
    except UnsupportedConfigError as err:
        problems.append(str(err))
    if problems:
        raise UnsupportedConfigError(
            "config keys the torchvision engine cannot honour (use MODEL.ENGINE detectron2 or "
            "change them): " + "; ".join(problems)
        )


def _anchor_levels(cfg: Any) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[float, ...], ...]]:
    """Per-level anchor sizes and aspect ratios for the five FPN levels p2..p6."""
    sizes = [tuple(int(s) for s in level) for level in cfg_get(cfg, "MODEL.ANCHOR_GENERATOR.SIZES")]
    ratios = [
        tuple(float(r) for r in level)
        for level in cfg_get(cfg, "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS")
    ]
    levels = 5
    # detectron2 broadcasts a single entry to every level
    if len(sizes) == 1:
        sizes = sizes * levels
    if len(ratios) == 1:
        ratios = ratios * levels
    if len(sizes) != levels or len(ratios) != levels:
        raise UnsupportedConfigError(
            f"MODEL.ANCHOR_GENERATOR.SIZES/ASPECT_RATIOS: need 1 or {levels} levels, "
            f"got {len(sizes)} and {len(ratios)}"
        )
    per_cell = {len(s) * len(r) for s, r in zip(sizes, ratios, strict=True)}
    if len(per_cell) != 1:
        raise UnsupportedConfigError(
            "MODEL.ANCHOR_GENERATOR.SIZES/ASPECT_RATIOS: every level needs the same number of "
            "anchors per cell"
        )
    return tuple(sizes), tuple(ratios)


class NativeSizeTransform(GeneralizedRCNNTransform):
    """Normalise and batch only: ``BsiDatasetMapper`` already applied INPUT.MIN/MAX_SIZE_*
    (detectron2's ResizeShortestEdge), and resizing twice would change the training sizes."""

    def __init__(self, image_mean: list[float], image_std: list[float]) -> None:
        super().__init__(1, 1, image_mean, image_std, size_divisible=32)

    def resize(self, image: torch.Tensor, target: dict | None = None):
        return image, target


def _norm_layer(name: str) -> Callable[..., nn.Module]:
    from torchvision.ops import FrozenBatchNorm2d

    layers: dict[str, Callable[..., nn.Module]] = {
        "FrozenBN": FrozenBatchNorm2d,
        "BN": nn.BatchNorm2d,
    }
    return layers[name]


def _backbone(cfg: Any) -> nn.Module:
    from torchvision.models import resnet
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    depth = int(cfg_get(cfg, "MODEL.RESNETS.DEPTH"))
    norm = _norm_layer(cfg_get(cfg, "MODEL.RESNETS.NORM", "FrozenBN"))
    body = getattr(resnet, f"resnet{depth}")(weights=None, norm_layer=norm)
    # detectron2's FREEZE_AT counts stem=1, res2=2, ...; torchvision counts trainable stages
    freeze_at = int(cfg_get(cfg, "MODEL.BACKBONE.FREEZE_AT", 2))
    trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][: max(0, 5 - freeze_at)]
    if 5 - freeze_at == 5:
        trainable.append("bn1")
    for name, parameter in body.named_parameters():
        if all(not name.startswith(layer) for layer in trainable):
            parameter.requires_grad_(False)
    stage_channels = [64, 128, 256, 512] if depth < 50 else [256, 512, 1024, 2048]
    return BackboneWithFPN(
        body,
        return_layers={f"layer{i}": str(i - 1) for i in range(1, 5)},
        in_channels_list=stage_channels,
        out_channels=int(cfg_get(cfg, "MODEL.FPN.OUT_CHANNELS", 256)),
        extra_blocks=LastLevelMaxPool(),
    )


def build_tv_model(cfg: Any) -> nn.Module:
    """torchvision ``MaskRCNN`` for a detectron2-style config; nothing is downloaded.

    ``MODEL.PIXEL_MEAN/STD`` are in the image's own value scale (what the mapper produces), so
    torchvision's ``(x - mean) / std`` sees the same numbers detectron2's model would. Input
    sizes are the mapper's business (INPUT.MIN/MAX_SIZE_*); the model does not resize.
    """
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.models.detection.rpn import AnchorGenerator, RPNHead
    from torchvision.ops import MultiScaleRoIAlign

    check_supported(cfg)
    backbone = _backbone(cfg)
    channels = backbone.out_channels
    num_classes = int(cfg_get(cfg, "MODEL.ROI_HEADS.NUM_CLASSES")) + LABEL_OFFSET

    sizes, ratios = _anchor_levels(cfg)
    anchors = AnchorGenerator(sizes=sizes, aspect_ratios=ratios)
    rpn_head = RPNHead(channels, anchors.num_anchors_per_location()[0])

    features = ["0", "1", "2", "3"]
    box_res = int(cfg_get(cfg, "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", 7))
    box_pool = MultiScaleRoIAlign(
        features, box_res, int(cfg_get(cfg, "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", 0))
    )
    box_convs = [int(cfg_get(cfg, "MODEL.ROI_BOX_HEAD.CONV_DIM", 256))] * int(
        cfg_get(cfg, "MODEL.ROI_BOX_HEAD.NUM_CONV", 0)
    )
    box_fcs = [int(cfg_get(cfg, "MODEL.ROI_BOX_HEAD.FC_DIM", 1024))] * int(
        cfg_get(cfg, "MODEL.ROI_BOX_HEAD.NUM_FC", 2)
    )
    box_head = FastRCNNConvFCHead((channels, box_res, box_res), box_convs, box_fcs)
    box_dim = box_fcs[-1] if box_fcs else (box_convs[-1] if box_convs else channels) * box_res**2
    box_predictor = FastRCNNPredictor(box_dim, num_classes)

    mask_res = int(cfg_get(cfg, "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION", 14))
    mask_pool = MultiScaleRoIAlign(
        features, mask_res, int(cfg_get(cfg, "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO", 0))
    )
    mask_dim = int(cfg_get(cfg, "MODEL.ROI_MASK_HEAD.CONV_DIM", 256))
    mask_layers = [mask_dim] * int(cfg_get(cfg, "MODEL.ROI_MASK_HEAD.NUM_CONV", 4))
    mask_head = MaskRCNNHeads(channels, mask_layers, 1)
    mask_predictor = MaskRCNNPredictor(
        mask_layers[-1] if mask_layers else channels, mask_dim, num_classes
    )

    iou = cfg_get(cfg, "MODEL.RPN.IOU_THRESHOLDS", [0.3, 0.7])
    roi_iou = float(cfg_get(cfg, "MODEL.ROI_HEADS.IOU_THRESHOLDS", [0.5])[0])
    model = MaskRCNN(
        backbone,
        num_classes=None,
        rpn_anchor_generator=anchors,
        rpn_head=rpn_head,
        rpn_pre_nms_top_n_train=int(cfg_get(cfg, "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 2000)),
        rpn_pre_nms_top_n_test=int(cfg_get(cfg, "MODEL.RPN.PRE_NMS_TOPK_TEST", 1000)),
        rpn_post_nms_top_n_train=int(cfg_get(cfg, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 1000)),
        rpn_post_nms_top_n_test=int(cfg_get(cfg, "MODEL.RPN.POST_NMS_TOPK_TEST", 1000)),
        rpn_nms_thresh=float(cfg_get(cfg, "MODEL.RPN.NMS_THRESH", 0.7)),
        rpn_bg_iou_thresh=float(iou[0]),
        rpn_fg_iou_thresh=float(iou[-1]),
        rpn_batch_size_per_image=int(cfg_get(cfg, "MODEL.RPN.BATCH_SIZE_PER_IMAGE", 256)),
        rpn_positive_fraction=float(cfg_get(cfg, "MODEL.RPN.POSITIVE_FRACTION", 0.5)),
        box_roi_pool=box_pool,
        box_head=box_head,
        box_predictor=box_predictor,
        box_score_thresh=float(cfg_get(cfg, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.05)),
        box_nms_thresh=float(cfg_get(cfg, "MODEL.ROI_HEADS.NMS_THRESH_TEST", 0.5)),
        box_detections_per_img=int(cfg_get(cfg, "TEST.DETECTIONS_PER_IMAGE", 100)),
        box_fg_iou_thresh=roi_iou,
        box_bg_iou_thresh=roi_iou,
        box_batch_size_per_image=int(cfg_get(cfg, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 512)),
        box_positive_fraction=float(cfg_get(cfg, "MODEL.ROI_HEADS.POSITIVE_FRACTION", 0.25)),
        bbox_reg_weights=tuple(
            float(w)
            for w in cfg_get(cfg, "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS", (10.0, 10.0, 5.0, 5.0))
        ),
        mask_roi_pool=mask_pool,
        mask_head=mask_head,
        mask_predictor=mask_predictor,
    )
    model.transform = NativeSizeTransform(
        _pixel_stat(cfg, "MODEL.PIXEL_MEAN"),
        _pixel_stat(cfg, "MODEL.PIXEL_STD"),
    )
    return model


def _pixel_stat(cfg: Any, key: str) -> list[float]:
    values = [float(v) for v in cfg_get(cfg, key)]
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise UnsupportedConfigError(f"{key}: need 1 or 3 values, got {len(values)}")
    return values
