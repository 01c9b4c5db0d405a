"""The whole G&LSR_ω chain as one ``nn.Module``: crop in, landmarks in crop pixels out.

Frames and conventions are those of :mod:`glsr.geometry`; the frames themselves (crop, loc, face, part) are
described in :class:`glsr.models.registry.VariantConfig`. Every resampling step is built from
:func:`glsr.geometry.affine_grid` (element-wise, no AffineGrid node) and the sampler chosen with
:meth:`set_sampler`; the four part patches are resampled in one call (grids stacked along the height).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from glsr import geometry as geo
from glsr.models.backbones import build_backbone
from glsr.models.local import LocalRegressNet
from glsr.models.registry import VariantConfig
from glsr.models.reinit import GlobalReinitNet, LocalReinitNets, part_box_theta
from glsr.schemes import LandmarkScheme

LEARNED_SCOPES: Tuple[str, ...] = ("reinit", "regress", "regress2", "local_reinit", "local_regress")
"""Attribute names of the learned sub-modules of :class:`GLSRNet`; in a traced / exported graph every node of a
sub-network carries its name as the first component of its scope (``/regress/...``, ``/local_regress.2/...``),
everything else is coordinate math (resampling, theta algebra)."""


def node_scope(name: str) -> str:
    """The first component of an exported node's or tensor's scope (``/local_regress.2/conv/Conv`` ->
    ``local_regress``): one of :data:`LEARNED_SCOPES` for a sub-network's node, anything else for coordinate math."""
    return name.lstrip("/").split("/", 1)[0].split(".", 1)[0]


def crop_loc_theta(input_size: int, loc_size: int, context: float) -> np.ndarray:
    """Sampling theta ``crop_norm_from_loc_norm`` for a loc region of ``loc_size`` px (see VariantConfig)."""
    s, l = input_size, loc_size
    half = (s - 1) / (2 * context)
    a = (s - 1) / 2 - half
    # crop_px_from_loc_px: loc 0 -> a, loc l-1 -> a + 2*half
    k = 2 * half / (l - 1)
    crop_px_from_loc_px = np.array([[k, 0.0, a], [0.0, k, a]])
    return geo.compose(geo.norm_from_pixel(s), crop_px_from_loc_px, geo.pixel_from_norm(l))


def loc_window(input_size: int, loc_size: int, context: float) -> Optional[Tuple[int, int, int]]:
    """``(start, kernel, stride)`` when the loc image is exact integer-pixel arithmetic on the crop, else ``None``.

    The loc pixel ``j`` (both axes) sits at crop pixel ``a + k * j`` (:func:`crop_loc_theta`). When ``k`` is a whole
    number and ``a`` a whole or half number, bilinear sampling there reads pixel centres (``a`` whole: the loc is
    every ``k``-th crop pixel from ``a``) or the midpoints of 2x2 pixel blocks (``a`` half: their mean), so the loc
    is a strided slice (``kernel`` 1) or a 2x2 average pool of stride ``k`` (``kernel`` 2) from crop pixel
    ``start``: the same values as the resampler's without its per-pixel grid and weights (a crop ``glsr ship
    --align-loc`` shapes so). The loc always lies inside the crop (``context`` >= 1)."""
    s, l = int(input_size), int(loc_size)
    if l < 2:
        return None
    k = (s - 1) / (context * (l - 1))
    a = (s - 1) / 2 - k * (l - 1) / 2
    ki, a2 = round(k), round(2 * a)
    if ki < 1 or abs(k - ki) > 1e-6 or abs(2 * a - a2) > 1e-6 or a2 < 0:
        return None
    kernel = 1 + a2 % 2
    return a2 // 2, kernel, ki


class GLSRNet(nn.Module):
    """A G&LSR_ω variant end to end.

    ``forward(crop)`` takes ``[B, 3, S, S]`` normalized crops (``(pixel - mean) / std``, ``cfg.channel_order``)
    and returns landmarks ``[B, N, 2]`` in crop pixel coordinates. ``forward(crop, intermediates=True)``
    returns a dict with what training needs (all thetas are sampling matrices ``src_norm_from_dst_norm``):

    * ``theta_g`` ``[B, 2, 3]`` loc_norm_from_face_norm; ``crop_from_face`` ``[B, 2, 3]`` (normalized);
    * ``shape_g`` ``[B, N, 2]`` global shape in normalized face coordinates;
    * ``theta_l`` ``[B, 4, 2, 3]`` face_norm_from_part_norm; ``local_init`` / ``local_shape``: lists of
      ``[B, n_j, 2]`` in normalized part coordinates (before / after local regression);
    * ``shape_face`` ``[B, N, 2]`` final shape in face coordinates; ``landmarks`` ``[B, N, 2]`` crop pixels;
    * for the cascade: ``shape_g1`` (stage 1, face coordinates) and ``theta_c`` (face1_norm_from_face2_norm).
    """

    def __init__(self, cfg: VariantConfig, scheme: LandmarkScheme, mean_shape: np.ndarray):
        super().__init__()
        self.cfg = cfg
        self.scheme = scheme
        n = scheme.num_points
        mean_shape = np.asarray(mean_shape, dtype=np.float64)
        if mean_shape.shape != (n, 2):
            raise ValueError(f"mean shape must be [{n}, 2] for scheme {scheme.name}, got {mean_shape.shape}")
        self.sampler_name = "gridsample"
        self.box_convention = ""  # the face boxes it was trained on (a glsr.boxes convention), if known
        self.register_buffer("mean_shape", torch.tensor(mean_shape, dtype=torch.float32))
        self.register_buffer("crop_from_loc", torch.tensor(crop_loc_theta(cfg.input_size, cfg.loc_size, cfg.context),
                                                           dtype=torch.float32)[None], persistent=False)
        self.register_buffer("identity", torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]), persistent=False)
        self.register_buffer("pixel_from_crop", torch.tensor(geo.pixel_from_norm(cfg.input_size),
                                                             dtype=torch.float32)[None], persistent=False)
        self.register_buffer("grid_face", geo.base_grid(cfg.face_size, cfg.face_size), persistent=False)
        self.reinit = GlobalReinitNet(cfg.theta_mode, cfg.loc_size, cfg.face_size) if cfg.global_reinit else None
        if cfg.global_reinit:
            self.register_buffer("grid_loc", geo.base_grid(cfg.loc_size, cfg.loc_size), persistent=False)
        self.regress = build_backbone(cfg.backbone, 2 * n, cfg.face_size, cfg.tf_layers)
        self.regress2 = build_backbone(cfg.backbone, 2 * n, cfg.face_size, cfg.tf_layers) if cfg.cascade == 2 else None
        for head in (self.regress, self.regress2):
            if head is not None:  # start from the mean shape
                nn.init.zeros_(head.pts_net[-1].weight)
                nn.init.zeros_(head.pts_net[-1].bias)
        if cfg.local:
            init = [part_box_theta(mean_shape[list(p)], cfg.part_margin) for p in scheme.parts]
            self.local_reinit = LocalReinitNets(n, init, cfg.theta_mode, cfg.face_size)
            self.local_regress = nn.ModuleList(LocalRegressNet(len(p), cfg.part_size) for p in scheme.parts)
            self.register_buffer("grid_part", geo.base_grid(cfg.part_size, cfg.part_size), persistent=False)
            part_points = [i for p in scheme.parts for i in p]
            order = list(scheme.contour) + part_points
            self.register_buffer("part_points", torch.tensor(part_points, dtype=torch.long), persistent=False)
            self.register_buffer("point_part", torch.tensor([j for j, p in enumerate(scheme.parts) for _ in p],
                                                            dtype=torch.long), persistent=False)
            self.register_buffer("contour_index", torch.tensor(scheme.contour, dtype=torch.long), persistent=False)
            self.register_buffer("unpermute", torch.tensor(np.argsort(order), dtype=torch.long), persistent=False)
        else:
            self.local_reinit = None
            self.local_regress = None

    # ---------------------------------------------------------------------------------------------- stages
    @property
    def stages(self) -> Tuple[str, ...]:
        """The stages this network runs (names of :attr:`VariantConfig.stages`); a stage dropped by
        :meth:`without_inert_stages` is not among them."""
        cfg = self.cfg
        s = ["global-reinit"] if self.reinit is not None else []
        s.append(f"global-regress({cfg.backbone})" + ("x2" if self.regress2 is not None else ""))
        if self.local_reinit is not None:
            s += ["local-reinit", "local-regress"]
        return tuple(s)

    def inert_stages(self) -> Tuple[str, ...]:
        """Stages that cannot change the output: the local stage when every local regressor's last layer (weight
        and bias) is exactly zero -- its increments are then zero for any input and the final shape is the global
        one (a fresh model's, or a trained model whose local stage was never trained)."""
        if self.local_regress is None:
            return ()
        last = [t for net in self.local_regress for t in (net.fc[-1].weight, net.fc[-1].bias)]
        return ("local-reinit", "local-regress") if all(not bool(torch.any(t != 0)) for t in last) else ()

    def without_inert_stages(self) -> "GLSRNet":
        """This network without its :meth:`inert_stages` (a copy; ``self`` unchanged, itself when there are none):
        what export and inference run. The dropped stages only added zero increments through a forward and an
        inverse part transform, so the output is unchanged up to float rounding (~1e-5 px)."""
        if not self.inert_stages():
            return self
        import copy

        net = copy.copy(self)  # shallow: shares the kept sub-modules and buffers, own module table
        net._modules = dict(self._modules)
        net._buffers = dict(self._buffers)
        net._modules["local_reinit"] = None
        net._modules["local_regress"] = None
        for b in ("grid_part", "part_points", "point_part", "contour_index", "unpermute"):
            net._buffers.pop(b, None)
        return net

    # ---------------------------------------------------------------------------------------------- helpers
    def set_sampler(self, name: str) -> "GLSRNet":
        """Choose ``"gridsample"`` (GridSample op) or ``"gather"`` (floor/clip/gather) for every resampling."""
        geo.get_sampler(name)
        self.sampler_name = name
        return self

    def set_mean_shape(self, mean_shape: np.ndarray) -> None:
        """Replace the mean shape (normalized face coordinates, ``[N, 2]``), e.g. with the training set's."""
        m = torch.as_tensor(np.asarray(mean_shape), dtype=torch.float32)
        if m.shape != self.mean_shape.shape:
            raise ValueError(f"mean shape must be {tuple(self.mean_shape.shape)}, got {tuple(m.shape)}")
        self.mean_shape.copy_(m)

    def _sample(self, image: torch.Tensor, theta: torch.Tensor, grid: torch.Tensor, size: int) -> torch.Tensor:
        return geo.get_sampler(self.sampler_name)(image, geo.affine_grid(theta, grid, size, size))

    @property
    def loc_window(self) -> Optional[Tuple[int, int, int]]:
        """:func:`loc_window` of this network's geometry: how :meth:`loc_image` reads the loc off the crop."""
        return loc_window(self.cfg.input_size, self.cfg.loc_size, self.cfg.context)

    def loc_image(self, crop: torch.Tensor) -> torch.Tensor:
        """The ``[B, 3, L, L]`` loc image the global reinit net reads: a slice or 2x2 average pool of the crop
        where the geometry allows (:func:`loc_window`), else resampled with the chosen sampler."""
        window = self.loc_window
        if window is None:
            b = crop.shape[0]
            return self._sample(crop, self.crop_from_loc.expand(b, 2, 3), self.grid_loc, self.cfg.loc_size)
        start, kernel, stride = window
        end = start + (self.cfg.loc_size - 1) * stride + kernel
        pixels = crop[:, :, start:end, start:end]
        if kernel == 2:
            return F.avg_pool2d(pixels, 2, stride)
        return pixels[:, :, ::stride, ::stride] if stride > 1 else pixels

    def _regress(self, head: nn.Module, face: torch.Tensor) -> torch.Tensor:
        return self.mean_shape + head(face).reshape(face.shape[0], -1, 2)

    def _cascade_theta(self, shape: torch.Tensor) -> torch.Tensor:
        """face1_norm_from_face2_norm mapping the mean shape's tight box onto ``shape``'s tight box."""
        lo, hi = torch.amin(shape, dim=1), torch.amax(shape, dim=1)
        m_lo, m_hi = torch.amin(self.mean_shape, dim=0), torch.amax(self.mean_shape, dim=0)
        scale = (hi - lo) / (m_hi - m_lo)
        shift = (hi + lo) / 2 - scale * (m_hi + m_lo) / 2
        zero = torch.zeros_like(scale[:, 0])
        return torch.stack([torch.stack([scale[:, 0], zero, shift[:, 0]], -1),
                            torch.stack([zero, scale[:, 1], shift[:, 1]], -1)], dim=1)

    def sub_networks(self) -> List[Tuple[str, nn.Module, Tuple[int, ...]]]:
        """``(name, module, input shape at batch 1)`` of every learned sub-network, in execution order."""
        cfg = self.cfg
        subs: List[Tuple[str, nn.Module, Tuple[int, ...]]] = []
        if self.reinit is not None:
            subs.append(("global_reinit", self.reinit, (1, 3, cfg.loc_size, cfg.loc_size)))
        subs.append(("global_regress", self.regress, (1, 3, cfg.face_size, cfg.face_size)))
        if self.regress2 is not None:
            subs.append(("global_regress2", self.regress2, (1, 3, cfg.face_size, cfg.face_size)))
        if self.local_reinit is not None:
            subs.append(("local_reinit", self.local_reinit, (1, self.scheme.num_points, 2)))
            for j, net in enumerate(self.local_regress):
                subs.append((f"local_regress_{self.scheme.part_names[j]}", net, (1, 3, cfg.part_size, cfg.part_size)))
        return subs

    def check_input(self, crop: torch.Tensor) -> None:
        """``ValueError`` unless ``crop`` is ``[B, 3, S, S]`` with this variant's ``input_size``: the graph's
        frames are built for that size, and another one would give wrong landmarks silently. Skipped while
        tracing (export), where the input shape is fixed by the example input, so the graph stays static."""
        if torch.jit.is_tracing() or torch.jit.is_scripting():
            return
        s = self.cfg.input_size
        if crop.dim() != 4 or tuple(crop.shape[1:]) != (3, s, s):
            raise ValueError(f"{self.cfg.name} expects normalized crops [B, 3, {s}, {s}] (input_size {s}), got "
                             f"{tuple(crop.shape)}; crop faces with the model's metadata (glsr.runtime.processing."
                             "crop_batch)")

    # ---------------------------------------------------------------------------------------------- forward
    def _local(self, face: torch.Tensor, shape_g: torch.Tensor, out: Dict[str, object]) -> torch.Tensor:
        """The local stage on the normalized face ``[B, 3, F, F]``: ``shape_g`` -> final shape (face coordinates);
        fills ``out`` with ``theta_l``, ``local_init``, ``local_shape``."""
        theta_l = self.local_reinit(shape_g)                            # [B, 4, 2, 3]
        b, k, p = face.shape[0], theta_l.shape[1], self.cfg.part_size
        # all part patches in one resampling: grids stacked along the height, [B, C, 4P, P]
        patches = self._sample(face, theta_l, self.grid_part, p).reshape(b, -1, k, p, p)
        return self.local_from_patches(patches, shape_g, theta_l, out)

    def local_deltas(self, patches: torch.Tensor) -> torch.Tensor:
        """The local regressors on part patches ``[B, 3, K, P, P]``: every part point's increment ``[B, Np, 2]``
        in its part's normalized coordinates (parts in scheme order)."""
        return torch.cat([net(patches[:, :, j]) for j, net in enumerate(self.local_regress)], dim=1)

    def local_from_patches(self, patches: torch.Tensor, shape_g: torch.Tensor, theta_l: torch.Tensor,
                           out: Dict[str, object] | None = None) -> torch.Tensor:
        """The local regressors on part patches ``[B, 3, K, P, P]`` (part ``j`` resampled with ``theta_l[:, j]``,
        face_norm_from_part_norm) and the inverse transforms: the final shape ``[B, N, 2]`` in normalized face
        coordinates (the contour from ``shape_g``)."""
        out = {} if out is None else out
        # one affine per part point: part_norm_from_face_norm to start, face_norm_from_part_norm after
        theta_pt = torch.index_select(theta_l, 1, self.point_part)     # [B, Np, 2, 3]
        init = geo.transform_points(torch.index_select(geo.invert_theta(theta_l), 1, self.point_part),
                                    torch.index_select(shape_g, 1, self.part_points))
        local = init + self.local_deltas(patches)
        pieces = [torch.index_select(shape_g, 1, self.contour_index), geo.transform_points(theta_pt, local)]
        shape_face = torch.index_select(torch.cat(pieces, dim=1), 1, self.unpermute)
        sizes = [len(q) for q in self.scheme.parts]
        out.update(theta_l=theta_l, local_init=list(torch.split(init, sizes, 1)),
                   local_shape=list(torch.split(local, sizes, 1)))
        return shape_face

    def global_face(self, crop: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The global reinitialization: ``(face, theta_g, crop_from_face)``, ``face`` the ``[B, 3, F, F]``
        resampled upright face the global regressor reads (identity theta without a reinit net)."""
        b = crop.shape[0]
        crop_from_loc = self.crop_from_loc.expand(b, 2, 3)
        if self.reinit is not None:
            theta_g = self.reinit(self.loc_image(crop))
        else:
            theta_g = self.identity.expand(b, 2, 3)
        crop_from_face = geo.compose_theta(crop_from_loc, theta_g)
        return self._sample(crop, crop_from_face, self.grid_face, self.cfg.face_size), theta_g, crop_from_face

    def forward(self, crop: torch.Tensor, intermediates: bool = False):
        self.check_input(crop)
        cfg = self.cfg
        b = crop.shape[0]
        out: Dict[str, object] = {}
        face, theta_g, crop_from_face = self.global_face(crop)
        shape_g = self._regress(self.regress, face)
        out.update(theta_g=theta_g, shape_g=shape_g, crop_from_face=crop_from_face)
        shape_face = shape_g
        if self.regress2 is not None:
            theta_c = self._cascade_theta(shape_g)
            face2 = self._sample(crop, geo.compose_theta(crop_from_face, theta_c), self.grid_face, cfg.face_size)
            shape2 = self._regress(self.regress2, face2)
            shape_face = geo.transform_points(theta_c, shape2)
            out.update(shape_g1=shape_g, theta_c=theta_c, shape_g2=shape2)
        if self.local_reinit is not None:
            shape_face = self._local(face, shape_g, out)
        landmarks = geo.transform_points(geo.compose_theta(self.pixel_from_crop.expand(b, 2, 3), crop_from_face),
                                         shape_face)
        if not intermediates:
            return landmarks
        out.update(shape_face=shape_face, landmarks=landmarks)
        return out
