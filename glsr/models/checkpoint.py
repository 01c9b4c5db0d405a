"""glsr checkpoints (``.pt``): variant config, scheme, mean shape and weights in one file, written atomically."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from glsr.models.network import GLSRNet
from glsr.models.registry import VariantConfig
from glsr.schemes import get_scheme
from glsr import atomic

CHECKPOINT_FORMAT = "glsr-checkpoint"
CHECKPOINT_VERSION = 1


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: readers never see a half file."""
    with atomic.atomic_open(path, "wb") as f:
        torch.save(obj, f)


def checkpoint_dict(model: GLSRNet, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": model.cfg.to_dict(),
            "scheme": model.scheme.name, "state_dict": model.state_dict(), "extra": dict(extra or {})}


def save_checkpoint(model: GLSRNet, path: str | os.PathLike, extra: Optional[Dict[str, Any]] = None) -> None:
    atomic_torch_save(checkpoint_dict(model, extra), path)


def read_checkpoint(path: str | os.PathLike) -> Dict[str, Any]:
    """Load and validate the raw checkpoint dict; clear errors for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise ValueError(f"{path} is not a readable torch checkpoint ({e.__class__.__name__}: {e})") from e
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a glsr checkpoint (no format={CHECKPOINT_FORMAT!r}); "
                         "train one with `glsr train` or convert the authors' release with `glsr import-dpr`")
    if ck.get("version", 0) > CHECKPOINT_VERSION:
        raise ValueError(f"{path} has checkpoint version {ck['version']}, newer than this glsr understands "
                         f"({CHECKPOINT_VERSION}); upgrade glsr")
    return ck


def load_checkpoint(path: str | os.PathLike) -> GLSRNet:
    """Rebuild the network stored in a glsr checkpoint (in eval mode)."""
    ck = read_checkpoint(path)
    cfg = VariantConfig.from_dict(ck["config"])
    scheme = get_scheme(ck["scheme"])
    state = ck["state_dict"]
    model = GLSRNet(cfg, scheme, state["mean_shape"].numpy())
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match variant {cfg.name!r} "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.eval()
