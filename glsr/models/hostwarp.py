"""Host-warp graphs: a G&LSR_ω variant's networks with no resampling of the input crop inside the graph.

In host-warp mode the host resamples the loc image and the normalized face straight from the photo (one bilinear
``cv2.warpAffine`` each, :mod:`glsr.runtime.hostwarp`) and runs two graphs:

* ``reinit``: loc ``[B, 3, L, L]`` -> ``theta_g`` ``[B, 2, 3]``, the sampling matrix loc_norm_from_face_norm;
* ``face``: face ``[B, 3, F, F]`` -> ``shape_face`` ``[B, N, 2]`` in normalized face coordinates (the global
  regressor and the local stage; the part patches are still resampled inside this graph, from the face).

One exported file holds both as disconnected parts with their own inputs and outputs (:data:`HOST_WARP_GRAPHS`);
the artifact's metadata field ``host_warp`` (:func:`host_warp_spec`) tells the runtime the sizes and the fixed
loc frame. The single-graph export (crop in, landmarks out) stays the default; this mode trades a
mobile-friendly single file for the host's faster warps (``glsr bench``).
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import nn

from glsr import geometry as geo

HOST_WARP_GRAPHS: Dict[str, Tuple[str, str]] = {"reinit": ("loc", "theta_g"), "face": ("face", "shape_face")}
"""Graph name -> (input name, output name) in a host-warp artifact."""


def check_host_warp(net) -> None:
    """``ValueError`` unless ``net`` (a :class:`glsr.models.GLSRNet`) can run in host-warp mode."""
    cfg = net.cfg
    if net.reinit is None:
        raise ValueError(f"variant {cfg.name} has no global reinit STN, so it has no loc -> face warp for the host "
                         "to do; export it without --host-warp")
    if net.regress2 is not None:
        raise ValueError(f"variant {cfg.name} is a cascade (its second stage resamples the crop in the graph); "
                         "export it without --host-warp")


def host_warp_spec(net) -> Dict[str, object]:
    """The ``host_warp`` metadata of ``net``'s host-warp artifact: ``loc_size``, ``face_size``,
    ``loc_from_crop`` (pixel affine from the ``input_size`` crop to the loc image, fixed by the variant) and the
    graphs' input / output names."""
    from glsr.models.network import crop_loc_theta

    cfg = net.cfg
    check_host_warp(net)
    s, l = cfg.input_size, cfg.loc_size
    loc_from_crop = geo.pixel_affine_from_theta(crop_loc_theta(s, l, cfg.context), (s, s), (l, l))
    return {"loc_size": int(l), "face_size": int(cfg.face_size), "loc_from_crop": loc_from_crop.tolist(),
            "graphs": {k: list(v) for k, v in HOST_WARP_GRAPHS.items()}}


class HostWarpGraphs(nn.Module):
    """``forward(loc, face) -> (theta_g, shape_face)``: the two host-warp graphs of ``net`` side by side (they
    share no node; traced together so that one file holds both)."""

    def __init__(self, net):
        super().__init__()
        check_host_warp(net)
        self.net = net
        self.cfg = net.cfg
        self.scheme = net.scheme

    def example_inputs(self, batch: int) -> Tuple[torch.Tensor, torch.Tensor]:
        c = self.cfg
        return torch.zeros(batch, 3, c.loc_size, c.loc_size), torch.zeros(batch, 3, c.face_size, c.face_size)

    def forward(self, loc: torch.Tensor, face: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.net.reinit(loc), self.net.shape_from_face(face)
