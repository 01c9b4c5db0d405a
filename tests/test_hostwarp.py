"""Host-warp mode: the host's loc / face frames equal the graph's, the two-graph ONNX / MNN artifacts round-trip
through Predictor and parity, bad requests are refused, and on real faces it scores as the single graph does."""
import numpy as np
import pytest
import torch

from glsr import geometry as geo
from glsr.export import export_model
from glsr.formats import read_metadata
from glsr.models.hostwarp import graph_io, host_warp_spec, numpy_runner
from glsr.runtime.hostwarp import assemble_local, face_batch, loc_batch, part_batch, run_host_warp
from glsr.runtime.predictor import Predictor
from glsr.runtime.processing import crop_batch, metadata_for
from support import jittered

from conftest import SHARED

pytestmark = pytest.mark.usefixtures("flush_denormals")
DATA_300W = SHARED / "data" / "300w"


@pytest.fixture(scope="module")
def meta(model):
    return metadata_for(model, host_warp=host_warp_spec(model), batch="dynamic")


def ramp_image(h: int = 300, w: int = 320) -> np.ndarray:
    """A smooth image (linear in x and y per channel): resampling it once or twice gives the same values, so the
    host's single warp and the graph's crop-then-resample can be compared pixel for pixel."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([0.4 * x + 0.2 * y + 10, 0.1 * x + 0.5 * y + 30, 0.3 * x + 0.3 * y + 20], axis=-1)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def test_host_frames_equal_the_graph_frames(model, meta):
    """The loc image, the face and the part patches the host warps from the photo are the graph's own (same
    theta_g, same theta_l), and the landmarks come back into the same image frame."""
    img, box = ramp_image(), np.array([110.0, 90.0, 210.0, 200.0])
    x, crop_from_image = crop_batch(img, [box], meta)
    with torch.no_grad():
        crop = torch.from_numpy(x)
        out = model(crop, intermediates=True)
        loc_graph = model._sample(crop, model.crop_from_loc, model.grid_loc, model.cfg.loc_size).numpy()
        face_t = model._sample(crop, out["crop_from_face"], model.grid_face, model.cfg.face_size)
        p, k = model.cfg.part_size, out["theta_l"].shape[1]
        parts_graph = model._sample(face_t, out["theta_l"], model.grid_part, p).reshape(1, 3, k, p, p).numpy()
    batch = loc_batch(img, box[None], meta)
    inner = (Ellipsis, slice(4, -4), slice(4, -4))  # away from the crop border's zero padding
    tol = 2.5 / 127.5  # uint8 rounding of the warps, in normalized units
    assert np.abs(batch.loc[inner] - loc_graph[inner]).max() < tol
    faces, f_from_l = face_batch(batch, out["theta_g"].numpy(), meta)
    assert np.abs(faces[inner] - face_t.numpy()[inner]).max() < tol
    parts = part_batch(batch, f_from_l, out["theta_l"].numpy(), meta)
    # where a part reaches beyond the face square the graph samples the face's zero padding, the host the photo
    grid = geo.affine_grid(out["theta_l"], model.grid_part, p, p).reshape(1, k, p, p, 2).numpy()
    inside = (np.abs(grid) < 1 - 4 / model.cfg.face_size).all(-1)[:, None]   # [1, 1, K, P, P]
    diff = np.abs(parts - parts_graph)[np.broadcast_to(inside, parts.shape)]
    assert parts.shape == parts_graph.shape and inside.mean() > 0.5 and diff.max() < 3.5 / 127.5
    pts_loc = run_host_warp(numpy_runner(model), batch, meta)
    pts_img = geo.apply_affine(geo.invert_affine(batch.loc_from_image), pts_loc)
    ref_img = geo.apply_affine(geo.invert_affine(crop_from_image), out["landmarks"].numpy())
    assert np.abs(pts_img - ref_img).max() < 0.05  # px: only the pixels' rounding differs


def test_host_assembly_of_the_local_stage_equals_the_graph(model):
    """assemble_local (numpy, host) on the local graph's increments = local_from_patches (torch, in the graph)."""
    g = torch.Generator().manual_seed(1)
    n, k, p = model.scheme.num_points, len(model.scheme.parts), model.cfg.part_size
    shape_g = torch.rand(2, n, 2, generator=g) * 1.6 - 0.8
    patches = torch.randn(2, 3, k, p, p, generator=g)
    with torch.no_grad():
        theta_l = model.local_reinit(shape_g)
        want = model.local_from_patches(patches, shape_g, theta_l).numpy()
    delta = numpy_runner(model)("local", patches.numpy())[0]
    assert delta.shape == (2, sum(len(q) for q in model.scheme.parts), 2) and np.abs(delta).max() > 1e-3
    got = assemble_local(shape_g.numpy(), theta_l.numpy(), delta, model.scheme)
    assert np.abs(got - want).max() < 1e-5


def test_graph_io_follows_the_variant():
    assert list(graph_io(True)) == ["reinit", "global", "local"] and list(graph_io(False)) == ["reinit", "global"]
    spec = host_warp_spec(jittered("gsr"))
    assert list(spec["graphs"]) == ["reinit", "global"] and spec["graphs"]["global"] == [["face"], ["shape_g"]]


@pytest.fixture(scope="module")
def hostwarp_exported(exports, parity_faces):
    """Both host-warp kinds at a dynamic batch, parity-checked (test_batch_order.py uses the same artifacts)."""
    return exports(["mnn", "onnx"], parity=True, host_warp=True, batch="dynamic"), parity_faces


def test_export_round_trip_and_parity(hostwarp_exported, model, meta):
    res, inputs = hostwarp_exported
    assert res.passed and len(res.artifacts) == 2 and not res.failed
    for path in res.artifacts:
        assert path.name.endswith(("_fp32_dynamic_hostwarp.onnx", "_fp32_dynamic_hostwarp.mnn"))
        m = read_metadata(path)
        assert m.host_warp["graphs"] == {k: [list(i), list(o)] for k, (i, o) in graph_io(True).items()}
        assert m.host_warp["loc_size"] == model.cfg.loc_size and m.host_warp["face_size"] == model.cfg.face_size
        assert m.box_convention == model.box_convention == "tight"
        p = Predictor.from_file(path, threads=1)
        assert p.host_warp and "host-warp" in repr(p)
    results = {r.format: r for r in res.report.results}
    # measured: ONNX 0.00002 px, MNN 0.0013 px
    assert results["onnx"].metrics["max_px"] < 0.01 and results["mnn"].metrics["max_px"] < 0.01
    # the exported graphs against the checkpoint's torch modules with the same host warps, per face
    onnx_path = next(p for p in res.artifacts if p.suffix == ".onnx")
    p = Predictor.from_file(onnx_path, threads=1)
    s = inputs.samples[0]
    got = p.predict(s.image, s.box)
    batch = loc_batch(s.image, np.asarray(s.box, dtype=np.float64)[None], meta)
    want = geo.apply_affine(geo.invert_affine(batch.loc_from_image), run_host_warp(numpy_runner(model), batch, meta))
    assert np.abs(got - want).max() < 0.001    # measured 0.00002 px


def test_host_warp_refusals(hostwarp_exported, model, tmp_path):
    res, inputs = hostwarp_exported
    onnx_path = next(p for p in res.artifacts if p.suffix == ".onnx")
    p = Predictor.from_file(onnx_path, threads=1)
    with pytest.raises(ValueError, match="host-warp artifact: it takes the photo"):
        p.run(np.zeros((1, 3, model.cfg.input_size, model.cfg.input_size), np.float32))
    for kwargs, match in ((dict(formats="onnx", precision="int8"), "fp32 or fp16"),
                          (dict(formats="coreml"), "ONNX and MNN only")):
        with pytest.raises(ValueError, match=match):
            export_model(model=model, out_dir=tmp_path, host_warp=True, parity=False, **kwargs)
    with pytest.raises(ValueError, match="no global reinit"):
        export_model(model=jittered("b1"), formats="onnx", out_dir=tmp_path, host_warp=True, parity=False)
    single = export_model(model=model, formats="onnx", out_dir=tmp_path, parity=False, name="one").artifacts[0]
    with pytest.raises(ValueError, match="single-graph artifact"):
        Predictor.from_file(single, host_warp=True)
    assert not list(tmp_path.glob("*hostwarp*"))


def _graph_inputs(model, graph: str, n: int, seed: int) -> list:
    """Random float32 inputs of host-warp graph ``graph`` for ``n`` faces."""
    c, k = model.cfg, len(model.scheme.parts)
    shape = {"reinit": (n, 3, c.loc_size, c.loc_size), "global": (n, 3, c.face_size, c.face_size),
             "local": (n, 3, k, c.part_size, c.part_size)}[graph]
    return [np.random.default_rng(seed).normal(size=shape).astype(np.float32)]


def test_reused_graph_inputs_give_the_plain_calls_outputs(hostwarp_exported, model):
    """The ONNX backend's I/O-bound sessions and the MNN backend's reused input variables give exactly what a
    plain ``session.run`` / ``forward`` on a new constant gives: for a new array, for the same array refilled in
    place (read afresh, not a stale binding), at another batch size, from another thread; and what they return is
    the caller's (not overwritten by the next call)."""
    import threading

    import MNN

    res, _ = hostwarp_exported
    for path in res.artifacts:
        be = Predictor.from_file(path, threads=1).backend

        def plain(graph, xs, be=be):
            ins, outs = be._graph_io(graph)
            if be.name == "onnx":
                return be.sessions[graph].run(outs, dict(zip(ins, xs)))
            ys = be.modules[graph].forward([MNN.expr.const(x, list(x.shape), MNN.expr.NCHW) for x in xs])
            return [np.asarray(y.read(), dtype=np.float32).reshape(y.shape) for y in ys]

        for graph in ("reinit", "global", "local"):
            xs = _graph_inputs(model, graph, 2, seed=1)
            first = be.run_graph(graph, *xs)
            kept = [y.copy() for y in first]
            for got, want in zip(first, plain(graph, xs)):
                np.testing.assert_array_equal(got, want)
            xs[0][...] = _graph_inputs(model, graph, 2, seed=2)[0]           # the same array, new content
            for got, want in zip(be.run_graph(graph, *xs), plain(graph, xs)):
                np.testing.assert_array_equal(got, want)
            assert not np.array_equal(kept[0], plain(graph, xs)[0])
            for a, b in zip(first, kept):                                    # the first call's outputs untouched
                np.testing.assert_array_equal(a, b)
            one = _graph_inputs(model, graph, 1, seed=3)
            np.testing.assert_array_equal(be.run_graph(graph, *one)[0], plain(graph, one)[0])
            np.testing.assert_array_equal(be.run_graph(graph, *xs)[0], plain(graph, xs)[0])    # and back to 2
            other = []
            t = threading.Thread(target=lambda g=graph: other.append(be.run_graph(g, *xs)))
            t.start()
            t.join()
            np.testing.assert_array_equal(other[0][0], plain(graph, xs)[0])


@pytest.mark.skipif(not DATA_300W.is_dir(), reason=f"300-W faces not found at {DATA_300W} (../shared is only on CI "
                                                    "and dev machines)")
def test_host_warp_scores_as_the_single_graph_on_real_faces():
    """The shipped small on 40 real 300-W val faces: host-warp mode (one interpolation per pixel) against the single
    graph (two): NME io within 0.02 pp, every landmark within 1.2 px. Measured (glsr-small-68.pt, sha256 0967cb6b):
    3.261 % vs 3.257 % on these 40 faces, max 0.81 px, median per-face max 0.21 px; on all 122: 3.496 % both,
    max 1.48 px, median per-face max 0.22 px."""
    import cv2

    from glsr.shipped import shipped_path
    from glsr.train.datasets import open_dataset

    ds = open_dataset(f"300w:{DATA_300W}", split="val")
    w = shipped_path("small")
    graph, hw = Predictor.from_file(w, threads=1), Predictor.from_file(w, threads=1, host_warp=True)
    nme = {"graph": [], "hw": []}
    worst = 0.0
    for i in range(40):
        r = ds[i]
        img, gt = cv2.imread(r.image_path), np.asarray(r.landmarks)
        box, d = geo.tight_box(gt), np.linalg.norm(gt[36] - gt[45])
        a, b = graph.predict(img, box)[0], hw.predict(img, box)[0]
        nme["graph"].append(np.linalg.norm(a - gt, axis=1).mean() / d)
        nme["hw"].append(np.linalg.norm(b - gt, axis=1).mean() / d)
        worst = max(worst, float(np.abs(a - b).max()))
    assert abs(np.mean(nme["graph"]) - np.mean(nme["hw"])) < 0.0002     # measured 0.00004
    assert worst < 1.2                                                   # measured 0.81 px


@pytest.mark.parametrize("order", ["BGR", "RGB"])
def test_warp_into_equals_warp_then_normalize(meta, order):
    """The runtime's one-pass warp + normalization gives exactly geometry.warp + imaging.normalize (what training
    crops are made of), for small (numpy path) and large (table path) outputs, given either matrix direction."""
    import dataclasses

    from glsr.imaging import normalize
    from glsr.runtime.hostwarp import compose2, invert
    from glsr.runtime.processing import warp_into

    m = dataclasses.replace(meta, channel_order=order)
    img = np.random.default_rng(1).integers(0, 256, (230, 250, 3), dtype=np.uint8)
    dst_from_src = geo.compose(geo.cv2_rotation((120, 110), 17.0, 0.8), np.array([[1.0, 0, -20], [0, 1.0, -15]]))
    assert np.allclose(compose2(invert(dst_from_src), dst_from_src), [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    for size in (40, 136):
        out = np.empty((3, size, size), np.float32)
        warp_into(img, invert(dst_from_src), size, out, m)
        assert np.array_equal(out, normalize(geo.warp(img, dst_from_src, size), m))


def test_stacked_part_warps_and_closed_form_crop_equal_the_one_by_one_forms(meta):
    """The host's batched forms give the values of the plain ones: K patches warped into one stack and normalized
    in one pass equal each patch warped and normalized alone (bit for bit), and the closed-form image_from_crop is
    the inverse of geometry.crop_from_image."""
    from glsr.runtime.hostwarp import image_from_crop
    from glsr.runtime.processing import warp_into, warp_stack_into

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (200, 240, 3), dtype=np.uint8)
    ms = np.stack([[[0.7, 0.1, 20.0 + 30 * j], [-0.1, 0.7, 40.0 + 9 * j]] for j in range(4)])
    for size in (40, 70):                                  # below and above normalize_into's table threshold
        stack = np.empty((3, 4 * size, size), np.float32)
        warp_stack_into(image, ms, size, stack, meta)
        for j in range(4):
            one = np.empty((3, size, size), np.float32)
            warp_into(image, ms[j], size, one, meta)
            np.testing.assert_array_equal(stack[:, j * size:(j + 1) * size], one)
    boxes = np.array([[10.0, 20.0, 110.0, 150.0], [-5.5, 3.25, 60.0, 61.0]])
    want = np.stack([geo.invert_affine(geo.crop_from_image(b, 208, 1.8)) for b in boxes])
    np.testing.assert_allclose(image_from_crop(boxes, 208, 1.8), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("order", ["BGR", "RGB"])
def test_normalizer_equals_imaging_normalize_exactly(meta, order):
    """The runtime's resolved normalization (table path and numpy path, either channel order) gives bit for bit
    glsr.imaging.normalize's values on random uint8 images holding every pixel value."""
    import dataclasses

    from glsr.imaging import normalize
    from glsr.runtime.processing import Normalizer, normalize_into, normalizer

    m = dataclasses.replace(meta, channel_order=order, pixel_mean=127.5, pixel_std=127.5)
    norm = normalizer(m)
    assert norm is normalizer(dataclasses.replace(m)) and norm.order == ((2, 1, 0) if order == "RGB" else (0, 1, 2))
    rng = np.random.default_rng(7)
    for h, w in ((40, 40), (160, 40), (136, 136), (256, 256)):      # below and above the table threshold
        assert (h * w < Normalizer.TABLE_MIN_PIXELS) == (h == w == 40)
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        img.reshape(-1, 3)[:256] = np.arange(256, dtype=np.uint8)[:, None]          # every value, every channel
        out, via_meta = np.full((3, h, w), np.nan, np.float32), np.full((3, h, w), np.nan, np.float32)
        assert norm.into(img, out) is out
        normalize_into(img, via_meta, m)
        want = normalize(img, m)
        np.testing.assert_array_equal(out, want)
        np.testing.assert_array_equal(via_meta, want)


def test_host_warp_algebra_equals_the_geometry_forms(meta):
    """The closed forms of the host-warp stages equal glsr.geometry's matrix products: the sampling theta's pixel
    affine, the batched compose, the loc frame of the boxes (bit for bit: image_from_crop is diagonal), and the plan
    is resolved once per metadata object."""
    import dataclasses

    from glsr.runtime.hostwarp import _pixel_from_theta, compose2, image_from_crop, image_from_loc, invert, plan_of

    rng = np.random.default_rng(5)
    theta = rng.normal(size=(3, 4, 2, 3))
    want = geo.compose(geo.pixel_from_norm(136), theta, geo.norm_from_pixel(40))
    np.testing.assert_allclose(_pixel_from_theta(theta, 136, 40), want, rtol=0, atol=1e-12)
    a, b = rng.normal(size=(3, 1, 2, 3)), rng.normal(size=(3, 4, 2, 3))
    np.testing.assert_allclose(compose2(a, b), geo.compose(a, b), rtol=0, atol=1e-12)
    np.testing.assert_allclose(compose2(invert(b), b), np.broadcast_to(np.eye(2, 3), b.shape), rtol=0, atol=1e-12)
    plan = plan_of(meta)
    assert plan_of(meta) is plan and plan_of(dataclasses.replace(meta)) is not plan
    assert plan.local and (plan.loc_size, plan.face_size) == (meta.host_warp["loc_size"], meta.host_warp["face_size"])
    boxes = np.array([[10.0, 20.0, 110.0, 150.0], [-5.5, 3.25, 60.0, 61.0]])
    crop = image_from_crop(boxes, meta.input_size, meta.crop_enlarge)
    np.testing.assert_array_equal(image_from_loc(boxes, plan), compose2(crop, plan.crop_from_loc))


def test_scratch_buffers_are_reused_per_thread_and_tag():
    """One reused buffer per thread and tag: the same array while shape and dtype hold, a new one when they change
    (a batch size changing between calls never piles buffers up), another thread gets its own."""
    import threading

    from glsr.runtime.processing import scratch

    a = scratch(("t", 1), (2, 3))
    assert scratch(("t", 1), (2, 3)) is a and a.dtype == np.float32
    b = scratch(("t", 1), (4, 3))
    assert b is not a and b.shape == (4, 3) and scratch(("t", 1), (4, 3)) is b
    assert scratch(("t", 1), (4, 3), np.uint8) is not b and scratch(("t", 2), (4, 3)) is not b
    other = []
    t = threading.Thread(target=lambda: other.append(scratch(("t", 1), (4, 3))))
    t.start()
    t.join()
    assert other[0] is not scratch(("t", 1), (4, 3))
