"""Reading a config by dotted key, the same on detectron2's and the subset's nodes."""

from __future__ import annotations

from typing import Any

_REQUIRED = object()


def cfg_get(cfg: Any, key: str, default: Any = _REQUIRED) -> Any:
    """``cfg.A.B.C`` for ``key="A.B.C"``; ``default`` where a node lacks the key, KeyError where
    no default is given."""
    node = cfg
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif not isinstance(node, dict) and hasattr(node, part):
            node = getattr(node, part)
        elif default is not _REQUIRED:
            return default
        else:
            raise KeyError(f"config has no key {key}")
    return node
