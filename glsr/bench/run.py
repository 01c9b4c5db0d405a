"""The whole benchmark run (``glsr bench``): export every variant, time every case (each in a fresh process
unless ``isolate=False``), measure glue and profiles, add the eager vs exported speed-ups."""
from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from glsr.bench.artifacts import build_model, export_artifacts
from glsr.bench.cases import BACKENDS, Case, available_backends, run_case
from glsr.bench.machine import OtherLoad, cpu_count, environment, loadavg, wait_for_idle
from glsr.bench.summary import summarize
from glsr.bench.worker import glue_task, profile_task, run_case_isolated, run_isolated
from glsr.models.complexity import count_macs, count_params


@dataclass(frozen=True)
class BenchConfig:
    """What one ``glsr bench`` run measures; ``progress`` receives one line per step."""

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
        artifacts = _export_variant(cfg, model, backends, vdir, results["errors"])
        for b in backends:
            for t in threads:
                for batch in cfg.batches:
                    art = artifacts.get((BACKENDS[b]["format"], batch))
                    if art is not None:
                        _time_case(cfg, Case(variant, b, t, batch, str(art), cfg.budget_s, cfg.end_to_end,
                                             cfg.image), results)
        whole = {fmt: p for (fmt, batch), p in artifacts.items() if batch == 1 and fmt in ("onnx", "mnn")}
        if cfg.glue and whole:
            for t in threads:
                _measure_glue(cfg, variant, whole, t, vdir / "subnets", results)
        if cfg.profile and whole:
            _profile(cfg, variant, whole, results)
    results["summary"] = summarize(results)
    results["environment"]["loadavg_end"] = loadavg()
    results["wall_s"] = round(time.time() - t_start, 1)
    return results


def _export_variant(cfg: BenchConfig, model, backends: Sequence[str], vdir: Path, errors: List[Dict[str, Any]]
                    ) -> Dict[Tuple[str, int], Path]:
    """``{(format, batch): artifact}`` for every format the backends need (one checkpoint serves every batch);
    failed exports are recorded in ``errors``."""
    variant = model.cfg.name
    artifacts: Dict[Tuple[str, int], Path] = {}
    fmts = sorted({BACKENDS[b]["format"] for b in backends})
    for batch in cfg.batches:
        want = [f for f in fmts if f != "pt" or batch == cfg.batches[0]]
        cfg.progress(f"[bench] export {variant} {'+'.join(want)} batch {batch}")
        try:
            got = export_artifacts(model, want, vdir / f"b{batch}", batch, cfg.precision)
        except Exception as e:  # noqa: BLE001 - report and keep benchmarking the rest
            errors.append({"variant": variant, "formats": want, "batch": batch, "stage": "export",
                           "error": f"{e.__class__.__name__}: {e}"})
            cfg.progress(f"[bench]   export failed: {e}")
            continue
        for f, p in got.items():
            artifacts[(f, batch)] = p
    pt = next((p for (f, _), p in artifacts.items() if f == "pt"), None)
    if pt is not None:
        for batch in cfg.batches:
            artifacts[("pt", batch)] = pt
    return artifacts


def _time_case(cfg: BenchConfig, case: Case, results: Dict[str, Any]) -> None:
    """Time one case (waiting for idle and retrying as configured), keeping the least disturbed attempt."""
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
        results["errors"].append({"case": case.key(), "stage": "run", "error": f"{e.__class__.__name__}: {e}"})
        cfg.progress(f"[bench]   failed: {e}")
        return
    if waited is not None:
        rec["waited_for_idle_s"] = waited[0]
    results["cases"].append(rec)
    msg = f"net {rec['network']['median_ms']:.3f} ms ({rec['fps']:.1f} fps)"
    if "end_to_end" in rec:
        msg += f", end-to-end {rec['end_to_end']['median_ms']:.3f} ms"
    if rec.get("other_load_cores") is not None:
        msg += f"; other processes {rec['other_load_cores']:.2f} cores"
    cfg.progress(f"[bench]   {msg}")


def _measure_glue(cfg: BenchConfig, variant: str, whole: Dict[str, Path], threads: int, subnets: Path,
                  results: Dict[str, Any]) -> None:
    """Glue overhead of ``variant`` at ``threads``, one runtime per process (thread pools never coexist)."""
    cfg.progress(f"[bench] glue overhead {variant} threads {threads}")
    try:
        if cfg.wait_idle_s > 0:
            wait_for_idle(cfg.wait_idle_s, cfg.busy, progress=cfg.progress)
        g = {"variant": variant, "threads": threads, "runtimes": {}, "other_load_cores": 0.0}
        for rt in whole:
            spec = {"variant": variant, "scheme": cfg.scheme, "checkpoint": cfg.checkpoint,
                    "whole": {k: str(v) for k, v in whole.items()}, "threads": threads, "runtimes": [rt],
                    "work": str(subnets), "budget_s": cfg.glue_budget_s}
            if cfg.isolate:
                r = run_isolated("glue", spec, f"{variant} {rt} threads {threads}")
            else:
                with OtherLoad() as ol:
                    r = glue_task(spec)
                r["other_load_cores"] = ol.cores
            g["runtimes"].update(r["runtimes"])
            g["rounds"] = r.get("rounds")
            g["other_load_cores"] = max(g["other_load_cores"], r.get("other_load_cores") or 0.0)
        results["glue"].append(g)
    except Exception as e:  # noqa: BLE001
        results["errors"].append({"variant": variant, "stage": "glue", "error": f"{e.__class__.__name__}: {e}"})


def _profile(cfg: BenchConfig, variant: str, whole: Dict[str, Path], results: Dict[str, Any]) -> None:
    """Per-op profiles of ``variant``'s whole graph in each runtime, 1 thread."""
    cfg.progress(f"[bench] profile {variant} (1 thread)")
    for fmt, p in whole.items():
        try:
            spec = {"format": fmt, "path": str(p), "threads": 1}
            prof = run_isolated("profile", spec, f"{variant} {fmt}") if cfg.isolate else profile_task(spec)
            results["profiles"].append({"variant": variant, **prof})
        except Exception as e:  # noqa: BLE001
            results["errors"].append({"variant": variant, "stage": f"profile-{fmt}",
                                      "error": f"{e.__class__.__name__}: {e}"})
