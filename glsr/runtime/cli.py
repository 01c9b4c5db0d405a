"""``glsr predict``: landmarks for faces in an image, printed as JSON, optionally drawn."""
from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict landmarks on an image (JSON on stdout, optional overlay)")
    p.add_argument("--weights", required=True, help="model file: .pt checkpoint or an exported artifact")
    p.add_argument("--image", required=True)
    p.add_argument("--box", type=float, nargs=4, action="append", metavar=("X1", "Y1", "X2", "Y2"),
                   help="face box in image pixels (repeat for several faces)")
    p.add_argument("--out", help="write an overlay image with boxes and landmarks")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=_predict)


def _predict(args: argparse.Namespace) -> int:
    import numpy as np

    from glsr.runtime.backends import load_backend
    from glsr.runtime.io import read_image, write_image_atomic, draw_landmarks
    from glsr.runtime.processing import crop_batch, uncrop

    if not args.box:
        raise ValueError("give at least one --box X1 Y1 X2 Y2")
    image = read_image(args.image)
    backend = load_backend(args.weights, threads=args.threads)
    x, m = crop_batch(image, args.box, backend.metadata)
    pts = uncrop(backend.run(x), m)
    print(json.dumps({"image": args.image, "scheme": backend.metadata.scheme,
                      "faces": [{"box": list(map(float, b)), "landmarks": np.round(p, 3).tolist()}
                                for b, p in zip(args.box, pts)]}))
    if args.out:
        write_image_atomic(args.out, draw_landmarks(image, pts, args.box))
    return 0
