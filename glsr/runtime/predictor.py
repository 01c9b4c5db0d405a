"""``Predictor``: a model file in, landmarks in image pixels out, for one or many faces of an image.

The artifact's own metadata (read by the backend chosen from the file's suffix,
:func:`glsr.runtime.backends.load_backend`) fixes the pre/post-processing; cropping and uncropping are
:func:`glsr.runtime.processing.crop_batch` / :func:`~glsr.runtime.processing.uncrop`, the code path training and
evaluation use. Faces of one image go to the backend in one call when the artifact takes a dynamic batch, else in
chunks of the artifact's static batch (the last chunk filled up with its last face, :mod:`glsr.runtime.batching`).
A host-warp artifact (``glsr export --host-warp``) runs in the host-warp mode of :mod:`glsr.runtime.hostwarp`: the
host warps every network input (loc image, face, part patches) straight from the photo, the networks run as
separate graphs; ``predict`` is the same call.

>>> p = Predictor.from_file("small")              # a shipped model or a file; YuNet finds the faces # doctest: +SKIP
>>> landmarks = p.predict(image)                  # [F, N, 2], detected faces, refined              # doctest: +SKIP
>>> faces = p.predict_faces(image)                # boxes, landmarks and each face's quality         # doctest: +SKIP
>>> landmarks = p.predict(image, [[x1, y1, x2, y2]])  # your boxes, in the model's box convention   # doctest: +SKIP
>>> for frame in p.track(video_frames("clip.mp4")): ...   # glsr.runtime.tracking                    # doctest: +SKIP

Detected faces are refined (re-cropped from the tight box of their own first landmarks, and scored with a
quality in ``(0, 1]``; :mod:`glsr.runtime.refine`); faces of given boxes are not, unless ``refine=True``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from glsr import geometry as geo
from glsr.metadata import ArtifactMetadata
from glsr.runtime.backends import Backend, load_backend
from glsr.runtime.batching import run_in_batches
from glsr.runtime.detectors import DEFAULT_DETECTOR, FaceDetector, make_detector
from glsr.runtime.refine import NO_REFINE, RefineConfig, refine_faces
from glsr.imaging import check_image
from glsr.runtime.hostwarp import HostWarpBatch, loc_batch, run_host_warp
from glsr.runtime.processing import crop_batch, uncrop


class NonFiniteOutputError(ValueError):
    """The model returned NaN or infinite landmarks (broken weights); never passed on as numbers."""


@dataclass(frozen=True)
class Prediction:
    """Faces of one image: ``boxes [F, 4]`` and ``landmarks [F, N, 2]``, image pixels; ``quality [F]`` in ``(0, 1]``
    when the faces were refined and scored (:mod:`glsr.runtime.refine`), else ``None``."""

    boxes: np.ndarray
    landmarks: np.ndarray
    quality: Optional[np.ndarray] = None

    def to_json(self, digits: int = 3) -> list:
        faces = [{"box": np.round(b, digits).tolist(), "landmarks": np.round(p, digits).tolist()}
                 for b, p in zip(self.boxes, self.landmarks)]
        if self.quality is not None:
            for f, q in zip(faces, self.quality):
                f["quality"] = round(float(q), 4) if np.isfinite(q) else None
        return faces


def as_boxes(boxes: Sequence[Sequence[float]] | np.ndarray, image_size: Optional[tuple] = None) -> np.ndarray:
    """``[F, 4]`` float64 boxes from one box or a list of boxes; each checked (:func:`glsr.geometry.validate_box`)."""
    try:
        b = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"face boxes must be numbers (x1, y1, x2, y2), got {boxes!r}") from None
    if b.ndim == 1:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"face boxes must be [F, 4] (x1, y1, x2, y2), got shape {tuple(np.shape(boxes))}")
    for box in b:
        geo.validate_box(box, image_size)
    return b


class Predictor:
    """Landmarks for faces in images with any glsr artifact (``.pt``, ``.onnx``, ``.mnn``, Core ML)."""

    def __init__(self, backend: Backend, detector: Optional[FaceDetector] = None,
                 refine: RefineConfig | bool = True):
        self.backend = backend
        self.metadata: ArtifactMetadata = backend.metadata
        self.detector = detector.bind(self.metadata) if detector is not None else None
        self.refine = refine if isinstance(refine, RefineConfig) else RefineConfig() if refine else NO_REFINE

    @classmethod
    def from_file(cls, path: str | os.PathLike, threads: Optional[int] = None, precision: Optional[str] = None,
                  detector: str | FaceDetector | None = DEFAULT_DETECTOR, host_warp: bool = False,
                  refine: RefineConfig | bool = True, **backend_options) -> "Predictor":
        """Open a model file (or a shipped model by name: ``"small"``,
        :func:`glsr.shipped.resolve_model`) with the backend registered for its format.

        ``threads``: CPU threads of the backend (``None`` = the backend's default); ``precision``: passed to
        backends that choose a compute precision at load time (e.g. MNN); ``detector``: a
        :class:`~glsr.runtime.detectors.FaceDetector` or spec (``"yunet"``, the default, ``"haar"``, ``"boxfile"``;
        ``None``: none) used when :meth:`predict` gets no boxes; ``refine``: re-crop passes and quality of
        detected faces (a :class:`~glsr.runtime.refine.RefineConfig`; ``False``: no re-crop); ``host_warp``: run a
        ``.pt`` checkpoint in host-warp mode (exported artifacts carry their mode; asking a single-graph artifact for
        it is an error).
        """
        from glsr.shipped import resolve_model

        p = resolve_model(path)
        if threads is not None and int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if precision is not None:
            backend_options["precision"] = precision
        det = make_detector(detector)  # fail early on a bad detector spec, before loading a large model
        if host_warp:
            backend_options["host_warp"] = True
        backend = load_backend(p, threads=threads, **backend_options)
        if host_warp and not backend.host_warp:
            raise ValueError(f"{p.name} is a single-graph artifact; host-warp mode needs an artifact exported with "
                             "`glsr export --host-warp` (or a .pt checkpoint)")
        return cls(backend, det, refine)

    # ------------------------------------------------------------------------------------------ properties
    @property
    def num_points(self) -> int:
        return self.metadata.num_points

    @property
    def host_warp(self) -> bool:
        """True when the host does the warps and the networks run as separate graphs (:mod:`glsr.runtime.hostwarp`)."""
        return self.backend.host_warp

    @property
    def static_batch(self) -> Optional[int]:
        """The artifact's fixed batch size, ``None`` when it takes any batch."""
        return None if str(self.metadata.batch) == "dynamic" else int(self.metadata.batch)

    # ------------------------------------------------------------------------------------------ prediction
    def detect(self, image: np.ndarray, path: Optional[str | os.PathLike] = None) -> np.ndarray:
        """Face boxes ``[F, 4]`` from the predictor's detector."""
        if self.detector is None:
            raise ValueError("no face boxes given and this predictor has no face detector: pass boxes, or create it "
                             "with detector='haar' (or 'yunet:MODEL.onnx', 'boxfile')")
        return self.detector.detect(image, path)

    def predict(self, image: np.ndarray, boxes: Sequence[Sequence[float]] | np.ndarray | None = None,
                path: Optional[str | os.PathLike] = None) -> np.ndarray:
        """Landmarks ``[F, N, 2]`` in image pixels for the faces in ``boxes`` (``[F, 4]`` or one box), or for the
        faces the detector finds when ``boxes`` is ``None`` (``[0, N, 2]`` when it finds none)."""
        return self.predict_faces(image, boxes, path).landmarks

    def predict_faces(self, image: np.ndarray, boxes: Sequence[Sequence[float]] | np.ndarray | None = None,
                      path: Optional[str | os.PathLike] = None, refine: Optional[bool] = None) -> Prediction:
        """Like :meth:`predict`, returning the boxes used (the last crop's) and, for refined faces, their quality.
        ``refine``: ``None`` = refine detected faces only (the predictor's ``refine`` config), ``True`` = refine
        given boxes as well, ``False`` = never."""
        check_image(image)
        detected = boxes is None
        if detected:
            boxes = self.detect(image, path)
            if len(boxes) == 0:
                return Prediction(np.zeros((0, 4)), np.zeros((0, self.num_points, 2)), np.zeros(0))
        if detected if refine is None else refine:
            h, w = image.shape[:2]
            f = refine_faces(self, image, as_boxes(boxes, (w, h)), self.refine)
            return Prediction(f.boxes, f.landmarks, f.quality if self.refine.quality else None)
        x, crop_from_image, b = self.crop(image, boxes)
        return Prediction(b, self.uncrop(self.run(x), crop_from_image, b))

    def track(self, frames, **config):
        """Landmarks along a video: a :class:`glsr.runtime.tracking.TrackedFrame` per frame of ``frames``;
        ``config``: :class:`glsr.runtime.tracking.TrackConfig` fields (``smoothing``, ``lost_quality``, ...)."""
        from glsr.runtime.tracking import TrackConfig, track

        return track(self, frames, TrackConfig(**{"refine": self.refine, **config}))

    # The three stages of a prediction (crop -> run -> uncrop), public so that benchmarks time each one on the
    # very code path ``predict`` takes (glsr.bench.latency).
    def crop(self, image: np.ndarray, boxes: Sequence[Sequence[float]] | np.ndarray
             ) -> Tuple[np.ndarray | HostWarpBatch, np.ndarray, np.ndarray]:
        """Stage 1: checked boxes -> ``(crops [F, 3, S, S], crop_from_image [F, 2, 3], boxes [F, 4])``; in
        host-warp mode ``(HostWarpBatch, loc_from_image, boxes)``."""
        check_image(image)
        h, w = image.shape[:2]
        b = as_boxes(boxes, (w, h))
        if self.host_warp:
            batch = loc_batch(image, b, self.metadata)
            return batch, batch.loc_from_image, b
        x, crop_from_image = crop_batch(image, b, self.metadata)
        return x, crop_from_image, b

    def uncrop(self, landmarks_crop: np.ndarray, crop_from_image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Stage 3: crop-pixel landmarks ``[F, N, 2]`` -> image pixels; NaN / infinity is an error."""
        out = uncrop(landmarks_crop, crop_from_image)
        bad = ~np.isfinite(out).all(axis=(1, 2))
        if bad.any():
            raise NonFiniteOutputError(f"{self.backend.path}: the model output NaN or infinity for {int(bad.sum())} "
                                       f"of {len(boxes)} faces (first box {np.round(boxes[bad][0], 1).tolist()}); "
                                       "its weights are broken (a diverged training or a bad export): use another "
                                       "model file")
        return out

    def run(self, x: np.ndarray | HostWarpBatch) -> np.ndarray:
        """Network only: crops ``[B, 3, S, S]`` -> crop-pixel landmarks ``[B, N, 2]``, honouring a static batch.
        In host-warp mode: a :class:`HostWarpBatch` (from :meth:`crop`) -> loc-pixel landmarks (the graphs
        and the host's face and part warps between them)."""
        if self.host_warp:
            if not isinstance(x, HostWarpBatch):
                raise ValueError(f"{self.backend.path.name} is a host-warp artifact: it takes the photo, not crops; "
                                 "call predict(image, boxes), or crop() then run()")
            return run_host_warp(lambda g, *xs: self._chunked(lambda *c: self.backend.run_graph(g, *c), *xs), x,
                                 self.metadata)
        return self._chunked(lambda c: [self.backend.run(c)], x)[0]

    def _chunked(self, fn, *xs: np.ndarray) -> list:
        """``fn(*inputs) -> [outputs]`` in chunks of the artifact's static batch (:func:`run_in_batches`)."""
        return run_in_batches(fn, xs, self.static_batch)

    def __repr__(self) -> str:
        m = self.metadata
        mode = ", host-warp" if self.host_warp else ""
        return (f"Predictor({self.backend.path.name}: {self.backend.name}{mode}, variant {m.variant}, scheme "
                f"{m.scheme}, batch {m.batch}, detector {self.detector!r})")
