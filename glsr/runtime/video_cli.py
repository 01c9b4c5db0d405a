"""``glsr predict VIDEO`` / ``glsr predict CAMERA_INDEX``: faces tracked along the frames (JSON Lines on stdout, one
object per frame), optionally written as an annotated video (``--out``, written beside the target and renamed
into place when complete, so a reader never sees half a video)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional

VIDEO_WRITERS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
"""Output suffix -> FourCC of OpenCV's VideoWriter (codecs every opencv-python wheel has)."""


def check_video_suffix(path: str) -> Path:
    p = Path(path)
    if p.suffix.lower() not in VIDEO_WRITERS:
        raise ValueError(f"--out {p}: an annotated video is written as {' / '.join(VIDEO_WRITERS)}, not "
                         f"{p.suffix or '(no suffix)'!r}")
    return p


class VideoOut:
    """An annotated video written to a temporary file beside ``path``, renamed over it by :meth:`close`
    (``discard`` removes it instead)."""

    def __init__(self, path: str, fps: float, size):
        import cv2

        self.path = check_video_suffix(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=self.path.suffix, dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        fourcc = cv2.VideoWriter_fourcc(*VIDEO_WRITERS[self.path.suffix.lower()])
        self.writer = cv2.VideoWriter(str(self.tmp), fourcc, float(fps), tuple(int(v) for v in size))
        if not self.writer.isOpened():
            self.discard()
            raise ValueError(f"--out {self.path}: OpenCV cannot write this video format here; try .avi")

    def write(self, frame) -> None:
        self.writer.write(frame)

    def close(self) -> None:
        self.writer.release()
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.writer.release()
        self.tmp.unlink(missing_ok=True)


def predict_video(args: argparse.Namespace, source: str) -> int:
    """Track the faces of a video file or camera and print one JSON object per frame."""
    import cv2
    from tqdm import tqdm

    from glsr.runtime.cli import NO_FACE_HINT, _load, camera_index
    from glsr.runtime.io import draw_landmarks
    from glsr.runtime.refine import RefineConfig, model_convention
    from glsr.runtime.tracking import OneEuroConfig, TrackConfig, Tracker, open_video

    cam = camera_index(source)
    if cam is None and not Path(source).is_file():
        raise FileNotFoundError(f"video {source} does not exist")
    if args.out:
        check_video_suffix(args.out)
    cap = open_video(cam if cam is not None else source)
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    fps = fps if 0 < fps < 1000 else 30.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cam is None else 0
    if args.max_frames:
        total = min(total, args.max_frames) if total > 0 else args.max_frames
    predictor = _load(args)
    config = TrackConfig(refine=RefineConfig(passes=0 if args.no_refine else 1), fps=fps,
                         smoothing=OneEuroConfig() if args.smooth else None, max_faces=args.max_faces)
    tracker = Tracker(predictor, config)
    conv = model_convention(predictor)
    out: Optional[VideoOut] = None
    frames = faceless = 0
    bar = tqdm(total=total or None, desc="track", unit="frame", file=sys.stderr, dynamic_ncols=True,
               disable=True if args.no_progress else None)
    try:
        while args.max_frames is None or frames < args.max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            res = tracker.update(frame)
            frames += 1
            faceless += len(res.ids) == 0
            if args.out:
                if out is None:
                    out = VideoOut(args.out, fps, (frame.shape[1], frame.shape[0]))
                out.write(draw_landmarks(frame, res.landmarks, res.boxes.tolist()))
            print(json.dumps({"frame": res.index, "time": round(res.index / fps, 4), "detected": res.detected,
                              "faces": res.to_json()}, allow_nan=False), flush=True)
            bar.update(1)
    except KeyboardInterrupt:  # a camera runs until stopped: keep what was written
        print(f"glsr predict: stopped after {frames} frames", file=sys.stderr)
    except BaseException:
        if out is not None:
            out.discard()
        raise
    finally:
        bar.close()
        cap.release()
    if out is not None:
        out.close()
    if frames == 0:
        raise ValueError(f"{source}: no frame could be read")
    print(f"glsr predict: {frames} frames ({fps:g} fps), detector {args.detector} ({conv} boxes) ran on "
          f"{tracker.detections}", file=sys.stderr)
    if faceless == frames:
        print(f"glsr predict: no face found in any frame of {source}; {NO_FACE_HINT}", file=sys.stderr)
    return 0
