"""Training and evaluation with torchvision's Mask R-CNN, behind detectron2's config keys.

Same data pipeline as the detectron2 engine (our dataset catalog + ``BsiDatasetMapper``), same
solver (SGD, linear warm-up, multi-step or cosine decay), same outputs: ``model_{iter:07d}.pth``,
``model_final.pth``, ``last_checkpoint`` and ``metrics.json`` (one JSON line per logged iteration
with detectron2's loss names), so tools that read detectron2 runs read these too.
Multi-GPU: run under ``torchrun`` (WORLD_SIZE > 1) or ``bsi-d2 train --num-gpus N``.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import os
import random
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bsi_d2.config import ConfigValueError, cfg_get
from bsi_d2.data.datasets import DatasetError
from bsi_d2.engine.checkpoint import (
    checkpoint_name,
    last_checkpoint,
    load_checkpoint,
    load_model_weights,
    unwrap,
)
from bsi_d2.engine.lesion_head import lr_factor_func
from bsi_d2.engine.predictor import build_mapper
from bsi_d2.engine.torchvision.model import LABEL_OFFSET, build_tv_model
from bsi_d2.evaluation.results import flatten_evaluations

logger = logging.getLogger(__name__)

LOG_PERIOD = 20
# torchvision's loss names -> detectron2's, so metrics.json reads the same for both engines
LOSS_NAMES = {
    "loss_classifier": "loss_cls",
    "loss_box_reg": "loss_box_reg",
    "loss_mask": "loss_mask",
    "loss_objectness": "loss_rpn_cls",
    "loss_rpn_box_reg": "loss_rpn_loc",
}


# -- distributed ------------------------------------------------------------------------------
def _world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) alone."""
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def _init_distributed(device: str) -> tuple[int, int, str]:
    rank, world, local_rank = _world()
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        if device.startswith("cuda"):
            torch.cuda.set_device(local_rank)
            device = f"cuda:{local_rank}"
    return rank, world, device


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


# -- seeding ------------------------------------------------------------------------------------
def seed_everything(seed: int) -> int:
    """Seed Python, NumPy and torch; a negative seed draws one (logged, so a run can be redone)."""
    if seed < 0:
        seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
        logger.info("SEED < 0: using random seed %d", seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the mapper draws augmentation from np.random
    torch.manual_seed(seed)
    return seed


def _shared_seed(seed: int, world: int) -> int:
    """SEED, or one drawn on rank 0 and sent to every rank when SEED < 0."""
    if seed >= 0:
        return seed
    drawn = [int.from_bytes(os.urandom(4), "little") & 0x3FFFFFFF]
    if world > 1:
        import torch.distributed as dist

        dist.broadcast_object_list(drawn, src=0)
    logger.info("SEED < 0: using random seed %d", drawn[0])
    return drawn[0]


# -- solver -------------------------------------------------------------------------------------
# detectron2's norm_module_types (solver/build.py get_default_optimizer_params)
NORM_TYPES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def build_optimizer(cfg: Any, model: nn.Module) -> torch.optim.Optimizer:
    """SGD over trainable parameters grouped like detectron2's get_default_optimizer_params:
    norm layers get SOLVER.WEIGHT_DECAY_NORM, biases SOLVER.BIAS_LR_FACTOR and
    SOLVER.WEIGHT_DECAY_BIAS (None: as other weights); the dense lesion head's rate is
    multiplied by MODEL.LESION_HEAD.LR_FACTOR, as detectron2's ``lr_factor_func`` does."""
    base_lr = float(cfg_get(cfg, "SOLVER.BASE_LR"))
    weight_decay = float(cfg_get(cfg, "SOLVER.WEIGHT_DECAY"))
    wd_norm = float(cfg_get(cfg, "SOLVER.WEIGHT_DECAY_NORM"))
    bias_lr = base_lr * float(cfg_get(cfg, "SOLVER.BIAS_LR_FACTOR"))
    wd_bias = cfg_get(cfg, "SOLVER.WEIGHT_DECAY_BIAS")
    factor = lr_factor_func(cfg)  # MODEL.LESION_HEAD.LR_FACTOR for the dense head
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module_name, module in unwrap(model).named_modules():
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            lr, decay = base_lr, (wd_norm if isinstance(module, NORM_TYPES) else weight_decay)
            if name == "bias":
                lr = bias_lr
                decay = decay if wd_bias is None else float(wd_bias)
            lr *= factor(f"{module_name}.{name}" if module_name else name)
            groups.setdefault((lr, decay), []).append(parameter)
    return torch.optim.SGD(
        [{"params": p, "lr": lr, "weight_decay": wd} for (lr, wd), p in groups.items()],
        lr=base_lr,
        momentum=float(cfg_get(cfg, "SOLVER.MOMENTUM")),
        nesterov=bool(cfg_get(cfg, "SOLVER.NESTEROV")),
    )


def _decay(cfg: Any, iteration: int) -> float:
    """The schedule without warm-up: multi-step, or cosine from 1 to BASE_LR_END / BASE_LR."""
    max_iter = int(cfg_get(cfg, "SOLVER.MAX_ITER"))
    if cfg_get(cfg, "SOLVER.LR_SCHEDULER_NAME") == "WarmupCosineLR":
        end = float(cfg_get(cfg, "SOLVER.BASE_LR_END")) / float(cfg_get(cfg, "SOLVER.BASE_LR"))
        return end + 0.5 * (1.0 - end) * (1.0 + math.cos(math.pi * iteration / max(1, max_iter)))
    steps = sorted(int(s) for s in cfg_get(cfg, "SOLVER.STEPS"))
    return float(cfg_get(cfg, "SOLVER.GAMMA")) ** bisect.bisect_right(steps, iteration)


def lr_factor(cfg: Any, iteration: int) -> float:
    """Multiplier of BASE_LR at ``iteration``, detectron2's WarmupParamScheduler: during
    warm-up a line from WARMUP_FACTOR x schedule(0) to schedule(WARMUP_ITERS) (or the constant
    WARMUP_FACTOR x schedule(0)), then the multi-step or cosine schedule."""
    warmup_iters = min(
        int(cfg_get(cfg, "SOLVER.WARMUP_ITERS")), int(cfg_get(cfg, "SOLVER.MAX_ITER"))
    )
    if iteration >= warmup_iters:
        return _decay(cfg, iteration)
    start = float(cfg_get(cfg, "SOLVER.WARMUP_FACTOR")) * _decay(cfg, 0)
    if cfg_get(cfg, "SOLVER.WARMUP_METHOD") == "constant":
        return start
    alpha = iteration / warmup_iters
    return start + (_decay(cfg, warmup_iters) - start) * alpha


def build_lr_scheduler(cfg: Any, optimizer: torch.optim.Optimizer):
    """A LambdaLR stepped once per iteration; its state is plain numbers (weights_only-safe)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(cfg, it))


def _clip_gradients(cfg: Any, model: nn.Module) -> None:
    """detectron2's per-parameter clipping (solver/build.py): each parameter's gradient is
    clipped on its own, by value or by its own norm, not by the norm of all of them."""
    if not bool(cfg_get(cfg, "SOLVER.CLIP_GRADIENTS.ENABLED")):
        return
    value = float(cfg_get(cfg, "SOLVER.CLIP_GRADIENTS.CLIP_VALUE"))
    by_norm = cfg_get(cfg, "SOLVER.CLIP_GRADIENTS.CLIP_TYPE") == "norm"
    norm_type = float(cfg_get(cfg, "SOLVER.CLIP_GRADIENTS.NORM_TYPE"))
    for parameter in model.parameters():
        if parameter.grad is None:
            continue
        if by_norm:
            torch.nn.utils.clip_grad_norm_(parameter, value, norm_type)
        else:
            torch.nn.utils.clip_grad_value_(parameter, value)


# -- data -------------------------------------------------------------------------------------
class InfiniteMappedDicts(torch.utils.data.IterableDataset):
    """Endless shuffled passes over dataset dicts, mapped; each rank and worker takes its share.

    Every rank draws the same permutation from ``seed`` (detectron2's TrainingSampler does the
    same), so the ranks' shards never overlap within a pass.
    """

    def __init__(
        self, dicts: list[dict], mapper: Callable[[dict], dict], seed: int, rank: int, world: int
    ) -> None:
        self.dicts, self.mapper, self.seed, self.rank, self.world = dicts, mapper, seed, rank, world

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        generator = torch.Generator().manual_seed(self.seed)
        while True:
            order = torch.randperm(len(self.dicts), generator=generator).tolist()
            for index in order[self.rank :: self.world][worker::workers]:
                yield self.mapper(self.dicts[index])


def build_train_loader(cfg: Any, seed: int, rank: int = 0, world: int = 1) -> Iterator[list[dict]]:
    """Batches (lists of mapped dicts) of IMS_PER_BATCH / world images, forever."""
    total = int(cfg_get(cfg, "SOLVER.IMS_PER_BATCH"))
    if total % world:
        raise ConfigValueError(
            f"SOLVER.IMS_PER_BATCH={total} must be divisible by {world} processes"
        )
    from bsi_d2.data.datasets import training_dataset_dicts

    dicts = training_dataset_dicts(cfg, seed)  # DATASETS.TRAIN, plus DATASETS.PSEUDO mixed in
    if not dicts:
        raise DatasetError(f"training data sets {tuple(cfg_get(cfg, 'DATASETS.TRAIN'))} are empty")
    dataset = InfiniteMappedDicts(dicts, build_mapper(cfg, True), seed, rank, world)
    workers = int(cfg_get(cfg, "DATALOADER.NUM_WORKERS"))
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=total // world,
        num_workers=workers,
        collate_fn=list,
        persistent_workers=workers > 0,
    )
    return iter(loader)


def to_targets(
    batch: list[dict], device: str
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Mapped dicts -> torchvision's (images, targets); contiguous class k becomes label k + 1."""
    images, targets = [], []
    for item in batch:
        image = item["image"].to(device, non_blocking=True).float()
        h, w = image.shape[-2:]
        inst = item.get("instances") or {}
        boxes = torch.as_tensor(inst.get("boxes", torch.zeros((0, 4))), dtype=torch.float32)
        classes = torch.as_tensor(inst.get("classes", torch.zeros((0,))), dtype=torch.int64)
        masks = torch.as_tensor(inst.get("masks", torch.zeros((0, h, w))), dtype=torch.uint8)
        # torchvision refuses zero-area boxes; detectron2's mapper drops them the same way
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        images.append(image)
        target = {
            "boxes": boxes[keep].reshape(-1, 4).to(device),
            "labels": (classes[keep] + LABEL_OFFSET).to(device),
            "masks": masks[keep].reshape(-1, h, w).to(device),
        }
        for key in ("image_native", "lesion_target"):  # the dense lesion head's inputs
            if key in item:
                target[key] = item[key].to(device, non_blocking=True)
        targets.append(target)
    return images, targets


# -- metrics ------------------------------------------------------------------------------------
class MetricsWriter:
    """Appends detectron2-style JSON lines to OUTPUT_DIR/metrics.json (rank 0 only)."""

    def __init__(self, output_dir: str | Path, enabled: bool = True) -> None:
        self.path = Path(output_dir) / "metrics.json"
        self.enabled = enabled

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(record, sort_keys=True) + "\n")


def read_metrics(output_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(output_dir) / "metrics.json"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


# -- train / evaluate -------------------------------------------------------------------------
def restore(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> int:
    """Load model, optimizer and scheduler state from a checkpoint; the iteration to start at."""
    state = load_checkpoint(path)
    unwrap(model).load_state_dict(state["model"])
    if "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    if "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    return int(state["iteration"]) + 1


class HookBase:
    """Called around the training loop, detectron2's hook shape: ``before_train``,
    ``after_step`` (``self.trainer.iter`` is the step just run), ``after_train``."""

    trainer: TorchvisionTrainer

    def before_train(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def after_train(self) -> None:
        pass


class MetricsHook(HookBase):
    """Every ``period`` steps (and the last): the median of the window to metrics.json and
    the log, with the learning rate and the ETA."""

    def __init__(self, period: int) -> None:
        self.period = max(1, int(period))

    def after_step(self) -> None:
        t = self.trainer
        if (t.iter + 1) % self.period and not t.is_last:
            return
        window = {k: statistics.median(v[-self.period :]) for k, v in t.history.items()}
        eta = statistics.mean(t.iter_times[-self.period :]) * (t.max_iter - t.iter - 1)
        t.writer.write({"iteration": t.iter, "lr": t.lr, "eta_seconds": eta, **window})
        if t.is_main:
            done = (t.iter + 1) / max(t.max_iter, 1)
            logger.info(
                "iter %d/%d [%-20s] %3.0f%%  total_loss %.4f  %s  lr %.3g  %.3fs/it  eta %s",
                t.iter + 1,
                t.max_iter,
                "#" * int(20 * done),
                100 * done,
                window["total_loss"],
                " ".join(f"{k} {v:.3f}" for k, v in window.items() if k.startswith("loss")),
                t.lr,
                window["time"],
                _hms(eta),
            )


class LesionThresholdHook(HookBase):
    """After the last step, before the final checkpoint: the dense lesion head's threshold
    chosen on the first of DATASETS.TEST (:func:`~bsi_d2.engine.lesion_head.
    calibrate_threshold`), written to OUTPUT_DIR/lesion_threshold.json."""

    def after_train(self) -> None:
        t = self.trainer
        names = cfg_get(t.cfg, "DATASETS.TEST")
        if not (t.is_main and names and t.start_iter < t.max_iter):
            return
        from bsi_d2.engine.base import get_engine
        from bsi_d2.engine.lesion_head import CALIBRATION_FILE, calibrate_threshold
        from bsi_d2.engine.predictor import Predictor

        engine = get_engine("torchvision")
        predictor = Predictor(t.cfg, device=t.device, model=unwrap(t.model), engine=engine)
        sweep = calibrate_threshold(predictor, names[0])
        (t.output_dir / CALIBRATION_FILE).write_text(json.dumps(sweep, indent=1), "utf-8")
        logger.info("lesion head threshold %.2f (chosen on %s)", sweep["threshold"], names[0])
        t.model.train()


class CheckpointHook(HookBase):
    """``model_{iter:07d}.pth`` every SOLVER.CHECKPOINT_PERIOD steps, ``model_final.pth`` at
    the end, through :class:`~bsi_d2.engine.checkpoint.TorchvisionCheckpointer` (atomic)."""

    def __init__(self, period: int) -> None:
        self.period = int(period)

    def after_step(self) -> None:
        t = self.trainer
        if t.is_main and not t.is_last and self.period > 0 and (t.iter + 1) % self.period == 0:
            t.checkpointer.save(checkpoint_name(t.iter).removesuffix(".pth"), iteration=t.iter)

    def after_train(self) -> None:
        t = self.trainer
        if t.is_main and t.start_iter < t.max_iter:
            t.checkpointer.save("model_final", iteration=t.max_iter - 1)
        _barrier(t.world)


class EvalHook(HookBase):
    """DATASETS.TEST evaluated every TEST.EVAL_PERIOD steps and after the last, written to
    metrics.json with the keys every engine logs."""

    def __init__(self, period: int) -> None:
        self.period = int(period)

    def after_step(self) -> None:
        t = self.trainer
        if self.period > 0 and not t.is_last and (t.iter + 1) % self.period == 0:
            t.evaluation = _periodic_evaluation(
                t.cfg, t.model, t.device, t.writer, t.iter, t.is_main
            )
            t.model.train()
            _barrier(t.world)

    def after_train(self) -> None:
        t = self.trainer
        if cfg_get(t.cfg, "DATASETS.TEST"):
            t.evaluation = _periodic_evaluation(
                t.cfg, t.model, t.device, t.writer, t.max_iter - 1, t.is_main
            )


class TorchvisionTrainer:
    """Mask R-CNN training as detectron2's SimpleTrainer runs it: :meth:`run_step` does one
    iteration (data, forward, loss, backward, step), hooks do everything else."""

    def __init__(self, cfg: Any, resume: bool = False, log_period: int = LOG_PERIOD) -> None:
        from bsi_d2.engine.base import prepare_training
        from bsi_d2.engine.checkpoint import TorchvisionCheckpointer

        cfg = prepare_training(cfg)
        self.cfg = cfg
        self.rank, self.world, self.device = _init_distributed(str(cfg_get(cfg, "MODEL.DEVICE")))
        seed = _shared_seed(int(cfg_get(cfg, "SEED")), self.world)
        # augmentation differs per rank; the sampler's permutation (``seed``) is shared
        seed_everything(seed + self.rank)
        self.output_dir = Path(str(cfg_get(cfg, "OUTPUT_DIR")))
        self.is_main = self.rank == 0
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "config.yaml").write_text(cfg.dump(), encoding="utf-8")

        model = build_tv_model(cfg).to(self.device)
        self.optimizer = build_optimizer(cfg, model)
        self.scheduler = build_lr_scheduler(cfg, self.optimizer)
        self.checkpointer = TorchvisionCheckpointer(
            model,
            self.output_dir,
            cfg=cfg,
            save_to_disk=self.is_main,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
        )
        self.start_iter = 0
        previous = last_checkpoint(self.output_dir) if resume else None
        if previous is not None:
            self.start_iter = restore(previous, model, self.optimizer, self.scheduler)
            logger.info("resuming from %s at iteration %d", previous, self.start_iter)
        elif str(cfg_get(cfg, "MODEL.WEIGHTS")):
            load_model_weights(model, str(cfg_get(cfg, "MODEL.WEIGHTS")))
            logger.info("initialised model weights from %s", cfg_get(cfg, "MODEL.WEIGHTS"))
        if self.world > 1:
            index = torch.device(self.device).index if self.device.startswith("cuda") else None
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[index] if index is not None else None
            )
        self.model = model

        self.max_iter = int(cfg_get(cfg, "SOLVER.MAX_ITER"))
        self.use_amp = bool(cfg_get(cfg, "SOLVER.AMP.ENABLED")) and self.device.startswith("cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.writer = MetricsWriter(self.output_dir, enabled=self.is_main)
        self.history: dict[str, list[float]] = {}
        self.iter_times: list[float] = []
        self.evaluation: dict[str, Any] = {}
        self.iter = self.start_iter
        self.lr = 0.0
        self.loader = (
            build_train_loader(cfg, seed, self.rank, self.world)
            if self.start_iter < self.max_iter
            else None
        )
        self.hooks: list[HookBase] = []
        hooks: list[HookBase] = [MetricsHook(log_period)]
        if hasattr(unwrap(model), "lesion_head"):
            hooks.append(LesionThresholdHook())  # before the final checkpoint, which keeps it
        hooks += [
            CheckpointHook(int(cfg_get(cfg, "SOLVER.CHECKPOINT_PERIOD"))),
            EvalHook(int(cfg_get(cfg, "TEST.EVAL_PERIOD"))),
        ]
        self.register_hooks(hooks)

    def register_hooks(self, hooks: list[HookBase]) -> None:
        for hook in hooks:
            hook.trainer = self
            self.hooks.append(hook)

    @property
    def is_last(self) -> bool:
        return self.iter == self.max_iter - 1

    def run_step(self) -> None:
        """One iteration: a batch, the losses, a solver step; timings and losses recorded."""
        data_start = time.perf_counter()
        images, targets = to_targets(next(self.loader), self.device)
        data_time = time.perf_counter() - data_start

        step_start = time.perf_counter()
        with torch.autocast("cuda", enabled=self.use_amp):
            loss_dict = self.model(images, targets)
        losses = sum(loss_dict.values())
        if not torch.isfinite(losses):
            raise FloatingPointError(
                f"loss became {losses.item()} at iteration {self.iter}: "
                + ", ".join(f"{k}={v.item():.4g}" for k, v in loss_dict.items())
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses).backward()
        self.scaler.unscale_(self.optimizer)
        _clip_gradients(self.cfg, self.model)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        step_time = time.perf_counter() - step_start
        self.iter_times.append(step_time + data_time)

        values = {LOSS_NAMES.get(k, k): float(v.detach()) for k, v in loss_dict.items()}
        values["total_loss"] = float(losses.detach())
        # "time" is the whole iteration, data included, as detectron2's IterationTimer has it
        values["time"], values["data_time"] = step_time + data_time, data_time
        for key, value in values.items():
            self.history.setdefault(key, []).append(value)

    def train(self) -> dict[str, Any]:
        """Run iterations start_iter..MAX_ITER-1 with the hooks; the engine's train result."""
        for hook in self.hooks:
            hook.before_train()
        self.model.train()
        logger.info(
            "training iterations %d..%d on %s", self.start_iter, self.max_iter - 1, self.device
        )
        for iteration in range(self.start_iter, self.max_iter):
            self.iter = iteration
            self.run_step()
            for hook in self.hooks:
                hook.after_step()
        for hook in self.hooks:
            hook.after_train()
        final = self.output_dir / "model_final.pth"
        return {
            "engine": "torchvision",
            "output_dir": str(self.output_dir),
            "weights": str(final) if final.is_file() else None,
            "final_checkpoint": str(final),
            "start_iter": self.start_iter,
            "iterations": self.max_iter,
            "losses": self.history.get("total_loss", []),
            "seconds_per_iter": statistics.mean(self.iter_times) if self.iter_times else None,
            "evaluation": self.evaluation,
        }


def train(cfg: Any, resume: bool = False, *, log_period: int = LOG_PERIOD) -> dict[str, Any]:
    """Train Mask R-CNN for SOLVER.MAX_ITER iterations; returns the last evaluation and paths.

    ``resume``: continue from OUTPUT_DIR's last checkpoint (model, optimizer, scheduler,
    iteration). Otherwise MODEL.WEIGHTS, if set, initialises the model weights only.
    """
    return TorchvisionTrainer(cfg, resume=resume, log_period=log_period).train()


def _periodic_evaluation(
    cfg: Any, model: nn.Module, device: str, writer: MetricsWriter, iteration: int, is_main: bool
) -> dict[str, Any]:
    if not is_main:
        return {}
    from bsi_d2.engine.base import get_engine
    from bsi_d2.engine.predictor import Predictor, evaluate_on_datasets

    engine = get_engine("torchvision")  # this engine, whatever MODEL.ENGINE says
    predictor = Predictor(cfg, device=device, model=unwrap(model), engine=engine)
    results = evaluate_on_datasets(
        predictor,
        cfg_get(cfg, "DATASETS.TEST"),
        Path(str(cfg_get(cfg, "OUTPUT_DIR"))) / "inference",
    )
    writer.write({"iteration": iteration, **flatten_evaluations(results)})
    return results


def evaluate(cfg: Any, weights: str | None = None) -> dict[str, Any]:
    """Evaluate ``weights`` (default MODEL.WEIGHTS, else OUTPUT_DIR's last checkpoint) on
    DATASETS.TEST; returns {"engine", "weights", "evaluation": {dataset name: evaluation}} and
    writes OUTPUT_DIR/inference/<name>/."""
    from bsi_d2.engine.base import get_engine, prepare_training
    from bsi_d2.engine.predictor import Predictor, evaluate_on_datasets

    cfg = prepare_training(cfg)
    output_dir = Path(str(cfg_get(cfg, "OUTPUT_DIR")))
    if not weights:
        weights = str(cfg_get(cfg, "MODEL.WEIGHTS")) or None
    if not weights:
        found = last_checkpoint(output_dir)
        if found is None:
            raise FileNotFoundError(
                f"{output_dir}: no checkpoint to evaluate (set MODEL.WEIGHTS or train first)"
            )
        weights = str(found)
    names = cfg_get(cfg, "DATASETS.TEST")
    if not names:
        raise ConfigValueError("DATASETS.TEST is empty: nothing to evaluate on")
    engine = get_engine("torchvision")
    predictor = Predictor(
        cfg, weights=weights, device=str(cfg_get(cfg, "MODEL.DEVICE")), engine=engine
    )
    results = evaluate_on_datasets(predictor, names, output_dir / "inference")
    return {"engine": "torchvision", "weights": weights, "evaluation": results}


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
