"""Where the host-warp glue goes, step by step (``python -m benchmarks.studies.host_warp_steps [--models small
small-fast] [--rounds 3] [--iters 200]``).

For each model and runtime (onnxruntime, MNN), one thread, batch 1, one real 300-W ``val`` face, every step of
:func:`glsr.runtime.hostwarp.run_host_warp` timed alone in a tight loop on its real inputs (the loc warp, each
graph call, the face warp, the part warps, the local assembly, the uncrop), and the whole ``Predictor.run`` and
``Predictor.predict``; and the graph calls back to back with no host work between them (how much of ``run - sum
of its steps`` the graphs cost each other). Each figure is the lowest of ``--rounds`` interleaved per-round medians, both wall time
and the thread's CPU time (``time.thread_time``: what the step computes, without the time other processes of a
shared machine take the core away). ``run - sum of its steps`` is what running the steps one after the other costs
beyond each alone (caches and branch predictors the previous step left cold). Writes
``benchmarks/results/<machine>/host_warp_steps.{json,md}``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np

from benchmarks import loadavg, missing_300w, study_record, write_record
from glsr.bench.artifacts import private_cwd

RUNTIMES = ("onnx", "mnn")


def _time(fns: Dict[str, Callable[[], Any]], rounds: int, iters: int) -> Dict[str, Dict[str, float]]:
    """``{name: {"wall_ms", "cpu_ms"}}``: lowest per-round median of each, rounds interleaved."""
    best: Dict[str, Dict[str, float]] = {k: {"wall_ms": float("inf"), "cpu_ms": float("inf")} for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(max(iters // 10, 3)):
                fn()
            wall, cpu = [], []
            for _ in range(iters):
                t0, c0 = time.perf_counter(), time.thread_time()
                fn()
                wall.append(time.perf_counter() - t0)
                cpu.append(time.thread_time() - c0)
            best[name]["wall_ms"] = min(best[name]["wall_ms"], float(np.median(wall)) * 1e3)
            best[name]["cpu_ms"] = min(best[name]["cpu_ms"], float(np.median(cpu)) * 1e3)
    return {k: {m: round(v, 4) for m, v in d.items()} for k, d in best.items()}


def steps(pred, image: np.ndarray, box: np.ndarray) -> Dict[str, Callable[[], Any]]:
    """The host-warp steps of ``pred`` (a host-warp :class:`~glsr.runtime.predictor.Predictor`) on their real
    inputs, in execution order, then ``run`` and ``predict``."""
    from glsr.runtime import hostwarp as hw
    from glsr.schemes import get_scheme

    meta, be = pred.metadata, pred.backend
    plan = hw.plan_of(meta)
    batch, m, b = pred.crop(image, box)
    theta_g = np.asarray(be.run_graph("reinit", batch.loc)[0], dtype=np.float64).reshape(1, 2, 3)
    image_from_face = hw._image_from_face(batch, theta_g, plan)
    faces = hw._faces(batch, image_from_face, plan)
    outs = be.run_graph("global", faces)
    fns: Dict[str, Callable[[], Any]] = {
        "crop: loc warp + normalize": lambda: pred.crop(image, box),
        "reinit graph": lambda: be.run_graph("reinit", batch.loc),
        "face warp + normalize": lambda: hw._faces(batch, hw._image_from_face(batch, theta_g, plan), plan, True),
        "global graph": lambda: be.run_graph("global", faces)}
    shape = np.asarray(outs[0], dtype=np.float64).reshape(1, meta.num_points, 2)
    if plan.local:
        theta_l = np.asarray(outs[1], dtype=np.float32).reshape(1, -1, 2, 3)
        parts = hw._parts(batch, image_from_face, theta_l, plan)
        delta = np.asarray(be.run_graph("local", parts)[0], dtype=np.float64).reshape(1, -1, 2)
        scheme = get_scheme(meta.scheme)
        fns["part warps + normalize"] = lambda: hw._parts(batch, image_from_face, theta_l, plan, True)
        fns["local graph"] = lambda: be.run_graph("local", parts)
        fns["local assembly"] = lambda: hw.assemble_local(shape, theta_l, delta, scheme)
    graph_calls = [fns[k] for k in GRAPHS if k in fns]
    fns[SEQUENCE] = lambda: [call() for call in graph_calls]
    y = pred.run(batch)
    fns["uncrop"] = lambda: pred.uncrop(y, m, b)
    fns["run (network stage)"] = lambda: pred.run(batch)
    fns["predict (end to end)"] = lambda: pred.predict(image, box)
    return fns


def measure(name: str, weights: str, image: np.ndarray, box: np.ndarray, work: Path, rounds: int, iters: int
            ) -> Dict[str, Any]:
    from glsr.export import export_model
    from glsr.runtime.predictor import Predictor
    from glsr.shipped import resolve_weights

    weights = resolve_weights(weights)
    with private_cwd():
        res = export_model(str(weights), formats=list(RUNTIMES), out_dir=work, parity=False, name="m", host_warp=True)
    out: Dict[str, Any] = {"model": name, "weights": Path(weights).name, "runtimes": {}}
    for art in res.artifacts:
        pred = Predictor.from_file(art, threads=1)
        t = _time(steps(pred, image, box), rounds, iters)
        out["runtimes"][pred.backend.name] = t
        print(f"{name} {pred.backend.name}: " + ", ".join(f"{k} {v['cpu_ms']:.3f}" for k, v in t.items()),
              file=sys.stderr)
    return out


GRAPHS = ("reinit graph", "global graph", "local graph")
SEQUENCE = "graph calls in sequence (no host work)"
WHOLE = (SEQUENCE, "run (network stage)", "predict (end to end)")


def markdown(r: Dict[str, Any]) -> str:
    env = r["environment"]
    lines = ["# Host-warp mode step by step", "",
             f"{env['date']} - {env['cpu']['model']}, 1 thread, batch 1; onnxruntime "
             f"{env['libraries'].get('onnxruntime')}, MNN {env['libraries'].get('MNN')}; load average "
             f"{r['loadavg'][0]} -> {r['loadavg'][1]}; {r['rounds']} interleaved rounds of {r['iters']} calls, "
             f"lowest per-round median. Command: `{r['command']}`", "",
             "Each step alone on its real inputs (one 300-W `val` face). cpu = the thread's CPU time, wall = elapsed. "
             "Host glue = every step that is not a graph call (the session call's own overhead is inside the graph "
             "rows). run - steps = the network stage end to end minus the sum of its steps alone.", ""]
    for m in r["models"]:
        for rt, t in m["runtimes"].items():
            lines += [f"## {m['model']} {rt}", "", "| step | cpu ms | wall ms |", "|---|---:|---:|"]
            lines += [f"| {k} | {v['cpu_ms']:.3f} | {v['wall_ms']:.3f} |" for k, v in t.items()]
            net_steps = [k for k in t if k not in WHOLE and k != "uncrop" and not k.startswith("crop")]
            graphs = sum(t[k]["cpu_ms"] for k in net_steps if k in GRAPHS)
            host = sum(t[k]["cpu_ms"] for k in t if k not in WHOLE and k not in GRAPHS)
            run_gap = t["run (network stage)"]["cpu_ms"] - sum(t[k]["cpu_ms"] for k in net_steps)
            lines += ["", f"Graph calls {graphs:.3f} ms cpu; host glue (crop, warps, assembly, uncrop) {host:.3f} ms "
                      f"= {host / graphs:.0%} of the graph calls; run - steps {run_gap:+.3f} ms"]
            if SEQUENCE in t:  # how much of run - steps the graphs cost each other, with no host work between them
                lines[-1] += (f"; the graph calls back to back with no host work between them "
                              f"{t[SEQUENCE]['cpu_ms'] - graphs:+.3f} ms against each alone (each alone keeps its "
                              "weights and buffers in cache)")
            lines[-1] += "."
            lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: List[str] | None = None) -> int:
    from benchmarks.studies.host_warp import first_face

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["small", "small-fast"], help="shipped names or .pt files")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=200, help="timed calls per step and round")
    ap.add_argument("-o", "--out", default=None, help="default: benchmarks/results/<machine>")
    args = ap.parse_args(argv)
    if missing_300w():
        return 2
    image, box = first_face()
    before = loadavg()
    with tempfile.TemporaryDirectory(prefix="glsr-hw-steps-") as tmp:
        models = [measure(Path(m).stem, m, image, box, Path(tmp) / f"m{i}", args.rounds, args.iters)
                  for i, m in enumerate(args.models)]
    r = study_record("host_warp_steps", argv, before, rounds=args.rounds, iters=args.iters, models=models)
    write_record("host_warp_steps", r, markdown(r), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
