"""One benchmark case (variant x backend x threads x batch) timed in this process: network-only on random
normalized crops and end-to-end through :meth:`glsr.runtime.predictor.Predictor.predict` on a photo."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from glsr.artifacts import artifact_size
from glsr.bench.machine import accelerators, loadavg
from glsr.bench.timing import time_callable
from glsr.formats import FORMATS


def _bench_backends() -> Dict[str, Dict[str, Any]]:
    """Benchmark backend name -> ``format`` (``"pt"`` = checkpoint in PyTorch), ``label``, ``needs`` (an
    :func:`~glsr.bench.machine.accelerators` key that must be true) and backend ``options``.

    Built from the format table: one row per runtime backend (its first artifact kind: ``mlpackage`` for Core ML),
    plus PyTorch eager and the CUDA variants of PyTorch and onnxruntime. Order: CPU runtimes, CUDA, platform-only.
    """
    first = {}
    for spec in FORMATS.values():
        first.setdefault(spec.backend, spec)
    rows: Dict[str, Dict[str, Any]] = {"torch": {"format": "pt", "label": "PyTorch eager (CPU)"}}
    rows.update({b: {"format": s.name, "label": s.bench_label} for b, s in first.items() if "linux" in s.runs_on})
    rows["torch-cuda"] = {"format": "pt", "label": "PyTorch eager (CUDA)", "needs": "cuda"}
    rows["onnx-cuda"] = {"format": first["onnx"].name, "label": "onnxruntime (CUDAExecutionProvider)",
                         "needs": "ort-cuda", "options": {"providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}}
    rows.update({b: {"format": s.name, "label": s.bench_label, "needs": s.runs_on[0]} for b, s in first.items()
                 if "linux" not in s.runs_on})
    return rows


BACKENDS: Dict[str, Dict[str, Any]] = _bench_backends()
EXPORTED: Tuple[str, ...] = tuple(b for b, r in BACKENDS.items() if r["format"] != "pt")
"""Backends that run an exported artifact (candidates for "the best exported runtime")."""


def available_backends(requested: Sequence[str] | None = None) -> List[str]:
    """Backends to run here: CPU ones always; CUDA ones when a GPU is present; Core ML on macOS."""
    acc = accelerators()
    names = list(requested) if requested else [b for b in BACKENDS if acc.get(BACKENDS[b].get("needs", ""), True)]
    unknown = [b for b in names if b not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown benchmark backend(s) {unknown}; choose from {list(BACKENDS)}")
    return [b for b in names if acc.get(BACKENDS[b].get("needs", ""), True)]


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
    opts: Dict[str, Any] = dict(BACKENDS[case.backend].get("options", {}))
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
