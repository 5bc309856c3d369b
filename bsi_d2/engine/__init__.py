"""Model engines behind one interface (:class:`~bsi_d2.engine.base.Engine`): detectron2
(``engine/detectron2/``) and torchvision (``engine/torchvision/``).

``get_engine(cfg)`` is the one place that picks one; :class:`~bsi_d2.engine.predictor.Predictor`
runs any of them. Importing this package imports neither framework.
"""

from bsi_d2.engine.base import (
    BUILTIN_ENGINES,
    Engine,
    available_device,
    engine_names,
    get_engine,
    prepare_training,
    register_engine,
    resolve_engine,
)

__all__ = [
    "BUILTIN_ENGINES",
    "Engine",
    "available_device",
    "engine_names",
    "get_engine",
    "prepare_training",
    "register_engine",
    "resolve_engine",
]
