"""Reinitialization sub-networks: the global localization CNN (paper Fig. 3) and the local FC nets.

Both output a sampling matrix ``theta`` (``src_norm_from_dst_norm``, :mod:`glsr.geometry` conventions) after
:class:`ThetaAdapter` has converted the raw 6 outputs from the variant's ``theta_mode``.
Module and index names follow the authors' release so their checkpoints load after stripping ``module.``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from glsr import geometry as geo

# Authors' forward-pixel convention: translation column in units of this many pixels.
FORWARD_PIXEL_UNIT = 128.0
PRELU_INIT_SLOPE = 0.25
"""PReLU's initial negative slope (torch default), used for He initialization of the hidden layers."""


def he_init_(layers: Sequence[nn.Module]) -> None:
    """He-initialize Conv/Linear layers followed by PReLU; zero biases.

    With PyTorch's default init the seven-conv PReLU localization net (no BatchNorm) delivers features of mean
    magnitude ~0.02 and the supervised STN loss stalls at the mean predictor, even on a single repeated batch;
    He init (features ~0.4) lets it fit.
    """
    for layer in layers:
        nn.init.kaiming_normal_(layer.weight, a=PRELU_INIT_SLOPE, nonlinearity="leaky_relu")
        nn.init.zeros_(layer.bias)


def forward_pixel_right(dst_px: int, dst_scale: float, legacy: bool = False) -> np.ndarray:
    """``inv(S) ∘ P_dst``: the destination image's normalized coordinates -> the authors' ``dst_px``-sized pixel
    frame, for a destination ``dst_px * dst_scale`` px wide (``S`` = scaling by ``dst_scale``, pixel centres at
    integers). The frame a raw theta addresses is then the same whatever the destination size (up to the half-pixel
    term), so a reinit net carries over between face sizes.

    ``legacy=True``: what glsr built up to checkpoint version 1, a destination ``dst_px * int(dst_scale)`` px wide.
    Same for whole ``dst_scale`` (the paper's 256 px face over a 128 px loc image); for a 136 px face the raw
    thetas framed a face 0.94x as large, for a 160 px face 0.8x (:func:`glsr.models.checkpoint.upgrade_checkpoint`
    rewrites such weights)."""
    size = dst_px * (int(dst_scale) if legacy else dst_scale)
    return geo.compose(np.diag([1.0 / dst_scale, 1.0 / dst_scale, 1.0])[:2], geo.pixel_from_norm(size))


class ThetaAdapter(nn.Module):
    """Turn raw 6-vectors into ``[B, 2, 3]`` sampling thetas ``src_norm_from_dst_norm``.

    ``mode="sampling"``: the raw vector *is* theta. ``mode="forward_pixel"``: the raw vector is the authors'
    ``dst_px_from_src_px`` (translation column x128) between a ``src_px``-sized source and a ``dst_px``-sized
    destination; it is scaled by ``dst_scale`` (their 128->256 face doubling) and inverted in-graph.
    """

    def __init__(self, mode: str, src_px: int = 128, dst_px: int = 128, dst_scale: float = 1.0):
        super().__init__()
        self.mode = mode
        # theta = N_src ∘ inv(S ∘ A) ∘ P_dst = N_src ∘ inv(A) ∘ (inv(S) ∘ P_dst)
        right = forward_pixel_right(dst_px, dst_scale)
        self.register_buffer("left", torch.tensor(geo.norm_from_pixel(src_px), dtype=torch.float32), persistent=False)
        self.register_buffer("right", torch.tensor(right, dtype=torch.float32), persistent=False)
        self.register_buffer("t_scale", torch.tensor([1.0, 1.0, FORWARD_PIXEL_UNIT]), persistent=False)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        m = raw.reshape(-1, 2, 3)
        if self.mode == "sampling":
            return m
        src_from_dst = geo.invert_theta(m * self.t_scale)
        return geo.compose_theta(geo.compose_theta(self.left.expand_as(m), src_from_dst), self.right.expand_as(m))


class GlobalReinitNet(nn.Module):
    """Localization CNN on the ``128x128`` loc crop -> theta ``loc_norm_from_face_norm`` (paper Fig. 3).

    Hidden layers start He-initialized (:func:`he_init_`), the output layer at the identity theta.

    conv5x5/2 -> maxpool -> PReLU -> conv3x3 -> PReLU -> conv3x3 -> maxpool -> PReLU -> conv3x3 -> PReLU ->
    conv3x3 -> maxpool -> PReLU -> conv3x3 -> PReLU (no padding), flatten 256 -> FC 32 -> PReLU -> FC 6.
    """

    def __init__(self, theta_mode: str = "sampling", loc_size: int = 128, face_size: int = 256):
        super().__init__()
        self.localization = nn.Sequential(
            nn.Conv2d(3, 8, 5, 2), nn.MaxPool2d(2), nn.PReLU(),
            nn.Conv2d(8, 16, 3), nn.PReLU(), nn.Conv2d(16, 16, 3), nn.MaxPool2d(2), nn.PReLU(),
            nn.Conv2d(16, 32, 3), nn.PReLU(), nn.Conv2d(32, 32, 3), nn.MaxPool2d(2), nn.PReLU(),
            nn.Conv2d(32, 64, 3), nn.PReLU())
        with torch.no_grad():
            n_flat = int(np.prod(self.localization(torch.zeros(1, 3, loc_size, loc_size)).shape[1:]))
        self.fc_loc = nn.Sequential(nn.Linear(n_flat, 32), nn.PReLU(), nn.Linear(32, 6))
        he_init_([m for m in self.localization if isinstance(m, nn.Conv2d)] + [self.fc_loc[0]])
        nn.init.zeros_(self.fc_loc[2].weight)
        with torch.no_grad():
            self.fc_loc[2].bias.copy_(torch.tensor([1.0, 0, 0, 0, 1.0, 0]))  # identity: face = loc region
        self.adapter = ThetaAdapter(theta_mode, loc_size, loc_size, face_size / loc_size)

    def forward(self, loc: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.fc_loc(torch.flatten(self.localization(loc), 1)))


LOCAL_REINIT_HIDDEN = (128, 64)
LOCAL_REINIT_NAMES = ("left_eye_net", "right_eye_net", "nose_net", "mouth_net")


class LocalReinitNets(nn.Module):
    """Four FC nets (2N -> 128 -> PReLU -> 64 -> PReLU -> 6), one per part, fed the whole global shape.

    Input: global shape in normalized face coordinates, ``[B, N, 2]``. Output: ``[B, 4, 2, 3]`` thetas
    ``face_norm_from_part_norm``. At initialization each theta frames its part's box in ``init_thetas``; the
    hidden layers start He-initialized (:func:`he_init_`).
    """

    def __init__(self, num_points: int, init_thetas: Sequence[np.ndarray], theta_mode: str = "sampling",
                 face_size: int = 256, part_px: int = 128):
        super().__init__()
        h1, h2 = LOCAL_REINIT_HIDDEN
        for name, theta in zip(LOCAL_REINIT_NAMES, init_thetas):
            net = nn.Sequential(nn.Linear(2 * num_points, h1), nn.PReLU(), nn.Linear(h1, h2), nn.PReLU(),
                                nn.Linear(h2, 6))
            he_init_([net[0], net[2]])
            nn.init.zeros_(net[4].weight)
            with torch.no_grad():
                net[4].bias.copy_(torch.tensor(np.asarray(theta, dtype=np.float32).reshape(-1)))
            setattr(self, name, net)
        self.adapter = ThetaAdapter(theta_mode, face_size, part_px, 1.0)

    def forward(self, shape: torch.Tensor) -> torch.Tensor:
        flat = torch.flatten(shape, 1)
        raw = torch.stack([getattr(self, n)(flat) for n in LOCAL_REINIT_NAMES], dim=1)  # [B, 4, 6]
        return self.adapter(raw).reshape(raw.shape[0], len(LOCAL_REINIT_NAMES), 2, 3)


def part_box_theta(points: np.ndarray, margin: float) -> np.ndarray:
    """Square sampling theta framing ``points`` (normalized coords) with half-size = margin x half-extent."""
    lo, hi = points.min(0), points.max(0)
    c = (lo + hi) / 2
    h = max(float((hi - lo).max()) / 2 * margin, 1e-2)
    return np.array([[h, 0.0, c[0]], [0.0, h, c[1]]])
