"""Pre- and post-processing of the runtime: face crops in, landmarks back to image pixels (one code path for
every backend). The normalization is :func:`glsr.imaging.normalize`'s (shared with training), done by
:func:`normalize_into` straight from each warp's reused uint8 buffer into the float32 network input.

Conventions: images are HxWx3 uint8 in the artifact's channel order (BGR, as OpenCV reads); boxes are
``(x1, y1, x2, y2)`` image pixels; landmarks ``(x, y)`` with pixel centres at integers (:mod:`glsr.geometry`).
"""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from typing import Dict, Hashable, Sequence, Tuple

import cv2
import numpy as np

from glsr import geometry as geo
from glsr.imaging import check_image
from glsr.metadata import ArtifactMetadata, git_commit

_BUFFERS = threading.local()


def scratch(tag: Hashable, shape: Tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
    """The thread's reused buffer for ``tag``, of ``shape`` and ``dtype`` (made anew when either changes), for
    arrays that never leave the call that fills them (a warp's uint8 pixels, the host-warp graphs' inputs): no
    allocation per call, and the same array each call, which an I/O-bound session binds once
    (:class:`glsr.runtime.sessions.BoundSession`). One buffer per tag, so a batch size that changes from call to
    call never piles up buffers."""
    cache: Dict[Hashable, np.ndarray] = _BUFFERS.__dict__.setdefault("scratch", {})
    buf = cache.get(tag)
    if buf is None or buf.shape != shape or buf.dtype != dtype:
        buf = cache[tag] = np.empty(shape, dtype)
    return buf


def _u8(shape: Tuple[int, ...]) -> np.ndarray:
    """The reused uint8 buffer a warp of ``shape`` lands in (:func:`scratch`; one per shape, each a single face's
    or a face's part stack): normalized out of it at once."""
    return scratch(("u8", shape), shape, np.uint8)


def _planes(height: int, width: int, count: int) -> list:
    """``count`` reused uint8 ``height x width`` planes (one set per thread and size) for ``cv2.split`` to fill:
    8 us less per 136 px image than letting it allocate them."""
    cache: Dict[Tuple[int, int, int], list] = _BUFFERS.__dict__.setdefault("planes", {})
    key = (height, width, count)
    if key not in cache:
        cache[key] = [np.empty((height, width), np.uint8) for _ in range(count)]
    return cache[key]


@functools.lru_cache(maxsize=16)
def _lut(mean: float, std: float) -> np.ndarray:
    """``(v - mean) / std`` for every uint8 value ``v``, in float32 arithmetic as :func:`glsr.imaging.normalize`."""
    lut = np.arange(256, dtype=np.float32)
    lut -= np.float32(mean)
    lut /= np.float32(std)
    return lut


@dataclass(frozen=True)
class Normalizer:
    """An artifact's pixel normalization, resolved once: HxWx3 uint8 (OpenCV's BGR) -> 3xHxW float32
    ``(pixel - mean) / std`` with the channels in the artifact's order, exactly the values of
    :func:`glsr.imaging.normalize` (what training crops are made of).

    ``lut``: the 256-entry float32 table; ``order``: the source channel of each output plane. Images of
    ``TABLE_MIN_PIXELS`` or more go through ``cv2.split`` into reused planes and one ``cv2.LUT`` per channel (the
    fastest exact form measured: a 3-channel ``cv2.LUT`` then a float ``cv2.split``, ``np.take`` on the transposed
    view, numpy arithmetic and ``cv2.dnn.blobFromImage`` are 1.2-2.5x slower, the last also 1 ulp off); smaller
    ones by numpy arithmetic, cheaper than cv2's per-call cost there."""

    mean: float
    std: float
    order: Tuple[int, int, int]
    lut: np.ndarray = field(compare=False, repr=False)

    TABLE_MIN_PIXELS = 64 * 64

    def into(self, pixels: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Normalize ``pixels`` (HxWx3 uint8, C-contiguous) into ``out`` (3xHxW float32); returns ``out``."""
        h, w, c = pixels.shape
        if h * w < self.TABLE_MIN_PIXELS:
            np.copyto(out, pixels.transpose(2, 0, 1)[list(self.order)])
            out -= np.float32(self.mean)
            out /= np.float32(self.std)
            return out
        planes = _planes(h, w, c)
        cv2.split(pixels, planes)
        for dst, src in zip(out, self.order):
            cv2.LUT(planes[src], self.lut, dst=dst)
        return out


@functools.lru_cache(maxsize=16)
def _normalizer(mean: float, std: float, rgb: bool) -> Normalizer:
    return Normalizer(mean, std, (2, 1, 0) if rgb else (0, 1, 2), _lut(mean, std))


def normalizer(meta: ArtifactMetadata) -> Normalizer:
    """The :class:`Normalizer` of ``meta`` (one per mean, std and channel order)."""
    return _normalizer(float(meta.pixel_mean), float(meta.pixel_std), meta.channel_order.upper() == "RGB")


def normalize_into(pixels: np.ndarray, out: np.ndarray, norm: ArtifactMetadata | Normalizer) -> np.ndarray:
    """HxWx3 uint8 (OpenCV's BGR) -> ``out`` 3xHxW float32 ``(pixel - mean) / std`` in the artifact's channel
    order; ``norm``: the artifact's metadata or its :class:`Normalizer` (the hot loops resolve it once)."""
    return (norm if isinstance(norm, Normalizer) else normalizer(norm)).into(pixels, out)


def _warp(image: np.ndarray, src_from_dst: np.ndarray, size: int, dst: np.ndarray) -> None:
    """``cv2.warpAffine`` of a ``size`` px square into ``dst`` (uint8): bilinear, zero border, given the
    source-from-destination pixel affine (:func:`glsr.geometry.warp`'s conventions)."""
    cv2.warpAffine(image, src_from_dst, (size, size), dst=dst, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def warp_into(image: np.ndarray, src_from_dst: np.ndarray, size: int, out: np.ndarray,
              norm: ArtifactMetadata | Normalizer) -> np.ndarray:
    """Warp ``size`` px from ``image`` with the pixel affine ``src_from_dst`` (bilinear, zero border, as
    :func:`glsr.geometry.warp`) and normalize into ``out`` ``[3, size, size]`` float32 (:func:`normalize_into`)."""
    buf = _u8((size, size, image.shape[2]))
    _warp(image, src_from_dst, size, buf)
    return normalize_into(buf, out, norm)


def warp_stack_into(image: np.ndarray, src_from_dst: np.ndarray, size: int, out: np.ndarray,
                    norm: ArtifactMetadata | Normalizer) -> np.ndarray:
    """Warp ``K`` squares of ``size`` px from ``image`` (pixel affines ``src_from_dst`` ``[K, 2, 3]``), stacked
    along the height, and normalize them in one pass into ``out`` ``[3, K * size, size]`` float32: the values of
    :func:`warp_into` per square, with one normalization call instead of ``K``."""
    k = len(src_from_dst)
    buf = _u8((k, size, size, image.shape[2]))
    for j in range(k):
        _warp(image, src_from_dst[j], size, buf[j])
    return normalize_into(buf.reshape(k * size, size, image.shape[2]), out, norm)


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
        m = geo.crop_from_image(box, meta.input_size, meta.crop_enlarge)
        warp_into(image, geo.invert_affine(m), meta.input_size, x[i], meta)
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
