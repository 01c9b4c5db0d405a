"""Benchmark harness: timing statistics, environment record, sub-network split, goal summary, reports written
atomically, and a tiny end-to-end run (torch / onnxruntime / MNN, glue, profiles) in- and out-of-process.
Speed goals are *not* asserted here (they live in benchmarks/results)."""
import json

import numpy as np
import pytest
import torch

from glsr import bench
from glsr.bench import artifacts, cases, machine, profile, timing, worker
from glsr.models import create_model, save_checkpoint

from support import TINY

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory):
    m = create_model("small", "68", **TINY).eval()
    p = tmp_path_factory.mktemp("bench") / "tiny.pt"
    save_checkpoint(m, p)
    return p


class FakeClock:
    """Stands in for ``time`` in :mod:`glsr.bench.timing`: each call of the timed function costs the next of
    ``costs_s`` (cycled) of wall time and no CPU time, so the statistics are exact, not timing-dependent."""

    def __init__(self, costs_s):
        self.t, self.costs, self.calls = 0.0, list(costs_s), 0

    def perf_counter(self) -> float:
        return self.t

    def process_time(self) -> float:
        return 0.0

    def call(self) -> None:
        self.t += self.costs[self.calls % len(self.costs)]
        self.calls += 1


def test_time_callable_stops_once_the_median_is_pinned(monkeypatch):
    clock = FakeClock([0.002])
    monkeypatch.setattr(timing, "time", clock)
    t = timing.time_callable(clock.call, budget_s=2.0, warmup_s=0.01)
    assert t.stable and t.median_ms == pytest.approx(2.0) and t.p90_ms == pytest.approx(2.0)
    assert t.iterations == timing.STABLE_MIN_ITERS  # the first check after the minimum pins it
    d = t.to_dict()
    assert set(d) == {"median_ms", "p90_ms", "mean_ms", "min_ms", "iterations", "seconds", "stable", "cpu_ms"}
    assert d["cpu_ms"] == 0.0


def test_time_callable_spends_its_budget_when_the_median_wanders(monkeypatch):
    clock = FakeClock([0.001, 0.003])  # bimodal: the median's interval never narrows to +-1 %
    monkeypatch.setattr(timing, "time", clock)
    t = timing.time_callable(clock.call, budget_s=0.3, min_iters=5, warmup_s=0.01)
    assert not t.stable and t.min_ms == pytest.approx(1.0) and t.p90_ms == pytest.approx(3.0)
    assert 0.3 <= t.seconds < 0.31 and t.iterations == pytest.approx(150, abs=2)


def test_median_interval():
    lo, hi = timing.median_interval(np.arange(101.0))
    assert lo < 50 < hi and hi - lo < 25


def test_environment_record():
    env = machine.environment()
    assert env["cpu"]["cores"] >= 1 and isinstance(env["cpu"]["flags"], list)
    assert env["libraries"]["onnxruntime"] and env["libraries"]["torch"]
    assert {"commit", "glsr", "platform", "python", "accelerators", "loadavg", "date"} <= set(env)
    assert "torch" in cases.available_backends() and "onnx" in cases.available_backends()
    with pytest.raises(ValueError, match="unknown benchmark backend"):
        cases.available_backends(["tflite"])


@pytest.mark.parametrize("cpu, slug", [
    ({"model": "Intel(R) Xeon(R) Processor", "cores": 2, "flags": ["avx2", "avx512f", "avx512_vnni"]},
     "intel-xeon-avx512-2c"),
    ({"model": "AMD EPYC", "cores": 2, "flags": ["avx", "avx2", "fma"]}, "amd-epyc-avx2-2c"),
    ({"model": "Intel(R) Core(TM) i7-8750H CPU @ 2.20GHz", "cores": 6, "flags": ["avx2"]},
     "intel-i7-8750h-avx2-6c"),
    ({"model": "Qualcomm Kryo", "cores": 8, "flags": ["asimd", "fphp"]}, "qualcomm-kryo-neon-8c"),
])
def test_machine_slug_names_one_kind_of_machine(cpu, slug):
    assert machine.machine_slug(cpu) == slug


@pytest.mark.parametrize("variant, names", [
    ("small", ["global_reinit", "global_regress", "local_reinit", "local_regress_left_eye",
               "local_regress_right_eye", "local_regress_nose", "local_regress_mouth"]),
    ("large", ["global_reinit", "global_regress"]),
    ("b2", ["global_regress", "global_regress2"]),
])
def test_sub_networks(variant, names):
    m = create_model(variant, "68", **TINY)
    subs = m.sub_networks()
    assert [s[0] for s in subs] == names
    for name, mod, shape in subs:  # every sub-network runs alone on its input shape
        with torch.no_grad():
            mod.eval()(torch.zeros(shape))


def fake_results():
    def case(v, b, t, ms):
        return {"variant": v, "backend": b, "threads": t, "batch": 1, "artifact": f"{v}.{b}", "format": b,
                "precision": "fp32", "sampler": "gridsample", "input_size": 384, "size_bytes": 8_000_000,
                "load_s": 0.1, "network": {"median_ms": ms, "p90_ms": ms * 1.1, "mean_ms": ms, "min_ms": ms * 0.9,
                                           "iterations": 100, "seconds": 1.0, "stable": True},
                "fps": 1e3 / ms, "end_to_end": {"median_ms": ms + 0.5, "p90_ms": ms + 0.7},
                "fps_end_to_end": 1e3 / (ms + .5),
                "loadavg_before": [0.1, 0.1, 0.1], "loadavg_after": [0.1, 0.1, 0.1]}
    return {"environment": machine.environment(), "config": {"variants": ["small", "large"]},
            "models": {"small": {"params": 1.8e6, "macs": 6e7, "input_size": 384, "stages": ["a", "b"],
                                 "paper_params_m": 1.83, "paper_flops_g": 0.0577},
                       "large": {"params": 2.4e7, "macs": 5.3e9, "input_size": 384, "stages": ["a"],
                                 "paper_params_m": 24.39, "paper_flops_g": 5.28}},
            "cases": [case("small", "torch", 1, 20.0), case("small", "onnx", 1, 2.0), case("small", "mnn", 1, 3.0),
                      case("large", "onnx", 1, 100.0), case("large", "onnx", 2, 60.0)],
            "glue": [{"variant": "small", "threads": 1, "runtimes": {"onnx": {
                "whole_ms": 2.0, "sum_ms": 1.9, "glue_ms": 0.1, "overhead": 0.0526, "subnets_ms": {"x": 1.9}}}}],
            "profiles": [{"variant": "small", "runtime": "onnx", "threads": 1, "runs": 10, "kernel_ms": 2.0,
                          "by_op": [{"op": "Conv", "ms": 1.0, "share": 0.5, "nodes": 3}],
                          "by_node": [{"node": "n1", "ms": 0.5, "share": 0.25}]}],
            "errors": []}


def test_summary_and_reports(tmp_path):
    r = fake_results()
    s = bench.summarize(r)
    assert set(s) == {"eager_vs_exported"}  # goals are checked outside the package (benchmarks.goals)
    (sp,) = s["eager_vs_exported"]
    assert sp["speedup"] == pytest.approx(10.0) and sp["best_backend"] == "onnx"
    r["summary"] = s
    md = bench.markdown(r)
    for needle in ("## Latency", "## Resampling / STN glue", "## PyTorch eager", "## Profiles",
                   "| small | onnx | 1 | 1 | 2.000 |"):
        assert needle in md, needle
    assert "goal" not in md.lower() and "| met |" not in md
    paths = bench.write_results(r, tmp_path / "res", "b")
    assert set(paths) == {"json", "md", "png"}
    assert json.loads(paths["json"].read_text())["cases"][0]["variant"] == "small"
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "res").glob("*.tmp"))


@pytest.mark.slow  # 20-40 s on a 2-vCPU AMD EPYC; the default suite stays under 5 minutes there
def test_tiny_run_in_process(small_ckpt, tmp_path):
    cfg = bench.BenchConfig(variants=["small"], backends=["torch", "onnx", "mnn"], threads=[1], batches=(1, 2),
                            budget_s=0.05, checkpoint=str(small_ckpt), glue_budget_s=0.02, isolate=False,
                            work=str(tmp_path / "w"), progress=lambda m: None)
    r = bench.run_benchmark(cfg)
    assert not r["errors"], r["errors"]
    keys = {(c["backend"], c["batch"]) for c in r["cases"]}
    assert keys == {(b, n) for b in ("torch", "onnx", "mnn") for n in (1, 2)}
    for c in r["cases"]:
        assert c["network"]["median_ms"] > 0 and c["end_to_end"]["median_ms"] > 0
        assert c["fps"] == pytest.approx(c["batch"] * 1e3 / c["network"]["median_ms"], rel=1e-3)
    assert r["models"]["small"]["params"] > 0 and r["models"]["small"]["macs"] > 0
    (glue,) = r["glue"]
    assert set(glue["runtimes"]) == {"onnx", "mnn"}
    for v in glue["runtimes"].values():
        assert len(v["subnets_ms"]) == 7 and v["whole_ms"] > 0
    assert {p["runtime"] for p in r["profiles"]} == {"onnx", "mnn"}
    assert any(op["op"] == "GridSample" for op in next(p for p in r["profiles"] if p["runtime"] == "onnx")["by_op"])
    assert r["environment"]["commit"] is not None and r["summary"]["eager_vs_exported"]


def test_isolated_case_and_cli(small_ckpt, tmp_path, capsys):
    model = artifacts.build_model("small", checkpoint=small_ckpt)
    arts = artifacts.export_artifacts(model, ["onnx"], tmp_path / "a", 1)
    rec = worker.run_case_isolated(cases.Case("small", "onnx", 1, 1, str(arts["onnx"]), budget_s=0.05))
    assert rec["backend"] == "onnx" and rec["network"]["median_ms"] > 0 and "end_to_end" in rec
    with pytest.raises(RuntimeError, match="failed"):
        worker.run_case_isolated(cases.Case("small", "onnx", 1, 1, str(tmp_path / "missing.onnx")))

    from glsr.cli import main

    out = tmp_path / "res"
    code = main(["bench", "--weights", str(small_ckpt), "--backends", "onnx", "--threads", "1", "--quick",
                 "--no-isolate", "--no-glue", "--no-profile", "-o", str(out), "--name", "t"])
    assert code == 0
    assert {p.name for p in out.iterdir()} == {"t.json", "t.md", "t.png"}
    assert "| small | onnx | 1 | 1 |" in capsys.readouterr().out


@pytest.mark.slow  # 20-40 s on a 2-vCPU AMD EPYC; the default suite stays under 5 minutes there
def test_isolated_glue_and_profile_tasks(small_ckpt, tmp_path):
    """Glue and profiles run in their own processes (one runtime per process) in the real benchmark."""
    model = artifacts.build_model("small", checkpoint=small_ckpt)
    arts = artifacts.export_artifacts(model, ["onnx"], tmp_path / "a", 1)
    prof = worker.run_isolated("profile", {"format": "onnx", "path": str(arts["onnx"]), "threads": 1}, "p")
    assert prof["runtime"] == "onnx" and "glue" in prof["by_scope"] and prof["glue_by_op"]
    assert prof["other_load_cores"] is None or prof["other_load_cores"] >= 0
    spec = {"variant": "small", "checkpoint": str(small_ckpt), "whole": {"onnx": str(arts["onnx"])}, "threads": 1,
            "runtimes": ["onnx"], "work": str(tmp_path / "subs"), "budget_s": 0.05, "rounds": 1}
    glue = worker.run_isolated("glue", spec, "g")
    assert set(glue["runtimes"]) == {"onnx"} and len(glue["runtimes"]["onnx"]["subnets_ms"]) == 7


def test_scope_of_profiled_nodes():
    assert profile.scope_of("/regress/features/features.2/conv/conv.2/Relu_output_0_nchwc") == "regress"
    assert profile.scope_of("/local_regress.3/fc/fc.0/Gemm") == "local_regress"
    assert profile.scope_of("/reinit/localization/localization.0/Conv_output_0") == "reinit"
    assert profile.scope_of("/GridSample_1") == "glue" and profile.scope_of("/MatMul_3_output_0") == "glue"
