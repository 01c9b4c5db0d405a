"""Host-warp mode of the runtime: every warp done by the host with OpenCV, the networks as separate graphs.

A host-warp artifact (``glsr export --host-warp``; metadata ``host_warp``, see :mod:`glsr.models.hostwarp`) is
run per batch of faces as:

1. ``loc_from_image = loc_from_crop @ crop_from_image(box)``; the loc image (``L`` px) is warped straight from
   the photo and normalized (:func:`loc_batch`) -- the *crop* stage of a prediction;
2. the ``reinit`` graph gives ``theta_g`` (loc_norm_from_face_norm); the host warps the face (``F`` px) from the
   photo with ``face_from_image = face_from_loc @ loc_from_image``; the ``global`` graph gives ``shape_g`` and the
   parts' ``theta_l``; the host warps each part (``P`` px) from the photo with ``part_from_face @ face_from_image``,
   the ``local`` graph gives the part points' increments and the host maps them back (:func:`assemble_local`); the
   shape is returned in loc pixels (:func:`run_host_warp`) -- the *network* stage;
3. loc pixels -> image pixels with ``loc_from_image`` (:func:`glsr.runtime.processing.uncrop`) -- *uncrop*.

The single-graph artifact resamples twice or three times (photo -> crop on the host, crop -> face -> part in the
graph, zero outside each intermediate image); here each input pixel is interpolated once from the photo, so the two
modes differ by interpolation detail (``glsr parity`` checks a host-warp artifact against the PyTorch model run in
this same mode; ``tests/test_hostwarp.py`` measures the difference to the single graph on real faces).
Conventions: pixel centres at integers, bilinear, zero border (:func:`glsr.geometry.warp`).

Cost (``benchmarks/studies/host_warp.py``): every warp is one ``cv2.warpAffine`` given the *source-from-destination*
matrix (``WARP_INVERSE_MAP``), composed in closed form from the graphs' sampling thetas (no matrix inverse per face),
into a reused uint8 buffer, then normalized in one pass per channel into the float32 network input
(:func:`normalize_into`; a face's part patches are warped into one stack and normalized together,
:func:`~glsr.runtime.processing.warp_stack_into`); the loc frame comes from the boxes in closed form and its inverse
is kept in the batch for the later warps; the local stage's inverse transforms collapse to
``shape_g + A(theta_l) @ delta``. What the stages read from the metadata (sizes, ``crop_from_loc``, the
normalization table) is resolved once per artifact (:func:`plan_of`), and the 2x3 algebra is a few numpy calls per
batch (``benchmarks/studies/host_warp_steps.py`` times each step).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Dict, Sequence, Tuple

import numpy as np

from glsr import geometry as geo
from glsr.metadata import ArtifactMetadata
from glsr.runtime.processing import Normalizer, normalizer, scratch, warp_into, warp_stack_into
from glsr.schemes import LandmarkScheme, get_scheme


@dataclass(frozen=True)
class HostWarpBatch:
    """The crop stage's output in host-warp mode: the photo, the normalized loc images ``[F, 3, L, L]``,
    ``loc_from_image`` ``[F, 2, 3]`` (pixel affines) and its inverse ``image_from_loc`` (what every later warp
    composes with; computed once, by :func:`loc_batch`)."""

    image: np.ndarray
    loc: np.ndarray
    loc_from_image: np.ndarray
    image_from_loc: np.ndarray

    def __len__(self) -> int:
        return len(self.loc)


def check_host_warp_meta(meta: ArtifactMetadata) -> dict:
    """The ``host_warp`` spec of ``meta``; ``ValueError`` naming what is missing for a malformed one. Backends call
    it once when they load a host-warp artifact; the functions below read the checked spec."""
    spec = meta.host_warp or {}
    missing = [k for k in ("loc_size", "face_size", "part_size", "loc_from_crop", "graphs") if k not in spec]
    missing += [f"graphs.{g}" for g in ("reinit", "global") if g not in spec.get("graphs", {})]
    if missing:
        raise ValueError(f"host-warp metadata lacks {missing}; re-export the model with `glsr export --host-warp`")
    return spec


# ------------------------------------------------------------------------------------------ 2x3 algebra, batched
def compose2(c_from_b: np.ndarray, b_from_a: np.ndarray) -> np.ndarray:
    """``c_from_a`` of ``[..., 2, 3]`` affines (broadcast over the leading axes); what :func:`glsr.geometry.compose`
    computes for two matrices, without the homogeneous 3x3 detour: ``lin(c_from_b) @ b_from_a``, plus the
    translation of ``c_from_b`` in the last column."""
    a = np.asarray(c_from_b, dtype=np.float64)
    out = a[..., :2] @ np.asarray(b_from_a, dtype=np.float64)
    out[..., 2] += a[..., 2]
    return out


def invert(m: np.ndarray) -> np.ndarray:
    """Inverse of ``[..., 2, 3]`` affines in closed form (``a_from_b`` -> ``b_from_a``)."""
    m = np.asarray(m, dtype=np.float64)
    a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
    det = a * d - b * c
    out = np.empty(m.shape)
    out[..., 0, 0], out[..., 0, 1], out[..., 1, 0], out[..., 1, 1] = d / det, -b / det, -c / det, a / det
    out[..., 2] = -(out[..., :2] @ m[..., 2:])[..., 0]
    return out


@functools.lru_cache(maxsize=32)
def _theta_to_pixel(src: int, dst: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(K [3, 3], t [2, 3])`` with ``src_px_from_dst_px = theta @ K + t`` (see :func:`_pixel_from_theta`)."""
    s = src / dst
    k = (src / 2.0) * (1.0 / dst - 1.0)
    return (np.array([[s, 0.0, k], [0.0, s, k], [0.0, 0.0, src / 2.0]]),
            np.array([[0.0, 0.0, (src - 1) / 2.0], [0.0, 0.0, (src - 1) / 2.0]]))


def _pixel_from_theta(theta: np.ndarray, src: int, dst: int) -> np.ndarray:
    """``src_px_from_dst_px`` of sampling thetas ``[..., 2, 3]`` (``src_norm_from_dst_norm``) between squares of
    ``src`` and ``dst`` px: ``pixel_from_norm(src) @ theta @ norm_from_pixel(dst)``, in closed form (both are
    diagonal: linear part ``theta * src / dst``, translation ``src / 2 * (theta @ (1/dst - 1, 1/dst - 1, 1)) +
    (src - 1) / 2``), one small matrix product and one sum."""
    k, t = _theta_to_pixel(int(src), int(dst))
    return np.asarray(theta, dtype=np.float64) @ k + t


# ------------------------------------------------------------------------------------------ what the stages read
@dataclass(frozen=True)
class HostWarpPlan:
    """What the host-warp stages read from an artifact's metadata, resolved once per metadata object
    (:func:`plan_of`): the three input sizes (px), the crop's size and enlargement, ``crop_from_loc`` (pixel
    affine), the normalization and whether the artifact has a local graph."""

    loc_size: int
    face_size: int
    part_size: int
    crop_size: int
    crop_enlarge: float
    crop_from_loc: np.ndarray
    norm: Normalizer
    local: bool


_PLANS: Dict[int, Tuple[ArtifactMetadata, HostWarpPlan]] = {}


def plan_of(meta: ArtifactMetadata) -> HostWarpPlan:
    """The :class:`HostWarpPlan` of a host-warp ``meta`` (checked by :func:`check_host_warp_meta` when loaded),
    built on first use and kept while ``meta`` is (the metadata holds dicts, so it is keyed by identity)."""
    hit = _PLANS.get(id(meta))
    if hit is not None and hit[0] is meta:
        return hit[1]
    spec = meta.host_warp
    plan = HostWarpPlan(int(spec["loc_size"]), int(spec["face_size"]), int(spec["part_size"]), int(meta.input_size),
                        float(meta.crop_enlarge), invert(np.array(spec["loc_from_crop"], dtype=np.float64)),
                        normalizer(meta), "local" in spec["graphs"])
    if len(_PLANS) >= 64:  # a process that loads many artifacts: forget the old ones
        _PLANS.clear()
    _PLANS[id(meta)] = (meta, plan)
    return plan


# ------------------------------------------------------------------------------------------ the stages
def _crop_frame(boxes: np.ndarray, size: int, enlarge: float) -> Tuple[np.ndarray, np.ndarray]:
    """``(corner [F, 2], scale [F, 2])`` of the crops of checked boxes ``[F, 4]``: the enlarged box's near corner
    and the image pixels per crop pixel along x and y (:func:`glsr.geometry.enlarge_box`'s arithmetic; the crop's
    pixel ``(size - 1)`` is the enlarged box's far corner)."""
    b = np.asarray(boxes, dtype=np.float64)
    centre = (b[:, :2] + b[:, 2:]) / 2
    half = (b[:, 2:] - b[:, :2]) / 2 * enlarge
    corner = centre - half
    return corner, ((centre + half) - corner) / (size - 1)


def image_from_crop(boxes: np.ndarray, size: int, enlarge: float) -> np.ndarray:
    """``[F, 2, 3]`` inverses of :func:`glsr.geometry.crop_from_image` for checked boxes ``[F, 4]``, batched and in
    closed form (diagonal: ``scale`` then the ``corner`` of :func:`_crop_frame`)."""
    corner, scale = _crop_frame(boxes, size, enlarge)
    out = np.zeros((len(corner), 2, 3))
    out[:, 0, 0], out[:, 1, 1] = scale[:, 0], scale[:, 1]
    out[:, :, 2] = corner
    return out


def image_from_loc(boxes: np.ndarray, plan: HostWarpPlan) -> np.ndarray:
    """``[F, 2, 3]`` ``image_from_crop(boxes) @ crop_from_loc`` for checked boxes; ``image_from_crop`` being
    diagonal, its rows scale ``crop_from_loc``'s (the values :func:`compose2` gives, with fewer calls)."""
    corner, scale = _crop_frame(boxes, plan.crop_size, plan.crop_enlarge)
    out = scale[:, :, None] * plan.crop_from_loc
    out[:, :, 2] += corner
    return out


def loc_batch(image: np.ndarray, boxes: np.ndarray, meta: ArtifactMetadata) -> HostWarpBatch:
    """Warp and normalize every face's loc image straight from ``image`` (boxes already checked)."""
    plan = plan_of(meta)
    size = plan.loc_size
    x = np.empty((len(boxes), 3, size, size), np.float32)
    m = image_from_loc(boxes, plan)
    for i in range(len(boxes)):
        warp_into(image, m[i], size, x[i], plan.norm)
    return HostWarpBatch(image, x, invert(m), m)


def face_from_loc(theta_g: np.ndarray, loc_size: int, face_size: int) -> np.ndarray:
    """``[F, 2, 3]`` pixel affines face_px_from_loc_px for sampling matrices ``theta_g`` (loc_norm_from_face_norm)."""
    theta = np.asarray(theta_g, dtype=np.float64).reshape(-1, 2, 3)
    return invert(_pixel_from_theta(theta, loc_size, face_size))


def _image_from_face(batch: HostWarpBatch, theta_g: np.ndarray, plan: HostWarpPlan) -> np.ndarray:
    return compose2(batch.image_from_loc, _pixel_from_theta(theta_g, plan.loc_size, plan.face_size))


def _input(graph: str, shape: Tuple[int, ...], reuse: bool) -> np.ndarray:
    """Graph ``graph``'s input buffer: the thread's reused one (:func:`glsr.runtime.processing.scratch`) for an
    input that never leaves :func:`run_host_warp`, else a new array (what the public stage functions hand back)."""
    return scratch(("host-warp input", graph), shape) if reuse else np.empty(shape, np.float32)


def _faces(batch: HostWarpBatch, image_from_face: np.ndarray, plan: HostWarpPlan, reuse: bool = False
           ) -> np.ndarray:
    size = plan.face_size
    x = _input("global", (len(batch), 3, size, size), reuse)
    for i in range(len(batch)):
        warp_into(batch.image, image_from_face[i], size, x[i], plan.norm)
    return x


def face_batch(batch: HostWarpBatch, theta_g: np.ndarray, meta: ArtifactMetadata):
    """``(faces [F, 3, S, S] normalized, face_from_loc [F, 2, 3])``: each face warped once from the photo."""
    plan = plan_of(meta)
    theta_g = np.asarray(theta_g, dtype=np.float64).reshape(-1, 2, 3)
    faces = _faces(batch, _image_from_face(batch, theta_g, plan), plan)
    return faces, face_from_loc(theta_g, plan.loc_size, plan.face_size)


def _parts(batch: HostWarpBatch, image_from_face: np.ndarray, theta_l: np.ndarray, plan: HostWarpPlan,
           reuse: bool = False) -> np.ndarray:
    f, p = plan.face_size, plan.part_size
    image_from_part = compose2(image_from_face[:, None], _pixel_from_theta(theta_l, f, p))      # [F, K, 2, 3]
    k = image_from_part.shape[1]
    x = _input("local", (len(batch), 3, k, p, p), reuse)
    for i in range(len(batch)):  # a face's K patches stacked along the height: one normalization pass for all
        warp_stack_into(batch.image, image_from_part[i], p, x[i].reshape(3, k * p, p), plan.norm)
    return x


def part_batch(batch: HostWarpBatch, face_from_loc_px: np.ndarray, theta_l: np.ndarray, meta: ArtifactMetadata
               ) -> np.ndarray:
    """``[F, 3, K, P, P]`` normalized part patches, each warped once from the photo: part ``j`` of face ``i`` with
    ``part_from_face(theta_l[i, j]) @ face_from_loc[i] @ loc_from_image[i]``."""
    image_from_face = compose2(batch.image_from_loc, invert(face_from_loc_px))
    return _parts(batch, image_from_face, theta_l, plan_of(meta))


@functools.lru_cache(maxsize=None)
def _part_index(scheme: str) -> Tuple[np.ndarray, np.ndarray]:
    """``(part points, the part of each)`` of a scheme, parts in scheme order."""
    parts = get_scheme(scheme).parts
    return (np.array([i for p in parts for i in p]), np.array([j for j, p in enumerate(parts) for _ in p]))


def assemble_local(shape_g: np.ndarray, theta_l: np.ndarray, delta: np.ndarray, scheme: LandmarkScheme
                   ) -> np.ndarray:
    """The local stage's inverse transforms on the host (those of :meth:`glsr.models.GLSRNet.local_from_patches`):
    each part point starts at ``shape_g`` mapped into its part's normalized frame (``theta_l`` inverted), moves by
    the local graph's ``delta`` ``[F, Np, 2]`` and is mapped back (``theta_l``, face_norm_from_part_norm): in closed
    form ``shape_g + A @ delta``, ``A`` the linear part of its part's ``theta_l``; the contour keeps ``shape_g``.
    Returns ``[F, N, 2]`` in normalized face coordinates."""
    part_points, point_part = _part_index(scheme.name)
    lin = np.asarray(theta_l, dtype=np.float64)[:, point_part, :, :2]                    # [F, Np, 2, 2]
    out = np.array(shape_g, dtype=np.float64)
    out[:, part_points] += (lin @ np.asarray(delta, dtype=np.float64)[..., None])[..., 0]
    return out


def run_host_warp(run_graph: Callable[..., Sequence[np.ndarray]], batch: HostWarpBatch,
                  meta: ArtifactMetadata) -> np.ndarray:
    """The network stage: ``run_graph(name, *inputs) -> [outputs]`` runs graph ``"reinit"``, ``"global"`` or
    ``"local"`` (:func:`glsr.models.hostwarp.graph_io`); returns the landmarks ``[F, N, 2]`` in loc pixels."""
    plan = plan_of(meta)
    n = len(batch)
    theta_g = np.asarray(run_graph("reinit", batch.loc)[0], dtype=np.float64).reshape(n, 2, 3)
    image_from_face = _image_from_face(batch, theta_g, plan)
    outs = run_graph("global", _faces(batch, image_from_face, plan, reuse=True))
    shape = np.asarray(outs[0], dtype=np.float64).reshape(n, meta.num_points, 2)
    if plan.local:
        theta_l = np.asarray(outs[1], dtype=np.float32).reshape(n, -1, 2, 3)
        parts = _parts(batch, image_from_face, theta_l, plan, reuse=True)
        delta = np.asarray(run_graph("local", parts)[0], dtype=np.float64).reshape(n, -1, 2)
        shape = assemble_local(shape, theta_l, delta, get_scheme(meta.scheme))
    # loc px from normalized face = pixel_from_norm(L) @ theta_g (diagonal): no inverse needed
    loc_from_face_norm = theta_g * (plan.loc_size / 2.0)
    loc_from_face_norm[..., 2] += (plan.loc_size - 1) / 2.0
    return geo.apply_affine(loc_from_face_norm, shape).astype(np.float32)
