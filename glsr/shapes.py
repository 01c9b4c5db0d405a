"""Canonical and parametric face shapes for every landmark scheme, from one small analytic face model.

Conventions
-----------
* Points are ``(x, y)``, x to the image right, y down; 3-D points add ``z``, the depth *towards the camera*.
* **Model coordinates** (the units of :class:`ShapeParams`): origin midway between the two eye centres on the
  line through the eye corners, unit = the width of the neutral face (so the neutral face is 0.9 wide).
* **Unit face coordinates** (what the public functions return): model coordinates mapped by the fixed per-axis
  scale + translation :data:`UNIT_FROM_MODEL` (``2x3``, named as in :mod:`glsr.geometry`), chosen so that the
  tight box of the neutral 68-point template is *exactly* ``[0.05, 0.95] x [0.05, 0.95]``. The same map is used for
  every scheme and every parameter value: the neutral 98-point template has the same tight box (its extreme points
  are the same jaw ends, chin and brow peak), the 19-point one (no jaw) a narrower one; a wider face
  (``face_width``) really is wider in unit coordinates. ``z`` is scaled like ``x``.
* "Left"/"right" are *image* left/right, as in :mod:`glsr.schemes`. Bilateral features are parametrized from the
  outer end (``0`` or ``-1``) to the inner end (``1``), so a feature and its mirror image share parameter values.
* Each scheme's point order is the table :data:`LAYOUTS`: a sequence of ``(feature, side, parameter values)``
  segments evaluated on the analytic model; the tests check it against ``scheme.flip`` and ``scheme.parts``.

This module imports only numpy and glsr.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Callable, Dict, Tuple

import numpy as np

from glsr.geometry import apply_affine, tight_box
from glsr.schemes import LandmarkScheme, get_scheme

# ------------------------------------------------------------------------------------------ model constants

UNIT_BOX: Tuple[float, float] = (0.05, 0.95)
"""Both axes of the neutral 68-point template's tight box in unit face coordinates."""

LEFT, CENTRE, RIGHT = -1, 0, 1
"""Side of a feature: image left (x < 0 in model coordinates), the midline, image right."""

JAW_DENSE = 361
"""Samples of the jaw curve used for its arc-length parametrization."""
FOREHEAD_EXPONENT = 0.8
"""Forehead curve ``y = -forehead_height * sin(t) ** FOREHEAD_EXPONENT`` (< 1: flatter top)."""
JAW_DROP = 0.6
"""An open mouth lowers the chin by this fraction of the inner-lip gap (the jaw rotates down)."""

UPPER_LID_SHARE = 0.58
"""Share of ``eye_height`` above the corner line (upper lid); the rest is below (lower lid)."""
LID_EXPONENT = 0.65
"""Lid profile ``(1 - xi**2) ** LID_EXPONENT`` between the corners (1/2 = ellipse; larger = more almond-like)."""
CLOSED_LID_SAG = 0.25
"""Closed lids meet on a curve sagging below the corner line by this fraction of ``eye_height``."""
GAZE_X_RANGE = 0.55
"""``gaze_x = +-1`` moves the iris by this fraction of ``(eye_width / 2 - iris_radius)``."""
GAZE_Y_RANGE = 0.25
"""``gaze_y = +-1`` moves the iris by this fraction of ``eye_height``."""

BROW_INNER_RAISE = 0.02
"""The inner brow end sits this much higher than the outer end (model units)."""
BROW_TIP_THICKNESS = 0.3
"""Brow thickness at the outer tip, as a fraction of ``brow_thickness`` (full thickness at the inner end)."""

NOSE_BRIDGE_TOP = -0.012
"""y of the top nose-bridge point (68: point 27), model units (slightly above the eye-corner line)."""
NOSE_WING_DROP = 0.05
NOSE_COLUMELLA_DROP = 0.08
"""Nose base below the tip: at the wings (``b = +-1``) and at the columella (``b = 0``), model units."""
NOSE_SIDE_TOP = (0.035, 0.06)
"""Top of the nose-side shading lines: ``(|x|, y)`` in model units (they run down to the wings)."""
NOSE_SIDE_END_RISE = 0.02
"""The nose-side lines end this much above the wing points (model units)."""
NOSTRIL_POSITION = (0.5, -0.012)
"""Nostril centre: ``(b, dy)``: at base parameter ``b`` and ``dy`` above the base curve."""
NOSTRIL_SIZE = (0.2, 0.07)
"""Nostril semi-axes as fractions of ``nose_width``."""

INNER_MOUTH_CORNER = 0.85
"""Inner-lip corners sit at this fraction of the mouth half-width."""
MOUTH_OPEN_GAP = 0.16
"""Inner-lip gap at the centre for ``mouth_open = 1`` (model units)."""
UPPER_GAP_SHARE = 0.3
"""Share of the opening taken by the upper lip moving up (the rest: lower lip and jaw moving down)."""
OPEN_NARROWING = 0.12
SMILE_WIDENING = 0.12
SMILE_LIFT = 0.05
"""Mouth half-width factors ``(1 - OPEN_NARROWING * open) * (1 + SMILE_WIDENING * smile)``; smiling lifts the
corners by ``SMILE_LIFT * smile`` (``u**2`` profile)."""
CUPID_BOW = 0.25
CUPID_WIDTH = 0.18
"""Upper-lip dip at the centre: thickness factor ``1 - CUPID_BOW * exp(-(u / CUPID_WIDTH)**2)``."""

FACE_DEPTH = 0.32
"""Depth of the face surface (an ellipsoid cap over the face outline) as a fraction of ``face_width``."""
DEPTH_OFFSETS: Dict[str, float] = {"brow": 0.012, "eye": -0.015, "iris": -0.008, "lips": 0.02, "inner_lips": 0.008}
"""Extra depth of features above the face surface (model units); the nose has its own profile below."""
NOSE_DEPTH = {"bridge": 0.03, "tip": 0.13, "wing": 0.045, "columella": 0.09, "side": 0.025}
"""Nose protrusion above the face surface (model units)."""

DENSE = {"outline": 96, "brow": 16, "lid": 20, "lip": 24, "ridge": 8, "nose_base": 12}
"""Samples per curve of :func:`face_geometry` (rendering outlines)."""


# ------------------------------------------------------------------------------------------ parameters


@dataclass(frozen=True)
class ShapeParams:
    """Parameters of the analytic face model, in model units (neutral face width 0.9; see module docstring).

    Identity: overall ``face_width``, ``face_height`` (corner line to chin), ``jaw_squareness`` (superellipse
    exponent of the jaw, 2 = ellipse), ``forehead_height`` (corner line to hairline; rendering only),
    ``eye_spacing`` (between eye centres), ``eye_width`` / ``eye_height`` (corner to corner / open lid
    to lid), ``eye_tilt`` (outer corner above the inner one), ``iris_radius``, ``brow_height`` (outer brow end above
    the corner line), ``brow_inner`` (half the gap between the brows), ``brow_length``, ``brow_arch``,
    ``brow_thickness``, ``nose_length`` (corner line to tip), ``nose_width`` (wing to wing), ``mouth_height``
    (corner line to mouth corners), ``mouth_width``, ``upper_lip`` / ``lower_lip`` (lip thickness at the centre).

    Expression, each in ``[0, 1]`` unless noted: ``mouth_open``, ``smile``, ``eyes_closed``, and the gaze
    ``gaze_x`` / ``gaze_y`` in ``[-1, 1]`` (image right / down).
    """

    face_width: float = 0.9
    face_height: float = 0.73
    jaw_squareness: float = 2.4
    forehead_height: float = 0.5
    eye_spacing: float = 0.38
    eye_width: float = 0.15
    eye_height: float = 0.052
    eye_tilt: float = 0.008
    iris_radius: float = 0.03
    brow_height: float = 0.085
    brow_inner: float = 0.085
    brow_length: float = 0.26
    brow_arch: float = 0.045
    brow_thickness: float = 0.03
    nose_length: float = 0.225
    nose_width: float = 0.175
    mouth_height: float = 0.415
    mouth_width: float = 0.345
    upper_lip: float = 0.042
    lower_lip: float = 0.06
    mouth_open: float = 0.0
    smile: float = 0.0
    eyes_closed: float = 0.0
    gaze_x: float = 0.0
    gaze_y: float = 0.0

    @classmethod
    def neutral(cls) -> "ShapeParams":
        """The canonical frontal, neutral face (:func:`template_shape`)."""
        return cls()

    def replace(self, **changes: float) -> "ShapeParams":
        return replace(self, **changes)


EXPRESSION_FIELDS: Tuple[str, ...] = ("mouth_open", "smile", "eyes_closed", "gaze_x", "gaze_y")
IDENTITY_FIELDS: Tuple[str, ...] = tuple(f.name for f in fields(ShapeParams) if f.name not in EXPRESSION_FIELDS)


# ------------------------------------------------------------------------------------------ features
# Every feature maps (params, side, parameter values [K]) -> model points [K, 3] (x, y, z-offset above the face
# surface); the face surface depth is added afterwards.


def _stack(x: np.ndarray, y: "np.ndarray | float", dz: "np.ndarray | float") -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    out = np.empty((x.shape[0], 3))
    out[:, 0], out[:, 1], out[:, 2] = x, y, dz
    return out


def _jaw_dense(p: ShapeParams) -> Tuple[np.ndarray, np.ndarray]:
    """Dense jaw from the image-left end through the chin to the image-right end, and its arc-length fractions."""
    t = np.linspace(np.pi, 0.0, JAW_DENSE)
    e = 2.0 / p.jaw_squareness
    c, s = np.cos(t), np.clip(np.sin(t), 0.0, None)
    x = 0.5 * p.face_width * np.sign(c) * np.abs(c) ** e
    v = s ** e
    y = p.face_height * v + JAW_DROP * MOUTH_OPEN_GAP * p.mouth_open * v ** 2
    seg = np.hypot(np.diff(x), np.diff(y))
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    return np.stack([x, y], axis=1), arc / arc[-1]


def _jaw(p: ShapeParams, side: int, f: np.ndarray) -> np.ndarray:
    """Jaw at arc-length fractions ``f`` (0 = image-left end at the corner line, 0.5 = chin, 1 = right end)."""
    xy, arc = _jaw_dense(p)
    f = np.asarray(f, dtype=np.float64)
    return _stack(np.interp(f, arc, xy[:, 0]), np.interp(f, arc, xy[:, 1]), 0.0)


def _forehead(p: ShapeParams, side: int, t: np.ndarray) -> np.ndarray:
    """Hairline from the right jaw end (``t = 0``) over the top to the left one (``t = pi``); rendering only."""
    t = np.asarray(t, dtype=np.float64)
    return _stack(0.5 * p.face_width * np.cos(t), -p.forehead_height * np.clip(np.sin(t), 0, None) ** FOREHEAD_EXPONENT,
                  0.0)


def _brow_upper(p: ShapeParams, side: int, s: np.ndarray) -> np.ndarray:
    """Upper brow edge at ``s`` (0 = outer end, 1 = inner end)."""
    s = np.asarray(s, dtype=np.float64)
    x = side * (p.brow_inner + p.brow_length * (1.0 - s))
    y = -(p.brow_height + BROW_INNER_RAISE * s) - p.brow_arch * np.sin(np.pi * s)
    return _stack(x, y, DEPTH_OFFSETS["brow"])


def _brow_lower(p: ShapeParams, side: int, s: np.ndarray) -> np.ndarray:
    """Lower brow edge below the upper edge's point ``s`` (thickness tapering to the outer tip)."""
    s = np.asarray(s, dtype=np.float64)
    up = _brow_upper(p, side, s)
    up[:, 1] += p.brow_thickness * (BROW_TIP_THICKNESS + (1.0 - BROW_TIP_THICKNESS) * np.sqrt(s))
    return up


def _eye_frame(p: ShapeParams, side: int, xi: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    xi = np.asarray(xi, dtype=np.float64)
    cx = side * 0.5 * p.eye_spacing
    x = cx - side * xi * 0.5 * p.eye_width
    base = 0.5 * p.eye_tilt * xi
    prof = np.clip(1.0 - xi ** 2, 0.0, None) ** LID_EXPONENT
    return x, base, prof


def _eye_upper(p: ShapeParams, side: int, xi: np.ndarray) -> np.ndarray:
    """Upper lid at ``xi`` (-1 = outer corner, +1 = inner corner); lids meet at the corners."""
    x, base, prof = _eye_frame(p, side, xi)
    c = p.eyes_closed
    y = base - prof * p.eye_height * ((1 - c) * UPPER_LID_SHARE - c * CLOSED_LID_SAG)
    return _stack(x, y, DEPTH_OFFSETS["eye"])


def _eye_lower(p: ShapeParams, side: int, xi: np.ndarray) -> np.ndarray:
    """Lower lid at ``xi`` (-1 = outer corner, +1 = inner corner)."""
    x, base, prof = _eye_frame(p, side, xi)
    c = p.eyes_closed
    y = base + prof * p.eye_height * ((1 - c) * (1 - UPPER_LID_SHARE) + c * CLOSED_LID_SAG)
    return _stack(x, y, DEPTH_OFFSETS["eye"])


def _iris(p: ShapeParams, side: int, k: np.ndarray) -> np.ndarray:
    """Iris (pupil) centre; ``k`` only sets the count. Neutral gaze: midway between the corners."""
    n = np.asarray(k).shape[0]
    x = side * 0.5 * p.eye_spacing + p.gaze_x * GAZE_X_RANGE * (0.5 * p.eye_width - p.iris_radius)
    y = p.gaze_y * GAZE_Y_RANGE * p.eye_height
    return _stack(np.full(n, x), y, DEPTH_OFFSETS["iris"])


def _ridge(p: ShapeParams, side: int, r: np.ndarray) -> np.ndarray:
    """Nose ridge at ``r`` (0 = bridge top between the eyes, 1 = tip)."""
    r = np.asarray(r, dtype=np.float64)
    y = NOSE_BRIDGE_TOP + r * (p.nose_length - NOSE_BRIDGE_TOP)
    return _stack(np.zeros_like(r), y, NOSE_DEPTH["bridge"] + r * (NOSE_DEPTH["tip"] - NOSE_DEPTH["bridge"]))


def _nose_base(p: ShapeParams, side: int, b: np.ndarray) -> np.ndarray:
    """Lower nose at ``b`` (-1 = image-left wing, 0 = columella below the tip, +1 = right wing)."""
    b = np.asarray(b, dtype=np.float64)
    y = p.nose_length + NOSE_WING_DROP + (NOSE_COLUMELLA_DROP - NOSE_WING_DROP) * (1.0 - b ** 2)
    dz = NOSE_DEPTH["wing"] + (NOSE_DEPTH["columella"] - NOSE_DEPTH["wing"]) * (1.0 - np.abs(b))
    return _stack(0.5 * p.nose_width * b, y, dz)


def _nose_side(p: ShapeParams, side: int, r: np.ndarray) -> np.ndarray:
    """Side of the nose from beside the bridge (``r = 0``) down to the wing (``r = 1``); rendering only."""
    r = np.asarray(r, dtype=np.float64)
    wing = _nose_base(p, side, np.array([float(side)]))[0]
    x0, y0 = side * NOSE_SIDE_TOP[0], NOSE_SIDE_TOP[1]
    bulge = r ** 3  # the wing flares out near the bottom
    x = x0 + (wing[0] - x0) * bulge
    y = y0 + (wing[1] - y0 - NOSE_SIDE_END_RISE) * r
    return _stack(x, y, NOSE_DEPTH["side"])


def _mouth_frame(p: ShapeParams, u: np.ndarray) -> Tuple[np.ndarray, np.ndarray, float]:
    u = np.asarray(u, dtype=np.float64)
    half = 0.5 * p.mouth_width * (1 - OPEN_NARROWING * p.mouth_open) * (1 + SMILE_WIDENING * p.smile)
    y0 = p.mouth_height - SMILE_LIFT * p.smile * u ** 2
    return u * half, y0, MOUTH_OPEN_GAP * p.mouth_open


def _inner_gap_profile(u: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - (np.asarray(u) / INNER_MOUTH_CORNER) ** 2, 0.0, None)


def _lip_profile(u: np.ndarray) -> np.ndarray:
    return np.sqrt(np.clip(1.0 - np.asarray(u) ** 2, 0.0, None))


def _lip_outer_upper(p: ShapeParams, side: int, u: np.ndarray) -> np.ndarray:
    """Outer edge of the upper lip at ``u`` (-1 = image-left mouth corner, +1 = right corner)."""
    x, y0, gap = _mouth_frame(p, u)
    bow = 1.0 - CUPID_BOW * np.exp(-(np.asarray(u) / CUPID_WIDTH) ** 2)
    y = y0 - gap * UPPER_GAP_SHARE * _inner_gap_profile(u) - p.upper_lip * _lip_profile(u) * bow
    return _stack(x, y, DEPTH_OFFSETS["lips"])


def _lip_outer_lower(p: ShapeParams, side: int, u: np.ndarray) -> np.ndarray:
    """Outer edge of the lower lip at ``u`` (-1 = image-left mouth corner, +1 = right corner)."""
    x, y0, gap = _mouth_frame(p, u)
    y = y0 + gap * (1 - UPPER_GAP_SHARE) * _inner_gap_profile(u) + p.lower_lip * _lip_profile(u)
    return _stack(x, y, DEPTH_OFFSETS["lips"])


def _lip_inner_upper(p: ShapeParams, side: int, v: np.ndarray) -> np.ndarray:
    """Inner edge of the upper lip at ``v`` (-1 = image-left inner corner, +1 = right inner corner)."""
    u = np.asarray(v, dtype=np.float64) * INNER_MOUTH_CORNER
    x, y0, gap = _mouth_frame(p, u)
    return _stack(x, y0 - gap * UPPER_GAP_SHARE * _inner_gap_profile(u), DEPTH_OFFSETS["inner_lips"])


def _lip_inner_lower(p: ShapeParams, side: int, v: np.ndarray) -> np.ndarray:
    """Inner edge of the lower lip at ``v`` (-1 = image-left inner corner, +1 = right inner corner)."""
    u = np.asarray(v, dtype=np.float64) * INNER_MOUTH_CORNER
    x, y0, gap = _mouth_frame(p, u)
    return _stack(x, y0 + gap * (1 - UPPER_GAP_SHARE) * _inner_gap_profile(u), DEPTH_OFFSETS["inner_lips"])


def _mouth_centre(p: ShapeParams, side: int, k: np.ndarray) -> np.ndarray:
    """Centre of the mouth opening (midway between the inner lips); ``k`` only sets the count."""
    n = np.asarray(k).shape[0]
    mid = 0.5 * (_lip_inner_upper(p, side, np.zeros(n)) + _lip_inner_lower(p, side, np.zeros(n)))
    return mid


FEATURES: Dict[str, Callable[[ShapeParams, int, np.ndarray], np.ndarray]] = {
    "jaw": _jaw, "forehead": _forehead, "brow_upper": _brow_upper, "brow_lower": _brow_lower,
    "eye_upper": _eye_upper, "eye_lower": _eye_lower, "iris": _iris, "ridge": _ridge, "nose_base": _nose_base,
    "nose_side": _nose_side, "lip_outer_upper": _lip_outer_upper, "lip_outer_lower": _lip_outer_lower,
    "lip_inner_upper": _lip_inner_upper, "lip_inner_lower": _lip_inner_lower, "mouth_centre": _mouth_centre,
}
"""Analytic features: ``name -> f(params, side, parameter values) -> [K, 3]`` model points (z = offset)."""


# ------------------------------------------------------------------------------------------ scheme layouts

Segment = Tuple[str, int, Tuple[float, ...]]


def _arc(n: int) -> Tuple[float, ...]:
    return tuple(i / (n - 1) for i in range(n))


_BROW_S = (0.0, 0.25, 0.5, 0.75, 1.0)          # outer -> inner
_BROW_LOWER_S = (1.0, 0.75, 0.5, 0.25)         # WFLW lower arc, inner -> outer (under the upper points)
_EYE_68 = 0.4                                  # upper / lower lid points at +-this between the corners
_EYE_98 = 0.6                                  # WFLW: three lid points at -this, 0, +this
_LIP_68 = (0.64, 0.28)                         # outer-lip points between corner and centre
_INNER_LIP_68 = 0.4                            # inner-lip points beside the centre

LAYOUTS: Dict[str, Tuple[Segment, ...]] = {
    "68": (
        ("jaw", CENTRE, _arc(17)),                                                          # 0-16
        ("brow_upper", LEFT, _BROW_S), ("brow_upper", RIGHT, _BROW_S[::-1]),                # 17-21, 22-26
        ("ridge", CENTRE, _arc(4)),                                                         # 27-30
        ("nose_base", CENTRE, (-1.0, -0.5, 0.0, 0.5, 1.0)),                                 # 31-35
        # eyes start at the image-left corner and go clockwise (outer corner first on the left eye)
        ("eye_upper", LEFT, (-1.0, -_EYE_68, _EYE_68, 1.0)), ("eye_lower", LEFT, (_EYE_68, -_EYE_68)),      # 36-41
        ("eye_upper", RIGHT, (1.0, _EYE_68, -_EYE_68, -1.0)), ("eye_lower", RIGHT, (-_EYE_68, _EYE_68)),    # 42-47
        ("lip_outer_upper", CENTRE, (-1.0, -_LIP_68[0], -_LIP_68[1], 0.0, _LIP_68[1], _LIP_68[0], 1.0)),  # 48-54
        ("lip_outer_lower", CENTRE, (_LIP_68[0], _LIP_68[1], 0.0, -_LIP_68[1], -_LIP_68[0])),             # 55-59
        ("lip_inner_upper", CENTRE, (-1.0, -_INNER_LIP_68, 0.0, _INNER_LIP_68, 1.0)),                     # 60-64
        ("lip_inner_lower", CENTRE, (_INNER_LIP_68, 0.0, -_INNER_LIP_68)),                                # 65-67
    ),
    "98": (
        ("jaw", CENTRE, _arc(33)),                                                          # 0-32
        ("brow_upper", LEFT, _BROW_S), ("brow_lower", LEFT, _BROW_LOWER_S),                 # 33-37, 38-41
        ("brow_upper", RIGHT, _BROW_S[::-1]), ("brow_lower", RIGHT, _BROW_LOWER_S[::-1]),   # 42-46, 47-50
        ("ridge", CENTRE, _arc(4)),                                                         # 51-54
        ("nose_base", CENTRE, (-1.0, -0.5, 0.0, 0.5, 1.0)),                                 # 55-59
        ("eye_upper", LEFT, (-1.0, -_EYE_98, 0.0, _EYE_98, 1.0)),                           # 60-64
        ("eye_lower", LEFT, (_EYE_98, 0.0, -_EYE_98)),                                      # 65-67
        ("eye_upper", RIGHT, (1.0, _EYE_98, 0.0, -_EYE_98, -1.0)),                          # 68-72
        ("eye_lower", RIGHT, (-_EYE_98, 0.0, _EYE_98)),                                     # 73-75
        ("lip_outer_upper", CENTRE, (-1.0, -_LIP_68[0], -_LIP_68[1], 0.0, _LIP_68[1], _LIP_68[0], 1.0)),  # 76-82
        ("lip_outer_lower", CENTRE, (_LIP_68[0], _LIP_68[1], 0.0, -_LIP_68[1], -_LIP_68[0])),             # 83-87
        ("lip_inner_upper", CENTRE, (-1.0, -_INNER_LIP_68, 0.0, _INNER_LIP_68, 1.0)),                     # 88-92
        ("lip_inner_lower", CENTRE, (_INNER_LIP_68, 0.0, -_INNER_LIP_68)),                                # 93-95
        ("iris", LEFT, (0.0,)), ("iris", RIGHT, (0.0,)),                                    # 96, 97
    ),
    "19": (
        ("brow_upper", LEFT, (0.0, 0.5, 1.0)), ("brow_upper", RIGHT, (1.0, 0.5, 0.0)),      # 0-2, 3-5
        ("eye_upper", LEFT, (-1.0,)), ("iris", LEFT, (0.0,)), ("eye_upper", LEFT, (1.0,)),  # 6-8
        ("eye_upper", RIGHT, (1.0,)), ("iris", RIGHT, (0.0,)), ("eye_upper", RIGHT, (-1.0,)),  # 9-11
        ("nose_base", CENTRE, (-1.0,)), ("ridge", CENTRE, (1.0,)), ("nose_base", CENTRE, (1.0,)),  # 12-14
        ("lip_outer_upper", CENTRE, (-1.0,)), ("mouth_centre", CENTRE, (0.0,)),             # 15-16
        ("lip_outer_upper", CENTRE, (1.0,)),                                                # 17
        ("jaw", CENTRE, (0.5,)),                                                            # 18 chin
    ),
}
"""Point order of each scheme as ``(feature, side, parameter values)`` segments (see the feature docstrings)."""


# ------------------------------------------------------------------------------------------ depth and frames


def _surface_depth(p: ShapeParams, xy: np.ndarray) -> np.ndarray:
    """Depth of the face surface (an ellipsoid cap whose rim is the face outline's ellipse), model units."""
    half_h = 0.5 * (p.face_height + p.forehead_height)
    yc = 0.5 * (p.face_height - p.forehead_height)
    q = 1.0 - (xy[..., 0] / (0.5 * p.face_width)) ** 2 - ((xy[..., 1] - yc) / half_h) ** 2
    return FACE_DEPTH * p.face_width * np.sqrt(np.clip(q, 0.0, None))


def _model_points(p: ShapeParams, segments: Tuple[Segment, ...]) -> np.ndarray:
    pts = np.concatenate([FEATURES[name](p, side, np.asarray(values, dtype=np.float64))
                          for name, side, values in segments], axis=0)
    pts[:, 2] += _surface_depth(p, pts[:, :2])
    return pts


def _unit_from_model() -> np.ndarray:
    t = tight_box(_model_points(ShapeParams.neutral(), LAYOUTS["68"])[:, :2])
    lo, hi = UNIT_BOX
    sx, sy = (hi - lo) / (t[2] - t[0]), (hi - lo) / (t[3] - t[1])
    return np.array([[sx, 0.0, lo - sx * t[0]], [0.0, sy, lo - sy * t[1]]])


UNIT_FROM_MODEL: np.ndarray = _unit_from_model()
"""``2x3`` per-axis scale + translation from model to unit face coordinates (see module docstring)."""
UNIT_FROM_MODEL.setflags(write=False)
DEPTH_SCALE: float = float(UNIT_FROM_MODEL[0, 0])
"""Model depth -> unit depth factor (depth is scaled like x)."""


def _to_unit(pts: np.ndarray) -> np.ndarray:
    out = np.empty_like(pts)
    out[:, :2] = apply_affine(UNIT_FROM_MODEL, pts[:, :2])
    out[:, 2] = pts[:, 2] * DEPTH_SCALE
    return out


def _layout(scheme: "str | int | LandmarkScheme") -> Tuple[LandmarkScheme, Tuple[Segment, ...]]:
    s = get_scheme(scheme)
    if s.name not in LAYOUTS:
        raise ValueError(f"no face-model layout for scheme {s.name!r}; known: {sorted(LAYOUTS)}")
    return s, LAYOUTS[s.name]


# ------------------------------------------------------------------------------------------ public API


def parametric_shape_3d(scheme: "str | int | LandmarkScheme", params: ShapeParams | None = None) -> np.ndarray:
    """Landmarks of ``scheme`` for ``params`` (default neutral) as ``[N, 3]`` ``(x, y, z)`` unit face coordinates,
    ``z`` the depth towards the camera (0 on the face outline's rim, largest at the nose tip)."""
    s, segments = _layout(scheme)
    pts = _to_unit(_model_points(params or ShapeParams.neutral(), segments))
    if len(pts) != s.num_points:
        raise AssertionError(f"layout of scheme {s.name} yields {len(pts)} points, expected {s.num_points}")
    return pts


def parametric_shape(scheme: "str | int | LandmarkScheme", params: ShapeParams | None = None) -> np.ndarray:
    """Landmarks ``[N, 2]`` float64 ``(x, y)`` of ``scheme`` in unit face coordinates for ``params``."""
    return parametric_shape_3d(scheme, params)[:, :2].copy()


def template_shape(scheme: "str | int | LandmarkScheme") -> np.ndarray:
    """Canonical frontal neutral face ``[N, 2]`` float64 ``(x, y)`` in unit face coordinates (x right, y down).

    The 68-point template's tight box is exactly ``[0.05, 0.95] x [0.05, 0.95]`` (the 98-point one's too; the
    19-point one, without jaw points, is narrower); see the module docstring for the frame.
    """
    return parametric_shape(scheme, ShapeParams.neutral())


@dataclass(frozen=True, eq=False)
class FaceGeometry:
    """Dense outlines of one face in unit face coordinates, ``[M, 3]`` ``(x, y, z)`` each (for rendering).

    ``outline``: closed face outline (jaw left -> chin -> right, then hairline back over the top); ``jaw``: the jaw
    alone; ``brows`` / ``eyes``: closed polygons (left, right), eyes clockwise from the image-left corner;
    ``irises``: ``[2, 3]`` iris centres (left, right) and ``iris_radius`` (unit x units); ``nose_ridge``,
    ``nose_base`` (left wing -> right wing) and ``nose_sides`` (left, right) polylines; ``nostrils`` ``[2, 3]``
    centres with semi-axes ``nostril_size`` (unit x units); ``lips_outer`` / ``lips_inner``: closed polygons
    (upper edge left -> right, lower edge back); ``mouth_gap`` / ``eye_opening``: inner-lip gap and lid
    opening at the centre (unit y units; 0 = closed).
    """

    outline: np.ndarray
    jaw: np.ndarray
    brows: Tuple[np.ndarray, np.ndarray]
    eyes: Tuple[np.ndarray, np.ndarray]
    irises: np.ndarray
    iris_radius: float
    nose_ridge: np.ndarray
    nose_base: np.ndarray
    nose_sides: Tuple[np.ndarray, np.ndarray]
    nostrils: np.ndarray
    nostril_size: Tuple[float, float]
    lips_outer: np.ndarray
    lips_inner: np.ndarray
    mouth_gap: float
    eye_opening: float

    def arrays(self) -> Dict[str, np.ndarray]:
        """Every point array by name (pairs split into ``name_0`` / ``name_1``), for bulk transforms."""
        out: Dict[str, np.ndarray] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                out[f.name] = v
            elif isinstance(v, tuple) and v and isinstance(v[0], np.ndarray):
                for k, a in enumerate(v):
                    out[f"{f.name}_{k}"] = a
        return out


def face_geometry(params: ShapeParams | None = None) -> FaceGeometry:
    """Dense outlines of the face model for ``params`` (default neutral), on the same analytic curves as the
    landmarks of :func:`parametric_shape` (so rendered pixels and landmarks agree exactly)."""
    p = params or ShapeParams.neutral()
    n = DENSE
    jaw_f = tuple(np.linspace(0.0, 1.0, n["outline"]))
    top_t = tuple(np.linspace(0.0, np.pi, n["outline"])[1:-1])
    s_up, s_lo = tuple(np.linspace(0.0, 1.0, n["brow"])), tuple(np.linspace(1.0, 0.0, n["brow"]))
    xi = np.linspace(-1.0, 1.0, n["lid"])
    lip = np.linspace(-1.0, 1.0, n["lip"])
    ridge = tuple(np.linspace(0.0, 1.0, n["ridge"]))
    bx, dy = NOSTRIL_POSITION

    def eye(side: int) -> Tuple[Segment, ...]:
        # clockwise from the image-left corner: left eye outer->inner on top, right eye inner->outer on top
        top = xi if side == LEFT else xi[::-1]
        return ("eye_upper", side, tuple(top)), ("eye_lower", side, tuple(top[::-1][1:-1]))

    def lips(upper: str, lower: str) -> Tuple[Segment, ...]:
        return (upper, CENTRE, tuple(lip)), (lower, CENTRE, tuple(lip[::-1][1:-1]))

    groups: Dict[str, Tuple[Segment, ...]] = {
        "jaw": (("jaw", CENTRE, jaw_f),),
        "forehead": (("forehead", CENTRE, top_t),),
        "brow_0": (("brow_upper", LEFT, s_up), ("brow_lower", LEFT, s_lo)),
        "brow_1": (("brow_upper", RIGHT, s_up), ("brow_lower", RIGHT, s_lo)),
        "eye_0": eye(LEFT), "eye_1": eye(RIGHT),
        "irises": (("iris", LEFT, (0.0,)), ("iris", RIGHT, (0.0,))),
        "ridge": (("ridge", CENTRE, ridge),),
        "nose_base": (("nose_base", CENTRE, tuple(np.linspace(-1.0, 1.0, n["nose_base"]))),),
        "nose_side_0": (("nose_side", LEFT, ridge),), "nose_side_1": (("nose_side", RIGHT, ridge),),
        "nostrils": (("nose_base", CENTRE, (-bx, bx)),),
        "lips_outer": lips("lip_outer_upper", "lip_outer_lower"),
        "lips_inner": lips("lip_inner_upper", "lip_inner_lower"),
        "inner_mid": (("lip_inner_upper", CENTRE, (0.0,)), ("lip_inner_lower", CENTRE, (0.0,))),
        "lid_mid": (("eye_upper", LEFT, (0.0,)), ("eye_lower", LEFT, (0.0,))),
    }
    counts = [sum(len(seg[2]) for seg in g) for g in groups.values()]
    allpts = _to_unit(_model_points(p, tuple(seg for g in groups.values() for seg in g)))
    c = dict(zip(groups, np.split(allpts, np.cumsum(counts)[:-1])))
    nostrils = c["nostrils"].copy()
    nostrils[:, 1] += dy * UNIT_FROM_MODEL[1, 1]
    return FaceGeometry(
        outline=np.concatenate([c["jaw"], c["forehead"]]),
        jaw=c["jaw"],
        brows=(c["brow_0"], c["brow_1"]),
        eyes=(c["eye_0"], c["eye_1"]),
        irises=c["irises"],
        iris_radius=p.iris_radius * DEPTH_SCALE,
        nose_ridge=c["ridge"],
        nose_base=c["nose_base"],
        nose_sides=(c["nose_side_0"], c["nose_side_1"]),
        nostrils=nostrils,
        nostril_size=(NOSTRIL_SIZE[0] * p.nose_width * DEPTH_SCALE, NOSTRIL_SIZE[1] * p.nose_width * DEPTH_SCALE),
        lips_outer=c["lips_outer"],
        lips_inner=c["lips_inner"],
        mouth_gap=float(c["inner_mid"][1, 1] - c["inner_mid"][0, 1]),
        eye_opening=float(c["lid_mid"][1, 1] - c["lid_mid"][0, 1]),
    )


def mirror_shape(points: np.ndarray, scheme: "str | int | LandmarkScheme") -> np.ndarray:
    """Mirror a unit-coordinate shape ``[..., N, 2]`` about ``x = 0.5`` and relabel with ``scheme.flip``."""
    s = get_scheme(scheme)
    pts = np.array(points, dtype=np.float64)
    pts[..., 0] = 1.0 - pts[..., 0]
    return pts[..., list(s.flip), :]
