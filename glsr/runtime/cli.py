"""``glsr predict``: landmarks for the faces in an image, printed as JSON, optionally drawn.

Faces come from ``--box`` (repeatable) or, without boxes, from a face detector (``--detector``, default the
OpenCV Haar cascade with its measured box correction; see :mod:`glsr.runtime.detectors`).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_WEIGHTS = Path("runs") / "pipeline" / "train" / "model.pt"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict landmarks on an image (JSON on stdout, optional overlay)",
                       description="Predict landmarks for the faces of an image. Without --box, faces are found by "
                                   "--detector. Prints JSON {image, model, scheme, detector, faces: [{box, "
                                   "landmarks}]}; landmarks are (x, y) image pixels, pixel centres at integers.")
    p.add_argument("image_pos", nargs="?", metavar="IMAGE", help="image file (or --image)")
    p.add_argument("--image", help="image file (same as the positional IMAGE)")
    p.add_argument("--weights", default=None,
                   help="model file: .pt checkpoint or an exported artifact (.onnx, .mnn, .mlpackage, .mlmodel); "
                        f"default: the model `glsr pipeline` trained ({DEFAULT_WEIGHTS})")
    p.add_argument("--box", type=float, nargs=4, action="append", metavar=("X1", "Y1", "X2", "Y2"),
                   help="face box in image pixels (repeat for several faces); skips the detector")
    p.add_argument("--detector", default="haar",
                   help="face detector when no --box is given: haar[:tight|wflw|raw] (OpenCV's bundled cascade, "
                        "default), yunet:MODEL.onnx (cv2.FaceDetectorYN), boxfile[:DIR] (IMAGE.rct / IMAGE.json)")
    p.add_argument("--out", help="write an overlay image with boxes and landmarks (.png / .jpg)")
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
    if args.weights:
        return args.weights
    if DEFAULT_WEIGHTS.is_file():
        return str(DEFAULT_WEIGHTS)
    raise ValueError(f"give --weights MODEL (no model at the default {DEFAULT_WEIGHTS}: run `glsr pipeline` first, "
                     "or `glsr import-dpr` for the authors' weights)")


def _predict(args: argparse.Namespace) -> int:
    from glsr.runtime.io import draw_landmarks, read_image, write_image_atomic
    from glsr.runtime.predictor import Predictor

    image_path = image_arg(args)
    args.weights = weights_arg(args)
    image = read_image(image_path)
    detector = None if args.box else args.detector
    predictor = Predictor.from_file(args.weights, threads=args.threads, precision=args.precision, detector=detector)
    result = predictor.predict_faces(image, args.box, path=image_path)
    print(json.dumps({"image": image_path, "model": args.weights, "scheme": predictor.metadata.scheme,
                      "detector": None if args.box else args.detector, "faces": result.to_json()},
                     indent=args.indent))
    if args.out:
        write_image_atomic(args.out, draw_landmarks(image, result.landmarks, result.boxes.tolist()))
    return 0
