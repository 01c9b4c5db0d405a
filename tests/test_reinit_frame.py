"""The forward-pixel reinit frame: the same raw theta frames the same face at every face size, and checkpoints written
with the version-1 frame (``int(face_size / loc_size)``) are rewritten on reading so that they compute what they did."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from glsr import geometry as geo
from glsr.models import create_model, load_checkpoint, save_checkpoint
from glsr.models.checkpoint import CHECKPOINT_VERSION, REINIT_OUTPUT, read_checkpoint
from glsr.models.reinit import forward_pixel_right

FAST = dict(input_size=272, loc_size=128, face_size=136, part_size=40, theta_mode="forward_pixel")
"""The shipped small-fast's geometry: 136 / 128 is not whole."""


def face_span(face_size: int, loc_size: int = 128, legacy: bool = False) -> float:
    """Width, in the authors' loc-sized destination pixels, of the face image (normalized -1 .. 1)."""
    right = forward_pixel_right(loc_size, face_size / loc_size, legacy)
    ends = geo.apply_affine(right, np.array([[-1.0, 0.0], [1.0, 0.0]]))
    return float(ends[1, 0] - ends[0, 0])


def test_the_frame_does_not_depend_on_the_face_size():
    for face in (136, 160, 200, 256, 384):
        assert face_span(face) == pytest.approx(128.0)
    assert face_span(256, legacy=True) == pytest.approx(128.0)                 # whole ratio: unchanged
    assert face_span(136, legacy=True) / face_span(136) == pytest.approx(128 / 136)   # the old 0.94x face
    assert face_span(160, legacy=True) / face_span(160) == pytest.approx(0.8)


def legacy_thetas(model, raw: torch.Tensor) -> torch.Tensor:
    """What the version-1 adapter made of raw outputs ``[B, 6]``: ``N_src ∘ inv(A) ∘ R_legacy``."""
    cfg = model.cfg
    a = raw.double().reshape(-1, 2, 3) * torch.tensor([1.0, 1.0, 128.0], dtype=torch.float64)
    left = torch.tensor(geo.norm_from_pixel(cfg.loc_size), dtype=torch.float64)
    right = torch.tensor(forward_pixel_right(cfg.loc_size, cfg.face_size / cfg.loc_size, legacy=True))
    inv = geo.invert_theta(a)
    return geo.compose_theta(geo.compose_theta(left.expand_as(inv), inv), right.expand_as(inv))


def _randomize_reinit_output(model, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    layer = model.reinit.fc_loc[2]
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.02)
        layer.bias.add_(torch.randn(6, generator=g) * torch.tensor([0.05, 0.05, 0.1, 0.05, 0.05, 0.1]))


def test_a_version_1_file_is_rewritten_to_the_thetas_it_computed(tmp_path):
    torch.manual_seed(0)
    model = create_model("small", "68", **FAST).eval()
    _randomize_reinit_output(model)
    loc = torch.randn(3, 3, 128, 128)
    with torch.no_grad():
        hidden = model.reinit.fc_loc[:2](torch.flatten(model.reinit.localization(loc), 1))
        expected = legacy_thetas(model, model.reinit.fc_loc[2](hidden))
    path = tmp_path / "v1.pt"
    save_checkpoint(model, path)
    ck = torch.load(path, weights_only=True)
    ck["version"] = 1
    torch.save(ck, path)

    upgraded = load_checkpoint(path)
    with torch.no_grad():
        got = upgraded.reinit(loc).double()
    assert (got - expected).abs().max() < 2e-6

    # the whole chain: landmarks equal those of the stored weights through the version-1 frame
    cfg = model.cfg
    model.reinit.adapter.right.copy_(torch.tensor(forward_pixel_right(cfg.loc_size, cfg.face_size / cfg.loc_size,
                                                                      legacy=True), dtype=torch.float32))
    crops = torch.randn(2, 3, cfg.input_size, cfg.input_size)
    with torch.no_grad():
        assert (upgraded(crops) - model(crops)).abs().max() < 1e-3     # crop pixels, float32 through GridSamples
    key = f"{REINIT_OUTPUT}.weight"
    assert not torch.allclose(upgraded.state_dict()[key], model.state_dict()[key])
    assert read_checkpoint(path)["version"] == CHECKPOINT_VERSION

    # written again it is a current file: reading it changes nothing more
    again = tmp_path / "v2.pt"
    save_checkpoint(upgraded, again)
    a, b = upgraded.state_dict(), load_checkpoint(again).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_version_1_file_with_a_whole_ratio_is_read_unchanged(tmp_path):
    torch.manual_seed(1)
    model = create_model("small", "68", input_size=256, loc_size=128, face_size=128, part_size=32,
                         theta_mode="forward_pixel").eval()
    _randomize_reinit_output(model)
    path = tmp_path / "v1.pt"
    save_checkpoint(model, path)
    ck = torch.load(path, weights_only=True)
    ck["version"] = 1
    torch.save(ck, path)
    a, b = model.state_dict(), load_checkpoint(path).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
