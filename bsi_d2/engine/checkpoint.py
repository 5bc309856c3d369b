"""Checkpoints of the torchvision engine, laid out like detectron2's.

``OUTPUT_DIR/model_{iter:07d}.pth`` and ``model_final.pth`` hold ``{"model", "optimizer",
"scheduler", "iteration", "cfg", "engine": "torchvision"}`` (tensors and plain types only, so they
load with ``torch.load(weights_only=True)``); ``OUTPUT_DIR/last_checkpoint`` names the newest.

Transfer learning (seed 001: pre-train on one cohort, fine-tune on another) is one line::

    bsi-d2 train --config-file C MODEL.WEIGHTS out_prostate/model_final.pth OUTPUT_DIR out_breast

``MODEL.WEIGHTS`` loads the model weights only (no optimizer, no iteration); heads whose shape
differs (another number of classes) start fresh, with a warning.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from fvcore.common.checkpoint import Checkpointer
from torch import nn

ENGINE = "torchvision"
LAST_CHECKPOINT = "last_checkpoint"

logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DistributedDataParallel wrapper."""
    return getattr(model, "module", model)


def checkpoint_name(iteration: int) -> str:
    return f"model_{iteration:07d}.pth"


class TorchvisionCheckpointer(Checkpointer):
    """fvcore's Checkpointer (detectron2's base class) for the torchvision engine: each file
    is written to ``<name>.pth.partial`` and renamed, so a crash mid-write never leaves a
    truncated checkpoint, and carries ``engine`` and the config; files are read with
    :func:`load_checkpoint` (``weights_only``, the engine checked)."""

    def __init__(
        self,
        model: nn.Module,
        save_dir: str | Path,
        *,
        cfg: Any | None = None,
        save_to_disk: bool = True,
        **checkpointables: Any,
    ) -> None:
        super().__init__(unwrap(model), str(save_dir), save_to_disk=save_to_disk, **checkpointables)
        self.cfg_text = cfg.dump() if cfg is not None else ""

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data: dict[str, Any] = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        data["iteration"] = int(data.get("iteration", -1))
        data["engine"] = ENGINE
        data["cfg"] = self.cfg_text
        path = Path(self.save_dir) / f"{name}.pth"
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".pth.partial")
        torch.save(data, partial)
        os.replace(partial, path)
        self.tag_last_checkpoint(path.name)

    def _load_file(self, f: str) -> dict[str, Any]:
        return load_checkpoint(f)


def save_checkpoint(
    output_dir: str | Path,
    name: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    iteration: int = -1,
    cfg: Any | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write one checkpoint (``name`` ends in .pth) and point ``last_checkpoint`` at it."""
    parts = {"optimizer": optimizer, "scheduler": scheduler}
    checkpointer = TorchvisionCheckpointer(
        model, output_dir, cfg=cfg, **{k: v for k, v in parts.items() if v is not None}
    )
    checkpointer.save(name.removesuffix(".pth"), iteration=iteration, **(extra or {}))
    return Path(output_dir) / name


def last_checkpoint(output_dir: str | Path) -> Path | None:
    """The checkpoint ``last_checkpoint`` names, or None where there is none."""
    marker = Path(output_dir) / LAST_CHECKPOINT
    if not marker.is_file():
        return None
    path = Path(output_dir) / marker.read_text(encoding="utf-8").strip()
    return path if path.is_file() else None


def _check_location(weights: str) -> Path:
    if weights.startswith(("detectron2://", "http://", "https://", "catalog://")):
        raise CheckpointError(
            f"{weights}: the torchvision engine cannot download model-zoo weights (no network, and "
            "detectron2 weights use another layout); give a local checkpoint of this engine, leave "
            "MODEL.WEIGHTS empty to start from scratch, or use MODEL.ENGINE detectron2"
        )
    path = Path(weights).expanduser()
    if path.suffix == ".pkl":
        raise CheckpointError(
            f"{path}: a detectron2/Caffe2 .pkl checkpoint cannot be loaded by the torchvision "
            "engine (different format); use MODEL.ENGINE detectron2"
        )
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    return path


def load_checkpoint(weights: str | Path) -> dict[str, Any]:
    """Read a checkpoint of this engine with ``weights_only=True``; clear errors otherwise."""
    path = _check_location(str(weights))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not ours"
        raise CheckpointError(
            f"{path}: not a torchvision-engine checkpoint loadable with weights_only=True ({err}); "
            "a checkpoint of the detectron2 engine (which stores scheduler objects) needs "
            "MODEL.ENGINE detectron2"
        ) from err
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: no 'model' entry; not a checkpoint of this engine")
    written_by = checkpoint_engine(state)
    if written_by != ENGINE:
        raise CheckpointError(other_engine_message(path, written_by or "detectron2", ENGINE))
    return state


def checkpoint_engine(state: Any) -> str | None:
    """The engine that wrote a loaded checkpoint: its ``engine`` tag (a name, or detectron2's
    ``{"name": ...}`` checkpointable), else read from the state dict's key names (detectron2's
    ``backbone.bottom_up.*`` / torchvision's ``backbone.body.*``); None where it cannot tell."""
    if not isinstance(state, dict):
        return None
    tag = state.get("engine")
    if isinstance(tag, dict):
        tag = tag.get("name")
    if isinstance(tag, str) and tag:
        return tag
    model = state.get("model", state)
    keys = list(model) if isinstance(model, dict) else []
    if any(str(k).startswith("backbone.bottom_up.") for k in keys):
        return "detectron2"
    if any(str(k).startswith("backbone.body.") for k in keys):
        return "torchvision"
    return None


def peek_engine(weights: str | Path) -> str | None:
    """:func:`checkpoint_engine` of a local checkpoint file, None where it cannot be read
    with ``weights_only=True`` (detectron2's own checkpoints hold scheduler objects)."""
    path = Path(weights).expanduser()
    if not path.is_file() or path.suffix == ".pkl":
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - unreadable this way: not one of the torchvision engine's
        return None
    return checkpoint_engine(state)


def other_engine_message(path: str | Path, written_by: str, running: str) -> str:
    """The error for a checkpoint of one engine loaded by another, naming both."""
    return (
        f"{path}: a checkpoint of the {written_by} engine cannot be loaded by the {running} "
        f"engine (the two lay their weights out differently); set MODEL.ENGINE {written_by} "
        f"to use it (MODEL.ENGINE auto runs detectron2 wherever detectron2 is installed), or "
        f"train again with MODEL.ENGINE {running}"
    )


def load_model_weights(model: nn.Module, weights: str | Path) -> dict[str, Any]:
    """Load model weights only (fine-tuning); tensors whose shape differs are left as built.

    Returns the checkpoint so callers can read its ``cfg`` or ``iteration``.
    """
    state = load_checkpoint(weights)
    target = unwrap(model)
    own = target.state_dict()
    loadable = {}
    skipped = []
    for key, tensor in state["model"].items():
        if key in own and own[key].shape != tensor.shape:
            skipped.append(f"{key} {tuple(tensor.shape)} -> {tuple(own[key].shape)}")
            continue
        loadable[key] = tensor
    result = target.load_state_dict(loadable, strict=False)
    if skipped:
        logger.warning("%s: shapes differ, these start fresh: %s", weights, "; ".join(skipped))
    missing = [k for k in result.missing_keys if k not in state["model"]]
    if missing:
        logger.warning("%s: missing in checkpoint: %s", weights, ", ".join(missing))
    if result.unexpected_keys:
        logger.warning("%s: not in model: %s", weights, ", ".join(result.unexpected_keys))
    return state
