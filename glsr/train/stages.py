"""The stages of Section 4.1 a variant trains (:func:`plan_stages`), one stage's forward pass with its loss terms
(:class:`StageModule`, the unit wrapped by DistributedDataParallel) and the choice of the stage a run keeps
(:func:`select_stage`). Frames, thetas and targets: :mod:`glsr.train.targets`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from glsr.models.network import GLSRNet
from glsr.models.registry import VariantConfig
from glsr.train import targets as tg
from glsr.train.config import STAGE_NAMES, StageConfig
from glsr.train.losses import ShapeLoss, interocular, stn_loss

STN_TERMS = ("stn_g", "stn_l")


# ------------------------------------------------------------------------------------------ stage planning


@dataclass(frozen=True)
class StagePlan:
    """One stage to run: which sub-modules of :class:`GLSRNet` train, which loss terms are on."""

    index: int
    name: str
    epochs: int
    lr: float
    trainable: Tuple[str, ...]
    terms: Tuple[str, ...]
    lr_scales: Tuple[Tuple[str, float], ...] = ()

    def lr_scale(self, module: str) -> float:
        return dict(self.lr_scales).get(module, 1.0)


REINIT_MODULES = ("reinit", "local_reinit")


def plan_stages(vcfg: VariantConfig, stages: Sequence[StageConfig], reinit_lr_scale: float = 1.0,
                allow_empty: bool = False) -> List[StagePlan]:
    """The stages of Section 4.1 that apply to a variant (stages with 0 epochs are dropped).

    ``reinit_lr_scale`` multiplies the learning rate of the reinit nets in the end-to-end ``finetune`` stage,
    where they learn from the errors propagated back through the samplers alone. ``allow_empty``: no stage at all
    is a valid plan (a run that only grows its start, :mod:`glsr.train.grow`).
    """
    reg = ("regress", "regress2") if vcfg.cascade == 2 else ("regress",)
    loc = ("local_reinit", "local_regress")
    spec: Dict[str, Optional[Tuple[Tuple[str, ...], Tuple[str, ...]]]] = {
        "reinit": (("reinit",), ("stn_g",)) if vcfg.global_reinit else None,
        "global": (reg, ("global",)),
        "local": (loc, ("stn_l", "local")) if vcfg.local else None,
        "finetune": ((("reinit",) if vcfg.global_reinit else ()) + reg + (loc if vcfg.local else ()),
                     ("global",) + (("local",) if vcfg.local else ()))
        if (vcfg.global_reinit or vcfg.local) else None,
    }
    plans = []
    for i, (name, sc) in enumerate(zip(STAGE_NAMES, stages)):
        s = spec[name]
        if s is None or sc.epochs == 0:
            continue
        scales = tuple((m, reinit_lr_scale) for m in REINIT_MODULES if m in s[0]) if name == "finetune" else ()
        plans.append(StagePlan(i, name, sc.epochs, sc.lr, s[0], s[1], scales))
    if not plans and not allow_empty:
        raise ValueError(f"variant {vcfg.name!r} has no stage with epochs > 0")
    return plans



class StageModule(nn.Module):
    """Forward of one stage: batch in, dict of loss terms out (the unit wrapped by DDP)."""

    def __init__(self, model: GLSRNet, plan: StagePlan, loss: ShapeLoss, templates: Sequence[torch.Tensor],
                 local_transform: str, stn_active: Dict[str, bool]):
        super().__init__()
        self.model = model
        self.stn_active = stn_active  # shared with the trainer's position: switch-offs take effect at once
        self.plan = plan
        self.loss = loss
        self.templates = list(templates)
        self.local_transform = local_transform

    def forward(self, crop: torch.Tensor, landmarks_loc: torch.Tensor,
                theta_g_target: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        m = self.model
        scheme = m.scheme
        terms: Dict[str, torch.Tensor] = {}
        if self.plan.terms == ("stn_g",):
            terms["stn_g"] = stn_loss(m.reinit(m.loc_image(crop)), theta_g_target)
            return terms
        live: Dict[str, torch.Tensor] = {}
        handle = None
        if "stn_l" in self.plan.terms and self.stn_active.get("stn_l", True):
            # while theta_l is supervised by Eq. 3 it learns from Eq. 3 alone (as theta_g in the reinit stage);
            # once the STN loss is off it follows the errors propagated back through the sampler
            def gate(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
                live["theta_l"] = output
                return output.detach()

            handle = m.local_reinit.register_forward_hook(gate)
        try:
            out = m(crop, intermediates=True)
        finally:
            if handle is not None:
                handle.remove()
        # Eq. 4 with the network's own theta_g, *not* detached: where the reinit net trains end to end (finetune)
        # the gradient then sees that moving the face frame moves the target too; the loss normalized by d is
        # invariant to the frame's scale, so no shortcut opens (detaching it made fine-tuning drift, measured)
        target_face = tg.to_frame(out["theta_g"], landmarks_loc)
        if "global" in self.plan.terms:
            terms["global"] = self.loss(out["shape_g"], target_face, m.mean_shape, interocular(target_face, scheme))
            if "theta_c" in out:  # b2: second cascade stage in its own re-cropped face
                target2 = tg.to_frame(out["theta_c"].detach(), target_face.detach())
                terms["global"] = terms["global"] + self.loss(out["shape_g2"], target2, m.mean_shape,
                                                              interocular(target2, scheme))
        if "stn_l" in self.plan.terms:
            theta_star = tg.local_theta_targets(target_face.detach(), self.templates, scheme, self.local_transform)
            terms["stn_l"] = stn_loss(live.get("theta_l", out["theta_l"]), theta_star)
        if "local" in self.plan.terms:
            # Eq. 6 on increments from the local initial shape S_l0, a fixed starting point (detached): theta_l
            # and the global shape learn from this loss only through the patch they select, never by moving
            # S_l0 (the target is mapped with the same detached theta_l, so moving S_l0 would be a shortcut)
            local_targets = tg.local_shape_targets(out["theta_l"].detach(), target_face.detach(), scheme)
            inits = [i.detach() for i in out["local_init"]]
            preds = [i0 + (s - i) for i0, s, i in zip(inits, out["local_shape"], out["local_init"])]
            terms["local"] = self.loss.parts(preds, local_targets, inits)
        return terms



def select_stage(stages: Sequence[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The stage record with the lowest held-out NME (the earliest on a tie); ``None`` without validation."""
    scored = [s for s in stages if s.get("val") and np.isfinite(s["val"].get("nme", float("nan")))]
    return min(scored, key=lambda s: s["val"]["nme"]) if scored else None

