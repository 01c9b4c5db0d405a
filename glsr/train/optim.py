"""One stage's optimization: what trains (:func:`trainable_groups`; the rest is frozen and in eval mode), the
optimizer (:func:`make_optimizer`), its polynomial learning-rate schedule and AMP gradient scaler, restored on resume
(:func:`stage_optimizer`), and one optimizer step with gradient clipping (:func:`optimizer_step`)."""
from __future__ import annotations

import contextlib
from typing import Any, ContextManager, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from glsr.train.config import TrainConfig
from glsr.train.stages import StagePlan


def trainable_groups(model: nn.Module, plan: StagePlan, freeze_batchnorm: bool = False) -> List[Dict[str, Any]]:
    """Freeze (and put in eval mode) the sub-modules ``plan`` does not train; the optimizer's parameter groups, one
    per learning-rate scale (largest first), each with its ``lr`` already scaled."""
    model.train()
    for p in model.parameters():
        p.requires_grad_(False)
    groups: Dict[float, List[nn.Parameter]] = {}
    for name, module in model.named_children():
        if name in plan.trainable:
            for p in module.parameters():
                p.requires_grad_(True)
                groups.setdefault(plan.lr_scale(name), []).append(p)
        else:
            module.eval()
    if freeze_batchnorm:  # running statistics, not the batch's: train mode computes what eval mode does
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    return [{"params": ps, "lr": plan.lr * scale} for scale, ps in sorted(groups.items(), reverse=True)]


def make_optimizer(cfg: TrainConfig, groups: List[Dict[str, Any]], lr: float) -> torch.optim.Optimizer:
    """The stage's optimizer over ``groups`` (each with its own ``lr`` scale already applied), by ``cfg.optimizer``."""
    if cfg.optimizer == "adam":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def stage_optimizer(cfg: TrainConfig, groups: List[Dict[str, Any]], lr: float, total: int, amp: bool,
                    state: Optional[Mapping[str, Any]] = None) -> Tuple[torch.optim.Optimizer, Any, Any]:
    """``(optimizer, scheduler, scaler)`` of a stage of ``total`` optimizer steps: the learning rate decays as
    ``(1 - step / total) ** cfg.poly_power``; ``scaler`` is a CUDA gradient scaler with ``amp``, else ``None``.
    ``state``: a resumable state whose saved optimizer, scheduler and scaler are restored (when it has them)."""
    optimizer = make_optimizer(cfg, groups, lr)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=max(total, 1), power=cfg.poly_power)
    scaler = torch.amp.GradScaler("cuda") if amp else None
    if state is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler") is not None:
            scaler.load_state_dict(state["scaler"])
    return optimizer, scheduler, scaler


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any,
                   params: Sequence[nn.Parameter], clip_norm: Optional[float]) -> torch.Tensor:
    """Back-propagate ``loss`` (scaled with ``scaler``), clip the gradient norm of ``params`` to ``clip_norm``
    (no clipping when falsy), step the optimizer and the schedule; returns the gradient norm before clipping."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(params, clip_norm or float("inf"))
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    return grad_norm


def autocast(device: torch.device, enabled: bool) -> ContextManager[Any]:
    """Float16 autocast on ``device`` when ``enabled`` (AMP), else a no-op context."""
    if enabled:
        return torch.autocast(device_type=device.type, dtype=torch.float16)
    return contextlib.nullcontext()
