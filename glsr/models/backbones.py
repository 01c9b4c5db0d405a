"""Regression backbones: Small MobileNetV2 (paper Table 2), MobileNetV2 (medium), ResNet-50 (large).

Each backbone maps a normalized face ``[B, 3, 256, 256]`` to a shape increment ``[B, 2N]`` (x/y interleaved).
Layer layouts follow the authors' released Small MobileNetV2 (``features`` / ``pts_net``) so their checkpoints
load by renaming the ``module.`` prefix only.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

# (expansion t, channels c, repeats q, stride s) per row of Table 2.
SMALL_MNV2_STAGES: Tuple[Tuple[int, int, int, int], ...] = (
    (1, 8, 1, 1), (6, 12, 2, 2), (6, 16, 2, 2), (6, 24, 3, 2), (6, 32, 3, 2), (6, 48, 3, 2), (6, 64, 2, 2),
    (6, 80, 1, 1),
)
SMALL_MNV2_STEM = 8
SMALL_MNV2_LAST = 64     # final 1x1 conv channels
SMALL_MNV2_FC = 256

# Standard MobileNetV2 widths (Sandler et al., Table 2). The paper (Section 4.2.3) "resets the stride of the
# sixth bottleneck to 2": the sixth row of MobileNetV2's table (stem conv first) is the 96-channel bottleneck,
# normally stride 1. Measured: 0.245 GMAC at 256 px (paper: 0.27 G); striding the 320-channel row instead
# would give 0.35 GMAC.
MNV2_STAGES: Tuple[Tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 2), (6, 160, 3, 2), (6, 320, 1, 1),
)
MNV2_STEM = 32
MNV2_LAST = 64
MNV2_FC = 256


def strided_size(size: int, stride: int) -> int:
    """Output side of a 3x3, padding-1 convolution of ``stride`` over ``size`` px: ``ceil(size / stride)``."""
    return -(-size // stride)


class SamePadConv2d(nn.Conv2d):
    """A convolution padded as TensorFlow's "SAME" for a fixed input side ``size``: ``max((ceil(size / s) - 1) s
    + k - size, 0)`` pixels per axis, the odd one at the bottom / right (PyTorch pads ``k // 2`` on every side,
    one pixel off for a stride-2 conv over an even side). Same parameters as ``nn.Conv2d``."""

    def __init__(self, inp: int, oup: int, k: int, stride: int, size: int, groups: int = 1):
        super().__init__(inp, oup, k, stride, 0, groups=groups, bias=False)
        total = max((strided_size(size, stride) - 1) * stride + k - size, 0)
        self.same_pad = (total // 2, total - total // 2, total // 2, total - total // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.same_pad) if any(self.same_pad) else x)


def conv(inp: int, oup: int, k: int, stride: int, groups: int = 1, same_for: Optional[int] = None) -> nn.Conv2d:
    """A bias-free ``k x k`` convolution: padded ``k // 2``, or TensorFlow's "SAME" for an input side ``same_for``."""
    if same_for is not None and stride > 1:
        return SamePadConv2d(inp, oup, k, stride, same_for, groups)
    return nn.Conv2d(inp, oup, k, stride, k // 2, groups=groups, bias=False)


def activation(relu6: bool = False) -> nn.Module:
    return nn.ReLU6(inplace=True) if relu6 else nn.ReLU(inplace=True)


def conv_bn(inp: int, oup: int, k: int, stride: int, act: bool = True, groups: int = 1, same_for: Optional[int] = None,
            relu6: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [conv(inp, oup, k, stride, groups, same_for), nn.BatchNorm2d(oup)]
    if act:
        layers.append(activation(relu6))
    return nn.Sequential(*layers)


def has_skip(inp: int, oup: int, stride: int) -> bool:
    """Whether a MobileNetV2 bottleneck adds its input to its output: stride 1 and as many channels out as in."""
    return stride == 1 and inp == oup


class InvertedResidual(nn.Module):
    """MobileNetV2 bottleneck; ``conv`` indices match the authors' release (BN + ReLU, linear projection).
    ``same_for`` (the input side) pads the depthwise conv as TensorFlow does; ``relu6`` clips at 6 as it does."""

    def __init__(self, inp: int, oup: int, stride: int, expand: int, same_for: Optional[int] = None,
                 relu6: bool = False):
        super().__init__()
        hidden = inp * expand
        self.use_res = has_skip(inp, oup, stride)
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(inp, hidden, 1, 1, 0, bias=False), nn.BatchNorm2d(hidden), activation(relu6)]
        layers += [conv(hidden, hidden, 3, stride, hidden, same_for), nn.BatchNorm2d(hidden),
                   activation(relu6), nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


def fc_head(in_features: int, hidden: int, out: int) -> nn.Sequential:
    """FC -> PReLU -> FC -> PReLU -> FC (the paper's pooling-free regression head)."""
    return nn.Sequential(nn.Linear(in_features, hidden), nn.PReLU(), nn.Linear(hidden, hidden), nn.PReLU(),
                         nn.Linear(hidden, out))


class MobileNetV2Regressor(nn.Module):
    """MobileNetV2-style regressor with a flatten + FC head instead of average pooling.

    ``tf_layers``: TensorFlow's arithmetic (strided convs padded "SAME", ReLU6), that of the ImageNet-trained
    MobileNetV2 (:mod:`glsr.models.mobilenetv2_import`); the parameters are the same either way."""

    def __init__(self, num_outputs: int, stages: Sequence[Tuple[int, int, int, int]], stem: int, last: int,
                 fc: int, input_size: int, tf_layers: bool = False):
        super().__init__()
        self.stages = tuple(tuple(row) for row in stages)
        """Rows ``(t, c, q, s)`` of the bottleneck table; ``features[0]`` is the stem, then the rows' blocks."""
        self.stem = stem
        layers: list[nn.Module] = [conv_bn(3, stem, 3, 2, same_for=input_size if tf_layers else None,
                                           relu6=tf_layers)]
        inp, size = stem, strided_size(input_size, 2)
        for t, c, q, s in stages:
            for i in range(q):
                layers.append(InvertedResidual(inp, c, s if i == 0 else 1, t, size if tf_layers else None, tf_layers))
                inp = c
                size = strided_size(size, s if i == 0 else 1)
        layers.append(conv_bn(inp, last, 1, 1, relu6=tf_layers))
        self.features = nn.Sequential(*layers)
        self.feature_shape = (last, size, size)
        """Channels, height, width of the feature map the head flattens (C-major, then rows, then columns)."""
        self.pts_net = fc_head(last * size * size, fc, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pts_net(torch.flatten(self.features(x), 1))

    def adapt_input_weight(self, weight: torch.Tensor) -> Optional[torch.Tensor]:
        """The first head layer's weight ``[out, C*S*S]`` of a regressor with an ``S x S`` feature map (same
        ``C``), re-laid out for this one's ``C x s x s`` map when one size is a multiple ``f`` of the other.

        * ``S = f * s`` (trained at a larger input, a faster variant): the ``f x f`` source cells covering a
          target cell are summed, so a source map that repeats each target cell ``f x f`` times gives the same
          output;
        * ``s = f * S`` (a regressor with one stride fewer, ``small`` into ``medium``): each source cell's
          weights are spread over the ``f x f`` target cells it covers, divided by ``f * f``, so the head reads
          this map average-pooled ``f x f`` as the source read its own.

        ``None`` when the shapes do not relate either way."""
        c, s, _ = self.feature_shape
        out, fan_in = weight.shape
        src = int(round((fan_in / c) ** 0.5)) if fan_in % c == 0 else 0
        if src * src * c != fan_in or src == s or not src:
            return None
        if src > s and src % s == 0:
            f = src // s
            return weight.reshape(out, c, s, f, s, f).sum(dim=(3, 5)).reshape(out, c * s * s)
        if src < s and s % src == 0:
            f = s // src
            spread = weight.reshape(out, c, src, 1, src, 1).expand(out, c, src, f, src, f)
            return spread.reshape(out, c * s * s) / (f * f)
        return None


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inp: int, planes: int, stride: int):
        super().__init__()
        out = planes * self.expansion
        self.body = nn.Sequential(conv_bn(inp, planes, 1, 1), conv_bn(planes, planes, 3, stride),
                                  conv_bn(planes, out, 1, 1, act=False))
        self.down = None if stride == 1 and inp == out else conv_bn(inp, out, 1, stride, act=False)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + (x if self.down is None else self.down(x)))


RESNET50_LAYERS = (3, 4, 6, 3)
RESNET50_FC = 256


class ResNet50Regressor(nn.Module):
    """ResNet-50 (torchvision layout) with global average pooling and a two-layer FC head."""

    def __init__(self, num_outputs: int):
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)]
        inp = 64
        for i, (n, planes) in enumerate(zip(RESNET50_LAYERS, (64, 128, 256, 512))):
            for j in range(n):
                layers.append(Bottleneck(inp, planes, 2 if (j == 0 and i > 0) else 1))
                inp = planes * Bottleneck.expansion
        self.features = nn.Sequential(*layers)
        self.pts_net = nn.Sequential(nn.Linear(inp, RESNET50_FC), nn.PReLU(), nn.Linear(RESNET50_FC, num_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pts_net(torch.mean(self.features(x), dim=(2, 3)))


MNV2_LAYOUTS = {"small_mnv2": (SMALL_MNV2_STAGES, SMALL_MNV2_STEM), "mnv2": (MNV2_STAGES, MNV2_STEM)}
"""Bottleneck table and stem width of the MobileNetV2-style backbones, by backbone name."""


def build_backbone(name: str, num_outputs: int, input_size: int, tf_layers: bool = False) -> nn.Module:
    """Backbone by name: ``small_mnv2`` | ``mnv2`` | ``resnet50`` (``tf_layers``: see ``MobileNetV2Regressor``)."""
    if name == "small_mnv2":
        return MobileNetV2Regressor(num_outputs, *MNV2_LAYOUTS[name], SMALL_MNV2_LAST, SMALL_MNV2_FC, input_size,
                                    tf_layers)
    if name == "mnv2":
        return MobileNetV2Regressor(num_outputs, *MNV2_LAYOUTS[name], MNV2_LAST, MNV2_FC, input_size, tf_layers)
    if name == "resnet50":
        return ResNet50Regressor(num_outputs)
    raise ValueError(f"unknown backbone {name!r}; choose small_mnv2, mnv2 or resnet50")
