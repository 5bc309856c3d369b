"""torchvision's Mask R-CNN built from the same detectron2-style config keys.

The torchvision engine must mean the same thing as the detectron2 engine for a given YAML file, so
every key that changes the model is either mapped onto torchvision's arguments or, where
torchvision cannot express its value, refused by :func:`check_supported` with the key's name.

Where torchvision's own parts compute something else than detectron2's for the same key, the
part is replaced by one that follows detectron2 (file names are detectron2's ``modeling/``):

- ROI pooling (:class:`FPNRoIPooler`): POOLER_TYPE ROIAlignV2 is the half-pixel aligned
  ROIAlign (``poolers.py``); torchvision's MultiScaleRoIAlign is unaligned, shifts every box by
  half a feature cell and widens boxes under one cell (4 px on p2), which is what small lesions
  are.
- Mask targets: aligned ROIAlign of the ground-truth mask thresholded at 0.5
  (``structures/masks.py`` crop_and_resize), not torchvision's unaligned soft targets.
- Mask pasting (:func:`paste_masks`): bilinear sampling inside the real-valued box
  (``layers/mask_ops.py``), not torchvision's boxes rounded to pixels and widened by one.
- Anchors (:class:`Detectron2AnchorGenerator`): unrounded cell anchors, fixed strides 4..64 and
  ANCHOR_GENERATOR.OFFSET (``anchor_generator.py``); torchvision rounds anchors to whole pixels
  and derives strides from the padded image (60 instead of 64 on p6 for 480-pixel images).
- Losses (:class:`Detectron2RPN`, :class:`Detectron2RoIHeads`): SMOOTH_L1_BETA (detectron2 0.0,
  torchvision 1/9), LOSS_WEIGHT / BBOX_REG_LOSS_WEIGHT, and the RPN normaliser
  BATCH_SIZE_PER_IMAGE x images (``rpn.py``, ``fast_rcnn.py``).
- Initialisation of the box and mask heads (``box_head.py``, ``fast_rcnn.py``,
  ``mask_head.py``), RESNETS.STRIDE_IN_1X1 for bottleneck blocks, and BN frozen with the stages
  FREEZE_AT freezes (``backbone/resnet.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.roi_heads import RoIHeads, maskrcnn_inference
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import roi_align

from bsi_d2.config import LESION_META_ARCHITECTURE, UnsupportedConfigError, cfg_get

_MISSING = object()  # a key the config lacks

# torchvision labels count background as 0, so contiguous class k is label k + 1
LABEL_OFFSET = 1


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
# strides of p2..p6 (LastLevelMaxPool adds p6), as detectron2's FPN declares them
FPN_STRIDES = (4, 8, 16, 32, 64)
# detectron2's ROIPooler defaults (modeling/poolers.py); no config key changes them
CANONICAL_BOX_SIZE, CANONICAL_LEVEL = 224, 4

# The explicit check list: a key absent from the config passes (D1's reduced config lacks some).
RULES: tuple[_Rule, ...] = (
    _Rule(
        "MODEL.META_ARCHITECTURE",
        _in("GeneralizedRCNN", LESION_META_ARCHITECTURE),
        f"GeneralizedRCNN or {LESION_META_ARCHITECTURE} (with the dense lesion head)",
    ),
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
    _Rule("MODEL.ANCHOR_GENERATOR.OFFSET", lambda v: 0.0 <= v < 1.0, "0.0 <= OFFSET < 1.0"),
    _Rule("MODEL.PROPOSAL_GENERATOR.NAME", _eq("RPN"), "RPN"),
    _Rule("MODEL.RPN.HEAD_NAME", _eq("StandardRPNHead"), "StandardRPNHead"),
    _Rule("MODEL.RPN.IN_FEATURES", _seq_eq([*_P_LEVELS, "p6"]), str([*_P_LEVELS, "p6"])),
    _Rule("MODEL.RPN.BBOX_REG_WEIGHTS", _seq_eq([1.0, 1.0, 1.0, 1.0]), "(1.0, 1.0, 1.0, 1.0)"),
    _Rule("MODEL.RPN.CONV_DIMS", _seq_eq([-1]), "[-1]"),
    _Rule("MODEL.RPN.IOU_LABELS", _seq_eq([0, -1, 1]), "[0, -1, 1]"),
    _Rule("MODEL.RPN.BOUNDARY_THRESH", _eq(-1), "-1 (anchors crossing the border are kept)"),
    _Rule("MODEL.RPN.BBOX_REG_LOSS_TYPE", _eq("smooth_l1"), "smooth_l1"),
    _Rule("MODEL.ROI_HEADS.NAME", _eq("StandardROIHeads"), "StandardROIHeads"),
    _Rule("MODEL.ROI_HEADS.IN_FEATURES", _seq_eq(_P_LEVELS), str(_P_LEVELS)),
    _Rule("MODEL.ROI_HEADS.IOU_THRESHOLDS", lambda v: len(v) == 1, "a single threshold"),
    _Rule("MODEL.ROI_HEADS.IOU_LABELS", _seq_eq([0, 1]), "[0, 1]"),
    _Rule("MODEL.ROI_HEADS.PROPOSAL_APPEND_GT", _eq(True), "True"),
    _Rule("MODEL.ROI_BOX_HEAD.NAME", _eq("FastRCNNConvFCHead"), "FastRCNNConvFCHead"),
    _Rule("MODEL.ROI_BOX_HEAD.NORM", _eq(""), "'' (no box-head norm)"),
    _Rule("MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", _eq(False), "False"),
    _Rule("MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE", _eq("smooth_l1"), "smooth_l1"),
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
    _Rule("SOLVER.RESCALE_INTERVAL", _eq(False), "False"),
    _Rule("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", _in("value", "norm"), "value or norm"),
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
    depth = int(cfg_get(cfg, "MODEL.RESNETS.DEPTH"))
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


# -- parts that follow detectron2 ---------------------------------------------------------------
class Detectron2AnchorGenerator(AnchorGenerator):
    """detectron2's DefaultAnchorGenerator: cell anchors of exactly ``size**2`` area (not
    rounded to whole pixels), centred at ``(i + offset) * stride`` with each level's own stride."""

    def __init__(
        self,
        sizes: Sequence[Sequence[int]],
        aspect_ratios: Sequence[Sequence[float]],
        strides: Sequence[int],
        offset: float = 0.0,
    ) -> None:
        super().__init__(tuple(sizes), tuple(aspect_ratios))
        self.strides = tuple(int(s) for s in strides)
        self.offset = float(offset)

    def generate_anchors(
        self,
        scales: Sequence[int],
        aspect_ratios: Sequence[float],
        dtype: torch.dtype = torch.float32,
        device: torch.device | None = None,
    ) -> torch.Tensor:
        cells = []
        for size in scales:
            for ratio in aspect_ratios:
                w = math.sqrt(float(size) ** 2 / float(ratio))
                h = float(ratio) * w
                cells.append([-w / 2, -h / 2, w / 2, h / 2])
        return torch.tensor(cells, dtype=dtype, device=device)

    def forward(self, image_list: Any, feature_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        dtype, device = feature_maps[0].dtype, feature_maps[0].device
        self.set_cell_anchors(dtype, device)
        levels = []
        for feature, stride, cell in zip(
            feature_maps, self.strides, self.cell_anchors, strict=True
        ):
            height, width = feature.shape[-2:]
            xs = (torch.arange(width, dtype=torch.float32, device=device) + self.offset) * stride
            ys = (torch.arange(height, dtype=torch.float32, device=device) + self.offset) * stride
            shift_y, shift_x = torch.meshgrid(ys, xs, indexing="ij")
            shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
            levels.append((shifts.view(-1, 1, 4) + cell.view(1, -1, 4)).reshape(-1, 4).to(dtype))
        anchors = torch.cat(levels)
        return [anchors for _ in image_list.image_sizes]


class FPNRoIPooler(nn.Module):
    """detectron2's ROIPooler over FPN levels, in place of torchvision's MultiScaleRoIAlign.

    A box goes to level ``floor(4 + log2(sqrt(area) / 224 + 1e-8))`` clamped to the levels
    given; ``aligned`` is ROIAlignV2 (sampling points shifted by half a pixel, no minimum box
    size), ``aligned=False`` the original ROIAlign.
    """

    def __init__(
        self,
        featmap_names: Sequence[str],
        strides: Sequence[int],
        output_size: int,
        sampling_ratio: int,
        aligned: bool,
    ) -> None:
        super().__init__()
        self.featmap_names = list(featmap_names)
        self.strides = tuple(int(s) for s in strides)
        self.scales = [1.0 / s for s in self.strides]
        self.output_size = (int(output_size), int(output_size))
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)
        self.canonical_box_size, self.canonical_level = CANONICAL_BOX_SIZE, CANONICAL_LEVEL
        self.min_level = round(math.log2(self.strides[0]))
        self.max_level = round(math.log2(self.strides[-1]))

    def assign_levels(self, boxes: torch.Tensor) -> torch.Tensor:
        """Index into ``featmap_names`` for each (N, 4) XYXY box."""
        sizes = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        levels = torch.floor(
            self.canonical_level + torch.log2(sizes / self.canonical_box_size + 1e-8)
        )
        return (levels.clamp(self.min_level, self.max_level) - self.min_level).to(torch.int64)

    def forward(
        self,
        features: dict[str, torch.Tensor],
        boxes: list[torch.Tensor],
        image_shapes: list[tuple[int, int]] | None = None,
    ) -> torch.Tensor:
        levels = [features[name] for name in self.featmap_names]
        rois = torch.cat(
            [torch.cat([b.new_full((len(b), 1), float(i)), b], dim=1) for i, b in enumerate(boxes)]
        )
        out = levels[0].new_zeros((len(rois), levels[0].shape[1], *self.output_size))
        if not len(rois):
            return out
        assigned = self.assign_levels(rois[:, 1:])
        for index, (feature, scale) in enumerate(zip(levels, self.scales, strict=True)):
            inds = torch.nonzero(assigned == index, as_tuple=True)[0]
            if len(inds):
                pooled = roi_align(
                    feature,
                    rois[inds].to(feature.dtype),
                    self.output_size,
                    scale,
                    self.sampling_ratio,
                    self.aligned,
                )
                out[inds] = pooled.to(out.dtype)
        return out


def paste_masks(masks: torch.Tensor, boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, 1, M, M) mask probabilities -> (N, 1, height, width), each sampled bilinearly at the
    pixel centres inside its real-valued XYXY box (detectron2's ``_do_paste_mask``)."""
    out = masks.new_zeros((len(masks), 1, height, width), dtype=torch.float32)
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        left, top = max(math.floor(x0) - 1, 0), max(math.floor(y0) - 1, 0)
        right, bottom = min(math.ceil(x1) + 1, width), min(math.ceil(y1) + 1, height)
        if right <= left or bottom <= top or x1 <= x0 or y1 <= y0:
            continue
        xs = torch.arange(left, right, device=masks.device, dtype=torch.float32) + 0.5
        ys = torch.arange(top, bottom, device=masks.device, dtype=torch.float32) + 0.5
        gx, gy = torch.meshgrid(
            (xs - x0) / (x1 - x0) * 2 - 1, (ys - y0) / (y1 - y0) * 2 - 1, indexing="xy"
        )
        grid = torch.stack([gx, gy], dim=-1)[None]
        sampled = F.grid_sample(masks[i : i + 1].float(), grid, align_corners=False)
        out[i, 0, top:bottom, left:right] = sampled[0, 0]
    return out


def mask_targets(
    gt_masks: torch.Tensor, proposals: torch.Tensor, matched_idxs: torch.Tensor, size: int
) -> torch.Tensor:
    """(N, size, size) bool: each proposal's matched ground-truth mask cropped by aligned
    ROIAlign and thresholded at 0.5 (detectron2's ``BitMasks.crop_and_resize``)."""
    rois = torch.cat([matched_idxs[:, None].to(proposals), proposals], dim=1)
    cropped = roi_align(gt_masks[:, None].to(proposals), rois, (size, size), 1.0, 0, aligned=True)
    return cropped[:, 0] >= 0.5


class Detectron2RPN(RegionProposalNetwork):
    """torchvision's RPN (per-level PRE_NMS_TOPK, per-image POST_NMS_TOPK, as detectron2) with
    detectron2's losses: smooth-L1 with SMOOTH_L1_BETA, both terms summed and divided by
    BATCH_SIZE_PER_IMAGE x images, LOSS_WEIGHT and BBOX_REG_LOSS_WEIGHT applied."""

    def __init__(
        self,
        *args: Any,
        smooth_l1_beta: float = 0.0,
        loss_weight: float = 1.0,
        box_reg_loss_weight: float = 1.0,
        min_box_size: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.smooth_l1_beta = float(smooth_l1_beta)
        self.loss_weight = float(loss_weight)
        self.box_reg_loss_weight = float(box_reg_loss_weight)
        # detectron2 keeps proposals wider than MIN_SIZE; torchvision's floor of 1e-3 drops
        # only degenerate boxes, which detectron2 drops too
        self.min_size = max(float(min_box_size), 1e-3)

    def compute_loss(
        self,
        objectness: torch.Tensor,
        pred_bbox_deltas: torch.Tensor,
        labels: list[torch.Tensor],
        regression_targets: list[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sampled_pos, sampled_neg = self.fg_bg_sampler(labels)
        positive = torch.where(torch.cat(sampled_pos))[0]
        sampled = torch.cat([positive, torch.where(torch.cat(sampled_neg))[0]])
        normalizer = self.fg_bg_sampler.batch_size_per_image * len(labels)
        all_labels = torch.cat(labels)
        box_loss = F.smooth_l1_loss(
            pred_bbox_deltas[positive],
            torch.cat(regression_targets)[positive],
            beta=self.smooth_l1_beta,
            reduction="sum",
        )
        objectness_loss = F.binary_cross_entropy_with_logits(
            objectness.flatten()[sampled], all_labels[sampled], reduction="sum"
        )
        return (
            objectness_loss / normalizer * self.loss_weight,
            box_loss / normalizer * self.loss_weight * self.box_reg_loss_weight,
        )


class Detectron2RoIHeads(RoIHeads):
    """torchvision's box and mask heads with detectron2's box loss (SMOOTH_L1_BETA,
    BBOX_REG_LOSS_WEIGHT) and mask targets (:func:`mask_targets`)."""

    def __init__(
        self,
        *args: Any,
        smooth_l1_beta: float = 0.0,
        box_reg_loss_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.smooth_l1_beta = float(smooth_l1_beta)
        self.box_reg_loss_weight = float(box_reg_loss_weight)

    def forward(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, torch.Tensor]] | None = None,
    ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        if not self.training:
            return self._detect(features, proposals, image_shapes), {}
        proposals, matched_idxs, labels, regression_targets = self.select_training_samples(
            proposals, targets
        )
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        losses = self.box_losses(class_logits, box_regression, labels, regression_targets)
        positive = [torch.where(image_labels > 0)[0] for image_labels in labels]
        mask_proposals = [p[i] for p, i in zip(proposals, positive, strict=True)]
        mask_logits = self._mask_logits(features, mask_proposals, image_shapes)
        losses["loss_mask"] = self.mask_loss(
            mask_logits,
            mask_proposals,
            [t["masks"] for t in targets],
            [m[i] for m, i in zip(matched_idxs, positive, strict=True)],
            [image_labels[i] for image_labels, i in zip(labels, positive, strict=True)],
        )
        return [], losses

    def _detect(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> list[dict[str, torch.Tensor]]:
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        boxes, scores, labels = self.postprocess_detections(
            class_logits, box_regression, proposals, image_shapes
        )
        masks = maskrcnn_inference(self._mask_logits(features, boxes, image_shapes), labels)
        return [
            {"boxes": b, "labels": c, "scores": s, "masks": m}
            for b, c, s, m in zip(boxes, labels, scores, masks, strict=True)
        ]

    def _mask_logits(
        self,
        features: dict[str, torch.Tensor],
        boxes: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        return self.mask_predictor(
            self.mask_head(self.mask_roi_pool(features, boxes, image_shapes))
        )

    def box_losses(
        self,
        class_logits: torch.Tensor,
        box_regression: torch.Tensor,
        labels: list[torch.Tensor],
        regression_targets: list[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Cross-entropy over sampled proposals; smooth-L1 over the foreground ones of their
        class, summed and divided by all sampled proposals (detectron2's FastRCNNOutputLayers)."""
        labels_all = torch.cat(labels)
        targets_all = torch.cat(regression_targets)
        foreground = torch.where(labels_all > 0)[0]
        deltas = box_regression.reshape(len(box_regression), -1, 4)
        box_loss = F.smooth_l1_loss(
            deltas[foreground, labels_all[foreground]],
            targets_all[foreground],
            beta=self.smooth_l1_beta,
            reduction="sum",
        ) / max(labels_all.numel(), 1)
        return {
            "loss_classifier": F.cross_entropy(class_logits, labels_all),
            "loss_box_reg": box_loss * self.box_reg_loss_weight,
        }

    @staticmethod
    def mask_loss(
        mask_logits: torch.Tensor,
        proposals: list[torch.Tensor],
        gt_masks: list[torch.Tensor],
        matched_idxs: list[torch.Tensor],
        labels: list[torch.Tensor],
    ) -> torch.Tensor:
        """Mean per-pixel BCE of each foreground proposal's class mask against its binary
        target (detectron2's ``mask_rcnn_loss``)."""
        size = mask_logits.shape[-1]
        targets = [
            mask_targets(m, p, i, size)
            for m, p, i in zip(gt_masks, proposals, matched_idxs, strict=True)
            if len(p)
        ]
        if not targets:
            return mask_logits.sum() * 0
        classes = torch.cat(labels)
        logits = mask_logits[torch.arange(len(classes), device=classes.device), classes]
        return F.binary_cross_entropy_with_logits(logits, torch.cat(targets).to(logits.dtype))


class NativeSizeTransform(GeneralizedRCNNTransform):
    """Normalise and batch only: ``BsiDatasetMapper`` already applied INPUT.MIN/MAX_SIZE_*
    (detectron2's ResizeShortestEdge), and resizing twice would change the training sizes.
    Masks are pasted at the input size with :func:`paste_masks`, as detectron2 pastes them."""

    def __init__(self, image_mean: list[float], image_std: list[float]) -> None:
        super().__init__(1, 1, image_mean, image_std, size_divisible=32)

    def resize(self, image: torch.Tensor, target: dict | None = None):
        return image, target

    def postprocess(
        self,
        result: list[dict[str, torch.Tensor]],
        image_shapes: list[tuple[int, int]],
        original_image_sizes: list[tuple[int, int]],
    ) -> list[dict[str, torch.Tensor]]:
        if self.training:
            return result
        for prediction, (height, width) in zip(result, image_shapes, strict=True):
            if "masks" in prediction:
                prediction["masks"] = paste_masks(
                    prediction["masks"], prediction["boxes"], int(height), int(width)
                )
        return result


def _norm_layer(name: str) -> Callable[..., nn.Module]:
    from torchvision.ops import FrozenBatchNorm2d

    layers: dict[str, Callable[..., nn.Module]] = {
        "FrozenBN": FrozenBatchNorm2d,
        "BN": nn.BatchNorm2d,
    }
    return layers[name]


def _frozen_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm2d replaced by a FrozenBatchNorm2d holding its statistics
    (detectron2's ``FrozenBatchNorm2d.convert_frozen_batchnorm``)."""
    from torchvision.ops import FrozenBatchNorm2d

    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        frozen.weight.copy_(module.weight.detach())
        frozen.bias.copy_(module.bias.detach())
        frozen.running_mean.copy_(module.running_mean)
        frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        replaced = _frozen_batchnorm(child)
        if replaced is not child:
            setattr(module, name, replaced)
    return module


# detectron2's stages in FREEZE_AT order (stem=1, res2=2, ...) as torchvision names them
_STAGES = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))


def _backbone(cfg: Any) -> nn.Module:
    from torchvision.models import resnet
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    depth = int(cfg_get(cfg, "MODEL.RESNETS.DEPTH"))
    norm = _norm_layer(cfg_get(cfg, "MODEL.RESNETS.NORM"))
    body = getattr(resnet, f"resnet{depth}")(weights=None, norm_layer=norm)
    if depth >= 50 and bool(cfg_get(cfg, "MODEL.RESNETS.STRIDE_IN_1X1")):
        # detectron2 (MSRA) strides a bottleneck's first 1x1 conv; torchvision its 3x3
        for layer in (body.layer2, body.layer3, body.layer4):
            block = layer[0]
            block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)
    freeze_at = int(cfg_get(cfg, "MODEL.BACKBONE.FREEZE_AT"))
    with torch.no_grad():
        for names in _STAGES[:freeze_at]:
            for name in names:
                stage = getattr(body, name)
                stage.requires_grad_(False)
                setattr(body, name, _frozen_batchnorm(stage))
    stage_channels = [64, 128, 256, 512] if depth < 50 else [256, 512, 1024, 2048]
    return BackboneWithFPN(
        body,
        return_layers={f"layer{i}": str(i - 1) for i in range(1, 5)},
        in_channels_list=stage_channels,
        out_channels=int(cfg_get(cfg, "MODEL.FPN.OUT_CHANNELS")),
        extra_blocks=LastLevelMaxPool(),
    )


def _pooler(cfg: Any, head: str) -> FPNRoIPooler:
    return FPNRoIPooler(
        ["0", "1", "2", "3"],
        FPN_STRIDES[:4],
        int(cfg_get(cfg, f"MODEL.{head}.POOLER_RESOLUTION")),
        int(cfg_get(cfg, f"MODEL.{head}.POOLER_SAMPLING_RATIO")),
        aligned=cfg_get(cfg, f"MODEL.{head}.POOLER_TYPE") == "ROIAlignV2",
    )


def _init_like_detectron2(
    box_head: nn.Module, box_predictor: nn.Module, mask_predictor: nn.Module
) -> None:
    """The initialisations where torchvision's defaults differ from detectron2's: box-head FCs
    c2_xavier_fill, class scores N(0, 0.01), box deltas and mask logits N(0, 0.001), biases 0."""
    for module in box_head.modules():
        if isinstance(module, nn.Linear):
            nn.init.kaiming_uniform_(module.weight, a=1)
            nn.init.zeros_(module.bias)
    for layer, std in (
        (box_predictor.cls_score, 0.01),
        (box_predictor.bbox_pred, 0.001),
        (mask_predictor.mask_fcn_logits, 0.001),
    ):
        nn.init.normal_(layer.weight, std=std)
        nn.init.zeros_(layer.bias)


def build_tv_model(cfg: Any) -> nn.Module:
    """torchvision ``GeneralizedRCNN`` (Mask R-CNN) for a detectron2-style config; nothing is
    downloaded.

    ``MODEL.PIXEL_MEAN/STD`` are in the image's own value scale (what the mapper produces), so
    torchvision's ``(x - mean) / std`` sees the same numbers detectron2's model would. Input
    sizes are the mapper's business (INPUT.MIN/MAX_SIZE_*); the model does not resize.
    """
    from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.models.detection.rpn import RPNHead

    check_supported(cfg)
    backbone = _backbone(cfg)
    channels = backbone.out_channels
    num_classes = int(cfg_get(cfg, "MODEL.ROI_HEADS.NUM_CLASSES")) + LABEL_OFFSET

    sizes, ratios = _anchor_levels(cfg)
    anchors = Detectron2AnchorGenerator(
        sizes, ratios, FPN_STRIDES, float(cfg_get(cfg, "MODEL.ANCHOR_GENERATOR.OFFSET"))
    )
    iou = cfg_get(cfg, "MODEL.RPN.IOU_THRESHOLDS")
    rpn = Detectron2RPN(
        anchors,
        RPNHead(channels, anchors.num_anchors_per_location()[0]),
        fg_iou_thresh=float(iou[-1]),
        bg_iou_thresh=float(iou[0]),
        batch_size_per_image=int(cfg_get(cfg, "MODEL.RPN.BATCH_SIZE_PER_IMAGE")),
        positive_fraction=float(cfg_get(cfg, "MODEL.RPN.POSITIVE_FRACTION")),
        pre_nms_top_n={
            "training": int(cfg_get(cfg, "MODEL.RPN.PRE_NMS_TOPK_TRAIN")),
            "testing": int(cfg_get(cfg, "MODEL.RPN.PRE_NMS_TOPK_TEST")),
        },
        post_nms_top_n={
            "training": int(cfg_get(cfg, "MODEL.RPN.POST_NMS_TOPK_TRAIN")),
            "testing": int(cfg_get(cfg, "MODEL.RPN.POST_NMS_TOPK_TEST")),
        },
        nms_thresh=float(cfg_get(cfg, "MODEL.RPN.NMS_THRESH")),
        smooth_l1_beta=float(cfg_get(cfg, "MODEL.RPN.SMOOTH_L1_BETA")),
        loss_weight=float(cfg_get(cfg, "MODEL.RPN.LOSS_WEIGHT")),
        box_reg_loss_weight=float(cfg_get(cfg, "MODEL.RPN.BBOX_REG_LOSS_WEIGHT")),
        min_box_size=float(cfg_get(cfg, "MODEL.PROPOSAL_GENERATOR.MIN_SIZE")),
    )

    box_pool = _pooler(cfg, "ROI_BOX_HEAD")
    box_res = box_pool.output_size[0]
    box_convs = [int(cfg_get(cfg, "MODEL.ROI_BOX_HEAD.CONV_DIM"))] * int(
        cfg_get(cfg, "MODEL.ROI_BOX_HEAD.NUM_CONV")
    )
    box_fcs = [int(cfg_get(cfg, "MODEL.ROI_BOX_HEAD.FC_DIM"))] * int(
        cfg_get(cfg, "MODEL.ROI_BOX_HEAD.NUM_FC")
    )
    box_head = FastRCNNConvFCHead((channels, box_res, box_res), box_convs, box_fcs)
    box_dim = box_fcs[-1] if box_fcs else (box_convs[-1] if box_convs else channels) * box_res**2
    box_predictor = FastRCNNPredictor(box_dim, num_classes)

    mask_dim = int(cfg_get(cfg, "MODEL.ROI_MASK_HEAD.CONV_DIM"))
    mask_layers = [mask_dim] * int(cfg_get(cfg, "MODEL.ROI_MASK_HEAD.NUM_CONV"))
    mask_head = MaskRCNNHeads(channels, mask_layers, 1)
    mask_predictor = MaskRCNNPredictor(
        mask_layers[-1] if mask_layers else channels, mask_dim, num_classes
    )
    _init_like_detectron2(box_head, box_predictor, mask_predictor)

    roi_iou = float(cfg_get(cfg, "MODEL.ROI_HEADS.IOU_THRESHOLDS")[0])
    roi_heads = Detectron2RoIHeads(
        box_pool,
        box_head,
        box_predictor,
        fg_iou_thresh=roi_iou,
        bg_iou_thresh=roi_iou,
        batch_size_per_image=int(cfg_get(cfg, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE")),
        positive_fraction=float(cfg_get(cfg, "MODEL.ROI_HEADS.POSITIVE_FRACTION")),
        bbox_reg_weights=tuple(
            float(w) for w in cfg_get(cfg, "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS")
        ),
        score_thresh=float(cfg_get(cfg, "MODEL.ROI_HEADS.SCORE_THRESH_TEST")),
        nms_thresh=float(cfg_get(cfg, "MODEL.ROI_HEADS.NMS_THRESH_TEST")),
        detections_per_img=int(cfg_get(cfg, "TEST.DETECTIONS_PER_IMAGE")),
        mask_roi_pool=_pooler(cfg, "ROI_MASK_HEAD"),
        mask_head=mask_head,
        mask_predictor=mask_predictor,
        smooth_l1_beta=float(cfg_get(cfg, "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA")),
        box_reg_loss_weight=float(cfg_get(cfg, "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT")),
    )
    transform = NativeSizeTransform(
        _pixel_stat(cfg, "MODEL.PIXEL_MEAN"), _pixel_stat(cfg, "MODEL.PIXEL_STD")
    )
    if cfg_get(cfg, "MODEL.META_ARCHITECTURE") == LESION_META_ARCHITECTURE:
        from bsi_d2.engine.lesion_head import build_lesion_head

        head = build_lesion_head(cfg, channels, feature_stride=FPN_STRIDES[0])
        return LesionMaskRCNN(backbone, rpn, roi_heads, transform, head)
    return GeneralizedRCNN(backbone, rpn, roi_heads, transform)


class LesionMaskRCNN(GeneralizedRCNN):
    """Mask R-CNN plus the dense lesion head on ``p2`` and the native image (detectron2
    engine: ``LesionRCNN``). Training targets carry ``image_native`` and ``lesion_target``;
    at inference ``natives`` gives the native images and each detection dict gains
    ``lesion_prob`` (H, W) at native size."""

    def __init__(self, backbone, rpn, roi_heads, transform, lesion_head: nn.Module) -> None:
        super().__init__(backbone, rpn, roi_heads, transform)
        self.lesion_head = lesion_head

    def forward(self, images, targets=None, natives=None):
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        if natives is None and targets is not None:
            natives = [t["image_native"] for t in targets]
        if natives is None:
            raise ValueError("LesionMaskRCNN needs the native images (mapper: image_native)")
        image_list, targets = self.transform(images, targets)
        features = self.backbone(image_list.tensors)
        proposals, proposal_losses = self.rpn(image_list, features, targets)
        detections, detector_losses = self.roi_heads(
            features, proposals, image_list.image_sizes, targets
        )
        logits = self.lesion_head(features["0"], image_list.image_sizes, natives)
        if self.training:
            lesion = self.lesion_head.losses(logits, [t["lesion_target"] for t in targets])
            return {**detector_losses, **proposal_losses, **lesion}
        detections = self.transform.postprocess(detections, image_list.image_sizes, original_sizes)
        for detection, logit in zip(detections, logits, strict=True):
            detection["lesion_prob"] = torch.sigmoid(logit[0].float())
        return detections


def _pixel_stat(cfg: Any, key: str) -> list[float]:
    values = [float(v) for v in cfg_get(cfg, key)]
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise UnsupportedConfigError(f"{key}: need 1 or 3 values, got {len(values)}")
    return values
