"""Setting a config up: merge, validate, resolve MODEL.ENGINE once, freeze. No side effects.

``setup_cfg`` reads the YAML once, with the defaults of the engine it resolves to (detectron2's
where MODEL.ENGINE is detectron2, the torchvision subset otherwise), so a key the torchvision
engine cannot honour fails at once. It registers no data set, counts no image and leaves
MODEL.DEVICE as written: where the data and the device are used (training, evaluation,
inference) they are resolved by :func:`bsi_d2.engine.base.prepare_training` and
:func:`bsi_d2.engine.predictor.resolve_device`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any

from fvcore.common.config import CfgNode as _FvCfgNode

from bsi_d2.config.defaults import (
    INTENSITIES,
    ConfigKeyError,
    ConfigValueError,
    EngineUnavailableError,
    detectron2_available,
    get_cfg,
)

logger = logging.getLogger(__name__)

ENGINE_KEY = "MODEL.ENGINE"
AUTO = "auto"
DETECTRON2 = "detectron2"
TORCHVISION = "torchvision"


def resolve_engine_name(choice: str) -> str:
    """MODEL.ENGINE as written -> the engine that will run: ``auto`` is detectron2 where it is
    installed, else torchvision; detectron2 asked for but absent is an error. Other names pass
    through (the engine registry checks them)."""
    name = str(choice).strip().lower()
    if not name:
        raise ConfigValueError("MODEL.ENGINE is empty: use auto, detectron2 or torchvision")
    has_d2 = detectron2_available()
    if name == AUTO:
        return DETECTRON2 if has_d2 else TORCHVISION
    if name == DETECTRON2 and not has_d2:
        raise EngineUnavailableError(
            "MODEL.ENGINE is detectron2 but detectron2 is not installed; install it (see README) "
            "or set MODEL.ENGINE torchvision"
        )
    return name


def declared_engine(config_file: str | os.PathLike | None, opts: Sequence[str]) -> str:
    """MODEL.ENGINE as the overrides or the YAML (following ``_BASE_``) write it, else auto;
    read before the config is built, so that it is built once with the right defaults."""
    opts = list(opts)
    for key, value in zip(opts[::2], opts[1::2], strict=False):
        if key == ENGINE_KEY:
            return str(value)
    if not config_file or not os.path.isfile(config_file):
        return AUTO  # _load reports the missing file
    try:
        # fvcore's own _BASE_ resolution, the one merge_from_file applies
        data = _FvCfgNode.load_yaml_with_base(str(config_file))
    except Exception:  # noqa: BLE001 - merge_from_file reports the broken file
        return AUTO
    model = data.get("MODEL") if isinstance(data, dict) else None
    if isinstance(model, dict) and model.get("ENGINE") is not None:
        return str(model["ENGINE"])
    return AUTO


def _load(config_file: str | os.PathLike | None, opts: Sequence[str], subset: bool) -> Any:
    cfg = get_cfg(subset)
    if config_file:
        if not os.path.isfile(config_file):
            raise FileNotFoundError(f"{config_file}: config file not found")
        try:
            cfg.merge_from_file(str(config_file))
        except KeyError as err:
            raise ConfigKeyError(f"{config_file}: {err.args[0] if err.args else err}") from err
    try:
        cfg.merge_from_list(list(opts or []))
    except (AssertionError, KeyError) as err:  # yacs asserts on unknown keys in a list
        raise ConfigKeyError(f"config overrides: {err}") from err
    except ValueError as err:  # an override whose type differs from the default's
        raise ConfigValueError(f"config overrides: {err}") from err
    return cfg


def iterations_per_epoch(num_images: int, ims_per_batch: int) -> int:
    """Iterations that show every training image once (the last batch may be partial)."""
    if num_images <= 0:
        raise ConfigValueError("cannot derive iterations from an empty training set")
    return math.ceil(num_images / max(1, int(ims_per_batch)))


def resolve_epochs(cfg: Any, num_train_images: int) -> None:
    """With SOLVER.EPOCHS > 0, set MAX_ITER, STEPS and WARMUP_ITERS from the dataset size.

    Warm-up is capped at one epoch so that a small data set does not spend its run warming up.
    """
    epochs = int(cfg.SOLVER.EPOCHS)
    if epochs <= 0:
        return
    per_epoch = iterations_per_epoch(num_train_images, cfg.SOLVER.IMS_PER_BATCH)
    cfg.SOLVER.MAX_ITER = epochs * per_epoch
    cfg.SOLVER.STEPS = tuple(
        int(round(float(e) * per_epoch)) for e in cfg.SOLVER.EPOCH_STEPS if 0 < float(e) < epochs
    )
    cfg.SOLVER.WARMUP_ITERS = min(int(cfg.SOLVER.WARMUP_ITERS), per_epoch)


def setup_cfg(
    config_file: str | os.PathLike | None,
    opts: Sequence[str] | None = None,
    freeze: bool = True,
) -> Any:
    """Load a config the way every engine needs it.

    Merge the file and the ``KEY VALUE`` list onto the defaults of the engine MODEL.ENGINE
    resolves to, write the resolved engine back to MODEL.ENGINE, check INPUT.INTENSITY, set
    ROI_HEADS.NUM_CLASSES from the taxonomy, and freeze. Nothing outside the returned config
    changes.
    """
    from bsi_d2.taxonomy import load_taxonomy

    opts = list(opts or [])
    engine = resolve_engine_name(declared_engine(config_file, opts))
    cfg = _load(config_file, opts, subset=engine != DETECTRON2)
    cfg.MODEL.ENGINE = engine
    if str(cfg.INPUT.INTENSITY) not in INTENSITIES:
        raise ConfigValueError(
            f"INPUT.INTENSITY {cfg.INPUT.INTENSITY!r} is not one of {INTENSITIES}"
        )
    taxonomy = load_taxonomy(cfg.BSI.TAXONOMY)
    if cfg.MODEL.ROI_HEADS.NUM_CLASSES != len(taxonomy.classes):
        logger.info(
            "MODEL.ROI_HEADS.NUM_CLASSES %d -> %d from taxonomy %s",
            cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            len(taxonomy.classes),
            taxonomy.name,
        )
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(taxonomy.classes)
    if freeze:
        cfg.freeze()
    return cfg
