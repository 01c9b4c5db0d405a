"""ONNX export: graph contract (opset, no AffineGrid, names), metadata, batch modes, fp16 / int8 parity numbers,
refusals, clear unsupported-op errors and all-or-nothing writes."""
import json

import numpy as np
import onnx
import pytest

from glsr.export import ExportOptions, UnsupportedOpError, export_model, plan_formats
from glsr.export import onnx_export as oe
from glsr.export.parity import TOLERANCES, default_inputs
from glsr.formats import read_metadata
from glsr.metadata import ArtifactMetadata
from glsr.models.network import node_scope
from glsr.models import save_checkpoint
from glsr.runtime.backends import OnnxBackend, load_backend
from support import jittered

pytestmark = pytest.mark.usefixtures("flush_denormals")


@pytest.fixture(scope="module")
def fp32(exports):
    return exports("onnx", parity=True)


def test_fp32_graph_contract_and_parity(fp32, model):
    (path,) = fp32.artifacts
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    ops = {n.op_type for n in proto.graph.node}
    # grids and theta algebra are element-wise (a batched MatMul becomes a While loop in MNN)
    assert "AffineGrid" not in ops and "MatMul" not in ops and "GridSample" in ops
    assert oe.opset_of(proto) >= 16
    assert [i.name for i in proto.graph.input] == ["crop"] and [o.name for o in proto.graph.output] == ["landmarks"]
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 192, 192]
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    (r,) = fp32.report.results
    assert r.status == "pass" and r.metrics["max_px"] <= TOLERANCES[("onnx", "fp32")].max_px == 0.01
    assert r.metrics["faces"] >= 3
    report = json.loads(fp32.report_path.read_text())
    assert report["passed"] is True and report["results"][0]["metrics"]["max_px"] == r.metrics["max_px"]


def test_metadata_in_artifact(fp32, model):
    meta = read_metadata(fp32.artifacts[0])
    assert isinstance(meta, ArtifactMetadata)
    assert (meta.variant, meta.scheme, meta.num_points, meta.input_size) == ("small", "68", 68, 192)
    assert meta.crop_enlarge == pytest.approx(model.cfg.crop_enlarge)
    assert (meta.channel_order, meta.pixel_mean, meta.pixel_std) == ("BGR", 127.5, 127.5)
    assert (meta.format, meta.precision, meta.sampler, meta.batch) == ("onnx", "fp32", "gridsample", "1")
    assert meta.box_convention == model.box_convention == "tight"
    assert meta.glsr_version and meta.export_options["opset"] == 17 and meta.export_options["batch"] == "1"
    backend = load_backend(fp32.artifacts[0], threads=1)
    assert isinstance(backend, OnnxBackend) and backend.metadata == meta


def test_dynamic_batch_and_gather_sampler(exports):
    """Batch modes in the graph and the file name (each slot's landmarks: test_batch_order.py); the gather sampler
    at a static batch, and a static batch refusing another size."""
    dyn = exports("onnx", parity=True, batch="dynamic")
    assert dyn.passed and dyn.artifacts[0].name == "m_fp32_dynamic.onnx"
    dims = onnx.load(str(dyn.artifacts[0])).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value and [d.dim_value for d in dims[1:]] == [3, 192, 192]
    gat = exports("onnx", parity=True, sampler="gather", batch=3)
    ops = oe.node_counts(gat.artifacts[0])
    assert "GridSample" not in ops and ops.get("Floor", 0) > 0 and gat.report.results[0].metrics["max_px"] <= 0.01
    with pytest.raises(ValueError, match="exported for batch 3"):
        load_backend(gat.artifacts[0]).run(np.zeros((2, 3, 192, 192), np.float32))


def test_fp16_keeps_io_and_coordinates_fp32(exports):
    res = exports("onnx", parity=True, batch="dynamic", precision="fp16")
    (r,) = res.report.results
    tol = TOLERANCES[("onnx", "fp16")]
    assert r.status == "pass" and r.metrics["mean_px"] <= tol.mean_px and r.metrics["max_px"] <= tol.max_px
    proto = onnx.load(str(res.artifacts[0]))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    init = {i.name: i.data_type for i in proto.graph.initializer}
    conv_w = [n.input[1] for n in proto.graph.node if n.op_type == "Conv" and n.input[1] in init]
    assert conv_w and all(init[w] == onnx.TensorProto.FLOAT16 for w in conv_w)
    heads = [n for n in proto.graph.node if n.op_type == "Gemm" and n.name.endswith("fc_loc.2/Gemm")]
    assert heads and init[heads[0].input[1]] == onnx.TensorProto.FLOAT  # theta FC stays fp32
    grids = [n for n in proto.graph.node if n.op_type == "GridSample"]
    assert grids  # resampling stays in the graph, fed float32 (checked by onnx's full type check)
    assert res.artifacts[0].stat().st_size < 0.75 * 4 * sum(np.prod(i.dims) for i in proto.graph.initializer)


def test_int8_weights_use_seven_bits(exports):
    """int8 weights stay within 7 bits so that u8 x s8 kernels without VNNI (saturating int16 pair sums) are
    exact: with full-range weights the authors' GSR model lost 0.72 pp NME on an AVX2-only CPU."""
    from onnx import numpy_helper

    res = exports("onnx", batch="dynamic", precision="int8", calib_count=4)
    proto = onnx.load(str(res.artifacts[0]))
    init = {i.name: i for i in proto.graph.initializer}
    weights = [numpy_helper.to_array(init[n.input[0]]) for n in proto.graph.node
               if n.op_type == "DequantizeLinear" and n.input[0] in init
               and init[n.input[0]].data_type == onnx.TensorProto.INT8]
    assert len(weights) > 10
    peak = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
    assert 32 < peak <= 64  # the scale still uses the 7-bit range, not less


def test_int8_quantizes_the_global_regressors_with_their_relus(exports, tmp_path):
    """int8 covers the global regressors' Conv/Gemm layers (heads excepted) with each ReLU folded into its Conv's
    output quantization, so onnxruntime runs every one as a QLinearConv; the part regressors and the theta nets
    stay float (measured slower in int8: ``benchmarks.studies.int8_configs``)."""
    import onnxruntime as ort

    res = exports("onnx", batch="dynamic", precision="int8", calib_count=4)
    proto = onnx.load(str(res.artifacts[0]))
    init = {i.name: i for i in proto.graph.initializer}
    int8_weight = {n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in init
                   and init[n.input[0]].data_type == onnx.TensorProto.INT8}
    _, heads = oe.partition(proto)
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    scopes = {node_scope(n.name) for n in convs}
    assert {"regress", "reinit", "local_regress"} <= scopes  # the fixture's model has every stage
    for n in convs:
        assert (n.input[1] in int8_weight) == (node_scope(n.name) in oe.ONNX_INT8_SCOPES and n.name not in heads), \
            n.name
    relus = [n.name for n in proto.graph.node if n.op_type == "Relu"]
    assert relus and not [r for r in relus if node_scope(r) == "regress"]  # folded there, kept in the float parts
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(res.artifacts[0]), so, providers=["CPUExecutionProvider"])
    fused = oe.node_counts(tmp_path / "opt.onnx")
    assert fused.get("QLinearConv", 0) == sum(1 for n in convs if n.input[1] in int8_weight)


@pytest.fixture(scope="module")
def dpr_model(dpr_dir):
    from glsr.models.dpr import import_dpr

    return import_dpr(dpr_dir)


def test_int8_dnme_within_tolerance_on_authors_weights(dpr_model, tmp_path):
    inputs = default_inputs("98", procedural=6, lfw=4)
    res = export_model(model=dpr_model, formats="onnx", precision="int8", calib_count=12, out_dir=tmp_path,
                       parity_inputs=inputs)
    (r,) = res.report.results
    ops = oe.node_counts(res.artifacts[0])
    assert ops.get("QuantizeLinear", 0) > 10 and ops.get("DequantizeLinear", 0) > 10
    assert r.metrics["dnme_pp"] is not None and r.metrics["dnme_pp"] <= TOLERANCES[("onnx", "int8")].dnme_pp
    assert r.status == "pass", r.breaches
    assert read_metadata(res.artifacts[0]).export_options["calib"] is None  # procedural calibration


def test_options_a_format_cannot_honour_are_refused(tmp_path, model):
    cases = [
        (("mlmodel", ExportOptions(sampler="gridsample")), "mlmodel: sampler gridsample"),
        (("coreml", ExportOptions(precision="int8")), "mlpackage: precision int8"),
        (("onnx", ExportOptions(image_input=True)), "onnx: --image-input"),
        (("onnx", ExportOptions(sampler="gather", batch="dynamic")), "gather sampler needs a static batch"),
        (("onnx", ExportOptions(calib=str(tmp_path))), "--calib is only used"),
        (("onnx", ExportOptions(opset=15)), "GridSample needs opset >= 16"),
        (("mlpackage", ExportOptions(batch="dynamic")), "mlpackage: --batch dynamic"),
        (("tflite", ExportOptions()), "unknown format tflite"),
    ]
    for (fmt, opts), msg in cases:
        with pytest.raises(ValueError, match=msg):
            plan_formats(fmt, opts)
    with pytest.raises(ValueError, match="mlmodel: sampler gridsample"):
        export_model(model=model, formats="mlmodel", sampler="gridsample", out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()
    plan = plan_formats("all", ExportOptions(precision="int8"))
    assert [s.name for s in plan.formats] == ["onnx", "mnn"] and {k for k, _ in plan.skipped} == {"mlpackage",
                                                                                                   "mlmodel"}


def test_affine_grid_is_named_not_exported(tmp_path, monkeypatch):
    """A graph built with F.affine_grid (opset 20 exports AffineGrid) is refused naming op, node and format (the
    gsr variant: F.affine_grid takes one 2x3 matrix per face, not the local stage's one per part)."""
    import torch.nn.functional as F

    from glsr import geometry as geo

    monkeypatch.setattr(geo, "affine_grid", lambda theta, base, h, w: F.affine_grid(
        theta, [theta.shape[0], 1, h, w], align_corners=False))
    meta = oe.ArtifactMetadata(variant="gsr", scheme="68", num_points=68, input_size=192, crop_enlarge=1.8,
                               box_scale=1.2)
    with pytest.raises(UnsupportedOpError, match=r"onnx: unsupported op 'AffineGrid' at node '/AffineGrid"):
        oe.export_fp32(jittered("gsr"), tmp_path / "a.onnx", meta, "1", 20, "gridsample")
    assert not (tmp_path / "a.onnx").exists()


def test_simplifier_failure_falls_back_with_warning(model, tmp_path, monkeypatch):
    import onnxsim

    def broken(*a, **k):
        raise RuntimeError("planted simplifier failure")

    monkeypatch.setattr(onnxsim, "simplify", broken)
    with pytest.warns(UserWarning, match="onnxsim failed .*planted"):
        res = export_model(model=model, formats="onnx", out_dir=tmp_path, parity=False)
    onnx.checker.check_model(onnx.load(str(res.artifacts[0])), full_check=True)


def test_failing_converter_leaves_no_partial_artifact(model, tmp_path, monkeypatch):
    from glsr.export import ConverterError
    from glsr.export import mnn_export as me

    real = me._run_tool

    def failing(tool, argv, what):
        if tool == "mnnconvert" and "--MNNModel" in argv:
            out = argv[argv.index("--MNNModel") + 1]
            open(out, "wb").write(b"partial")  # a converter dying half-way
            raise ConverterError("mnn", "planted converter crash")
        return real(tool, argv, what)

    monkeypatch.setattr(me, "_run_tool", failing)
    out = tmp_path / "out"
    with pytest.raises(ConverterError, match="planted converter crash"):
        export_model(model=model, formats="all", out_dir=out)
    assert out.is_dir() and list(out.iterdir()) == []  # no artifact, no report, no temporary folder


def test_cli_export_and_parity(model, tmp_path):
    from glsr.cli import main

    ckpt = tmp_path / "w.pt"
    save_checkpoint(model, ckpt)
    out = tmp_path / "out"
    assert main(["export", "--weights", str(ckpt), "--format", "onnx", "-o", str(out)]) == 0
    assert (out / "w_fp32.onnx").is_file() and json.loads((out / "w_fp32.onnx.parity.json").read_text())["passed"]
    assert main(["parity", "--weights", str(ckpt), str(out), "--json", str(tmp_path / "p.json"),
                 "--procedural", "2", "--lfw", "1"]) == 0
    assert json.loads((tmp_path / "p.json").read_text())["results"][0]["status"] == "pass"
    assert main(["export", "--weights", str(ckpt), "--format", "mnn", "--precision", "fp32", "--calib",
                 str(tmp_path), "-o", str(out)]) == 2
