"""Local regression sub-network: six residual blocks + two FC layers on a ``64x64`` part patch (Section 4.1)."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from glsr.models.backbones import InvertedResidual, conv_bn, strided_size

# (out channels, stride) of the six residual (inverted-bottleneck, expansion LOCAL_EXPANSION) blocks.
LOCAL_BLOCKS: Tuple[Tuple[int, int], ...] = ((16, 2), (16, 1), (24, 2), (24, 1), (32, 2), (32, 1))
LOCAL_STEM = 8
LOCAL_EXPANSION = 2
LOCAL_FC = 512


class LocalRegressNet(nn.Module):
    """Patch ``[B, 3, P, P]`` -> shape increment ``[B, n_part, 2]`` in normalized part coordinates.

    The last FC starts at zero, so an untrained local stage returns its initial shape unchanged.
    """

    def __init__(self, num_points: int, patch_size: int = 64):
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, LOCAL_STEM, 3, 2)]
        inp, size = LOCAL_STEM, strided_size(patch_size, 2)
        for c, s in LOCAL_BLOCKS:
            layers.append(InvertedResidual(inp, c, s, LOCAL_EXPANSION))
            inp, size = c, strided_size(size, s)
        self.features = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Linear(inp * size * size, LOCAL_FC), nn.PReLU(), nn.Linear(LOCAL_FC, 2 * num_points))
        nn.init.zeros_(self.fc[2].weight)
        nn.init.zeros_(self.fc[2].bias)
        self.num_points = num_points

    def forward(self, patch: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(patch), 1)).reshape(-1, self.num_points, 2)
