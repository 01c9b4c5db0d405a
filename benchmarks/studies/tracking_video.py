"""Tracking against detection on every frame, on a video made from a real photo
(``python -m benchmarks.studies.tracking_video``).

The video: one 300-W ``val`` photo (faces glsr never trains on) seen through a moving, rotating and zooming window
(:func:`camera_path`: the face drifts across the frame, turns by up to +-20 degrees in-plane and changes size by
+-30 %), written with ``cv2.VideoWriter`` (MJPG) and read back, so the frames carry the codec's artefacts; the
ground-truth landmarks move with the window. Three ways through it, all with the same model
(:class:`glsr.runtime.predictor.Predictor`, ONNX export on onnxruntime unless ``--pt``, one thread):

* ``detect every frame``: ``predict_faces(frame)`` on each frame (YuNet, then one refinement pass), what
  ``glsr predict`` does on a folder of frames;
* ``track``: :class:`glsr.runtime.tracking.Tracker` (the box from the previous landmarks, one pass with the mirror
  view for the quality, the detector only on the first frame and when a face is lost), what
  ``glsr predict VIDEO`` does;
* ``track + One-Euro``: the same with the landmarks smoothed.

Reported: frames per second (wall time of the whole pass over the decoded frames, and the median per frame),
detector runs, NME (inter-ocular) along the video (mean, worst frame), and jitter: the mean frame-to-frame motion
error ``|(p_t - p_t-1) - (g_t - g_t-1)|`` in inter-ocular distances. Writes ``OUT.json`` / ``OUT.md`` atomically.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from glsr import atomic
from benchmarks import RESULTS_DIR, missing_300w
from glsr.paths import SHARED

DATA = SHARED / "data" / "300w"
SPEC = f"300w:{DATA}"
FRAME_SIZE = (480, 360)
FPS = 25.0
STILL = 50
"""The first frames show the face still (the window does not move): jitter there is noise alone."""


def camera_path(k: int, face_box: np.ndarray, frame_size=FRAME_SIZE) -> np.ndarray:
    """``frame_from_photo`` [2, 3] of frame ``k``: a window on the photo centred near the face, drifting, turning
    and zooming smoothly (periods of a few seconds at 25 fps)."""
    import cv2

    fw, fh = frame_size
    k = max(0, k - STILL)
    c = (face_box[:2] + face_box[2:]) / 2
    face = max(face_box[2] - face_box[0], face_box[3] - face_box[1])
    scale = (0.45 * fh / face) * (1.0 + 0.3 * np.sin(2 * np.pi * k / 110))
    angle = 20.0 * np.sin(2 * np.pi * k / 80)
    drift = np.array([0.25 * fw * np.sin(2 * np.pi * k / 70), 0.15 * fh * np.sin(2 * np.pi * k / 95 + 1.0)])
    m = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), angle, scale)
    m[:, 2] += np.array([fw / 2, fh / 2]) + drift - c
    return m


def make_video(path: Path, image: np.ndarray, gt: np.ndarray, frames: int) -> List[np.ndarray]:
    """Write the video (MJPG .avi) and return the ground truth of every frame."""
    import cv2

    from glsr import geometry as geo

    box = geo.tight_box(gt)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, FRAME_SIZE)
    truth = []
    for k in range(frames):
        m = camera_path(k, box)
        writer.write(cv2.warpAffine(image, m, FRAME_SIZE, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
        truth.append(geo.apply_affine(m, gt))
    writer.release()
    return truth


def pick_photo(index: Optional[int]):
    """The val face to film: ``index``, else the largest face of a photo holding one annotated face."""
    from glsr import geometry as geo
    from glsr.train.augment import get_annotation, get_face
    from glsr.train.evaluate import open_faces

    ds = open_faces(SPEC, "val")
    if index is None:
        sizes = []
        for i in range(len(ds)):
            gt, _ = get_annotation(ds, i, clean=True)
            b = geo.tight_box(np.asarray(gt))
            sizes.append(min(b[2] - b[0], b[3] - b[1]))
        index = int(np.argmax(sizes))
    gt, _ = get_annotation(ds, index, clean=True)
    face = get_face(ds, index)
    return index, face.image, np.asarray(gt, dtype=np.float64)


def run_way(name: str, predictor, frames: List[np.ndarray], truth: List[np.ndarray], smoothing=None
            ) -> Dict[str, Any]:
    from glsr.runtime.tracking import OneEuroConfig, TrackConfig, Tracker
    from glsr.schemes import get_scheme
    from glsr.train.evaluate import box_iou
    from glsr.train.metrics import nme_per_image
    from glsr import geometry as geo

    scheme = get_scheme("68")
    tracker = Tracker(predictor, TrackConfig(fps=FPS, smoothing=OneEuroConfig() if smoothing else None)) \
        if name != "detect every frame" else None
    preds, ms, detections, missing = [], [], 0, 0
    t_all = time.perf_counter()
    for frame, gt in zip(frames, truth):
        t0 = time.perf_counter()
        if tracker is None:
            res = predictor.predict_faces(frame)
            boxes, pts = res.boxes, res.landmarks
            detections += 1
        else:
            res = tracker.update(frame)
            boxes, pts = res.boxes, res.landmarks
        ms.append(1000 * (time.perf_counter() - t0))
        if len(pts) == 0:
            missing += 1
            preds.append(np.full_like(gt, np.nan))
            continue
        j = int(np.argmax(box_iou(geo.tight_box(gt), geo.tight_box(pts))))
        preds.append(pts[j])
    wall = time.perf_counter() - t_all
    if tracker is not None:
        detections = tracker.detections
    p, g = np.stack(preds), np.stack(truth)
    ok = np.isfinite(p).all(axis=(1, 2))
    err = np.full(len(p), np.nan)
    err[ok] = np.asarray(nme_per_image(p[ok], g[ok], scheme, "interocular"))
    io = np.linalg.norm(g[:, 36] - g[:, 45], axis=-1)
    both = ok[1:] & ok[:-1]
    motion = np.linalg.norm((p[1:] - p[:-1]) - (g[1:] - g[:-1]), axis=-1).mean(axis=-1) / io[1:]
    still = np.arange(len(p)) < STILL
    return {"way": name, "frames": len(frames), "fps": len(frames) / wall, "ms_median": float(np.median(ms)),
            "detector_runs": detections, "frames_without_face": missing, "nme": float(np.nanmean(err)),
            "nme_worst_frame": float(np.nanmax(err)), "nme_still": float(np.nanmean(err[still])),
            "nme_moving": float(np.nanmean(err[~still])), "jitter_still": float(motion[both & still[1:]].mean()),
            "jitter_moving": float(motion[both & ~still[1:]].mean()), "nme_per_frame": err.tolist()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="small")
    ap.add_argument("--pt", action="store_true", help="run the .pt checkpoint (default: its ONNX export)")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--face", type=int, default=None, help="val face index to film (default: the largest face)")
    ap.add_argument("--out", default=str(RESULTS_DIR / "tracking_video"))
    args = ap.parse_args(argv)
    if missing_300w():
        return 2
    from benchmarks.studies.detector_boxes import machine, open_model
    from glsr.runtime.predictor import Predictor
    from glsr.runtime.tracking import video_frames

    index, image, gt = pick_photo(args.face)
    with tempfile.TemporaryDirectory(prefix="glsr-tracking-") as tmp:
        video = Path(tmp) / "clip.avi"
        truth = make_video(video, image, gt, args.frames)
        frames = list(video_frames(str(video)))
        model = open_model(args.weights, args.pt, tmp)
        predictor = Predictor.from_file(model, threads=1)
        predictor.predict_faces(frames[0])  # warm-up
        ways = [run_way("detect every frame", predictor, frames, truth),
                run_way("track", predictor, frames, truth),
                run_way("track + One-Euro", predictor, frames, truth, smoothing=True)]
    given = argv if argv is not None else sys.argv[1:]
    r = {"command": " ".join(["python -m benchmarks.studies.tracking_video", *given]),
         "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "model": args.weights,
         "runtime": ".pt (torch)" if args.pt else "ONNX fp32 (onnxruntime)", "machine": machine(),
         "video": {"val_face_index": index, "frames": len(frames), "size": list(FRAME_SIZE), "fps": FPS,
                   "codec": "MJPG"},
         "ways": ways}
    m = r["machine"]
    base = ways[0]
    lines = ["# Tracking a video against detection on every frame", "",
             f"`{r['command']}` ({r['date']}; model `{r['model']}` as {r['runtime']}, one thread; {m['cpu']}, "
             f"{m['cores']} cores, shared with other jobs: the three ways ran one after the other in one process, "
             "their ratio is the figure to read).", "",
             f"Video: 300-W val face #{index}, still for {STILL} frames, then filmed through a drifting, turning "
             f"(+-20 degrees) and zooming (+-30 %) window, {len(frames)} frames of {FRAME_SIZE[0]}x{FRAME_SIZE[1]} "
             f"at {FPS:g} fps, MJPG, read back "
             "with OpenCV. NME in % of the inter-ocular distance per frame; jitter: mean frame-to-frame motion "
             "error in % of the inter-ocular distance.", "",
             "| way | fps | ms/frame (median) | speed-up | detector runs | frames without face | NME io | worst frame "
             "| NME still / moving | jitter still / moving |", "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for w in ways:
        lines.append(f"| {w['way']} | {w['fps']:.1f} | {w['ms_median']:.1f} | {w['fps'] / base['fps']:.2f}x | "
                     f"{w['detector_runs']} | {w['frames_without_face']} | {100 * w['nme']:.2f} | "
                     f"{100 * w['nme_worst_frame']:.2f} | {100 * w['nme_still']:.2f} / {100 * w['nme_moving']:.2f} | "
                     f"{100 * w['jitter_still']:.2f} / {100 * w['jitter_moving']:.2f} |")
    atomic.write_text(args.out + ".json", json.dumps(r, indent=1) + "\n")
    atomic.write_text(args.out + ".md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
