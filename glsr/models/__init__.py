"""Networks, variants and the in-graph sampler of G&LSR_ω.

The names below are imported on first use (PEP 562), so importing a light submodule (``glsr.models.cli``,
``glsr.models.registry``) does not load PyTorch: ``glsr --version`` and ``glsr predict`` with an exported model
never wait for it.
"""
from __future__ import annotations

import importlib
from typing import Any

_HOME = {"load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint", "create_model": "factory",
         "default_mean_shape": "factory", "GLSRNet": "network", "VARIANTS": "registry", "VariantConfig": "registry",
         "get_variant": "registry", "list_variants": "registry", "register_variant": "registry"}

__all__ = ["GLSRNet", "VARIANTS", "VariantConfig", "create_model", "default_mean_shape", "get_variant",
           "list_variants", "load_checkpoint", "register_variant", "save_checkpoint"]


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"glsr.models.{_HOME[name]}"), name)
    raise AttributeError(f"module 'glsr.models' has no attribute {name!r}")
