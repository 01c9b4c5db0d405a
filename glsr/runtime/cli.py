"""``glsr predict``: landmarks for the faces in an image, printed as JSON, optionally drawn.

Faces come from ``--box`` (repeatable) or, without boxes, from a face detector (``--detector``, default the
OpenCV Haar cascade with its measured box correction; see :mod:`glsr.runtime.detectors`).
"""
from __future__ import annotations

import argparse
import json

from glsr.shipped import DEFAULT_SHIPPED, SHIPPED


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict landmarks on an image (JSON on stdout, optional overlay)",
                       description="Predict landmarks for the faces of an image. Without --box, faces are found by "
                                   "--detector. Prints JSON {image, model, scheme, detector, frame, faces: [{box, "
                                   "landmarks}]}; landmarks are (x, y) image pixels, pixel centres at integers, in "
                                   "the frame named by 'frame': 'upright' = the photo as viewers show it (its EXIF "
                                   "orientation applied), 'stored' = the file's pixel array (no EXIF rotation, or "
                                   "--ignore-exif). 'warnings' lists problems such as a truncated file.")
    p.add_argument("image_pos", nargs="?", metavar="IMAGE", help="image file (or --image)")
    p.add_argument("--image", help="image file (same as the positional IMAGE)")
    p.add_argument("--weights", default=None,
                   help=f"a shipped model ({' | '.join(SHIPPED)}; default {DEFAULT_SHIPPED}: 68 points, trained on "
                        "300-W, research use only) or a model file: .pt checkpoint or an exported artifact (.onnx, "
                        ".mnn, .mlpackage, .mlmodel). Shipped models expect the tight box of the 68 points (the "
                        "default Haar detector's boxes are corrected to it)")
    p.add_argument("--box", type=float, nargs=4, action="append", metavar=("X1", "Y1", "X2", "Y2"),
                   help="face box in image pixels of the frame the landmarks use (repeat for several faces); "
                        "skips the detector. Box convention: draw it the way the model's training boxes were drawn "
                        "(the tight box of the landmarks, brow to chin and ear to ear, for 300-W models; glsr's "
                        "procedural models: that box x1.05, moved down 6%%; the authors' WFLW model: WFLW "
                        "rectangles); a loose hand-drawn box gives visibly worse landmarks, and the default detector "
                        "corrects its boxes to the model's convention")
    p.add_argument("--detector", default="haar",
                   help="face detector when no --box is given: haar[:tight|wflw|raw] (OpenCV's bundled cascade, "
                        "default), yunet:MODEL.onnx (cv2.FaceDetectorYN), boxfile[:DIR] (IMAGE.rct / IMAGE.json)")
    p.add_argument("--out", help="write an overlay image with boxes and landmarks (.png / .jpg)")
    p.add_argument("--ignore-exif", action="store_true",
                   help="keep the stored pixel array of a JPEG with an EXIF orientation (default: turn it upright "
                        "as photo viewers do); boxes and landmarks are then in stored pixels")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of the backend (default: its own)")
    p.add_argument("--precision", default=None, help="compute precision for backends that choose it at load time "
                                                     "(MNN: high | normal | low; default: the artifact's)")
    p.add_argument("--indent", type=int, default=None, help="pretty-print the JSON")
    p.set_defaults(func=_predict)


def image_arg(args: argparse.Namespace) -> str:
    if args.image_pos and args.image and args.image_pos != args.image:
        raise ValueError(f"two different images given ({args.image_pos} and --image {args.image}); give one")
    image = args.image_pos or args.image
    if not image:
        raise ValueError("give an image: glsr predict IMAGE --weights MODEL (or --image IMAGE)")
    return image


def weights_arg(args: argparse.Namespace) -> str:
    """``--weights`` as a file: a shipped model's name, a path, or (none given) the default shipped model."""
    from glsr.shipped import resolve_weights

    return str(resolve_weights(args.weights))


def _predict(args: argparse.Namespace) -> int:
    import sys

    from glsr.runtime.io import check_image_suffix, draw_landmarks, read_image_file, write_image_atomic
    from glsr.runtime.predictor import Predictor

    image_path = image_arg(args)
    args.weights = weights_arg(args)
    if args.out:
        check_image_suffix(args.out)  # before any work: a bad --out must not fail after the landmarks are printed
    read = read_image_file(image_path, exif=not args.ignore_exif)
    for w in read.warnings:
        print(f"glsr predict: warning: {w}", file=sys.stderr)
    detector = None if args.box else args.detector
    predictor = Predictor.from_file(args.weights, threads=args.threads, precision=args.precision, detector=detector)
    result = predictor.predict_faces(read.image, args.box, path=image_path)
    h, w = read.image.shape[:2]
    doc = {"image": image_path, "model": args.weights, "scheme": predictor.metadata.scheme,
           "detector": None if args.box else args.detector,
           "frame": read.frame, "size": [w, h], "exif_orientation": read.orientation,
           "faces": result.to_json()}
    if read.warnings:
        doc["warnings"] = list(read.warnings)
    text = json.dumps(doc, indent=args.indent, allow_nan=False)  # never prints NaN (not JSON)
    if args.out:
        write_image_atomic(args.out, draw_landmarks(read.image, result.landmarks, result.boxes.tolist()))
    print(text)
    return 0
