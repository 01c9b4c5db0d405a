"""Calibrate the Haar ``tight`` box correction on real annotated faces (``python -m benchmarks.studies.box_correction_300w``).

The shipped 68-point models are trained on the tight box of the 68 ground-truth points (with random shifts and
scalings). ``glsr predict`` without a box finds faces with OpenCV's Haar cascade, whose boxes are square, reach
onto the forehead and stop short of the chin. This study measures, on the 300-W faces glsr trains on (split
``fit``; never the validation faces), the median correction Haar box -> ground-truth tight box
(:meth:`glsr.boxes.BoxCorrection.between`), the per-face spread, and the IoU of raw and corrected
boxes with the tight box on the ``val`` faces. The result is :data:`glsr.boxes.DETECTOR_TO_TIGHT` ``["haar"]``
``["tight"]``; ``procedural`` and ``wflw`` are that correction followed by the procedural-face box and by the WFLW
samples' tight -> ``.rct`` relation (``benchmarks/results/box_correction.json``). Writes ``benchmarks/results/box_correction_300w.{json,md}`` atomically; exits with a message when
``../shared`` is absent.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Tuple

import numpy as np

from benchmarks import RESULTS_DIR, missing_300w
from glsr import atomic
from glsr import geometry as geo
from glsr.paths import SHARED
from glsr.boxes import PROCEDURAL_BOX, BoxCorrection
from glsr.runtime.detectors import HaarDetector
from glsr.train.datasets import load_image, open_dataset
from glsr.train.evaluate import MIN_DETECTION_IOU, box_iou

DATA = SHARED / "data" / "300w"


def matched_boxes(split: str, detector: HaarDetector, limit: int | None = None
                  ) -> Tuple[np.ndarray, np.ndarray, int]:
    """Raw Haar boxes matched to the ground-truth tight boxes (IoU >= MIN_DETECTION_IOU) of a split, and the
    count of faces without a match: ``(haar [K, 4], tight [K, 4], misses)``."""
    records = list(open_dataset(f"300w:{DATA}", split=split))[:limit]
    haar: List[np.ndarray] = []
    tight: List[np.ndarray] = []
    misses = 0
    for rec in records:
        t = geo.tight_box(np.asarray(rec.landmarks))
        found = detector.raw(load_image(rec))
        iou = box_iou(t, found) if len(found) else np.zeros(0)
        if len(found) and iou.max() >= MIN_DETECTION_IOU:
            haar.append(found[int(np.argmax(iou))])
            tight.append(t)
        else:
            misses += 1
    return np.asarray(haar), np.asarray(tight), misses


def measure(limit: int | None = None) -> Dict[str, Any]:
    det = HaarDetector("raw")
    haar, tight, misses = matched_boxes("fit", det, limit)
    corr = BoxCorrection.between(haar, tight, f"300-W fit split, {len(haar)} faces: Haar box -> tight box of the "
                                              "68 ground-truth points")
    per = [BoxCorrection.between(h[None], t[None]) for h, t in zip(haar, tight)]
    quart = {k: np.percentile([getattr(p, k) for p in per], [25, 50, 75]).round(4).tolist()
             for k in ("sx", "sy", "dx", "dy")}
    vh, vt, vmiss = matched_boxes("val", det, limit)
    raw_iou = [float(box_iou(t, h[None])[0]) for h, t in zip(vh, vt)]
    cor_iou = [float(box_iou(t, corr.apply(h[None]))[0]) for h, t in zip(vh, vt)]
    derived = {"tight": corr.to_dict(), "procedural": corr.then(PROCEDURAL_BOX).to_dict()}
    lfw = RESULTS_DIR / "box_correction.json"  # the WFLW samples' tight -> .rct relation (box_correction study)
    if lfw.is_file():
        rct = json.loads(lfw.read_text())["tight_to_rct"]
        derived["wflw"] = corr.then(BoxCorrection(rct["sx"], rct["sy"], rct["dx"], rct["dy"], rct["source"])).to_dict()
    return {"correction": corr.to_dict(), **derived, "fit_faces": int(len(haar)), "fit_misses": misses,
            "quartiles": quart, "val_faces": int(len(vh)), "val_misses": vmiss,
            "val_iou_raw_median": float(np.median(raw_iou)), "val_iou_corrected_median": float(np.median(cor_iou))}


def markdown(r: Dict[str, Any]) -> str:
    c = r["correction"]
    return "\n".join([
        "# Haar -> tight box correction on 300-W (measured)", "",
        "`python -m benchmarks.studies.box_correction_300w`: OpenCV's Haar cascade on the 300-W faces of the `fit` "
        "split, the detection overlapping the tight box of the 68 ground-truth points most (IoU >= 0.3).", "",
        f"Correction (median): sx {c['sx']:.3f}, sy {c['sy']:.3f}, dx {c['dx']:+.3f}, dy {c['dy']:+.3f} "
        f"from {r['fit_faces']} faces ({r['fit_misses']} without a Haar face).", "",
        "Per-face quartiles (25/50/75 %): " + "; ".join(f"{k} {v}" for k, v in r["quartiles"].items()) + ".", "",
        f"Validation faces ({r['val_faces']} detected, {r['val_misses']} missed): median IoU with the tight box "
        f"{r['val_iou_raw_median']:.3f} raw -> {r['val_iou_corrected_median']:.3f} corrected.", ""])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, help="at most this many faces per split (a quick check)")
    ap.add_argument("--out", default=str(RESULTS_DIR / "box_correction_300w"), help="output path without suffix")
    args = ap.parse_args(argv)
    if missing_300w():
        return 2
    r = measure(args.limit)
    atomic.write_text(args.out + ".json", json.dumps(r, indent=2) + "\n")
    atomic.write_text(args.out + ".md", markdown(r))
    print(markdown(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
