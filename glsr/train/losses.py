"""Training losses of the paper: supervised STN (Eq. 3), shape-increment L1 (Eq. 5, Eq. 6) and the adaptive
landmark-weighted loss (Eq. 8-9).

Conventions
-----------
* Shapes are ``[B, n, 2]`` torch tensors in one normalized frame (face frame for Eq. 5, part frame for Eq. 6);
  thetas are ``[B, ..., 2, 3]`` sampling matrices (:mod:`glsr.geometry`).
* Every loss is computed per sample and then averaged over the mini-batch (``B``).
* ``||.||_1`` sums absolute values over the ``2n`` coordinates (``reduction="sum"``, the paper's form);
  ``reduction="mean"`` averages them instead (same minimiser, a gradient scale independent of ``n``).
* Adaptive weights (Eq. 9) are computed per coordinate from the *mini-batch* statistics of the current errors
  and carry no gradient (``detach``): ``w_z = exp(-sigma_z |z - mu_z|)`` with ``mu_z`` the batch mean and
  ``sigma_z`` the batch (population) standard deviation of the coordinate error ``z``. With ``w = 1`` the
  weighted loss is exactly the plain L1 loss.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from glsr.schemes import LandmarkScheme
from glsr.train.config import LOSS_KINDS, REDUCTIONS, LossConfig


def stn_loss(theta_hat: torch.Tensor, theta_star: torch.Tensor) -> torch.Tensor:
    """Eq. 3: ``||theta_hat - theta*||_2^2`` summed over all matrix entries of a sample, averaged over the batch.

    Works for ``[B, 2, 3]`` (global) and ``[B, P, 2, 3]`` (all local parts of a sample summed).
    """
    if theta_hat.shape != theta_star.shape:
        raise ValueError(f"theta shapes differ: {tuple(theta_hat.shape)} vs {tuple(theta_star.shape)}")
    diff = (theta_hat - theta_star).reshape(theta_hat.shape[0], -1)
    return (diff * diff).sum(dim=1).mean()


def adaptive_weights(z: torch.Tensor) -> torch.Tensor:
    """Eq. 9: ``w = exp(-sigma |z - mu|)`` per coordinate, ``mu``/``sigma`` over the batch (dim 0), detached.

    ``sigma = sqrt(sum_i (z_i - mu)^2 / M)`` (population standard deviation, as written in the paper).
    A batch of one has ``sigma = 0`` and so ``w = 1``.
    """
    z = z.detach()
    mu = z.mean(dim=0, keepdim=True)
    sigma = torch.sqrt(((z - mu) ** 2).mean(dim=0, keepdim=True))
    return torch.exp(-sigma * (z - mu).abs())


def interocular(shape: torch.Tensor, scheme: LandmarkScheme) -> torch.Tensor:
    """Inter-ocular distance ``d`` per sample of ``[B, N, 2]`` shapes (distance between the centroids of the
    scheme's ``interocular`` point sets), ``[B]``."""
    a, b = scheme.interocular
    return torch.linalg.norm(shape[:, list(a)].mean(dim=1) - shape[:, list(b)].mean(dim=1), dim=-1)


def weighted_l1(pred: torch.Tensor, target: torch.Tensor, init: Optional[torch.Tensor] = None,
                d: Optional[torch.Tensor] = None, weights: Optional[torch.Tensor] = None,
                reduction: str = "sum") -> torch.Tensor:
    """Eq. 5 / Eq. 6 / Eq. 8: ``||w . (dS_hat - dS*)||_1 / d`` averaged over the batch.

    ``dS_hat = pred - init`` and ``dS* = target - init`` (shape increments w.r.t. the initial shape ``init``,
    ``[n, 2]`` or ``[B, n, 2]``; ``None`` = zero). ``d``: per-sample normaliser ``[B]`` (``None`` = 1, as Eq. 6).
    ``weights``: ``[B, n, 2]`` or broadcastable (``None`` = 1, plain L1).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if init is None:
        diff = pred - target
    else:
        diff = (pred - init) - (target - init)
    if weights is not None:
        diff = weights * diff
    per = diff.abs().reshape(diff.shape[0], -1)
    per = per.sum(dim=1) if reduction == "sum" else per.mean(dim=1)
    if d is not None:
        per = per / d
    return per.mean()


class ShapeLoss:
    """Eq. 5 / Eq. 6 with plain L1 (``kind="l1"``) or the adaptive weights of Eq. 8-9 (``kind="adaptive"``).

    For the adaptive loss the coordinate errors are ``z = error_scale * (dS_hat - dS*) / d`` (the terms of the
    weighted sum; ``d = 1`` when not given) and ``w = adaptive_weights(z)``.
    """

    def __init__(self, kind: str = "l1", error_scale: float = 1.0, reduction: str = "sum"):
        if kind not in LOSS_KINDS:
            raise ValueError(f"loss kind must be one of {LOSS_KINDS}, got {kind!r}")
        self.kind = kind
        self.error_scale = float(error_scale)
        self.reduction = reduction

    @classmethod
    def from_config(cls, cfg: LossConfig) -> "ShapeLoss":
        return cls(cfg.kind, cfg.error_scale, cfg.reduction)

    def weights(self, pred: torch.Tensor, target: torch.Tensor, init: Optional[torch.Tensor] = None,
                d: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """The weights this loss applies (``None`` for plain L1)."""
        if self.kind == "l1":
            return None
        z = (pred - target) if init is None else (pred - init) - (target - init)
        if d is not None:
            z = z / d.reshape(-1, *([1] * (z.dim() - 1)))
        return adaptive_weights(self.error_scale * z)

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, init: Optional[torch.Tensor] = None,
                 d: Optional[torch.Tensor] = None) -> torch.Tensor:
        w = self.weights(pred, target, init, d)
        return weighted_l1(pred, target, init, d, w, self.reduction)

    def parts(self, preds: Sequence[torch.Tensor], targets: Sequence[torch.Tensor],
              inits: Sequence[Optional[torch.Tensor]]) -> torch.Tensor:
        """Eq. 6 over several parts: the sum of the per-part losses (one ``||.||_1`` over all parts)."""
        losses = [self(p, t, i) for p, t, i in zip(preds, targets, inits)]
        if not losses:
            raise ValueError("no parts given")
        return torch.stack(losses).sum()
