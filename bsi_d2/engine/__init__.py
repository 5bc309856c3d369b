"""Model engines: detectron2 (``d2_trainer``) or torchvision (``tv_trainer``), same contract.

Each engine module exposes ``train(cfg, resume: bool) -> dict`` and
``evaluate(cfg, weights: str) -> dict``; ``resolve_engine`` is the one place that picks one.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Any

ENGINE_MODULES = {
    "detectron2": "bsi_d2.engine.d2_trainer",
    "torchvision": "bsi_d2.engine.tv_trainer",
}


def resolve_engine(cfg: Any) -> str:
    """MODEL.ENGINE ("auto" | "detectron2" | "torchvision") -> the engine that will run."""
    choice = str(cfg.MODEL.ENGINE).strip().lower()
    if choice not in ("auto", *ENGINE_MODULES):
        raise ValueError(
            f"MODEL.ENGINE {cfg.MODEL.ENGINE!r} is not auto, detectron2 or torchvision"
        )
    has_d2 = importlib.util.find_spec("detectron2") is not None
    if choice == "auto":
        return "detectron2" if has_d2 else "torchvision"
    if choice == "detectron2" and not has_d2:
        raise ImportError(
            "MODEL.ENGINE is detectron2 but detectron2 is not installed; install it (see README) "
            "or set MODEL.ENGINE torchvision"
        )
    return choice


def load_engine(cfg: Any) -> ModuleType:
    """The engine module (with ``train`` and ``evaluate``) that ``cfg`` asks for."""
    return importlib.import_module(ENGINE_MODULES[resolve_engine(cfg)])
