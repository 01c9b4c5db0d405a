"""What machine a benchmark runs on and how busy it is: CPU model and SIMD flags, cores, library versions,
accelerators, the name of its kind (:func:`machine_slug`), and the load other processes put on the CPU during a
measurement."""
from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from glsr.metadata import git_commit


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


def loadavg() -> Optional[List[float]]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):  # pragma: no cover
        return None


def _cpu_seconds() -> Optional[Tuple[float, float]]:
    """``(busy, mine)`` CPU seconds so far: the whole machine's (``/proc/stat``) and this process's + its
    finished children's; ``None`` where ``/proc`` is missing."""
    import resource

    try:
        f = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    busy = (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / tick  # user nice system irq softirq steal
    me = resource.getrusage(resource.RUSAGE_SELF)
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return busy, me.ru_utime + me.ru_stime + ch.ru_utime + ch.ru_stime


class OtherLoad:
    """Cores kept busy by *other* processes while a block runs (machine CPU time minus ours, per wall second).

    Measurements taken while other work shares the cores are not this machine's speed; every case records it.
    """

    def __enter__(self) -> "OtherLoad":
        self.start, self.t0, self.cores = _cpu_seconds(), time.perf_counter(), None
        return self

    def __exit__(self, *exc) -> None:
        end = _cpu_seconds()
        if self.start is not None and end is not None:
            wall = max(time.perf_counter() - self.t0, 1e-6)
            self.cores = round(max(0.0, (end[0] - self.start[0]) - (end[1] - self.start[1])) / wall, 2)


def wait_for_idle(max_wait_s: float, threshold: float = 0.25, probe_s: float = 1.0,
                  progress: Optional[Callable[[str], None]] = None) -> Tuple[float, Optional[float]]:
    """Wait until other processes use less than ``threshold`` cores (probing ``probe_s`` at a time) or
    ``max_wait_s`` passed; returns ``(seconds waited, last other load)``."""
    t0 = time.perf_counter()
    while True:
        with OtherLoad() as ol:
            time.sleep(probe_s)
        waited = time.perf_counter() - t0
        if ol.cores is None or ol.cores < threshold or waited >= max_wait_s:
            return round(waited, 1), ol.cores
        if progress:
            progress(f"[bench]   other processes use {ol.cores:.2f} cores; waiting ({waited:.0f}/{max_wait_s:.0f} s)")


INTERESTING_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                     "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "avx_vnni", "neon", "asimd",
                     "asimddp", "fphp", "asimdhp", "sve", "i8mm")
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
"""CPU flags of int8 dot-product instructions (x86: AVX-512 VNNI, AVX-VNNI, AMX int8; Arm: SDOT, I8MM), the ones
int8 kernels need to beat fp32 ones."""


def int8_flags(cpu: Dict[str, Any]) -> List[str]:
    """The int8 instruction flags (:data:`INT8_FLAGS`) of a recorded ``environment()["cpu"]``, in that order."""
    have = set(cpu.get("flags") or ())
    return [f for f in INT8_FLAGS if f in have]


def cpu_info() -> Dict[str, Any]:
    """CPU model and the SIMD flags that matter to inference runtimes (Linux ``/proc/cpuinfo``, macOS sysctl)."""
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            k, _, v = line.partition(":")
            k = k.strip().lower()
            if k in ("model name", "hardware", "cpu model") and not model:
                model = v.strip()
            elif k in ("flags", "features"):
                flags.update(v.split())
    except OSError:
        if sys.platform == "darwin":  # pragma: no cover
            try:
                model = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                       text=True, timeout=5).stdout.strip()
            except (OSError, subprocess.SubprocessError):
                pass
    model = model or platform.processor() or platform.machine()
    return {"model": model, "cores": cpu_count(), "logical_cpus": os.cpu_count(),
            "flags": sorted(f for f in flags if f in INTERESTING_FLAGS)}


SIMD_LEVELS: Tuple[Tuple[str, str], ...] = (("avx512", "avx512f"), ("avx2", "avx2"), ("neon", "asimd"),
                                            ("neon", "neon"))
"""(name, cpuinfo flag), best first: the instruction-set level that sets a runtime's kernels."""

_MODEL_NOISE = {"processor", "cpu", "core", "genuine", "genuineintel", "authenticamd", "with", "radeon", "graphics"}


def machine_slug(cpu: Optional[Dict[str, Any]] = None) -> str:
    """Folder name for one kind of machine's results: CPU model words, SIMD level, usable cores.

    ``"Intel(R) Xeon(R) Processor"`` with AVX-512 on 2 cores -> ``intel-xeon-avx512-2c``; ``"AMD EPYC"`` with
    AVX2 -> ``amd-epyc-avx2-2c``; ``"Intel(R) Core(TM) i7-8750H CPU @ 2.20GHz"`` -> ``intel-i7-8750h-avx2-6c``.
    """
    cpu = cpu if cpu is not None else cpu_info()
    model = re.sub(r"\((r|tm)\)", " ", str(cpu.get("model", "")).lower()).split("@")[0]
    words = [w for w in re.findall(r"[a-z0-9]+", model) if w not in _MODEL_NOISE]
    flags = set(cpu.get("flags", ()))
    if not flags and platform.machine().lower() in ("arm64", "aarch64"):
        flags = {"asimd"}  # macOS reports no flags; every arm64 core has NEON
    simd = next((name for name, flag in SIMD_LEVELS if flag in flags), "generic")
    return "-".join(["-".join(words)[:40].strip("-") or "cpu", simd, f"{cpu.get('cores', cpu_count())}c"])


def library_versions() -> Dict[str, Optional[str]]:
    import importlib.metadata as md

    out: Dict[str, Optional[str]] = {}
    for dist in ("torch", "onnxruntime", "MNN", "onnx", "onnxsim", "numpy", "opencv-python", "coremltools"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


def environment() -> Dict[str, Any]:
    """Machine, CPU flags, library versions, glsr version and commit, available accelerators."""
    import glsr
    from glsr.metadata import git_commit

    return {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(), "platform": platform.platform(),
            "python": platform.python_version(), "cpu": cpu_info(), "libraries": library_versions(),
            "glsr": glsr.__version__, "commit": git_commit(), "accelerators": accelerators(),
            "loadavg": loadavg()}


def accelerators() -> Dict[str, bool]:
    out = {"cuda": False, "ort-cuda": False, "darwin": sys.platform == "darwin"}
    try:
        import torch

        out["cuda"] = bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - torch missing or broken CUDA
        pass
    try:
        import onnxruntime as ort

        out["ort-cuda"] = "CUDAExecutionProvider" in ort.get_available_providers()
    except Exception:  # noqa: BLE001
        pass
    return out
