"""Pre- and post-processing of the runtime: face crops in, landmarks back to image pixels (one code path for
every backend; the normalization itself is :func:`glsr.imaging.normalize`, shared with training).

Conventions: images are HxWx3 uint8 in the artifact's channel order (BGR, as OpenCV reads); boxes are
``(x1, y1, x2, y2)`` image pixels; landmarks ``(x, y)`` with pixel centres at integers (:mod:`glsr.geometry`).
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from glsr import geometry as geo
from glsr.imaging import check_image, normalize
from glsr.metadata import ArtifactMetadata, git_commit


def crop_batch(image: np.ndarray, boxes: Sequence[Sequence[float]], meta: ArtifactMetadata
               ) -> Tuple[np.ndarray, np.ndarray]:
    """Crop and normalize faces: returns ``(x [B, 3, S, S] float32, crop_from_image [B, 2, 3])``."""
    check_image(image)
    h, w = image.shape[:2]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        raise ValueError("no face boxes given")
    x = np.empty((len(boxes), 3, meta.input_size, meta.input_size), np.float32)
    ms = []
    for i, box in enumerate(boxes):
        geo.validate_box(box, (w, h))
        crop, m = geo.crop_face(image, box, meta.input_size, meta.crop_enlarge)
        normalize(crop, meta, out=x[i])
        ms.append(m)
    return x, np.stack(ms)


def uncrop(landmarks_crop: np.ndarray, crop_from_image: np.ndarray) -> np.ndarray:
    """``[B, N, 2]`` crop-pixel landmarks -> image pixels with each face's ``crop_from_image``."""
    return geo.apply_affine(geo.invert_affine(crop_from_image), landmarks_crop)


def metadata_for(model, **extra) -> ArtifactMetadata:
    """Metadata of a :class:`glsr.models.GLSRNet` (pre-processing contract + provenance)."""
    import glsr

    cfg = model.cfg
    return ArtifactMetadata(variant=cfg.name, scheme=model.scheme.name, num_points=model.scheme.num_points,
                            input_size=cfg.input_size, crop_enlarge=cfg.crop_enlarge, box_scale=cfg.box_scale,
                            channel_order=cfg.channel_order, pixel_mean=cfg.pixel_mean, pixel_std=cfg.pixel_std,
                            glsr_version=glsr.__version__, git_commit=git_commit(),
                            **{"box_convention": getattr(model, "box_convention", ""),
                               "stages": " > ".join(model.stages), **extra})
