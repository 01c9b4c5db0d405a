"""The trained models glsr ships (top-level ``models/`` of the repository, installed as package data).

``glsr predict IMAGE`` without ``--weights`` uses :data:`DEFAULT_SHIPPED`; ``--weights NAME`` accepts the names
of :data:`SHIPPED`. Each file has a model card (``models/<stem>.md``): data and licence, command, budget,
validation numbers, speed, box convention.

The weights were trained on 300-W faces (research use only, no commercial use) and inherit that licence.

Bottom layer: imports only :mod:`glsr.paths`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Dict, Optional

from glsr.paths import CHECKOUT


@dataclass(frozen=True)
class ShippedModel:
    """One shipped checkpoint: its file name in ``models/`` and a one-line description."""

    name: str
    file: str
    description: str


SHIPPED: Dict[str, ShippedModel] = {m.name: m for m in (
    ShippedModel("small", "glsr-small-68.pt",
                 "G&LSR_w small (Small MobileNetV2), 68 points, 300-W; the default model"),
    ShippedModel("small-fast", "glsr-small-fast-68.pt",
                 "G&LSR_w small at a 136 px face, 272 px input and 40 px parts: faster, less accurate"),
    ShippedModel("medium", "glsr-medium-68.pt", "G&LSR_w/M (MobileNetV2), 68 points, 300-W"),
)}
DEFAULT_SHIPPED = "small"
PACKAGE = "glsr.zoo"
"""Import name under which ``models/`` is installed (``[tool.setuptools.package-dir]`` in pyproject.toml)."""


def models_dir() -> Path:
    """The folder holding the shipped files: the installed ``glsr.zoo`` package data, or ``models/`` beside the
    ``glsr`` package in a source checkout."""
    try:
        found = resources.files(PACKAGE)
        path = Path(str(found))
        if path.is_dir():
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    return CHECKOUT / "models"


def shipped_path(name: str) -> Path:
    """The file of a shipped model by name; a clear error for an unknown name or a missing file."""
    if name not in SHIPPED:
        raise ValueError(f"unknown shipped model {name!r}; shipped: {sorted(SHIPPED)} (or give a model file)")
    path = models_dir() / SHIPPED[name].file
    if not path.is_file():
        raise FileNotFoundError(f"shipped model {name!r} is missing ({path}); reinstall glsr "
                                "(`pip install .` installs models/ as package data) or give --weights FILE")
    return path


def resolve_weights(weights: Optional[str | os.PathLike]) -> Path:
    """``--weights`` as a path: ``None`` = the default shipped model, a shipped name, or a file path."""
    if weights is None:
        return shipped_path(DEFAULT_SHIPPED)
    text = str(weights)
    if text in SHIPPED and not Path(text).exists():
        return shipped_path(text)
    return Path(text)
