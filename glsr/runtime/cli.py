"""``glsr predict``: landmarks for the faces of images, folders, a video or a camera, printed as JSON, optionally
drawn.

Faces come from ``--box`` (repeatable, one image) or from a face detector (``--detector``, default YuNet shipped
with glsr, its boxes corrected to the model's box convention; see :mod:`glsr.runtime.detectors`); detected faces
are re-cropped from their own first landmarks and scored (:mod:`glsr.runtime.refine`). One image prints one JSON
object; several images or a folder print JSON Lines (one object per image); a video or a camera prints one object
per frame, the faces tracked from frame to frame (:mod:`glsr.runtime.tracking`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

from glsr.boxes import BOX_CONVENTIONS, conventions_help
from glsr.imaging import IMAGE_SUFFIXES
from glsr.shipped import DEFAULT_SHIPPED, SHIPPED

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
NO_FACE_HINT = ("give the face box (--box X1 Y1 X2 Y2), try another detector (--detector haar), or make the face "
                "larger in the picture")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="landmarks on images, folders, a video or a camera (JSON on stdout)",
                       description="Predict landmarks for the faces of images, folders of images, a video file or "
                                   "a camera (an index such as 0). Without --box, faces are found by --detector: "
                                   "by default YuNet (OpenCV Model Zoo, MIT, shipped with glsr), its boxes "
                                   "corrected to the model's box convention (the shipped models': 'tight', the "
                                   "tight box of the 68 points; glsr's procedural models: that box x1.05, moved "
                                   "down 6%), then each face is cropped again from the tight box of its own "
                                   "first landmarks (--no-refine turns that off) and scored with a quality in (0, "
                                   "1] (agreement with the mirror image; low = unreliable, e.g. a profile). One "
                                   "image prints one JSON object {image, model, scheme, detector, box_convention, "
                                   "frame, size, faces: [{box, landmarks, quality}]}; several images or a folder "
                                   "print one such object per line (JSON Lines, a progress bar on stderr); a video "
                                   "or camera prints one object per frame {frame, time, detected, faces: [{id, box, "
                                   "landmarks, quality}]}, the faces tracked (the next box from the last "
                                   "landmarks, the detector only when a face is lost). Landmarks are (x, y) image "
                                   "pixels, pixel centres at integers, in the frame named by 'frame': 'upright' = "
                                   "the photo as viewers show it (EXIF orientation applied), 'stored' = the file's "
                                   "pixel array. 'warnings' lists problems such as a truncated file. An image "
                                   "without a face is listed with faces [] and named on stderr.")
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="image files, folders of images, one video file, or a camera index (0, 1, ...)")
    p.add_argument("--image", help="an image file (same as a positional INPUT)")
    p.add_argument("--weights", default=None,
                   help=f"a shipped model ({' | '.join(SHIPPED)}; default {DEFAULT_SHIPPED}: 68 points, trained on "
                        "300-W, research use only) or a model file: .pt checkpoint or an exported artifact (.onnx, "
                        ".mnn, .mlpackage, .mlmodel). Shipped models expect the tight box of the 68 points (the "
                        "detectors' boxes are corrected to it)")
    p.add_argument("--box", type=float, nargs=4, action="append", metavar=("X1", "Y1", "X2", "Y2"),
                   help="face box in image pixels of the frame the landmarks use (repeat for several faces; one "
                        "image only); skips the detector and the refinement (the landmarks are the model's for that "
                        "crop, no quality). Box convention: the model's training boxes (" + conventions_help()
                        + "); a loose box gives worse landmarks")
    p.add_argument("--detector", default=None,
                   help="face detector when no --box is given: yunet[:CONVENTION] (default; shipped YuNet), "
                        "haar[:CONVENTION] (OpenCV's cascade), boxfile[:DIR] (IMAGE.rct / IMAGE.json); CONVENTION "
                        f"= {' | '.join(BOX_CONVENTIONS)}, default: the model's (glsr.boxes)")
    p.add_argument("--no-refine", action="store_true",
                   help="keep the detector's crop: no second pass from the first landmarks (one network "
                        "pass less per face; what it costs in accuracy per detector: "
                        "benchmarks/results/detector_boxes.md)")
    p.add_argument("--out", help="one image: an overlay image (.png / .jpg); several images: a folder for their "
                                 "overlays; a video or camera: an annotated video (.mp4 / .avi)")
    p.add_argument("--smooth", action="store_true", help="video: smooth the landmarks over time (One-Euro filter)")
    p.add_argument("--max-frames", type=int, default=None, help="video / camera: stop after this many frames")
    p.add_argument("--max-faces", type=int, default=None, help="video / camera: track at most this many faces")
    p.add_argument("--ignore-exif", action="store_true",
                   help="keep the stored pixel array of a JPEG with an EXIF orientation (default: turn it upright "
                        "as photo viewers do); boxes and landmarks are then in stored pixels")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of the backend (default: its own)")
    p.add_argument("--precision", default=None, help="compute precision for backends that choose it at load time "
                                                     "(MNN: high | normal | low; default: the artifact's)")
    p.add_argument("--indent", type=int, default=None, help="pretty-print the JSON (one image only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=_predict)


def weights_arg(args: argparse.Namespace) -> str:
    """``--weights`` as a file: a shipped model's name, a path, or (none given) the default shipped model."""
    from glsr.shipped import resolve_weights

    return str(resolve_weights(args.weights))


def is_video(path: str) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def camera_index(text: str) -> Optional[int]:
    """A camera index (``"0"``, ``"1"``, ...) when ``text`` is digits and no such file exists."""
    return int(text) if text.isdigit() and not Path(text).exists() else None


def expand_inputs(inputs: List[str]) -> List[str]:
    """Image files from ``inputs``: files as given, folders replaced by their images (sorted, not recursive); a
    clear error for a missing path, an empty folder, or a video among images."""
    out: List[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ValueError(f"folder {p} holds no images ({', '.join(IMAGE_SUFFIXES[:4])}, ...)")
            out += found
        elif not p.exists():
            raise FileNotFoundError(f"input {p} does not exist")
        elif is_video(item):
            raise ValueError(f"{p} is a video: give it alone (glsr predict VIDEO --out annotated.mp4)")
        else:
            out.append(item)
    return out


def _predict(args: argparse.Namespace) -> int:
    inputs = list(args.inputs or [])
    if args.image and inputs and inputs != [args.image]:
        raise ValueError(f"two different images given ({' '.join(inputs)} and --image {args.image}); give the "
                         "image once, or several images as INPUT INPUT ...")
    inputs = inputs or ([args.image] if args.image else [])
    if not inputs:
        raise ValueError("give an image, a folder, a video or a camera index: glsr predict INPUT [INPUT ...]")
    if args.max_frames is not None and args.max_frames < 1:
        raise ValueError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.max_faces is not None and args.max_faces < 1:
        raise ValueError(f"--max-faces must be >= 1, got {args.max_faces}")
    if args.detector is None:
        from glsr.runtime.detectors import DEFAULT_DETECTOR

        args.detector = DEFAULT_DETECTOR
    single = len(inputs) == 1 and not Path(inputs[0]).is_dir()
    if single and (camera_index(inputs[0]) is not None or is_video(inputs[0])):
        if args.box:
            raise ValueError("--box is for one image; a video's faces are found by the detector and tracked")
        return predict_video(args, inputs[0])
    if not single and (args.box or args.indent is not None):
        raise ValueError(f"{'--box' if args.box else '--indent'} is for one image; got {len(inputs)} inputs "
                         "(several images print JSON Lines)")
    images = expand_inputs(inputs)
    if single:
        return _predict_one(args, images[0])
    return _predict_many(args, images)


def _load(args: argparse.Namespace):
    from glsr.runtime.predictor import Predictor

    args.weights = weights_arg(args)
    detector = None if args.box else args.detector
    return Predictor.from_file(args.weights, threads=args.threads, precision=args.precision, detector=detector,
                               refine=not args.no_refine)


def _doc(args: argparse.Namespace, predictor, image_path: str, read, result) -> dict:
    from glsr.runtime.refine import model_convention

    h, w = read.image.shape[:2]
    doc = {"image": image_path, "model": args.weights, "scheme": predictor.metadata.scheme,
           "detector": None if args.box else args.detector, "box_convention": model_convention(predictor),
           "refine": 0 if args.box else predictor.refine.passes, "frame": read.frame, "size": [w, h],
           "exif_orientation": read.orientation, "faces": result.to_json()}
    if read.warnings:
        doc["warnings"] = list(read.warnings)
    return doc


def _faces(args: argparse.Namespace, predictor, image_path: str, read):
    result = predictor.predict_faces(read.image, args.box, path=image_path)  # detected faces refined, --box not
    if len(result.landmarks) == 0:
        print(f"glsr predict: no face found in {image_path} by the {args.detector} detector; {NO_FACE_HINT}",
              file=sys.stderr)
    from glsr.runtime.refine import LOW_QUALITY

    q = list(result.quality) if result.quality is not None else []
    low = [k for k, v in enumerate(q) if v < LOW_QUALITY]
    if low:
        which = "the face" if len(q) == 1 else f"{len(low)} of {len(q)} faces (numbers {', '.join(map(str, low))})"
        print(f"glsr predict: {image_path}: {which} scored quality < {LOW_QUALITY:.2f} (a turned head, an "
              "occlusion, a tiny face or not a face): landmarks unreliable ('quality' in the JSON)", file=sys.stderr)
    return result


def _predict_one(args: argparse.Namespace, image_path: str) -> int:
    from glsr.runtime.io import check_image_suffix, draw_landmarks, read_image_file, write_image_atomic

    if args.out:
        check_image_suffix(args.out)  # before any work: a bad --out must not fail after the landmarks are printed
    read = read_image_file(image_path, exif=not args.ignore_exif)
    for w in read.warnings:
        print(f"glsr predict: warning: {w}", file=sys.stderr)
    predictor = _load(args)
    result = _faces(args, predictor, image_path, read)
    text = json.dumps(_doc(args, predictor, image_path, read, result), indent=args.indent, allow_nan=False)
    if args.out:
        write_image_atomic(args.out, draw_landmarks(read.image, result.landmarks, result.boxes.tolist()))
    print(text)
    return 0


def _predict_many(args: argparse.Namespace, images: List[str]) -> int:
    """JSON Lines, one object per image (an unreadable image: ``{"image", "error"}``, exit status 1 at the end)."""
    from tqdm import tqdm

    from glsr.runtime.io import draw_landmarks, read_image_file, write_image_atomic

    out_dir = Path(args.out) if args.out else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir}: with several images --out is a folder for the overlays, and this is a "
                         "file")
    names = [Path(i).name for i in images]
    if out_dir is not None and len(set(names)) < len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"two inputs are named {dup}: their overlays would overwrite each other in --out {out_dir}")
    predictor = _load(args)
    failed = 0
    for image_path in tqdm(images, desc="predict", unit="image", file=sys.stderr, dynamic_ncols=True,
                           disable=True if args.no_progress else None):
        try:
            read = read_image_file(image_path, exif=not args.ignore_exif)
        except (ValueError, OSError) as e:
            failed += 1
            print(f"glsr predict: error: {e}", file=sys.stderr)
            print(json.dumps({"image": image_path, "error": str(e), "faces": []}), flush=True)
            continue
        for w in read.warnings:
            print(f"glsr predict: warning: {w}", file=sys.stderr)
        result = _faces(args, predictor, image_path, read)
        if out_dir is not None:
            write_image_atomic(out_dir / overlay_name(image_path),
                               draw_landmarks(read.image, result.landmarks, result.boxes.tolist()))
        print(json.dumps(_doc(args, predictor, image_path, read, result), allow_nan=False), flush=True)
    if failed:
        print(f"glsr predict: {failed} of {len(images)} images could not be read (listed with 'error')",
              file=sys.stderr)
    return 1 if failed else 0


def overlay_name(image_path: str) -> str:
    """The overlay's file name for an image: its own name, as .png unless it is a .jpg / .png already."""
    p = Path(image_path)
    return p.name if p.suffix.lower() in (".jpg", ".jpeg", ".png") else p.stem + ".png"


# ------------------------------------------------------------------------------------------ video / camera
# ``glsr predict VIDEO`` / ``glsr predict CAMERA_INDEX``: faces tracked along the frames (JSON Lines, one object per
# frame), optionally an annotated video (``--out``, written beside the target and renamed into place when complete).

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
