"""Where the global reinit net puts the face (``python -m benchmarks.studies.face_frame small small-fast [FILE ...]
[--limit 30] [--out benchmarks/results/face_frame.md]``).

For each model, on the first ``--limit`` faces of the 300-W ``val`` split (``../shared``) with tight boxes: the side
of the face window (the face image the global regressor reads) in photo pixels, its ratio to the first model's on
the same faces, and how low the model's final landmarks sit in that face image (largest y; the image spans -1 to 1,
so a value above 1 is a point the regressor does not see). Models with the same reinit net should frame the same
face; ``models/README.md`` ("The reinit frame") quotes this study. A second table splits the faces by where their
*annotated* lowest point falls in each model's face image (inside: y <= 1; outside: beyond the image's edge) and
gives the contour's NME and the other points' NME (inter-ocular) in each group: whether points the regressor cannot
see are the ones it misses.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from benchmarks.studies.real_faces import DATA, SPEC, SPLIT
from glsr import atomic


def frame_of(weights: str, items: Sequence) -> Dict[str, np.ndarray]:
    """Per face: the face window side (photo px), the largest y of the final shape and of the annotation in face
    coordinates, and the contour's and the other points' NME (inter-ocular)."""
    import torch

    from glsr import geometry as geo
    from glsr.models import load_checkpoint
    from glsr.runtime.processing import crop_batch, metadata_for
    from glsr.shipped import resolve_weights
    from glsr.train.metrics import point_errors

    model = load_checkpoint(resolve_weights(weights))
    meta = metadata_for(model)
    contour = np.asarray(model.scheme.contour)
    rest = np.setdiff1d(np.arange(model.scheme.num_points), contour)
    crop_norm_from_px = geo.norm_from_pixel(model.cfg.input_size)
    side, low, gt_low, err_contour, err_rest = [], [], [], [], []
    for it in items:
        x, crop_from_image = crop_batch(it.image, it.box[None], meta)
        with torch.no_grad():
            out = model(torch.from_numpy(x), intermediates=True)
        crop_from_face = out["crop_from_face"][0].double().numpy()      # crop_norm_from_face_norm
        side_crop_px = np.sqrt(abs(np.linalg.det(crop_from_face[:, :2]))) * model.cfg.input_size
        side.append(side_crop_px / np.sqrt(abs(np.linalg.det(crop_from_image[0][:, :2]))))
        low.append(float(out["shape_face"][0, :, 1].max()))
        face_from_image = geo.compose(geo.invert_affine(crop_from_face), crop_norm_from_px, crop_from_image[0])
        gt_low.append(float(geo.apply_affine(face_from_image, it.gt)[:, 1].max()))
        pred = geo.apply_affine(geo.invert_affine(crop_from_image[0]), out["landmarks"][0].double().numpy())
        errors = point_errors(pred, it.gt, model.scheme, "interocular")
        err_contour.append(float(errors[contour].mean()))
        err_rest.append(float(errors[rest].mean()))
    return {"side": np.asarray(side), "low": np.asarray(low), "gt_low": np.asarray(gt_low),
            "contour": np.asarray(err_contour), "rest": np.asarray(err_rest)}


def markdown(models: List[str], frames: List[Dict[str, np.ndarray]], faces: int, command: str, note: str = "") -> str:
    lines = [f"# Face frame: {faces} faces of 300-W `{SPLIT}`, tight boxes", "", f"`{command}`", ""]
    lines += [note, ""] if note else []
    lines += ["| model | face window side, photo px (median) | ratio to the first model (median over faces) | "
              "lowest point y in the face image (median / max) |", "|---|---:|---:|---:|"]
    for name, f in zip(models, frames):
        ratio = np.median(f["side"] / frames[0]["side"])
        lines.append(f"| {name} | {np.median(f['side']):.1f} | {ratio:.3f} | {np.median(f['low']):.3f} / "
                     f"{np.max(f['low']):.3f} |")
    lines += ["", "Faces by where their annotated lowest point falls in the model's face image (y <= 1: inside), NME "
              "in % of the inter-ocular distance:", "",
              "| model | faces inside | contour NME, inside | other points, inside | faces outside | "
              "contour NME, outside | other points, outside |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, f in zip(models, frames):
        inside = f["gt_low"] <= 1.0
        cells = []
        for group in (inside, ~inside):
            cells += [str(int(group.sum()))] + [f"{100 * f[k][group].mean():.2f}" if group.any() else "-"
                                                for k in ("contour", "rest")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="shipped names or checkpoint files; the first is the reference")
    p.add_argument("--limit", type=int, default=30, help="faces of the val split")
    p.add_argument("--out", help="write the Markdown table here too")
    p.add_argument("--note", default="", help="a sentence under the command (e.g. where a FILE came from)")
    args = p.parse_args(argv)
    from glsr.train.evaluate import eval_items, open_faces

    if not DATA.is_dir():
        print(f"face_frame: needs the 300-W faces at {DATA}", file=sys.stderr)
        return 2
    items, _ = eval_items(open_faces(SPEC, SPLIT), "tight", limit=args.limit)
    frames = [frame_of(m, items) for m in args.models]
    command = " ".join(["python -m benchmarks.studies.face_frame", *args.models, f"--limit {args.limit}"]
                       + ([f"--out {args.out}"] if args.out else []))
    md = markdown(args.models, frames, len(items), command, args.note)
    print(md)
    if args.out:
        atomic.write_text(Path(args.out), md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
