"""The engine interface: a third engine is one class in one place; checkpoints say whose they are;
both engines flatten evaluations to the same metrics keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bsi_d2.config import setup_cfg
from bsi_d2.engine import Engine, engine_names, get_engine, register_engine
from bsi_d2.engine.checkpoint import (
    CheckpointError,
    checkpoint_engine,
    load_checkpoint,
    peek_engine,
)
from bsi_d2.engine.predictor import Predictor
from bsi_d2.evaluation.results import EvaluationResult, flatten_evaluations, group_by_task
from bsi_d2.structures.instances import Instances


class _Constant(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))


@register_engine
class StubEngine(Engine):
    """A trivial third engine: one whole-image skull instance per image."""

    name = "stub"
    seen: list[tuple[int, ...]] = []

    def build_model(self, cfg):
        return _Constant()

    def load_weights(self, model, weights):
        raise AssertionError("no weights in this test")

    def train(self, cfg, resume=False):
        return {"engine": self.name}

    def evaluate(self, cfg, weights=None):
        return {"engine": self.name}

    def forward(self, model, inputs, taxonomy):
        out = []
        for item in inputs:
            h, w = item["height"], item["width"]
            StubEngine.seen.append(tuple(item["image"].shape))
            skull = taxonomy.by_name("skull").id
            out.append(
                Instances(
                    h,
                    w,
                    np.array([[0, 0, w, h]], np.float32),
                    np.array([0.9], np.float32),
                    np.array([skull], np.int64),
                    np.ones((1, h, w), bool),
                )
            )
        return out


def test_a_third_engine_runs_through_the_predictor_unchanged():
    cfg = setup_cfg(None, ["MODEL.ENGINE", "stub", "MODEL.DEVICE", "cpu"])
    assert "stub" in engine_names() and isinstance(get_engine(cfg), StubEngine)
    predictor = Predictor(cfg, weights="")
    StubEngine.seen.clear()
    [result] = predictor([np.zeros((40, 30), np.float32)])
    [shape] = StubEngine.seen  # the mapper's tensor (resized to MIN_SIZE_TEST), engine-neutral
    assert shape[0] == 3 and min(shape[1:]) == cfg.INPUT.MIN_SIZE_TEST
    assert (result.height, result.width) == (40, 30) and len(result) == 1


def _torchvision_checkpoint(tmp_path):
    path = tmp_path / "tv.pth"
    torch.save(
        {"model": {"backbone.body.conv1.weight": torch.zeros(1)}, "engine": "torchvision"}, path
    )
    return path


def _detectron2_like_checkpoint(tmp_path, tagged):
    path = tmp_path / "d2.pth"
    state = {"model": {"backbone.bottom_up.stem.conv1.weight": torch.zeros(1)}, "iteration": 3}
    if tagged:
        state["engine"] = {"name": "detectron2"}
    torch.save(state, path)
    return path


@pytest.mark.parametrize("tagged", [True, False])
def test_a_detectron2_checkpoint_in_the_torchvision_engine_names_both(tmp_path, tagged):
    path = _detectron2_like_checkpoint(tmp_path, tagged)
    assert peek_engine(path) == "detectron2"
    with pytest.raises(
        CheckpointError,
        match="detectron2 engine cannot be loaded by the torchvision engine.*ENGINE detectron2",
    ):
        load_checkpoint(path)


def test_checkpoint_engine_reads_tags_and_layouts(tmp_path):
    assert checkpoint_engine({"engine": "torchvision", "model": {}}) == "torchvision"
    assert checkpoint_engine({"engine": {"name": "detectron2"}}) == "detectron2"
    assert checkpoint_engine({"model": {"backbone.body.x": 0}}) == "torchvision"
    assert checkpoint_engine({"model": {"roi_heads.x": 0}}) is None
    assert peek_engine(_torchvision_checkpoint(tmp_path)) == "torchvision"
    assert peek_engine(tmp_path / "missing.pth") is None


@pytest.mark.detectron2
def test_a_torchvision_checkpoint_in_the_detectron2_engine_names_both(tmp_path):
    pytest.importorskip("detectron2", reason="detectron2 not installed; see README")
    from bsi_d2.engine.detectron2.trainer import check_weights

    with pytest.raises(
        CheckpointError, match="torchvision engine cannot be loaded by the detectron2"
    ):
        check_weights(str(_torchvision_checkpoint(tmp_path)))
    check_weights(str(_detectron2_like_checkpoint(tmp_path, tagged=True)))  # its own: no error


EVALUATION = {
    "coco": {
        "segm": {"AP": 0.5, "AP50": 0.8, "AP75": None, "per_class": {"skull": 0.7, "lesion": None}}
    },
    "pixel": {
        "skeleton": {"precision": 0.9, "sensitivity": 0.8, "f1": 0.85},
        "per_class": {"lesion": {"precision": 0.5, "sensitivity": 0.25, "f1": 1 / 3}},
    },
    "lesion": {"dice_pooled": 0.4, "dice_mean_per_image": None, "tp": 2, "fp": 2, "fn": 6},
    "scan": {"sensitivity": 1.0, "specificity": 0.5},
    "burden": {"group_kappa": 0.3, "group_confusion": {"none": {"none": 1}}},
    "n_images": 4,
}


def test_evaluations_flatten_to_fraction_keys_and_back():
    typed = EvaluationResult.from_dict(EVALUATION)
    assert typed.segm.ap == 0.5 and typed.lesion.sensitivity == 0.25 and typed.skeleton.f1 == 0.85
    flat = typed.flatten()
    assert flat == {
        "segm/AP": 0.5,
        "segm/AP50": 0.8,
        "segm/AP-skull": 0.7,
        "pixel/skeleton/precision": 0.9,
        "pixel/skeleton/sensitivity": 0.8,
        "pixel/skeleton/f1": 0.85,
        "pixel/lesion/precision": 0.5,
        "pixel/lesion/sensitivity": 0.25,
        "pixel/lesion/f1": 1 / 3,
        "lesion/dice_pooled": 0.4,
        "scan/sensitivity": 1.0,
        "scan/specificity": 0.5,
        "burden/group_kappa": 0.3,
    }
    # detectron2's EvalHook flattens {task: {metric}} back with "/": the same keys
    regrouped = {f"{t}/{m}": v for t, d in group_by_task(flat).items() for m, v in d.items()}
    assert regrouped == flat
    assert set(flatten_evaluations({"a": EVALUATION, "b": EVALUATION})) == {
        f"{n}/{k}" for n in "ab" for k in flat
    }


DETECTION = {
    "n_scans": 4,
    "n_lesions": 8,
    "matching_rule": "hit: mask IoU >= 0.1 or centroid inside",
    "froc": [
        {"threshold": 0.9, "sensitivity": 0.25, "fp_per_scan": 0.0},
        {"threshold": 0.5, "sensitivity": 0.5, "fp_per_scan": 1.0},
    ],
    "sensitivity_at_fp": {"0.25": 0.25, "0.5": 0.25, "1": 0.5, "2": 0.5, "4": 0.5},
    "froc_score": 0.4,
    "operating_thresh": 0.5,
    "sensitivity": 0.5,
    "precision": 0.5,
    "fp_per_scan": 1.0,
    "count_mean_absolute_error": 0.5,
    "count_mean_error": None,
    "n_predicted": 8,
}


def test_lesion_detection_is_typed_and_flattened_and_optional():
    typed = EvaluationResult.from_dict({**EVALUATION, "lesion_detection": DETECTION})
    detection = typed.lesion_detection
    assert (detection.n_lesions, detection.froc_score, detection.n_predicted) == (8, 0.4, 8)
    assert detection.froc[1].fp_per_scan == 1.0 and detection.sensitivity_at_fp["1"] == 0.5
    flat = typed.flatten()
    added = {
        k: v for k, v in flat.items() if k not in EvaluationResult.from_dict(EVALUATION).flatten()
    }
    assert added == {
        "lesion/sensitivity_at_0.25fp": 0.25,
        "lesion/sensitivity_at_0.5fp": 0.25,
        "lesion/sensitivity_at_1fp": 0.5,
        "lesion/sensitivity_at_2fp": 0.5,
        "lesion/sensitivity_at_4fp": 0.5,
        "lesion/froc_score": 0.4,
        "lesion/detection_sensitivity": 0.5,
        "lesion/detection_precision": 0.5,
        "lesion/fp_per_scan": 1.0,
        "lesion/count_mean_absolute_error": 0.5,
    }
    # an evaluation.json from before lesion detection still loads, with nothing to report
    old = EvaluationResult.from_dict(EVALUATION).lesion_detection
    assert old.froc == () and old.froc_score is None and old.sensitivity_at_fp == {}
    regrouped = {f"{t}/{m}": v for t, d in group_by_task(flat).items() for m, v in d.items()}
    assert regrouped == flat
