"""``glsr eval``: NME, per-part NME, AUC@alpha / FR@alpha, CED plots and the Table 4 box-perturbation protocol,
for one or several checkpoints side by side, through the same prediction path users get.

Conventions
-----------
* Landmarks and boxes are image pixels (:mod:`glsr.geometry`). Predictions come from
  :class:`glsr.runtime.predictor.Predictor` (``predict(image, boxes)``), the path users get, for any artifact
  format it opens (``.pt``, ONNX, MNN, ...).
* Errors are normalized per face (:func:`glsr.train.metrics.nme_per_image`); ``norm=None`` uses the scheme's
  ``default_norm`` (the paper's protocol: inter-pupil on 300-W, inter-ocular on WFLW / COFW / 300-W test, box
  size on AFLW). NME, AUC and FR are reported as fractions in JSON and as percent / plain numbers in Markdown.
* Boxes (``--boxes``): ``annotation`` = the dataset's box (the tight box when a record has none), ``tight`` = the
  tight box of the ground truth, ``detector`` = a :mod:`glsr.runtime.detectors` detector (``--detector SPEC``,
  default :data:`DEFAULT_DETECTOR`, ``glsr predict``'s: YuNet corrected to the model's box convention; ``haar``
  for OpenCV's Haar cascade), the detection overlapping the tight box most (IoU >= :data:`MIN_DETECTION_IOU`);
  faces without one keep their annotation box and are counted in ``detector_misses``.
* Refinement (``refine``): ``None`` = as ``glsr predict`` does, on with ``--boxes detector`` (each face re-cropped
  from the tight box of its first landmarks, :mod:`glsr.runtime.refine`; the fallback box of a miss too), off for
  the other boxes (the model's own figure); ``True`` / ``False`` force it.
* Table 4 perturbations (``--perturb``) act on the chosen boxes: ``scale r`` enlarges the box by ``1 + r`` about
  its centre; ``translate r`` moves it by ``r`` times its width/height in a random direction; ``rotate a`` rotates
  the image (and ground truth) in-plane by ``+-a`` degrees about the box centre, box unchanged. Random directions
  and signs depend only on ``(seed, kind, level, face)``.
* Reports are written atomically (temporary file + rename).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from glsr import geometry as geo
from glsr.runtime.detectors import DEFAULT_DETECTOR as RUNTIME_DEFAULT_DETECTOR
from glsr.schemes import LandmarkScheme, conversion, get_scheme
from glsr.train.augment import get_annotation, get_face
from glsr.train.metrics import (DEFAULT_ALPHA, NORMS, PART_COLUMNS, auc_fr, nme_per_image, nme_per_part,
                                paired_difference, plot_ced)
from glsr import atomic

BOX_MODES: Tuple[str, ...] = ("annotation", "tight", "detector")
PERTURBATIONS: Dict[str, Tuple[float, ...]] = {
    "scale": (0.1, 0.2, 0.3, 0.4, 0.5),          # Table 4 (a): box enlargement ratios
    "translate": (0.05, 0.10, 0.15, 0.20, 0.25),  # Table 4 (b): shift as a fraction of the box size
    "rotate": (5.0, 10.0, 15.0, 20.0, 25.0),     # Table 4 (c): in-plane rotation, degrees
}
PERTURB_IDS = {k: i for i, k in enumerate(PERTURBATIONS)}
LEVEL_KEY_SCALE = 1000  # a level's random stream is keyed by round(level * this)
MIN_DETECTION_IOU = 0.3
DEFAULT_DETECTOR = RUNTIME_DEFAULT_DETECTOR
DEFAULT_SPLITS: Dict[str, Optional[str]] = {"procedural": "test", "300w": "full", "wflw": "test", "aflw": "full",
                                            "cofw": "test", "folder": None}
"""Evaluation split per dataset kind (the paper's test sets; procedural faces have a held-out ``test`` split)."""


# ------------------------------------------------------------------------------------------ data


@dataclass(frozen=True, eq=False)
class EvalItem:
    """One face to evaluate: ``image`` HxWx3 uint8 BGR, ground truth ``gt`` ``[N, 2]``, ``box`` ``(x1, y1, x2, y2)``."""

    image: np.ndarray
    gt: np.ndarray
    box: np.ndarray


def dataset_kind(spec: str) -> str:
    return spec.split(":", 1)[0].strip().lower()


def open_faces(spec: str, split: Optional[str] = None, samples: Optional[int] = None, seed: Optional[int] = None,
               annotation_noise: Optional[float] = None, box_source: Optional[str] = None,
               skip_bad: bool = False) -> Any:
    """Open a dataset spec for evaluation or training; ``samples`` / ``seed`` / ``annotation_noise`` only apply to
    procedural data (``None`` = the generator's default), ``box_source`` only to dataset readers. Every malformed
    face is reported in one error, or left out with a count when ``skip_bad``
    (:func:`glsr.train.datasets.open_checked`)."""
    from glsr.train.datasets import open_checked

    options: Dict[str, Any] = {}
    if box_source is not None and dataset_kind(spec) != "procedural":
        options["box_source"] = box_source
    if dataset_kind(spec) == "procedural":
        if samples is not None:
            options["count"] = int(samples)
        if seed is not None:
            options["seed"] = int(seed)
        if annotation_noise is not None:
            options["annotation_noise"] = float(annotation_noise)
    return open_checked(spec, split=split, skip_bad=skip_bad, **options)


def dataset_scheme(dataset: Any) -> LandmarkScheme:
    """The landmark scheme of a dataset (its ``scheme`` attribute, or its first face's point count)."""
    s = getattr(dataset, "scheme", None)
    if s is not None:
        return get_scheme(s if isinstance(s, (str, int, LandmarkScheme)) else getattr(s, "name", s))
    return get_scheme(len(get_face(dataset, 0).landmarks))


def detector_boxes(detector: Any, image: np.ndarray) -> np.ndarray:
    """Boxes ``[K, 4]`` from a :class:`glsr.runtime.detectors.FaceDetector` (or a spec string for one)."""
    from glsr.runtime.detectors import make_detector

    det = make_detector(detector) if isinstance(detector, str) else detector
    return np.asarray(det.detect(image), dtype=np.float64).reshape(-1, 4)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box ``a`` against boxes ``b`` ``[K, 4]``."""
    ix = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = ix * iy
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def eval_annotations(dataset: Any, boxes: str = "annotation", limit: Optional[int] = None,
                     detector: Any = DEFAULT_DETECTOR) -> Tuple[List[Tuple[np.ndarray, np.ndarray]], Dict[str, int]]:
    """Ground truth (``landmarks_clean`` when the data has annotation noise) and box per face, ``boxes`` chosen as
    in the module docstring; images are decoded only for the detector. Returns ``(annotations, counts)``; counts
    hold ``detector_misses``."""
    if boxes not in BOX_MODES:
        raise ValueError(f"--boxes must be one of {BOX_MODES}, got {boxes!r}")
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise ValueError("the evaluation set is empty")
    if boxes == "detector" and isinstance(detector, str):
        from glsr.runtime.detectors import make_detector

        detector = make_detector(detector)
    out: List[Tuple[np.ndarray, np.ndarray]] = []
    misses = 0
    for i in range(n):
        gt, ann_box = get_annotation(dataset, i, clean=True)
        gt = np.asarray(gt, dtype=np.float64)
        tight = geo.tight_box(gt)
        box = ann_box if (boxes == "annotation" and ann_box is not None) else tight
        if boxes == "detector":
            det = detector_boxes(detector, get_face(dataset, i).image)
            iou = box_iou(tight, det) if len(det) else np.zeros(0)
            if len(det) and iou.max() >= MIN_DETECTION_IOU:
                box = det[int(np.argmax(iou))]
            else:
                misses += 1
                box = ann_box if ann_box is not None else tight
        out.append((gt, np.asarray(box, dtype=np.float64)))
    return out, ({"detector_misses": misses} if boxes == "detector" else {})


def iter_items(dataset: Any, annotations: Sequence[Tuple[np.ndarray, np.ndarray]]) -> Iterator[EvalItem]:
    """The faces one at a time (images are decoded on demand, never all held in memory)."""
    for i, (gt, box) in enumerate(annotations):
        yield EvalItem(get_face(dataset, i).image, gt, box)


def eval_items(dataset: Any, boxes: str = "annotation", limit: Optional[int] = None,
               detector: Any = DEFAULT_DETECTOR) -> Tuple[List[EvalItem], Dict[str, int]]:
    """All faces as :class:`EvalItem` in memory (for small held-out sets); see :func:`eval_annotations`."""
    anns, counts = eval_annotations(dataset, boxes, limit, detector)
    return list(iter_items(dataset, anns)), counts


def perturb_item(item: EvalItem, kind: str, level: float, rng: np.random.Generator) -> EvalItem:
    """One Table 4 perturbation of a face (see module docstring)."""
    b = item.box
    w, h = b[2] - b[0], b[3] - b[1]
    if kind == "scale":
        return EvalItem(item.image, item.gt, geo.enlarge_box(b, 1.0 + level))
    if kind == "translate":
        phi = rng.uniform(0.0, 2.0 * math.pi)
        shift = np.array([level * w * math.cos(phi), level * h * math.sin(phi)])
        return EvalItem(item.image, item.gt, np.concatenate([b[:2] + shift, b[2:] + shift]))
    if kind == "rotate":
        angle = level if rng.random() < 0.5 else -level
        centre = ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
        r = geo.cv2_rotation(centre, angle)
        h_img, w_img = item.image.shape[:2]
        return EvalItem(geo.warp(item.image, r, (w_img, h_img)), geo.apply_affine(r, item.gt), b)
    raise ValueError(f"--perturb must be one of {tuple(PERTURBATIONS)}, got {kind!r}")


def perturb_rng(seed: int, kind: str, level: float, index: int) -> np.random.Generator:
    """Random stream of one face at one perturbation level: keyed by (seed, kind, level, face index)."""
    return np.random.default_rng([seed, PERTURB_IDS[kind], int(round(level * LEVEL_KEY_SCALE)), index])


def perturbed(items: Sequence[EvalItem], kind: str, level: float, seed: int = 0) -> List[EvalItem]:
    """All faces under one perturbation level (level 0 = unchanged)."""
    if level == 0:
        return list(items)
    return [perturb_item(it, kind, level, perturb_rng(seed, kind, level, k)) for k, it in enumerate(items)]


# ------------------------------------------------------------------------------------------ prediction

def load_predictor(weights: str | os.PathLike, threads: Optional[int] = None) -> Any:
    """The user-facing :class:`glsr.runtime.predictor.Predictor` for a model file (any supported format)."""
    from glsr.runtime.predictor import Predictor
    from glsr.shipped import resolve_weights

    return Predictor.from_file(resolve_weights(weights), threads=threads)


def predict_records(weights: Any, items: Iterable[EvalItem], threads: Optional[int] = None) -> np.ndarray:
    """Predicted landmarks ``[K, N, 2]`` (image px) for every item, through ``Predictor.predict(image, box)``
    (``items`` may be :func:`iter_items`' stream: one image decoded at a time).

    ``weights``: a model file or an already opened predictor.
    """
    predictor = load_predictor(weights, threads) if isinstance(weights, (str, os.PathLike)) else weights
    return np.stack([predictor.predict(it.image, it.box[None])[0] for it in items])


def mean_shape_predictions(model: Any, boxes: np.ndarray) -> np.ndarray:
    """The mean-shape baseline: each face's prediction is the mean shape ``S_g0`` of ``model`` (a
    :class:`glsr.models.GLSRNet` or a ``.pt`` checkpoint path) placed in the box's loc frame — what the network
    outputs before any training (identity reinit, zero regressor output)."""
    from glsr.models import GLSRNet, load_checkpoint
    from glsr.models.network import crop_loc_theta

    if not isinstance(model, GLSRNet):
        model = load_checkpoint(model)
    cfg = model.cfg
    ms = model.mean_shape.detach().cpu().numpy().astype(np.float64)
    crop_px_from_loc = geo.compose(geo.pixel_from_norm(cfg.input_size),
                                   crop_loc_theta(cfg.input_size, cfg.loc_size, cfg.context))
    pts_crop = geo.apply_affine(crop_px_from_loc, ms)
    return np.stack([geo.uncrop_points(pts_crop, geo.crop_from_image(b, cfg.input_size, cfg.crop_enlarge))
                     for b in np.asarray(boxes, dtype=np.float64).reshape(-1, 4)])


# ------------------------------------------------------------------------------------------ scoring


def score(pred: np.ndarray, gt: np.ndarray, scheme: LandmarkScheme, norm: Optional[str] = None,
          alpha: float = DEFAULT_ALPHA) -> Dict[str, Any]:
    """NME, per-part NME, AUC@alpha, FR@alpha and the per-face errors of predictions ``[K, N, 2]`` against the
    ground truth ``[K, N, 2]``; ``offset_px``: the mean signed error ``(x, y)`` in image px over all points (a
    constant shift of the annotations relative to the pixels shows up here; see
    ``benchmarks/research/models-record.md``)."""
    gt = np.asarray(gt, dtype=np.float64)
    offset = (np.asarray(pred, dtype=np.float64) - gt).reshape(-1, 2).mean(axis=0)
    errors = np.asarray(nme_per_image(pred, gt, scheme, norm), dtype=np.float64).reshape(-1)
    parts = nme_per_part(pred, gt, scheme, norm)
    auc, fr = auc_fr(errors, alpha)
    by_norm = {n: float(np.mean(nme_per_image(pred, gt, scheme, n))) for n in EYE_NORMS}
    return {"nme": float(np.mean(errors)), "parts": {k: float(np.mean(parts[k])) for k in PART_COLUMNS},
            "auc": auc, "fr": fr, "count": int(len(errors)), "by_norm": by_norm,
            "offset_px": [float(offset[0]), float(offset[1])], "errors": errors.tolist()}


EYE_NORMS: Tuple[str, ...] = ("interocular", "interpupil")
"""Normalizations every report also gives (the paper's 300-W tables use inter-pupil, most others inter-ocular)."""


def point_selection(model_scheme: str, data_scheme: LandmarkScheme, source: str) -> Optional[List[int]]:
    """Indices mapping a model's points onto the data's scheme (``None`` = same scheme), e.g. the WFLW-98 -> 68
    list for the authors' 98-point model on 300-W; an error naming ``source`` when no correspondence is known."""
    if get_scheme(model_scheme).name == data_scheme.name:
        return None
    try:
        return list(conversion(model_scheme, data_scheme))
    except ValueError as e:
        raise ValueError(f"{source} predicts scheme {model_scheme} but the data has {data_scheme.name}: {e}") from None


def model_labels(weights: Sequence[str]) -> List[str]:
    """Short unique labels for model files (stem, or parent/stem when stems repeat)."""
    stems = [Path(w).stem for w in weights]
    labels = [f"{Path(w).parent.name}/{Path(w).stem}" if stems.count(s) > 1 else s for w, s in zip(weights, stems)]
    return [f"{lab}#{i}" if labels.count(lab) > 1 else lab for i, lab in enumerate(labels)]


def evaluate(weights: Sequence[str], data: str, norm: Optional[str] = None, alpha: float = DEFAULT_ALPHA,
             boxes: str = "annotation", perturb: Optional[str] = None, split: Optional[str] = None,
             samples: Optional[int] = None, data_seed: Optional[int] = None, limit: Optional[int] = None,
             seed: int = 0, threads: Optional[int] = None, baseline: bool = False,
             box_source: Optional[str] = None, detector: str = DEFAULT_DETECTOR, refine: Optional[bool] = None,
             dataset: Any = None, skip_bad: bool = False, progress: Optional[bool] = None) -> Dict[str, Any]:
    """Evaluate model files on a dataset spec; returns the report dict (see :func:`write_markdown`).

    ``dataset`` may be passed already opened (then ``data`` is only a label). ``skip_bad`` leaves malformed faces
    out (counted in ``skipped_faces``) instead of refusing the set; ``progress`` shows a bar on stderr (``None``:
    only when stderr is a terminal).
    """
    if not weights:
        raise ValueError("give at least one --weights file")
    if norm is not None and norm not in NORMS:
        raise ValueError(f"--norm must be one of {NORMS}, got {norm!r}")
    if perturb is not None and perturb not in PERTURBATIONS:
        raise ValueError(f"--perturb must be one of {tuple(PERTURBATIONS)}, got {perturb!r}")
    if split is None:
        split = DEFAULT_SPLITS.get(dataset_kind(data))
    ds = dataset if dataset is not None else open_faces(data, split, samples, data_seed, box_source=box_source,
                                                        skip_bad=skip_bad)
    scheme = dataset_scheme(ds)
    predictors = [load_predictor(w, threads) for w in weights]
    selections = [point_selection(p.metadata.scheme, scheme, str(w)) for w, p in zip(weights, predictors)]
    refine = boxes == "detector" if refine is None else bool(refine)
    detector_name = detector if isinstance(detector, str) else detector.name
    box_label = boxes + (f" ({detector_name})" if boxes == "detector" else "") + (", refined" if refine else "")
    if boxes == "detector":
        from glsr.runtime.detectors import make_detector

        detector = make_detector(detector).bind(predictors[0].metadata)  # boxes in the first model's convention
    anns, counts = eval_annotations(ds, boxes, limit, detector)
    norm_used = norm or scheme.default_norm
    labels = model_labels([str(w) for w in weights])
    levels: Tuple[float, ...] = (0.0,) + (PERTURBATIONS[perturb] if perturb else ())
    rows: List[Dict[str, Any]] = []
    models: List[Dict[str, Any]] = []
    from tqdm import tqdm

    bar = tqdm(total=len(anns) * len(levels), desc="eval", unit="face", leave=False, dynamic_ncols=True,
               disable=None if progress is None else not progress)
    for level in levels:
        preds: List[List[np.ndarray]] = [[] for _ in predictors]
        gts: List[np.ndarray] = []
        for k, item in enumerate(bar_iter(iter_items(ds, anns), bar)):
            if perturb and level:
                item = perturb_item(item, perturb, level, perturb_rng(seed, perturb, level, k))
            gts.append(item.gt)
            for out, predictor, sel in zip(preds, predictors, selections):
                pts = predictor.predict_faces(item.image, item.box[None], refine=refine).landmarks[0]
                out.append(pts if sel is None else pts[sel])
        row: Dict[str, Any] = {"level": level, "nme": {}}
        for w, label, pred in zip(weights, labels, preds):
            s = score(np.stack(pred), np.stack(gts), scheme, norm_used, alpha)
            row["nme"][label] = s["nme"]
            if level == 0:
                models.append({"label": label, "weights": str(w), **s})
        rows.append(row)
    bar.close()
    report: Dict[str, Any] = {"data": data, "split": split, "scheme": scheme.name, "norm": norm_used,
                              "alpha": alpha, "boxes": box_label, "refine": refine,
                              **({"detector": detector_name} if boxes == "detector" else {}),
                              "count": len(anns), **counts, "models": models}
    if len(models) > 1:  # face by face against the first model: is a difference one these faces can resolve?
        report["paired"] = [{"label": m["label"], "against": models[0]["label"],
                             **paired_difference(m["errors"], models[0]["errors"])} for m in models[1:]]
    if getattr(ds, "skipped", 0):
        report["skipped_faces"] = int(ds.skipped)
    if baseline:
        gt = np.stack([a[0] for a in anns])
        base = mean_shape_predictions(weights[0], np.stack([a[1] for a in anns]))
        s = score(base if selections[0] is None else base[:, selections[0]], gt, scheme, norm_used, alpha)
        report["baseline"] = {"label": f"mean shape of {labels[0]}", **s}
    if perturb:
        report["perturb"] = {"kind": perturb, "seed": seed, "rows": rows}
    return report


def bar_iter(items: Iterator[Any], bar: Any) -> Iterator[Any]:
    """Yield ``items``, advancing the progress ``bar`` by one each."""
    for item in items:
        yield item
        bar.update(1)


# ------------------------------------------------------------------------------------------ reports


def write_json(report: Dict[str, Any], path: str | os.PathLike) -> Path:
    return atomic.write_text(path, json.dumps(report, indent=2) + "\n")


def _pct(x: float) -> str:
    return f"{100.0 * x:.2f}"


def format_markdown(report: Dict[str, Any]) -> str:
    """Markdown tables: one row per model (NME %, Table 1's per-part NME %, AUC@alpha, FR@alpha %) and, with a
    perturbation, Table 4's layout (one row per level, one NME column per model)."""
    a = f"{report['alpha']:g}"
    others = [n for n in EYE_NORMS if n != report["norm"]]
    lines = [f"# Evaluation on {report['data']}" + (f" ({report['split']})" if report.get("split") else ""),
             "",
             f"{report['count']} faces, scheme {report['scheme']}, NME normalized by {report['norm']} distance, "
             f"boxes: {report['boxes']}" + (f" ({report['detector_misses']} detector misses fell back to the "
                                            f"annotation box)" if "detector_misses" in report else "") + ".",
             "",
             "| model | NME (%) | " + "".join(f"{n} (%) | " for n in others)
             + " | ".join(f"{c} (%)" for c in PART_COLUMNS) + f" | AUC@{a} | FR@{a} (%) | mean offset x, y (px) |",
             "|---|---:|" + "---:|" * (len(others) + len(PART_COLUMNS)) + "---:|---:|---:|"]
    rows = list(report["models"]) + ([report["baseline"]] if "baseline" in report else [])
    for m in rows:
        extra = "".join(f"{_pct(m['by_norm'][n])} | " if n in m.get("by_norm", {}) else "| " for n in others)
        lines.append(f"| {m['label']} | {_pct(m['nme'])} | {extra}"
                     + " | ".join(_pct(m["parts"][c]) for c in PART_COLUMNS) + f" | {m['auc']:.4f} | {_pct(m['fr'])} | "
                     + (", ".join(f"{v:+.2f}" for v in m["offset_px"]) if "offset_px" in m else "") + " |")
    if report.get("paired"):
        level = report["paired"][0]["level"]
        lines += ["", f"## Face by face against {report['paired'][0]['against']}", "",
                  f"Mean per-face NME difference (positive: worse), its {100 * level:g} % bootstrap interval over the "
                  "faces and the faces where the model is better; an interval that holds 0 is a difference these "
                  "faces cannot resolve.", "",
                  f"| model | NME difference (points) | {100 * level:g} % interval | faces better |",
                  "|---|---:|---|---:|"]
        for d in report["paired"]:
            lines.append(f"| {d['label']} | {100 * d['mean']:+.3f} | {100 * d['low']:+.3f} to {100 * d['high']:+.3f} | "
                         f"{d['better']} / {d['faces']} |")
    if "perturb" in report:
        p = report["perturb"]
        labels = [m["label"] for m in report["models"]]
        unit = "degrees" if p["kind"] == "rotate" else "ratio of the box"
        lines += ["", f"## NME (%) under box perturbation: {p['kind']} ({unit}), Table 4 protocol", "",
                  f"| {p['kind']} | " + " | ".join(labels) + " |", "|---:|" + "---:|" * len(labels)]
        for r in p["rows"]:
            lines.append(f"| {r['level']:g} | " + " | ".join(_pct(r["nme"][lab]) for lab in labels) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(report: Dict[str, Any], path: str | os.PathLike) -> Path:
    return atomic.write_text(path, format_markdown(report))


def write_plot(report: Dict[str, Any], path: str | os.PathLike) -> Path:
    curves = {m["label"]: m["errors"] for m in report["models"]}
    if "baseline" in report:
        curves[report["baseline"]["label"]] = report["baseline"]["errors"]
    return plot_ced(curves, path, alpha=report["alpha"], title=f"CED on {report['data']} ({report['norm']})")


def run_eval(weights: Sequence[str], data: str, json_path: Optional[str | os.PathLike] = None,
             md_path: Optional[str | os.PathLike] = None, plot_path: Optional[str | os.PathLike] = None,
             **options: Any) -> Dict[str, Any]:
    """Evaluate (``options`` are :func:`evaluate`'s keywords) and write the requested reports (JSON, Markdown, CED
    plot; each atomically); returns the report. ``glsr eval`` and the pipeline's eval stage both call this."""
    report = evaluate(weights, data, **options)
    if json_path:
        write_json(report, json_path)
    if md_path:
        write_markdown(report, md_path)
    if plot_path:
        write_plot(report, plot_path)
    return report
