"""The model hub: the trained models glsr ships (top-level ``models/`` of the repository, installed as package
data) and the one place that turns a model name or a path into a model file.

Every entry takes the same name-or-path: ``Predictor.from_file("small")``, ``glsr predict IMAGE --weights
medium``, ``glsr export / parity / eval / bench --weights NAME``, and ``glsr train --init NAME`` all go
through :func:`resolve_model`. No name means :data:`DEFAULT_SHIPPED`; an existing file wins over a name;
an unknown name fails with the list of known ones (:func:`list_models`). Each file has a model card
(``models/<stem>.md``): intended use, data and licence, accuracy, speed, box convention, how it was made.

The weights were trained on 300-W faces (research use only, no commercial use) and inherit that licence.

Bottom layer: imports only :mod:`glsr.paths`.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Dict, List, Optional

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
                 "G&LSR_w small at a 136 px face and 196 px input, global stage only: faster, less accurate"),
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


def list_models() -> List[str]:
    """Names of the shipped models, default first (``glsr models --shipped`` prints them with their files)."""
    return [DEFAULT_SHIPPED] + [n for n in SHIPPED if n != DEFAULT_SHIPPED]


def looks_like_name(text: str) -> bool:
    """True for a bare word such as ``small`` or ``small-fast``: no folder part and no file suffix."""
    return not Path(text).suffix and "/" not in text and os.sep not in text


def resolve_model(spec: Optional[str | os.PathLike] = None) -> Path:
    """The model file a name or a path stands for; it exists (a file, or a ``.mlpackage`` folder).

    ``None``: the default shipped model; an existing path: itself (a file wins over a shipped name); a shipped name
    (:func:`list_models`): its installed file. An unknown name raises ``ValueError`` and a missing path
    ``FileNotFoundError``, both listing the shipped names.
    """
    if spec is None:
        return shipped_path(DEFAULT_SHIPPED)
    text = os.fspath(spec)
    if text in SHIPPED and not Path(text).is_file():  # a folder named like a model is not one
        return shipped_path(text)
    if Path(text).exists():
        return Path(text)
    known = ", ".join(list_models())
    if looks_like_name(text):
        close = difflib.get_close_matches(text, list(SHIPPED), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown model {text!r}: {hint}shipped models are {known} (or give a model file: .pt, "
                         ".onnx, .mnn, .mlpackage, .mlmodel)")
    raise FileNotFoundError(f"model file {text} does not exist (give a model file or a shipped model: {known})")


resolve_weights = resolve_model
"""The former name of :func:`resolve_model` (``--weights``), kept for existing callers."""
