"""Model family: shapes and frames of every variant, sampler agreement, export-friendliness, checkpoints."""
import numpy as np
import pytest
import torch

from glsr import geometry as geo
from glsr.models import create_model, list_variants, load_checkpoint, save_checkpoint
from glsr.models.checkpoint import read_checkpoint
from glsr.schemes import get_scheme


def random_mean(n, seed=0):
    return np.random.default_rng(seed).uniform(-0.6, 0.6, (n, 2))


def jitter(model, scale=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


@pytest.mark.parametrize("variant", ["small", "b1", "b2", "gsr"])
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


@pytest.mark.parametrize("variant", ["medium", "large"])
def test_big_variants_forward(variant):
    m = create_model(variant, "68", mean_shape=random_mean(68)).eval()
    with torch.no_grad():
        assert m(torch.zeros(1, 3, 384, 384)).shape == (1, 68, 2)


@pytest.mark.parametrize("variant", ["b1", "gsr", "small", "b2"])
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


@pytest.mark.parametrize("variant", ["small", "b2"])
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
    with pytest.raises(ValueError, match="registered: small, medium, large, b1, b2, gsr"):
        create_model("tiny", "68")
    with pytest.raises(ValueError, match="mean shape must be"):
        create_model("b1", "68", mean_shape=np.zeros((98, 2)))
    assert list_variants() == ("small", "medium", "large", "b1", "b2", "gsr")


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
