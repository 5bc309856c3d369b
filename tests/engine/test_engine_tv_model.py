"""The torchvision engine's model, config checks, checkpoints and solver, without training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.paths import CPU_CONFIG
from torchvision.ops import FrozenBatchNorm2d

from bsi_d2.engine import checkpoint as ckpt
from bsi_d2.engine.torchvision.model import UnsupportedConfigError, build_tv_model, check_supported


@pytest.fixture
def cfg():
    from bsi_d2.config import get_cfg

    cfg = get_cfg(subset=True)
    cfg.merge_from_file(str(CPU_CONFIG))
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    return cfg


def test_model_follows_the_config(cfg):
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    model = build_tv_model(cfg)
    # torchvision counts background: 12 classes + 1
    assert model.roi_heads.box_predictor.cls_score.out_features == 13
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 13
    assert model.backbone.out_channels == 32
    assert model.rpn.anchor_generator.sizes == tuple(
        tuple(level) for level in cfg.MODEL.ANCHOR_GENERATOR.SIZES
    )
    assert model.rpn.anchor_generator.sizes[0] == (8,)
    assert model.rpn.anchor_generator.aspect_ratios[0] == (0.5, 1.0, 2.0)
    assert model.roi_heads.detections_per_img == cfg.TEST.DETECTIONS_PER_IMAGE == 100
    assert model.roi_heads.score_thresh == pytest.approx(0.05)
    assert model.rpn._post_nms_top_n["training"] == 200
    assert model.transform.image_mean == [10.5, 10.5, 10.5]
    assert model.transform.image_std == [20.0, 20.0, 20.0]
    body = model.backbone.body
    # FREEZE_AT 2 freezes detectron2's stem and res2 = torchvision's conv1 and layer1
    assert not any(p.requires_grad for p in body.conv1.parameters())
    assert not any(p.requires_grad for p in body.layer1.parameters())
    assert all(p.requires_grad for p in body.layer2.parameters())
    assert isinstance(body.layer2[0].bn1, torch.nn.BatchNorm2d)  # RESNETS.NORM BN
    # detectron2 freezes the statistics of frozen stages too (FrozenBatchNorm2d)
    assert isinstance(body.bn1, FrozenBatchNorm2d)
    assert isinstance(body.layer1[0].bn1, FrozenBatchNorm2d)


def test_model_keeps_the_mapper_size_and_scale(cfg):
    model = build_tv_model(cfg).eval()
    image = torch.full((3, 90, 70), 10.5)
    batch, _ = model.transform([image])
    assert batch.image_sizes == [(90, 70)]  # no resizing: the mapper did it
    assert batch.tensors.shape[-2:] == (96, 96)  # padded to a multiple of 32 like detectron2
    assert torch.allclose(batch.tensors[0, :, :90, :70], torch.zeros(3, 90, 70))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("MODEL.META_ARCHITECTURE", "RetinaNet"),
        ("MODEL.BACKBONE.NAME", "build_resnet_backbone"),
        ("MODEL.RESNETS.DEPTH", 152),
        ("MODEL.MASK_ON", False),
        ("MODEL.ROI_HEADS.NAME", "CascadeROIHeads"),
        ("MODEL.RESNETS.DEFORM_ON_PER_STAGE", [False, True, True, True]),
        ("MODEL.RESNETS.NUM_GROUPS", 32),
        ("MODEL.RESNETS.RES2_OUT_CHANNELS", 256),
        ("MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", True),
        ("MODEL.ANCHOR_GENERATOR.SIZES", [[16], [32], [64]]),
        ("SOLVER.LR_SCHEDULER_NAME", "WarmupPolyLR"),
        ("MODEL.FPN.NORM", "GN"),
    ],
)
def test_unsupported_values_are_errors_naming_the_key(cfg, key, value):
    node = cfg
    *parents, leaf = key.split(".")
    for part in parents:
        node = getattr(node, part)
    setattr(node, leaf, value)  # keys outside the subset are added the way detectron2 has them
    with pytest.raises(UnsupportedConfigError, match=key.replace(".", r"\.")):
        check_supported(cfg)
    with pytest.raises(UnsupportedConfigError):
        build_tv_model(cfg)


def test_supported_config_passes(cfg):
    check_supported(cfg)


def test_unknown_config_key_is_an_error(tmp_path):
    from bsi_d2.config import setup_cfg

    with pytest.raises(KeyError, match="MODEL.RESNETS.NO_SUCH_KEY"):
        setup_cfg(
            str(CPU_CONFIG),
            ["MODEL.ENGINE", "torchvision", "BSI.DATASET_ROOT", str(tmp_path),
             "MODEL.RESNETS.NO_SUCH_KEY", "1"],
        )  # fmt: skip


# -- checkpoints ----------------------------------------------------------------------------
def _tiny_module() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Conv2d(4, 2, 1))


def test_checkpoint_round_trip_with_weights_only(tmp_path, cfg):
    model = _tiny_module()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 1, 5, 5)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 0.5)
    path = ckpt.save_checkpoint(tmp_path, "model_0000004.pth", model, optimizer, scheduler, 4, cfg)
    assert ckpt.last_checkpoint(tmp_path) == path
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state["engine"] == "torchvision" and state["iteration"] == 4
    assert "DEPTH: 18" in state["cfg"]
    fresh = _tiny_module()
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    ckpt.load_model_weights(fresh, path)
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_fine_tuning_skips_heads_of_another_shape(tmp_path, caplog):
    source = _tiny_module()
    path = ckpt.save_checkpoint(tmp_path, "model_final.pth", source)
    target = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Conv2d(4, 5, 1))
    before = target[1].weight.clone()
    ckpt.load_model_weights(target, path)
    assert torch.equal(target[0].weight, source[0].weight)  # shared layers transfer
    assert torch.equal(target[1].weight, before)  # the class head starts fresh
    assert "1.weight" in caplog.text


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ("detectron2://ImageNetPretrained/MSRA/R-50.pkl", "cannot download"),
        ("https://dl.fbaipublicfiles.com/x/model_final.pth", "cannot download"),
        ("R-50.pkl", "different format"),
        ("missing/model_final.pth", "not found"),
    ],
)
def test_foreign_weights_give_clear_errors(weights, message):
    with pytest.raises(ckpt.CheckpointError, match=message):
        ckpt.load_checkpoint(weights)


def test_detectron2_or_pickled_checkpoints_are_refused(tmp_path):
    d2_style = tmp_path / "d2.pth"
    torch.save({"model": _tiny_module().state_dict(), "iteration": 3}, d2_style)
    with pytest.raises(ckpt.CheckpointError, match=r"d2\.pth.*detectron2"):
        ckpt.load_checkpoint(d2_style)
    pickled = tmp_path / "object.pth"
    torch.save({"model": {}, "engine": "torchvision", "extra": Path("x")}, pickled)
    with pytest.raises(ckpt.CheckpointError, match="weights_only"):
        ckpt.load_checkpoint(pickled)


# -- solver -----------------------------------------------------------------------------------
def test_lr_schedule_warms_up_and_steps(cfg):
    from bsi_d2.engine.torchvision.trainer import lr_factor

    cfg.SOLVER.MAX_ITER = 100
    cfg.SOLVER.WARMUP_ITERS = 10
    cfg.SOLVER.WARMUP_FACTOR = 0.1
    cfg.SOLVER.STEPS = (50, 80)
    cfg.SOLVER.GAMMA = 0.1
    assert lr_factor(cfg, 0) == pytest.approx(0.1)
    assert lr_factor(cfg, 5) == pytest.approx(0.55)
    assert lr_factor(cfg, 10) == pytest.approx(1.0)
    assert lr_factor(cfg, 50) == pytest.approx(0.1)
    assert lr_factor(cfg, 99) == pytest.approx(0.01)
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupCosineLR"
    assert lr_factor(cfg, 50) == pytest.approx(0.5)


def test_optimizer_follows_the_solver_keys(cfg):
    from bsi_d2.engine.torchvision.trainer import build_optimizer

    cfg.SOLVER.BASE_LR = 0.02
    cfg.SOLVER.WEIGHT_DECAY = 1e-4
    model = build_tv_model(cfg)
    optimizer = build_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.SGD)
    decay, norms = optimizer.param_groups
    assert decay["lr"] == 0.02 and decay["momentum"] == 0.9
    assert decay["weight_decay"] == 1e-4 and norms["weight_decay"] == 0.0  # WEIGHT_DECAY_NORM
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == sum(p.numel() for g in optimizer.param_groups for p in g["params"])


def test_training_stream_shards_each_pass_across_ranks():
    import itertools

    from bsi_d2.engine.torchvision.trainer import InfiniteMappedDicts

    dicts = [{"i": i} for i in range(10)]
    streams = [
        [d["i"] for d in itertools.islice(InfiniteMappedDicts(dicts, dict, 3, rank, 2), 10)]
        for rank in (0, 1)
    ]
    # within one pass the two ranks see disjoint halves that together cover every image
    assert set(streams[0][:5]).isdisjoint(streams[1][:5])
    assert set(streams[0][:5]) | set(streams[1][:5]) == set(range(10))
    assert streams[0][:5] != streams[0][5:]  # a new shuffle each pass
    again = [d["i"] for d in itertools.islice(InfiniteMappedDicts(dicts, dict, 3, 0, 2), 10)]
    assert again == streams[0]  # seeded
