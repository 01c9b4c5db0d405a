"""Eq. 3, Eq. 5/6 and Eq. 8-9 on hand-computed cases."""
from __future__ import annotations

import math

import pytest
import torch

from glsr.schemes import get_scheme
from glsr.train.losses import ShapeLoss, adaptive_weights, interocular, stn_loss, weighted_l1


def test_stn_loss_is_squared_frobenius_distance_averaged_over_batch():
    theta_hat = torch.tensor([[[1.0, 0.0, 0.1], [0.0, 1.0, -0.2]],
                              [[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]])
    theta_star = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
                               [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    # sample 0: 0.1^2 + 0.2^2 = 0.05 ; sample 1: 0.5^2 + 0.5^2 = 0.5 ; mean = 0.275
    assert stn_loss(theta_hat, theta_star).item() == pytest.approx(0.275)
    # local thetas [B, P, 2, 3]: all parts of a sample are summed
    local_hat = torch.stack([theta_hat, theta_hat], dim=1)
    local_star = torch.stack([theta_star, theta_star], dim=1)
    assert stn_loss(local_hat, local_star).item() == pytest.approx(2 * 0.275)


def test_shape_increment_l1_eq5_hand_computed():
    init = torch.tensor([[0.0, 0.0], [1.0, 1.0]])                  # S_g0
    pred = torch.tensor([[[0.1, 0.0], [1.0, 1.3]]])                # S_g hat
    target = torch.tensor([[[0.0, 0.2], [1.0, 1.0]]])              # S_g*
    d = torch.tensor([2.0])
    # |dS_hat - dS*| = |0.1| + |-0.2| + 0 + |0.3| = 0.6 ; / d = 0.3
    assert weighted_l1(pred, target, init, d).item() == pytest.approx(0.3)
    # mean reduction divides by the 4 coordinates
    assert weighted_l1(pred, target, init, d, reduction="mean").item() == pytest.approx(0.075)
    # Eq. 6: no normaliser
    assert weighted_l1(pred, target, init).item() == pytest.approx(0.6)


def test_weighted_l1_batch_mean_and_weights():
    pred = torch.tensor([[[1.0, 2.0]], [[0.0, 0.0]]])
    target = torch.zeros(2, 1, 2)
    d = torch.tensor([1.0, 4.0])
    w = torch.tensor([[[0.5, 0.25]], [[1.0, 1.0]]])
    # sample 0: 0.5*1 + 0.25*2 = 1.0 ; sample 1: 0 -> mean 0.5
    assert weighted_l1(pred, target, None, d, w).item() == pytest.approx(0.5)


def test_adaptive_weights_formula():
    # one coordinate over a batch of 4 errors z = 0, 1, 2, 5 -> mu = 2, sigma = sqrt((4+1+0+9)/4) = sqrt(3.5)
    z = torch.tensor([0.0, 1.0, 2.0, 5.0]).reshape(4, 1, 1)
    w = adaptive_weights(z).reshape(-1)
    sigma = math.sqrt(3.5)
    expected = [math.exp(-sigma * abs(v - 2.0)) for v in (0.0, 1.0, 2.0, 5.0)]
    assert w.tolist() == pytest.approx(expected)
    assert w[2].item() == pytest.approx(1.0)   # at the batch mean the weight is 1
    # statistics are per coordinate: a constant coordinate gets weight 1 everywhere
    z2 = torch.stack([torch.tensor([0.0, 1.0, 2.0, 5.0]), torch.full((4,), 3.0)], dim=-1).reshape(4, 1, 2)
    w2 = adaptive_weights(z2)
    assert torch.equal(w2[..., 1], torch.ones(4, 1))
    assert w2[..., 0].reshape(-1).tolist() == pytest.approx(expected)


def test_unit_weights_give_plain_l1():
    torch.manual_seed(0)
    pred, target = torch.randn(5, 7, 2), torch.randn(5, 7, 2)
    init, d = torch.randn(7, 2), torch.rand(5) + 0.5
    plain = weighted_l1(pred, target, init, d)
    assert torch.equal(weighted_l1(pred, target, init, d, torch.ones(5, 7, 2)), plain)
    assert torch.equal(ShapeLoss("l1")(pred, target, init, d), plain)
    # a batch whose normalized errors are identical for every sample has sigma = 0 -> w = 1 -> adaptive == L1
    same_pred = target + torch.randn(1, 7, 2)
    same_d = torch.full((5,), 0.7)
    assert torch.equal(ShapeLoss("adaptive").weights(same_pred, target, init, same_d), torch.ones(5, 7, 2))
    assert ShapeLoss("adaptive")(same_pred, target, init, same_d).item() == pytest.approx(
        weighted_l1(same_pred, target, init, same_d).item(), rel=1e-6)


def test_adaptive_loss_matches_hand_computation():
    # two samples, one point, errors in x: 0.0 and 2.0 ; y errors 0 -> y weights 1
    pred = torch.tensor([[[0.0, 0.0]], [[2.0, 0.0]]])
    target = torch.zeros(2, 1, 2)
    # mu = 1, sigma = 1 -> w = exp(-1) for both samples in x
    loss = ShapeLoss("adaptive")(pred, target)
    assert loss.item() == pytest.approx((0.0 + math.exp(-1.0) * 2.0) / 2)
    # error_scale multiplies z: z = 0, 4 -> mu 2, sigma 2 -> w = exp(-4)
    loss = ShapeLoss("adaptive", error_scale=2.0)(pred, target)
    assert loss.item() == pytest.approx((math.exp(-4.0) * 2.0) / 2)


def test_no_gradient_flows_through_the_weights():
    torch.manual_seed(1)
    pred = torch.randn(6, 5, 2, requires_grad=True)
    target = torch.randn(6, 5, 2)
    loss_fn = ShapeLoss("adaptive")
    loss = loss_fn(pred, target)
    loss.backward()
    w = loss_fn.weights(pred, target)
    assert not w.requires_grad
    # d/dpred of mean_b sum w |pred - target| with w constant = w * sign(pred - target) / B
    expected = w * torch.sign(pred.detach() - target) / pred.shape[0]
    assert torch.allclose(pred.grad, expected, atol=1e-7)


def test_parts_sum_and_interocular():
    s = get_scheme("68")
    shape = torch.zeros(2, 68, 2)
    shape[:, 36] = torch.tensor([10.0, 5.0])
    shape[:, 45] = torch.tensor([40.0, 45.0])
    assert interocular(shape, s).tolist() == pytest.approx([50.0, 50.0])
    loss = ShapeLoss("l1")
    p = [torch.ones(2, 3, 2), torch.zeros(2, 1, 2)]
    t = [torch.zeros(2, 3, 2), torch.ones(2, 1, 2)]
    assert loss.parts(p, t, [None, None]).item() == pytest.approx(6.0 + 2.0)
