"""Host-warp graphs: a G&LSR_ω variant's networks with no resampling inside the graph.

In host-warp mode the host resamples every network input straight from the photo (one bilinear
``cv2.warpAffine`` each, :mod:`glsr.runtime.hostwarp`) and runs up to three graphs:

* ``reinit``: ``loc`` ``[B, 3, L, L]`` -> ``theta_g`` ``[B, 2, 3]`` (sampling matrix loc_norm_from_face_norm);
* ``global``: ``face`` ``[B, 3, F, F]`` -> ``shape_g`` ``[B, N, 2]`` (normalized face coordinates) and, for variants
  with a local stage, ``theta_l`` ``[B, K, 2, 3]`` (face_norm_from_part_norm per part);
* ``local`` (variants with a local stage): ``parts`` ``[B, 3, K, P, P]`` -> ``local_delta`` ``[B, Np, 2]``, the
  local regressors' increments of every part point (parts in scheme order) in normalized part coordinates; the
  host maps them back with ``theta_l`` (:func:`glsr.runtime.hostwarp.assemble_local`, the inverse transforms of
  :meth:`glsr.models.GLSRNet.local_from_patches` on 68 points in numpy: in a graph they are ~40 tiny nodes).

One exported file holds all of them as disconnected parts with their own inputs and outputs
(:func:`graph_io`); the artifact's metadata field ``host_warp`` (:func:`host_warp_spec`) tells the runtime the sizes,
the fixed loc frame and the graphs. The single-graph export (crop in, landmarks out) stays the default; this mode
trades a single mobile-friendly graph for the host's cheaper warps (``benchmarks/studies/host_warp.py``).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from glsr import geometry as geo


def graph_io(local: bool) -> Dict[str, Tuple[List[str], List[str]]]:
    """Graph name -> (input names, output names) of a host-warp artifact, with or without the local stage."""
    if not local:
        return {"reinit": (["loc"], ["theta_g"]), "global": (["face"], ["shape_g"])}
    return {"reinit": (["loc"], ["theta_g"]), "global": (["face"], ["shape_g", "theta_l"]),
            "local": (["parts"], ["local_delta"])}


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
    """The ``host_warp`` metadata of ``net``'s host-warp artifact: ``loc_size``, ``face_size``, ``part_size``,
    ``loc_from_crop`` (pixel affine from the ``input_size`` crop to the loc image, fixed by the variant) and the
    graphs' input / output names."""
    from glsr.models.network import crop_loc_theta

    cfg = net.cfg
    check_host_warp(net)
    s, l = cfg.input_size, cfg.loc_size
    loc_from_crop = geo.pixel_affine_from_theta(crop_loc_theta(s, l, cfg.context), (s, s), (l, l))
    return {"loc_size": int(l), "face_size": int(cfg.face_size), "part_size": int(cfg.part_size),
            "loc_from_crop": loc_from_crop.tolist(),
            "graphs": {k: [list(i), list(o)] for k, (i, o) in graph_io(net.local_reinit is not None).items()}}


def torch_graphs(net) -> Dict[str, Callable[..., List[torch.Tensor]]]:
    """The host-warp graphs of ``net`` as PyTorch callables (name -> ``fn(*inputs) -> [outputs]``): what the
    exported file holds, and the reference parity checks it against."""
    check_host_warp(net)
    out: Dict[str, Callable[..., List[torch.Tensor]]] = {"reinit": lambda loc: [net.reinit(loc)]}
    if net.local_reinit is None:
        out["global"] = lambda face: [net._regress(net.regress, face)]
        return out

    def global_(face: torch.Tensor) -> List[torch.Tensor]:
        shape_g = net._regress(net.regress, face)
        return [shape_g, net.local_reinit(shape_g)]

    out["global"] = global_
    out["local"] = lambda parts: [net.local_deltas(parts)]
    return out


def numpy_runner(net) -> Callable[..., List[np.ndarray]]:
    """``run_graph(name, *arrays) -> [arrays]`` of :func:`torch_graphs` (no gradients, float32)."""
    graphs = torch_graphs(net)

    def run(name: str, *xs: np.ndarray) -> List[np.ndarray]:
        with torch.no_grad():
            ts = [torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) for x in xs]
            return [y.numpy() for y in graphs[name](*ts)]
    return run


class HostWarpGraphs(nn.Module):
    """All host-warp graphs of ``net`` side by side in one module (they share no node; traced together so that
    one file holds them): ``forward(*inputs) -> outputs`` in the order of :func:`graph_io`."""

    def __init__(self, net):
        super().__init__()
        check_host_warp(net)
        self.net = net
        self.cfg = net.cfg
        self.io = graph_io(net.local_reinit is not None)
        self._graphs = torch_graphs(net)

    @property
    def input_names(self) -> List[str]:
        return [n for i, _ in self.io.values() for n in i]

    @property
    def output_names(self) -> List[str]:
        return [n for _, o in self.io.values() for n in o]

    def example_inputs(self, batch: int) -> Sequence[torch.Tensor]:
        c = self.cfg
        xs = [torch.zeros(batch, 3, c.loc_size, c.loc_size), torch.zeros(batch, 3, c.face_size, c.face_size)]
        if "local" in self.io:
            xs.append(torch.zeros(batch, 3, len(self.net.scheme.parts), c.part_size, c.part_size))
        return xs

    def forward(self, *inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        outs: List[torch.Tensor] = []
        i = 0
        for name, (ins, _) in self.io.items():
            outs += self._graphs[name](*inputs[i:i + len(ins)])
            i += len(ins)
        return tuple(outs)
