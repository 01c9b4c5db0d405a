"""Uniform weight averaging ("model soup", Wortsman et al., ICML 2022) of training runs that differ only in seed.

Runs fine-tuned from one start with the same recipe stay in one basin of the loss, so the mean of their weights is
a model of its own (one network, same cost per face) that is usually better than each of them. glsr averages only
such runs: their configs must agree on every field except ``seed`` and the fields ``--resume`` lets differ
(:func:`glsr.train.config.config_differences`); anything else is refused with the fields named. Every floating
tensor is averaged in float64, BatchNorm running statistics included (the mean of the members' estimates); integer
buffers (BatchNorm's ``num_batches_tracked``) are taken from the first member.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch

from glsr.train.config import TrainConfig


def soup_config_differences(configs: Sequence[TrainConfig]) -> List[str]:
    """Fields on which any config differs from the first, other than ``seed`` and those ``--resume`` ignores."""
    from glsr.train.config import config_differences

    return sorted({k for c in configs[1:] for k in config_differences(configs[0], c)} - {"seed"})


def average_state_dicts(states: Sequence[Dict[str, torch.Tensor]],
                        names: Sequence[str]) -> Dict[str, torch.Tensor]:
    """The element-wise mean of state dicts with the same keys and shapes (see module docstring); ``names`` label the
    members in errors."""
    if len(states) < 2:
        raise ValueError("a weight average needs at least two members")
    first = states[0]
    for state, name in zip(states[1:], names[1:]):
        if set(state) != set(first):
            diff = sorted(set(state) ^ set(first))
            raise ValueError(f"{name} and {names[0]} hold different tensors ({', '.join(diff[:4])}); "
                             "only runs of one variant and scheme can be averaged")
        for k, v in state.items():
            if v.shape != first[k].shape:
                raise ValueError(f"{name}: {k} has shape {tuple(v.shape)}, {names[0]} {tuple(first[k].shape)}")
    out: Dict[str, torch.Tensor] = {}
    for k, v in first.items():
        if v.is_floating_point():
            mean = torch.stack([s[k].detach().to(torch.float64) for s in states]).mean(dim=0)
            out[k] = mean.to(v.dtype)
        else:
            out[k] = v.clone()
    return out


def soup_checkpoint(checkpoints: Sequence[Dict[str, Any]], names: Sequence[str]) -> Dict[str, Any]:
    """A glsr checkpoint dict whose weights are the mean of ``checkpoints`` (same variant config and scheme)."""
    first = checkpoints[0]
    for ck, name in zip(checkpoints[1:], names[1:]):
        if ck.get("config") != first.get("config") or ck.get("scheme") != first.get("scheme"):
            raise ValueError(f"{name} is a different network from {names[0]} (variant config or scheme differ); "
                             "only runs of one variant and scheme can be averaged")
    out = dict(first)
    out["state_dict"] = average_state_dicts([ck["state_dict"] for ck in checkpoints], names)
    return out


def member_names(runs: Sequence[str | os.PathLike]) -> List[str]:
    """Run folder names, for cards and errors."""
    return [Path(r).name for r in runs]
