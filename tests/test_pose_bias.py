"""The pose-bias study's eye frame and yaw-conditioned correction on hand-made faces: the frame round-trips, a
residual that is exactly a polynomial of |yaw| in the eye frame is removed entirely, and the per-band NME is the
metric written out by hand."""
import numpy as np

from benchmarks.studies.pose_bias import (by_band, corrected, eye_frame, fit_correction, from_frame, to_frame)
from glsr.pose import yaw_index
from glsr.shapes import template_shape


def _faces(n=24, seed=0):
    """The template turned by moving its nose tip, rotated, scaled and placed at random; half turned each way."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        g = template_shape("68").copy() - 0.5
        g[27:36, 0] += (0.02 * k) * (1 if k % 2 else -1)
        a = rng.uniform(-0.4, 0.4)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        out.append(g @ rot.T * rng.uniform(80, 200) + rng.uniform(100, 300, 2))
    return np.stack(out)


def test_the_eye_frame_round_trips_and_mirrors_turned_faces():
    pts = _faces()
    f = eye_frame(pts)
    z = to_frame(pts, f)
    np.testing.assert_allclose(from_frame(z, f), pts, atol=1e-9)
    eyes = (z[:, 36:42].mean(1), z[:, 42:48].mean(1))
    np.testing.assert_allclose(eyes[0], [[-0.5, 0.0]] * len(pts), atol=1e-9)   # unit inter-eye distance on x
    np.testing.assert_allclose(eyes[1], [[0.5, 0.0]] * len(pts), atol=1e-9)
    assert (yaw_index(z, "68") >= 0).all() and (yaw_index(pts, "68") < 0).any()   # every face turned one way


def test_a_residual_polynomial_in_yaw_is_corrected_away():
    pred = _faces()
    f = eye_frame(pred)
    a = np.abs(f[3])[:, None, None]
    shift = np.zeros((1, 68, 2))
    shift[0, :17, 0] = np.linspace(-0.2, 0.1, 17)                 # the contour pulled sideways, more when turned
    gt = from_frame(to_frame(pred, f) + a * shift + a ** 2 * shift[..., ::-1], f)
    w = fit_correction(gt, pred)
    np.testing.assert_allclose(corrected(pred, w), gt, atol=1e-8)
    assert by_band(gt, corrected(pred, w), [0.1, 0.3])["nme"] < 1e-9 < by_band(gt, pred, [0.1, 0.3])["nme"]


def test_bands_hold_the_per_face_nme():
    gt = _faces(12, seed=1)
    pred = gt + np.random.default_rng(2).normal(size=gt.shape)
    edges = [0.1, 0.25]
    r = by_band(gt, pred, edges)
    err = np.linalg.norm(pred - gt, axis=2).mean(1) / np.linalg.norm(gt[:, 36] - gt[:, 45], axis=1)
    band = np.digitize(np.abs(yaw_index(gt, "68")), edges)
    assert [b["faces"] for b in r["bands"]] == [int((band == k).sum()) for k in range(3)]
    for k, b in enumerate(r["bands"]):
        if b["faces"]:
            assert np.isclose(b["nme"], err[band == k].mean())
    assert np.isclose(r["nme"], err.mean()) and r["failures"] == int((err > 0.05).sum())
