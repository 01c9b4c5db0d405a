"""Photometric augmentation and synthetic occlusion of training crops (pixels only; landmarks are unchanged).

Section 4.1 of the paper perturbs geometry only (boxes, rotation, mirroring). With about a thousand real training
faces a wider network fits the training faces' appearance (lighting, colour, sharpness) too; these perturbations
vary it. All are off by default (:class:`glsr.train.config.AugmentConfig`), so the paper's recipe is unchanged. On
300-W they did not help ``medium`` (benchmarks/research/models-record.md, "Growing medium"); no shipped model uses them.

Conventions
-----------
* Applied to the HxWx3 uint8 BGR crop, after the geometric warp and before normalization; results are rounded and
  clipped to 0..255, so a perturbed crop is a crop a camera could have produced.
* ``contrast`` is a factor about the crop's mean grey level, ``brightness`` an offset in grey levels, both applied
  to all channels; then the crop is blurred (Gaussian, ``blur_sigma`` in crop pixels, 0 = none), turned grey
  (BT.601 luma copied to the three channels) and finally occluded: the rectangle ``occlusion`` (x0, y0, x1, y1 in
  crop pixels, half-open) is filled with the colour ``occlusion_bgr``.
* Parameters are drawn by :func:`draw` from a generator the caller seeds (``(seed, epoch, index)`` in
  :class:`glsr.train.augment.Augmenter`), after the geometric parameters, so turning them on or off never changes
  a sample's geometry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Optional, Tuple

import numpy as np

if TYPE_CHECKING:
    from glsr.train.config import AugmentConfig

LUMA_BGR = (0.114, 0.587, 0.299)
"""BT.601 luma weights in OpenCV's channel order (what ``cv2.cvtColor(..., COLOR_BGR2GRAY)`` uses)."""


@dataclass(frozen=True)
class PhotometricParams:
    """One sample's photometric perturbation (see the module docstring); :meth:`identity` changes nothing."""

    contrast: float = 1.0
    brightness: float = 0.0
    blur_sigma: float = 0.0
    grayscale: bool = False
    occlusion: Optional[Tuple[int, int, int, int]] = None
    occlusion_bgr: Tuple[int, int, int] = (0, 0, 0)

    @classmethod
    def identity(cls) -> "PhotometricParams":
        return cls()

    @property
    def is_identity(self) -> bool:
        return self == PhotometricParams()


def draw(rng: np.random.Generator, aug: "AugmentConfig", size: int) -> PhotometricParams:
    """Random parameters for a ``size`` x ``size`` crop from ``aug`` (an :class:`AugmentConfig`).

    ``contrast = exp(U(-c, c))`` and ``brightness = 255 U(-b, b)`` with ``(c, b) = aug.color_jitter``; blur with
    probability ``aug.blur_probability``, sigma ``U(0.5, aug.max_blur) * size / 256``; grey with probability
    ``aug.grayscale_probability``; with probability ``aug.occlusion_probability`` a rectangle whose sides are
    ``U(0.1, aug.max_occlusion)`` of the crop side, centred uniformly in the middle half of the crop (where the face
    is), in a uniformly random colour. Nothing is drawn for a perturbation that is off.
    """
    c, b = aug.color_jitter
    contrast = float(np.exp(rng.uniform(-c, c))) if c > 0 else 1.0
    brightness = float(255.0 * rng.uniform(-b, b)) if b > 0 else 0.0
    blur = 0.0
    if aug.blur_probability > 0 and rng.random() < aug.blur_probability:
        blur = float(rng.uniform(0.5, aug.max_blur) * size / 256.0)
    grey = bool(aug.grayscale_probability > 0 and rng.random() < aug.grayscale_probability)
    box: Optional[Tuple[int, int, int, int]] = None
    colour = (0, 0, 0)
    if aug.occlusion_probability > 0 and rng.random() < aug.occlusion_probability:
        w, h = rng.uniform(0.1, aug.max_occlusion, size=2) * size
        cx, cy = rng.uniform(0.25, 0.75, size=2) * size
        box = (max(0, int(round(cx - w / 2))), max(0, int(round(cy - h / 2))),
               min(size, int(round(cx + w / 2))), min(size, int(round(cy + h / 2))))
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
    return PhotometricParams(contrast, brightness, blur, grey, box, colour)


def apply(crop: np.ndarray, p: PhotometricParams) -> np.ndarray:
    """``crop`` (HxWx3 uint8 BGR) under ``p``; returns ``crop`` itself for the identity, else a new array."""
    if p.is_identity:
        return crop
    import cv2

    out = crop.astype(np.float32)
    if p.contrast != 1.0 or p.brightness != 0.0:
        mean = float(out.reshape(-1, 3).mean(axis=0) @ np.asarray(LUMA_BGR, np.float32))
        out = (out - mean) * np.float32(p.contrast) + np.float32(mean + p.brightness)
    if p.blur_sigma > 0:
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=p.blur_sigma, sigmaY=p.blur_sigma,
                               borderType=cv2.BORDER_REFLECT_101)
    if p.grayscale:
        out[...] = (out @ np.asarray(LUMA_BGR, np.float32))[..., None]
    if p.occlusion is not None:
        x0, y0, x1, y1 = p.occlusion
        out[y0:y1, x0:x1] = np.asarray(p.occlusion_bgr, np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def describe(aug: Mapping[str, Any]) -> Optional[str]:
    """One sentence for a model card from a run's ``augment`` config (a plain dict, as in ``config.json``), or
    ``None`` when every pixel perturbation is off."""
    parts = []
    c, b = aug.get("color_jitter") or (0.0, 0.0)
    if c or b:
        parts.append(f"contrast factor exp(U(-{c:g}, {c:g})) and brightness offset up to {b:g} of the grey range")
    if aug.get("blur_probability"):
        parts.append(f"a Gaussian blur with probability {aug['blur_probability']:g} (sigma up to "
                     f"{aug.get('max_blur', 2.0):g} px of a 256 px crop)")
    if aug.get("grayscale_probability"):
        parts.append(f"grey with probability {aug['grayscale_probability']:g}")
    if aug.get("occlusion_probability"):
        parts.append(f"a random-colour rectangle (sides up to {aug.get('max_occlusion', 0.4):g} of the crop) over "
                     f"the face with probability {aug['occlusion_probability']:g}")
    if not parts:
        return None
    return "Training crops were also perturbed in their pixels (`glsr.train.photometric`): " + "; ".join(parts) + "."
