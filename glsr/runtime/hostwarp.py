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
``shape_g + A(theta_l) @ delta``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Sequence, Tuple

import numpy as np

from glsr import geometry as geo
from glsr.metadata import ArtifactMetadata
from glsr.runtime.processing import warp_into, warp_stack_into
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
    computes for two matrices, without the homogeneous 3x3 detour."""
    a = np.asarray(c_from_b, dtype=np.float64)
    b = np.asarray(b_from_a, dtype=np.float64)
    lin = a[..., :2]
    out = np.empty(np.broadcast_shapes(a.shape, b.shape))
    out[..., :2] = lin @ b[..., :2]
    out[..., 2] = (lin @ b[..., 2:])[..., 0] + a[..., 2]
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


def _pixel_from_theta(theta: np.ndarray, src: int, dst: int) -> np.ndarray:
    """``src_px_from_dst_px`` of sampling thetas ``[..., 2, 3]`` (``src_norm_from_dst_norm``) between squares of
    ``src`` and ``dst`` px: ``pixel_from_norm(src) @ theta @ norm_from_pixel(dst)``, in closed form (both are
    diagonal: linear part ``theta * src / dst``, translation ``src / 2 * (theta @ (1/dst - 1)) + (src - 1) / 2``)."""
    theta = np.asarray(theta, dtype=np.float64)
    out = np.empty(theta.shape)
    out[..., :2] = theta[..., :2] * (src / dst)
    out[..., 2] = (src / 2.0) * (theta[..., 0] * (1.0 / dst - 1.0) + theta[..., 1] * (1.0 / dst - 1.0)
                                 + theta[..., 2]) + (src - 1) / 2.0
    return out


# ------------------------------------------------------------------------------------------ the stages
@functools.lru_cache(maxsize=16)
def _crop_from_loc(loc_from_crop: Tuple[Tuple[float, ...], ...]) -> np.ndarray:
    return invert(np.array(loc_from_crop, dtype=np.float64))


def image_from_crop(boxes: np.ndarray, size: int, enlarge: float) -> np.ndarray:
    """``[F, 2, 3]`` inverses of :func:`glsr.geometry.crop_from_image` for checked boxes ``[F, 4]``, batched and in
    closed form (the crop's pixel ``(size - 1)`` is the enlarged box's far corner)."""
    b = geo.enlarge_box(np.asarray(boxes, dtype=np.float64), enlarge)
    out = np.zeros((len(b), 2, 3))
    out[:, 0, 0] = (b[:, 2] - b[:, 0]) / (size - 1)
    out[:, 1, 1] = (b[:, 3] - b[:, 1]) / (size - 1)
    out[:, :, 2] = b[:, :2]
    return out


def loc_batch(image: np.ndarray, boxes: np.ndarray, meta: ArtifactMetadata) -> HostWarpBatch:
    """Warp and normalize every face's loc image straight from ``image`` (boxes already checked)."""
    spec = meta.host_warp
    size = int(spec["loc_size"])
    crop_from_loc = _crop_from_loc(tuple(map(tuple, spec["loc_from_crop"])))
    x = np.empty((len(boxes), 3, size, size), np.float32)
    image_from_loc = compose2(image_from_crop(boxes, meta.input_size, meta.crop_enlarge), crop_from_loc)
    for i in range(len(boxes)):
        warp_into(image, image_from_loc[i], size, x[i], meta)
    return HostWarpBatch(image, x, invert(image_from_loc), image_from_loc)


def face_from_loc(theta_g: np.ndarray, loc_size: int, face_size: int) -> np.ndarray:
    """``[F, 2, 3]`` pixel affines face_px_from_loc_px for sampling matrices ``theta_g`` (loc_norm_from_face_norm)."""
    theta = np.asarray(theta_g, dtype=np.float64).reshape(-1, 2, 3)
    return invert(_pixel_from_theta(theta, loc_size, face_size))


def _image_from_face(batch: HostWarpBatch, theta_g: np.ndarray, meta: ArtifactMetadata) -> np.ndarray:
    spec = meta.host_warp
    loc_from_face = _pixel_from_theta(np.asarray(theta_g, dtype=np.float64).reshape(-1, 2, 3),
                                      int(spec["loc_size"]), int(spec["face_size"]))
    return compose2(batch.image_from_loc, loc_from_face)


def _faces(batch: HostWarpBatch, image_from_face: np.ndarray, meta: ArtifactMetadata) -> np.ndarray:
    size = int(meta.host_warp["face_size"])
    x = np.empty((len(batch), 3, size, size), np.float32)
    for i in range(len(batch)):
        warp_into(batch.image, image_from_face[i], size, x[i], meta)
    return x


def face_batch(batch: HostWarpBatch, theta_g: np.ndarray, meta: ArtifactMetadata):
    """``(faces [F, 3, S, S] normalized, face_from_loc [F, 2, 3])``: each face warped once from the photo."""
    spec = meta.host_warp
    faces = _faces(batch, _image_from_face(batch, theta_g, meta), meta)
    return faces, face_from_loc(theta_g, int(spec["loc_size"]), int(spec["face_size"]))


def _parts(batch: HostWarpBatch, image_from_face: np.ndarray, theta_l: np.ndarray, meta: ArtifactMetadata
           ) -> np.ndarray:
    spec = meta.host_warp
    f, p = int(spec["face_size"]), int(spec["part_size"])
    theta_l = np.asarray(theta_l, dtype=np.float64)
    image_from_part = compose2(image_from_face[:, None], _pixel_from_theta(theta_l, f, p))      # [F, K, 2, 3]
    k = theta_l.shape[1]
    x = np.empty((len(batch), 3, k, p, p), np.float32)
    for i in range(len(batch)):  # a face's K patches stacked along the height: one normalization pass for all
        warp_stack_into(batch.image, image_from_part[i], p, x[i].reshape(3, k * p, p), meta)
    return x


def part_batch(batch: HostWarpBatch, face_from_loc_px: np.ndarray, theta_l: np.ndarray, meta: ArtifactMetadata
               ) -> np.ndarray:
    """``[F, 3, K, P, P]`` normalized part patches, each warped once from the photo: part ``j`` of face ``i`` with
    ``part_from_face(theta_l[i, j]) @ face_from_loc[i] @ loc_from_image[i]``."""
    image_from_face = compose2(batch.image_from_loc, invert(face_from_loc_px))
    return _parts(batch, image_from_face, theta_l, meta)


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
    spec = meta.host_warp
    n = len(batch)
    theta_g = np.asarray(run_graph("reinit", batch.loc)[0], dtype=np.float64).reshape(n, 2, 3)
    image_from_face = _image_from_face(batch, theta_g, meta)
    outs = run_graph("global", _faces(batch, image_from_face, meta))
    shape = np.asarray(outs[0], dtype=np.float64).reshape(n, meta.num_points, 2)
    if "local" in spec["graphs"]:
        theta_l = np.asarray(outs[1], dtype=np.float32).reshape(n, -1, 2, 3)
        parts = _parts(batch, image_from_face, theta_l, meta)
        delta = np.asarray(run_graph("local", parts)[0], dtype=np.float64).reshape(n, -1, 2)
        shape = assemble_local(shape, theta_l, delta, get_scheme(meta.scheme))
    # loc px from normalized face = pixel_from_norm(L) @ theta_g: no inverse needed
    loc_from_face_norm = compose2(geo.pixel_from_norm(int(spec["loc_size"])), theta_g)
    return geo.apply_affine(loc_from_face_norm, shape).astype(np.float32)
