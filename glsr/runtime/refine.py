"""Refinement and a quality score: re-crop each face from the tight box of its own landmarks, and say how far the
landmarks can be trusted.

A detector's box is a guess at the box the model was trained on (its measured correction,
:data:`glsr.boxes.DETECTOR_TO_TIGHT`, is a median over upright faces). The first pass's landmarks give
the face's own tight box; cropping again from it (in the model's box convention,
:func:`glsr.boxes.box_from_landmarks`) repairs the boxes the median misses: on 300-W ``val`` photos
turned 25 degrees in-plane, YuNet's corrected box scores 0.21 points of NME worse than the tight box and one
re-crop brings it level; on the upright photos the gain is within the noise, for Haar's boxes it is 0.08 points
(``benchmarks/results/detector_boxes.md``). Passes repeat up to :attr:`RefineConfig.passes` times, or stop
earlier when the box moves less than :attr:`RefineConfig.tolerance` of its size (more than one re-crop gained
nothing there).

Quality: the last pass also runs on the mirror image of its crop (one backend call for both: the batch holds the
crop and its mirror); the mean distance between the landmarks and the mirrored copy's (flipped back with the
scheme's flip permutation), divided by the predicted inter-ocular distance, is ``disagreement``: an estimate of
the face's NME (it ranks faces by their error; the Spearman correlation on 300-W ``val`` is recorded in
``benchmarks/results/detector_boxes.md``). ``quality = exp(-disagreement / QUALITY_SCALE)`` in ``(0, 1]`` (1 =
both views agree exactly). Below :data:`LOW_QUALITY` a face's landmarks are unreliable (``glsr predict`` says so
on stderr): on 300-W ``val`` such faces are mostly large-yaw ones, their inter-ocular distance shrinks and the
mirrored view disagrees. Below :data:`LOST_QUALITY` tracking treats a face as lost: the same study records the
quality of the ``val`` faces and of crops moved off them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from glsr.boxes import DEFAULT_BOX_CONVENTION, box_convention_of, box_from_landmarks

QUALITY_SCALE = 0.05
"""Disagreement (fraction of the inter-ocular distance) at which quality is ``1/e``."""
LOW_QUALITY = float(np.exp(-0.04 / QUALITY_SCALE))
"""0.449: quality at a disagreement of 4 % of the inter-ocular distance (a round figure, above the shipped models'
mean NME): below it the landmarks are flagged as unreliable."""
LOST_QUALITY = float(np.exp(-0.08 / QUALITY_SCALE))
"""0.202: quality at a disagreement of 8 % of the inter-ocular distance: below it a tracked face counts as lost."""


@dataclass(frozen=True)
class RefineConfig:
    """``passes``: re-crops after the first pass (0 = the detector's box only); ``tolerance``: stop earlier when the
    box moves (largest corner shift) by less than this fraction of its size; ``quality``: add the mirror view to
    the last pass and score each face; ``mirror_average``: return the mean of the landmarks and the mirror view's
    (flipped back), needs ``quality``. Off by default: on 300-W ``val`` it changed no yaw tertile's NME beyond the
    noise (``benchmarks/results/pose_tertiles.md``)."""

    passes: int = 1
    tolerance: float = 0.01
    quality: bool = True
    mirror_average: bool = False

    def __post_init__(self):
        if int(self.passes) < 0:
            raise ValueError(f"refinement passes must be >= 0, got {self.passes}")
        if not self.tolerance >= 0:
            raise ValueError(f"refinement tolerance must be >= 0, got {self.tolerance}")
        if self.mirror_average and not self.quality:
            raise ValueError("mirror_average needs the mirror view: set quality=True as well")


NO_REFINE = RefineConfig(passes=0)


@dataclass(frozen=True)
class Faces:
    """Faces of one image after refinement: ``boxes [F, 4]`` (the boxes of the last pass, in the model's box
    convention), ``landmarks [F, N, 2]`` (image pixels), ``quality [F]`` and ``disagreement [F]`` (``NaN`` when not
    scored), ``passes``: the crops each face took (1 = no re-crop)."""

    boxes: np.ndarray
    landmarks: np.ndarray
    quality: np.ndarray
    disagreement: np.ndarray
    passes: int


def model_convention(predictor) -> str:
    """The box convention of a predictor's model (its metadata, else :data:`DEFAULT_BOX_CONVENTION`)."""
    conv = box_convention_of(predictor.metadata) or DEFAULT_BOX_CONVENTION
    return conv if conv != "raw" else "tight"


def interocular(landmarks: np.ndarray, scheme) -> np.ndarray:
    """Inter-ocular distance ``[F]`` of landmarks ``[F, N, 2]`` (the scheme's outer eye corners)."""
    a, b = scheme.interocular
    return np.linalg.norm(landmarks[:, list(a)].mean(axis=1) - landmarks[:, list(b)].mean(axis=1), axis=-1)


def quality_from_disagreement(disagreement: np.ndarray) -> np.ndarray:
    return np.exp(-np.asarray(disagreement, dtype=np.float64) / QUALITY_SCALE)


def run_pass(predictor, image: np.ndarray, boxes: np.ndarray, mirror: bool):
    """One crop -> run -> uncrop of ``boxes``; with ``mirror``, the mirrored crops in the same backend call.
    Returns ``(landmarks [F, N, 2], mirrored landmarks [F, N, 2] or None, boxes)``."""
    from glsr.schemes import get_scheme

    x, crop_from_image, b = predictor.crop(image, boxes)
    if not mirror or predictor.host_warp:
        return predictor.uncrop(predictor.run(x), crop_from_image, b), None, b
    f = len(b)
    out = predictor.run(np.concatenate([x, np.ascontiguousarray(x[..., ::-1])]))
    mirrored = np.asarray(out[f:], dtype=np.float64).copy()
    mirrored[..., 0] = x.shape[-1] - 1 - mirrored[..., 0]  # pixel centres at integers: column i <-> S - 1 - i
    mirrored = mirrored[:, list(get_scheme(predictor.metadata.scheme).flip)]
    return (predictor.uncrop(out[:f], crop_from_image, b), predictor.uncrop(mirrored, crop_from_image, b), b)


def box_shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Largest corner shift between boxes ``[F, 4]``, as a fraction of the size of ``a``."""
    size = np.maximum(a[:, 2] - a[:, 0], a[:, 3] - a[:, 1])
    return np.abs(b - a).max(axis=1) / np.maximum(size, 1e-9)


def refine_faces(predictor, image: np.ndarray, boxes: np.ndarray, config: RefineConfig = RefineConfig(),
                 convention: Optional[str] = None) -> Faces:
    """Landmarks for ``boxes`` (``[F, 4]``, in the model's box convention) with up to ``config.passes`` re-crops
    from the landmarks' own boxes and, with ``config.quality``, each face's quality (see the module docstring).
    ``convention``: the box convention to re-crop in (default: the model's)."""
    from glsr.schemes import get_scheme

    conv = convention or model_convention(predictor)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    h, w = image.shape[:2]
    final = config.passes == 0
    pts, mirrored, used = run_pass(predictor, image, boxes, config.quality and final)
    passes = 1
    while not final:
        new = clip_boxes(box_from_landmarks(pts, conv), (w, h))
        settled = box_shift(used, new).max() < config.tolerance
        if settled and not config.quality:
            break  # the box stopped moving: these landmarks are the next pass's
        final = settled or passes == config.passes
        pts, mirrored, used = run_pass(predictor, image, new, config.quality and final)
        passes += 1
    if mirrored is None:
        nan = np.full(len(pts), np.nan)
        return Faces(used, pts, nan, nan.copy(), passes)
    scheme = get_scheme(predictor.metadata.scheme)
    d = np.linalg.norm(pts - mirrored, axis=-1).mean(axis=1) / np.maximum(interocular(pts, scheme), 1e-9)
    if config.mirror_average:
        pts = (pts + mirrored) / 2
    return Faces(used, pts, quality_from_disagreement(d), d, passes)


def clip_boxes(boxes: np.ndarray, image_size) -> np.ndarray:
    """Boxes kept valid for cropping: at least 2 px wide and tall and overlapping the image (a face running off the
    edge keeps its box, which may reach past the border)."""
    w, h = image_size
    b = np.asarray(boxes, dtype=np.float64).copy()
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    hw, hh = np.maximum((b[:, 2] - b[:, 0]) / 2, 1.0), np.maximum((b[:, 3] - b[:, 1]) / 2, 1.0)
    cx, cy = np.clip(cx, 0, w - 1), np.clip(cy, 0, h - 1)
    return np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1)
