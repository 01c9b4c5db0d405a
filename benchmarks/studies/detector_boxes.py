"""From a photo to landmarks without a box: the default detector, its box correction, refinement, the quality
score and large poses, measured on 300-W (``python -m benchmarks.studies.detector_boxes``).

* ``fit`` faces (the ones glsr's models train on): YuNet's raw boxes (the detection overlapping the tight box of
  the 68 ground-truth points most, IoU >= 0.3) against that tight box: the median correction that becomes
  ``glsr.boxes.DETECTOR_TO_TIGHT["yunet"]``, and its per-face spread.
* ``val`` faces (never trained on): detection rate of YuNet and Haar; NME (inter-ocular) of the model with the
  tight box (the model's own figure), with the corrected detector box, and through refinement (re-crop from the
  tight box of the first landmarks: one pass, or until the box settles); face-by-face differences against the
  tight box with a bootstrap interval; the cost of each path (ms per face, same run, medians).
* The quality score (:mod:`glsr.runtime.refine`: the mirror view's disagreement) against each face's NME:
  Spearman rank correlation, also for the disagreement between the two passes.
* Large poses: faces split in tertiles of a yaw index from the ground truth (:func:`glsr.pose.yaw_index`); NME per
  tertile with the tight box and the default path, the mean quality and how many faces the quality flags.

The faces run through :class:`glsr.runtime.predictor.Predictor` exactly as ``glsr predict PHOTO`` runs them
(``predict_faces`` with the detector; the face whose box overlaps the annotation's tight box most is scored), with
the model exported to ONNX (onnxruntime, one thread) unless ``--pt``. Writes ``OUT.json`` and ``OUT.md``
atomically; exits with a message when ``../shared`` is absent.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

from glsr import atomic
from benchmarks import RESULTS_DIR, missing_300w
from glsr.paths import SHARED
from glsr.pose import TERTILE_NAMES, pose_tertiles, yaw_index

DATA = SHARED / "data" / "300w"
SPEC = f"300w:{DATA}"
NORM = "interocular"
MIN_IOU = 0.3
ROTATE = 25.0
"""In-plane turn (degrees) of the rotated rows: the box of a turned face is not the median upright box."""


# ------------------------------------------------------------------------------------------ small helpers


def rankdata(x: Sequence[float]) -> np.ndarray:
    """Ranks from 1, ties given their mean rank (as ``scipy.stats.rankdata``)."""
    a = np.asarray(x, dtype=np.float64)
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(1, len(a) + 1)
    for v in np.unique(a):
        tie = a == v
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation: the Pearson correlation of the ranks."""
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / np.sqrt((rx * rx).sum() * (ry * ry).sum()))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from glsr.train.evaluate import box_iou as iou

    return iou(np.asarray(a, np.float64), np.asarray(b, np.float64).reshape(-1, 4)) if len(b) else np.zeros(0)


def matched(boxes: np.ndarray, tight: np.ndarray) -> Optional[int]:
    """Index of the box overlapping ``tight`` most (IoU >= MIN_IOU), else ``None``."""
    iou = box_iou(tight, boxes)
    return int(np.argmax(iou)) if len(iou) and iou.max() >= MIN_IOU else None


# ------------------------------------------------------------------------------------------ measurement


def fit_correction(limit: Optional[int]) -> Dict[str, Any]:
    """YuNet raw boxes against the tight boxes of the ``fit`` faces: the median correction and its spread."""
    from glsr import geometry as geo
    from glsr.boxes import BoxCorrection
    from glsr.runtime.detectors import YuNetDetector
    from glsr.train.augment import get_annotation, get_face
    from glsr.train.evaluate import open_faces

    ds = open_faces(SPEC, "fit")
    det = YuNetDetector("raw")
    src, dst, misses = [], [], 0
    n = len(ds) if limit is None else min(limit, len(ds))
    for i in range(n):
        gt, _ = get_annotation(ds, i, clean=True)
        t = geo.tight_box(np.asarray(gt))
        found = det.raw(get_face(ds, i).image)
        j = matched(found, t)
        if j is None:
            misses += 1
            continue
        src.append(found[j])
        dst.append(t)
    corr = BoxCorrection.between(np.asarray(src), np.asarray(dst),
                                 f"300-W fit split, {len(src)} faces: YuNet box -> tight box of the 68 ground-truth "
                                 "points")
    per = [BoxCorrection.between(a[None], b[None]) for a, b in zip(src, dst)]
    quart = {k: np.percentile([getattr(p, k) for p in per], [25, 50, 75]).round(4).tolist()
             for k in ("sx", "sy", "dx", "dy")}
    raw_iou = [float(box_iou(t, a[None])[0]) for a, t in zip(src, dst)]
    cor_iou = [float(box_iou(t, corr.apply(a[None]))[0]) for a, t in zip(src, dst)]
    return {"faces": len(src), "misses": misses, "correction": corr.to_dict(), "quartiles": quart,
            "iou_raw_median": float(np.median(raw_iou)), "iou_corrected_median": float(np.median(cor_iou))}


def open_model(weights: str, pt: bool, tmp: str):
    """The model file the study runs: the ``.pt`` itself, or its ONNX export (onnxruntime, one thread)."""
    from glsr.shipped import resolve_weights

    w = str(resolve_weights(weights))
    if pt:
        return w
    from glsr.export import export_model

    res = export_model(w, formats="onnx", out_dir=Path(tmp) / "onnx", parity=False, name="m")
    return str(next(p for p in res.artifacts if str(p).endswith(".onnx")))


PATHS = {
    "tight": "tight box of the ground truth (the model's own figure)",
    "yunet": "YuNet box, corrected (no refinement)",
    "yunet+refine": "YuNet box, corrected, then one re-crop from the landmarks (glsr predict's default)",
    "yunet+settle": "YuNet box, corrected, re-cropped until the box moves < 1 % (at most 4 re-crops)",
    "yunet-raw+refine": "YuNet box uncorrected, then one re-crop",
    "haar": "Haar box, corrected (no refinement)",
    "haar+refine": "Haar box, corrected, then one re-crop",
    "rotated tight": f"photo turned {ROTATE:g} degrees in-plane about the face (sign alternating): tight box",
    "rotated yunet": "photo turned: YuNet box, corrected (no refinement)",
    "rotated yunet+refine": "photo turned: YuNet box, corrected, then one re-crop",
}


REFINE_BASE = {"yunet+refine": "yunet", "yunet+settle": "yunet+refine", "haar+refine": "haar",
               "rotated yunet+refine": "rotated yunet"}
"""Each refined path and the path it is compared with face by face."""


def val_paths(model: str, limit: Optional[int]) -> Dict[str, Any]:
    """Every path of :data:`PATHS` on the ``val`` faces: per-face predictions, quality, timing, detection."""
    from glsr import geometry as geo
    from glsr.runtime.predictor import Predictor
    from glsr.runtime.refine import RefineConfig, refine_faces
    from glsr.train.augment import get_annotation, get_face
    from glsr.train.evaluate import open_faces

    ds = open_faces(SPEC, "val")
    n = len(ds) if limit is None else min(limit, len(ds))
    preds = {
        "yunet": Predictor.from_file(model, threads=1, detector="yunet", refine=RefineConfig(passes=0)),
        "yunet+refine": Predictor.from_file(model, threads=1, detector="yunet", refine=RefineConfig(passes=1)),
        "yunet+settle": Predictor.from_file(model, threads=1, detector="yunet",
                                            refine=RefineConfig(passes=4, tolerance=0.01)),
        "yunet-raw+refine": Predictor.from_file(model, threads=1, detector="yunet:raw", refine=RefineConfig()),
        "haar": Predictor.from_file(model, threads=1, detector="haar", refine=RefineConfig(passes=0)),
        "haar+refine": Predictor.from_file(model, threads=1, detector="haar", refine=RefineConfig(passes=1)),
    }
    plain = preds["yunet"]
    out: Dict[str, Any] = {k: {"pred": [], "quality": [], "ms": [], "found": 0, "extra": 0} for k in PATHS}
    gts, rot_gts, pass_gap, settle_passes, off_quality = [], [], [], [], []
    for i in range(n):
        gt, _ = get_annotation(ds, i, clean=True)
        gt = np.asarray(gt, dtype=np.float64)
        image = get_face(ds, i).image
        t = geo.tight_box(gt)
        gts.append(gt)
        t0 = time.perf_counter()
        pts = plain.predict(image, t[None])[0]
        out["tight"]["ms"].append(1000 * (time.perf_counter() - t0))
        out["tight"]["pred"].append(pts)
        out["tight"]["quality"].append(np.nan)
        out["tight"]["found"] += 1
        for key, p in preds.items():
            t0 = time.perf_counter()
            res = p.predict_faces(image)
            out[key]["ms"].append(1000 * (time.perf_counter() - t0))
            j = matched(res.boxes, t)
            if j is None:  # a miss: scored with the tight box, as glsr eval does, and counted
                out[key]["pred"].append(pts)
                out[key]["quality"].append(np.nan)
                continue
            out[key]["found"] += 1
            out[key]["extra"] += len(res.boxes) - 1
            out[key]["pred"].append(res.landmarks[j])
            out[key]["quality"].append(float(res.quality[j]))
        # the photo turned in-plane about the face centre: the detector's box against refinement
        c = (t[:2] + t[2:]) / 2
        rot = geo.cv2_rotation((float(c[0]), float(c[1])), ROTATE if i % 2 == 0 else -ROTATE)
        turned = geo.warp(image, rot, (image.shape[1], image.shape[0]))
        gt_r = geo.apply_affine(rot, gt)
        rot_gts.append(gt_r)
        t_r = geo.tight_box(gt_r)
        pts_r = plain.predict(turned, t_r[None])[0]
        out["rotated tight"]["pred"].append(pts_r)
        out["rotated tight"]["quality"].append(np.nan)
        out["rotated tight"]["found"] += 1
        out["rotated tight"]["ms"].append(np.nan)
        for key, p in (("rotated yunet", preds["yunet"]), ("rotated yunet+refine", preds["yunet+refine"])):
            t0 = time.perf_counter()
            res = p.predict_faces(turned)
            out[key]["ms"].append(1000 * (time.perf_counter() - t0))
            j = matched(res.boxes, t_r)
            out[key]["found"] += j is not None
            out[key]["extra"] += max(0, len(res.boxes) - 1)
            out[key]["pred"].append(pts_r if j is None else res.landmarks[j])
            out[key]["quality"].append(np.nan if j is None else float(res.quality[j]))
        # the quality of a crop off the face: the tight box moved sideways by 1.5 face widths (kept in the photo)
        w_img = image.shape[1]
        shift = 1.5 * (t[2] - t[0]) * (1 if (t[0] + t[2]) / 2 < w_img / 2 else -1)
        away = refine_faces(plain, image, (t + [shift, 0, shift, 0])[None], RefineConfig(passes=0))
        off_quality.append(float(away.quality[0]))
        # the disagreement between the first and the second pass, from the same detected box
        found = preds["yunet"].detect(image)
        j = matched(found, t)
        if j is not None:
            first = refine_faces(plain, image, found[j:j + 1], RefineConfig(passes=0, quality=False))
            second = refine_faces(plain, image, found[j:j + 1], RefineConfig(passes=1, quality=False))
            io = np.linalg.norm(second.landmarks[0, 36] - second.landmarks[0, 45])
            pass_gap.append(float(np.linalg.norm(first.landmarks[0] - second.landmarks[0], axis=-1).mean() / io))
            settle = refine_faces(plain, image, found[j:j + 1], RefineConfig(passes=4, tolerance=0.01, quality=False))
            settle_passes.append(settle.passes)
        else:
            pass_gap.append(np.nan)
            settle_passes.append(0)
        print(f"\r{i + 1}/{n}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return {"paths": out, "gt": np.stack(gts), "rot_gt": np.stack(rot_gts), "pass_gap": np.asarray(pass_gap),
            "settle_passes": settle_passes, "off_quality": off_quality, "count": n}


def summarize(raw: Dict[str, Any]) -> Dict[str, Any]:
    from glsr.runtime.refine import LOST_QUALITY, LOW_QUALITY
    from glsr.schemes import get_scheme
    from glsr.train.metrics import nme_per_image, paired_difference

    scheme = get_scheme("68")
    gt = raw["gt"]
    n = raw["count"]
    errs = {k: np.asarray(nme_per_image(np.stack(v["pred"]), raw["rot_gt"] if k.startswith("rotated") else gt,
                                        scheme, NORM)) for k, v in raw["paths"].items()}
    paths = {}
    for k, v in raw["paths"].items():
        paths[k] = {"what": PATHS[k], "nme": float(errs[k].mean()), "found": v["found"], "faces": n,
                    "extra_boxes": v["extra"],
                    "ms_median": float(np.nanmedian(v["ms"])) if np.isfinite(v["ms"]).any() else None}
        ref = "rotated tight" if k.startswith("rotated") else "tight"
        if k != ref:
            paths[k]["vs_tight"] = paired_difference(errs[k], errs[ref])
    q = np.asarray(raw["paths"]["yunet+refine"]["quality"])
    d = -np.log(np.clip(q, 1e-300, None))  # monotone in the disagreement: the same ranks
    e = errs["yunet+refine"]
    ok = np.isfinite(q)
    gap = raw["pass_gap"]
    okg = np.isfinite(gap)
    quality = {"spearman_disagreement_vs_nme": spearman(d[ok], e[ok]),
               "spearman_quality_vs_nme": spearman(q[ok], e[ok]),
               "spearman_pass_gap_vs_nme": spearman(gap[okg], e[okg]),
               "spearman_quality_vs_abs_yaw": spearman(q[ok], np.abs(yaw_index(gt[ok], "68"))),
               "faces": int(ok.sum()), "low_quality": LOW_QUALITY, "lost_quality": LOST_QUALITY,
               "lost": int((q[ok] < LOST_QUALITY).sum()), "quality_range": [float(q[ok].min()), float(q[ok].max())],
               "off_face_quality": np.percentile(raw["off_quality"], [50, 90, 100]).tolist(),
               "off_face_below_lost": int((np.asarray(raw["off_quality"]) < LOST_QUALITY).sum()),
               "flagged": int((q[ok] < LOW_QUALITY).sum()),
               "nme_flagged": float(e[ok][q[ok] < LOW_QUALITY].mean()) if (q[ok] < LOW_QUALITY).any() else None,
               "nme_unflagged": float(e[ok][q[ok] >= LOW_QUALITY].mean())}
    yaw = yaw_index(gt, "68")
    tert, _ = pose_tertiles(yaw)
    tertiles = []
    for k, name in enumerate(TERTILE_NAMES):
        m = tert == k
        qm = q[m & ok]
        tertiles.append({"tertile": name, "faces": int(m.sum()),
                         "abs_yaw_index": [float(np.abs(yaw[m]).min()), float(np.abs(yaw[m]).max())],
                         "nme_tight": float(errs["tight"][m].mean()), "nme_default": float(e[m].mean()),
                         "quality_median": float(np.median(qm)) if len(qm) else None,
                         "flagged": int((qm < LOW_QUALITY).sum())})
    settle = np.asarray(raw["settle_passes"])
    refine_gain = {k: paired_difference(errs[k], errs[base]) for k, base in REFINE_BASE.items()}
    return {"paths": paths, "refine_vs_none": refine_gain, "quality": quality, "yaw_tertiles": tertiles,
            "settle_passes": {"mean": float(settle[settle > 0].mean()), "max": int(settle.max())},
            "errors": {k: v.tolist() for k, v in errs.items()}, "quality_per_face": q.tolist(),
            "pass_gap_per_face": gap.tolist(), "yaw_index": yaw.tolist()}


def machine() -> Dict[str, Any]:
    import cv2
    import onnxruntime

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "opencv": cv2.__version__,
            "onnxruntime": onnxruntime.__version__, "threads": 1}


# ------------------------------------------------------------------------------------------ report


def _p(x: float) -> str:
    return f"{100 * x:.2f}"


def markdown(r: Dict[str, Any]) -> str:
    f = r["fit"]
    c = f["correction"]
    m = r["machine"]
    lines = ["# From a photo to landmarks: detector boxes, refinement, quality, large poses (300-W)", "",
             f"`{r['command']}` ({r['date']}; model `{r['model']}` run as {r['runtime']}; {m['cpu']}, "
             f"{m['cores']} cores, one thread; OpenCV {m['opencv']}, onnxruntime {m['onnxruntime']}).", "",
             "## YuNet box -> tight box (fit split)", "",
             f"Median correction from {f['faces']} faces ({f['misses']} without a YuNet face at score >= 0.7): "
             f"sx {c['sx']:.4f}, sy {c['sy']:.4f}, dx {c['dx']:+.4f}, dy {c['dy']:+.4f} (new centre = centre + "
             "(dx w, dy h), new size = (sx w, sy h)). Per-face quartiles (25/50/75 %): "
             + "; ".join(f"{k} {v}" for k, v in f["quartiles"].items())
             + f". Median IoU with the tight box {f['iou_raw_median']:.3f} raw -> {f['iou_corrected_median']:.3f} "
             "corrected.", "",
             f"## Validation split ({r['val']['paths']['tight']['faces']} faces)", "",
             "NME in % of the inter-ocular distance. A face counts as found when a returned box overlaps the tight "
             "box of its ground truth with IoU >= 0.3 (a miss is scored with the tight box). Extra boxes: other "
             "faces found in the photos (300-W annotates one face per file; they may be real faces). ms/face: "
             "median time of `predict_faces(image)` (detection, every pass), same run for every row. "
             "Difference: mean per-face NME difference against the tight box (the rotated rows: against the rotated "
             "tight box), 95 % bootstrap interval.", "",
             "| path | found | extra boxes | NME io | vs tight box | 95 % interval | ms/face |",
             "|---|---:|---:|---:|---:|---|---:|"]
    for k, p in r["val"]["paths"].items():
        v = p.get("vs_tight")
        lines.append(f"| {k}: {p['what']} | {p['found']} / {p['faces']} | {p['extra_boxes']} | {_p(p['nme'])} | "
                     + (f"{100 * v['mean']:+.3f} | {100 * v['low']:+.3f} to {100 * v['high']:+.3f}" if v else "- | -")
                     + (f" | {p['ms_median']:.1f} |" if p["ms_median"] is not None else " | - |"))
    s = r["val"]["settle_passes"]
    q = r["val"]["quality"]
    lines += ["", f"Refinement until the box settles took {s['mean']:.2f} crops per face on average (at most "
              f"{s['max']}). Face by face, each refinement against the path without it (mean NME difference, 95 % "
              "interval, faces better):", ""]
    for k, v in r["val"]["refine_vs_none"].items():
        lines.append(f"* {k} against {REFINE_BASE[k]}: "
                     f"{100 * v['mean']:+.3f} ({100 * v['low']:+.3f} to {100 * v['high']:+.3f}), {v['better']} / "
                     f"{v['faces']} faces better")
    lines += ["",
              "## Quality score", "",
              "Quality = exp(-disagreement / 0.05), the disagreement being the mean distance between the landmarks "
              "and those of the mirrored crop (flipped back), in inter-ocular distances; scored on the default "
              f"path's faces ({q['faces']}).", "",
              "* Spearman rank correlation of the disagreement with the face's NME: "
              f"**{q['spearman_disagreement_vs_nme']:.3f}** "
              f"(quality vs NME: {q['spearman_quality_vs_nme']:.3f}).",
              f"* For comparison, the disagreement between the first and the second pass: "
              f"{q['spearman_pass_gap_vs_nme']:.3f}.",
              f"* Rank correlation of the quality with the absolute yaw index: {q['spearman_quality_vs_abs_yaw']:.3f}.",
              f"* Faces flagged unreliable (quality < {q['low_quality']:.3f}, disagreement > 4 %): {q['flagged']}"
              + (f", NME {_p(q['nme_flagged'])} % against {_p(q['nme_unflagged'])} % for the others."
                 if q["nme_flagged"] is not None else "."),
              f"* Quality range on these faces {q['quality_range'][0]:.3f} - {q['quality_range'][1]:.3f}; below the "
              f"tracking's lost level ({q['lost_quality']:.3f}): {q['lost']}. Crops off the face (the tight box moved "
              f"sideways by 1.5 face widths): quality median {q['off_face_quality'][0]:.3f}, 90th percentile "
              f"{q['off_face_quality'][1]:.3f}, highest {q['off_face_quality'][2]:.3f}; "
              f"{q['off_face_below_lost']} of {q['faces']} below the lost level.", "",
              "## Large poses: yaw tertiles", "",
              "Yaw index from the ground truth (roll removed; nose tip against the two ends of the jaw contour: "
              "0 frontal, towards 1 a profile), faces split in thirds by its absolute value.", "",
              "| tertile | faces | abs yaw index | NME io, tight box | NME io, default path | median quality | "
              "flagged unreliable |", "|---|---:|---|---:|---:|---:|---:|"]
    for t in r["val"]["yaw_tertiles"]:
        lines.append(f"| {t['tertile']} | {t['faces']} | {t['abs_yaw_index'][0]:.2f} - {t['abs_yaw_index'][1]:.2f} | "
                     f"{_p(t['nme_tight'])} | {_p(t['nme_default'])} | "
                     f"{t['quality_median']:.3f} | {t['flagged']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="small", help="model (shipped name or file; default small)")
    ap.add_argument("--pt", action="store_true", help="run the .pt checkpoint (default: its ONNX export)")
    ap.add_argument("--limit", type=int, help="at most this many faces per split (a quick check)")
    ap.add_argument("--out", default=str(RESULTS_DIR / "detector_boxes"), help="output path without suffix")
    args = ap.parse_args(argv)
    if missing_300w():
        return 2
    fit = fit_correction(args.limit)
    print(f"fit: {fit['correction']}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="glsr-detector-boxes-") as tmp:
        model = open_model(args.weights, args.pt, tmp)
        raw = val_paths(model, args.limit)
    val = summarize(raw)
    given = argv if argv is not None else sys.argv[1:]
    r = {"command": " ".join(["python -m benchmarks.studies.detector_boxes", *given]),
         "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "model": args.weights,
         "runtime": ".pt (torch)" if args.pt else "ONNX fp32 (onnxruntime)", "machine": machine(), "fit": fit,
         "val": val}
    atomic.write_text(args.out + ".json", json.dumps(r, indent=1) + "\n")
    atomic.write_text(args.out + ".md", markdown(r))
    print(markdown(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
