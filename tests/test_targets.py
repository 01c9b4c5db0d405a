"""Algorithm 1 (theta*_g), the mean shape, theta*_l and frame mappings on hand-computed cases."""
from __future__ import annotations

import numpy as np
import torch

from glsr import geometry as geo
from glsr.schemes import get_scheme
from glsr.train import targets as tg

SQUARE = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [0.0, 0.5]])  # tight box [-1, 1]^2


def rot(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def test_theta_g_for_a_scaled_translated_reference_is_hand_computable():
    # S* = 0.25 * S_ref + (0.1, 0.2): the face frame is S*'s region x margin -> theta = [[0.25 m, 0, .1], [0, .25 m, .2]]
    margin = 1.2
    shape = 0.25 * SQUARE + np.array([0.1, 0.2])
    theta = tg.global_theta_target(shape, SQUARE, margin)
    np.testing.assert_allclose(theta, [[0.3, 0.0, 0.1], [0.0, 0.3, 0.2]], atol=1e-12)


def test_theta_g_undoes_rotation_and_maps_gt_onto_reference_over_margin():
    margin = 1.25
    lin = 0.4 * rot(20.0)
    shape = SQUARE @ lin.T + np.array([-0.05, 0.1])
    theta = tg.global_theta_target(shape, SQUARE, margin)
    np.testing.assert_allclose(theta[:, :2], lin * margin, atol=1e-12)
    np.testing.assert_allclose(theta[:, 2], [-0.05, 0.1], atol=1e-12)
    # Eq. 4 with theta*: the GT lands on the reference, shrunk into the face frame by the margin
    s_g = geo.apply_affine(geo.invert_affine(theta), shape)
    np.testing.assert_allclose(s_g, SQUARE / margin, atol=1e-12)


def test_theta_g_crops_the_warped_shape_region_with_anisotropic_scale():
    # affine fit to a reference whose own box is not the unit square: step 3 re-crops S_1's tight box
    ref = SQUARE * np.array([1.0, 0.5])        # tight box [-1, 1] x [-0.5, 0.5]
    shape = ref * 2.0 + 3.0                    # loc-frame GT (units do not matter)
    theta = tg.global_theta_target(shape, ref, margin=1.0)
    # the face frame is S*'s own tight box [1, 5] x [2, 4]: x = 2 u + 3, y = 1 v + 3
    np.testing.assert_allclose(theta, [[2.0, 0.0, 3.0], [0.0, 1.0, 3.0]], atol=1e-12)


def test_step4_fit_equals_inverse_of_steps_1_to_3_for_a_non_affine_shape():
    rng = np.random.default_rng(0)
    ref = rng.uniform(-1, 1, (20, 2))
    shape = ref @ (0.3 * rot(-7.0)).T + rng.normal(0, 0.02, ref.shape)   # noisy: not an exact affine image
    for transform in ("affine", "similarity"):
        theta = tg.global_theta_target(shape, ref, 1.2, transform)
        inv = geo.invert_affine(tg.face_from_loc_target(shape, ref, 1.2, transform))
        np.testing.assert_allclose(theta, inv, atol=1e-10)
        # the target face frame holds the GT's warped region exactly: tight box = [-1/margin, 1/margin]^2
        s_g = geo.apply_affine(geo.invert_affine(theta), shape)
        np.testing.assert_allclose(geo.tight_box(s_g), [-1 / 1.2, -1 / 1.2, 1 / 1.2, 1 / 1.2], atol=1e-9)


def test_mean_shape_in_face_frame_and_loc_frame():
    margin = 1.2
    shapes = np.stack([SQUARE @ (s * rot(a)).T + t for s, a, t in ((0.3, 5, (0.1, 0.0)), (0.5, -8, (0, -0.2)))])
    np.testing.assert_allclose(tg.mean_shape(shapes, SQUARE, margin, reinit=True), SQUARE / margin, atol=1e-12)
    np.testing.assert_allclose(tg.mean_shape(shapes, SQUARE, margin, reinit=False), shapes.mean(0))


def test_reference_shape_removes_similarity_and_is_symmetric():
    s = get_scheme("68")
    rng = np.random.default_rng(1)
    base = tg.box_normalize(rng.uniform(-1, 1, (68, 2)))
    base = tg.box_normalize(0.5 * (base + tg.mirror_shape(base, s)))      # a left-right symmetric face
    shapes = np.stack([base @ (k * rot(a)).T + t for k, a, t in ((50, 10, (100, 80)), (80, -15, (30, 60)),
                                                                  (120, 0, (300, 200)))])
    ref = tg.reference_shape(shapes, s, iterations=5, symmetric=True)
    np.testing.assert_allclose(ref, base, atol=1e-6)
    np.testing.assert_allclose(tg.mirror_shape(ref, s), ref, atol=1e-12)
    np.testing.assert_allclose(ref.min(0), [-1, -1])
    np.testing.assert_allclose(ref.max(0), [1, 1])


def test_fit_affine_matches_numpy_least_squares():
    rng = np.random.default_rng(2)
    src = rng.normal(size=(9, 2))
    dst = rng.normal(size=(3, 9, 2))
    for sim in (False, True):
        got = tg.fit_affine(torch.tensor(src), torch.tensor(dst), similarity=sim).numpy()
        want = np.stack([geo.affine_from_points(src, d, similarity=sim) for d in dst])
        np.testing.assert_allclose(got, want, atol=1e-10)


def test_local_theta_targets_recover_the_predefined_patches_and_follow_the_parts():
    s = get_scheme("68")
    rng = np.random.default_rng(3)
    mean = rng.uniform(-0.7, 0.7, (68, 2))
    margin = 1.4
    templates = [torch.tensor(t) for t in tg.part_templates(mean, s, margin)]
    init = np.stack(tg.part_init_thetas(mean, s, margin))
    shape = torch.tensor(mean)[None].float()
    theta = tg.local_theta_targets(shape, templates, s).double().numpy()[0]
    np.testing.assert_allclose(theta, init, atol=1e-6)           # GT = mean shape -> the pre-defined patches
    # moving and scaling the face moves / scales every patch the same way
    moved = torch.tensor(2.0 * mean + np.array([0.1, -0.3]))[None]
    theta2 = tg.local_theta_targets(moved, templates, s, transform="affine").numpy()[0]
    np.testing.assert_allclose(theta2[:, :, :2], 2.0 * init[:, :, :2], atol=1e-9)
    np.testing.assert_allclose(theta2[:, :, 2], 2.0 * init[:, :, 2] + np.array([0.1, -0.3]), atol=1e-9)


def test_to_frame_and_local_shape_targets():
    theta = torch.tensor([[[2.0, 0.0, 1.0], [0.0, 2.0, -1.0]]])          # src = 2 dst + (1, -1)
    pts = torch.tensor([[[3.0, 3.0], [1.0, -1.0]]])
    np.testing.assert_allclose(tg.to_frame(theta, pts).numpy(), [[[1.0, 2.0], [0.0, 0.0]]])
    s = get_scheme("68")
    shape = torch.randn(2, 68, 2)
    theta_l = torch.tensor([[[0.5, 0.0, 0.1], [0.0, 0.5, 0.2]]]).expand(2, 4, 2, 3)
    out = tg.local_shape_targets(theta_l, shape, s)
    for part, o in zip(s.parts, out):
        np.testing.assert_allclose(o.numpy(), ((shape[:, list(part)] - torch.tensor([0.1, 0.2])) / 0.5).numpy(),
                                   atol=1e-6)
