"""Model family: shapes and frames of every variant, sampler agreement, export-friendliness, checkpoints."""
import warnings

import numpy as np
import pytest
import torch

from glsr import geometry as geo
from glsr.models import create_model, get_variant, list_variants, load_checkpoint, save_checkpoint
from glsr.models import network
from glsr.models.checkpoint import read_checkpoint
from glsr.schemes import get_scheme
from support import SMALL, jitter


def random_mean(n, seed=0):
    return np.random.default_rng(seed).uniform(-0.6, 0.6, (n, 2))


@pytest.mark.parametrize("variant", list_variants())
@pytest.mark.parametrize("scheme", ["68", "98", "19"])
def test_every_variant_builds_for_every_scheme(variant, scheme):
    n = get_scheme(scheme).num_points
    m = create_model(variant, scheme, mean_shape=random_mean(n), input_size=192, face_size=128, loc_size=128,
                     part_size=32).eval()
    with torch.no_grad():
        out = m(torch.zeros(2, 3, 192, 192), intermediates=True)
    assert out["landmarks"].shape == (2, n, 2)
    assert out["theta_g"].shape == (2, 2, 3)
    if m.cfg.local:
        assert out["theta_l"].shape == (2, 4, 2, 3)
        assert [t.shape[1] for t in out["local_shape"]] == list(get_scheme(scheme).part_sizes)


@pytest.mark.parametrize("variant", list_variants())
def test_every_variant_runs_at_its_own_input_size(variant):
    m = create_model(variant, "68", mean_shape=random_mean(68)).eval()
    s = m.cfg.input_size
    with torch.no_grad():
        assert m(torch.zeros(1, 3, s, s)).shape == (1, 68, 2)
    with pytest.raises(ValueError, match=f"expects normalized crops \\[B, 3, {s}, {s}\\]"):
        m(torch.zeros(1, 3, s // 2, s // 2))  # a crop of another size would give wrong landmarks silently


@pytest.mark.parametrize("variant", list_variants())
def test_untrained_model_returns_mean_shape_in_the_box_frame(variant):
    """At initialization every stage is the identity, so the output is the mean shape placed by the frames.

    A point u of the normalized loc frame lies at loc pixel (u + 1) L / 2 - 0.5; loc pixels 0 and L-1 are the
    corners of the box enlarged by box_scale (geometry's crop convention).
    """
    mean = random_mean(68, 3) * 0.8
    m = create_model(variant, "68", mean_shape=mean).eval()
    cfg = m.cfg
    box = np.array([40.0, 60.0, 240.0, 300.0])
    crop_from_image = geo.crop_from_image(box, cfg.input_size, cfg.crop_enlarge)
    with torch.no_grad():
        out = m(torch.zeros(1, 3, cfg.input_size, cfg.input_size)).numpy()[0]
    got = geo.uncrop_points(out, crop_from_image)
    x1, y1, x2, y2 = geo.enlarge_box(box, cfg.box_scale)
    loc_px = (mean + 1) * cfg.loc_size / 2 - 0.5
    expected = np.stack([x1 + loc_px[:, 0] * (x2 - x1) / (cfg.loc_size - 1),
                         y1 + loc_px[:, 1] * (y2 - y1) / (cfg.loc_size - 1)], 1)
    assert np.abs(got - expected).max() < 1e-3


def test_local_stage_initial_patches_frame_each_part():
    mean = random_mean(98, 5) * 0.8
    m = create_model("small", "98", mean_shape=mean).eval()
    with torch.no_grad():
        out = m(torch.zeros(1, 3, 384, 384), intermediates=True)
    for init, part in zip(out["local_init"], get_scheme("98").parts):
        # points of the part span +-1/part_margin along the longer axis of the part box
        assert abs(init.abs().amax().item() - 1 / m.cfg.part_margin) < 1e-5
    assert torch.allclose(out["shape_face"], out["shape_g"], atol=1e-6)  # zero-initialized local heads


@pytest.mark.parametrize("variant", ["small", "b2"])  # every resampling step: STN, local patches; the cascade
def test_gather_sampler_matches_grid_sample_through_the_whole_chain(variant):
    m = jitter(create_model(variant, "68", mean_shape=random_mean(68))).eval()
    x = torch.randn(2, 3, 384, 384)
    with torch.no_grad():
        a = m(x)
        b = m.set_sampler("gather")(x)
    assert (a - b).abs().max().item() < 1e-3  # pixels
    with pytest.raises(ValueError, match="unknown sampler"):
        m.set_sampler("nearest")


def test_traced_graph_has_no_affine_grid_generator():
    kw = dict(mean_shape=random_mean(68), input_size=192, face_size=128, part_size=32)
    m = create_model("small", "68", **kw).eval()
    x = torch.zeros(1, 3, 192, 192)
    nodes = [n.kind() for n in torch.jit.trace(m, x, check_trace=False).inlined_graph.nodes()]
    assert "aten::affine_grid_generator" not in nodes
    # loc crop, face, and the four part patches in one call; no batched matmul (a While loop in MNN)
    assert nodes.count("aten::grid_sampler") == 3
    assert not {"aten::matmul", "aten::bmm"} & set(nodes)
    kinds = {n.kind() for n in torch.jit.trace(m.set_sampler("gather"), x, check_trace=False).inlined_graph.nodes()}
    assert "aten::grid_sampler" not in kinds and "aten::index_select" in kinds


def test_the_input_check_stays_out_of_a_trace():
    """The crop-size check must not branch on traced shapes (``Converting a tensor to a Python boolean might cause
    the trace to be incorrect``): while tracing, the example input fixes the shape, and the graph stays static."""
    m = create_model("small", "68", mean_shape=random_mean(68), **SMALL).eval()
    x = torch.zeros(1, 3, SMALL["input_size"], SMALL["input_size"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.jit.trace(m, x, check_trace=False)
    from_network = [f"{w.filename}:{w.lineno}: {w.message}" for w in caught
                    if issubclass(w.category, torch.jit.TracerWarning) and w.filename == network.__file__]
    assert not from_network


def test_create_model_applies_overrides_to_a_config_as_to_a_name():
    cfg = get_variant("gsr")
    by_config = create_model(cfg, "68", input_size=192, face_size=128)
    assert by_config.cfg == create_model("gsr", "68", input_size=192, face_size=128).cfg
    assert (by_config.cfg.input_size, by_config.cfg.face_size) == (192, 128)
    assert create_model(cfg, "68").cfg == cfg and cfg.input_size == 384   # the registered config is untouched


def test_checkpoint_round_trip_and_errors(tmp_path):
    m = jitter(create_model("small", "68", mean_shape=random_mean(68))).eval()
    path = tmp_path / "m.pt"
    save_checkpoint(m, path, extra={"note": "x"})
    m2 = load_checkpoint(path)
    x = torch.randn(1, 3, 384, 384)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))
    assert read_checkpoint(path)["extra"]["note"] == "x"
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a glsr checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_unknown_variant_and_bad_mean_shape():
    with pytest.raises(ValueError, match="registered: " + ", ".join(list_variants())):
        create_model("tiny", "68")
    with pytest.raises(ValueError, match="mean shape must be"):
        create_model("b1", "68", mean_shape=np.zeros((98, 2)))
    assert {"small", "medium", "large"} <= set(list_variants())  # the paper's three sizes, shipped and benchmarked


def test_default_mean_shape_is_the_template_in_the_box():
    m = create_model("gsr", "68")
    ms = m.mean_shape.numpy()
    assert ms.shape == (68, 2)
    # the template face lies inside the detector box, i.e. within +-1/box_scale of the loc frame
    assert np.abs(ms).max() <= 1 / m.cfg.box_scale + 1e-6


@pytest.mark.parametrize("sampler", ["gridsample", "gather"])
def test_batch_items_are_independent(sampler):
    """The part patches of a batch are resampled in one call (grids stacked per item): each face's landmarks
    must equal those it gets alone."""
    torch.manual_seed(0)
    m = jitter(create_model("small", "68", mean_shape=random_mean(68), input_size=192, face_size=128, part_size=32),
               scale=0.03, seed=1).eval()
    x = torch.randn(3, 3, 192, 192, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        m.set_sampler(sampler)
        together = m(x)
        alone = torch.cat([m(x[i:i + 1]) for i in range(3)])
    assert (together - alone).abs().max().item() < 1e-3                   # pixels
    assert (together[0] - together[1]).abs().max().item() > 0.1          # and the faces differ


def test_flatten_head_adapts_to_a_smaller_input_exactly_on_repeated_feature_maps():
    """A head trained on an S x S feature map, re-laid out for s x s (S = 2 s), gives the same outputs when the
    large map repeats each small cell 2 x 2 times; shapes that do not relate that way are refused."""
    from glsr.models.backbones import MobileNetV2Regressor

    stages = ((1, 8, 1, 2), (2, 16, 1, 2))
    torch.manual_seed(0)
    big = MobileNetV2Regressor(10, stages, stem=8, last=12, fc=32, input_size=64)
    fast = MobileNetV2Regressor(10, stages, stem=8, last=12, fc=32, input_size=32)
    assert big.feature_shape == (12, 8, 8) and fast.feature_shape == (12, 4, 4)
    w = fast.adapt_input_weight(big.pts_net[0].weight.detach())
    fast.pts_net[0].weight.data.copy_(w)
    fast.pts_net[0].bias.data.copy_(big.pts_net[0].bias.detach())
    for i in (2, 4):
        fast.pts_net[i].load_state_dict(big.pts_net[i].state_dict())
    fast.pts_net[1].load_state_dict(big.pts_net[1].state_dict())
    fast.pts_net[3].load_state_dict(big.pts_net[3].state_dict())
    small_map = torch.randn(2, 12, 4, 4)
    big_map = small_map.repeat_interleave(2, 2).repeat_interleave(2, 3)
    with torch.no_grad():
        torch.testing.assert_close(fast.pts_net(torch.flatten(small_map, 1)), big.pts_net(torch.flatten(big_map, 1)),
                                   rtol=1e-5, atol=1e-5)
    assert fast.adapt_input_weight(torch.zeros(32, 12 * 6 * 6)) is None   # 6 is not a multiple of 4
    assert big.adapt_input_weight(torch.zeros(32, 12 * 3 * 3)) is None    # 8 is not a multiple of 3


def test_flatten_head_spreads_onto_a_larger_map_as_its_average_pool():
    """A head trained on an s x s map, spread onto S x S (S = 2 s, the next variant up), reads the larger map as
    the source head read its 2 x 2 average pool: the same outputs on any map, not only on repeated cells."""
    import torch.nn.functional as F
    from glsr.models.backbones import MobileNetV2Regressor

    stages = ((1, 8, 1, 2), (2, 16, 1, 2))
    torch.manual_seed(0)
    big = MobileNetV2Regressor(10, stages, stem=8, last=12, fc=32, input_size=64)
    fast = MobileNetV2Regressor(10, stages, stem=8, last=12, fc=32, input_size=32)
    w = big.adapt_input_weight(fast.pts_net[0].weight.detach())
    assert w.shape == big.pts_net[0].weight.shape
    big.pts_net[0].weight.data.copy_(w)
    for i in range(len(fast.pts_net)):
        if i:
            big.pts_net[i].load_state_dict(fast.pts_net[i].state_dict())
    big.pts_net[0].bias.data.copy_(fast.pts_net[0].bias.detach())
    big_map = torch.randn(2, 12, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(big.pts_net(torch.flatten(big_map, 1)),
                                   fast.pts_net(torch.flatten(F.avg_pool2d(big_map, 2), 1)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("face, part", [(160, 48), (136, 40), (200, 56)])
def test_sizes_that_are_not_powers_of_two_build_and_run(face, part):
    """Strided 3x3 convolutions round up (ceil(n / 2)); the flatten heads must be sized the same way. A 160 px
    face keeps the 2 x 2 feature map of the 256 px one, so a 256 px model's head transfers unchanged."""
    from glsr.models.backbones import strided_size

    assert [strided_size(n, 2) for n in (160, 80, 5, 3, 1)] == [80, 40, 3, 2, 1]
    model = create_model("small", "68", input_size=2 * face, face_size=face, part_size=part).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 2 * face, 2 * face))
        feats = model.regress.features(torch.zeros(1, 3, face, face))
    assert out.shape == (1, 68, 2) and tuple(feats.shape[1:]) == model.regress.feature_shape
    assert model.regress.feature_shape == create_model("small", "68").regress.feature_shape == (64, 2, 2)
