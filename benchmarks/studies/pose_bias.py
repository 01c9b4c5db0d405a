"""Is a model's error on turned faces a bias of the pose? Tight-box NME by |yaw| band on the faces it trained on
(``fit``) and on ``val``, and what a pose-conditioned correction of its output can take back
(``python -m benchmarks.studies.pose_bias [--model small]``).

* Every face of 300-W ``fit`` and ``val`` through :class:`glsr.runtime.predictor.Predictor` with the tight box of
  its annotation (``Predictor.from_file(MODEL)``, the ``.pt``, one thread; :func:`glsr.train.evaluate.predict_records`);
  NME in % of the inter-ocular distance.
* Bands of |yaw| (:func:`glsr.pose.yaw_index` of the ground truth): the ``val`` tertile edges and :data:`PROFILE`.
  A model that trails on turned faces of ``fit`` too cannot fit them (bias); one that trails on ``val`` only,
  generalizes worse to them (variance).
* The correction: each face's predicted points in the frame of its predicted eyes (origin their midpoint, x along
  them, unit their distance; faces turned the other way mirrored, :func:`glsr.shapes.mirror_shape`'s relabelling),
  plus a per-point offset polynomial in the predicted |yaw| (:data:`DEGREE`), fitted by least squares on the
  ``fit`` residuals and applied to ``val``; and fitted on ``val`` itself (in-sample: an upper bound of what any
  such correction can take back).

Writes ``OUT.json`` and ``OUT.md`` atomically; exits with a message when ``../shared`` is absent.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from benchmarks import RESULTS_DIR, missing_300w, write_portable
from benchmarks.studies.detector_boxes import NORM, SPEC, machine

PROFILE = 0.6
"""|yaw| above which a face counts as near profile (the last band)."""
DEGREE = 3
FAIL = 0.05


def predict_split(model: str, split: str, limit: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
    """``(ground truth, prediction)`` ``[F, 68, 2]`` of ``model`` on the tight boxes of ``split`` (the evaluation
    layer's readers and :func:`glsr.train.evaluate.predict_records`, as ``glsr eval --boxes tight``)."""
    from glsr.train.evaluate import eval_annotations, iter_items, open_faces, predict_records

    ds = open_faces(SPEC, split)
    anns, _ = eval_annotations(ds, "tight", limit)
    return np.stack([gt for gt, _ in anns]), predict_records(model, iter_items(ds, anns), threads=1)


def eye_frame(pred: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per face, from its predicted points ``[F, 68, 2]``: ``(origin [F, 2], angle [F], scale [F], yaw [F])``."""
    from glsr.pose import EYES_68, yaw_index

    a = pred[:, list(EYES_68[0])].mean(1)
    b = pred[:, list(EYES_68[1])].mean(1)
    v = b - a
    return (a + b) / 2, np.arctan2(v[:, 1], v[:, 0]), np.linalg.norm(v, axis=1), yaw_index(pred, "68")


def to_frame(points: np.ndarray, frame: Tuple[np.ndarray, ...]) -> np.ndarray:
    """Image points ``[F, 68, 2]`` in the eye frame, faces with negative yaw mirrored and relabelled."""
    from glsr.shapes import mirror_shape

    o, ang, s, yaw = frame
    c, sn = np.cos(ang)[:, None], np.sin(ang)[:, None]
    y = points - o[:, None]
    z = np.stack([y[..., 0] * c + y[..., 1] * sn, -y[..., 0] * sn + y[..., 1] * c], -1) / s[:, None, None]
    neg = yaw < 0
    z[neg] = mirror_shape(z[neg] + [0.5, 0.0], "68") - [0.5, 0.0]
    return z


def from_frame(z: np.ndarray, frame: Tuple[np.ndarray, ...]) -> np.ndarray:
    """The inverse of :func:`to_frame`."""
    from glsr.shapes import mirror_shape

    o, ang, s, yaw = frame
    z = z.copy()
    neg = yaw < 0
    z[neg] = mirror_shape(z[neg] + [0.5, 0.0], "68") - [0.5, 0.0]
    z = z * s[:, None, None]
    c, sn = np.cos(ang)[:, None], np.sin(ang)[:, None]
    return np.stack([z[..., 0] * c - z[..., 1] * sn, z[..., 0] * sn + z[..., 1] * c], -1) + o[:, None]


def features(yaw: np.ndarray) -> np.ndarray:
    a = np.abs(yaw)
    return np.stack([a ** k for k in range(1, DEGREE + 1)], 1)


def fit_correction(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Least-squares weights ``[DEGREE, 136]`` of the eye-frame residual ``gt - pred`` on :func:`features`."""
    f = eye_frame(pred)
    r = (to_frame(gt, f) - to_frame(pred, f)).reshape(len(gt), -1)
    return np.linalg.lstsq(features(f[3]), r, rcond=None)[0]


def corrected(pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    f = eye_frame(pred)
    return from_frame(to_frame(pred, f) + (features(f[3]) @ weights).reshape(pred.shape), f)


def by_band(gt: np.ndarray, pred: np.ndarray, edges: List[float]) -> Dict[str, Any]:
    from glsr.pose import yaw_index
    from glsr.schemes import get_scheme
    from glsr.train.metrics import nme_per_image

    e = np.asarray(nme_per_image(pred, gt, get_scheme("68"), NORM))
    band = np.digitize(np.abs(yaw_index(gt, "68")), edges)
    return {"nme": float(e.mean()), "faces": len(e), "failures": int((e > FAIL).sum()),
            "bands": [{"faces": int((band == k).sum()), "nme": float(e[band == k].mean()),
                       "failures": int((e[band == k] > FAIL).sum())} for k in range(len(edges) + 1)]}


def study(model: str, limit: Optional[int]) -> Dict[str, Any]:
    from glsr.pose import pose_tertiles, yaw_index

    fit_gt, fit_pred = predict_split(model, "fit", limit)
    val_gt, val_pred = predict_split(model, "val", limit)
    edges = [float(x) for x in pose_tertiles(yaw_index(val_gt, "68"))[1]] + [PROFILE]
    return {"edges": edges, "rows": {
        "fit, as trained": by_band(fit_gt, fit_pred, edges),
        "val, as trained": by_band(val_gt, val_pred, edges),
        "val, corrected (fitted on fit)": by_band(val_gt, corrected(val_pred, fit_correction(fit_gt, fit_pred)),
                                                  edges),
        "val, corrected (fitted on val: in-sample bound)": by_band(
            val_gt, corrected(val_pred, fit_correction(val_gt, val_pred)), edges)}}


def markdown(r: Dict[str, Any]) -> str:
    e = r["result"]["edges"]
    names = [f"below {e[0]:.2f}"] + [f"{a:.2f} - {b:.2f}" for a, b in zip(e, e[1:])] + [f"{e[-1]:.2f} and up"]
    lines = [f"# Turned faces: bias or variance? (`{r['model']}`, tight boxes)", "",
             f"{r['date']} - `{r['command']}`. 300-W faces with the tight box of their annotation, "
             f"`Predictor.from_file({r['model']!r})` (the `.pt`, one thread). NME in % of the inter-ocular distance, "
             f"failures: faces above {100 * FAIL:g} %. Bands by the |yaw| index of the ground truth (`val` tertile "
             f"edges, then {PROFILE}). Corrected: a per-point offset in the predicted eye frame, a degree-{DEGREE} "
             "polynomial of the predicted |yaw| (module docstring).", "",
             "| faces | all | " + " | ".join(f"yaw {n}" for n in names) + " |", "|---|---:|" + "---:|" * len(names)]
    for label, row in r["result"]["rows"].items():
        lines.append(f"| {label} | {100 * row['nme']:.2f} % ({row['faces']}, {row['failures']}) | "
                     + " | ".join(f"{100 * b['nme']:.2f} % ({b['faces']}, {b['failures']})" for b in row["bands"])
                     + " |")
    lines += ["", "(faces, failures) in brackets."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="small", help="shipped name or .pt (default small)")
    ap.add_argument("--limit", type=int, help="at most this many faces per split (a quick check)")
    ap.add_argument("--out", default=str(RESULTS_DIR / "pose_bias"), help="output path without suffix")
    args = ap.parse_args(argv)
    if missing_300w():
        return 2
    given = argv if argv is not None else sys.argv[1:]
    r = {"command": " ".join(["python -m benchmarks.studies.pose_bias", *given]),
         "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "model": args.model, "machine": machine(),
         "result": study(args.model, args.limit)}
    write_portable(args.out, r, markdown(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
