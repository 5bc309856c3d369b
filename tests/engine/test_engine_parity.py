"""Both engines read a config key the same way: the torchvision model's resolved values, one key
at a time, and (marked ``detectron2``) side by side with detectron2's model from one config."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import FrozenBatchNorm2d, roi_align

from bsi_d2.engine.torchvision import trainer as tv_trainer
from bsi_d2.engine.torchvision.model import build_tv_model, mask_targets, paste_masks

REPO = Path(__file__).resolve().parents[2]
CPU_CONFIG = REPO / "configs" / "mask_rcnn_R_18_FPN_cpu_bsi.yaml"


def _subset_cfg():
    from bsi_d2.config import get_cfg

    cfg = get_cfg(subset=True)
    cfg.merge_from_file(str(CPU_CONFIG))
    return cfg


def _set(cfg, key: str, value) -> None:
    """Set ``key``, adding it where the subset lacks it (as detectron2's defaults have it)."""
    *parents, leaf = key.split(".")
    node = cfg
    for part in parents:
        node = getattr(node, part)
    setattr(node, leaf, value)


def _rpn_iou(model):
    matcher = model.rpn.proposal_matcher
    return [matcher.low_threshold, matcher.high_threshold]


def _pooler_type(pooler) -> str:
    return "ROIAlignV2" if pooler.aligned else "ROIAlign"


def _rpn(model):
    return model.rpn


def _heads(model):
    return model.roi_heads


# (key, a value different from the CPU config's, the value the built model uses)
RESOLVED = [
    ("MODEL.RPN.BATCH_SIZE_PER_IMAGE", 96, lambda m: _rpn(m).fg_bg_sampler.batch_size_per_image),
    ("MODEL.RPN.POSITIVE_FRACTION", 0.4, lambda m: _rpn(m).fg_bg_sampler.positive_fraction),
    ("MODEL.RPN.PRE_NMS_TOPK_TRAIN", 321, lambda m: _rpn(m)._pre_nms_top_n["training"]),
    ("MODEL.RPN.PRE_NMS_TOPK_TEST", 123, lambda m: _rpn(m)._pre_nms_top_n["testing"]),
    ("MODEL.RPN.POST_NMS_TOPK_TRAIN", 77, lambda m: _rpn(m)._post_nms_top_n["training"]),
    ("MODEL.RPN.POST_NMS_TOPK_TEST", 55, lambda m: _rpn(m)._post_nms_top_n["testing"]),
    ("MODEL.RPN.NMS_THRESH", 0.6, lambda m: _rpn(m).nms_thresh),
    ("MODEL.RPN.IOU_THRESHOLDS", [0.2, 0.8], _rpn_iou),
    ("MODEL.RPN.SMOOTH_L1_BETA", 0.25, lambda m: _rpn(m).smooth_l1_beta),
    ("MODEL.RPN.LOSS_WEIGHT", 2.0, lambda m: _rpn(m).loss_weight),
    ("MODEL.RPN.BBOX_REG_LOSS_WEIGHT", 3.0, lambda m: _rpn(m).box_reg_loss_weight),
    ("MODEL.PROPOSAL_GENERATOR.MIN_SIZE", 2.0, lambda m: _rpn(m).min_size),
    ("MODEL.ANCHOR_GENERATOR.OFFSET", 0.5, lambda m: _rpn(m).anchor_generator.offset),
    (
        "MODEL.ANCHOR_GENERATOR.SIZES",
        [[4], [8], [16], [32], [64]],
        lambda m: [list(s) for s in _rpn(m).anchor_generator.sizes],
    ),
    (
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
        48,
        lambda m: _heads(m).fg_bg_sampler.batch_size_per_image,
    ),
    ("MODEL.ROI_HEADS.POSITIVE_FRACTION", 0.5, lambda m: _heads(m).fg_bg_sampler.positive_fraction),
    (
        "MODEL.ROI_HEADS.IOU_THRESHOLDS",
        [0.6],
        lambda m: [_heads(m).proposal_matcher.high_threshold],
    ),
    ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.1, lambda m: _heads(m).score_thresh),
    ("MODEL.ROI_HEADS.NMS_THRESH_TEST", 0.4, lambda m: _heads(m).nms_thresh),
    ("TEST.DETECTIONS_PER_IMAGE", 50, lambda m: _heads(m).detections_per_img),
    (
        "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS",
        (5.0, 5.0, 2.0, 2.0),
        lambda m: _heads(m).box_coder.weights,
    ),
    ("MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA", 0.5, lambda m: _heads(m).smooth_l1_beta),
    ("MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT", 2.0, lambda m: _heads(m).box_reg_loss_weight),
    ("MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", 5, lambda m: _heads(m).box_roi_pool.output_size[0]),
    (
        "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO",
        2,
        lambda m: _heads(m).box_roi_pool.sampling_ratio,
    ),
    ("MODEL.ROI_BOX_HEAD.POOLER_TYPE", "ROIAlign", lambda m: _pooler_type(_heads(m).box_roi_pool)),
    ("MODEL.ROI_BOX_HEAD.FC_DIM", 128, lambda m: _heads(m).box_predictor.cls_score.in_features),
    ("MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION", 7, lambda m: _heads(m).mask_roi_pool.output_size[0]),
    (
        "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO",
        2,
        lambda m: _heads(m).mask_roi_pool.sampling_ratio,
    ),
    (
        "MODEL.ROI_MASK_HEAD.POOLER_TYPE",
        "ROIAlign",
        lambda m: _pooler_type(_heads(m).mask_roi_pool),
    ),
    ("MODEL.ROI_MASK_HEAD.NUM_CONV", 3, lambda m: len(_heads(m).mask_head)),
    (
        "MODEL.ROI_MASK_HEAD.CONV_DIM",
        32,
        lambda m: _heads(m).mask_predictor.conv5_mask.out_channels,
    ),
    ("MODEL.FPN.OUT_CHANNELS", 32, lambda m: m.backbone.out_channels),
    ("MODEL.PIXEL_MEAN", [1.0, 2.0, 3.0], lambda m: m.transform.image_mean),
    ("MODEL.PIXEL_STD", [4.0, 5.0, 6.0], lambda m: m.transform.image_std),
]


@pytest.mark.parametrize(("key", "value", "resolved"), RESOLVED, ids=[r[0] for r in RESOLVED])
def test_each_key_reaches_the_model(key, value, resolved):
    cfg = _subset_cfg()
    _set(cfg, key, value)
    got = resolved(build_tv_model(cfg))
    if isinstance(value, list | tuple):
        got, value = list(got), list(value)
    assert got == (
        value if isinstance(value, str) or key.endswith("SIZES") else pytest.approx(value)
    )


def test_cpu_config_resolves_like_detectron2_reads_it():
    model = build_tv_model(_subset_cfg())
    rpn, heads = model.rpn, model.roi_heads
    # detectron2's Matcher: low-quality matches for anchors, not for proposals
    assert rpn.proposal_matcher.allow_low_quality_matches
    assert not heads.proposal_matcher.allow_low_quality_matches
    # detectron2's defaults for keys the YAML leaves out: L1 box losses, ROIAlignV2, 224 at p4
    assert rpn.smooth_l1_beta == heads.smooth_l1_beta == 0.0
    for pooler in (heads.box_roi_pool, heads.mask_roi_pool):
        assert pooler.aligned
        assert pooler.scales == [1 / 4, 1 / 8, 1 / 16, 1 / 32]
        assert (pooler.canonical_box_size, pooler.canonical_level) == (224, 4)
    assert heads.box_roi_pool.output_size == (7, 7)
    assert heads.mask_roi_pool.output_size == (14, 14)
    assert rpn.anchor_generator.strides == (4, 8, 16, 32, 64)
    assert model.transform.size_divisible == 32


def test_transform_neither_resizes_nor_renormalises():
    model = build_tv_model(_subset_cfg()).eval()
    image = torch.full((3, 475, 256), 30.5)
    batch, _ = model.transform([image])
    assert batch.image_sizes == [(475, 256)]
    assert batch.tensors.shape[-2:] == (480, 256)
    assert torch.allclose(batch.tensors[0, :, :475], torch.ones(3, 475, 256))  # (30.5-10.5)/20


def test_anchors_are_exact_and_strided_like_detectron2():
    anchors = build_tv_model(_subset_cfg()).rpn.anchor_generator
    # size 8, ratio 0.5: w = sqrt(64 / 0.5), h = 0.5 w - unrounded
    w = math.sqrt(64 / 0.5)
    assert anchors.cell_anchors[0][0].tolist() == pytest.approx([-w / 2, -w / 4, w / 2, w / 4])
    # a 475 x 256 image pads to 480 x 256: p6 is 8 x 4 cells, 64 px apart, not 480 // 8 = 60
    shapes = [(120, 64), (60, 32), (30, 16), (15, 8), (8, 4)]
    features = [torch.zeros(1, 1, h, w) for h, w in shapes]
    out = anchors(ImageList(torch.zeros(1, 3, 480, 256), [(475, 256)]), features)[0]
    p6 = out[-8 * 4 * 3 :].reshape(8, 4, 3, 4)
    centre_y = (p6[:, 0, 1, 1] + p6[:, 0, 1, 3]) / 2
    assert torch.allclose(centre_y[1:] - centre_y[:-1], torch.full((7,), 64.0))


def test_small_boxes_pool_with_aligned_roialign():
    pooler = build_tv_model(_subset_cfg()).roi_heads.box_roi_pool
    torch.manual_seed(0)
    features = {str(i): torch.randn(1, 4, 64 >> i, 64 >> i) for i in range(4)}
    box = torch.tensor([[10.0, 12.0, 13.0, 15.0]])  # a 3-pixel lesion: p2, under one cell
    expected = roi_align(features["0"], [box], (7, 7), 0.25, 0, aligned=True)
    assert torch.allclose(pooler(features, [box], [(256, 256)]), expected)


def test_mask_targets_are_binary_and_aligned():
    gt = torch.zeros(1, 20, 20, dtype=torch.uint8)
    gt[0, 5:8, 10:13] = 1  # a 3 x 3 lesion, symmetric in its own box
    box = torch.tensor([[10.0, 5.0, 13.0, 8.0]])
    target = mask_targets(gt, box, torch.zeros(1, dtype=torch.int64), 28)[0]
    assert target.dtype == torch.bool
    assert bool(target[14].all()) and bool(target[:, 14].all())  # the middle is lesion throughout
    # aligned: no half-pixel shift towards the bottom right
    assert torch.equal(target, target.flip(0)) and torch.equal(target, target.flip(1))


def test_masks_paste_inside_their_real_valued_box():
    model = build_tv_model(_subset_cfg()).eval()
    result = [
        {"boxes": torch.tensor([[10.0, 20.0, 13.0, 23.0]]), "masks": torch.ones(1, 1, 28, 28)}
    ]
    pasted = model.transform.postprocess(result, [(40, 30)], [(40, 30)])[0]["masks"][0, 0]
    assert int((pasted >= 0.5).sum()) == 9  # 3 x 3, not the 5 x 5 of rounded, widened boxes
    assert bool((pasted[20:23, 10:13] >= 0.5).all())
    direct = paste_masks(torch.ones(1, 1, 28, 28), result[0]["boxes"], 40, 30)
    assert torch.equal(direct[0, 0], pasted)


def test_heads_start_like_detectron2():
    heads = build_tv_model(_subset_cfg()).roi_heads
    for layer, std in (
        (heads.box_predictor.cls_score, 0.01),
        (heads.box_predictor.bbox_pred, 0.001),
        (heads.mask_predictor.mask_fcn_logits, 0.001),
    ):
        assert float(layer.weight.detach().std()) == pytest.approx(std, rel=0.2)
        assert not layer.bias.any()


def test_frozen_stages_freeze_their_batchnorm_and_bottlenecks_stride_in_1x1():
    cfg = _subset_cfg()
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 256
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    body = build_tv_model(cfg).backbone.body
    assert isinstance(body.bn1, FrozenBatchNorm2d)
    assert isinstance(body.layer1[0].bn1, FrozenBatchNorm2d)
    assert isinstance(body.layer2[0].bn1, torch.nn.BatchNorm2d)
    assert body.layer2[0].conv1.stride == (2, 2) and body.layer2[0].conv2.stride == (1, 1)
    _set(cfg, "MODEL.RESNETS.STRIDE_IN_1X1", False)
    body = build_tv_model(cfg).backbone.body
    assert body.layer2[0].conv1.stride == (1, 1) and body.layer2[0].conv2.stride == (2, 2)


def test_gradients_are_clipped_per_parameter():
    cfg = _subset_cfg()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
    model = torch.nn.Linear(3, 2)
    model.weight.grad = torch.full_like(model.weight, 10.0)
    model.bias.grad = torch.full_like(model.bias, 10.0)
    tv_trainer._clip_gradients(cfg, model)
    assert float(model.weight.grad.norm()) == pytest.approx(1.0, rel=1e-4)
    assert float(model.bias.grad.norm()) == pytest.approx(1.0, rel=1e-4)


# -- side by side with detectron2 -------------------------------------------------------------
@pytest.fixture
def both():
    pytest.importorskip("detectron2", reason="detectron2 not installed; see README")
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from bsi_d2.config import add_bsi_config

    cfg = get_cfg()
    add_bsi_config(cfg)
    cfg.merge_from_file(str(CPU_CONFIG))
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    return cfg, build_model(cfg), build_tv_model(cfg)


@pytest.mark.detectron2
def test_resolved_values_side_by_side(both):
    _, d2, tv = both
    d2_rpn, tv_rpn = d2.proposal_generator, tv.rpn
    assert d2_rpn.batch_size_per_image == tv_rpn.fg_bg_sampler.batch_size_per_image
    assert d2_rpn.positive_fraction == tv_rpn.fg_bg_sampler.positive_fraction
    assert d2_rpn.pre_nms_topk == {
        True: tv_rpn._pre_nms_top_n["training"],
        False: tv_rpn._pre_nms_top_n["testing"],
    }
    assert d2_rpn.post_nms_topk == {
        True: tv_rpn._post_nms_top_n["training"],
        False: tv_rpn._post_nms_top_n["testing"],
    }
    assert d2_rpn.nms_thresh == tv_rpn.nms_thresh
    assert d2_rpn.anchor_matcher.thresholds[1:3] == _rpn_iou(tv)
    assert (
        d2_rpn.anchor_matcher.allow_low_quality_matches
        == tv_rpn.proposal_matcher.allow_low_quality_matches
    )
    assert d2_rpn.smooth_l1_beta == tv_rpn.smooth_l1_beta
    assert d2_rpn.loss_weight == {
        "loss_rpn_cls": tv_rpn.loss_weight,
        "loss_rpn_loc": tv_rpn.loss_weight * tv_rpn.box_reg_loss_weight,
    }
    assert tuple(d2_rpn.box2box_transform.weights) == tuple(tv_rpn.box_coder.weights)

    d2_anchors, tv_anchors = d2_rpn.anchor_generator, tv_rpn.anchor_generator
    assert tuple(d2_anchors.strides) == tv_anchors.strides
    assert d2_anchors.offset == tv_anchors.offset
    for d2_cell, tv_cell in zip(d2_anchors.cell_anchors, tv_anchors.cell_anchors, strict=True):
        assert torch.allclose(d2_cell, tv_cell)

    d2_heads, tv_heads = d2.roi_heads, tv.roi_heads
    assert d2_heads.batch_size_per_image == tv_heads.fg_bg_sampler.batch_size_per_image
    assert d2_heads.positive_fraction == tv_heads.fg_bg_sampler.positive_fraction
    assert d2_heads.proposal_matcher.thresholds[1] == tv_heads.proposal_matcher.high_threshold
    assert (
        d2_heads.proposal_matcher.allow_low_quality_matches
        == tv_heads.proposal_matcher.allow_low_quality_matches
    )
    for d2_pool, tv_pool in (
        (d2_heads.box_pooler, tv_heads.box_roi_pool),
        (d2_heads.mask_pooler, tv_heads.mask_roi_pool),
    ):
        assert tuple(d2_pool.output_size) == tv_pool.output_size
        assert (d2_pool.canonical_box_size, d2_pool.canonical_level) == (
            tv_pool.canonical_box_size,
            tv_pool.canonical_level,
        )
        assert [p.aligned for p in d2_pool.level_poolers] == [tv_pool.aligned] * 4
        assert [p.spatial_scale for p in d2_pool.level_poolers] == tv_pool.scales
        assert [p.sampling_ratio for p in d2_pool.level_poolers] == [tv_pool.sampling_ratio] * 4
    predictor = d2_heads.box_predictor
    assert predictor.test_score_thresh == tv_heads.score_thresh
    assert predictor.test_nms_thresh == tv_heads.nms_thresh
    assert predictor.test_topk_per_image == tv_heads.detections_per_img
    assert predictor.smooth_l1_beta == tv_heads.smooth_l1_beta
    assert predictor.loss_weight == {"loss_box_reg": tv_heads.box_reg_loss_weight}
    assert tuple(predictor.box2box_transform.weights) == tuple(tv_heads.box_coder.weights)

    assert d2.pixel_mean.flatten().tolist() == tv.transform.image_mean
    assert d2.pixel_std.flatten().tolist() == tv.transform.image_std
    assert d2.backbone.size_divisibility == tv.transform.size_divisible


@pytest.mark.detectron2
def test_same_architecture_and_initialisation(both):
    _, d2, tv = both

    def count(module):
        return sum(p.numel() for p in module.parameters())

    def trainable(module):
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    assert count(d2.backbone.bottom_up) == count(tv.backbone.body)
    assert trainable(d2.backbone.bottom_up) == trainable(tv.backbone.body)
    assert count(d2.backbone) - count(d2.backbone.bottom_up) == count(tv.backbone.fpn)
    assert count(d2.proposal_generator) == count(tv.rpn)
    assert count(d2.roi_heads.box_head) == count(tv.roi_heads.box_head)
    # torchvision keeps unused background outputs: one more class of box deltas and mask logits
    d2_pred, tv_pred = d2.roi_heads.box_predictor, tv.roi_heads.box_predictor
    assert d2_pred.cls_score.out_features == tv_pred.cls_score.out_features
    assert d2_pred.bbox_pred.out_features + 4 == tv_pred.bbox_pred.out_features
    d2_mask = d2.roi_heads.mask_head
    tv_mask = torch.nn.ModuleList([tv.roi_heads.mask_head, tv.roi_heads.mask_predictor])
    assert count(d2_mask) - count(d2_mask.predictor) == count(tv_mask) - count(
        tv.roi_heads.mask_predictor.mask_fcn_logits
    )
    for d2_layer, tv_layer in (
        (d2_pred.cls_score, tv_pred.cls_score),
        (d2_pred.bbox_pred, tv_pred.bbox_pred),
        (d2_mask.predictor, tv.roi_heads.mask_predictor.mask_fcn_logits),
        (d2.roi_heads.box_head.fc1, tv.roi_heads.box_head[1]),
    ):
        assert float(tv_layer.weight.detach().std()) == pytest.approx(
            float(d2_layer.weight.detach().std()), rel=0.2
        )
        assert not tv_layer.bias.any() and not d2_layer.bias.any()


@pytest.mark.detectron2
def test_pooling_anchors_targets_and_pasting_compute_the_same(both):
    from detectron2.layers.mask_ops import paste_masks_in_image
    from detectron2.structures import BitMasks, Boxes

    _, d2, tv = both
    torch.manual_seed(0)
    shapes = [(120, 64), (60, 32), (30, 16), (15, 8), (8, 4)]
    features = [torch.randn(2, 64, h, w) for h, w in shapes]
    boxes = [
        torch.tensor(
            [[10.0, 20.0, 13.0, 23.0], [5.0, 5.0, 250.0, 400.0], [100.0, 50.0, 101.5, 52.0]]
        ),
        torch.tensor([[30.0, 40.0, 90.0, 130.0]]),
    ]
    for d2_pool, tv_pool in (
        (d2.roi_heads.box_pooler, tv.roi_heads.box_roi_pool),
        (d2.roi_heads.mask_pooler, tv.roi_heads.mask_roi_pool),
    ):
        ours = tv_pool({str(i): f for i, f in enumerate(features[:4])}, boxes, [(475, 256)] * 2)
        theirs = d2_pool(features[:4], [Boxes(b) for b in boxes])
        assert torch.allclose(ours, theirs)

    images = ImageList(torch.zeros(2, 3, 480, 256), [(475, 256)] * 2)
    ours = tv.rpn.anchor_generator(images, features)[0]
    theirs = torch.cat([a.tensor for a in d2.proposal_generator.anchor_generator(features)])
    assert torch.allclose(ours, theirs)

    gt = torch.zeros(2, 100, 80, dtype=torch.uint8)
    gt[0, 10:14, 20:23] = 1
    gt[1, 30:70, 10:50] = 1
    proposals = torch.tensor(
        [[19.0, 9.0, 24.0, 15.0], [8.0, 28.0, 55.0, 72.0], [20.5, 10.5, 22.5, 13.5]]
    )
    matched = torch.tensor([0, 1, 0])
    expected = BitMasks(gt[matched].bool()).crop_and_resize(proposals, 28)
    assert torch.equal(mask_targets(gt, proposals, matched, 28), expected)

    probabilities = torch.rand(3, 1, 28, 28)
    pasted = paste_masks(probabilities, proposals, 100, 80)[:, 0] >= 0.5
    assert torch.equal(
        pasted, paste_masks_in_image(probabilities[:, 0], Boxes(proposals), (100, 80))
    )


@pytest.mark.detectron2
@pytest.mark.parametrize("scheduler", ["WarmupMultiStepLR", "WarmupCosineLR"])
def test_learning_rate_and_parameter_groups_match(both, scheduler):
    from detectron2.solver import build_lr_scheduler
    from detectron2.solver.build import get_default_optimizer_params

    cfg, _, tv = both
    cfg.SOLVER.LR_SCHEDULER_NAME = scheduler
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.STEPS = 100, 20, (10, 60)
    cfg.SOLVER.BASE_LR_END = 0.0005
    cfg.SOLVER.WEIGHT_DECAY_BIAS = 0.0
    cfg.SOLVER.BIAS_LR_FACTOR = 2.0
    ours = tv_trainer.build_optimizer(cfg, tv)
    theirs = get_default_optimizer_params(
        tv,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )

    def by_parameter(groups):
        return {
            id(p): (g.get("lr", cfg.SOLVER.BASE_LR), g.get("weight_decay", cfg.SOLVER.WEIGHT_DECAY))
            for g in groups
            for p in g["params"]
        }

    assert by_parameter(ours.param_groups) == by_parameter(theirs)
    d2_optimizer = torch.optim.SGD(theirs, lr=cfg.SOLVER.BASE_LR)
    d2_scheduler = build_lr_scheduler(cfg, d2_optimizer)
    for iteration in range(cfg.SOLVER.MAX_ITER):
        factor = d2_optimizer.param_groups[0]["lr"] / d2_scheduler.base_lrs[0]
        assert tv_trainer.lr_factor(cfg, iteration) == pytest.approx(factor, abs=1e-9), iteration
        d2_optimizer.step()
        d2_scheduler.step()
