"""Landmarks along a video: each face's next box comes from its previous landmarks, the detector runs only when
needed, and the landmarks can be smoothed over time.

:class:`Tracker` keeps the faces of the previous frame. On a new frame it crops each tracked face from the box of
its previous landmarks (the model's box convention, :func:`glsr.boxes.box_from_landmarks`) in one
pass, with the mirror view for the quality score (:mod:`glsr.runtime.refine`). A face whose quality falls below
``TrackConfig.lost_quality`` is lost; the detector then runs on that frame (also on the first frame, while no
face is tracked, and every ``detect_every`` frames when set, to pick up faces that walk in), and its faces are
refined (:func:`glsr.runtime.refine.refine_faces`) and matched to the kept tracks by box overlap. With
``smoothing`` a :class:`OneEuroFilter` (Casiez, Roussel and Vogel, CHI 2012) smooths each face's points: little
jitter when the face is still, little lag when it moves. Time stamps are seconds (``frame index / fps``).
Host-warp artifacts have no quality score (the mirror view needs crops): their faces are kept while their
landmarks stay where they were, and their ``quality`` is NaN.

>>> tracker = Tracker(predictor)                                  # doctest: +SKIP
>>> for frame in frames:                                          # doctest: +SKIP
...     result = tracker.update(frame)        # TrackedFrame: boxes, landmarks, quality, ids, detected
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional

import numpy as np

from glsr.boxes import box_from_landmarks
from glsr.runtime.refine import LOST_QUALITY, RefineConfig, clip_boxes, model_convention, refine_faces


@dataclass(frozen=True)
class OneEuroConfig:
    """One-Euro filter parameters: ``min_cutoff`` (Hz) sets the smoothing of a still face, ``beta`` how fast the
    cutoff rises with speed, ``d_cutoff`` (Hz) the smoothing of the speed estimate. Speeds are in face sizes per
    second (the landmarks' longer extent), so the parameters do not depend on the face's size in pixels. The
    defaults were chosen on the study video (``benchmarks/results/tracking_video.md``, which records the effect):
    a still face's jitter drops, a moving face is followed without visible lag (a beta of 5 lagged far behind)."""

    min_cutoff: float = 1.0
    beta: float = 100.0
    d_cutoff: float = 1.0

    def __post_init__(self):
        for name in ("min_cutoff", "d_cutoff"):
            if not getattr(self, name) > 0:
                raise ValueError(f"One-Euro {name} must be > 0 Hz, got {getattr(self, name)}")
        if not self.beta >= 0:
            raise ValueError(f"One-Euro beta must be >= 0, got {self.beta}")


class OneEuroFilter:
    """The One-Euro filter of an array of values (e.g. ``[N, 2]`` landmarks), element-wise."""

    def __init__(self, config: OneEuroConfig = OneEuroConfig()):
        self.config = config
        self.x: Optional[np.ndarray] = None
        self.dx: Optional[np.ndarray] = None
        self.t: Optional[float] = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        """Filtered ``x`` at time ``t`` (seconds); ``scale``: the unit of ``x`` for the speed term (face size). The
        first value, and one at a time that does not move on (a new clip), pass through and restart the filter."""
        x = np.asarray(x, dtype=np.float64)
        if self.x is None or self.t is None or t <= self.t:
            self.x, self.dx, self.t = x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        c = self.config
        dt = float(t) - self.t
        dx = (x - self.x) / dt / max(scale, 1e-9)
        a_d = self._alpha(c.d_cutoff, dt)
        self.dx = a_d * dx + (1 - a_d) * self.dx
        a = self._alpha(c.min_cutoff + c.beta * np.abs(self.dx), dt)
        self.x = a * x + (1 - a) * self.x
        self.t = float(t)
        return self.x.copy()


@dataclass(frozen=True)
class TrackConfig:
    """``lost_quality``: a tracked face below this quality is lost (the detector runs on that frame);
    ``detect_every``: also run the detector every this many frames (0 = only when needed); ``refine``: the
    refinement of freshly detected faces; ``smoothing``: One-Euro parameters, ``None`` = no smoothing;
    ``max_faces``: at most this many faces tracked (largest first), ``None`` = all; ``fps``: frames per second for
    the time stamps when :meth:`Tracker.update` gets none."""

    lost_quality: float = LOST_QUALITY
    detect_every: int = 0
    refine: RefineConfig = RefineConfig()
    smoothing: Optional[OneEuroConfig] = None
    max_faces: Optional[int] = None
    fps: float = 30.0

    def __post_init__(self):
        if not 0 <= self.lost_quality < 1:
            raise ValueError(f"lost_quality must be in [0, 1), got {self.lost_quality}")
        if int(self.detect_every) < 0:
            raise ValueError(f"detect_every must be >= 0, got {self.detect_every}")
        if self.max_faces is not None and int(self.max_faces) < 1:
            raise ValueError(f"max_faces must be >= 1 (or None), got {self.max_faces}")
        if not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if not self.refine.quality:
            raise ValueError("tracking needs the quality score (RefineConfig(quality=True)) to tell a lost face")


@dataclass(frozen=True)
class TrackedFrame:
    """One frame's faces: ``ids [F]`` (a face keeps its id while tracked), ``boxes [F, 4]`` (the crops used),
    ``landmarks [F, N, 2]`` (image pixels; smoothed when the tracker smooths), ``quality [F]``, ``detected``:
    whether the detector ran on this frame, ``index``: the frame's number from 0."""

    index: int
    ids: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray
    quality: np.ndarray
    detected: bool

    def to_json(self, digits: int = 3) -> list:
        return [{"id": int(i), "box": np.round(b, digits).tolist(), "landmarks": np.round(p, digits).tolist(),
                 "quality": round(float(q), 4) if np.isfinite(q) else None}
                for i, b, p, q in zip(self.ids, self.boxes, self.landmarks, self.quality)]


@dataclass
class _Track:
    id: int
    landmarks: np.ndarray            # raw (unsmoothed) landmarks of the last frame: the next box comes from these
    filter: Optional[OneEuroFilter] = field(default=None)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``[len(a), len(b)]`` of boxes."""
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


class Tracker:
    """Faces tracked frame to frame with ``predictor`` (a :class:`glsr.runtime.predictor.Predictor`); detection by
    ``detector`` (default: the predictor's own). See the module docstring."""

    def __init__(self, predictor, config: TrackConfig = TrackConfig(), detector=None):
        from glsr.runtime.detectors import make_detector

        self.predictor = predictor
        self.config = config
        det = make_detector(detector) if detector is not None else predictor.detector
        if det is None:
            raise ValueError("tracking needs a face detector for the first frame: create the predictor with "
                             "detector='yunet' (the default of Predictor.from_file) or pass detector=")
        self.detector = det.bind(predictor.metadata)
        self.convention = model_convention(predictor)
        self.tracks: List[_Track] = []
        self.frames = 0
        self.detections = 0
        self._next_id = 0

    def reset(self) -> None:
        """Forget every face (e.g. at a scene cut)."""
        self.tracks = []

    def update(self, frame: np.ndarray, t: Optional[float] = None) -> TrackedFrame:
        """The faces of the next frame (HxWx3 uint8 BGR); ``t``: its time in seconds (default index / fps)."""
        from glsr.imaging import check_image

        check_image(frame)
        index = self.frames
        self.frames += 1
        t = index / self.config.fps if t is None else float(t)
        h, w = frame.shape[:2]
        kept: List[_Track] = []
        out_pts: Dict[int, np.ndarray] = {}
        out_q: Dict[int, float] = {}
        out_box: Dict[int, np.ndarray] = {}
        if self.tracks:
            boxes = clip_boxes(box_from_landmarks(np.stack([tr.landmarks for tr in self.tracks]), self.convention),
                               (w, h))
            faces = refine_faces(self.predictor, frame, boxes, RefineConfig(passes=0), self.convention)
            follows = _iou(box_from_landmarks(faces.landmarks, "tight"), box_from_landmarks(
                np.stack([tr.landmarks for tr in self.tracks]), "tight")).diagonal()
            for tr, b, p, q, f in zip(self.tracks, faces.boxes, faces.landmarks, faces.quality, follows):
                # a face is kept while its quality holds; without a quality (host-warp artifacts cannot run the
                # mirror view) while its landmarks stay where they were (IoU >= 0.5 with the last frame's)
                if q >= self.config.lost_quality or (np.isnan(q) and f >= 0.5):
                    tr.landmarks = p
                    kept.append(tr)
                    out_pts[tr.id], out_q[tr.id], out_box[tr.id] = p, float(q), b
        lost = len(kept) < len(self.tracks)
        every = self.config.detect_every
        detect = not kept or lost or (every > 0 and index % every == 0)
        if detect:
            self.detections += 1
            found = self.detector.detect(frame)
            if len(found):
                faces = refine_faces(self.predictor, frame, clip_boxes(found, (w, h)), self.config.refine,
                                     self.convention)
                ok = (faces.quality >= self.config.lost_quality) | np.isnan(faces.quality)
                if not kept:  # nothing tracked: keep the best faces even when the quality is low, to start on
                    ok = np.ones(len(found), bool)
                new_boxes = faces.boxes[ok]
                if kept:
                    old = np.stack([out_box[tr.id] for tr in kept])
                    overlap = _iou(new_boxes, old).max(axis=1) if len(new_boxes) else np.zeros(0)
                else:
                    overlap = np.zeros(len(new_boxes))
                for b, p, q, o in zip(new_boxes, faces.landmarks[ok], faces.quality[ok], overlap):
                    if o >= 0.3:
                        continue  # a face already tracked
                    tr = _Track(self._next_id, p)
                    self._next_id += 1
                    kept.append(tr)
                    out_pts[tr.id], out_q[tr.id], out_box[tr.id] = p, float(q), b
        if self.config.max_faces is not None and len(kept) > self.config.max_faces:
            size = {tr.id: np.ptp(out_pts[tr.id], axis=0).max() for tr in kept}
            kept = sorted(kept, key=lambda tr: -size[tr.id])[:self.config.max_faces]
        self.tracks = kept
        pts_out = []
        for tr in kept:
            p = out_pts[tr.id]
            if self.config.smoothing is not None:
                if tr.filter is None:
                    tr.filter = OneEuroFilter(self.config.smoothing)
                p = tr.filter(p, t, scale=float(np.ptp(p, axis=0).max()))
            pts_out.append(p)
        n = self.predictor.num_points
        return TrackedFrame(index, np.array([tr.id for tr in kept], dtype=np.int64),
                            np.stack([out_box[tr.id] for tr in kept]) if kept else np.zeros((0, 4)),
                            np.stack(pts_out) if kept else np.zeros((0, n, 2)),
                            np.array([out_q[tr.id] for tr in kept]), detect)


def track(predictor, frames: Iterable[np.ndarray], config: TrackConfig = TrackConfig(), detector=None
          ) -> Iterator[TrackedFrame]:
    """:class:`TrackedFrame` for each of ``frames`` (an iterable of images, e.g. :func:`video_frames`)."""
    tracker = Tracker(predictor, config, detector)
    for frame in frames:
        yield tracker.update(frame)


def video_frames(source: str | int) -> Iterator[np.ndarray]:
    """Frames (HxWx3 uint8 BGR) of a video file or a camera index, read with OpenCV; ``ValueError`` naming the
    source when it does not open."""
    cap = open_video(source)
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield frame
    finally:
        cap.release()


def open_video(source: str | int):
    """An opened ``cv2.VideoCapture`` of a video file or a camera index; ``ValueError`` naming it otherwise."""
    import cv2

    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        cap.release()
        what = f"camera {source}" if isinstance(source, int) else f"video {source}"
        raise ValueError(f"{what} could not be opened (not a video OpenCV reads, or no such camera)")
    return cap
