"""Android target: MNN benchmark.out output parsing (recorded samples, see tests/data/README.md) and the adb
flow replayed against a fake adb."""
import subprocess
from pathlib import Path

import pytest

from glsr.bench.android import Adb, AndroidTarget, android_markdown, parse_benchmark_output

DATA = Path(__file__).resolve().parent / "data"


def test_parse_current_format():
    run = parse_benchmark_output((DATA / "mnn_benchmark_android.txt").read_text())
    assert (run.forward, run.threads, run.precision, run.loop, run.warmup) == ("CPU", 4, 2, 50, 10)
    assert run.options["sparsity"] == "0" and run.options["testQuantizedModel"] == "0"
    assert run.device_supports["fp16"] == "1" and run.device_supports["i8mm"] == "0"
    (m,) = run.models
    assert (m.model, m.max_ms, m.min_ms, m.avg_ms, m.quantized) == ("small_fp32.mnn", 6.874, 4.915, 5.342, False)
    assert m.fps == pytest.approx(1000 / 5.342)
    assert run.to_dict()["models"][0]["fps"] == pytest.approx(187.2, abs=0.1)


def test_parse_old_format_and_quantized_lines():
    run = parse_benchmark_output((DATA / "mnn_benchmark_android_v1.txt").read_text())
    assert (run.forward, run.threads, run.precision, run.loop, run.warmup) == ("CPU", 4, 2, 20, 5)
    assert run.models[0].model == "large_fp32.mnn" and run.models[0].avg_ms == 209.806
    line = "[ - ] %-24s    max = %8.3f ms  min = %8.3f ms  avg = %8.3f ms" % ("quant-small_int8.mnn", 3.5, 2.25, 2.5)
    q = parse_benchmark_output(line).models[0]
    assert q.quantized and q.model == "small_int8.mnn" and q.avg_ms == 2.5
    long_name = "[ - ] %-24s    max = %8.3f ms  min = %8.3f ms  avg = %8.3f ms" % ("a" * 40 + ".mnn", 1, 1, 1)
    assert parse_benchmark_output(long_name).models[0].model == "a" * 40 + ".mnn"


def test_parse_rejects_output_without_timings():
    with pytest.raises(ValueError, match="no '\\[ - \\] MODEL"):
        parse_benchmark_output("MNN benchmark\nUsage: ./benchmark.out models_folder [loop_count] ...\n")


class FakeAdb:
    """Records adb invocations; replays the recorded benchmark output for the benchmark command."""

    def __init__(self, benchmark_output: str):
        self.calls = []
        self.output = benchmark_output

    def __call__(self, cmd, capture_output=True, text=True, timeout=None):
        self.calls.append(cmd)
        args = cmd[cmd.index("shell") + 1:] if "shell" in cmd else []
        out = ""
        if args and args[0].startswith("getprop"):
            out = {"ro.product.model": "Pixel 7", "ro.product.manufacturer": "Google", "ro.board.platform": "gs201",
                   "ro.product.cpu.abi": "arm64-v8a", "ro.build.version.release": "14"}[args[0].split()[1]] + "\n"
        elif args and args[0].startswith("grep -c"):
            out = "8\n"
        elif args and "benchmark.out" in args[0]:
            out = self.output
        return subprocess.CompletedProcess(cmd, 0, out, "")


@pytest.fixture
def bins(tmp_path):
    b = tmp_path / "benchmark.out"
    b.write_bytes(b"\x7fELF fake")
    lib = tmp_path / "libMNN.so"
    lib.write_bytes(b"\x7fELF fake")
    model = tmp_path / "small_fp32.mnn"
    model.write_bytes(b"mnn")
    return b, lib, model


def test_android_flow_pushes_runs_and_parses(bins):
    b, lib, model = bins
    fake = FakeAdb((DATA / "mnn_benchmark_android.txt").read_text())
    target = AndroidTarget(b, [lib], Adb("adb", serial="R58M", runner=fake))
    (res,) = target.run([model], loop=50, warmup=10, threads=4, precision=2)
    cmds = [" ".join(c) for c in fake.calls]
    assert all(c.startswith("adb -s R58M ") for c in cmds)
    assert any(c.endswith(f"push {b} /data/local/tmp/glsr-bench/benchmark.out") for c in cmds)
    assert any(c.endswith(f"push {lib} /data/local/tmp/glsr-bench/libMNN.so") for c in cmds)
    # each model in its own folder (benchmark.out times every file of the folder it is given)
    assert any(c.endswith(f"push {model} /data/local/tmp/glsr-bench/models_small_fp32/small_fp32.mnn") for c in cmds)
    assert "chmod 0755" in " ".join(cmds)
    assert res.command.endswith("./benchmark.out /data/local/tmp/glsr-bench/models_small_fp32 50 10 0 4 2")
    assert "LD_LIBRARY_PATH=/data/local/tmp/glsr-bench" in res.command
    assert res.device["model"] == "Pixel 7" and res.device["cpus"] == "8"
    assert res.run.models[0].avg_ms == 5.342
    md = android_markdown([res])
    assert "Pixel 7" in md and "| small_fp32.mnn | CPU | 4 | 2 | 50 | 5.342 |" in md
    assert res.to_dict()["device"]["abi"] == "arm64-v8a"


def test_android_errors(bins, tmp_path):
    b, lib, model = bins
    with pytest.raises(FileNotFoundError, match="build MNN's benchmark.out"):
        AndroidTarget(tmp_path / "missing.out")
    target = AndroidTarget(b, adb=Adb(runner=FakeAdb("")))
    with pytest.raises(ValueError, match="not an .mnn file"):
        target.run([b])
    with pytest.raises(ValueError, match="forward must be"):
        target.run([model], forward="NPU")
    with pytest.raises(ValueError, match="no .mnn models"):
        target.run([])
    with pytest.raises(ValueError, match="no '\\[ - \\] MODEL"):  # the binary printed nothing useful
        target.run([model])

    def missing(cmd, **kw):
        raise FileNotFoundError(cmd[0])

    with pytest.raises(FileNotFoundError, match="install Android platform-tools"):
        Adb("adb-nope", runner=missing).devices()

    def failing(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "error: no devices/emulators found")

    with pytest.raises(RuntimeError, match="no devices"):
        Adb(runner=failing).shell("ls")


def test_devices_listing():
    def runner(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 0, "List of devices attached\nR58M\tdevice\nemu-5554\toffline\n\n", "")

    assert Adb(runner=runner).devices() == ["R58M"]
