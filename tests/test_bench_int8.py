"""The per-face bench's "int8 against fp32" section (glsr.bench.int8): rows paired by model / mode / backend, the
verdict follows the ratio and names the CPU's int8 instructions, the per-op-type comparison adds up on hand-made
profiles, onnxruntime's trace is aggregated per op type (a real run with both precisions:
tests/test_latency.py::test_run_faces_writes_the_report). Times nothing."""
from __future__ import annotations

import pytest

from glsr.bench import int8, latency, profile

VNNI = {"model": "m", "cores": 2, "flags": ["avx2", "avx512_vnni", "avx512f", "fma"]}
NO_INT8 = {"model": "m", "cores": 2, "flags": ["avx2", "fma"]}


def _row(precision, e2e, nme68, backend="onnx", model="small-fast", net=None, load=0.0):
    return {"kind": "glsr", "label": f"{model} {backend} {precision}", "model": model, "backend": backend,
            "precision": precision, "mode": "graph", "other_load_cores": load,
            "latency": {"e2e": {"median_ms": e2e, "p90_ms": e2e}, "crop": {"median_ms": 0.3},
                        "net": {"median_ms": e2e - 0.4}, "uncrop": {"median_ms": 0.1}, "staged": {"median_ms": e2e},
                        "net_fixed": {"median_ms": e2e - 0.5 if net is None else net}},
            "accuracy": {"nme68": nme68, "nme51": nme68 - 0.008, "failures": 0, "count": 122},
            "landmarker": {"name": "glsr"}}


def _results(cases, cpu=VNNI, profiled=True):
    return {"cases": cases, "errors": [], "skipped": [], "summary": latency.summarize_faces({"cases": cases}),
            "environment": {"date": "d", "host": "h", "platform": "p", "python": "3", "cpu": cpu, "libraries": {},
                            "glsr": "0", "commit": None},
            "config": {"faces": "f", "split": "val", "timing_faces": 16, "threads": 1, "budget_s": 1,
                       "profile": profiled}}


def test_rows_pair_by_model_mode_and_backend():
    cases = [_row("fp32", 2.0, 0.040), _row("fp32", 2.2, 0.040, "mnn"), _row("int8", 2.4, 0.0403),
             _row("fp16", 2.1, 0.040), _row("int8", 1.0, 0.041, model="other"),
             {**_row("fp32", 1.8, 0.040), "mode": "hostwarp", "label": "small-fast onnx fp32 host-warp"}]
    (pair,) = int8.pairs(cases)
    assert [c["label"] for c in pair] == ["small-fast onnx fp32", "small-fast onnx int8"]
    assert int8.pairs(cases[:2]) == []


@pytest.mark.parametrize("int8_ms, faster", [(2.4, False), (1.6, True), (2.0, False)])
def test_the_verdict_follows_the_ratio(int8_ms, faster):
    e = int8.compare(_row("fp32", 2.0, 0.0400), _row("int8", int8_ms, 0.0403), VNNI)
    assert e["ratio_e2e"] == pytest.approx(int8_ms / 2.0) and e["faster"] is faster
    assert e["ratio_net"] == pytest.approx((int8_ms - 0.5) / 1.5, abs=1e-3)
    assert e["d_nme68_pp"] == pytest.approx(0.03) and e["d_nme51_pp"] == pytest.approx(0.03) and e["within_nme"]
    assert e["int8_flags"] == ["avx512_vnni"] and "avx512_vnni" in e["verdict"]
    assert e["verdict"].startswith("int8 is faster" if faster else "int8 is not faster")
    assert f"{int8_ms / 2.0:.2f}x" in e["verdict"] and "within 0.1 pp" in e["verdict"]
    assert "unreliable" not in e["verdict"]
    assert ("python -m benchmarks.studies.int8_configs" in e["verdict"]) is (not faster)  # the measured reason


def test_the_verdict_names_each_runtimes_measured_reason():
    e = int8.compare(_row("fp32", 2.0, 0.040, "mnn"), _row("int8", 3.0, 0.0402, "mnn"), VNNI)
    assert "MNN's int8 kernels" in e["verdict"] and "benchmarks.studies.int8_subnets" in e["verdict"]
    e = int8.compare(_row("fp32", 2.0, 0.040), _row("int8", 3.0, 0.0402), NO_INT8)
    assert "benchmarks.studies" not in e["verdict"]  # no int8 instructions: that is the reason


def test_the_verdict_without_int8_instructions_and_on_a_shared_cpu():
    e = int8.compare(_row("fp32", 2.0, 0.040), _row("int8", 3.0, 0.0415, load=0.9), NO_INT8)
    assert not e["faster"] and e["int8_flags"] == [] and not e["within_nme"]
    assert "no int8 dot-product instructions (none of avx512_vnni, avx_vnni, amx_int8" in e["verdict"]
    assert "outside 0.1 pp" in e["verdict"] and "0.90 cores" in e["verdict"] and "unreliable" in e["verdict"]


def test_op_changes_on_a_hand_made_profile():
    fp32 = [{"op": "Conv", "ms": 1.0}, {"op": "Add", "ms": 0.1}, {"op": "GridSample", "ms": 0.3},
            {"op": "Relu", "ms": 0.05}, {"op": "Gemm", "ms": 0.02}]
    q = [{"op": "QLinearConv", "ms": 1.05}, {"op": "QLinearAdd", "ms": 0.2}, {"op": "GridSample", "ms": 0.32},
         {"op": "QuantizeLinear", "ms": 0.01}, {"op": "DequantizeLinear", "ms": 0.004}, {"op": "Relu", "ms": 0.04},
         {"op": "Gemm", "ms": 0.02}, {"op": "Convolution [ DT_INT8 ] ", "ms": 0.5}]
    ops = int8.op_changes(fp32, q, top=3)
    # the 3 largest |change| (QLinearConv +1.05, Conv -1.0, Convolution [ DT_INT8 ] +0.5) and every int8-only type
    assert [r["op"] for r in ops["rows"]] == ["QLinearConv", "Convolution [ DT_INT8 ]", "QLinearAdd",
                                              "QuantizeLinear", "DequantizeLinear", "Conv"]
    by = {r["op"]: r for r in ops["rows"]}
    assert by["QLinearConv"] == {"op": "QLinearConv", "fp32_ms": 0.0, "int8_ms": 1.05, "change_ms": 1.05,
                                 "only": "int8"}
    assert by["Conv"]["only"] == "fp32" and by["Conv"]["change_ms"] == pytest.approx(-1.0)
    # Add, GridSample, Relu and Gemm are summed into "other"; rows + other = total
    assert ops["other"] == {"op_types": 4, "fp32_ms": 0.47, "int8_ms": 0.38, "change_ms": -0.09}
    assert ops["total"] == {"fp32_ms": 1.47, "int8_ms": 2.144, "change_ms": 0.674}
    for k in ("fp32_ms", "int8_ms", "change_ms"):
        assert sum(r[k] for r in ops["rows"]) + ops["other"][k] == pytest.approx(ops["total"][k])
    assert int8.op_changes(fp32, fp32)["total"]["change_ms"] == 0.0


def test_onnx_trace_aggregated_per_op_type():
    """Two warm-up runs then two profiled runs: only the profiled runs' kernels count, in ms per run."""
    ev = []
    for run, t0 in enumerate((0, 1000, 2000, 3000)):
        ev += [{"cat": "Node", "name": "/regress/conv1_kernel_time", "ts": t0 + 10, "dur": 300 + run,
                "args": {"op_name": "QLinearConv"}},
               {"cat": "Node", "name": "/regress/conv2_kernel_time", "ts": t0 + 400, "dur": 100,
                "args": {"op_name": "QLinearConv"}},
               {"cat": "Node", "name": "/Quant_kernel_time", "ts": t0 + 600, "dur": 40,
                "args": {"op_name": "QuantizeLinear"}},
               {"cat": "Node", "name": "/regress/conv1_fence_before", "ts": t0 + 5, "dur": 1, "args": {}},
               {"cat": "Session", "name": "model_run", "ts": t0, "dur": 900}]
    p = profile.onnx_events_by_op(ev, warmup=2, top=None)
    assert p["runs"] == 2 and p["kernel_ms"] == pytest.approx((302.5 + 100 + 40) / 1e3)
    assert p["by_op"] == [{"op": "QLinearConv", "ms": 0.4025, "share": round(402.5 / 442.5, 4), "nodes": 2},
                          {"op": "QuantizeLinear", "ms": 0.04, "share": round(40 / 442.5, 4), "nodes": 1}]
    assert p["by_scope"] == {"regress": 0.4025, "glue": 0.04}
    assert profile.onnx_events_by_op(ev, warmup=0)["runs"] == 4


def test_the_section_appears_with_both_precisions_and_not_with_one():
    both = [_row("fp32", 2.0, 0.040), _row("int8", 2.4, 0.0403), _row("fp32", 2.1, 0.040, "mnn"),
            _row("int8", 1.8, 0.0402, "mnn")]
    res = _results(both, profiled=False)
    res["int8_vs_fp32"] = int8.compare_run(res)
    md = latency.markdown(res)
    assert "## int8 against fp32" in md and "| small-fast | onnx | 2.000 | 2.400 | 1.20x |" in md
    assert "- small-fast onnx: int8 is not faster on this CPU: 1.20x" in md and "profile skipped (--no-profile)" in md
    assert "- small-fast mnn: int8 is faster on this CPU: 0.86x" in md
    one = _results([c for c in both if c["precision"] == "fp32"])
    one["int8_vs_fp32"] = int8.compare_run(one)
    assert one["int8_vs_fp32"] == [] and "int8 against fp32" not in latency.markdown(one)


@pytest.mark.parametrize("op, family", [
    ("QLinearConv", "Conv"), ("QLinearAdd", "Add"), ("QGemm", "Gemm"), ("ConvInteger", "Conv"),
    ("QuantizeLinear", int8.CONVERSION_FAMILY), ("DequantizeLinear", int8.CONVERSION_FAMILY),
    ("Convolution [ DT_INT8 ] ", "Convolution"), ("FloatToInt8 [ DT_INT8 ]", int8.CONVERSION_FAMILY),
    ("Int8ToFloat", int8.CONVERSION_FAMILY), ("GridSample", "GridSample"), ("Transpose", "Transpose")])
def test_op_family(op, family):
    assert int8.op_family(op) == family


def test_families_count_each_int8_kernel_with_the_op_it_replaces():
    fp32 = [{"op": "Conv", "ms": 1.0}, {"op": "Add", "ms": 0.1}, {"op": "GridSample", "ms": 0.3}]
    q = [{"op": "QLinearConv", "ms": 0.9}, {"op": "Conv", "ms": 0.2}, {"op": "QLinearAdd", "ms": 0.3},
         {"op": "QuantizeLinear", "ms": 0.05}, {"op": "DequantizeLinear", "ms": 0.03}, {"op": "GridSample", "ms": 0.3}]
    fam = {r["family"]: r for r in int8.families(fp32, q)}
    assert fam["Conv"] == {"family": "Conv", "fp32_ms": 1.0, "int8_ms": 1.1, "change_ms": 0.1}
    assert fam["Add"]["change_ms"] == pytest.approx(0.2) and fam["GridSample"]["change_ms"] == 0.0
    assert fam[int8.CONVERSION_FAMILY] == {"family": int8.CONVERSION_FAMILY, "fp32_ms": 0.0, "int8_ms": 0.08,
                                           "change_ms": 0.08}
    assert [r["family"] for r in int8.families(fp32, q)][0] == "Add"    # largest increase first
