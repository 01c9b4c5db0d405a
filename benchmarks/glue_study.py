"""What-if study of model-side glue changes (``python -m benchmarks.glue_study``).

The runtime issue's glue goal (resampling / STN glue <= 15 % over the sub-networks) depends on how the graph
expresses its resampling, which is the model's business (:mod:`glsr.geometry`, owned by the model lead). This
script measures candidate rewrites *without editing them*: it swaps a function in a private copy of the module
state, exports the whole graph to ONNX and MNN, checks the landmarks are unchanged, and times baseline and
candidate in interleaved rounds (1 thread, batch 1; min and median of the per-round medians).

Candidates:

* ``ew-grid``: :func:`glsr.geometry.affine_grid` as element-wise Mul/Add on the constant base grid instead of a
  broadcast batched MatMul ``[H*W, 3] x [B, 3, 2]``. MNN lowers that MatMul to a ``While`` loop over the batch
  with per-iteration Raster copies.

Writes ``benchmarks/results/glue_study.{json,md}``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, Iterator

import numpy as np
import torch

from benchmarks.harness import (RESULTS_DIR, RawMNN, RawOnnx, environment, private_cwd, time_callable,
                                write_text_atomic)


def affine_grid_elementwise(theta: torch.Tensor, base: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Same values as :func:`glsr.geometry.affine_grid`, built from broadcast Mul/Add only."""
    bx, by = base[:, 0], base[:, 1]                                        # [H*W]
    gx = bx * theta[:, 0, 0:1] + by * theta[:, 0, 1:2] + theta[:, 0, 2:3]  # [B, H*W]
    gy = bx * theta[:, 1, 0:1] + by * theta[:, 1, 1:2] + theta[:, 1, 2:3]
    return torch.stack([gx, gy], -1).reshape(theta.shape[0], height, width, 2)


CANDIDATES: Dict[str, Dict[str, Callable]] = {
    "baseline": {},
    "ew-grid": {"affine_grid": affine_grid_elementwise},
}


@contextlib.contextmanager
def patched(replacements: Dict[str, Callable]) -> Iterator[None]:
    from glsr import geometry as geo

    old = {k: getattr(geo, k) for k in replacements}
    for k, v in replacements.items():
        setattr(geo, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(geo, k, v)


def export_pair(model, work: Path, tag: str) -> Dict[str, Path]:
    """Export the (patched) model to ONNX + MNN through glsr.export."""
    from glsr.export import export_model

    with private_cwd():
        res = export_model(model=model, formats=["onnx", "mnn"], out_dir=work, parity=False,
                           name=f"{model.cfg.name}-{tag}")
    return {p.suffix.lstrip("."): p for p in res.artifacts}


def study(variants=("small", "medium", "large"), rounds: int = 3, budget_s: float = 1.5) -> Dict:
    from glsr.models import create_model

    work = Path(tempfile.mkdtemp(prefix="glsr-glue-study-"))
    out: Dict = {"environment": environment(), "rounds": rounds, "budget_s": budget_s, "variants": {}}
    for v in variants:
        torch.manual_seed(0)
        model = create_model(v, "68").eval()
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():  # make the output depend on every stage (fresh heads start at zero)
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.01)
        s = model.cfg.input_size
        x = torch.randn(1, 3, s, s, generator=g)
        with torch.no_grad():
            ref = model(x).numpy()
        arts, diffs = {}, {}
        for tag, repl in CANDIDATES.items():
            with patched(repl):
                with torch.no_grad():
                    diffs[tag] = float(np.abs(model(x).numpy() - ref).max())
                arts[tag] = export_pair(model, work, tag)
        runners = {(tag, rt): (RawOnnx(p[rt], 1) if rt == "onnx" else RawMNN(p[rt], 1, (1, 3, s, s)))
                   for tag, p in arts.items() for rt in ("onnx", "mnn")}
        meds: Dict = {k: [] for k in runners}
        for _ in range(rounds):
            for k, fn in runners.items():
                meds[k].append(time_callable(fn, budget_s).median_ms)
        out["variants"][v] = {"max_landmark_change_px": diffs, "timings": {
            f"{tag}/{rt}": {"min_of_medians_ms": round(min(m), 4), "median_of_medians_ms": round(float(np.median(m)), 4)}
            for (tag, rt), m in meds.items()}}
    out["loadavg_end"] = environment()["loadavg"]
    return out


def markdown(r: Dict) -> str:
    env = r["environment"]
    lines = ["# Glue what-if study (model-side candidates, measured, not applied)", "",
             f"{env['date']} — {env['cpu']['model']}, 1 thread, batch 1; onnxruntime {env['libraries']['onnxruntime']},"
             f" MNN {env['libraries']['MNN']}; load average {env['loadavg']} -> {r['loadavg_end']}; "
             f"{r['rounds']} interleaved rounds, min of the per-round medians.", "",
             "| variant | candidate | max landmark change (px) | onnxruntime ms | MNN ms | vs baseline (ORT / MNN) |",
             "|---|---|---:|---:|---:|---|"]
    for v, d in r["variants"].items():
        base = d["timings"]
        for tag in CANDIDATES:
            o = base[f"{tag}/onnx"]["min_of_medians_ms"]
            m = base[f"{tag}/mnn"]["min_of_medians_ms"]
            bo, bm = base["baseline/onnx"]["min_of_medians_ms"], base["baseline/mnn"]["min_of_medians_ms"]
            lines.append(f"| {v} | {tag} | {d['max_landmark_change_px'][tag]:.1e} | {o:.3f} | {m:.3f} | "
                         f"{o - bo:+.3f} ms / {m - bm:+.3f} ms |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", nargs="+", default=["small", "medium", "large"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--time", type=float, default=1.5)
    ap.add_argument("-o", "--out", default=str(RESULTS_DIR))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    r = study(args.variants, args.rounds, args.time)
    out = Path(args.out)
    write_text_atomic(out / "glue_study.json", json.dumps(r, indent=2))
    write_text_atomic(out / "glue_study.md", markdown(r))
    print(markdown(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
