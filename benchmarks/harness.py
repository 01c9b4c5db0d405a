"""Speed benchmarks of G&LSR_ω variants across backends, threads and batch sizes (``glsr bench``).

What one run measures (each case in a fresh Python process unless ``isolate=False``, so thread pools of one
runtime never spin beside another's):

* **network**: ``backend.run(crops)`` on random normalized crops ``[B, 3, S, S]`` (the exported graph alone);
* **end-to-end**: :meth:`glsr.runtime.predictor.Predictor.predict` on a photo with ``B`` face boxes: crop +
  normalize (``crop_batch``), the network, and ``uncrop`` — what a user's call costs;
* warm-up (at least :data:`WARMUP_CALLS` calls and :data:`WARMUP_S` seconds), then time-boxed iterations until
  the median is stable (95 % order-statistic interval within ±:data:`STABLE_REL` of it, at least
  :data:`MIN_ITERS` calls) or the case's budget is spent; median, p90, mean, min, fps (= batch / median);
* model size (artifact bytes), parameters and MACs (:mod:`glsr.models.complexity`);
* **glue**: the whole graph against the sum of its sub-networks run alone (global reinit / loc net, global
  regressor, local reinit, local regressors), each exported to ONNX on its own (and converted to MNN) and timed
  with the same runtime and threads; overhead = whole / sum - 1 is what the in-graph resampling / STN glue costs;
* **eager vs exported**: torch eager network time over the fastest exported runtime's, same threads and batch.

Every result carries the machine description (:func:`environment`: CPU model and flags, cores, library
versions, commit, load average before and after each case). Results are written as JSON, a Markdown table and a
PNG plot, each atomically (temporary file + rename).

Exports go through :func:`glsr.export.export_model` (ONNX: onnxsim-simplified, onnxruntime with all graph
optimizations; MNN: MNN's converter, precision ``high`` = fp32 unless told otherwise).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
"""Recorded results, one folder per kind of machine (:func:`machine_slug`); machine-independent studies at the top."""
WARMUP_CALLS = 3
WARMUP_S = 0.3
MIN_ITERS = 10
STABLE_REL = 0.01
STABLE_MIN_ITERS = 60

# Backend names of the benchmark -> (artifact format, backend options, needs)
BACKENDS: Dict[str, Dict[str, Any]] = {
    "torch": {"format": "pt", "label": "PyTorch eager (CPU)"},
    "onnx": {"format": "onnx", "label": "onnxruntime (CPU, ORT_ENABLE_ALL)"},
    "mnn": {"format": "mnn", "label": "MNN (CPU)"},
    "torch-cuda": {"format": "pt", "label": "PyTorch eager (CUDA)", "needs": "cuda"},
    "onnx-cuda": {"format": "onnx", "label": "onnxruntime (CUDAExecutionProvider)", "needs": "ort-cuda"},
    "coreml": {"format": "mlpackage", "label": "Core ML (macOS)", "needs": "darwin"},
}
EXPORTED = ("onnx", "mnn", "coreml", "onnx-cuda")

# Performance goals of the runtime issue (whole chain in one exported graph, batch 1, median, best backend).
FPS_GOALS: Tuple[Dict[str, Any], ...] = (
    {"variant": "small", "threads": 1, "fps": 400.0},
    {"variant": "medium", "threads": 1, "fps": 120.0},
    {"variant": "large", "threads": 1, "fps": 9.0},
    {"variant": "large", "threads": 2, "fps": 18.0},
)
GLUE_GOAL = 0.15          # resampling / STN glue <= 15 % over the sum of the sub-networks
EAGER_SPEEDUP_GOAL = 3.5  # exported runtime >= 3.5x faster than PyTorch eager


# ------------------------------------------------------------------------------------------ small utilities


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write text atomically (:mod:`glsr.atomic`: temporary file beside it + rename)."""
    from glsr.atomic import write_text

    return write_text(path, text)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    from glsr.atomic import write_bytes

    return write_bytes(path, data)


@contextlib.contextmanager
def private_cwd():
    """Run the block in a fresh temporary working folder (then return and delete it).

    MNN's converter (3.6.1) spills large constants into a fixed-name scratch file, ``.__convert_external_data.bin``,
    in the *current* folder; two conversions running at once in one folder (two test runs, a pipeline beside a
    test run) overwrite each other's and silently produce models with wrong fully-connected weights. Every export
    made here runs in its own folder; paths handed to it must be absolute.
    """
    import shutil

    old = os.getcwd()
    tmp = tempfile.mkdtemp(prefix="glsr-cwd-")
    os.chdir(tmp)
    try:
        yield Path(tmp)
    finally:
        os.chdir(old)
        shutil.rmtree(tmp, ignore_errors=True)


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


def artifact_size(path: str | os.PathLike) -> int:
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


# ------------------------------------------------------------------------------------------ environment

INTERESTING_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                     "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "avx_vnni", "neon", "asimd",
                     "asimddp", "fphp", "asimdhp", "sve", "i8mm")


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


def machine_results_dir(cpu: Optional[Dict[str, Any]] = None) -> Path:
    """Where this machine's benchmark results are recorded by default: ``results/<machine_slug>``."""
    return RESULTS_DIR / machine_slug(cpu)


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


def available_backends(requested: Sequence[str] | None = None) -> List[str]:
    """Backends to run here: CPU ones always; CUDA ones when a GPU is present; Core ML on macOS."""
    acc = accelerators()
    names = list(requested) if requested else [b for b in BACKENDS if acc.get(BACKENDS[b].get("needs", ""), True)]
    unknown = [b for b in names if b not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown benchmark backend(s) {unknown}; choose from {list(BACKENDS)}")
    return [b for b in names if acc.get(BACKENDS[b].get("needs", ""), True)]


# ------------------------------------------------------------------------------------------ timing


@dataclass
class Timing:
    """Latency statistics of one timed callable, milliseconds."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    iterations: int
    seconds: float
    stable: bool
    cpu_ms: float = float("nan")   # median process CPU time per call (all threads); >> median_ms x threads = busy

    def to_dict(self) -> Dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in dataclasses.asdict(self).items()}


def median_interval(ts: np.ndarray) -> Tuple[float, float]:
    """Distribution-free ~95 % interval of the median (order statistics)."""
    s = np.sort(ts)
    n = len(s)
    half = 1.96 * math.sqrt(n) / 2
    lo = max(int(math.floor(n / 2 - half)), 0)
    hi = min(int(math.ceil(n / 2 + half)), n - 1)
    return float(s[lo]), float(s[hi])


def time_callable(fn: Callable[[], Any], budget_s: float = 3.0, min_iters: int = MIN_ITERS,
                  max_iters: int = 100_000, warmup_s: float = WARMUP_S, warmup_calls: int = WARMUP_CALLS,
                  stable_rel: float = STABLE_REL) -> Timing:
    """Warm up, then call ``fn`` until the median is stable or ``budget_s`` is spent (at least ``min_iters``)."""
    t0 = time.perf_counter()
    k = 0
    while k < warmup_calls or time.perf_counter() - t0 < warmup_s:
        fn()
        k += 1
        if time.perf_counter() - t0 > max(warmup_s, budget_s / 4) and k >= 1:
            break
    ts: List[float] = []
    cpu: List[float] = []
    start = time.perf_counter()
    stable = False
    while len(ts) < max_iters:
        c = time.process_time()
        a = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - a)
        cpu.append(time.process_time() - c)
        n = len(ts)
        elapsed = time.perf_counter() - start
        if n >= STABLE_MIN_ITERS and n % 20 == 0:
            arr = np.asarray(ts)
            lo, hi = median_interval(arr)
            med = float(np.median(arr))
            if (hi - lo) / 2 <= stable_rel * med:
                stable = True
                break
        if n >= min_iters and elapsed >= budget_s:
            break
    arr = np.asarray(ts) * 1e3
    if not stable and len(arr) >= 5:
        lo, hi = median_interval(arr)
        stable = (hi - lo) / 2 <= 2 * stable_rel * float(np.median(arr))
    return Timing(float(np.median(arr)), float(np.percentile(arr, 90)), float(arr.mean()), float(arr.min()), len(arr),
                  round(time.perf_counter() - start, 3), stable, float(np.median(cpu)) * 1e3)


# ------------------------------------------------------------------------------------------ models & artifacts


def random_mean_shape(num_points: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.6, 0.6, (num_points, 2))


def build_model(variant: str, scheme: str = "68", checkpoint: Optional[str | os.PathLike] = None):
    """The network to benchmark: a checkpoint's, or an untrained variant (speed does not depend on weights)."""
    from glsr.models import create_model, load_checkpoint
    from glsr.schemes import get_scheme

    if checkpoint is not None:
        return load_checkpoint(checkpoint)
    try:
        model = create_model(variant, scheme)
    except (ImportError, ModuleNotFoundError):  # default mean shape unavailable: any shape times the same
        model = create_model(variant, scheme, mean_shape=random_mean_shape(get_scheme(scheme).num_points))
    return model.eval()


def export_artifacts(model, formats: Sequence[str], out_dir: Path, batch: int, precision: str = "fp32"
                     ) -> Dict[str, Path]:
    """Artifacts of ``model`` for each format: ``.pt`` via :func:`save_checkpoint`, the rest through one
    :func:`glsr.export.export_model` call (one ONNX trace shared by ONNX and MNN; parity is the pipeline's job)."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    out: Dict[str, Path] = {}
    if "pt" in formats:
        from glsr.models import save_checkpoint

        out["pt"] = out_dir / f"{model.cfg.name}.pt"
        save_checkpoint(model, out["pt"])
    fmts = [f for f in formats if f != "pt"]
    if fmts:
        from glsr.export import export_model
        from glsr.export.formats import FORMATS

        with private_cwd():
            res = export_model(model=model, formats=fmts, precision=precision, batch=batch, out_dir=out_dir,
                               parity=False, name=model.cfg.name)
        by_suffix = {FORMATS[f].suffix: f for f in fmts}
        for p in res.artifacts:
            fmt = next((f for sfx, f in by_suffix.items() if p.name.endswith(sfx)), None)
            if fmt is not None:
                out[fmt] = Path(p)
        missing = [f for f in fmts if f not in out]
        if missing:
            raise RuntimeError(f"export_model wrote {[p.name for p in res.artifacts]}, nothing for {missing}")
    return out


# ------------------------------------------------------------------------------------------ one case


@dataclass
class Case:
    """One benchmark configuration; ``artifact`` is the model file the backend opens."""

    variant: str
    backend: str
    threads: int
    batch: int
    artifact: str
    budget_s: float = 3.0
    end_to_end: bool = True
    image: Optional[str] = None
    precision: Optional[str] = None

    def key(self) -> str:
        return f"{self.variant}/{self.backend}/t{self.threads}/b{self.batch}"


def _face_image(path: Optional[str], batch: int) -> Tuple[np.ndarray, np.ndarray]:
    """A photo and ``batch`` face boxes on it (the same centred box repeated; a synthetic image without photo)."""
    from glsr.runtime.io import read_image

    if path and Path(path).is_file():
        image = read_image(path)
    else:
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    h, w = image.shape[:2]
    s = 0.45 * min(h, w)
    box = np.array([w / 2 - s / 2, h / 2 - s / 2, w / 2 + s / 2, h / 2 + s / 2])
    return image, np.repeat(box[None], batch, axis=0)


class _CudaTorch:
    """PyTorch eager on CUDA (timed with synchronisation); only built when a GPU is present."""

    def __init__(self, path: str):
        import torch

        from glsr.models import load_checkpoint

        self.torch = torch
        self.model = load_checkpoint(path).cuda().eval()

    def run(self, x: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            y = self.model(self.torch.from_numpy(x).cuda())
            self.torch.cuda.synchronize()
            return y.cpu().numpy()


def run_case(case: Case) -> Dict[str, Any]:
    """Time one case in this process; returns a result record (see module docstring)."""
    from glsr.runtime.predictor import Predictor

    before = loadavg()
    opts: Dict[str, Any] = {}
    if case.backend == "onnx-cuda":
        opts["providers"] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    t_load = time.perf_counter()
    predictor = Predictor.from_file(case.artifact, threads=case.threads, precision=case.precision, **opts)
    load_s = time.perf_counter() - t_load
    meta = predictor.metadata
    run = _CudaTorch(case.artifact).run if case.backend == "torch-cuda" else predictor.backend.run
    s = meta.input_size
    x = np.random.default_rng(0).standard_normal((case.batch, 3, s, s)).astype(np.float32)
    out = run(x)
    if np.asarray(out).shape != (case.batch, meta.num_points, 2):
        raise RuntimeError(f"{case.key()}: output shape {np.shape(out)} != {(case.batch, meta.num_points, 2)}")
    net = time_callable(lambda: run(x), case.budget_s)
    rec: Dict[str, Any] = {
        "variant": case.variant, "backend": case.backend, "threads": case.threads, "batch": case.batch,
        "artifact": Path(case.artifact).name, "format": meta.format, "precision": meta.precision,
        "sampler": meta.sampler, "input_size": s, "size_bytes": artifact_size(case.artifact),
        "load_s": round(load_s, 3), "network": net.to_dict(),
        "fps": round(case.batch * 1e3 / net.median_ms, 2),
    }
    if case.end_to_end and case.backend != "torch-cuda":
        image, boxes = _face_image(case.image, case.batch)
        e2e = time_callable(lambda: predictor.predict(image, boxes), case.budget_s)
        rec["end_to_end"] = e2e.to_dict()
        rec["fps_end_to_end"] = round(case.batch * 1e3 / e2e.median_ms, 2)
        rec["image_size"] = list(image.shape[:2])
    rec["loadavg_before"], rec["loadavg_after"] = before, loadavg()
    return rec


def run_isolated(task: str, spec: Dict[str, Any], label: str, timeout_s: float = 1800) -> Dict[str, Any]:
    """Run a worker task (``case``, ``glue``, ``profile``) in a fresh interpreter; its JSON result, with the other
    processes' load during the run as ``other_load_cores``."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    with OtherLoad() as ol:
        r = subprocess.run([sys.executable, "-m", "benchmarks.harness", "--task", task, "--spec", json.dumps(spec)],
                           capture_output=True, text=True, timeout=timeout_s, env=env, cwd=root)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-8:])
        raise RuntimeError(f"benchmark {task} {label} failed (exit {r.returncode}):\n{tail}")
    rec = json.loads(lines[-1])
    rec["other_load_cores"] = ol.cores
    return rec


def run_case_isolated(case: Case, timeout_s: float = 900) -> Dict[str, Any]:
    """:func:`run_case` in a fresh interpreter (``python -m benchmarks.harness --task case --spec JSON``)."""
    return run_isolated("case", dataclasses.asdict(case), case.key(), timeout_s)


def glue_task(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Worker: :func:`glue_overhead` for ``spec`` = variant, scheme, checkpoint, whole {fmt: path}, threads,
    work, budget_s, rounds (the model is rebuilt; sub-network speed does not depend on weights)."""
    import torch

    torch.manual_seed(0)
    model = build_model(spec["variant"], spec.get("scheme", "68"), spec.get("checkpoint"))
    return glue_overhead(model, {k: Path(v) for k, v in spec["whole"].items()}, int(spec["threads"]),
                         Path(spec["work"]), float(spec["budget_s"]), runtimes=spec.get("runtimes", ("onnx", "mnn")),
                         rounds=int(spec.get("rounds", 3)))


def profile_task(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Worker: :func:`profile_onnx` / :func:`profile_mnn` of ``spec["path"]`` at ``spec["threads"]``."""
    path, threads = Path(spec["path"]), int(spec.get("threads", 1))
    return profile_onnx(path, threads) if spec["format"] == "onnx" else profile_mnn(path, threads)


TASKS: Dict[str, Callable[[Dict[str, Any]], Dict[str, Any]]] = {
    "case": lambda spec: run_case(Case(**spec)), "glue": glue_task, "profile": profile_task}


# ------------------------------------------------------------------------------------------ glue overhead


def sub_networks(model) -> List[Tuple[str, Any, Tuple[int, ...]]]:
    """``(name, module, input shape)`` of every learned sub-network of a GLSRNet, in execution order."""
    cfg = model.cfg
    n = model.scheme.num_points
    subs: List[Tuple[str, Any, Tuple[int, ...]]] = []
    if model.reinit is not None:
        subs.append(("global_reinit", model.reinit, (1, 3, cfg.loc_size, cfg.loc_size)))
    subs.append(("global_regress", model.regress, (1, 3, cfg.face_size, cfg.face_size)))
    if model.regress2 is not None:
        subs.append(("global_regress2", model.regress2, (1, 3, cfg.face_size, cfg.face_size)))
    if model.local_reinit is not None:
        subs.append(("local_reinit", model.local_reinit, (1, n, 2)))
        for j, net in enumerate(model.local_regress):
            subs.append((f"local_regress_{model.scheme.part_names[j]}", net, (1, 3, cfg.part_size, cfg.part_size)))
    return subs


def export_sub_onnx(module, shape: Tuple[int, ...], path: Path, batch: int = 1) -> Path:
    """Export one sub-network alone (same opset and onnxsim pass as :mod:`glsr.export`); written atomically."""
    import warnings

    import onnx
    import torch

    from glsr.export.formats import DEFAULT_OPSET
    from glsr.export.onnx_export import simplify

    x = torch.zeros((batch,) + tuple(shape[1:]))
    raw = path.with_name(path.stem + ".raw.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (x,), str(raw), input_names=["x"], output_names=["y"],
                          opset_version=DEFAULT_OPSET, dynamo=False)
    proto = simplify(onnx.load(str(raw)))
    raw.unlink()
    tmp = path.with_name(path.stem + ".tmp.onnx")
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)
    return path


class RawOnnx:
    """A bare onnxruntime session (same options as :class:`glsr.runtime.backends.OnnxBackend`)."""

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        self.s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        i = self.s.get_inputs()[0]
        self.name = i.name
        self.x = np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in i.shape]
                                                          ).astype(np.float32)

    def __call__(self):
        return self.s.run(None, {self.name: self.x})


class RawMNN:
    """A bare MNN module (same runtime settings as :class:`glsr.runtime.backends.MNNBackend`)."""

    def __init__(self, path: Path, threads: int, shape: Sequence[int], precision: str = "high"):
        import MNN

        self.expr = MNN.expr
        rt = MNN.nn.create_runtime_manager(({"backend": "CPU", "precision": precision, "numThread": threads},))
        info = MNN.nn.load_module_from_file(str(path), [], [], runtime_manager=rt).get_info()
        self.m = MNN.nn.load_module_from_file(str(path), list(info["inputNames"]), list(info["outputNames"]),
                                              runtime_manager=rt)
        x = np.random.default_rng(0).standard_normal(tuple(shape)).astype(np.float32)
        self.x = MNN.expr.const(x, list(x.shape), MNN.expr.NCHW)

    def __call__(self):
        y = self.m.forward([self.x])
        y = y[0] if isinstance(y, (list, tuple)) else y
        return y.read()


def glue_overhead(model, whole: Dict[str, Path], threads: int, work: Path, budget_s: float = 2.0,
                  runtimes: Sequence[str] = ("onnx", "mnn"), rounds: int = 3) -> Dict[str, Any]:
    """Whole exported graph vs the sum of its sub-networks exported and run alone, per runtime.

    Whole graph and sub-networks are timed in ``rounds`` interleaved rounds; each keeps the lowest of its
    per-round medians, so a burst of other load on a shared machine hits one round, not the comparison.
    """
    from glsr.export.mnn_export import convert_onnx

    work.mkdir(parents=True, exist_ok=True)
    subs = sub_networks(model)
    onnx_paths = {name: work / f"{model.cfg.name}_{name}.onnx" for name, _, _ in subs}
    for name, mod, shape in subs:
        if not onnx_paths[name].is_file():  # one export per run folder (speed does not depend on weights)
            export_sub_onnx(mod, shape, onnx_paths[name])
    shapes = {name: shape for name, _, shape in subs}
    out: Dict[str, Any] = {"variant": model.cfg.name, "threads": threads, "rounds": rounds, "runtimes": {}}
    s = model.cfg.input_size
    for rt in runtimes:
        if rt not in whole:
            continue
        runners: Dict[str, Callable[[], Any]] = {}
        for name, p in onnx_paths.items():
            if rt == "onnx":
                runners[name] = RawOnnx(p, threads)
            else:
                mp = p.with_suffix(".mnn")
                if not mp.exists():
                    meta = _meta_for(model, f"{model.cfg.name}/{name}")
                    with private_cwd():
                        convert_onnx(p.resolve(), mp.resolve(), meta)
                runners[name] = RawMNN(mp, threads, shapes[name])
        runners["__whole__"] = RawOnnx(whole[rt], threads) if rt == "onnx" else RawMNN(whole[rt], threads, (1, 3, s, s))
        best: Dict[str, float] = {}
        for _ in range(max(rounds, 1)):
            for name, fn in runners.items():
                m = time_callable(fn, budget_s / max(rounds, 1)).median_ms
                best[name] = min(best.get(name, float("inf")), m)
        w = best.pop("__whole__")
        total = sum(best.values())
        out["runtimes"][rt] = {"whole_ms": round(w, 4), "sum_ms": round(total, 4),
                               "subnets_ms": {k: round(v, 4) for k, v in best.items()},
                               "glue_ms": round(w - total, 4), "overhead": round(w / total - 1, 4)}
    return out


def _meta_for(model, variant_label: str):
    from glsr.runtime.processing import metadata_for

    return dataclasses.replace(metadata_for(model, format="mnn", batch="1"), variant=variant_label)


# ------------------------------------------------------------------------------------------ profiles


SUBNET_SCOPES = ("reinit", "regress", "regress2", "local_reinit", "local_regress")


def scope_of(node: str) -> str:
    """Which learned sub-network a profiled node belongs to (by its name's first path component), else
    ``"glue"`` (resampling, affine grids, theta algebra, index gathers, layout conversions between them)."""
    head = node.lstrip("/").split("/", 1)[0].split(".", 1)[0]
    return head if head in SUBNET_SCOPES else "glue"


def _scopes(by_node: Dict[str, float], by_node_op: Dict[str, str], total: float, runs: int, top: int,
            scale: float) -> Dict[str, Any]:
    import collections

    scopes: collections.Counter = collections.Counter()
    glue_ops: collections.Counter = collections.Counter()
    glue_nodes = 0
    for node, d in by_node.items():
        sc = scope_of(node)
        scopes[sc] += d
        if sc == "glue":
            glue_ops[by_node_op.get(node, "?")] += d
            glue_nodes += 1
    return {"by_scope": {k: round(v * scale / runs, 4) for k, v in scopes.most_common()},
            "glue_nodes": glue_nodes,
            "glue_by_op": [{"op": k, "ms": round(v * scale / runs, 4), "share_of_total": round(v / total, 4)}
                           for k, v in glue_ops.most_common(top)]}


def profile_onnx(path: Path, threads: int, runs: int = 100, top: int = 12) -> Dict[str, Any]:
    """Per-op-type and per-node kernel time from onnxruntime's profiler (ms per run)."""
    import collections

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.enable_profiling = True
    tmp = Path(tempfile.mkdtemp(prefix="glsr-prof-"))
    so.profile_file_prefix = str(tmp / "ort")
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    i = s.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
    warmup = 10
    for _ in range(warmup + runs):
        s.run(None, {i.name: x})
    prof = Path(s.end_profiling())
    events = json.loads(prof.read_text())
    prof.unlink(missing_ok=True)
    by_op: collections.Counter = collections.Counter()
    by_node: collections.Counter = collections.Counter()
    node_op: Dict[str, str] = {}
    count: collections.Counter = collections.Counter()
    run_ends = sorted(e["ts"] + e["dur"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    t_after_warmup = run_ends[warmup - 1] if len(run_ends) > warmup else -1
    n_runs = sum(1 for t in run_ends if t > t_after_warmup)
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time") and e["ts"] > t_after_warmup:
            op = e["args"].get("op_name", "?")
            by_op[op] += e["dur"]
            node = e["name"][: -len("_kernel_time")]
            by_node[node] += e["dur"]
            node_op[node] = op
            count[op] += 1
    n_runs = max(n_runs, 1)
    total = sum(by_op.values())
    return {"runtime": "onnx", "threads": threads, "runs": n_runs, "kernel_ms": round(total / n_runs / 1e3, 4),
            "by_op": [{"op": k, "ms": round(v / n_runs / 1e3, 4), "share": round(v / total, 4),
                       "nodes": count[k] // n_runs} for k, v in by_op.most_common(top)],
            "by_node": [{"node": k, "ms": round(v / n_runs / 1e3, 4), "share": round(v / total, 4)}
                        for k, v in by_node.most_common(top)],
            **_scopes(by_node, node_op, total, n_runs, top, 1e-3)}


def profile_mnn(path: Path, threads: int, runs: int = 8, top: int = 12, precision: str = "high") -> Dict[str, Any]:
    """Per-op-type and per-op wall time from MNN's session callbacks (ms per run; callbacks add a little).

    MNN 3.6.1's ``runSessionWithCallBackInfo`` degrades after about a dozen calls on one session (per-run time
    grows tenfold and stays high even for plain ``runSession``), so a few runs are profiled on a fresh session and
    runs slower than 1.5x the plain runs' median are dropped; ``plain_ms`` is that median.
    """
    import collections

    import MNN

    itp = MNN.Interpreter(str(path))
    sess = itp.createSession({"backend": "CPU", "numThread": threads, "precision": precision})
    inp = itp.getSessionInput(sess)
    shape = tuple(inp.getShape())
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    inp.copyFrom(MNN.Tensor(shape, MNN.Halide_Type_Float, x, MNN.Tensor_DimensionType_Caffe))
    plain = []
    for i in range(8):
        t0 = time.perf_counter()
        itp.runSession(sess)
        if i >= 3:
            plain.append(time.perf_counter() - t0)
    plain_s = float(np.median(plain))
    start: Dict[str, float] = {}
    node_op: Dict[str, str] = {}
    per_run: List[Dict[str, float]] = []

    def begin(tensors, info):
        start["t"] = time.perf_counter()
        return True

    def end(tensors, info):
        d = time.perf_counter() - start["t"]
        name = info.getName()
        node_op[name] = info.getType()
        per_run[-1][name] = per_run[-1].get(name, 0.0) + d
        return True

    for _ in range(runs):
        per_run.append({})
        itp.runSessionWithCallBackInfo(sess, begin, end)
    kept = [r for r in per_run if sum(r.values()) <= 1.5 * plain_s] or per_run[:1]
    by_node: collections.Counter = collections.Counter()
    for r in kept:
        by_node.update(r)
    by_op: collections.Counter = collections.Counter()
    for k, v in by_node.items():
        by_op[node_op[k]] += v
    n = len(kept)
    total = sum(by_op.values())
    return {"runtime": "mnn", "threads": threads, "runs": n, "plain_ms": round(plain_s * 1e3, 4),
            "kernel_ms": round(total / n * 1e3, 4),
            "by_op": [{"op": k, "ms": round(v / n * 1e3, 4), "share": round(v / total, 4)}
                      for k, v in by_op.most_common(top)],
            "by_node": [{"node": k, "ms": round(v / n * 1e3, 4), "share": round(v / total, 4)}
                        for k, v in by_node.most_common(top)],
            **_scopes(by_node, node_op, total, n, top, 1e3)}


# ------------------------------------------------------------------------------------------ the whole run


@dataclass
class BenchConfig:
    variants: Sequence[str] = ("small", "medium", "large")
    backends: Optional[Sequence[str]] = None           # None = every backend available here
    threads: Optional[Sequence[int]] = None            # None = (1, all cores)
    batches: Sequence[int] = (1,)
    budget_s: float = 3.0                              # per timed measurement
    scheme: str = "68"
    checkpoint: Optional[str] = None                   # benchmark this checkpoint (its variant) instead
    precision: str = "fp32"
    end_to_end: bool = True
    glue: bool = True
    glue_budget_s: float = 1.5
    profile: bool = True
    isolate: bool = True
    image: Optional[str] = None                        # photo for end-to-end timings (synthetic when None)
    wait_idle_s: float = 0.0                           # before each case, wait up to this long for other load to stop
    retries: int = 0                                   # re-run a case that shared the CPU (other load > busy)
    busy: float = 0.25                                 # other processes' cores above which a case counts as shared
    work: Optional[str] = None                         # artifacts folder (a temporary one when None)
    progress: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))

    def resolved_threads(self) -> List[int]:
        return sorted(set(self.threads or (1, cpu_count())))


def run_benchmark(cfg: BenchConfig) -> Dict[str, Any]:
    """Export, time every case, measure glue and profiles; returns the full result dict."""
    from glsr.models.complexity import count_macs, count_params

    t_start = time.time()
    backends = available_backends(cfg.backends)
    threads = cfg.resolved_threads()
    work = (Path(cfg.work) if cfg.work else Path(tempfile.mkdtemp(prefix="glsr-bench-"))).resolve()
    variants = list(cfg.variants)
    results: Dict[str, Any] = {"schema": 1, "environment": environment(),
                               "config": {"variants": variants, "backends": backends, "threads": threads,
                                          "batches": list(cfg.batches), "budget_s": cfg.budget_s,
                                          "scheme": cfg.scheme, "precision": cfg.precision,
                                          "checkpoint": cfg.checkpoint, "isolate": cfg.isolate,
                                          "image": cfg.image},
                               "models": {}, "cases": [], "glue": [], "profiles": [], "errors": []}
    for variant in variants:
        model = build_model(variant, cfg.scheme, cfg.checkpoint)
        variant = model.cfg.name
        results["models"][variant] = {"params": count_params(model), "macs": int(count_macs(model)),
                                      "input_size": model.cfg.input_size, "stages": list(model.cfg.stages),
                                      "paper_params_m": model.cfg.paper_params_m,
                                      "paper_flops_g": model.cfg.paper_flops_g}
        vdir = work / variant
        artifacts: Dict[Tuple[str, int], Path] = {}
        fmts = sorted({BACKENDS[b]["format"] for b in backends})
        for batch in cfg.batches:
            want = [f for f in fmts if f != "pt" or batch == cfg.batches[0]]
            cfg.progress(f"[bench] export {variant} {'+'.join(want)} batch {batch}")
            try:
                got = export_artifacts(model, want, vdir / f"b{batch}", batch, cfg.precision)
            except Exception as e:  # noqa: BLE001 - report and keep benchmarking the rest
                results["errors"].append({"variant": variant, "formats": want, "batch": batch, "stage": "export",
                                          "error": f"{e.__class__.__name__}: {e}"})
                cfg.progress(f"[bench]   export failed: {e}")
                continue
            for f, p in got.items():
                artifacts[(f, batch)] = p
        pt = next((p for (f, _), p in artifacts.items() if f == "pt"), None)
        if pt is not None:
            for batch in cfg.batches:
                artifacts[("pt", batch)] = pt
        for b in backends:
            fmt = BACKENDS[b]["format"]
            for t in threads:
                for batch in cfg.batches:
                    art = artifacts.get((fmt, batch))
                    if art is None:
                        continue
                    case = Case(variant, b, t, batch, str(art), cfg.budget_s, cfg.end_to_end, cfg.image)
                    cfg.progress(f"[bench] {case.key()}")
                    rec, waited = None, None
                    try:
                        for attempt in range(cfg.retries + 1):
                            if cfg.wait_idle_s > 0:
                                waited = wait_for_idle(cfg.wait_idle_s, cfg.busy, progress=cfg.progress)
                            if cfg.isolate:
                                r = run_case_isolated(case)
                            else:
                                with OtherLoad() as ol:
                                    r = run_case(case)
                                r["other_load_cores"] = ol.cores
                            r["attempts"] = attempt + 1
                            if rec is None or (r.get("other_load_cores") or 0) < (rec.get("other_load_cores") or 0):
                                rec = r
                            if (r.get("other_load_cores") or 0) <= cfg.busy:
                                break
                            cfg.progress(f"[bench]   shared the CPU with {r['other_load_cores']:.2f} other cores; "
                                         f"{'again' if attempt < cfg.retries else 'keeping the quietest run'}")
                    except Exception as e:  # noqa: BLE001
                        results["errors"].append({"case": case.key(), "stage": "run",
                                                  "error": f"{e.__class__.__name__}: {e}"})
                        cfg.progress(f"[bench]   failed: {e}")
                        continue
                    if waited is not None:
                        rec["waited_for_idle_s"] = waited[0]
                    results["cases"].append(rec)
                    msg = f"net {rec['network']['median_ms']:.3f} ms ({rec['fps']:.1f} fps)"
                    if "end_to_end" in rec:
                        msg += f", end-to-end {rec['end_to_end']['median_ms']:.3f} ms"
                    if rec.get("other_load_cores") is not None:
                        msg += f"; other processes {rec['other_load_cores']:.2f} cores"
                    cfg.progress(f"[bench]   {msg}")
        whole = {fmt: p for (fmt, batch), p in artifacts.items() if batch == 1 and fmt in ("onnx", "mnn")}
        if cfg.glue and whole:
            for t in threads:
                cfg.progress(f"[bench] glue overhead {variant} threads {t}")
                try:
                    if cfg.wait_idle_s > 0:
                        wait_for_idle(cfg.wait_idle_s, cfg.busy, progress=cfg.progress)
                    g = {"variant": variant, "threads": t, "runtimes": {}, "other_load_cores": 0.0}
                    for rt in whole:  # one runtime per process: thread pools of two runtimes never coexist
                        spec = {"variant": variant, "scheme": cfg.scheme, "checkpoint": cfg.checkpoint,
                                "whole": {k: str(v) for k, v in whole.items()}, "threads": t, "runtimes": [rt],
                                "work": str(vdir / "subnets"), "budget_s": cfg.glue_budget_s}
                        if cfg.isolate:
                            r = run_isolated("glue", spec, f"{variant} {rt} threads {t}")
                        else:
                            with OtherLoad() as ol:
                                r = glue_task(spec)
                            r["other_load_cores"] = ol.cores
                        g["runtimes"].update(r["runtimes"])
                        g["rounds"] = r.get("rounds")
                        g["other_load_cores"] = max(g["other_load_cores"], r.get("other_load_cores") or 0.0)
                    results["glue"].append(g)
                except Exception as e:  # noqa: BLE001
                    results["errors"].append({"variant": variant, "stage": "glue",
                                              "error": f"{e.__class__.__name__}: {e}"})
        if cfg.profile and whole:
            cfg.progress(f"[bench] profile {variant} (1 thread)")
            for fmt, p in whole.items():
                try:
                    spec = {"format": fmt, "path": str(p), "threads": 1}
                    prof = run_isolated("profile", spec, f"{variant} {fmt}") if cfg.isolate else profile_task(spec)
                    results["profiles"].append({"variant": variant, **prof})
                except Exception as e:  # noqa: BLE001
                    results["errors"].append({"variant": variant, "stage": f"profile-{fmt}",
                                              "error": f"{e.__class__.__name__}: {e}"})
    results["summary"] = summarize(results)
    results["environment"]["loadavg_end"] = loadavg()
    results["wall_s"] = round(time.time() - t_start, 1)
    return results


# ------------------------------------------------------------------------------------------ merging runs


def _quiet_key(rec: Dict[str, Any]) -> Tuple[float, float]:
    """Order records by interference first (other processes' load), then by latency."""
    other = rec.get("other_load_cores")
    lat = rec["network"]["median_ms"] if "network" in rec else min(
        (r["whole_ms"] for r in rec.get("runtimes", {}).values()), default=0.0)
    return (round(float("inf") if other is None else other, 1), lat)


def merge_results(runs: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """One result from several runs on the same machine: per case (variant, backend, threads, batch), per glue
    (variant, threads) and per profile (variant, runtime), the record measured with the least interference from
    other processes (ties: the lower latency). Meant for shared machines where no single run is quiet
    throughout; the environment of the first run is kept and every run's date and commit are listed."""
    if not runs:
        raise ValueError("nothing to merge")

    def pick(key_fn, items):
        best: Dict[Any, Dict[str, Any]] = {}
        for rec in items:
            k = key_fn(rec)
            if k not in best or _quiet_key(rec) < _quiet_key(best[k]):
                best[k] = rec
        return list(best.values())

    base = json.loads(json.dumps(runs[0]))
    cpus = {r["environment"]["cpu"]["model"] for r in runs}
    if len(cpus) > 1:
        raise ValueError(f"refusing to merge runs from different CPUs: {sorted(cpus)}")
    base["cases"] = pick(lambda c: (c["variant"], c["backend"], c["threads"], c["batch"]),
                         [c for r in runs for c in r["cases"]])
    base["glue"] = pick(lambda g: (g["variant"], g["threads"]), [g for r in runs for g in r["glue"]])
    base["profiles"] = [p for r in reversed(runs) for p in r["profiles"]]
    seen, profiles = set(), []
    for p in base["profiles"]:  # the latest run's profile of each (variant, runtime)
        if (p["variant"], p["runtime"]) not in seen:
            seen.add((p["variant"], p["runtime"]))
            profiles.append(p)
    base["profiles"] = profiles
    for r in runs[1:]:
        for v, m in r.get("models", {}).items():
            base["models"].setdefault(v, m)
    base["errors"] = [e for r in runs for e in r.get("errors", [])]
    base["merged_from"] = [{"date": r["environment"]["date"], "commit": r["environment"]["commit"],
                            "cases": len(r["cases"])} for r in runs]
    base["summary"] = summarize(base)
    return base


# ------------------------------------------------------------------------------------------ summary / goals


def best_exported(cases: Iterable[Dict[str, Any]], variant: str, threads: int, batch: int = 1
                  ) -> Optional[Dict[str, Any]]:
    rows = [c for c in cases if c["variant"] == variant and c["threads"] == threads and c["batch"] == batch
            and c["backend"] in EXPORTED]
    return min(rows, key=lambda c: c["network"]["median_ms"]) if rows else None


def summarize(results: Dict[str, Any]) -> Dict[str, Any]:
    """Goal checks: fps per variant/threads (best exported backend), glue overhead, eager speed-up."""
    cases = results["cases"]
    goals = []
    for g in FPS_GOALS:
        best = best_exported(cases, g["variant"], g["threads"])
        if best is None:
            continue
        goals.append({"goal": f"{g['variant']} {g['threads']} thread{'s' if g['threads'] > 1 else ''} >= "
                              f"{g['fps']:g} fps", "measured": best["fps"], "backend": best["backend"],
                      "met": best["fps"] >= g["fps"], "ratio": round(best["fps"] / g["fps"], 3)})
    for gl in results["glue"]:
        for rt, r in gl["runtimes"].items():
            goals.append({"goal": f"glue {gl['variant']} {rt} {gl['threads']}t <= {GLUE_GOAL:.0%}",
                          "measured": r["overhead"], "met": r["overhead"] <= GLUE_GOAL})
    speedups = []
    for c in cases:
        if c["backend"] != "torch":
            continue
        best = best_exported(cases, c["variant"], c["threads"], c["batch"])
        if best is None:
            continue
        sp = c["network"]["median_ms"] / best["network"]["median_ms"]
        speedups.append({"variant": c["variant"], "threads": c["threads"], "batch": c["batch"],
                         "torch_ms": c["network"]["median_ms"], "best_backend": best["backend"],
                         "best_ms": best["network"]["median_ms"], "speedup": round(sp, 3)})
        goals.append({"goal": f"exported >= {EAGER_SPEEDUP_GOAL:g}x eager: {c['variant']} {c['threads']}t "
                              f"b{c['batch']}", "measured": round(sp, 3), "met": sp >= EAGER_SPEEDUP_GOAL})
    return {"goals": goals, "eager_vs_exported": speedups}


# ------------------------------------------------------------------------------------------ reports


def _f(v: Optional[float], fmt: str = ".2f") -> str:
    return "" if v is None else format(v, fmt)


def markdown(results: Dict[str, Any]) -> str:
    env = results["environment"]
    cpu = env["cpu"]
    libs = ", ".join(f"{k} {v}" for k, v in env["libraries"].items() if v)
    out = ["# glsr benchmark", "",
           f"- date: {env['date']}; host: {env['host']}; {env['platform']}; Python {env['python']}",
           f"- CPU: {cpu['model']} — {cpu['cores']} usable cores; flags: {' '.join(cpu['flags'])}",
           f"- libraries: {libs}",
           f"- glsr {env['glsr']}, commit {env['commit'] or 'unknown'}; load average at start {env.get('loadavg')}, "
           f"end {env.get('loadavg_end')}",
           f"- settings: {json.dumps(results['config'])}"]
    if results.get("merged_from"):
        out.append("- merged from runs "
                   + "; ".join(f"{m['date']} ({m['cases']} cases)" for m in results["merged_from"])
                   + ": each row is the run of that case with the least load from other processes")
    out.append("")
    if results["models"]:
        out += ["## Models", "", "| variant | params | MACs | input | paper params | paper FLOPs | stages |",
                "|---|---:|---:|---:|---:|---:|---|"]
        for v, m in results["models"].items():
            out.append(f"| {v} | {m['params'] / 1e6:.2f} M | {m['macs'] / 1e6:.1f} M | {m['input_size']} | "
                       f"{_f(m['paper_params_m'])} M | {_f((m['paper_flops_g'] or 0) * 1e3, '.1f')} M | "
                       f"{' > '.join(m['stages'])} |")
        out.append("")
    out += ["## Latency", "",
            "Network = the exported graph on ready crops; end-to-end = `Predictor.predict` on a photo (crop + "
            "normalize + network + uncrop). Median and p90 in ms; fps = batch / median. Other load = cores kept busy "
            "by other processes during the case (machine CPU time minus the benchmark's): above ~0.2 the case "
            "shared the CPU and its figures are pessimistic.", "",
            "| variant | backend | threads | batch | net median | net p90 | fps | e2e median | e2e p90 | e2e fps | "
            "size MB | iters | stable | other load |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for c in sorted(results["cases"], key=lambda c: (list(results["models"]).index(c["variant"])
                                                     if c["variant"] in results["models"] else 0,
                                                     c["threads"], c["batch"], c["backend"])):
        e = c.get("end_to_end") or {}
        out.append(f"| {c['variant']} | {c['backend']} | {c['threads']} | {c['batch']} | "
                   f"{c['network']['median_ms']:.3f} | {c['network']['p90_ms']:.3f} | {c['fps']:.1f} | "
                   f"{_f(e.get('median_ms'), '.3f')} | {_f(e.get('p90_ms'), '.3f')} | "
                   f"{_f(c.get('fps_end_to_end'), '.1f')} | "
                   f"{c['size_bytes'] / 1e6:.2f} | {c['network']['iterations']} | "
                   f"{'yes' if c['network']['stable'] else 'no'} | {_f(c.get('other_load_cores'))} |")
    out.append("")
    summ = results.get("summary") or summarize(results)
    if summ["goals"]:
        out += ["## Goals", "", "| goal | measured | met |", "|---|---:|---|"]
        for g in summ["goals"]:
            m = g["measured"]
            ms = f"{m:.1%}" if g["goal"].startswith("glue") else (f"{m:.1f} fps ({g['backend']})" if "fps" in g["goal"]
                                                                  else f"{m:.2f}x")
            out.append(f"| {g['goal']} | {ms} | {'yes' if g['met'] else '**no**'} |")
        out.append("")
    if results["glue"]:
        out += ["## Resampling / STN glue", "",
                "Whole exported graph vs the sum of its sub-networks exported and timed alone (same runtime, "
                "threads, batch 1); the difference is the in-graph glue (crop->loc / face / part resampling, "
                "theta algebra, index gathers).", "",
                "| variant | runtime | threads | whole ms | sum of sub-networks ms | glue ms | overhead | other load "
                "| sub-networks (ms) |",
                "|---|---|---:|---:|---:|---:|---:|---:|---|"]
        for g in results["glue"]:
            for rt, r in g["runtimes"].items():
                subs = ", ".join(f"{k} {v:.3f}" for k, v in r["subnets_ms"].items())
                out.append(f"| {g['variant']} | {rt} | {g['threads']} | {r['whole_ms']:.3f} | {r['sum_ms']:.3f} | "
                           f"{r['glue_ms']:.3f} | {r['overhead']:.1%} | {_f(g.get('other_load_cores'))} | {subs} |")
        out.append("")
    if summ["eager_vs_exported"]:
        out += ["## PyTorch eager vs the best exported runtime", "",
                "| variant | threads | batch | torch ms | best exported | ms | speed-up |",
                "|---|---:|---:|---:|---|---:|---:|"]
        for s in summ["eager_vs_exported"]:
            out.append(f"| {s['variant']} | {s['threads']} | {s['batch']} | {s['torch_ms']:.3f} | "
                       f"{s['best_backend']} | "
                       f"{s['best_ms']:.3f} | {s['speedup']:.2f}x |")
        out.append("")
    if results["profiles"]:
        out += ["## Profiles (1 thread, batch 1)", "",
                "onnxruntime: kernel times from its profiler; MNN: wall time between its per-op callbacks.", ""]
        for p in results["profiles"]:
            out += [f"### {p['variant']} — {p['runtime']} (sum {p['kernel_ms']:.3f} ms per run)", ""]
            if p.get("by_scope"):
                out += ["Time by sub-network: " + ", ".join(f"{k} {v:.3f} ms" for k, v in p["by_scope"].items())
                        + f"; the glue is {p['glue_nodes']} nodes: "
                        + ", ".join(f"{g['op']} {g['ms']:.3f} ms" for g in p["glue_by_op"][:8]) + ".", ""]
            out += ["| op type | ms | share | | node | ms | share |", "|---|---:|---:|---|---|---:|---:|"]
            for a, b in zip(p["by_op"] + [None] * 12, p["by_node"] + [None] * 12):
                if a is None and b is None:
                    break
                left = f"{a['op']} | {a['ms']:.3f} | {a['share']:.1%}" if a else " | | "
                right = f"{b['node'][:60]} | {b['ms']:.3f} | {b['share']:.1%}" if b else " | | "
                out.append(f"| {left} | | {right} |")
            out.append("")
    if results["errors"]:
        out += ["## Errors", ""] + [f"- {json.dumps(e)}" for e in results["errors"]] + [""]
    return "\n".join(out)


def plot(results: Dict[str, Any], path: str | os.PathLike) -> Optional[Path]:
    """Bar chart: fps per variant x backend, one panel per thread count (log scale), goal markers."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = [c for c in results["cases"] if c["batch"] == 1] or results["cases"]
    if not cases:
        return None
    threads = sorted({c["threads"] for c in cases})
    variants = [v for v in results["models"] if any(c["variant"] == v for c in cases)]
    backends = [b for b in BACKENDS if any(c["backend"] == b for c in cases)]
    fig, axes = plt.subplots(1, len(threads), figsize=(5.5 * len(threads), 4.2), squeeze=False)
    width = 0.8 / max(len(backends), 1)
    for ax, t in zip(axes[0], threads):
        for i, b in enumerate(backends):
            vals = []
            for v in variants:
                c = next((c for c in cases if c["variant"] == v and c["backend"] == b and c["threads"] == t), None)
                vals.append(c["fps"] if c else 0.0)
            xs = np.arange(len(variants)) + (i - (len(backends) - 1) / 2) * width
            ax.bar(xs, vals, width, label=b)
            for x, val in zip(xs, vals):
                if val > 0:
                    ax.text(x, val * 1.05, f"{val:.0f}", ha="center", va="bottom", fontsize=7)
        for g in FPS_GOALS:
            if g["threads"] == t and g["variant"] in variants:
                k = variants.index(g["variant"])
                ax.hlines(g["fps"], k - 0.45, k + 0.45, colors="k", linestyles="--", linewidth=1)
        ax.set_xticks(np.arange(len(variants)), variants)
        ax.set_yscale("log")
        ax.set_title(f"{t} thread{'s' if t > 1 else ''}, batch 1 (network; dashed = goal)")
        ax.set_ylabel("frames per second")
        ax.legend(fontsize=8)
    fig.suptitle(f"glsr — {results['environment']['cpu']['model']}", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return write_bytes_atomic(path, buf.getvalue())


def write_results(results: Dict[str, Any], out_dir: str | os.PathLike, stem: str = "bench") -> Dict[str, Path]:
    """``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` in ``out_dir``, each written atomically."""
    out = Path(out_dir)
    paths = {"json": write_text_atomic(out / f"{stem}.json", json.dumps(results, indent=2, default=str)),
             "md": write_text_atomic(out / f"{stem}.md", markdown(results))}
    png = plot(results, out / f"{stem}.png")
    if png is not None:
        paths["png"] = png
    return paths


# ------------------------------------------------------------------------------------------ worker entry


def _main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="benchmark worker: run one task and print its JSON record")
    ap.add_argument("--task", required=True, choices=sorted(TASKS))
    ap.add_argument("--spec", required=True, help="JSON arguments of the task")
    args = ap.parse_args(argv)
    print(json.dumps(TASKS[args.task](json.loads(args.spec))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
