"""Geometry in one place: affine matrices between named frames, face-box crops, and the in-graph resampler.

Conventions (used everywhere in glsr: training, export, runtime)
-----------------------------------------------------------------
* Points are ``(x, y)``; arrays of points have shape ``[..., N, 2]``.
* **Pixel frame**: pixel centres sit at integer coordinates (OpenCV's convention); an image of width ``W``
  spans ``[-0.5, W - 0.5]``.
* **Normalized frame** of an image of size ``(W, H)``: ``u = (2x + 1) / W - 1`` (``align_corners=False``), so
  ``u = -1`` is the left *edge* of pixel 0 and ``u = +1`` the right edge of pixel ``W-1``.
* Affine matrices are ``2x3`` (or ``3x3`` homogeneous) and are named ``<to>_from_<from>``: ``crop_from_image``
  maps image pixel coordinates to crop pixel coordinates. ``apply_affine(m, p) = p @ m[:, :2].T + m[:, 2]``.
* A *sampling* matrix ``theta`` (the STN / ``F.affine_grid`` convention) maps **normalized output coordinates to
  normalized input coordinates**: ``theta = src_norm_from_dst_norm``. ``cv2.warpAffine`` takes the opposite,
  ``dst_px_from_src_px``; :func:`theta_from_pixel_affine` converts.
* A face crop follows the authors' released code: the box ``(x1, y1, x2, y2)``, scaled about its centre by
  ``enlarge``, is mapped corner-to-corner onto the crop's outer pixel *centres*: ``(x1, y1) -> (0, 0)`` and
  ``(x2, y2) -> (S-1, S-1)``. Non-square boxes are stretched (the network's STN undoes any affine).

This module imports nothing from glsr; PyTorch is imported by the in-graph functions that use it, so the
numpy half (crops, affines) loads without it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence, Tuple

import numpy as np

if TYPE_CHECKING:
    import torch

# ------------------------------------------------------------------------------------------ numpy affines


def to_homogeneous(m: np.ndarray) -> np.ndarray:
    """``[..., 2, 3]`` -> ``[..., 3, 3]``."""
    m = np.asarray(m, dtype=np.float64)
    bottom = np.zeros(m.shape[:-2] + (1, 3))
    bottom[..., 0, 2] = 1.0
    return np.concatenate([m, bottom], axis=-2)


def compose(*ms: np.ndarray) -> np.ndarray:
    """``compose(c_from_b, b_from_a) = c_from_a`` (right-most applied first); returns ``2x3``."""
    out = np.eye(3)
    for m in ms:
        out = out @ to_homogeneous(m)
    return out[..., :2, :]


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a ``[..., 2, 3]`` affine (``a_from_b`` -> ``b_from_a``)."""
    return np.linalg.inv(to_homogeneous(m))[..., :2, :]


def apply_affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Map points ``[..., N, 2]`` with ``m`` ``[..., 2, 3]``."""
    m = np.asarray(m, dtype=np.float64)
    pts = np.asarray(pts, dtype=np.float64)
    return pts @ np.swapaxes(m[..., :2], -1, -2) + m[..., None, :, 2]


def norm_from_pixel(width: int, height: int | None = None) -> np.ndarray:
    """``2x3`` matrix from pixel to normalized coordinates of an image of size ``(width, height)``."""
    height = width if height is None else height
    return np.array([[2.0 / width, 0.0, 1.0 / width - 1.0], [0.0, 2.0 / height, 1.0 / height - 1.0]])


def pixel_from_norm(width: int, height: int | None = None) -> np.ndarray:
    """Inverse of :func:`norm_from_pixel`: ``x = ((u + 1) * W - 1) / 2``."""
    height = width if height is None else height
    return np.array([[width / 2.0, 0.0, (width - 1) / 2.0], [0.0, height / 2.0, (height - 1) / 2.0]])


def theta_from_pixel_affine(dst_from_src_px: np.ndarray, src_size: Tuple[int, int],
                            dst_size: Tuple[int, int]) -> np.ndarray:
    """Sampling ``theta`` (``src_norm_from_dst_norm``) for a ``cv2.warpAffine``-style pixel matrix.

    ``src_size`` and ``dst_size`` are ``(width, height)``.
    """
    src_from_dst = invert_affine(dst_from_src_px)
    return compose(norm_from_pixel(*src_size), src_from_dst, pixel_from_norm(*dst_size))


def pixel_affine_from_theta(theta: np.ndarray, src_size: Tuple[int, int], dst_size: Tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`theta_from_pixel_affine`: ``dst_px_from_src_px`` for a sampling ``theta``."""
    src_px_from_dst_px = compose(pixel_from_norm(*src_size), theta, norm_from_pixel(*dst_size))
    return invert_affine(src_px_from_dst_px)


def affine_from_points(src: np.ndarray, dst: np.ndarray, similarity: bool = False) -> np.ndarray:
    """Least-squares ``dst_from_src`` affine (or similarity) from point pairs ``[N, 2]``."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if similarity:
        # [x -y 1 0; y x 0 1] [a b tx ty]^T = [x'; y']
        n = len(src)
        a = np.zeros((2 * n, 4))
        a[0::2] = np.stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)], 1)
        a[1::2] = np.stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)], 1)
        p, *_ = np.linalg.lstsq(a, dst.reshape(-1), rcond=None)
        return np.array([[p[0], -p[1], p[2]], [p[1], p[0], p[3]]])
    a = np.concatenate([src, np.ones((len(src), 1))], 1)
    sol, *_ = np.linalg.lstsq(a, dst, rcond=None)
    return sol.T


def cv2_rotation(center: Sequence[float], degrees: float, scale: float = 1.0) -> np.ndarray:
    """``2x3`` rotation about ``center`` scaled by ``scale`` (counter-clockwise on screen for positive angles),
    the matrix of ``cv2.getRotationMatrix2D``."""
    a = np.deg2rad(degrees)
    c, s = np.cos(a) * scale, np.sin(a) * scale
    cx, cy = float(center[0]), float(center[1])
    return np.array([[c, s, (1 - c) * cx - s * cy], [-s, c, s * cx + (1 - c) * cy]])


# ------------------------------------------------------------------------------------------ boxes and crops


MIN_BOX_SIDE = 1.0
"""Smallest face box side accepted, pixels."""
MAX_BOX_TO_IMAGE = 4.0
"""Largest face box side accepted, as a multiple of the image's longer side (a face cut off by the border can
give a box larger than the picture; 30x is a box given in another frame or unit)."""


def validate_box(box: Sequence[float], image_size: Tuple[int, int] | None = None) -> np.ndarray:
    """Check a face box ``(x1, y1, x2, y2)``; raise ``ValueError`` naming the problem. ``image_size=(W, H)``."""
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.size != 4:
        raise ValueError(f"a face box needs 4 numbers (x1, y1, x2, y2), got {b.size}: {box!r}")
    if not np.all(np.isfinite(b)):
        raise ValueError(f"face box {b.tolist()} contains NaN or infinity")
    if b[2] <= b[0] or b[3] <= b[1]:
        raise ValueError(f"face box {b.tolist()} is empty: need x2 > x1 and y2 > y1")
    side = min(b[2] - b[0], b[3] - b[1])
    if side < MIN_BOX_SIDE:
        raise ValueError(f"face box {b.tolist()} is {side:.3g} px across, smaller than {MIN_BOX_SIDE:g} px: no face "
                         "fits; give the box in image pixels (x1, y1, x2, y2), not as fractions of the image")
    if image_size is not None:
        w, h = image_size
        if b[2] < 0 or b[3] < 0 or b[0] > w - 1 or b[1] > h - 1:
            raise ValueError(f"face box {b.tolist()} lies entirely outside the {w}x{h} image")
        big = max(b[2] - b[0], b[3] - b[1])
        if big > MAX_BOX_TO_IMAGE * max(w, h):
            raise ValueError(f"face box {b.tolist()} is {big:.0f} px across, {big / max(w, h):.0f}x the {w}x{h} "
                             f"image (at most {MAX_BOX_TO_IMAGE:g}x): give the box in pixels of this image, in the "
                             "frame the landmarks use")
    return b


def enlarge_box(box: Sequence[float], enlarge: float) -> np.ndarray:
    """Scale a box ``(x1, y1, x2, y2)`` about its centre."""
    b = np.asarray(box, dtype=np.float64)
    c = (b[..., :2] + b[..., 2:]) / 2
    h = (b[..., 2:] - b[..., :2]) / 2 * enlarge
    return np.concatenate([c - h, c + h], axis=-1)


def crop_from_image(box: Sequence[float], size: int, enlarge: float = 1.0) -> np.ndarray:
    """``crop_from_image`` pixel affine for a face box (see module docstring for the corner convention)."""
    x1, y1, x2, y2 = enlarge_box(validate_box(box), enlarge)
    sx = (size - 1) / (x2 - x1)
    sy = (size - 1) / (y2 - y1)
    return np.array([[sx, 0.0, -x1 * sx], [0.0, sy, -y1 * sy]])


def warp(image: np.ndarray, dst_from_src: np.ndarray, size: int | Tuple[int, int]) -> np.ndarray:
    """Resample ``image`` with a ``dst_from_src`` pixel affine (bilinear, zero border). ``size`` is ``S`` or ``(W, H)``."""
    import cv2

    wh = (size, size) if isinstance(size, int) else tuple(size)
    return cv2.warpAffine(image, np.asarray(dst_from_src, dtype=np.float64), wh, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def crop_face(image: np.ndarray, box: Sequence[float], size: int, enlarge: float) -> Tuple[np.ndarray, np.ndarray]:
    """Crop a face: returns ``(crop, crop_from_image)``."""
    m = crop_from_image(box, size, enlarge)
    return warp(image, m, size), m


def uncrop_points(points_crop: np.ndarray, crop_from_image_m: np.ndarray) -> np.ndarray:
    """Map landmarks from crop pixels back to image pixels."""
    return apply_affine(invert_affine(crop_from_image_m), points_crop)


def tight_box(points: np.ndarray) -> np.ndarray:
    """Tight ``(x1, y1, x2, y2)`` box of points ``[..., N, 2]``."""
    p = np.asarray(points, dtype=np.float64)
    return np.concatenate([p.min(axis=-2), p.max(axis=-2)], axis=-1)


# ------------------------------------------------------------------------------------------ torch, in-graph


def base_grid(height: int, width: int) -> torch.Tensor:
    """Homogeneous normalized coordinates of an output grid's pixel centres, ``[H*W, 3]`` (x, y, 1)."""
    import torch

    xs = (torch.arange(width, dtype=torch.float32) * 2 + 1) / width - 1
    ys = (torch.arange(height, dtype=torch.float32) * 2 + 1) / height - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1), torch.ones(height * width)], dim=1)


def affine_grid(theta: torch.Tensor, base: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``F.affine_grid(theta, align_corners=False)`` from element-wise Mul/Add: ``[B, H, W, 2]``.

    ``base`` is :func:`base_grid(height, width)` (a constant buffer, so the exported graph holds no
    AffineGrid node). ``theta`` may also be ``[B, K, 2, 3]`` (K grids per batch item, e.g. the part patches);
    the grids are then stacked along the height: ``[B, K*H, W, 2]``. Element-wise on purpose: a broadcast
    batched MatMul ``[H*W, 3] x [B, 3, 2]`` becomes a loop over the batch in MNN (0.8-2.4 ms slower,
    ``benchmarks/studies/glue_study.py``); the base coordinates times a per-grid scalar keep onnxruntime's broadcast on
    its fast path (a ``[H*W, 1] x [B, 1, 2]`` broadcast is 3x slower there).
    """
    import torch

    t = theta.reshape(theta.shape[0], -1, 2, 3)                                 # [B, K, 2, 3]
    bx, by = base[:, 0], base[:, 1]                                              # [H*W]
    gx = bx * t[:, :, 0, 0:1] + by * t[:, :, 0, 1:2] + t[:, :, 0, 2:3]           # [B, K, H*W]
    gy = bx * t[:, :, 1, 0:1] + by * t[:, :, 1, 1:2] + t[:, :, 1, 2:3]
    return torch.stack([gx, gy], -1).reshape(theta.shape[0], -1, width, 2)


def grid_sample_bilinear(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear sampling with zero padding, ``align_corners=False`` (ONNX GridSample, opset 16)."""
    import torch.nn.functional as F

    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def gather_sample_bilinear(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Same result as :func:`grid_sample_bilinear` built from floor / clip / gather only.

    For targets without a GridSample op (CoreML neural-network format, older runtimes). Indices are int32 and
    all shapes are static given the input shapes. The image is padded by one zero pixel on every side so that
    samples outside the image blend towards zero exactly as ``padding_mode="zeros"`` does.
    """
    import torch
    import torch.nn.functional as F

    b, c, h, w = image.shape
    ho, wo = grid.shape[1], grid.shape[2]
    hp, wp = h + 2, w + 2
    padded = F.pad(image, (1, 1, 1, 1))
    flat = padded.permute(0, 2, 3, 1).reshape(b * hp * wp, c)
    # pixel coordinates in the padded image (pixel centres at integers)
    x = ((grid[..., 0] + 1) * w - 1) * 0.5 + 1
    y = ((grid[..., 1] + 1) * h - 1) * 0.5 + 1
    x0f = torch.floor(x)
    y0f = torch.floor(y)
    wx1 = x - x0f
    wy1 = y - y0f
    wx0 = 1 - wx1
    wy0 = 1 - wy1
    x0 = torch.clamp(x0f, 0, wp - 1)
    x1 = torch.clamp(x0f + 1, 0, wp - 1)
    y0 = torch.clamp(y0f, 0, hp - 1)
    y1 = torch.clamp(y0f + 1, 0, hp - 1)
    offset = (torch.arange(b, dtype=image.dtype, device=image.device) * float(hp * wp)).reshape(b, 1, 1)

    def tap(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        idx = (yy * wp + xx + offset).reshape(-1).to(torch.int32)
        return torch.index_select(flat, 0, idx).reshape(b, ho, wo, c)

    out = (tap(y0, x0) * (wy0 * wx0)[..., None] + tap(y0, x1) * (wy0 * wx1)[..., None]
           + tap(y1, x0) * (wy1 * wx0)[..., None] + tap(y1, x1) * (wy1 * wx1)[..., None])
    return out.permute(0, 3, 1, 2)


SAMPLERS = {"gridsample": grid_sample_bilinear, "gather": gather_sample_bilinear}


def get_sampler(name: str):
    """Return the sampling function for ``"gridsample"`` or ``"gather"``."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}") from None


def invert_theta(theta: torch.Tensor) -> torch.Tensor:
    """Invert ``[..., 2, 3]`` affines with element-wise ops (adjugate over the determinant)."""
    import torch

    a, b, tx = theta[..., 0:1, 0:1], theta[..., 0:1, 1:2], theta[..., 0:1, 2:3]
    c, d, ty = theta[..., 1:2, 0:1], theta[..., 1:2, 1:2], theta[..., 1:2, 2:3]
    inv_det = 1.0 / (a * d - b * c)
    lin = torch.cat([torch.cat([d, -b], -1), torch.cat([-c, a], -1)], -2) * inv_det  # [..., 2, 2]
    return torch.cat([lin, -(lin[..., 0:1] * tx + lin[..., 1:2] * ty)], -1)


def compose_theta(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """``outer ∘ inner`` for ``[..., 2, 3]`` affines (``c_from_b``, ``b_from_a`` -> ``c_from_a``).

    Element-wise (broadcast Mul/Add; no batched MatMul, see :func:`affine_grid`, and no ReduceSum, which
    MNN 3.6 computes wrongly in int8 models).
    """
    import torch

    m = outer[..., 0:1] * inner[..., 0:1, :] + outer[..., 1:2] * inner[..., 1:2, :]  # outer_lin @ inner
    return torch.cat([m[..., :2], m[..., 2:] + outer[..., 2:]], -1)


def transform_points(theta: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Apply affines to points ``[B, N, 2]`` (x, y): ``theta`` ``[B, 2, 3]`` (one affine for all points) or
    ``[B, N, 2, 3]`` (one per point). Element-wise, like :func:`compose_theta`."""
    if theta.dim() == pts.dim():
        theta = theta.unsqueeze(-3)
    return pts[..., 0:1] * theta[..., 0] + pts[..., 1:2] * theta[..., 1] + theta[..., 2]
