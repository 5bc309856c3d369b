"""The detectron2 engine's training: a DefaultTrainer fed by bsi_d2's mapper and scored by
bsi_d2's evaluator.

``train(cfg, resume) -> dict`` and ``evaluate(cfg, weights) -> dict`` as
:class:`bsi_d2.engine.base.Engine` describes them; ``cfg`` comes from
:func:`bsi_d2.config.setup_cfg`. Checkpoints carry ``"engine": {"name": "detectron2"}``.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BitMasks, Boxes
from detectron2.structures import Instances as D2Instances

from bsi_d2.config import ConfigValueError
from bsi_d2.data.mapper import BsiDatasetMapper
from bsi_d2.engine.base import prepare_training
from bsi_d2.engine.checkpoint import CheckpointError, other_engine_message, peek_engine, unwrap
from bsi_d2.engine.lesion_head import dense_lesions, lr_factor_func
from bsi_d2.evaluation.results import EvaluationResult, group_by_task
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import Taxonomy, load_taxonomy

logger = logging.getLogger(__name__)


class Detectron2Sample:
    """Wraps a :class:`BsiDatasetMapper`: its neutral sample -> detectron2's model input."""

    def __init__(self, mapper: BsiDatasetMapper) -> None:
        self.mapper = mapper

    def __call__(self, dataset_dict: dict[str, Any]) -> dict[str, Any]:
        return to_detectron2_sample(self.mapper(dataset_dict), keep_instances=self.mapper.is_train)


def to_detectron2_sample(sample: dict[str, Any], keep_instances: bool = True) -> dict[str, Any]:
    """Replace the neutral ``instances`` dict with detectron2 ``Instances`` (gt_boxes,
    gt_classes, gt_masks as BitMasks); inference samples drop them."""
    neutral = sample.pop("instances", None)
    if neutral is not None and keep_instances:
        height, width = sample["image"].shape[-2:]
        gt = D2Instances((int(height), int(width)))
        gt.gt_boxes = Boxes(neutral["boxes"])
        gt.gt_classes = neutral["classes"]
        gt.gt_masks = BitMasks(neutral["masks"].bool())
        sample["instances"] = gt
    return sample


def to_neutral_instances(pred: D2Instances, contiguous_to_id: Mapping[int, int]) -> Instances:
    """detectron2 predictions (contiguous classes) -> bsi_d2 Instances (taxonomy ids)."""
    pred = pred.to("cpu")
    height, width = pred.image_size
    n = len(pred)
    masks = (
        pred.pred_masks.numpy().astype(bool)
        if pred.has("pred_masks")
        else np.zeros((n, height, width), bool)
    )
    classes = pred.pred_classes.numpy()
    return Instances(
        int(height),
        int(width),
        pred.pred_boxes.tensor.numpy().astype(np.float32),
        pred.scores.numpy().astype(np.float32),
        np.array([contiguous_to_id[int(c)] for c in classes], dtype=np.int64),
        masks,
    )


ENGINE = "detectron2"


class EngineTag:
    """A checkpointable that stores ``{"name": "detectron2"}`` in every checkpoint, so the
    torchvision engine (and this one) can tell whose checkpoint a file is."""

    def state_dict(self) -> dict[str, str]:
        return {"name": ENGINE}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        name = state.get("name") if isinstance(state, Mapping) else None
        if name not in (None, ENGINE):
            raise CheckpointError(other_engine_message("checkpoint", str(name), ENGINE))


def check_weights(weights: str) -> None:
    """CheckpointError where ``weights`` is a local checkpoint of another engine."""
    written_by = peek_engine(weights)
    if written_by is not None and written_by != ENGINE:
        raise CheckpointError(other_engine_message(weights, written_by, ENGINE))


class BsiEvaluator(DatasetEvaluator):
    """Collects predictions and scores them with :func:`bsi_d2.evaluation.evaluate_dataset`
    against the split's COCO file, so both engines report the same numbers."""

    def __init__(
        self,
        dataset_name: str,
        taxonomy: Taxonomy,
        output_dir: str | os.PathLike | None = None,
        score_thresh: float = 0.5,
    ) -> None:
        self.dataset_name = dataset_name
        self.json_file = MetadataCatalog.get(dataset_name).json_file
        self.taxonomy = taxonomy
        self.output_dir = output_dir
        self.score_thresh = float(score_thresh)
        self._predictions: list[tuple[int, Instances]] = []

    def reset(self) -> None:
        self._predictions = []

    def process(self, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
        for inp, out in zip(inputs, outputs, strict=True):
            if "instances" in out:
                instances = to_neutral_instances(out["instances"], self.taxonomy.contiguous_to_id)
                instances = dense_lesions(
                    out.get("lesion_settings"), instances, out.get("lesion_prob"), self.taxonomy
                )
                self._predictions.append((inp["image_id"], instances))

    def evaluate(self) -> OrderedDict:
        from detectron2.utils import comm

        from bsi_d2.evaluation import evaluate_dataset

        gathered = comm.gather(self._predictions, dst=0)
        if not comm.is_main_process():
            return OrderedDict()
        predictions = [p for part in gathered for p in part]
        result = evaluate_dataset(
            self.json_file, predictions, self.taxonomy, self.output_dir, self.score_thresh
        )
        # the keys and units every engine logs (bsi_d2.evaluation.results)
        return OrderedDict(group_by_task(EvaluationResult.from_dict(result).flatten()))


class BsiTrainer(DefaultTrainer):
    """detectron2's DefaultTrainer with bsi_d2's data path and evaluation; its checkpoints
    carry the engine's name."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.checkpointer.add_checkpointable("engine", EngineTag())

    def resume_or_load(self, resume: bool = True) -> None:
        if cfg_weights := str(self.cfg.MODEL.WEIGHTS):
            check_weights(cfg_weights)
        super().resume_or_load(resume=resume)

    @classmethod
    def build_optimizer(cls, cfg: Any, model: torch.nn.Module) -> torch.optim.Optimizer:
        """detectron2's SGD, with the dense lesion head's rate times MODEL.LESION_HEAD.LR_FACTOR."""
        from detectron2.solver.build import (
            get_default_optimizer_params,
            maybe_add_gradient_clipping,
        )

        params = get_default_optimizer_params(
            model,
            base_lr=cfg.SOLVER.BASE_LR,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
            bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
            weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
            lr_factor_func=lr_factor_func(cfg),
        )
        optimizer = torch.optim.SGD(
            params,
            lr=cfg.SOLVER.BASE_LR,
            momentum=cfg.SOLVER.MOMENTUM,
            nesterov=cfg.SOLVER.NESTEROV,
            weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        )
        return maybe_add_gradient_clipping(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg: Any) -> Any:
        mapper = Detectron2Sample(BsiDatasetMapper.from_config(cfg, is_train=True))
        if not cfg.DATASETS.PSEUDO:
            return build_detection_train_loader(cfg, mapper=mapper)
        from bsi_d2.data.datasets import training_dataset_dicts

        # the labelled + pseudo-labelled mix both engines train on (DATASETS.PSEUDO_RATIO)
        dicts = training_dataset_dicts(cfg)
        return build_detection_train_loader(cfg, mapper=mapper, dataset=dicts)

    @classmethod
    def build_test_loader(cls, cfg: Any, dataset_name: str) -> Any:
        mapper = Detectron2Sample(BsiDatasetMapper.from_config(cfg, is_train=False))
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)

    @classmethod
    def build_evaluator(
        cls, cfg: Any, dataset_name: str, output_folder: str | None = None
    ) -> DatasetEvaluator:
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return BsiEvaluator(
            dataset_name, load_taxonomy(cfg.BSI.TAXONOMY), output_folder, cfg.BSI.SCORE_THRESH
        )


def _read_evaluations(cfg: Any) -> dict[str, Any]:
    """{dataset name: evaluation} as BsiEvaluator wrote them, the torchvision engine's shape."""
    found = {}
    for name in cfg.DATASETS.TEST:
        path = Path(cfg.OUTPUT_DIR) / "inference" / name / "evaluation.json"
        if path.is_file():
            found[name] = json.loads(path.read_text(encoding="utf-8"))
    return found


def train(cfg: Any, resume: bool = False) -> dict[str, Any]:
    """Train with detectron2; evaluates DATASETS.TEST at the end (and every TEST.EVAL_PERIOD)."""
    from detectron2.utils import comm
    from detectron2.utils.env import seed_all_rng

    cfg = prepare_training(cfg)
    # SEED as default_setup applies it (the demo and k-fold do not call default_setup): without
    # it the sampler and augmentation draw a fresh seed each run
    seed_all_rng(None if int(cfg.SEED) < 0 else int(cfg.SEED) + comm.get_rank())
    Path(cfg.OUTPUT_DIR).mkdir(parents=True, exist_ok=True)
    trainer = BsiTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    trained = trainer.start_iter < trainer.max_iter
    trainer.train()
    if trained and hasattr(trainer.model, "lesion_head") and cfg.DATASETS.TEST:
        _calibrate_lesion_head(cfg, trainer)
    storage = trainer.storage
    losses = [float(v) for v, _ in storage.history("total_loss").values()] if storage else []
    timing = storage.history("time") if storage and "time" in storage.histories() else None
    final = Path(cfg.OUTPUT_DIR) / "model_final.pth"
    return {
        "engine": "detectron2",
        "output_dir": str(cfg.OUTPUT_DIR),
        "weights": str(final) if final.is_file() else None,
        "final_checkpoint": str(final),
        "start_iter": int(trainer.start_iter),
        "iterations": int(trainer.iter),  # max_iter after a finished run
        "losses": losses,
        "seconds_per_iter": float(timing.global_avg()) if timing else None,
        "evaluation": _read_evaluations(cfg),
    }


def _calibrate_lesion_head(cfg: Any, trainer: BsiTrainer) -> None:
    """The dense lesion head's threshold chosen on the first of DATASETS.TEST, saved into
    model_final.pth, and DATASETS.TEST evaluated again with it."""
    from detectron2.utils import comm

    from bsi_d2.engine.base import get_engine
    from bsi_d2.engine.lesion_head import CALIBRATION_FILE, calibrate_threshold
    from bsi_d2.engine.predictor import Predictor

    if not comm.is_main_process():
        return
    model = unwrap(trainer.model)
    predictor = Predictor(cfg, model=model, engine=get_engine(ENGINE))
    sweep = calibrate_threshold(predictor, cfg.DATASETS.TEST[0])
    (Path(cfg.OUTPUT_DIR) / CALIBRATION_FILE).write_text(json.dumps(sweep, indent=1), "utf-8")
    trainer.checkpointer.save("model_final")
    with torch.no_grad():
        BsiTrainer.test(cfg, model)
    model.train()


def evaluate(cfg: Any, weights: str | None = None) -> dict[str, Any]:
    """Evaluate ``weights`` (default MODEL.WEIGHTS, else OUTPUT_DIR's last checkpoint) on every
    DATASETS.TEST split; writes OUTPUT_DIR/inference/<name>/ like the torchvision engine."""
    if not cfg.DATASETS.TEST:
        raise ConfigValueError("DATASETS.TEST is empty: nothing to evaluate on")
    cfg = prepare_training(cfg)
    model = BsiTrainer.build_model(cfg)
    checkpointer = DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
    weights = weights or cfg.MODEL.WEIGHTS or None
    if not weights:
        if not checkpointer.has_checkpoint():
            raise FileNotFoundError(
                f"{cfg.OUTPUT_DIR}: no checkpoint to evaluate (set MODEL.WEIGHTS or train first)"
            )
        weights = checkpointer.get_checkpoint_file()
    check_weights(weights)
    checkpointer.load(weights)
    with torch.no_grad():
        BsiTrainer.test(cfg, model)
    return {"engine": "detectron2", "weights": str(weights), "evaluation": _read_evaluations(cfg)}
