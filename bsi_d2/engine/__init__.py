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


def load_engine(cfg):
    """The engine ``cfg`` asks for (an :class:`Engine`, with ``train`` and ``evaluate``)."""
    return get_engine(cfg)


__all__ = [
    "BUILTIN_ENGINES",
    "Engine",
    "available_device",
    "engine_names",
    "get_engine",
    "load_engine",
    "prepare_training",
    "register_engine",
    "resolve_engine",
]
