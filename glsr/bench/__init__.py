"""Speed benchmarks of G&LSR_ω variants across backends, threads and batch sizes (``glsr bench``).

What one run measures (each case in a fresh Python process unless ``isolate=False``, so thread pools of one
runtime never spin beside another's; :mod:`glsr.bench.worker`):

* **network**: ``backend.run(crops)`` on random normalized crops ``[B, 3, S, S]`` (the exported graph alone);
* **end-to-end**: :meth:`glsr.runtime.predictor.Predictor.predict` on a photo with ``B`` face boxes: crop +
  normalize, the network and uncrop — what a user's call costs (:mod:`glsr.bench.cases`);
* statistics of every timing (:mod:`glsr.bench.timing`): warm-up, then time-boxed iterations until the median is
  stable; median, p90, mean, min, fps (= batch / median);
* model size (artifact bytes), parameters and MACs (:mod:`glsr.models.complexity`);
* **glue** (:mod:`glsr.bench.glue`): the whole graph against the sum of its sub-networks run alone, each exported
  on its own and timed with the same runtime and threads; overhead = whole / sum - 1;
* per-op **profiles** (:mod:`glsr.bench.profile`) and **eager vs exported** speed-up (:mod:`glsr.bench.summary`).

Every result carries the machine description (:mod:`glsr.bench.machine`) and is written as JSON, Markdown
and a PNG plot (:mod:`glsr.bench.report`), each atomically. Sessions are built by :mod:`glsr.runtime.sessions`,
the same as the runtime's; exports go through :func:`glsr.export.export_model`.
"""
from __future__ import annotations

import importlib
from typing import Any

# imported on first use (PEP 562): ``glsr.bench.cli`` registers ``glsr bench`` without loading PyTorch
_HOME = {"environment": "machine", "machine_slug": "machine",
         "markdown": "report", "write_results": "report", "BenchConfig": "run", "run_benchmark": "run",
         "merge_results": "summary", "summarize": "summary"}

__all__ = ["BenchConfig", "environment", "machine_slug", "markdown",
           "merge_results", "run_benchmark", "summarize", "write_results"]


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"glsr.bench.{_HOME[name]}"), name)
    raise AttributeError(f"module 'glsr.bench' has no attribute {name!r}")
