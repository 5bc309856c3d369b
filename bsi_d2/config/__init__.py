"""Configuration: detectron2's config system plus the keys bsi_d2 adds.

- :mod:`~bsi_d2.config.defaults`: the defaults (``get_cfg``, ``add_bsi_config``, the one table
  of the torchvision engine's subset of detectron2 keys);
- :mod:`~bsi_d2.config.setup`: ``setup_cfg`` (merge, validate, resolve MODEL.ENGINE once,
  freeze), what every entry point calls;
- :mod:`~bsi_d2.config.access`: ``cfg_get``, reading by dotted key.

This package imports nothing from the rest of bsi_d2 but the taxonomy.
"""

from bsi_d2.config.access import cfg_get
from bsi_d2.config.defaults import (
    ENGINES,
    INTENSITIES,
    LESION_META_ARCHITECTURE,
    CfgNode,
    ConfigError,
    ConfigKeyError,
    ConfigValueError,
    EngineUnavailableError,
    UnsupportedConfigError,
    add_bsi_config,
    detectron2_available,
    get_cfg,
    is_subset_cfg,
    subset_defaults,
)
from bsi_d2.config.setup import (
    declared_engine,
    iterations_per_epoch,
    resolve_engine_name,
    resolve_epochs,
    setup_cfg,
)

__all__ = [
    "ENGINES",
    "INTENSITIES",
    "LESION_META_ARCHITECTURE",
    "CfgNode",
    "ConfigError",
    "ConfigKeyError",
    "ConfigValueError",
    "EngineUnavailableError",
    "UnsupportedConfigError",
    "add_bsi_config",
    "cfg_get",
    "declared_engine",
    "detectron2_available",
    "get_cfg",
    "is_subset_cfg",
    "iterations_per_epoch",
    "resolve_engine_name",
    "resolve_epochs",
    "setup_cfg",
    "subset_defaults",
]
