"""The dense lesion head: shapes, losses, learning, calibration, checkpoints, and the
torchvision engine end to end with META_ARCHITECTURE LesionRCNN."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_engine_tv_train import HEIGHT, LESION, WIDTH, _cfg, make_dataset

from bsi_d2.engine.lesion_head import (
    LESION_HEAD_REGISTRY,
    NativeLesionHead,
    build_lesion_head,
    focal_tversky,
    sigmoid_focal_loss,
)

LESION_ARCH = {"MODEL.META_ARCHITECTURE": "LesionRCNN"}


def synthetic(batch=2, height=64, width=48, fpn=16):
    """Native grey scans with a bright 5 x 5 lesion each, their targets and half-size p2."""
    natives, targets = [], []
    for i in range(batch):
        image = torch.full((1, height, width), 10.0)
        target = torch.zeros((height, width), dtype=torch.uint8)
        r, c = 20 + 7 * i, 12 + 5 * i
        image[:, r : r + 5, c : c + 5] = 80.0
        target[r : r + 5, c : c + 5] = 1
        natives.append(image)
        targets.append(target)
    # the Mask R-CNN input is half the native size; p2 is stride 4 of it
    features = torch.randn(batch, fpn, height // 8, width // 8)
    return features, [(height // 2, width // 2)] * batch, natives, targets


def test_head_gives_native_size_logits_and_a_finite_loss():
    head = NativeLesionHead(16, pixel_mean=20.0, pixel_std=40.0)
    features, sizes, natives, targets = synthetic()
    natives[1] = natives[1][:, :60, :44]  # images of one batch may differ in size
    targets[1] = targets[1][:60, :44]
    logits = head(features, sizes, natives)
    assert [tuple(x.shape) for x in logits] == [(1, 64, 48), (1, 60, 44)]
    loss = head.losses(logits, targets)["loss_lesion"]
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0


def test_focal_tversky_by_hand():
    prob = torch.tensor([0.9, 0.2, 0.6, 0.0])
    truth = torch.tensor([1.0, 1.0, 0.0, 0.0])
    keep = torch.tensor([1.0, 1.0, 1.0, 0.0])
    tp, fp, fn = 1.1, 0.6, 0.9
    index = (tp + 1) / (tp + 0.3 * fp + 0.7 * fn + 1)
    expected = (1 - index) ** 0.75
    assert float(focal_tversky(prob, truth, keep)) == pytest.approx(expected, rel=1e-5)
    # a perfect map costs nothing; ignored pixels cost nothing either
    assert float(focal_tversky(truth, truth, keep)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("loss", ["focal_tversky", "dice_bce", "focal_tversky_bce"])
def test_a_few_iterations_lower_the_lesion_loss(loss):
    torch.manual_seed(0)
    head = NativeLesionHead(16, pixel_mean=20.0, pixel_std=40.0, loss=loss)
    features, sizes, natives, targets = synthetic()
    optimizer = torch.optim.Adam(head.parameters(), lr=0.01)
    losses = []
    for _ in range(30):
        value = head.losses(head(features, sizes, natives), targets)["loss_lesion"]
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        losses.append(float(value.detach()))
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


@pytest.mark.parametrize("loss", ["focal_tversky", "dice_bce", "focal_dice"])
def test_a_batch_without_lesions_does_not_push_the_region_terms_to_an_empty_map(loss):
    """With a smoothing constant, Tversky or Dice on a lesion-free batch is 1 - 1 / (1 + FP):
    its gradient drives every probability to zero. Only the pixel terms may act there."""
    head = NativeLesionHead(16, pixel_mean=20.0, pixel_std=40.0, loss=loss)
    features, sizes, natives, targets = synthetic()
    empty = [torch.zeros_like(t) for t in targets]
    logits = [x.detach().requires_grad_(True) for x in head(features, sizes, natives)]
    value = head.losses(logits, empty)["loss_lesion"]
    z = torch.cat([x.reshape(-1) for x in logits])
    y, keep = torch.zeros_like(z), torch.ones_like(z)
    pixel_term = {  # what is left: the pixel terms alone, times the loss weight
        "focal_tversky": z.sum() * 0.0,
        "dice_bce": F.binary_cross_entropy_with_logits(z, y),
        "focal_dice": sigmoid_focal_loss(z, y, keep),
    }[loss] * head.loss_weight
    assert float(value) == pytest.approx(float(pixel_term), rel=1e-5, abs=1e-8)
    # with lesions in the batch the region terms are there
    with_lesions = head.losses(head(features, sizes, natives), targets)["loss_lesion"]
    assert float(with_lesions) > 0


def test_plain_sgd_on_mixed_batches_keeps_the_lesions():
    """Half the batches free of lesions, SGD at a detector's learning rate: the map must not
    collapse to empty (it did while the region term acted on lesion-free batches)."""
    torch.manual_seed(0)
    head = NativeLesionHead(16, pixel_mean=20.0, pixel_std=40.0, loss="focal_tversky")
    features, sizes, natives, targets = synthetic()
    blank = [torch.full_like(n, 10.0) for n in natives]
    empty = [torch.zeros_like(t) for t in targets]
    optimizer = torch.optim.SGD(head.parameters(), lr=0.05, momentum=0.9)
    for step in range(60):
        batch = (natives, targets) if step % 2 else (blank, empty)
        value = head.losses(head(features, sizes, batch[0]), batch[1])["loss_lesion"]
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    with torch.no_grad():
        prob = torch.sigmoid(head(features, sizes, natives)[0][0])
    lesion = targets[0] == 1
    assert float(prob[lesion].mean()) > 2 * float(prob[~lesion].mean())
    assert float(prob[lesion].max()) > 0.05


def test_crowd_pixels_do_not_count():
    head = NativeLesionHead(16, pixel_mean=20.0, pixel_std=40.0, loss="dice_bce")
    features, sizes, natives, targets = synthetic(batch=1)
    logits = head(features, sizes, natives)
    ignored = targets[0].clone()
    ignored[:10] = 255  # rows without lesion, ignored
    moved = [x.clone() for x in logits]
    moved[0][:, :10] += 50.0  # a confident false positive there
    assert float(head.losses(moved, [ignored])["loss_lesion"]) == pytest.approx(
        float(head.losses(logits, [ignored])["loss_lesion"]), rel=1e-5
    )
    assert float(head.losses(moved, targets)["loss_lesion"]) > float(
        head.losses(logits, targets)["loss_lesion"]
    )


def test_registry_and_config_errors(tmp_path):
    from bsi_d2.config import ConfigValueError

    assert "NativeLesionHead" in dict(LESION_HEAD_REGISTRY)
    cfg = _cfg(tmp_path, tmp_path / "out", **LESION_ARCH)
    head = build_lesion_head(cfg, 32)
    assert head.source == "union" and float(head.threshold) == 0.5
    assert (head.alpha, head.beta, head.gamma) == (0.3, 0.7, 0.75)
    bad = _cfg(tmp_path, tmp_path / "out", **LESION_ARCH, **{"MODEL.LESION_HEAD.SOURCE": "both"})
    with pytest.raises(ConfigValueError, match="SOURCE 'both'"):
        build_lesion_head(bad, 32)


@pytest.fixture(scope="module")
def lesion_dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("lesion_data") / "coco")


@pytest.fixture(scope="module")
def lesion_trained(lesion_dataset, tmp_path_factory):
    from bsi_d2.engine.torchvision import trainer as tv_trainer

    output = tmp_path_factory.mktemp("lesion_run")
    cfg = _cfg(
        lesion_dataset,
        output,
        **LESION_ARCH,
        **{"DATASETS.TRAIN": "('bsi_test',)", "SOLVER.MAX_ITER": 12},
    )
    result = tv_trainer.train(cfg, log_period=1)
    return {"cfg": cfg, "output": output, "result": result}


def test_torchvision_engine_trains_the_head_and_calibrates_its_threshold(lesion_trained):
    from bsi_d2.engine.torchvision.trainer import read_metrics

    lines = [m for m in read_metrics(lesion_trained["output"]) if "total_loss" in m]
    lesion = [m["loss_lesion"] for m in lines]
    assert len(lesion) == 12 and all(np.isfinite(lesion))
    assert np.mean(lesion[-3:]) < np.mean(lesion[:3])
    sweep = json.loads((lesion_trained["output"] / "lesion_threshold.json").read_text())
    assert sweep["dataset"] == "bsi_test" and sweep["threshold"] in sweep["thresholds"]
    assert sweep["dice"][sweep["thresholds"].index(sweep["threshold"])] == max(sweep["dice"])
    state = torch.load(lesion_trained["output"] / "model_final.pth", weights_only=False)
    assert float(state["model"]["lesion_head.threshold"]) == pytest.approx(sweep["threshold"])


@pytest.mark.parametrize("source", ["dense", "rcnn", "union"])
def test_predictor_gives_lesions_from_the_chosen_source(lesion_trained, source):
    from bsi_d2.config import setup_cfg
    from bsi_d2.engine.predictor import Predictor

    cfg = lesion_trained["cfg"].clone()
    cfg.defrost()
    cfg.MODEL.LESION_HEAD.SOURCE = source
    cfg.freeze()
    predictor = Predictor(cfg, str(lesion_trained["output"] / "model_final.pth"))
    scan = np.full((HEIGHT, WIDTH), 2.0, np.float32)
    (result,) = predictor([scan])
    assert result.lesion_probability is not None
    assert result.lesion_probability.shape == (HEIGHT, WIDTH)
    threshold = float(predictor.model.lesion_head.threshold)
    lesions = result.category_ids == LESION
    if source == "dense":
        # exactly the components of the map at the calibrated threshold
        assert (
            result.masks[lesions].any(axis=0).sum() == 0
            or (result.lesion_probability[result.masks[lesions].any(axis=0)] >= threshold).all()
        )
    assert setup_cfg  # the config path above is the one every entry point takes


def _rates(optimizer, model):
    """Learning rate of every named parameter, from the optimizer's groups."""
    by_id = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    return {name: by_id[id(p)] for name, p in model.named_parameters() if p.requires_grad}


def _check_head_rates(rates, base_lr, bias_factor, factor):
    head = {n: lr for n, lr in rates.items() if n.startswith("lesion_head.")}
    rest = {n: lr for n, lr in rates.items() if not n.startswith("lesion_head.")}
    assert head and rest
    for name, lr in head.items():
        expected = base_lr * factor * (bias_factor if name.endswith(".bias") else 1.0)
        assert lr == pytest.approx(expected), name
    assert max(rest.values()) == pytest.approx(base_lr * max(1.0, bias_factor))


@pytest.mark.parametrize("factor", [1.0, 10.0])
def test_lr_factor_scales_the_head_alone_in_the_torchvision_optimizer(
    lesion_dataset, tmp_path, factor
):
    from bsi_d2.engine.torchvision.model import build_tv_model
    from bsi_d2.engine.torchvision.trainer import build_optimizer

    cfg = _cfg(
        lesion_dataset,
        tmp_path,
        **LESION_ARCH,
        **{"MODEL.LESION_HEAD.LR_FACTOR": factor, "SOLVER.BIAS_LR_FACTOR": 2.0},
    )
    model = build_tv_model(cfg)
    rates = _rates(build_optimizer(cfg, model), model)
    _check_head_rates(rates, cfg.SOLVER.BASE_LR, 2.0, factor)


def test_lr_factor_must_be_positive():
    from bsi_d2.config import ConfigValueError
    from bsi_d2.engine.lesion_head import lr_factor_func

    cfg = {"MODEL": {"LESION_HEAD": {"LR_FACTOR": 0.0}}}
    with pytest.raises(ConfigValueError, match="LR_FACTOR"):
        lr_factor_func(cfg)


@pytest.mark.detectron2
def test_lr_factor_scales_the_head_alone_in_the_detectron2_optimizer(lesion_dataset, tmp_path):
    pytest.importorskip("detectron2", reason="detectron2 not installed; see README")
    from detectron2.modeling import build_model

    from bsi_d2.engine.detectron2.trainer import BsiTrainer

    cfg = _cfg(
        lesion_dataset,
        tmp_path,
        **LESION_ARCH,
        **{"MODEL.ENGINE": "detectron2", "MODEL.LESION_HEAD.LR_FACTOR": 10.0},
    )
    model = build_model(cfg)
    rates = _rates(BsiTrainer.build_optimizer(cfg, model), model)
    _check_head_rates(rates, cfg.SOLVER.BASE_LR, float(cfg.SOLVER.BIAS_LR_FACTOR), 10.0)


# -- detectron2: the same head in LesionRCNN ----------------------------------------------------


@pytest.mark.detectron2
def test_detectron2_lesion_rcnn_builds_the_same_head(lesion_dataset, tmp_path):
    pytest.importorskip("detectron2", reason="detectron2 not installed; see README")
    from detectron2.modeling import build_model

    from bsi_d2.engine.detectron2 import lesion_rcnn
    from bsi_d2.engine.torchvision.model import build_tv_model

    cfg = _cfg(lesion_dataset, tmp_path, **LESION_ARCH, **{"MODEL.ENGINE": "detectron2"})
    d2 = build_model(cfg)
    assert isinstance(d2, lesion_rcnn.LesionRCNN)
    tv = build_tv_model(cfg)
    assert d2.lesion_head.settings() == tv.lesion_head.settings()
    d2_shapes = {k: tuple(v.shape) for k, v in d2.lesion_head.state_dict().items()}
    tv_shapes = {k: tuple(v.shape) for k, v in tv.lesion_head.state_dict().items()}
    assert d2_shapes == tv_shapes
    assert (d2.lesion_head.feature_stride, d2.lesion_head.pixel_std) == (
        tv.lesion_head.feature_stride,
        tv.lesion_head.pixel_std,
    )


@pytest.mark.detectron2
def test_detectron2_engine_trains_calibrates_and_predicts_dense_lesions(lesion_dataset, tmp_path):
    pytest.importorskip("detectron2", reason="detectron2 not installed; see README")
    from bsi_d2.engine import get_engine
    from bsi_d2.engine.predictor import Predictor

    output = tmp_path / "d2_lesion"
    cfg = _cfg(
        lesion_dataset,
        output,
        **LESION_ARCH,
        **{"MODEL.ENGINE": "detectron2", "DATASETS.TRAIN": "('bsi_test',)", "SOLVER.MAX_ITER": 6},
    )
    result = get_engine(cfg).train(cfg)
    metrics = [
        json.loads(line)
        for line in (output / "metrics.json").read_text().splitlines()
        if "loss_lesion" in line
    ]
    assert metrics and all(np.isfinite(m["loss_lesion"]) for m in metrics)
    sweep = json.loads((output / "lesion_threshold.json").read_text())
    state = torch.load(output / "model_final.pth", weights_only=False)
    assert float(state["model"]["lesion_head.threshold"]) == pytest.approx(sweep["threshold"])
    assert result["evaluation"]["bsi_test"]["n_images"] == 2
    predictor = Predictor(cfg, str(output / "model_final.pth"))
    (instances,) = predictor([np.full((HEIGHT, WIDTH), 2.0, np.float32)])
    assert instances.lesion_probability.shape == (HEIGHT, WIDTH)


@pytest.mark.parametrize("detach", [True, False])
def test_detached_features_take_no_gradient_from_the_head(detach):
    head = NativeLesionHead(16, pixel_mean=20.0, pixel_std=40.0, detach_features=detach)
    features, sizes, natives, targets = synthetic()
    features.requires_grad_(True)
    head.losses(head(features, sizes, natives), targets)["loss_lesion"].backward()
    assert (features.grad is None) == detach
    assert head.lateral.weight.grad is not None  # the head itself still learns from p2


def test_the_cpu_lesion_leaf_loss_keeps_a_gradient_on_a_saturated_empty_map():
    # With focal Tversky alone a map saturated at 0 passes almost no gradient back through the
    # sigmoid, and SGD stayed there for hundreds of iterations; the leaf's loss must lift the
    # lesion pixels' logits by about loss_weight / pixels however saturated the map is.
    from bsi_d2.config import setup_cfg
    from bsi_d2.workflows.demo import CPU_CONFIG, resolve_config

    cfg = setup_cfg(str(resolve_config(CPU_CONFIG)), ["MODEL.ENGINE", "torchvision"])
    head = NativeLesionHead.from_config(cfg, 16)
    target = torch.zeros((64, 48), dtype=torch.uint8)
    target[20:25, 12:17] = 1
    logits = torch.full((1, 64, 48), -15.0, requires_grad=True)
    head.losses([logits], [target])["loss_lesion"].backward()
    lift = -logits.grad[0][target == 1]
    assert float(lift.min()) >= 0.5 * head.loss_weight / target.numel()
