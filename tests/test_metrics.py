"""Metrics on hand-computed cases."""
from __future__ import annotations

import os

import numpy as np
import pytest

from glsr.schemes import SCHEMES, get_scheme
from glsr.train.metrics import (
    PART_COLUMNS, auc_fr, ced_curve, nme_per_image, nme_per_part, normalizer, part_groups, plot_ced,
)

SHIFT = np.array([3.0, 4.0])  # |(3, 4)| = 5


def face(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 200, size=(n, 2))


def face98_outer_corners_100px() -> np.ndarray:
    gt = face(98)
    gt[60] = (100.0, 150.0)
    gt[72] = (200.0, 150.0)
    return gt


def face68_with_eyes() -> np.ndarray:
    """Eye contours whose centroids are 60 px apart while the outer corners (36, 45) are 100 px apart."""
    gt = face(68, 1)
    left = np.array([[70, 100], [85, 95], [100, 95], [110, 100], [100, 105], [85, 105]], float)  # centroid x 91.67
    right = left + (60.0, 0.0)
    gt[36:42] = left
    gt[42:48] = right
    return gt


# ------------------------------------------------------------------------------------------ normalizers and NME


def test_nme_98_interocular_shift_3_4():
    gt = face98_outer_corners_100px()
    pred = gt + SHIFT
    assert normalizer(gt, "98", "interocular") == pytest.approx(100.0)
    assert nme_per_image(pred, gt, "98", "interocular") == pytest.approx(0.05)
    assert nme_per_image(pred, gt, "98") == pytest.approx(0.05)  # WFLW default norm = inter-ocular
    batch = nme_per_image(np.stack([pred, gt]), np.stack([gt, gt]), "98", "interocular")
    assert batch.shape == (2,)
    np.testing.assert_allclose(batch, [0.05, 0.0])


def test_interpupil_68_uses_eye_centroids():
    gt = face68_with_eyes()
    assert normalizer(gt, "68", "interpupil") == pytest.approx(60.0)
    assert normalizer(gt, "68", "interocular") == pytest.approx(100.0)  # outer corners 36=(70,100), 45=(170,100)
    assert nme_per_image(gt + SHIFT, gt, "68", "interpupil") == pytest.approx(5.0 / 60.0)
    assert get_scheme("68").default_norm == "interpupil"
    assert nme_per_image(gt + SHIFT, gt, 68) == pytest.approx(5.0 / 60.0)


def test_interpupil_98_uses_pupils():
    gt = face(98, 2)
    gt[96] = (10.0, 10.0)
    gt[97] = (10.0, 50.0)
    assert normalizer(gt, "98", "interpupil") == pytest.approx(40.0)


def test_box_norm_is_sqrt_of_tight_box_area():
    gt = face(19, 3)
    gt[:, 0] = np.clip(gt[:, 0], 20, 100)   # width 80
    gt[:, 1] = np.clip(gt[:, 1], 50, 70)    # height 20
    gt[0] = (20, 50)
    gt[1] = (100, 70)
    assert normalizer(gt, "19", "box") == pytest.approx(40.0)
    assert normalizer(gt, "19") == pytest.approx(40.0)  # AFLW default norm = face size
    assert normalizer(gt, "19", "box", box=np.array([0, 0, 25, 100])) == pytest.approx(50.0)
    assert nme_per_image(gt + SHIFT, gt, "19", "box") == pytest.approx(5.0 / 40.0)


def test_normalizer_errors():
    gt = np.zeros((68, 2))
    with pytest.raises(ValueError, match="zero"):
        normalizer(gt, "68", "interpupil")
    with pytest.raises(ValueError, match="unknown norm"):
        normalizer(face68_with_eyes(), "68", "chin")
    with pytest.raises(ValueError, match=r"\[\.\.\., 98, 2\]"):
        nme_per_image(face(68), face(68), "98")


# ------------------------------------------------------------------------------------------ per part


def test_part_groups_partition_and_agree_with_schemes():
    for name in SCHEMES:
        groups = part_groups(name)
        assert tuple(groups) == PART_COLUMNS
        assert set(groups["brows"]).isdisjoint(groups["eyes"])
    assert part_groups("68")["brows"] == tuple(range(17, 27))
    assert part_groups("68")["eyes"] == tuple(range(36, 48))
    assert set(part_groups("98")["eyes"]) == set(range(60, 76)) | {96, 97}


def test_nme_per_part_68():
    gt = face68_with_eyes()
    pred = gt.copy()
    pred[48:68] += SHIFT          # mouth only
    pred[17:27] += 2 * SHIFT      # brows only
    parts = nme_per_part(pred, gt, "68", "interpupil")
    assert list(parts) == list(PART_COLUMNS) + ["all"]
    assert parts["mouth"] == pytest.approx(5.0 / 60)
    assert parts["brows"] == pytest.approx(10.0 / 60)
    assert parts["eyes"] == 0 and parts["nose"] == 0 and parts["contour"] == 0
    assert parts["all"] == pytest.approx((20 * 5.0 + 10 * 10.0) / 68 / 60)
    assert parts["all"] == pytest.approx(nme_per_image(pred, gt, "68", "interpupil"))


def test_nme_per_part_batch_shapes():
    gt = np.stack([face98_outer_corners_100px()] * 3)
    parts = nme_per_part(gt + SHIFT, gt, "98", "interocular")
    for v in parts.values():
        np.testing.assert_allclose(v, [0.05] * 3)


# ------------------------------------------------------------------------------------------ CED, AUC, FR


def test_auc_all_zero_errors_is_one():
    assert auc_fr([0.0] * 5) == (pytest.approx(1.0), 0.0)
    assert auc_fr([0.0] * 5, step=None) == (pytest.approx(1.0), 0.0)


def test_auc_all_failures_is_zero():
    auc, fr = auc_fr([0.11, 0.5, 3.0])
    assert auc == 0.0 and fr == 1.0
    assert auc_fr([0.11, 0.5, 3.0], step=None) == (0.0, 1.0)


def test_auc_two_values_hand_computed():
    # CED = 0 on [0, .02), 1/2 on [.02, .06), 1 on [.06, .1]: area = .5*.04 + 1*.04 = .06 -> AUC = .06/.1 = .6
    auc_exact, fr = auc_fr([0.02, 0.06], alpha=0.1, step=None)
    assert auc_exact == pytest.approx(0.6) and fr == 0.0
    auc_sampled, _ = auc_fr([0.02, 0.06], alpha=0.1, step=1e-4)
    assert auc_sampled == pytest.approx(0.6, abs=1e-3)
    # alpha = 0.05: only the 0.02 face counts: area = .5 * .03 -> AUC = .3, FR = 1/2
    assert auc_fr([0.02, 0.06], alpha=0.05, step=None) == (pytest.approx(0.3), 0.5)


def test_fr_counts_strictly_greater():
    _, fr = auc_fr([0.1, 0.1, 0.1000001, 0.05], alpha=0.1)
    assert fr == 0.25
    _, fr = auc_fr([0.02, float("nan")], alpha=0.1)  # a failed prediction is a failure
    assert fr == 0.5


def test_ced_curve_values():
    t, f = ced_curve([0.02, 0.06], alpha=0.1, step=0.01)
    np.testing.assert_allclose(t, np.linspace(0, 0.1, 11))
    np.testing.assert_allclose(f, [0, 0, 0.5, 0.5, 0.5, 0.5, 1, 1, 1, 1, 1])
    with pytest.raises(ValueError, match="multiple"):
        ced_curve([0.1], alpha=0.1, step=0.03)
    with pytest.raises(ValueError):
        ced_curve([], alpha=0.1)


def test_plot_ced_writes_png_atomically(tmp_path):
    path = tmp_path / "plots" / "ced.png"
    rng = np.random.default_rng(0)
    curves = {"GSR": rng.uniform(0, 0.12, 50), "G&LSR": rng.uniform(0, 0.08, 50)}
    out = plot_ced(curves, path, alpha=0.1, title="WFLW test")
    assert out == path and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    path.write_bytes(b"old")
    plot_ced({"only": [0.01, 0.02]}, path)
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert os.listdir(path.parent) == ["ced.png"]  # no temporary left behind


def test_paired_difference_on_hand_checked_cases():
    from glsr.train.metrics import paired_difference

    ref = [0.03, 0.04, 0.05, 0.06]
    same = paired_difference(ref, ref)
    assert same["mean"] == 0 and same["low"] == 0 and same["high"] == 0 and same["better"] == 0
    shifted = paired_difference([e + 0.01 for e in ref], ref)      # a constant shift: no spread to resample
    assert shifted["mean"] == pytest.approx(0.01) and shifted["low"] == pytest.approx(0.01)
    assert shifted["high"] == pytest.approx(0.01) and shifted["faces"] == 4
    # differences -0.02 and +0.02 on two faces: mean 0; a bootstrap mean is -0.02, 0 or +0.02 (1/4, 1/2, 1/4)
    mixed = paired_difference([0.01, 0.05], [0.03, 0.03], rounds=20000)
    assert mixed["mean"] == pytest.approx(0) and mixed["better"] == 1
    assert mixed["low"] == pytest.approx(-0.02) and mixed["high"] == pytest.approx(0.02)
    with pytest.raises(ValueError, match="same faces"):
        paired_difference([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="finite"):
        paired_difference([0.1, float("nan")], [0.1, 0.2])
