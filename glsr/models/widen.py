"""Start a wider, deeper MobileNetV2 regressor from a trained narrower one (Net2Net-style widening).

``medium``'s MobileNetV2 has no released weights to start from, but its bottleneck table is a wider and deeper
copy of ``small``'s for the first six rows (same expansions and strides, more channels, more repeats). A trained
``small`` checkpoint therefore gives ``medium`` a trained trunk:

* a source tensor goes into the first channels of the wider tensor; a dense (1x1 or stem) convolution's weights from
  the *new* input channels to the *old* output channels are zero, so the old channels compute exactly what they
  computed in the source network while the new channels start from the target's own initialization and learn
  (their outgoing weights get gradients from the first step);
* a row's extra repeats are stride-1 residual blocks whose last BatchNorm has zero scale and shift: identities
  that learn;
* rows after the first whose layout does not correspond (``small``'s stride-2 64-channel row against
  ``medium``'s 320-channel row), the last 1x1 convolution and the head keep the target's initialization.

* ``small``'s first block has a skip connection (8 -> 8 channels) that ``medium``'s first block (32 -> 16) lacks:
  it is rebuilt through spare channels (:func:`_bridge_first_skip`); any other such block would lose it, and the
  report names it.

In eval mode the carried-over rows then compute the source's features exactly on their first channels; in train
mode closely (BatchNorm batch statistics). Tests: ``tests/test_widen.py``.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch

from glsr.models.backbones import MobileNetV2Regressor, has_skip

Row = Tuple[int, int, int, int]


def block_index(stages: Sequence[Row]) -> List[List[int]]:
    """``features`` index of every block, per row (``features[0]`` is the stem)."""
    out, k = [], 1
    for _t, _c, q, _s in stages:
        out.append(list(range(k, k + q)))
        k += q
    return out


def embed(dst: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """``src`` in the leading corner of a copy of ``dst``; for a dense weight (``[out, in, ...]`` with ``in > 1``
    in the source) the entries from new inputs to old outputs are zeroed, so old outputs are unchanged."""
    if src.dim() != dst.dim() or any(a > b for a, b in zip(src.shape, dst.shape)):
        raise ValueError(f"cannot embed a {tuple(src.shape)} tensor in a {tuple(dst.shape)} one")
    if src.dim() == 0:
        return src.detach().clone()
    out = dst.detach().clone()
    out[tuple(slice(0, n) for n in src.shape)] = src
    if src.dim() >= 2 and src.shape[1] > 1 and dst.shape[1] > src.shape[1]:
        out[: src.shape[0], src.shape[1]:] = 0
    return out


def widen_features(src: Dict[str, torch.Tensor], src_stages: Sequence[Row], src_stem: int, dst: MobileNetV2Regressor,
                   src_prefix: str = "features.", dst_prefix: str = "features.",
                   ) -> Tuple[Dict[str, torch.Tensor], Dict[str, object]]:
    """State-dict entries for ``dst.features`` (named ``dst_prefix``...) taken from a narrower regressor's state
    ``src`` (names ``src_prefix``...) with bottleneck table ``src_stages`` and stem width ``src_stem``.

    Returns ``(tensors, report)``; ``report`` holds ``rows`` (leading rows carried over), ``copied`` and
    ``identity`` block counts, ``bridged_residual`` (target blocks whose missing source skip connection was
    rebuilt) and ``dropped_residual`` (target blocks that lost one)."""
    own = {dst_prefix + k[len("features."):]: v for k, v in dst.state_dict().items() if k.startswith("features.")}
    rows = 0
    for (ts, cs, qs, ss), (td, cd, qd, sd) in zip(src_stages, dst.stages):
        if ts != td or ss != sd or cd < cs or qd < qs:   # rows correspond while the target row holds the source's
            break
        rows += 1
    out: Dict[str, torch.Tensor] = {}
    if rows == 0 or dst.stem < src_stem:   # not a wider copy (e.g. medium into small): nothing to carry
        return out, {"rows": 0, "copied": 0, "identity": 0, "bridged_residual": [], "dropped_residual": []}

    def carry(src_i: int, dst_i: int) -> None:
        head = f"{src_prefix}{src_i}."
        for name, value in src.items():
            if name.startswith(head):
                target = f"{dst_prefix}{dst_i}." + name[len(head):]
                if target not in own:
                    raise ValueError(f"{name} has no counterpart {target} in the wider network")
                out[target] = embed(own[target], value)

    carry(0, 0)  # the stem
    src_blocks, dst_blocks = block_index(src_stages), block_index(dst.stages)
    copied = identity = 0
    dropped: List[int] = []
    for r in range(rows):
        for j, dst_i in enumerate(dst_blocks[r]):
            if j < len(src_blocks[r]):
                carry(src_blocks[r][j], dst_i)
                copied += 1
                if dst.features[dst_i].use_res is False and _has_residual(src_stages, src_stem, r, j):
                    dropped.append(dst_i)
            else:  # an extra repeat: stride 1, same width in and out, so a residual block; make it the identity
                block = dst.features[dst_i]
                last_bn = f"{dst_prefix}{dst_i}.conv.{len(block.conv) - 1}."
                for field in ("weight", "bias"):
                    out[last_bn + field] = torch.zeros_like(own[last_bn + field])
                identity += 1
    bridged: List[int] = []
    expand = f"{src_prefix}{src_blocks[1][0]}.conv.0.weight" if rows >= 2 else ""
    if dropped[:1] == [1] and expand in src and _bridge_first_skip(out, src_stem, src[expand].shape[0], dst,
                                                                  dst_prefix):
        bridged.append(dropped.pop(0))
    return out, {"rows": rows, "copied": copied, "identity": identity, "bridged_residual": bridged,
                 "dropped_residual": dropped}


def _rectified_gaussian(mean: torch.Tensor, std: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of ``relu(z)`` for ``z ~ N(mean, std^2)``."""
    normal = torch.distributions.Normal(0.0, 1.0)
    a = mean / std
    cdf, pdf = normal.cdf(a), normal.log_prob(a).exp()
    m = mean * cdf + std * pdf
    square = (mean ** 2 + std ** 2) * cdf + mean * std * pdf
    return m, (square - m ** 2).clamp_min(1e-4).sqrt()


def _bridge_first_skip(out: Dict[str, torch.Tensor], src_stem: int, old_outputs: int, dst: MobileNetV2Regressor,
                       prefix: str) -> bool:
    """Rebuild the source's first skip connection ``y = x + f(x)`` (stem -> first block) in a target whose first
    block has none, through spare channels: the stem's outputs are duplicated into channels ``C..2C``
    (``C = src_stem``), the first block passes them on standardized (depthwise identity, BatchNorm with the
    stem output's statistics, a ReLU they stay above, a selecting projection), and the next block's expansion
    (its first ``old_outputs`` outputs, the source's) reads them with the source's weights rescaled, its
    BatchNorm mean shifted to match. Exact in eval mode; in train mode the batch statistics stand in for the
    estimated ones (the mean and std of the stem output ``relu(z)`` are estimated from its BatchNorm,
    ``z ~ N(bias, weight^2)``), so there it is close, not exact. Returns False (nothing changed) when the layout
    does not allow it: a first block with an expansion, or too few spare channels."""
    c = src_stem
    first = dst.features[1]
    if (dst.stages[0][0] != 1 or dst.stem < 2 * c or dst.stages[0][1] < 2 * c or dst.stages[1][0] == 1
            or len(first.conv) != 5):
        return False
    old, new = slice(0, c), slice(c, 2 * c)
    stem_w, stem_bn = f"{prefix}0.0.weight", f"{prefix}0.1."
    dw, bn1, proj, bn2 = (f"{prefix}1.conv.{i}." for i in (0, 1, 3, 4))
    expand, bn3 = f"{prefix}2.conv.0.weight", f"{prefix}2.conv.1."
    # the stem computes x twice: channels 0..C-1 and C..2C-1
    out[stem_w][new] = out[stem_w][old]
    for field in ("weight", "bias", "running_mean", "running_var"):
        out[stem_bn + field][new] = out[stem_bn + field][old]
    m, s = _rectified_gaussian(out[stem_bn + "bias"][old], out[stem_bn + "weight"][old].abs().clamp_min(1e-3))
    offset = m / s + 1.0   # (x - m) / s + offset >= 1 for every x >= 0: the ReLU passes it unchanged
    eps1 = first.conv[1].eps
    out[dw + "weight"][new] = 0.0
    out[dw + "weight"][new, 0, 1, 1] = 1.0
    out[bn1 + "weight"][new], out[bn1 + "bias"][new] = 1.0, offset
    out[bn1 + "running_mean"][new], out[bn1 + "running_var"][new] = m, s ** 2 - eps1
    out[proj + "weight"][new] = 0.0
    out[proj + "weight"][new, new] = torch.eye(c).reshape(c, c, 1, 1)
    eps2 = first.conv[4].eps
    out[bn2 + "weight"][new], out[bn2 + "bias"][new] = 1.0, 0.0
    out[bn2 + "running_mean"][new], out[bn2 + "running_var"][new] = offset, 1.0 - eps2
    # the next block reads (x - m) / s where the source read x (its old outputs only; new ones keep their init)
    k = old_outputs
    scale = s.reshape(1, c, 1, 1)
    out[expand][:k, new] = out[expand][:k, old] * scale
    out[bn3 + "running_mean"][:k] -= (out[expand][:k, old, 0, 0] * m).sum(dim=1)
    return True


def _has_residual(stages: Sequence[Row], stem: int, r: int, j: int) -> bool:
    """Whether block ``j`` of row ``r`` of a table has a skip connection (stride 1, same width in and out)."""
    _t, c, _q, s = stages[r]
    inp = c if j else (stages[r - 1][1] if r else stem)
    return has_skip(inp, c, s if j == 0 else 1)
