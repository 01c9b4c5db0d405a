"""Face-alignment metrics (pure numpy): NME, per-part NME, CED, AUC@alpha, FR@alpha, CED plots.

Conventions
-----------
* Shapes are ``[N, 2]`` or ``[B, N, 2]`` (``(x, y)`` pixels); per-image results have shape ``shape[:-2]``
  (a 0-d value for a single ``[N, 2]`` face, ``[B]`` for a batch).
* Normalized error of one face (paper Sec. 4.1, "Evaluation Metrics")::

      eps = (1/n) * sum_i ||p_hat_i - p*_i||_2 / d_norm

  with ``d_norm`` from :func:`normalizer`. The NME of a set is the mean of ``eps`` over its faces.
* Errors fed to :func:`ced_curve` / :func:`auc_fr` are normalized errors (fractions, not percent). A non-finite
  error (failed prediction) counts as an infinitely large error: a failure, and 0 in the CED.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from glsr.schemes import LandmarkScheme, get_scheme
from glsr import atomic

SchemeLike = Union[str, int, LandmarkScheme]
Index = Tuple[int, ...]

NORMS: Tuple[str, ...] = ("interocular", "interpupil", "box")
DEFAULT_ALPHA = 0.1
DEFAULT_STEP = 1e-4
"""CED sampling step of the usual evaluation scripts (thresholds 0, 1e-4, ..., alpha)."""


PART_COLUMNS: Tuple[str, ...] = ("contour", "brows", "eyes", "nose", "mouth")
"""Columns of the paper's Table 1 (per-part NME); :func:`nme_per_part` adds ``"all"``."""


def part_groups(scheme: SchemeLike) -> Dict[str, Index]:
    """Table 1's groups (contour, brows, eyes, nose, mouth) from the scheme's data, checked to partition it."""
    s = get_scheme(scheme)
    groups = s.evaluation_groups()
    if list(groups) != list(PART_COLUMNS):
        raise ValueError(f"scheme {s.name!r} groups {list(groups)} do not match the columns {PART_COLUMNS}")
    if sorted(i for g in groups.values() for i in g) != list(range(s.num_points)):
        raise ValueError(f"scheme {s.name!r}: contour/brows/eyes/nose/mouth do not partition its {s.num_points} points")
    return groups


def _shapes(pts: np.ndarray, scheme: LandmarkScheme, what: str) -> np.ndarray:
    a = np.asarray(pts, dtype=np.float64)
    if a.ndim < 2 or a.shape[-1] != 2 or a.shape[-2] != scheme.num_points:
        raise ValueError(f"{what} must have shape [..., {scheme.num_points}, 2] for scheme {scheme.name!r}, "
                         f"got {a.shape}")
    return a


def _scalar_or_array(a: np.ndarray) -> np.ndarray:
    return a[()] if a.ndim == 0 else a


def normalizer(landmarks_gt: np.ndarray, scheme: SchemeLike, norm: Optional[str] = None,
               box: Optional[np.ndarray] = None) -> np.ndarray:
    """Normalizing distance ``d_norm`` per face (shape ``landmarks_gt.shape[:-2]``).

    * ``"interocular"`` / ``"interpupil"``: ``||mean(gt[A]) - mean(gt[B])||_2`` for the scheme's point-set pair
      ``(A, B)`` (``scheme.interocular``: outer eye corners 36/45 on 68 points, 60/72 on 98 [Wu et al. CVPR 2018];
      ``scheme.interpupil``: eye-contour centroids on 68 points, pupils 96/97 on 98).
    * ``"box"``: the face size ``sqrt(w * h)`` of the ground-truth tight box — the AFLW protocol of Zhu et al.,
      "Unconstrained face alignment via cascaded compositional learning", CVPR 2016 (the paper's ref. [22]),
      which normalizes by the face box size. Pass ``box`` (``[..., 4]`` as ``(x1, y1, x2, y2)``) to use an
      annotation box instead of the tight box.
    ``norm=None`` uses ``scheme.default_norm``. A zero distance raises ``ValueError``.
    """
    s = get_scheme(scheme)
    gt = _shapes(landmarks_gt, s, "landmarks_gt")
    norm = s.default_norm if norm is None else norm
    if norm in ("interocular", "interpupil"):
        a, b = getattr(s, norm)
        d = np.linalg.norm(gt[..., list(a), :].mean(axis=-2) - gt[..., list(b), :].mean(axis=-2), axis=-1)
    elif norm == "box":
        if box is None:
            wh = gt.max(axis=-2) - gt.min(axis=-2)
        else:
            bx = np.asarray(box, dtype=np.float64)
            wh = bx[..., 2:] - bx[..., :2]
        d = np.sqrt(np.clip(wh[..., 0], 0, None) * np.clip(wh[..., 1], 0, None))
    else:
        raise ValueError(f"unknown norm {norm!r}; choose one of {NORMS}")
    bad = np.flatnonzero(~(np.atleast_1d(d) > 0))
    if bad.size:
        raise ValueError(f"{norm} normalizing distance is zero or invalid for face(s) {bad.tolist()} "
                         f"(flattened batch index)")
    return _scalar_or_array(np.asarray(d))


def point_errors(pred: np.ndarray, gt: np.ndarray, scheme: SchemeLike, norm: Optional[str] = None,
                 box: Optional[np.ndarray] = None) -> np.ndarray:
    """Per-point normalized errors ``||pred_i - gt_i||_2 / d_norm``, shape ``[..., N]``."""
    s = get_scheme(scheme)
    p = _shapes(pred, s, "pred")
    g = _shapes(gt, s, "gt")
    d = np.asarray(normalizer(g, s, norm, box))
    return np.linalg.norm(p - g, axis=-1) / d[..., None]


def nme_per_image(pred: np.ndarray, gt: np.ndarray, scheme: SchemeLike, norm: Optional[str] = None,
                  box: Optional[np.ndarray] = None) -> np.ndarray:
    """``eps = (1/N) sum_i ||pred_i - gt_i||_2 / d_norm`` per face (shape ``gt.shape[:-2]``)."""
    return _scalar_or_array(point_errors(pred, gt, scheme, norm, box).mean(axis=-1))


def nme_per_part(pred: np.ndarray, gt: np.ndarray, scheme: SchemeLike, norm: Optional[str] = None,
                 box: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
    """Per-part NME (paper Table 1): for each group ``G`` of :func:`part_groups`,
    ``(1/|G|) sum_{i in G} ||pred_i - gt_i||_2 / d_norm`` per face, with ``d_norm`` of the whole face.

    Keys: :data:`PART_COLUMNS` then ``"all"`` (= :func:`nme_per_image`).
    """
    errors = point_errors(pred, gt, scheme, norm, box)
    groups = part_groups(scheme)
    out = {name: _scalar_or_array(errors[..., list(groups[name])].mean(axis=-1)) for name in PART_COLUMNS}
    out["all"] = _scalar_or_array(errors.mean(axis=-1))
    return out


def _errors(errors: Sequence[float]) -> np.ndarray:
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    if e.size == 0:
        raise ValueError("no errors given")
    if np.any(e[~np.isnan(e)] < 0):
        raise ValueError("normalized errors must be >= 0")
    return np.where(np.isfinite(e), e, np.inf)


def _thresholds(alpha: float, step: float) -> np.ndarray:
    if not alpha > 0 or not step > 0:
        raise ValueError(f"alpha and step must be > 0, got alpha={alpha}, step={step}")
    n = int(round(alpha / step))
    if n < 1 or abs(n * step - alpha) > 1e-9 * alpha:
        raise ValueError(f"alpha={alpha} must be a whole multiple of step={step}")
    return np.linspace(0.0, alpha, n + 1)


def ced_curve(errors: Sequence[float], alpha: float = DEFAULT_ALPHA,
              step: float = DEFAULT_STEP) -> Tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution ``f(t) = #{e_k <= t} / K`` sampled at ``t = 0, step, ..., alpha``.

    Returns ``(thresholds, fractions)``.
    """
    e = np.sort(_errors(errors))
    t = _thresholds(alpha, step)
    return t, np.searchsorted(e, t, side="right") / e.size


def auc_fr(errors: Sequence[float], alpha: float = DEFAULT_ALPHA,
           step: Optional[float] = DEFAULT_STEP) -> Tuple[float, float]:
    """``(AUC@alpha, FR@alpha)`` of normalized errors.

    * ``AUC@alpha = (1/alpha) * integral_0^alpha f(t) dt`` with ``f`` the CED (paper Sec. 4.1; divided by
      ``alpha`` so that it lies in ``[0, 1]`` as reported in the literature). With ``step`` the CED is sampled
      at ``0, step, ..., alpha`` and integrated with the trapezoidal rule (as the usual evaluation scripts do);
      ``step=None`` gives the exact value ``mean(max(alpha - e_k, 0)) / alpha``.
    * ``FR@alpha = #{e_k > alpha} / K`` (strictly greater).
    """
    e = _errors(errors)
    fr = float(np.mean(e > alpha))
    if step is None:
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        auc = float(np.mean(np.clip(alpha - e, 0.0, None)) / alpha)
    else:
        t, f = ced_curve(e, alpha, step)
        auc = float(np.trapezoid(f, t) / alpha)
    return auc, fr


BOOTSTRAP_ROUNDS = 10_000
INTERVAL_LEVEL = 0.95
"""Coverage of :func:`paired_difference`'s bootstrap interval by default."""


def paired_difference(errors: Sequence[float], reference: Sequence[float], level: float = INTERVAL_LEVEL,
                      rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0) -> Dict[str, float]:
    """How much worse ``errors`` are than ``reference`` on the same faces (same order): the mean per-face difference
    ``errors - reference``, its ``level`` percentile-bootstrap interval (faces resampled with replacement,
    ``rounds`` times, fixed ``seed``), and the number of faces where ``errors`` is lower. An interval that holds 0
    means the faces cannot tell the two models apart."""
    a, b = _errors(errors), _errors(reference)
    if a.shape != b.shape:
        raise ValueError(f"paired errors need the same faces: {a.size} against {b.size}")
    if not np.all(np.isfinite(a)) or not np.all(np.isfinite(b)):
        raise ValueError("paired differences need finite errors on every face")
    if not 0 < level < 1 or rounds < 1:
        raise ValueError(f"need 0 < level < 1 and rounds >= 1, got level={level}, rounds={rounds}")
    d = a - b
    means = d[np.random.default_rng(seed).integers(0, d.size, (rounds, d.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return {"mean": float(d.mean()), "low": float(lo), "high": float(hi), "level": level,
            "better": int(np.sum(d < 0)), "faces": int(d.size)}


def plot_ced(curves: Mapping[str, Sequence[float]], path: Union[str, os.PathLike], alpha: float = DEFAULT_ALPHA,
             step: float = DEFAULT_STEP, title: Optional[str] = None) -> Path:
    """Plot the CED of each ``label -> errors`` to a PNG (matplotlib Agg canvas, no pyplot state).

    Legend entries give NME, AUC@alpha and FR@alpha. The file is written atomically (temporary file in the same
    folder, then ``os.replace``). Returns the path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        raise ValueError("plot_ced needs at least one curve")
    path = Path(path)
    fig = Figure(figsize=(6.0, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for label, errors in curves.items():
        t, f = ced_curve(errors, alpha, step)
        auc, fr = auc_fr(errors, alpha, step)
        e = _errors(errors)
        nme = float(np.mean(e))
        ax.plot(t, f, label=f"{label}: NME {nme:.2%}, AUC@{alpha:g} {auc:.4f}, FR@{alpha:g} {fr:.2%}")
    ax.set_xlim(0.0, alpha)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("normalized error")
    ax.set_ylabel("fraction of faces")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    if title:
        ax.set_title(title)
    with atomic.atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png")
    return path
