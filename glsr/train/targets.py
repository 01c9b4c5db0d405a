"""Interim training targets: the reference shape, theta*_g by Algorithm 1, the mean shape S_g0, the local
theta*_l and the shapes mapped into each frame (Eq. 4).

Frames and conventions are those of :mod:`glsr.geometry` and :class:`glsr.models.registry.VariantConfig`:

* **loc** frame: normalized coordinates (``align_corners=False``) of the loc region (the box enlarged by
  ``box_scale``) — the paper's ``F_0`` as the global reinit net sees it;
* **face** frame: normalized coordinates of the reinitialized face ``F_g``; ``theta_g`` is the sampling matrix
  ``loc_norm_from_face_norm`` (so ``S_g = theta_g^{-1}(S)``, Eq. 4);
* **part** frames: normalized patch coordinates; ``theta_l[:, j]`` is ``face_norm_from_part_norm``.
* The **reference** shape ``S_ref`` lives in its own box-normalized frame: its tight box is ``[-1, 1]^2``.

Algorithm 1 (theta*_g) in these frames, for a ground-truth shape ``S*`` in loc coordinates:

1. ``ref_from_loc`` = least-squares affine (or similarity) taking ``S*`` onto ``S_ref``;
2. ``S_1 = ref_from_loc(S*)`` (the face warped to the intermediate normalized state ``F_1``);
3. the region bounded by ``S_1`` (its tight box, enlarged by ``margin``) becomes the normalized face ``F_2``:
   ``face_from_ref`` maps that region onto ``[-1, 1]^2``, and ``S_2 = face_from_ref(S_1)``;
4. theta*_g = the affine projecting ``S_2`` back onto ``S*`` (``loc_from_face``, a sampling theta).
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np
import torch

from glsr import geometry as geo
from glsr.models.reinit import part_box_theta
from glsr.schemes import LandmarkScheme

# ------------------------------------------------------------------------------------------ numpy, per shape


def box_normalize(points: np.ndarray) -> np.ndarray:
    """Map shapes ``[..., N, 2]`` so that each one's tight box becomes ``[-1, 1]^2`` (per axis)."""
    p = np.asarray(points, dtype=np.float64)
    lo, hi = p.min(axis=-2, keepdims=True), p.max(axis=-2, keepdims=True)
    return (2.0 * p - (lo + hi)) / (hi - lo)


def mirror_shape(shape: np.ndarray, scheme: LandmarkScheme) -> np.ndarray:
    """Mirror a box-normalized shape about ``x = 0`` and relabel with the scheme's flip permutation."""
    m = np.array(shape, dtype=np.float64)
    m[..., 0] = -m[..., 0]
    return m[..., list(scheme.flip), :]


def reference_shape(shapes: np.ndarray, scheme: LandmarkScheme, iterations: int = 3,
                    symmetric: bool = True) -> np.ndarray:
    """A reference frontal mean shape ``S_ref`` ``[N, 2]`` (box-normalized) from ground-truth shapes ``[K, N, 2]``
    (any pixel frame).

    Shapes are box-normalized and averaged; ``iterations`` similarity-Procrustes passes then align every shape to
    the current mean (removing in-plane rotation) and re-average. ``symmetric`` averages the result with its
    mirror image (training uses flips, so the frontal reference is left-right symmetric).
    """
    x = box_normalize(np.asarray(shapes, dtype=np.float64))
    if x.ndim != 3 or x.shape[1:] != (scheme.num_points, 2):
        raise ValueError(f"shapes must be [K, {scheme.num_points}, 2], got {x.shape}")
    ref = box_normalize(x.mean(axis=0))
    for _ in range(iterations):
        aligned = np.stack([geo.apply_affine(geo.affine_from_points(s, ref, similarity=True), s) for s in x])
        ref = box_normalize(aligned.mean(axis=0))
    if symmetric:
        ref = box_normalize(0.5 * (ref + mirror_shape(ref, scheme)))
    return ref


def face_from_ref_matrix(shape_ref_frame: np.ndarray, margin: float) -> np.ndarray:
    """Algorithm 1 step 3: ``face_from_ref`` mapping the tight box of ``shape_ref_frame``, enlarged by
    ``margin`` about its centre, onto the normalized face square ``[-1, 1]^2``."""
    x1, y1, x2, y2 = geo.enlarge_box(geo.tight_box(shape_ref_frame), margin)
    w, h = x2 - x1, y2 - y1
    return np.array([[2.0 / w, 0.0, -(x1 + x2) / w], [0.0, 2.0 / h, -(y1 + y2) / h]])


def face_from_loc_target(shape_loc: np.ndarray, reference: np.ndarray, margin: float,
                         transform: str = "affine") -> np.ndarray:
    """Algorithm 1 steps 1-3: the target ``face_from_loc`` for a ground-truth shape ``[N, 2]`` in loc coords."""
    shape_loc = np.asarray(shape_loc, dtype=np.float64)
    ref_from_loc = geo.affine_from_points(shape_loc, reference, similarity=transform == "similarity")
    s1 = geo.apply_affine(ref_from_loc, shape_loc)
    return geo.compose(face_from_ref_matrix(s1, margin), ref_from_loc)


def global_theta_target(shape_loc: np.ndarray, reference: np.ndarray, margin: float,
                        transform: str = "affine") -> np.ndarray:
    """theta*_g (Algorithm 1) as our sampling matrix ``loc_norm_from_face_norm``, ``[2, 3]``.

    Step 4 is taken literally: the affine fitted from ``S_2`` (the shape in the normalized face) back onto
    ``S*`` (exactly the inverse of steps 1-3, which are affine).
    """
    shape_loc = np.asarray(shape_loc, dtype=np.float64)
    s2 = geo.apply_affine(face_from_loc_target(shape_loc, reference, margin, transform), shape_loc)
    return geo.affine_from_points(s2, shape_loc)


def mean_shape(shapes_loc: np.ndarray, reference: np.ndarray, margin: float, transform: str = "affine",
               reinit: bool = True) -> np.ndarray:
    """``S_g0``: mean ground-truth shape in the frame the global regressor sees, ``[N, 2]``.

    With a global reinit net that frame is the target face frame (``theta*_g^{-1}(S*)`` averaged over the
    samples); without one (b1, b2) the face frame *is* the loc frame and the loc-frame shapes are averaged.
    """
    s = np.asarray(shapes_loc, dtype=np.float64)
    if not reinit:
        return s.mean(axis=0)
    faces = [geo.apply_affine(face_from_loc_target(x, reference, margin, transform), x) for x in s]
    return np.mean(faces, axis=0)


def part_init_thetas(mean: np.ndarray, scheme: LandmarkScheme, margin: float) -> List[np.ndarray]:
    """The pre-defined part patches: ``face_norm_from_part_norm`` framing each part of the mean shape (the
    same matrices :class:`glsr.models.GLSRNet` initialises its local reinit nets with)."""
    mean = np.asarray(mean, dtype=np.float64)
    return [part_box_theta(mean[list(p)], margin) for p in scheme.parts]


def part_templates(mean: np.ndarray, scheme: LandmarkScheme, margin: float) -> List[np.ndarray]:
    """Each part of the mean shape in its pre-defined normalized patch (part coordinates), ``[n_j, 2]``."""
    mean = np.asarray(mean, dtype=np.float64)
    return [geo.apply_affine(geo.invert_affine(t), mean[list(p)])
            for t, p in zip(part_init_thetas(mean, scheme, margin), scheme.parts)]


# ------------------------------------------------------------------------------------------ torch, batched


def to_frame(theta: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    """Eq. 4: shapes ``[B, n, 2]`` in a sampling theta's *source* frame -> its *destination* frame
    (``theta^{-1}(S)``), e.g. loc -> face with ``theta_g``."""
    return geo.transform_points(geo.invert_theta(theta), shape)


def fit_affine(src: torch.Tensor, dst: torch.Tensor, similarity: bool = False) -> torch.Tensor:
    """Least-squares ``dst_from_src`` ``[B, 2, 3]`` for point sets ``src`` (``[n, 2]`` or ``[B, n, 2]``) and
    ``dst`` ``[B, n, 2]`` (batched :func:`glsr.geometry.affine_from_points`)."""
    dst = dst.to(torch.float64)
    src = src.to(torch.float64).expand_as(dst)
    if similarity:
        ms, md = src.mean(dim=1, keepdim=True), dst.mean(dim=1, keepdim=True)
        s, d = src - ms, dst - md
        norm = (s * s).sum(dim=(1, 2))
        a = (s * d).sum(dim=(1, 2)) / norm
        b = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(dim=1) / norm
        lin = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], dim=1)
        t = md.squeeze(1) - torch.matmul(lin, ms.squeeze(1).unsqueeze(-1)).squeeze(-1)
        return torch.cat([lin, t.unsqueeze(-1)], dim=-1)
    ones = torch.ones(src.shape[:-1] + (1,), dtype=src.dtype, device=src.device)
    a = torch.cat([src, ones], dim=-1)                          # [B, n, 3]
    at = a.transpose(1, 2)
    sol = torch.linalg.solve(at @ a, at @ dst)                  # [B, 3, 2]
    return sol.transpose(1, 2)


def local_theta_targets(shape_face: torch.Tensor, templates: Sequence[torch.Tensor], scheme: LandmarkScheme,
                        transform: str = "similarity") -> torch.Tensor:
    """theta*_l ``[B, 4, 2, 3]`` (``face_norm_from_part_norm``): for each part, the transform taking its
    pre-defined normalized patch (``templates[j]``, part coordinates) onto the ground-truth part in the face
    frame ``shape_face`` ``[B, N, 2]``."""
    thetas = [fit_affine(t.to(shape_face.device), shape_face[:, list(p)], transform == "similarity")
              for t, p in zip(templates, scheme.parts)]
    return torch.stack(thetas, dim=1).to(shape_face.dtype)


def local_shape_targets(theta_l: torch.Tensor, shape_face: torch.Tensor, scheme: LandmarkScheme
                        ) -> List[torch.Tensor]:
    """``S_l^{j*}``: each part of the face-frame ground truth mapped into the patch the network sampled
    (``theta_l[:, j]^{-1}``), a list of ``[B, n_j, 2]``."""
    return [to_frame(theta_l[:, j], shape_face[:, list(p)]) for j, p in enumerate(scheme.parts)]
