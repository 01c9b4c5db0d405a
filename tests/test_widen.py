"""Widening a trained narrow MobileNetV2 regressor into a wider, deeper one (``small`` -> ``medium`` start)."""
import pytest
import torch

from glsr.models import create_model, save_checkpoint
from glsr.models.backbones import MobileNetV2Regressor
from glsr.models.widen import embed, widen_features
from glsr.train.trainer import load_init_weights

NARROW = ((6, 8, 1, 1), (6, 12, 2, 2), (6, 16, 1, 2))
WIDE = ((6, 16, 1, 1), (6, 24, 3, 2), (6, 40, 1, 1))   # row 0 and 1 correspond, row 2's stride does not


def randomized(module: torch.nn.Module) -> torch.nn.Module:
    """BatchNorm layers with non-trivial statistics and affine terms, so that a copy error shows."""
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return module


def test_embed_zeroes_new_inputs_of_old_outputs_only():
    dst = torch.ones(4, 3, 1, 1)
    out = embed(dst, torch.full((2, 2, 1, 1), 5.0))
    assert out[:2, :2].eq(5).all() and out[:2, 2:].eq(0).all() and out[2:].eq(1).all()
    depthwise = embed(torch.ones(4, 1, 3, 3), torch.full((2, 1, 3, 3), 5.0))
    assert depthwise[:2].eq(5).all() and depthwise[2:].eq(1).all()
    with pytest.raises(ValueError, match="cannot embed"):
        embed(torch.ones(2, 2), torch.ones(3, 2))


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_widened_trunk_computes_the_narrow_trunk_on_its_first_channels(mode):
    torch.manual_seed(0)
    narrow = randomized(MobileNetV2Regressor(10, NARROW, 8, 16, 32, 64))
    wide = randomized(MobileNetV2Regressor(10, WIDE, 16, 16, 32, 64))
    tensors, report = widen_features(narrow.state_dict(), narrow.stages, narrow.stem, wide)
    assert report == {"rows": 2, "copied": 3, "identity": 1, "bridged_residual": [], "dropped_residual": []}
    wide.load_state_dict(tensors, strict=False)
    getattr(narrow, mode)()
    getattr(wide, mode)()
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        a = narrow.features[:4](x)   # stem, row 0 (1 block), row 1 (2 blocks)
        b = wide.features[:5](x)     # stem, row 0 (1 block), row 1 (3 blocks, the last an identity)
    assert b.shape[1] == 24 and torch.allclose(a, b[:, :12], atol=1e-5)
    extra = wide.features[4].conv[-1]
    assert extra.weight.eq(0).all() and extra.bias.eq(0).all()


def test_small_into_medium_through_init(tmp_path):
    torch.manual_seed(1)
    small = create_model("small", "68")
    randomized(small.regress)
    save_checkpoint(small, tmp_path / "small.pt")
    medium = create_model("medium", "68")
    rep = load_init_weights(medium, tmp_path / "small.pt")
    # six rows of the two tables correspond; medium's rows 3 and 4 have one more repeat each; small's first block
    # has a skip connection (8 -> 8 channels) that medium's (32 -> 16) lacks: rebuilt through spare channels
    assert rep["widened"] == {"from": "small_mnv2", "rows": 6, "copied": 14, "identity": 2, "bridged_residual": [1],
                              "dropped_residual": []}
    src, dst = small.state_dict(), medium.state_dict()
    reinit = [k for k in dst if k.startswith("reinit.")]
    assert reinit and all(torch.equal(dst[k], src[k]) for k in reinit)
    # small's row 5 third block (features 13) is medium's features 15 (two extra repeats before it)
    assert torch.equal(dst["regress.features.15.conv.0.weight"][:288, :48], src["regress.features.13.conv.0.weight"])
    assert dst["regress.features.15.conv.0.weight"][:288, 48:].eq(0).all()
    # the trunk computes small's trunk exactly in eval mode, closely in train mode (batch statistics)
    x = torch.randn(4, 3, 256, 256)
    errors = {}
    for mode in ("eval", "train"):
        getattr(small, mode)()
        getattr(medium, mode)()
        with torch.no_grad():
            a, b = small.regress.features[:14](x), medium.regress.features[:16](x)[:, :48]
        errors[mode] = float((a - b).norm() / a.norm())
    assert errors["eval"] < 1e-5 and errors["train"] < 0.25, errors
    # the other way (medium into small) is no widening: the tensors that fit by name and shape copy as before
    back = load_init_weights(create_model("small", "68"), _saved(medium, tmp_path / "medium.pt"))
    assert "widened" not in back and back["copied"] > 0


def _saved(model: torch.nn.Module, path):
    save_checkpoint(model, path)
    return path

