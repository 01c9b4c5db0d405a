"""Procedural faces: the project's embedded default data set (no download, exact ground truth).

Each sample is a face-like BGR ``uint8`` image rendered from the analytic face model of :mod:`glsr.shapes`
(random identity and expression), posed in 3-D (yaw / pitch foreshorten the far side, then in-plane roll), drawn
over a cluttered background with random skin tone, lighting, blur and noise, optionally covered by COFW-like
occluders, together with its exact 68- or 98-point landmarks, a simulated detector box and a per-landmark
occlusion mask.

Conventions
-----------
* Landmarks are ``float64 [N, 2]`` image pixels ``(x, y)``, pixel centres at integers (:mod:`glsr.geometry`);
  OpenCV drawing uses the same convention, so the rendered curves pass exactly through the landmarks.
* Pose angles are degrees. ``yaw > 0`` turns the face towards the image right (the nose tip moves right),
  ``pitch > 0`` turns it up (the nose tip moves up), ``roll`` follows :func:`glsr.geometry.cv2_rotation`
  (positive = counter-clockwise on screen). Projection is orthographic (weak perspective).
* Determinism: sample ``i`` depends only on ``(config, i)``. Its random streams are
  ``np.random.default_rng([seed, SPLITS[split], i, stream])`` for the streams of :data:`STREAMS`, so e.g. changing
  the box or annotation-noise settings never changes the image.
* Boxes ``(x1, y1, x2, y2)`` are simulated detector boxes built from the tight box of the *clean* landmarks with
  the offsets of ``glsr.train.augment.box_offsets``: centre shift ``(dx, dy)`` in units of the tight box's width /
  height, log scales of width and height.
* Annotation noise ``delta`` (the paper's Table 1 protocol) is given in pixels *at 256x256*: every landmark moves
  in a uniformly random direction by a radius uniform in ``[0, delta * image_size / 256]``. ``landmarks`` are then
  the noisy training annotation and ``landmarks_clean`` the ground truth.
* ``occluded[i]`` is True when landmark ``i`` (clean position) lies inside an occluder polygon
  (:func:`cv2.pointPolygonTest`); self-occlusion by the head's pose is not flagged.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from torch.utils.data import Dataset

from glsr.boxes import PROCEDURAL_BOX
from glsr.geometry import apply_affine, compose, cv2_rotation, tight_box
from glsr.schemes import LandmarkScheme, get_scheme
from glsr.shapes import IDENTITY_FIELDS, FaceGeometry, ShapeParams, face_geometry, parametric_shape_3d
from glsr import atomic

PathLike = Union[str, os.PathLike]
Colour = Tuple[float, float, float]

# ------------------------------------------------------------------------------------------ constants

SPLITS: Dict[str, int] = {"train": 0, "val": 1, "test": 2}
"""Split name -> seed word: the splits are disjoint random streams of the same generator."""
STREAMS: Dict[str, int] = {"geometry": 0, "appearance": 1, "occlusion": 2, "box": 3, "annotation_noise": 4}
"""Independent random streams of one sample (last seed word)."""

REFERENCE_SIZE = 256
"""Image size at which ``annotation_noise`` and the blur / line-width settings are expressed."""
FACE_CENTRE_UNIT = np.array([0.5, 0.5, 0.0])
"""Head rotation centre in unit face coordinates (see :mod:`glsr.shapes`)."""
UNIT_FACE_WIDTH = 0.9
"""Width of the neutral template in unit face coordinates (``face_size`` is measured on it)."""
SUBPIXEL_BITS = 4
"""Fractional bits of OpenCV drawing coordinates."""
SUBPIXEL = float(1 << SUBPIXEL_BITS)

# BGR palettes
SKIN_TONES: Tuple[Colour, ...] = ((189, 208, 241), (150, 186, 224), (110, 150, 198), (80, 120, 170),
                                  (58, 88, 130), (38, 56, 88))
HAIR_COLOURS: Tuple[Colour, ...] = ((20, 20, 25), (25, 40, 60), (40, 70, 110), (90, 150, 200), (150, 150, 155),
                                    (30, 50, 140))
IRIS_COLOURS: Tuple[Colour, ...] = ((30, 50, 90), (40, 70, 110), (150, 110, 60), (80, 120, 70), (70, 70, 80))
SCLERA: Colour = (222, 228, 235)
MOUTH_INTERIOR: Colour = (30, 25, 60)
TEETH: Colour = (210, 222, 230)
PUPIL: Colour = (12, 12, 15)
CATCHLIGHT: Colour = (245, 245, 245)
LIP_FACTOR: Colour = (0.72, 0.68, 0.98)
"""Lip colour = skin colour times these per-channel factors (redder and darker)."""

# shading factors relative to the skin colour
SHADE = {"neck": 0.78, "jaw_rim": 0.72, "nose_side": 0.82, "nose_base": 0.7, "lip_seam": 0.45,
         "nostril": 0.3, "ridge": 1.12, "lash": 0.18, "lower_lid": 0.6}
# line widths as fractions of the face width in pixels
WIDTH = {"jaw_rim": 0.018, "nose_side": 0.012, "nose_base": 0.01, "ridge": 0.014, "lash": 0.012,
         "lower_lid": 0.006, "lip_seam": 0.008, "closed_lid": 0.012}
PUPIL_FRACTION = 0.42
"""Pupil radius / iris radius."""
CATCHLIGHT_OFFSET = (0.3, -0.3)
CATCHLIGHT_FRACTION = 0.18
"""Catchlight centre offset and radius, as fractions of the iris radius."""
TEETH_FRACTION = 0.35
"""Teeth band height as a fraction of the mouth gap (drawn below the upper inner lip)."""
MIN_OPENING_PX = 1.0
"""Eyes / mouths opening less than this (pixels) are drawn closed (a line, no interior)."""
NECK_HALF_WIDTH = 0.2
NECK_TOP = 0.55
NECK_LENGTH = 1.2
"""Neck polygon in unit face coordinates: half-width, top (y) and length below it."""
HAIR_AXES = (0.53, 0.5)
HAIR_CENTRE_Y = 0.22
"""Hair ellipse behind the head (unit face coordinates): semi-axes and centre height."""
ELLIPSE_VERTICES = 32
"""Vertices of ellipse polygons (hair, occluders)."""
OCCLUDER_KINDS = ("rectangle", "ellipse", "polygon")
TEXTURES = ("plain", "stripes", "noise")
POLYGON_VERTICES = (5, 9)
POLYGON_RADIUS = (0.5, 1.0)
"""Vertex count range and relative vertex radii of random (star-shaped) polygons."""
OCCLUDER_CENTRE_STD = 0.1
"""Occluders centre on a random landmark plus Gaussian jitter of this std (fraction of the face width)."""
OCCLUDER_ASPECT = (0.4, 1.6)
STRIPE_PERIOD = (3.0, 12.0)
"""Occluder aspect-ratio range and stripe period range (pixels)."""
BACKGROUND_KINDS = 4
"""Background clutter: rectangles, ellipses, lines, polygons."""
BACKGROUND_SPAN = (-0.1, 1.1)
BACKGROUND_ELLIPSE = (0.03, 0.3)
BACKGROUND_LINE_MAX = 0.03
"""Clutter coordinates, ellipse semi-axes and maximum line width, as fractions of the image size."""
MOUTH_OPEN_RANGE = (0.1, 1.0)
SMILE_RANGE = (0.2, 1.0)
"""``mouth_open`` / ``smile`` amounts drawn when the face opens its mouth / smiles."""
PALETTE_JITTER = {"skin": 0.06, "hair": 0.1, "iris": 0.1}
"""Multiplicative per-channel jitter of palette colours."""
BROW_DENSITY = (0.55, 1.0)
"""Brow colour = mix of skin and hair colour with this hair share."""
SCLERA_JITTER = (-0.08, 0.04)
TEETH_JITTER = (-0.1, 0.03)
LIP_JITTER = 0.08
MOUTH_JITTER = 0.3
"""Relative brightness jitter of the sclera, teeth, lips (per channel) and mouth interior."""
BACKGROUND_GRID = (2, 5)
"""Side range of the low-resolution colour grid upsampled into the background gradient."""
NOISE_GRID_DIVISOR = 8
"""Low-frequency texture noise is drawn at ``size // NOISE_GRID_DIVISOR`` and upsampled."""
NOISE_BANK_MARGIN = 128
NOISE_BANK_SEED = 20240229
"""Image noise is a random crop of a fixed Gaussian field ``margin`` pixels larger than the image."""
FACE_PIXEL_MIN = 8.0
"""Smallest face width (pixels) the placement accepts."""
PTS_DECIMALS = 6


# ------------------------------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class ProceduralConfig:
    """Everything that determines the generated faces (same config -> same faces).

    Data set: ``scheme`` (``"68"`` / ``"98"``; ``"19"`` works too), ``count`` faces, ``seed``, ``split``
    (a key of :data:`SPLITS`), square ``image_size``.
    Shape: ``identity_spread`` (relative std of the identity parameters of :class:`~glsr.shapes.ShapeParams`,
    clipped at ``identity_clip`` std), probabilities ``mouth_open_prob`` / ``smile_prob`` / ``eyes_closed_prob``
    (otherwise eyes are open up to a squint of ``squint_max``), ``gaze_spread`` (std of the gaze, clipped to +-1).
    Pose (degrees, uniform): ``yaw_range``, ``pitch_range``, ``roll_range``.
    Placement: ``face_size`` range (neutral-template width / image size, before pose), ``center_jitter`` (fraction
    of the image), ``margin`` (landmarks stay at least this fraction of the image inside it).
    Appearance: ``background_shapes`` range, ``hair_prob``, ``teeth_prob``, ``lighting`` (max relative brightness
    change across the image), ``brightness`` range, ``colour_cast`` (max per-channel gain deviation),
    ``blur_prob`` / ``blur_sigma`` (px at 256), ``noise_prob`` / ``noise_sigma`` (grey levels).
    Occlusion: ``occlusion_prob`` (a face gets occluders), ``max_occluders``, ``occluder_size`` range (fraction of
    the face width).
    Detector box: ``box_shift`` mean centre shift ``(dx, dy)`` and ``box_shift_std``, both in units of the tight
    box's width / height; ``box_scale`` mean size factor, ``box_log_scale_std`` (common to width and height) and
    ``box_log_aspect_std`` (width vs height).
    ``annotation_noise``: delta in pixels at 256x256 (0 = exact annotations).
    """

    scheme: str = "68"
    count: int = 2000
    seed: int = 0
    split: str = "train"
    image_size: int = REFERENCE_SIZE
    # shape
    identity_spread: float = 0.06
    identity_clip: float = 2.0
    mouth_open_prob: float = 0.3
    smile_prob: float = 0.3
    eyes_closed_prob: float = 0.08
    squint_max: float = 0.3
    gaze_spread: float = 0.4
    # pose
    yaw_range: Tuple[float, float] = (-35.0, 35.0)
    pitch_range: Tuple[float, float] = (-20.0, 20.0)
    roll_range: Tuple[float, float] = (-20.0, 20.0)
    # placement
    face_size: Tuple[float, float] = (0.45, 0.65)
    center_jitter: float = 0.08
    margin: float = 0.02
    # appearance
    background_shapes: Tuple[int, int] = (4, 14)
    hair_prob: float = 0.7
    teeth_prob: float = 0.6
    lighting: float = 0.45
    brightness: Tuple[float, float] = (0.7, 1.15)
    colour_cast: float = 0.12
    blur_prob: float = 0.3
    blur_sigma: Tuple[float, float] = (0.5, 1.6)
    noise_prob: float = 0.7
    noise_sigma: Tuple[float, float] = (1.0, 8.0)
    # occlusion
    occlusion_prob: float = 0.25
    max_occluders: int = 2
    occluder_size: Tuple[float, float] = (0.2, 0.5)
    # detector box: the procedural box convention (glsr.boxes.PROCEDURAL_BOX) on average
    box_shift: Tuple[float, float] = (PROCEDURAL_BOX.dx, PROCEDURAL_BOX.dy)
    box_shift_std: Tuple[float, float] = (0.03, 0.03)
    box_scale: float = PROCEDURAL_BOX.sx
    box_log_scale_std: float = 0.05
    box_log_aspect_std: float = 0.02
    # annotation noise
    annotation_noise: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "scheme", get_scheme(self.scheme).name)
        split = "train" if self.split is None else str(self.split).lower()
        if split not in SPLITS:
            raise ValueError(f"unknown procedural split {self.split!r}; use one of {sorted(SPLITS)}")
        object.__setattr__(self, "split", split)
        for name in ("yaw_range", "pitch_range", "roll_range", "face_size", "background_shapes", "box_shift",
                     "box_shift_std", "occluder_size", "blur_sigma", "noise_sigma", "brightness"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}")
        if self.annotation_noise < 0:
            raise ValueError(f"annotation_noise must be >= 0, got {self.annotation_noise}")
        for name in ("mouth_open_prob", "smile_prob", "eyes_closed_prob", "hair_prob", "teeth_prob", "blur_prob",
                     "noise_prob", "occlusion_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if not 0 < self.face_size[0] <= self.face_size[1]:
            raise ValueError(f"face_size must be an increasing positive range, got {self.face_size}")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------ samples


@dataclass(frozen=True, eq=False)
class ProceduralSample:
    """One generated face (see the module docstring for conventions).

    ``landmarks`` is the training annotation (noisy when ``annotation_noise > 0``), ``landmarks_clean`` the exact
    ground truth; ``pose`` is ``(yaw, pitch, roll)`` in degrees; ``occluders`` the occluder polygons ``[K, 2]``
    in image pixels. ``image`` is ``None`` for :meth:`ProceduralFaces.annotation`.
    """

    index: int
    image: Optional[np.ndarray]
    landmarks: np.ndarray
    landmarks_clean: np.ndarray
    box: np.ndarray
    occluded: np.ndarray
    pose: np.ndarray
    params: ShapeParams
    occluders: Tuple[np.ndarray, ...]
    noisy: bool

    def as_dict(self) -> Dict[str, Any]:
        """The dataset item: ``image``, ``landmarks``, ``box``, ``occluded``, ``pose``, ``index`` and, when
        annotation noise is on, ``landmarks_clean`` (all collatable by torch's default collate)."""
        out: Dict[str, Any] = {"image": self.image, "landmarks": self.landmarks, "box": self.box,
                               "occluded": self.occluded, "pose": self.pose, "index": self.index}
        if self.noisy:
            out["landmarks_clean"] = self.landmarks_clean
        return out


def _rng(cfg: ProceduralConfig, index: int, stream: str) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, SPLITS[cfg.split], index, STREAMS[stream]])


def random_shape_params(rng: np.random.Generator, cfg: ProceduralConfig) -> ShapeParams:
    """Random identity (each identity parameter times ``1 + identity_spread * N(0, 1)``, clipped) and
    expression (mouth open / smile / eyes closed events, squint, gaze)."""
    neutral = ShapeParams.neutral()
    z = np.clip(rng.standard_normal(len(IDENTITY_FIELDS)), -cfg.identity_clip, cfg.identity_clip)
    values = {name: getattr(neutral, name) * (1.0 + cfg.identity_spread * zi) for name, zi in zip(IDENTITY_FIELDS, z)}
    u = rng.random(6)
    values["mouth_open"] = float(rng.uniform(*MOUTH_OPEN_RANGE)) if u[0] < cfg.mouth_open_prob else 0.0
    values["smile"] = float(rng.uniform(*SMILE_RANGE)) if u[1] < cfg.smile_prob else 0.0
    values["eyes_closed"] = 1.0 if u[2] < cfg.eyes_closed_prob else float(u[3] * cfg.squint_max)
    g = np.clip(rng.standard_normal(2) * cfg.gaze_spread, -1.0, 1.0)
    values["gaze_x"], values["gaze_y"] = float(g[0]), float(g[1])
    return ShapeParams(**values)


def pose_rotation(yaw: float, pitch: float) -> np.ndarray:
    """``3x3`` head rotation (yaw about the vertical axis, then pitch about the horizontal one), acting on
    ``(x right, y down, z towards the camera)`` column vectors (see the module docstring for the signs)."""
    a, b = math.radians(yaw), math.radians(pitch)
    ry = np.array([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(b), -math.sin(b)], [0.0, math.sin(b), math.cos(b)]])
    return rx @ ry


def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])


@dataclass(frozen=True, eq=False)
class _Layout:
    """The sampled geometry of one face: projection from 3-D unit face coordinates to image pixels."""

    params: ShapeParams
    rotation: np.ndarray       # 3x3 pose rotation
    image_from_view: np.ndarray  # 2x3: rotated, orthographically projected unit coordinates -> pixels
    pose: np.ndarray           # yaw, pitch, roll (degrees)
    px_per_unit: float

    def project(self, pts3: np.ndarray) -> np.ndarray:
        """Unit face coordinates ``[M, 3]`` -> image pixels ``[M, 2]``."""
        view = (pts3 - FACE_CENTRE_UNIT) @ self.rotation.T
        return apply_affine(self.image_from_view, view[:, :2])


def _sample_layout(cfg: ProceduralConfig, index: int) -> Tuple[_Layout, np.ndarray]:
    """Shape, pose and placement of face ``index``; returns the layout and the clean landmarks ``[N, 2]``."""
    rng = _rng(cfg, index, "geometry")
    params = random_shape_params(rng, cfg)
    yaw, pitch, roll = (float(rng.uniform(*r)) for r in (cfg.yaw_range, cfg.pitch_range, cfg.roll_range))
    size = cfg.image_size
    px = float(rng.uniform(*cfg.face_size)) * size / UNIT_FACE_WIDTH
    jitter = rng.uniform(-1.0, 1.0, 2) * cfg.center_jitter * size
    rot = pose_rotation(yaw, pitch)
    lm3 = parametric_shape_3d(cfg.scheme, params)
    view = ((lm3 - FACE_CENTRE_UNIT) @ rot.T)[:, :2]
    lin = cv2_rotation((0.0, 0.0), roll, 1.0)  # rotation about the origin (the rotation centre)
    rolled = apply_affine(lin, view)
    lo_px, hi_px = cfg.margin * size, size - 1 - cfg.margin * size
    extent = float(np.max(rolled.max(0) - rolled.min(0)))
    px = max(min(px, (hi_px - lo_px) / extent), FACE_PIXEL_MIN / UNIT_FACE_WIDTH)  # shrink to fit the image
    lin = cv2_rotation((0.0, 0.0), roll, px)
    pts = apply_affine(lin, view)
    lo, hi = pts.min(0), pts.max(0)
    centred = (size - 1) / 2.0 - (lo + hi) / 2.0
    shift = np.clip(centred + jitter, lo_px - lo, np.maximum(hi_px - hi, lo_px - lo))
    image_from_view = compose(_translation(*shift), lin)
    layout = _Layout(params, rot, image_from_view, np.array([yaw, pitch, roll]), px)
    return layout, apply_affine(image_from_view, view)


def detector_box(landmarks: np.ndarray, cfg: ProceduralConfig, rng: np.random.Generator) -> np.ndarray:
    """Simulated detector box ``(x1, y1, x2, y2)`` around clean ``landmarks`` (offsets as in the module docstring)."""
    t = tight_box(landmarks)
    w, h = t[2] - t[0], t[3] - t[1]
    z = rng.standard_normal(4)
    dx = cfg.box_shift[0] + cfg.box_shift_std[0] * z[0]
    dy = cfg.box_shift[1] + cfg.box_shift_std[1] * z[1]
    log_s = math.log(cfg.box_scale) + cfg.box_log_scale_std * z[2]
    log_a = cfg.box_log_aspect_std * z[3]
    cx, cy = (t[0] + t[2]) / 2 + dx * w, (t[1] + t[3]) / 2 + dy * h
    hw, hh = w * math.exp(log_s + log_a) / 2, h * math.exp(log_s - log_a) / 2
    return np.array([cx - hw, cy - hh, cx + hw, cy + hh])


def perturb_annotations(landmarks: np.ndarray, delta: float, image_size: int,
                        rng: np.random.Generator) -> np.ndarray:
    """Table 1 annotation noise: each point moved in a uniform random direction by a radius uniform in
    ``[0, delta * image_size / 256]`` (``delta`` in pixels at 256x256)."""
    n = len(landmarks)
    radius = rng.uniform(0.0, delta * image_size / REFERENCE_SIZE, n)
    phi = rng.uniform(0.0, 2.0 * math.pi, n)
    return landmarks + np.stack([radius * np.cos(phi), radius * np.sin(phi)], axis=1)


# ------------------------------------------------------------------------------------------ occluders


def _ellipse_polygon(centre: Sequence[float], axes: Sequence[float], angle_deg: float,
                     n: int = ELLIPSE_VERTICES) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    pts = np.stack([axes[0] * np.cos(t), axes[1] * np.sin(t)], axis=1)
    return apply_affine(cv2_rotation((0.0, 0.0), angle_deg), pts) + np.asarray(centre, dtype=np.float64)


def _sample_occluders(cfg: ProceduralConfig, index: int, landmarks: np.ndarray, face_px: float
                      ) -> Tuple[Tuple[np.ndarray, ...], List[Dict[str, Any]]]:
    """Occluder polygons (image pixels) and their appearance descriptions."""
    rng = _rng(cfg, index, "occlusion")
    if cfg.max_occluders < 1 or rng.random() >= cfg.occlusion_prob:
        return (), []
    polys: List[np.ndarray] = []
    looks: List[Dict[str, Any]] = []
    for _ in range(int(rng.integers(1, cfg.max_occluders + 1))):
        centre = landmarks[int(rng.integers(len(landmarks)))] + rng.normal(0.0, OCCLUDER_CENTRE_STD * face_px, 2)
        size = rng.uniform(*cfg.occluder_size) * face_px
        aspect = rng.uniform(*OCCLUDER_ASPECT)
        axes = (size / 2 * aspect, size / 2 / aspect)
        angle = rng.uniform(0.0, 180.0)
        kind = OCCLUDER_KINDS[int(rng.integers(len(OCCLUDER_KINDS)))]
        if kind == "rectangle":
            corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) * axes
            poly = apply_affine(cv2_rotation((0.0, 0.0), angle), corners) + centre
        elif kind == "ellipse":
            poly = _ellipse_polygon(centre, axes, angle)
        else:
            k = int(rng.integers(POLYGON_VERTICES[0], POLYGON_VERTICES[1] + 1))
            t = np.sort(rng.uniform(0.0, 2.0 * np.pi, k))
            r = rng.uniform(*POLYGON_RADIUS, k)
            pts = np.stack([axes[0] * r * np.cos(t), axes[1] * r * np.sin(t)], axis=1)
            poly = apply_affine(cv2_rotation((0.0, 0.0), angle), pts) + centre
        polys.append(poly)
        looks.append({"colour": tuple(float(c) for c in rng.uniform(0, 255, 3)),
                      "colour2": tuple(float(c) for c in rng.uniform(0, 255, 3)),
                      "texture": TEXTURES[int(rng.integers(len(TEXTURES)))],
                      "period": float(rng.uniform(*STRIPE_PERIOD)), "angle": float(rng.uniform(0.0, np.pi)),
                      "seed": int(rng.integers(1 << 31))})
    return tuple(polys), looks


def occlusion_mask(landmarks: np.ndarray, occluders: Sequence[np.ndarray]) -> np.ndarray:
    """``bool [N]``: landmark inside (or on the border of) any occluder polygon."""
    out = np.zeros(len(landmarks), dtype=bool)
    for poly in occluders:
        contour = poly.astype(np.float32).reshape(-1, 1, 2)
        out |= np.array([cv2.pointPolygonTest(contour, (float(x), float(y)), False) >= 0 for x, y in landmarks])
    return out


# ------------------------------------------------------------------------------------------ drawing helpers


def _fixed(pts: np.ndarray) -> np.ndarray:
    """Float pixels -> OpenCV fixed-point int32 ``[M, 1, 2]`` (``SUBPIXEL_BITS`` fractional bits)."""
    return np.round(np.asarray(pts) * SUBPIXEL).astype(np.int32).reshape(-1, 1, 2)


def _fill(img: np.ndarray, pts: np.ndarray, colour: Colour) -> None:
    cv2.fillPoly(img, [_fixed(pts)], colour, cv2.LINE_AA, SUBPIXEL_BITS)


def _line(img: np.ndarray, pts: np.ndarray, colour: Colour, width: float, closed: bool = False) -> None:
    cv2.polylines(img, [_fixed(pts)], closed, colour, max(1, int(round(width))), cv2.LINE_AA, SUBPIXEL_BITS)


def _ellipse(img: np.ndarray, centre: np.ndarray, axes: Tuple[float, float], angle: float, colour: Colour) -> None:
    c = tuple(int(v) for v in np.round(np.asarray(centre) * SUBPIXEL))
    a = tuple(max(1, int(round(v * SUBPIXEL))) for v in axes)
    cv2.ellipse(img, c, a, angle, 0.0, 360.0, colour, -1, cv2.LINE_AA, SUBPIXEL_BITS)


def _roi(img: np.ndarray, poly: np.ndarray, pad: int = 2) -> Optional[Tuple[int, int, int, int]]:
    h, w = img.shape[:2]
    x0, y0 = np.floor(poly.min(0)).astype(int) - pad
    x1, y1 = np.ceil(poly.max(0)).astype(int) + pad + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _clip_paste(img: np.ndarray, poly: np.ndarray, layer: np.ndarray, box: Tuple[int, int, int, int]) -> None:
    """Copy ``layer`` (the ROI ``box`` of a drawn copy) into ``img`` inside ``poly`` only."""
    x0, y0, x1, y1 = box
    mask = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    cv2.fillPoly(mask, [_fixed(poly - (x0, y0))], 255, cv2.LINE_8, SUBPIXEL_BITS)
    roi = img[y0:y1, x0:x1]
    np.copyto(roi, layer, where=mask[..., None].astype(bool))


def _scaled(colour: Sequence[float], factor: Union[float, Sequence[float]]) -> Colour:
    c = np.clip(np.asarray(colour, dtype=np.float64) * np.asarray(factor, dtype=np.float64), 0, 255)
    return (float(c[0]), float(c[1]), float(c[2]))


def _palette(rng: np.random.Generator, palette: Sequence[Colour], jitter: float) -> Colour:
    """A colour between two neighbouring palette entries, with a multiplicative jitter."""
    k = rng.uniform(0, len(palette) - 1)
    i = min(int(k), len(palette) - 2)
    c = (1 - (k - i)) * np.asarray(palette[i]) + (k - i) * np.asarray(palette[i + 1])
    return _scaled(c, 1.0 + rng.uniform(-jitter, jitter, 3))


def _background(rng: np.random.Generator, cfg: ProceduralConfig) -> np.ndarray:
    """Smooth colour gradient + random shapes (the clutter a detector crop contains)."""
    size = cfg.image_size
    g = int(rng.integers(BACKGROUND_GRID[0], BACKGROUND_GRID[1] + 1))
    grid = rng.uniform(0, 255, (g, g, 3)).astype(np.uint8)
    img = cv2.resize(grid, (size, size), interpolation=cv2.INTER_LINEAR)
    for _ in range(int(rng.integers(cfg.background_shapes[0], cfg.background_shapes[1] + 1))):
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        kind = int(rng.integers(BACKGROUND_KINDS))
        p = rng.uniform(*BACKGROUND_SPAN, (2, 2)) * size
        if kind == 0:
            cv2.rectangle(img, tuple(int(v) for v in _fixed(p[0])[0, 0]), tuple(int(v) for v in _fixed(p[1])[0, 0]),
                          colour, -1, cv2.LINE_AA, SUBPIXEL_BITS)
        elif kind == 1:
            _ellipse(img, p[0], tuple(rng.uniform(*BACKGROUND_ELLIPSE, 2) * size), float(rng.uniform(0, 180)), colour)
        elif kind == 2:
            _line(img, p, colour, rng.uniform(1, BACKGROUND_LINE_MAX * size))
        else:
            k = int(rng.integers(POLYGON_VERTICES[0], POLYGON_VERTICES[1] + 1))
            _fill(img, rng.uniform(*BACKGROUND_SPAN, (k, 2)) * size, colour)
    return img


def _texture_layer(shape: Tuple[int, int], look: Dict[str, Any]) -> np.ndarray:
    """Occluder texture over an ROI of ``shape`` (h, w): plain, stripes or blotchy noise."""
    h, w = shape
    c1, c2 = np.asarray(look["colour"], np.float32), np.asarray(look["colour2"], np.float32)
    if look["texture"] == "plain":
        return np.broadcast_to(c1.astype(np.uint8), (h, w, 3)).copy()
    if look["texture"] == "stripes":
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        phase = xx * math.cos(look["angle"]) + yy * math.sin(look["angle"])
        t = (np.sin(phase * (2 * math.pi / look["period"])) > 0).astype(np.float32)[..., None]
    else:
        r = np.random.default_rng(look["seed"])
        small = r.random((max(2, h // 4), max(2, w // 4))).astype(np.float32)
        t = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
    return np.clip(c1 * (1 - t) + c2 * t, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------ face rendering


def _render(cfg: ProceduralConfig, index: int, layout: _Layout, geo: FaceGeometry,
            occluders: Sequence[np.ndarray], looks: Sequence[Dict[str, Any]]) -> np.ndarray:
    rng = _rng(cfg, index, "appearance")
    size = cfg.image_size
    img = _background(rng, cfg)
    proj = {k: layout.project(v) for k, v in geo.arrays().items()}
    face_px = UNIT_FACE_WIDTH * layout.px_per_unit
    skin = _palette(rng, SKIN_TONES, PALETTE_JITTER["skin"])
    hair = _palette(rng, HAIR_COLOURS, PALETTE_JITTER["hair"])
    yaw, pitch, roll = layout.pose

    # behind the face: hair and neck
    if rng.random() < cfg.hair_prob:
        hair_poly = _ellipse_polygon((0.5, HAIR_CENTRE_Y), HAIR_AXES, 0.0)
        _fill(img, layout.project(np.column_stack([hair_poly, np.zeros(len(hair_poly))])), hair)
    neck = np.array([[0.5 - NECK_HALF_WIDTH, NECK_TOP, 0.0], [0.5 + NECK_HALF_WIDTH, NECK_TOP, 0.0],
                     [0.5 + NECK_HALF_WIDTH, NECK_TOP + NECK_LENGTH, 0.0],
                     [0.5 - NECK_HALF_WIDTH, NECK_TOP + NECK_LENGTH, 0.0]])
    _fill(img, layout.project(neck), _scaled(skin, SHADE["neck"]))

    # face, jaw rim shading
    _fill(img, proj["outline"], skin)
    _line(img, proj["jaw"], _scaled(skin, SHADE["jaw_rim"]), WIDTH["jaw_rim"] * face_px)

    # brows
    density = rng.uniform(*BROW_DENSITY)
    brow = _scaled(np.asarray(skin) * (1 - density) + np.asarray(hair) * density, 1.0)
    for k in range(2):
        _fill(img, proj[f"brows_{k}"], brow)

    # nose
    _line(img, proj["nose_ridge"], _scaled(skin, SHADE["ridge"]), WIDTH["ridge"] * face_px)
    for k in range(2):
        _line(img, proj[f"nose_sides_{k}"], _scaled(skin, SHADE["nose_side"]), WIDTH["nose_side"] * face_px)
    _line(img, proj["nose_base"], _scaled(skin, SHADE["nose_base"]), WIDTH["nose_base"] * face_px)
    fx, fy = math.cos(math.radians(yaw)), math.cos(math.radians(pitch))
    nostril_axes = (geo.nostril_size[0] * layout.px_per_unit * fx, geo.nostril_size[1] * layout.px_per_unit * fy)
    for c in proj["nostrils"]:
        _ellipse(img, c, nostril_axes, -roll, _scaled(skin, SHADE["nostril"]))

    # eyes
    iris_colour = _palette(rng, IRIS_COLOURS, PALETTE_JITTER["iris"])
    sclera = _scaled(SCLERA, 1.0 + rng.uniform(*SCLERA_JITTER, 3))
    r_iris = geo.iris_radius * layout.px_per_unit
    open_px = geo.eye_opening * layout.px_per_unit
    for k in range(2):
        poly = proj[f"eyes_{k}"]
        n_top = (len(poly) + 2) // 2  # upper lid incl. both corners
        upper = poly[:n_top]
        lower = np.concatenate([poly[n_top - 1:], poly[:1]])
        box = _roi(img, poly, pad=int(r_iris) + 2)
        if open_px >= MIN_OPENING_PX and box is not None:
            _fill(img, poly, sclera)
            x0, y0, x1, y1 = box
            layer = img[y0:y1, x0:x1].copy()
            c = proj["irises"][k] - (x0, y0)
            _ellipse(layer, c, (r_iris * fx, r_iris * fy), -roll, iris_colour)
            _ellipse(layer, c, (r_iris * PUPIL_FRACTION * fx, r_iris * PUPIL_FRACTION * fy), -roll, PUPIL)
            glint = c + np.asarray(CATCHLIGHT_OFFSET) * r_iris
            rg = r_iris * CATCHLIGHT_FRACTION
            _ellipse(layer, glint, (rg, rg), 0.0, CATCHLIGHT)
            _clip_paste(img, poly, layer, box)
            _line(img, lower, _scaled(skin, SHADE["lower_lid"]), WIDTH["lower_lid"] * face_px)
            _line(img, upper, _scaled(skin, SHADE["lash"]), WIDTH["lash"] * face_px)
        else:
            _line(img, upper, _scaled(skin, SHADE["lash"]), WIDTH["closed_lid"] * face_px)

    # mouth
    lip = _scaled(skin, np.asarray(LIP_FACTOR) * (1.0 + rng.uniform(-LIP_JITTER, LIP_JITTER, 3)))
    _fill(img, proj["lips_outer"], lip)
    inner = proj["lips_inner"]
    gap_px = geo.mouth_gap * layout.px_per_unit
    n_top = (len(inner) + 2) // 2
    if gap_px >= MIN_OPENING_PX:
        _fill(img, inner, _scaled(MOUTH_INTERIOR, 1.0 + rng.uniform(-MOUTH_JITTER, MOUTH_JITTER)))
        box = _roi(img, inner)
        if rng.random() < cfg.teeth_prob and box is not None:
            x0, y0, x1, y1 = box
            layer = img[y0:y1, x0:x1].copy()
            top = inner[:n_top] - (x0, y0)
            band = np.concatenate([top, (top + (0.0, TEETH_FRACTION * gap_px))[::-1]])
            _fill(layer, band, _scaled(TEETH, 1.0 + rng.uniform(*TEETH_JITTER)))
            _clip_paste(img, inner, layer, box)
    else:
        _line(img, inner[:n_top], _scaled(lip, SHADE["lip_seam"]), WIDTH["lip_seam"] * face_px)

    # occluders
    for poly, look in zip(occluders, looks):
        box = _roi(img, poly)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        _clip_paste(img, poly, _texture_layer((y1 - y0, x1 - x0), look), box)

    # lighting (a linear ramp in a random direction), colour cast, blur, noise
    phi = rng.uniform(0.0, 2.0 * math.pi)
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    strength = rng.uniform(0.0, cfg.lighting)
    light = 1.0 + strength * (math.cos(phi) * ramp[None, :] + math.sin(phi) * ramp[:, None])
    gain = rng.uniform(*cfg.brightness) * (1.0 + rng.uniform(-cfg.colour_cast, cfg.colour_cast, 3))
    factor = cv2.merge([light * np.float32(g) for g in gain])
    blur = rng.random() < cfg.blur_prob
    blur_sigma = rng.uniform(*cfg.blur_sigma) * size / REFERENCE_SIZE
    noise = rng.random() < cfg.noise_prob
    noise_sigma = rng.uniform(*cfg.noise_sigma)
    offset = rng.integers(0, NOISE_BANK_MARGIN + 1, 2)
    if not (blur or noise):
        return cv2.multiply(img, factor, dtype=cv2.CV_8U)
    out = cv2.multiply(img, factor, dtype=cv2.CV_32F)
    if blur:
        out = cv2.GaussianBlur(out, (0, 0), blur_sigma)
    if noise:
        bank = _noise_bank(size)
        out = cv2.scaleAdd(bank[offset[1]:offset[1] + size, offset[0]:offset[0] + size], noise_sigma, out)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


_NOISE_BANKS: Dict[int, np.ndarray] = {}


def _noise_bank(size: int) -> np.ndarray:
    """A fixed field of unit Gaussian (luminance) noise, ``[size + margin, size + margin, 3]`` float32; samples
    take random crops of it (deterministic and much cheaper than fresh noise per image)."""
    bank = _NOISE_BANKS.get(size)
    if bank is None:
        n = size + NOISE_BANK_MARGIN
        grey = np.random.default_rng(NOISE_BANK_SEED).standard_normal((n, n), dtype=np.float32)
        bank = _NOISE_BANKS[size] = np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    return bank


# ------------------------------------------------------------------------------------------ data set


class ProceduralFaces(Dataset):
    """Streamed procedural faces: ``dataset[i]`` renders face ``i`` (a dict, see :meth:`ProceduralSample.as_dict`).

    ``ProceduralFaces(config, **overrides)``: overrides are :class:`ProceduralConfig` fields (``scheme``,
    ``count``, ``seed``, ``split``, ``annotation_noise``, ...). ``scheme`` is the :class:`LandmarkScheme`.
    """

    def __init__(self, config: Optional[ProceduralConfig] = None, **overrides: Any) -> None:
        names = {f.name for f in fields(ProceduralConfig)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown procedural option(s) {unknown}; valid: {sorted(names)}")
        self.config: ProceduralConfig = replace(config or ProceduralConfig(), **overrides)
        self.scheme: LandmarkScheme = get_scheme(self.config.scheme)

    def __len__(self) -> int:
        return self.config.count

    def _index(self, index: int) -> int:
        i = int(index)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"procedural face index {index} out of range for {len(self)} faces")
        return i

    def _sample(self, index: int, render: bool) -> ProceduralSample:
        cfg = self.config
        i = self._index(index)
        layout, clean = _sample_layout(cfg, i)
        face_px = UNIT_FACE_WIDTH * layout.px_per_unit
        occluders, looks = _sample_occluders(cfg, i, clean, face_px)
        image = _render(cfg, i, layout, face_geometry(layout.params), occluders, looks) if render else None
        box = detector_box(clean, cfg, _rng(cfg, i, "box"))
        noisy = cfg.annotation_noise > 0
        lm = (perturb_annotations(clean, cfg.annotation_noise, cfg.image_size, _rng(cfg, i, "annotation_noise"))
              if noisy else clean.copy())
        return ProceduralSample(index=i, image=image, landmarks=lm, landmarks_clean=clean, box=box,
                                occluded=occlusion_mask(clean, occluders), pose=layout.pose, params=layout.params,
                                occluders=occluders, noisy=noisy)

    def sample(self, index: int) -> ProceduralSample:
        """Face ``index`` with everything that was sampled (image, both annotations, pose, shape, occluders)."""
        return self._sample(index, render=True)

    def annotation(self, index: int) -> ProceduralSample:
        """Face ``index`` without rendering the image (``image=None``); identical annotations to :meth:`sample`."""
        return self._sample(index, render=False)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        return self.sample(index).as_dict()

    def __repr__(self) -> str:
        c = self.config
        return (f"ProceduralFaces(scheme={c.scheme}, count={c.count}, seed={c.seed}, split={c.split}, "
                f"image_size={c.image_size}, annotation_noise={c.annotation_noise})")


# ------------------------------------------------------------------------------------------ export


def pts_text(landmarks: np.ndarray, decimals: int = PTS_DECIMALS) -> str:
    """The 300-W ``.pts`` text of 0-based landmarks (written 1-based, the format's Matlab convention)."""
    pts = np.asarray(landmarks, dtype=np.float64) + 1.0
    lines = ["version: 1", f"n_points: {len(pts)}", "{"]
    lines += [f"{x:.{decimals}f} {y:.{decimals}f}" for x, y in pts]
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_folder(dataset: "ProceduralFaces | Sequence[Dict[str, Any]]", out_dir: PathLike, prefix: str = "face_",
                 clean: bool = False) -> List[str]:
    """Write every face as ``NAME.png`` + ``NAME.pts`` (300-W format, 1-based) + ``NAME.rct`` (``x1 y1 x2 y2``,
    0-based pixels), each file atomically; ``NAME = prefix + zero-padded index``. ``clean=True`` writes the exact
    landmarks instead of the (possibly noisy) training annotation. Returns the names, readable back with
    ``glsr.train.datasets.open_dataset("folder:" + out_dir)``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = len(dataset)
    width = max(6, len(str(max(n - 1, 0))))
    names: List[str] = []
    for i in range(n):
        item = dataset[i]
        name = f"{prefix}{i:0{width}d}"
        lm = item.get("landmarks_clean", item["landmarks"]) if clean else item["landmarks"]
        ok, png = cv2.imencode(".png", item["image"])
        if not ok:
            raise RuntimeError(f"OpenCV could not encode image {name}")
        atomic.write_bytes(out / f"{name}.png", png.tobytes())
        atomic.write_bytes(out / f"{name}.pts", pts_text(lm).encode("utf-8"))
        box = np.asarray(item["box"], dtype=np.float64)
        atomic.write_bytes(out / f"{name}.rct", (" ".join(f"{v:.{PTS_DECIMALS}f}" for v in box) + "\n").encode("utf-8"))
        names.append(name)
    return names
