"""Android target: push ``.mnn`` artifacts and MNN's ``benchmark.out`` over adb, run it, parse its report.

MNN's Python wheel ships no benchmark binary (only ``mnn``, ``mnnconvert``, ``mnnquant``); build
``benchmark.out`` for the phone from MNN's source (``-DMNN_BUILD_BENCHMARK=ON`` with the NDK toolchain, see
``benchmarks/README.md``) and pass it with its ``libMNN.so`` (unless linked statically).

``benchmark.out MODELS_DIR LOOP WARMUP FORWARD THREADS PRECISION`` times every file in ``MODELS_DIR`` and prints,
per model, one line (MNN's ``benchmark/benchmark.cpp``, ``displayStats``)::

    [ - ] small_fp32.mnn              max =    9.412 ms  min =    7.903 ms  avg =    8.210 ms

after a header naming the forward type, threads and precision. It reports max / min / mean only (no median);
:func:`parse_benchmark_output` reads both the older (``Forward type: **CPU** thread=4** precision=2``) and the
newer header (``Forward type: CPU thread=4 precision=2 sparsity=0 ...``). Each model goes into its own folder on
the device because the binary runs *every* file of the folder it is given.

Precision (MNN ``BackendConfig::PrecisionMode``): 0 normal, 1 high (fp32), 2 low (fp16 on ARMv8.2 cores; MNN's
default and the paper's setting). Forward type 0 = CPU, 3 = OpenCL, 7 = Vulkan.
"""
from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

REMOTE_DIR = "/data/local/tmp/glsr-bench"
FORWARD_TYPES = {"CPU": 0, "OpenCL": 3, "Vulkan": 7}

_LINE = re.compile(r"^\[ - \]\s+(?P<name>\S+)\s+max =\s*(?P<max>[\d.]+) ms\s+min =\s*(?P<min>[\d.]+) ms\s+"
                   r"avg =\s*(?P<avg>[\d.]+) ms\s*$")
_HEADER = re.compile(r"Forward type:\s*\**\s*(?P<forward>[\w/]+)\**\s*thread=(?P<threads>\d+)\**\s*"
                     r"precision=(?P<precision>\d+)")
_KV = re.compile(r"(\w+)=([\w.]+)")
_LOOP = re.compile(r"Benchmarking\.\.\. loop = (?P<loop>\d+), warmup = (?P<warmup>\d+)")
_SUPPORTS = re.compile(r"The device supports: (?P<what>.*)$")


@dataclass
class ModelTiming:
    """One ``[ - ]`` line: milliseconds per inference over the loop."""

    model: str
    max_ms: float
    min_ms: float
    avg_ms: float
    quantized: bool = False

    @property
    def fps(self) -> float:
        return 1e3 / self.avg_ms if self.avg_ms > 0 else float("nan")


@dataclass
class BenchmarkRun:
    """A parsed ``benchmark.out`` report."""

    forward: Optional[str] = None
    threads: Optional[int] = None
    precision: Optional[int] = None
    loop: Optional[int] = None
    warmup: Optional[int] = None
    options: Dict[str, str] = field(default_factory=dict)
    device_supports: Dict[str, str] = field(default_factory=dict)
    models: List[ModelTiming] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        for m, t in zip(d["models"], self.models):
            m["fps"] = round(t.fps, 2)
        return d


def parse_benchmark_output(text: str) -> BenchmarkRun:
    """Parse MNN ``benchmark.out`` stdout (see module docstring); ``ValueError`` when it holds no timing line."""
    run = BenchmarkRun()
    for raw in text.splitlines():
        line = raw.strip()
        m = _HEADER.search(line)
        if m:
            run.forward = m["forward"]
            run.threads = int(m["threads"])
            run.precision = int(m["precision"])
            run.options = {k: v for k, v in _KV.findall(line.replace("*", " "))}
            continue
        m = _LOOP.search(line)
        if m:
            run.loop, run.warmup = int(m["loop"]), int(m["warmup"])
            continue
        m = _SUPPORTS.search(line)
        if m:
            run.device_supports = {k.strip(): v.strip() for k, v in
                                   (kv.split(":", 1) for kv in m["what"].split(",") if ":" in kv)}
            continue
        m = _LINE.match(line)
        if m:
            name = m["name"]
            quant = name.startswith("quant-")
            run.models.append(ModelTiming(name[len("quant-"):] if quant else name, float(m["max"]), float(m["min"]),
                                          float(m["avg"]), quant))
    if not run.models:
        tail = "\n".join(text.strip().splitlines()[-5:])
        raise ValueError(f"no '[ - ] MODEL max = .. min = .. avg = ..' line in the benchmark output:\n{tail}")
    return run


# ------------------------------------------------------------------------------------------ adb


Runner = Callable[..., subprocess.CompletedProcess]


class Adb:
    """Thin ``adb`` wrapper; ``runner`` is injectable (tests replay recorded device output)."""

    def __init__(self, adb: str = "adb", serial: Optional[str] = None, runner: Runner = subprocess.run,
                 timeout_s: float = 600):
        self.adb, self.serial, self.runner, self.timeout_s = adb, serial, runner, timeout_s

    def _cmd(self, *args: str) -> List[str]:
        return [self.adb] + (["-s", self.serial] if self.serial else []) + list(args)

    def _run(self, *args: str) -> str:
        try:
            r = self.runner(self._cmd(*args), capture_output=True, text=True, timeout=self.timeout_s)
        except FileNotFoundError:
            raise FileNotFoundError(f"'{self.adb}' not found: install Android platform-tools (adb) or pass --adb PATH"
                                    ) from None
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(self._cmd(*args))} failed ({r.returncode}): "
                               f"{(r.stderr or r.stdout).strip()}")
        return r.stdout

    def devices(self) -> List[str]:
        out = self._run("devices")
        return [ln.split()[0] for ln in out.splitlines()[1:] if ln.strip().endswith("device")]

    def shell(self, command: str) -> str:
        return self._run("shell", command)

    def push(self, local: str | Path, remote: str) -> None:
        self._run("push", str(local), remote)


@dataclass
class AndroidResult:
    device: Dict[str, str]
    run: BenchmarkRun
    command: str

    def to_dict(self) -> Dict[str, Any]:
        return {"device": self.device, "command": self.command, **self.run.to_dict()}


class AndroidTarget:
    """Run MNN's ``benchmark.out`` on a phone over adb for a set of ``.mnn`` artifacts."""

    def __init__(self, benchmark_bin: str | Path, libs: Sequence[str | Path] = (), adb: Optional[Adb] = None,
                 remote_dir: str = REMOTE_DIR):
        self.benchmark_bin = Path(benchmark_bin)
        self.libs = [Path(p) for p in libs]
        self.adb = adb or Adb()
        self.remote = remote_dir.rstrip("/")
        for p in [self.benchmark_bin, *self.libs]:
            if not p.is_file():
                raise FileNotFoundError(f"{p} does not exist (build MNN's benchmark.out for Android: see "
                                        "benchmarks/README.md)")

    def device_info(self) -> Dict[str, str]:
        props = {"model": "ro.product.model", "manufacturer": "ro.product.manufacturer",
                 "soc": "ro.board.platform", "abi": "ro.product.cpu.abi", "android": "ro.build.version.release"}
        info = {k: self.adb.shell(f"getprop {v}").strip() for k, v in props.items()}
        info["cpus"] = self.adb.shell("grep -c ^processor /proc/cpuinfo").strip()
        return info

    def setup(self) -> None:
        q = shlex.quote
        self.adb.shell(f"mkdir -p {q(self.remote)}")
        for p in [self.benchmark_bin, *self.libs]:
            self.adb.push(p, f"{self.remote}/{p.name}")
        self.adb.shell(f"chmod 0755 {q(self.remote + '/' + self.benchmark_bin.name)}")

    def run(self, models: Sequence[str | Path], loop: int = 50, warmup: int = 10, threads: int = 4,
            precision: int = 2, forward: str = "CPU") -> List[AndroidResult]:
        """Push each model into its own folder and benchmark it; one result per model."""
        if forward not in FORWARD_TYPES:
            raise ValueError(f"forward must be one of {list(FORWARD_TYPES)}, got {forward!r}")
        if not models:
            raise ValueError("no .mnn models to benchmark")
        for m in models:
            if Path(m).suffix != ".mnn" or not Path(m).is_file():
                raise ValueError(f"{m} is not an .mnn file (export one with: glsr export --format mnn)")
        self.setup()
        device = self.device_info()
        q = shlex.quote
        out: List[AndroidResult] = []
        for m in models:
            m = Path(m)
            folder = f"{self.remote}/models_{m.stem}"
            self.adb.shell(f"rm -rf {q(folder)} && mkdir -p {q(folder)}")
            self.adb.push(m, f"{folder}/{m.name}")
            cmd = (f"cd {q(self.remote)} && LD_LIBRARY_PATH={q(self.remote)} ./{q(self.benchmark_bin.name)} "
                   f"{q(folder)} {loop} {warmup} {FORWARD_TYPES[forward]} {threads} {precision}")
            out.append(AndroidResult(device, parse_benchmark_output(self.adb.shell(cmd)), cmd))
        return out


def android_markdown(results: Sequence[AndroidResult]) -> str:
    if not results:
        return ""
    d = results[0].device
    lines = [f"# MNN on Android — {d.get('manufacturer', '')} {d.get('model', '')} ({d.get('soc', '')}, "
             f"{d.get('abi', '')}, Android {d.get('android', '')}, {d.get('cpus', '?')} CPUs)", "",
             "MNN benchmark.out reports mean / min / max over the loop (no median); fps = 1000 / mean.", "",
             "| model | forward | threads | precision | loop | avg ms | min ms | max ms | fps |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        for t in r.run.models:
            lines.append(f"| {t.model}{' (quant)' if t.quantized else ''} | {r.run.forward} | {r.run.threads} | "
                         f"{r.run.precision} | {r.run.loop} | {t.avg_ms:.3f} | {t.min_ms:.3f} | {t.max_ms:.3f} | "
                         f"{t.fps:.1f} |")
    return "\n".join(lines) + "\n"
