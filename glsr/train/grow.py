"""Grow a wider regressor out of a trained narrower one so that it *starts as the narrower one's function*.

``--init small.pt --variant medium`` widens ``small``'s trunk into MobileNetV2 (:mod:`glsr.models.widen`):
the rows whose layout corresponds compute ``small``'s features exactly, but ``medium``'s last row, last 1x1
convolution and head have no counterpart (``small`` ends with a stride-2 64-channel row, ``medium`` with a
stride-1 320-channel one, a ``C x 2s x 2s`` map where ``small`` has ``C x s x s``). Trained from there, the global
stage has to relearn the whole shape regression through random layers, and did worse than ``small`` itself.

Growing closes the gap before the first training step:

1. ``passes`` augmented passes over the training faces record, per sample, the input of the layers the widening
   did not carry (the *tail*), eval mode, and the source's final feature map;
2. the tail is fitted (Adam, one-cycle) so that its output, average-pooled ``f x f`` (``f`` = the ratio of the
   map sizes), reproduces the source's map, and the head reading it reproduces the source's head outputs; its
   BatchNorm statistics are then re-estimated on those inputs;
3. the head is the source's, its first layer spread over the finer grid
   (:meth:`glsr.models.backbones.MobileNetV2Regressor.adapt_input_weight`), which the ``--init`` loading
   already did.

The widened trunk reproduces the source only with BatchNorm's running statistics: in train mode its new channels,
random features, are normalized batch by batch (measured on 32 300-W training crops: relative difference 10.9
between train- and eval-mode features after the first rows; ``small``'s own trunk 0.05), so training from a grown
start uses ``--freeze-batchnorm``. ``normalize_new`` (``--grow-normalize``) removes that difference before the fit:
the new channels' running statistics, left at 0 and 1 by the widening, are estimated on an augmented pass
(:func:`estimate_new_statistics`); the carried channels are fed by no new channel, so they still compute the
source's features exactly, and the tail is then fitted on normalized new channels.

One face in ten (by face index) is held out of the fit; the report gives its errors before and after. Shape
outputs are in the regressor's normalized face units (offsets from the mean shape).
"""
from __future__ import annotations

import time
from typing import Any, Dict, Iterable, Iterator, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from glsr.models.backbones import MobileNetV2Regressor
from glsr.models.widen import block_index
from glsr.train.config import GrowConfig

GROW_EPOCH_KEY = 2_000_000_000
"""Augmentation epoch keys of the growing passes (``GROW_EPOCH_KEY + pass``): apart from every training stage's
keys (stage ``k`` uses ``k * 1_000_000 + epoch``)."""
NORMALIZE_EPOCH_KEY = GROW_EPOCH_KEY - 1
"""Augmentation epoch key of the pass that estimates the new channels' statistics (``--grow-normalize``)."""
HOLDOUT_EVERY = 10
"""Faces whose index is a multiple of this are held out of the fit (reported, not fitted)."""
COLLECT_BATCH = 64


def tail_start(regress: MobileNetV2Regressor, carried_rows: int) -> int:
    """``features`` index of the first layer the widening did not carry (the first block of row
    ``carried_rows``; the last 1x1 convolution when every row was carried)."""
    rows = block_index(regress.stages)
    return rows[carried_rows][0] if carried_rows < len(rows) else len(regress.features) - 1


def pool_factor(target: MobileNetV2Regressor, source: MobileNetV2Regressor) -> int:
    """How many target cells per source cell, per side; refuses maps that do not relate that way."""
    (c, s, _), (cs, ss, _) = target.feature_shape, source.feature_shape
    if c != cs or s % ss:
        raise ValueError(f"cannot grow a regressor with a {c}x{s}x{s} feature map from one with {cs}x{ss}x{ss}: "
                         "the channels must agree and the map size be a multiple (e.g. --variant medium from a "
                         "small checkpoint)")
    return s // ss


def _batchnorms(module: nn.Module) -> List[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def recalibrate_batchnorm(module: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Replace the running statistics of every BatchNorm in ``module`` by their average over ``batches`` (batch
    statistics of ``module(batch)`` in train mode, cumulative average); leaves ``module`` in eval mode."""
    norms = _batchnorms(module)
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    module.train()
    with torch.no_grad():
        for batch in batches:
            module(batch)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    module.eval()


def new_channels(norm: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    """Channels of ``norm`` whose running statistics were never estimated: exactly PyTorch's initial mean 0 and
    variance 1 (what :mod:`glsr.models.widen` leaves on the channels it did not carry; trained or bridged
    channels never hold both exactly)."""
    return (norm.running_mean == 0) & (norm.running_var == 1)


def estimate_new_statistics(trunk: nn.Module, batches: Iterable[torch.Tensor]) -> Dict[str, int]:
    """Give the new channels of every BatchNorm in ``trunk`` (:func:`new_channels`) the cumulative average of
    their train-mode batch statistics over ``batches``; every other channel keeps its statistics. Eval mode then
    normalizes the new channels as train mode does, and the carried channels, which no new channel feeds (the
    widening zeroes those weights), compute exactly what they computed before. Leaves ``trunk`` in eval mode;
    returns ``{"layers": ..., "channels": ...}`` counts of what was estimated."""
    norms = _batchnorms(trunk)
    masks = [new_channels(m) for m in norms]
    kept = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    recalibrate_batchnorm(trunk, batches)
    for m, new, (mean, var, tracked) in zip(norms, masks, kept):
        m.running_mean.copy_(torch.where(new, m.running_mean, mean))
        m.running_var.copy_(torch.where(new, m.running_var, var))
        m.num_batches_tracked.copy_(tracked)
    return {"layers": sum(int(k.any()) for k in masks), "channels": sum(int(k.sum()) for k in masks)}


def train_eval_difference(trunk: nn.Module, batch: torch.Tensor) -> float:
    """Relative difference ``|train(x) - eval(x)| / |eval(x)|`` (L2 over the batch) of ``trunk``'s output: how far
    BatchNorm's batch statistics move the features from the running ones. Running statistics are not updated."""
    norms = _batchnorms(trunk)
    saved = [m.momentum for m in norms]
    with torch.no_grad():
        trunk.eval()
        ref = trunk(batch)
        for m in norms:
            m.momentum = 0.0
        trunk.train()
        out = trunk(batch)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    trunk.eval()
    return float((out - ref).norm() / ref.norm().clamp_min(1e-12))


def _crop_batches(data: Any, key: int, count: int) -> Iterator[Tuple[int, torch.Tensor]]:
    """``(first sample index, crops)`` over the first ``count`` samples of ``data`` under augmentation epoch key
    ``key``, in batches of :data:`COLLECT_BATCH`."""
    count = min(count, len(data))
    for i in range(0, count, COLLECT_BATCH):
        yield i, torch.stack([data[(key, j)]["crop"] for j in range(i, min(i + COLLECT_BATCH, count))])


def _faces(model: nn.Module, data: Any, key: int, count: int) -> Iterable[torch.Tensor]:
    """Global-reinit face images of the first ``count`` samples of ``data`` under augmentation key ``key``, in
    batches of :data:`COLLECT_BATCH`."""
    with torch.no_grad():
        for _, crop in _crop_batches(data, key, count):
            yield model.global_face(crop)[0]


def collect(model: nn.Module, source: nn.Module, data: Any, cut: int, passes: int
            ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(tail_inputs, source_maps, face_index)`` over ``passes`` augmented passes of ``data``: the target
    trunk's output before ``features[cut]`` and the source regressor's final feature map, eval mode."""
    trunk = model.regress.features[:cut]
    inputs, maps, faces = [], [], []
    face_of = getattr(data, "face_of", lambda j: j)
    with torch.no_grad():
        for p in range(passes):
            for i, crop in _crop_batches(data, GROW_EPOCH_KEY + p, len(data)):
                inputs.append(trunk(model.global_face(crop)[0]))
                maps.append(source.regress.features(source.global_face(crop)[0]))
                faces.append(torch.tensor([face_of(j) for j in range(i, i + len(crop))]))
    return torch.cat(inputs), torch.cat(maps), torch.cat(faces)


def fit_tail(tail: nn.Module, head: nn.Module, source_head: nn.Module, factor: int, inputs: torch.Tensor,
             maps: torch.Tensor, held_out: torch.Tensor, cfg: GrowConfig, seed: int) -> Dict[str, float]:
    """Fit ``tail`` (trainable, train mode) so that ``avg_pool(tail(x), factor)`` matches the source maps and
    ``head`` (frozen) on ``tail(x)`` matches ``source_head`` on the maps; then re-estimate the tail's BatchNorm
    statistics on the fitted inputs (eval mode then computes what the fit trained). Returns held-out errors before and after: ``output_l1``
    (mean absolute head-output difference, normalized face units) and ``feature_rel_mse`` (feature MSE over the
    maps' mean square)."""
    for p in list(head.parameters()) + list(source_head.parameters()):
        p.requires_grad_(False)
    head.eval()
    source_head.eval()
    with torch.no_grad():
        targets = source_head(torch.flatten(maps, 1))
    scale = float((maps ** 2).mean().clamp_min(1e-12))
    fit, hold = ~held_out, held_out

    def losses(x: torch.Tensor, m: torch.Tensor, t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        y = tail(x)
        out = (head(torch.flatten(y, 1)) - t).abs().mean()
        feat = F.mse_loss(F.avg_pool2d(y, factor) if factor > 1 else y, m) / scale
        return out, feat

    def held_out_errors() -> Dict[str, float]:
        if not bool(hold.any()):
            return {"output_l1": float("nan"), "feature_rel_mse": float("nan")}
        tail.eval()
        with torch.no_grad():
            out, feat = losses(inputs[hold], maps[hold], targets[hold])
        return {"output_l1": float(out), "feature_rel_mse": float(feat)}

    before = held_out_errors()
    x, m, t = inputs[fit], maps[fit], targets[fit]
    batch = min(cfg.batch, len(x))
    per_epoch = len(x) // batch
    params = list(tail.parameters())
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    total = max(cfg.epochs * per_epoch, 1)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total, pct_start=0.05)
    generator = torch.Generator().manual_seed(seed)
    tail.train()
    for _epoch in range(cfg.epochs):
        order = torch.randperm(len(x), generator=generator)
        for j in range(per_epoch):
            idx = order[j * batch:(j + 1) * batch]
            out, feat = losses(x[idx], m[idx], t[idx])
            loss = cfg.output_weight * out + feat
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    # the running statistics lag the fit (momentum): make them the fitted tail's statistics on its inputs
    recalibrate_batchnorm(tail, (x[i:i + batch] for i in range(0, len(x) - batch + 1, batch)))
    after = held_out_errors()
    return {**{f"{k}_before": v for k, v in before.items()}, **{f"{k}_after": v for k, v in after.items()}}


def grow(model: nn.Module, source: nn.Module, data: Any, carried_rows: int, cfg: GrowConfig, seed: int
         ) -> Dict[str, Any]:
    """Grow ``model``'s global regressor (widened from ``source``'s, ``carried_rows`` rows carried) into
    ``source``'s function on ``data`` (an :class:`glsr.train.augment.AugmentedFaces`); ``model``'s head must
    already be the source's, spread (the ``--init`` loading does it). Float32, in place; returns a report."""
    regress, src = model.regress, source.regress
    if not isinstance(regress, MobileNetV2Regressor) or not isinstance(src, MobileNetV2Regressor):
        raise ValueError("growing needs MobileNetV2-style regressors on both sides (e.g. --variant medium with "
                         "--init a small checkpoint)")
    factor = pool_factor(regress, src)
    if not all(torch.equal(a, b) for a, b in zip(regress.pts_net[-1].parameters(), src.pts_net[-1].parameters())):
        raise ValueError("the regressor head is not the source's: grow after the --init loading carried it over")
    start = time.perf_counter()
    cut = tail_start(regress, carried_rows)
    model.eval()
    source.eval()
    normalized: Dict[str, Any] = {}
    if cfg.normalize_new:
        trunk = regress.features[:cut]
        probe = next(iter(_faces(model, data, NORMALIZE_EPOCH_KEY, COLLECT_BATCH)))
        before = train_eval_difference(trunk, probe)
        # a pass of augmented samples apart from the fit's; the probe batch is scored again after
        normalized = estimate_new_statistics(trunk, _faces(model, data, NORMALIZE_EPOCH_KEY, len(data)))
        normalized = {**normalized, "train_eval_rel_diff_before": round(before, 4),
                      "train_eval_rel_diff_after": round(train_eval_difference(trunk, probe), 4)}
    inputs, maps, faces = collect(model, source, data, cut, cfg.passes)
    held_out = faces % HOLDOUT_EVERY == 0
    errors = fit_tail(regress.features[cut:], regress.pts_net, src.pts_net, factor, inputs, maps, held_out, cfg,
                      seed)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return {"tail_from": cut, "pool": factor, "samples": int(len(inputs)), "held_out": int(held_out.sum()),
            **errors, **({"normalized": normalized} if normalized else {}),
            "seconds": round(time.perf_counter() - start, 1)}
