"""What ``--init`` gives a model: reading the file (:func:`read_init`), its geometry and mean shape, copying its
tensors by name and shape (:func:`load_init_weights`, widening a narrower trunk) and the one-line report
(:func:`init_summary`)."""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn

from glsr.models.backbones import MNV2_LAYOUTS, MobileNetV2Regressor
from glsr.models.checkpoint import CHECKPOINT_FORMAT, check_checkpoint, torch_load_safe
from glsr.models.network import GLSRNet
from glsr.models.registry import GEOMETRY_FIELDS
from glsr.models.widen import widen_features


def read_init(path: str | os.PathLike) -> Dict[str, Any]:
    """Tensors (and, for a glsr checkpoint, the variant config) of an ``--init`` file: a glsr checkpoint,
    ``{"state_dict": ...}`` or a bare state dict. Returns ``{"path", "state", "config", "extra", "blob"}``
    (``config`` and ``extra`` may be None; ``blob`` is the file's content as loaded)."""
    from glsr.shipped import resolve_model

    try:
        path = resolve_model(path)  # a file or a shipped model's name
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"--init: {e}") from None
    if not path.is_file():
        raise FileNotFoundError(f"--init file {path} does not exist")
    blob = torch_load_safe(path, "--init file")  # weights only: never runs code from the file
    if isinstance(blob, dict) and blob.get("format") == CHECKPOINT_FORMAT:
        blob = check_checkpoint(blob, path)     # refuses newer versions, brings older ones up to date
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds no state dict")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    config = blob.get("config") if isinstance(blob, dict) and isinstance(blob.get("config"), dict) else None
    extra = blob.get("extra") if isinstance(blob, dict) and isinstance(blob.get("extra"), dict) else None
    return {"path": str(path), "state": state, "config": config, "extra": extra, "blob": blob}


def init_geometry(init: Optional[Dict[str, Any]], overrides: Dict[str, Any]) -> Dict[str, Any]:
    """Model overrides completed with the ``--init`` checkpoint's geometry (:data:`GEOMETRY_FIELDS`) wherever the
    run does not set a field: the copied weights only mean what they were trained to mean in that geometry."""
    out = dict(overrides)
    if init is not None and init.get("config"):
        for name in GEOMETRY_FIELDS:
            if name not in out and name in init["config"]:
                out[name] = init["config"][name]
    return out


def head_keys(model: GLSRNet) -> Tuple[str, ...]:
    """State-dict names of the global regressor's last layer (its outputs are offsets from the mean shape)."""
    last = len(model.regress.pts_net) - 1
    return tuple(f"regress.pts_net.{last}.{n}" for n in ("weight", "bias"))


def init_mean_shape(model: GLSRNet, init: Dict[str, Any]) -> Optional[np.ndarray]:
    """The ``--init`` file's mean shape when its regressor head or its global reinit net fits ``model``: the head
    predicts offsets from that mean, and the reinit net defines the face frame the mean is expressed in."""
    state, own = init["state"], model.state_dict()
    mean = state.get("mean_shape")
    if mean is None or tuple(mean.shape) != tuple(own["mean_shape"].shape):
        return None
    reinit = tuple(k for k in own if k.startswith("reinit."))
    for keys in (head_keys(model), reinit):
        if keys and all(k in state and tuple(state[k].shape) == tuple(own[k].shape) for k in keys):
            return mean.double().numpy()
    return None


INIT_MIN_SHARE = 0.5
"""An ``--init`` file whose tensors fill less than this share of the model *and* of which less than this share
fits is refused: it is another variant's checkpoint (8 of 321 tensors copied said nothing before)."""


def load_init_weights(model: nn.Module, init: "str | os.PathLike | Dict[str, Any]") -> Dict[str, int]:
    """Copy tensors from a local file (or a :func:`read_init` result) into ``model`` wherever the name — as is,
    or under ``regress.`` (a bare backbone) — and the shape match; a flatten head's first layer trained at a
    larger input size is re-laid out for this one (``MobileNetV2Regressor.adapt_input_weight``). The mean shape is
    never copied here (see :func:`init_mean_shape`). Returns ``{"copied": k, "adapted": a, "skipped": m}``."""
    init = init if isinstance(init, dict) else read_init(init)
    state, path = init["state"], init["path"]
    own = model.state_dict()
    copied = 0
    new, widened = widen_init(model, init)
    for k, v in state.items():
        if widened and k.startswith("regress.features."):
            continue  # a narrower backbone's trunk: carried over by widen_init, its names do not correspond
        for name in (k, "regress." + k):
            if name in own and name != "mean_shape" and torch.is_tensor(v) and own[name].shape == v.shape:
                new[name] = v
                copied += 1
                break
    adapted = 0
    for prefix, module in model.named_modules():  # flatten heads trained at a larger input size (a faster variant)
        key = f"{prefix}.pts_net.0.weight"
        if hasattr(module, "adapt_input_weight") and key in state and key not in new and key in own:
            weight = module.adapt_input_weight(state[key])
            if weight is not None and weight.shape == own[key].shape:
                new[key] = weight
                adapted += 1
    if not copied and not widened:
        raise ValueError(f"no tensor of {path} matches the model by name and shape")
    used, tensors = copied + adapted, [k for k in own if k != "mean_shape"]
    if not widened and used < INIT_MIN_SHARE * len(state) and used < INIT_MIN_SHARE * len(tensors):
        source = (init.get("config") or {}).get("name")
        raise ValueError(f"--init {path}{f' (variant {source!r})' if source else ''} fits variant "
                         f"{getattr(getattr(model, 'cfg', None), 'name', '?')!r} poorly: {used} of its {len(state)} "
                         f"tensors match by name and shape, {len(tensors) - used} of the model's {len(tensors)} would "
                         "start untrained; train the --init file's own variant (--variant), or give a checkpoint of "
                         "this variant")
    model.load_state_dict(new, strict=False)
    report: Dict[str, Any] = {"copied": copied, "adapted": adapted, "skipped": len(state) - copied - adapted,
                              "model_tensors": len(own)}
    if widened:
        report["widened"] = widened
    return report


def init_summary(report: Dict[str, Any]) -> str:
    """One line on what ``--init`` gave the model (a :func:`load_init_weights` report): how many of its tensors
    came from the file, so a start that matched little (another variant's file) is seen at once."""
    taken = report["copied"] + report["adapted"]
    text = (f"{taken} of the model's {report['model_tensors']} tensors taken from the file "
            f"({report['copied']} copied, {report['adapted']} re-laid out; {report['skipped']} of the file's tensors "
            "unused)")
    if report.get("widened"):
        text += f"; trunk widened from {report['widened'].get('from')} ({report['widened'].get('rows')} rows)"
    return text


def widen_init(model: nn.Module, init: Dict[str, Any]) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """The global regressor's trunk from a glsr checkpoint of a narrower MobileNetV2-style backbone (``small``
    into ``medium``, :mod:`glsr.models.widen`): ``(tensors, report)``, or ``({}, {})`` when the ``--init`` file
    is not such a checkpoint."""
    src_backbone = (init.get("config") or {}).get("backbone")
    regress = getattr(model, "regress", None)
    dst_backbone = getattr(getattr(model, "cfg", None), "backbone", None)
    if (src_backbone == dst_backbone or src_backbone not in MNV2_LAYOUTS
            or not isinstance(regress, MobileNetV2Regressor)):
        return {}, {}
    tensors, report = widen_features(init["state"], *MNV2_LAYOUTS[src_backbone], regress,
                                     src_prefix="regress.features.", dst_prefix="regress.features.")
    return (tensors, {"from": src_backbone, **report}) if report["rows"] else ({}, {})
