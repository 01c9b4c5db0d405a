"""MNN export: converter from ONNX, metadata in bizCode, threads, fp16 / int8 parity numbers, named unsupported
ops (batch modes: test_batch_order.py)."""
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from glsr.export import ConverterError, UnsupportedOpError, export_model
from glsr.export import mnn_export as me
from glsr.export.parity import TOLERANCES, default_inputs
from glsr.formats import read_metadata
from glsr.metadata import ArtifactMetadata
from glsr.runtime.backends import MNNBackend, load_backend

pytestmark = pytest.mark.usefixtures("flush_denormals")


def test_fp32_and_fp16_parity_metadata_threads(model, exports):
    """The small variant (local stage included) through MNN's converter, fp32 and fp16 weights."""
    r32 = exports("mnn", parity=True)
    (p32,) = r32.artifacts
    assert p32.name == "m_fp32.mnn" and r32.report.results[0].status == "pass"
    assert r32.report.results[0].metrics["max_px"] <= TOLERANCES[("mnn", "fp32")].max_px
    meta = read_metadata(p32)
    assert isinstance(meta, ArtifactMetadata)
    assert (meta.variant, meta.scheme, meta.num_points, meta.format, meta.precision) == ("small", "68", 68, "mnn",
                                                                                        "fp32")
    assert meta.box_convention == model.box_convention == "tight"
    b = load_backend(p32, threads=2)
    assert isinstance(b, MNNBackend) and b.metadata == meta
    x = np.random.default_rng(0).normal(0, 0.5, (1, 3, 192, 192)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(b.run(x) - ref).max() <= 0.01
    r16 = exports("mnn", parity=True, batch="dynamic", precision="fp16")
    (p16,) = r16.artifacts
    assert p16.stat().st_size < 0.6 * p32.stat().st_size
    tol = TOLERANCES[("mnn", "fp16")]
    m16 = r16.report.results[0].metrics
    assert r16.report.results[0].status == "pass" and m16["max_px"] <= tol.max_px and m16["mean_px"] <= tol.mean_px


def test_int8_on_authors_weights(dpr_dir, tmp_path):
    from glsr.models.dpr import import_dpr

    model = import_dpr(dpr_dir)
    inputs = default_inputs("98", procedural=6, lfw=4)
    res = export_model(model=model, formats="mnn", precision="int8", calib_count=12, out_dir=tmp_path,
                       parity_inputs=inputs)
    (r,) = res.report.results
    assert r.metrics["dnme_pp"] <= TOLERANCES[("mnn", "int8")].dnme_pp and r.status == "pass", r.breaches
    assert read_metadata(res.artifacts[0]).precision == "int8"  # bizCode survived quantization + JSON pass


def test_int8_keeps_coordinate_ops_float(exports, tmp_path):
    """After quantization no op outside the image CNNs keeps int8 state: neither a tensor's quantInfo nor a
    unary op's int8 lookup table (MNN uses such a table even on float tensors: 260 px off on a Reciprocal)."""
    res = exports("mnn", batch="dynamic", precision="int8", calib_count=4)
    dump = tmp_path / "m.json"
    me._run_tool("mnnconvert", ["-f", "MNN", "--modelFile", str(res.artifacts[0].resolve()),
                                "--JsonFile", str(dump.resolve())], "dump")
    graph = me._loads_mnn_json(dump.read_text())
    ops = graph["oplists"]
    producer = {t: op["name"] for op in ops for t in op.get("outputIndexes", [])}
    int8_tensors = [producer.get(d["index"], "") for d in graph["extraTensorDescribe"] if "quantInfo" in d]
    tables = [op["name"] for op in ops if "tableInt8" in (op.get("main") or {})]
    assert int8_tensors and all(me._int8_scope(n) for n in int8_tensors)
    assert all(me._int8_scope(n) for n in tables), tables
    assert any(op["type"] == "UnaryOp" and not me._int8_scope(op["name"]) for op in ops)  # the case is present


def affine_grid_onnx(path):
    theta = helper.make_tensor_value_info("theta", TensorProto.FLOAT, [1, 2, 3])
    grid = helper.make_tensor_value_info("grid", TensorProto.FLOAT, [1, 4, 4, 2])
    size = helper.make_tensor("size", TensorProto.INT64, [4], [1, 1, 4, 4])
    node = helper.make_node("AffineGrid", ["theta", "size"], ["grid"], name="/stn/AffineGrid", align_corners=0)
    g = helper.make_graph([node], "g", [theta], [grid], initializer=[size])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)]), str(path))


def test_unsupported_op_named_before_converting(tmp_path):
    assert "GridSample" in me.supported_onnx_ops() and "AffineGrid" not in me.supported_onnx_ops()
    src = tmp_path / "a.onnx"
    affine_grid_onnx(src)
    meta = ArtifactMetadata(variant="gsr", scheme="68", num_points=68, input_size=4, crop_enlarge=1.0,
                            box_scale=1.0)
    with pytest.raises(UnsupportedOpError) as e:
        me.convert_onnx(src, tmp_path / "a.mnn", meta)
    assert (e.value.op, e.value.node, e.value.format) == ("AffineGrid", "/stn/AffineGrid", "mnn")
    assert not (tmp_path / "a.mnn").exists()


def test_converter_failure_is_clear(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(ConverterError, match="mnn: .*bad.onnx is not a readable ONNX model"):
        me.convert_onnx(bad, tmp_path / "bad.mnn", ArtifactMetadata("gsr", "68", 68, 4, 1.0, 1.0))
    assert not (tmp_path / "bad.mnn").exists()
