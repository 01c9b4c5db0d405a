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
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from glsr import geometry as geo
from glsr.imaging import normalize
from glsr.metadata import ArtifactMetadata
from glsr.schemes import LandmarkScheme, get_scheme


@dataclass(frozen=True)
class HostWarpBatch:
    """The crop stage's output in host-warp mode: the photo, the normalized loc images ``[F, 3, L, L]`` and
    ``loc_from_image`` ``[F, 2, 3]`` (pixel affines)."""

    image: np.ndarray
    loc: np.ndarray
    loc_from_image: np.ndarray

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


def loc_batch(image: np.ndarray, boxes: np.ndarray, meta: ArtifactMetadata) -> HostWarpBatch:
    """Warp and normalize every face's loc image straight from ``image`` (boxes already checked)."""
    spec = meta.host_warp
    size = int(spec["loc_size"])
    loc_from_crop = np.asarray(spec["loc_from_crop"], dtype=np.float64)
    x = np.empty((len(boxes), 3, size, size), np.float32)
    ms = np.empty((len(boxes), 2, 3))
    for i, box in enumerate(boxes):
        ms[i] = geo.compose(loc_from_crop, geo.crop_from_image(box, meta.input_size, meta.crop_enlarge))
        normalize(geo.warp(image, ms[i], size), meta, out=x[i])
    return HostWarpBatch(image, x, ms)


def face_from_loc(theta_g: np.ndarray, loc_size: int, face_size: int) -> np.ndarray:
    """``[F, 2, 3]`` pixel affines face_px_from_loc_px for sampling matrices ``theta_g`` (loc_norm_from_face_norm)."""
    theta = np.asarray(theta_g, dtype=np.float64).reshape(-1, 2, 3)
    return geo.pixel_affine_from_theta(theta, (loc_size, loc_size), (face_size, face_size))


def face_batch(batch: HostWarpBatch, theta_g: np.ndarray, meta: ArtifactMetadata):
    """``(faces [F, 3, S, S] normalized, face_from_loc [F, 2, 3])``: each face warped once from the photo."""
    spec = meta.host_warp
    size = int(spec["face_size"])
    f_from_l = face_from_loc(theta_g, int(spec["loc_size"]), size)
    face_from_image = geo.compose(f_from_l, batch.loc_from_image)
    x = np.empty((len(batch), 3, size, size), np.float32)
    for i in range(len(batch)):
        normalize(geo.warp(batch.image, face_from_image[i], size), meta, out=x[i])
    return x, f_from_l


def part_batch(batch: HostWarpBatch, face_from_loc_px: np.ndarray, theta_l: np.ndarray, meta: ArtifactMetadata
               ) -> np.ndarray:
    """``[F, 3, K, P, P]`` normalized part patches, each warped once from the photo: part ``j`` of face ``i`` with
    ``part_from_face(theta_l[i, j]) @ face_from_loc[i] @ loc_from_image[i]``."""
    spec = meta.host_warp
    f, p = int(spec["face_size"]), int(spec["part_size"])
    theta_l = np.asarray(theta_l, dtype=np.float64)
    face_from_image = geo.compose(face_from_loc_px, batch.loc_from_image)                     # [F, 2, 3]
    part_from_image = geo.compose(geo.pixel_affine_from_theta(theta_l, (f, f), (p, p)), face_from_image[:, None])
    x = np.empty((len(batch), 3, theta_l.shape[1], p, p), np.float32)
    for i in range(len(batch)):
        for j in range(theta_l.shape[1]):
            normalize(geo.warp(batch.image, part_from_image[i, j], p), meta, out=x[i, :, j])
    return x


def assemble_local(shape_g: np.ndarray, theta_l: np.ndarray, delta: np.ndarray, scheme: LandmarkScheme
                   ) -> np.ndarray:
    """The local stage's inverse transforms on the host (those of :meth:`glsr.models.GLSRNet.local_from_patches`):
    each part point starts at ``shape_g`` mapped into its part's normalized frame (``theta_l`` inverted), moves by
    the local graph's ``delta`` ``[F, Np, 2]`` and is mapped back (``theta_l``, face_norm_from_part_norm); the
    contour keeps ``shape_g``. Returns ``[F, N, 2]`` in normalized face coordinates."""
    part_points = [i for p in scheme.parts for i in p]
    point_part = [j for j, p in enumerate(scheme.parts) for _ in p]
    theta_pt = np.asarray(theta_l, dtype=np.float64)[:, point_part]                       # [F, Np, 2, 3]
    start = np.asarray(shape_g, dtype=np.float64)[:, part_points, None]                  # [F, Np, 1, 2]
    local = geo.apply_affine(geo.invert_affine(theta_pt), start)[:, :, 0] + delta        # [F, Np, 2]
    out = np.array(shape_g, dtype=np.float64)
    out[:, part_points] = geo.apply_affine(theta_pt, local[:, :, None])[:, :, 0]
    return out


def run_host_warp(run_graph: Callable[..., Sequence[np.ndarray]], batch: HostWarpBatch,
                  meta: ArtifactMetadata) -> np.ndarray:
    """The network stage: ``run_graph(name, *inputs) -> [outputs]`` runs graph ``"reinit"``, ``"global"`` or
    ``"local"`` (:func:`glsr.models.hostwarp.graph_io`); returns the landmarks ``[F, N, 2]`` in loc pixels."""
    spec = meta.host_warp
    n = len(batch)
    theta_g = np.asarray(run_graph("reinit", batch.loc)[0], dtype=np.float64).reshape(n, 2, 3)
    faces, f_from_l = face_batch(batch, theta_g, meta)
    outs = run_graph("global", faces)
    shape = np.asarray(outs[0], dtype=np.float32).reshape(n, meta.num_points, 2)
    if "local" in spec["graphs"]:
        theta_l = np.asarray(outs[1], dtype=np.float32).reshape(n, -1, 2, 3)
        parts = part_batch(batch, f_from_l, theta_l, meta)
        delta = np.asarray(run_graph("local", parts)[0], dtype=np.float64).reshape(n, -1, 2)
        shape = assemble_local(shape, theta_l, delta, get_scheme(meta.scheme))
    face_px = geo.apply_affine(geo.pixel_from_norm(int(spec["face_size"])), shape)
    return geo.apply_affine(geo.invert_affine(f_from_l), face_px).astype(np.float32)
