"""The engine interface: what a model framework must provide, and the registry that finds it.

An engine builds the Mask R-CNN a config describes, loads weights into it (checking that they
were trained by this engine), trains, evaluates, and runs a batch of mapped images to
framework-neutral :class:`~bsi_d2.structures.instances.Instances`. Everything above
(:class:`~bsi_d2.engine.predictor.Predictor`, k-fold, the demo, the commands) talks to an
:class:`Engine` only, so changing or adding an engine touches its own folder
(``bsi_d2/engine/detectron2/``, ``bsi_d2/engine/torchvision/``) and nothing else::

    @register_engine
    class MyEngine(Engine):
        name = "mine"
        ...

    bsi-d2 train --config-file C MODEL.ENGINE mine

Built-in engines are imported when first asked for, so ``import bsi_d2`` never imports
detectron2.
"""

from __future__ import annotations

import importlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from bsi_d2.config import ConfigValueError, cfg_get, resolve_engine_name, resolve_epochs

logger = logging.getLogger(__name__)

# name -> module that registers it on import
BUILTIN_ENGINES = {
    "detectron2": "bsi_d2.engine.detectron2",
    "torchvision": "bsi_d2.engine.torchvision",
}
_REGISTRY: dict[str, type[Engine]] = {}


class Engine(ABC):
    """One model framework behind bsi_d2's configs (module docstring)."""

    name: ClassVar[str]

    @abstractmethod
    def build_model(self, cfg: Any) -> Any:
        """The untrained model ``cfg`` describes (a ``torch.nn.Module``), on the CPU."""

    @abstractmethod
    def load_weights(self, model: Any, weights: str) -> None:
        """Load ``weights`` into ``model``; a CheckpointError naming both engines when the file
        was written by another engine."""

    @abstractmethod
    def train(self, cfg: Any, resume: bool = False) -> dict[str, Any]:
        """Train on DATASETS.TRAIN (evaluating DATASETS.TEST); {"engine", "output_dir",
        "weights", "final_checkpoint", "start_iter", "iterations", "losses",
        "seconds_per_iter", "evaluation": {data set: evaluation dict}}."""

    @abstractmethod
    def evaluate(self, cfg: Any, weights: str | None = None) -> dict[str, Any]:
        """Evaluate ``weights`` on DATASETS.TEST; {"engine", "weights", "evaluation"}."""

    def default_setup(self, cfg: Any, args: Any) -> None:  # noqa: B027 - an optional hook
        """Framework logging, config dump and seeding before a ``bsi-d2 train`` run."""

    def launch(self, main: Any, args: Any, num_gpus: int, num_machines: int = 1) -> None:
        """Run ``main(args)`` in one process per GPU (torch's spawn; the detectron2 engine uses
        detectron2's launcher)."""
        if num_machines > 1:
            raise ConfigValueError(
                f"the {self.name} engine across machines: start it with torchrun"
            )
        import torch.multiprocessing as mp

        mp.spawn(_spawned_worker, args=(main, args, num_gpus, _free_port()), nprocs=num_gpus)

    @abstractmethod
    def forward(self, model: Any, inputs: Sequence[dict[str, Any]], taxonomy: Any) -> list[Any]:
        """Run ``model`` (eval mode, on its device) on samples as the mapper makes them
        (detectron2's model-input dicts: ``image`` (3, H, W), ``height``, ``width``, and
        ``image_native`` for the dense lesion head); one Instances per sample, at its
        (height, width), with taxonomy ids."""


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spawned_worker(local_rank: int, main: Any, args: Any, world: int, port: int) -> None:
    import os

    os.environ.update(
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    main(args)


def register_engine(cls: type[Engine]) -> type[Engine]:
    """Class decorator: make ``cls`` the engine MODEL.ENGINE ``cls.name`` selects."""
    name = getattr(cls, "name", "")
    if not name:
        raise ValueError(f"{cls.__name__}: an engine needs a name")
    _REGISTRY[name] = cls
    return cls


def engine_names() -> list[str]:
    return sorted(set(BUILTIN_ENGINES) | set(_REGISTRY))


def get_engine(cfg_or_name: Any) -> Engine:
    """The engine a config (MODEL.ENGINE, resolved) or a name selects."""
    choice = cfg_or_name if isinstance(cfg_or_name, str) else cfg_get(cfg_or_name, "MODEL.ENGINE")
    name = resolve_engine_name(choice)
    if name not in _REGISTRY and name in BUILTIN_ENGINES:
        importlib.import_module(BUILTIN_ENGINES[name])
    if name not in _REGISTRY:
        raise ConfigValueError(
            f"MODEL.ENGINE {choice!r} is not one of auto, {', '.join(engine_names())}"
        )
    return _REGISTRY[name]()


def resolve_engine(cfg: Any) -> str:
    """The name of the engine ``cfg`` runs on (``setup_cfg`` has already resolved it)."""
    return resolve_engine_name(cfg_get(cfg, "MODEL.ENGINE"))


def prepare_training(cfg: Any) -> Any:
    """A frozen copy of ``cfg`` ready to train or evaluate on: the data sets under
    BSI.DATASET_ROOT (or env BSI_D2_DATASETS) registered, SOLVER.EPOCHS turned into MAX_ITER
    and STEPS from the training images (with DATASETS.PSEUDO: one pass over the labelled +
    pseudo-labelled mix), and MODEL.DEVICE cpu where CUDA is absent."""
    from bsi_d2.data.datasets import (
        num_images,
        register_all,
        registered_names,
        training_dataset_dicts,
    )
    from bsi_d2.taxonomy import load_taxonomy

    cfg = cfg.clone()
    cfg.defrost()
    register_all(cfg.BSI.DATASET_ROOT or None, load_taxonomy(cfg.BSI.TAXONOMY))
    missing = [name for name in cfg.DATASETS.TRAIN if name not in registered_names()]
    if int(cfg.SOLVER.EPOCHS) > 0 and missing:
        # evaluation needs no training data; a training run fails on the missing set anyway
        logger.warning("SOLVER.EPOCHS not resolved: %s not registered", ", ".join(missing))
    elif int(cfg.SOLVER.EPOCHS) > 0:
        count = sum(num_images(name) for name in cfg.DATASETS.TRAIN)
        if cfg_get(cfg, "DATASETS.PSEUDO", ""):  # an epoch is a pass over the whole mix
            count = len(training_dataset_dicts(cfg, seed=0))
        resolve_epochs(cfg, count)
        logger.info(
            "SOLVER.EPOCHS %d over %d training images: MAX_ITER %d, STEPS %s",
            cfg.SOLVER.EPOCHS,
            count,
            cfg.SOLVER.MAX_ITER,
            tuple(cfg.SOLVER.STEPS),
        )
    cfg.MODEL.DEVICE = available_device(str(cfg.MODEL.DEVICE))
    cfg.freeze()
    return cfg


def available_device(device: str) -> str:
    """``device``, or cpu with a warning where it names CUDA and CUDA is absent."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            logger.warning("MODEL.DEVICE %s but CUDA is not available: using cpu", device)
            return "cpu"
    return device
