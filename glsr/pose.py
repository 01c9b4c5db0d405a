"""Head pose from 2-D landmarks: a yaw index (how far a face is turned towards a profile) and the pose tertiles the
benchmarks report NME on.

Conventions: points ``(x, y)`` in any pixel frame, image left/right as in :mod:`glsr.schemes`. The yaw index needs
the jaw contour's two ends, the nose tip and the eyes: it is defined on 300-W's 68 points and read from any scheme
with a correspondence to them (:func:`glsr.schemes.conversion`, e.g. WFLW's 98 points).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from glsr.schemes import LandmarkScheme, conversion, get_scheme

JAW_ENDS_68: Tuple[int, int] = (0, 16)
NOSE_TIP_68 = 30
EYES_68: Tuple[Tuple[int, ...], Tuple[int, ...]] = (tuple(range(36, 42)), tuple(range(42, 48)))
"""The 68-point indices the yaw index reads: the jaw contour's ends, the nose tip, the two eyes' six points each."""
TERTILE_NAMES: Tuple[str, str, str] = ("frontal", "middle", "large yaw")


def as_68(landmarks: np.ndarray, scheme: "str | int | LandmarkScheme") -> np.ndarray:
    """Landmarks ``[..., N, 2]`` of ``scheme`` as the 68 points (``ValueError`` for a scheme without them)."""
    s = get_scheme(scheme)
    p = np.asarray(landmarks, dtype=np.float64)
    if p.shape[-2:] != (s.num_points, 2):
        raise ValueError(f"landmarks of scheme {s.name} must be [..., {s.num_points}, 2], got {p.shape}")
    try:
        idx = conversion(s, "68")
    except ValueError:
        raise ValueError(f"the yaw index needs the jaw contour and the nose tip of the 68-point markup; scheme "
                         f"{s.name} has no correspondence to it") from None
    return p[..., list(idx), :]


def yaw_index(landmarks: np.ndarray, scheme: "str | int | LandmarkScheme" = "68") -> np.ndarray:
    """Signed yaw index of faces ``[..., N, 2]`` (shape ``[...]``): with the roll removed (the line between the eye
    centres made horizontal), ``(d_left - d_right) / (|d_left| + |d_right|)`` where ``d_left`` / ``d_right`` are the
    horizontal distances from the nose tip to the image-left / image-right end of the jaw contour. 0 for a frontal
    face, towards +-1 as the head turns to a profile (+ when the nose moves towards the image right); beyond 1
    when the nose tip passes the jaw's end."""
    p = as_68(landmarks, scheme)
    eye_a = p[..., list(EYES_68[0]), :].mean(axis=-2)
    eye_b = p[..., list(EYES_68[1]), :].mean(axis=-2)
    ang = np.arctan2(eye_b[..., 1] - eye_a[..., 1], eye_b[..., 0] - eye_a[..., 0])
    c, s = np.cos(-ang)[..., None], np.sin(-ang)[..., None]
    x = p[..., 0] * c - p[..., 1] * s
    d0 = x[..., NOSE_TIP_68] - x[..., JAW_ENDS_68[0]]
    d1 = x[..., JAW_ENDS_68[1]] - x[..., NOSE_TIP_68]
    return (d0 - d1) / np.maximum(np.abs(d0) + np.abs(d1), 1e-9)


def pose_tertiles(yaw: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Faces split in thirds by ``|yaw|``: ``(tertile [F] in 0, 1, 2 (:data:`TERTILE_NAMES`), edges [2])``; the
    edges are the 1/3 and 2/3 percentiles of ``|yaw|`` (a face on an edge goes to the upper third)."""
    a = np.abs(np.asarray(yaw, dtype=np.float64))
    edges = np.percentile(a, [100 / 3, 200 / 3])
    return np.digitize(a, edges), edges


def pose_repeats(yaw: np.ndarray, strength: float) -> np.ndarray:
    """Oversampling of turned faces: each face's sample multiplier ``1 + round(strength * min(|yaw|, 1))``
    (integers >= 1; ``strength`` 0 = every face once)."""
    if not strength >= 0:
        raise ValueError(f"pose oversampling strength must be >= 0, got {strength}")
    a = np.minimum(np.abs(np.asarray(yaw, dtype=np.float64)), 1.0)
    return (1 + np.round(strength * a)).astype(np.int64)
