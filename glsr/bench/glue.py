"""Glue overhead: the whole exported graph against the sum of its sub-networks (as the model lists them,
:meth:`glsr.models.GLSRNet.sub_networks`) exported and run alone with the same runtime, sessions and threads;
overhead = whole / sum - 1 is what the in-graph resampling / STN glue costs."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Dict, Sequence

import numpy as np

from glsr.bench.artifacts import export_sub_onnx, private_cwd
from glsr.bench.timing import time_callable
from glsr.export.mnn_export import convert_onnx
from glsr.runtime.processing import metadata_for
from glsr.runtime.sessions import mnn_module, onnx_session


class RawOnnx:
    """A bare onnxruntime session on random input (:func:`glsr.runtime.sessions.onnx_session`, the runtime's)."""

    def __init__(self, path: Path, threads: int):
        self.s = onnx_session(path, threads)
        i = self.s.get_inputs()[0]
        self.name = i.name
        self.x = np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in i.shape]
                                                          ).astype(np.float32)

    def __call__(self):
        return self.s.run(None, {self.name: self.x})


class RawMNN:
    """A bare MNN module on random input (:func:`glsr.runtime.sessions.mnn_module`, the runtime's)."""

    def __init__(self, path: Path, threads: int, shape: Sequence[int], precision: str = "high"):
        import MNN

        self.expr = MNN.expr
        self.m = mnn_module(path, threads, precision)
        x = np.random.default_rng(0).standard_normal(tuple(shape)).astype(np.float32)
        self.x = MNN.expr.const(x, list(x.shape), MNN.expr.NCHW)

    def __call__(self):
        y = self.m.forward([self.x])
        y = y[0] if isinstance(y, (list, tuple)) else y
        return y.read()


def subnet_runners(model, runtime: str, threads: int, work: Path) -> Dict[str, Callable[[], Any]]:
    """One runner per learned sub-network of ``model`` (:meth:`glsr.models.GLSRNet.sub_networks`), exported alone
    into ``work`` (once per folder: speed does not depend on weights) and run on random input by ``runtime``
    (``"onnx"`` or ``"mnn"``)."""
    work.mkdir(parents=True, exist_ok=True)
    runners: Dict[str, Callable[[], Any]] = {}
    for name, mod, shape in model.sub_networks():
        p = work / f"{model.cfg.name}_{name}.onnx"
        if not p.is_file():
            export_sub_onnx(mod, shape, p)
        if runtime == "onnx":
            runners[name] = RawOnnx(p, threads)
            continue
        mp = p.with_suffix(".mnn")
        if not mp.exists():
            with private_cwd():
                convert_onnx(p.resolve(), mp.resolve(), _meta_for(model, f"{model.cfg.name}/{name}"))
        runners[name] = RawMNN(mp, threads, shape)
    return runners


def min_of_round_medians(runners: Dict[str, Callable[[], Any]], rounds: int, budget_s: float,
                         cpu: Dict[str, float] | None = None) -> Dict[str, float]:
    """Median ms of each runner in ``rounds`` interleaved rounds (``budget_s`` per runner over all rounds), keeping
    each runner's lowest round: a burst of other load on a shared machine hits one round, not the comparison.
    ``cpu``, if given, is filled with the same for the process CPU time per call (what the call computes, without
    the time other processes take the core away: the robust figure on a loaded machine, 1 thread)."""
    best: Dict[str, float] = {}
    for _ in range(max(rounds, 1)):
        for name, fn in runners.items():
            t = time_callable(fn, budget_s / max(rounds, 1))
            best[name] = min(best.get(name, float("inf")), t.median_ms)
            if cpu is not None:
                cpu[name] = min(cpu.get(name, float("inf")), t.cpu_ms)
    return best


def glue_overhead(model, whole: Dict[str, Path], threads: int, work: Path, budget_s: float = 2.0,
                  runtimes: Sequence[str] = ("onnx", "mnn"), rounds: int = 3) -> Dict[str, Any]:
    """Whole exported graph vs the sum of its sub-networks exported and run alone, per runtime.

    Whole graph and sub-networks are timed in ``rounds`` interleaved rounds (:func:`min_of_round_medians`).
    """
    out: Dict[str, Any] = {"variant": model.cfg.name, "threads": threads, "rounds": rounds, "runtimes": {}}
    s = model.cfg.input_size
    for rt in runtimes:
        if rt not in whole:
            continue
        runners = subnet_runners(model, rt, threads, work)
        runners["__whole__"] = RawOnnx(whole[rt], threads) if rt == "onnx" else RawMNN(whole[rt], threads, (1, 3, s, s))
        best = min_of_round_medians(runners, rounds, budget_s)
        w = best.pop("__whole__")
        total = sum(best.values())
        out["runtimes"][rt] = {"whole_ms": round(w, 4), "sum_ms": round(total, 4),
                               "subnets_ms": {k: round(v, 4) for k, v in best.items()},
                               "glue_ms": round(w - total, 4), "overhead": round(w / total - 1, 4)}
    return out


def _meta_for(model, variant_label: str):
    return dataclasses.replace(metadata_for(model, format="mnn", batch="1"), variant=variant_label)
