"""Glue study: model-side resampling choices, measured (``python -m benchmarks.studies.glue_study``).

The glue goal (:data:`benchmarks.goals.GLUE_GOAL`: resampling / STN glue at most 15 % over the sub-networks)
depends on how the graph expresses its resampling (:mod:`glsr.geometry`). This script swaps a geometry function in
a private copy of the module state, exports the whole graph to ONNX and MNN, checks the landmarks are unchanged,
and times the current graph against the alternative in interleaved rounds (1 thread, batch 1; min and median of
the per-round medians).

Alternatives:

* ``matmul-grid``: the sampling grid as a broadcast batched MatMul ``[H*W, 3] x [B, 3, 2]`` (what glsr did
  before; :func:`glsr.geometry.affine_grid` is now element-wise Mul/Add). MNN lowers that MatMul to a ``While``
  loop over the batch with per-iteration Raster copies.

It also times the resampling op alone (3 x 384 x 384 crop -> 256 x 256 face, the biggest resample of
``small`` / ``medium``) in each runtime and PyTorch, and the gather-based formulations onnxruntime could run
instead, to show where the floor is.

Writes ``benchmarks/results/<machine>/glue_study.{json,md}`` (:func:`glsr.bench.machine.machine_slug`).
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, Iterator

import numpy as np
import torch

from benchmarks import write_record
from glsr.bench.artifacts import private_cwd
from glsr.bench.machine import environment
from glsr.bench.glue import RawMNN, RawOnnx
from glsr.bench.timing import time_callable


def affine_grid_matmul(theta: torch.Tensor, base: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Same values as :func:`glsr.geometry.affine_grid` (``[B, 2, 3]`` thetas) as one broadcast batched MatMul."""
    t = theta.reshape(-1, 2, 3)
    return torch.matmul(base, t.transpose(1, 2)).reshape(theta.shape[0], -1, width, 2)


CANDIDATES: Dict[str, Dict[str, Callable]] = {
    "current": {},
    "matmul-grid": {"affine_grid": affine_grid_matmul},
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
            f"{tag}/{rt}": {"min_of_medians_ms": round(min(m), 4),
                            "median_of_medians_ms": round(float(np.median(m)), 4)}
            for (tag, rt), m in meds.items()}}
    out["loadavg_end"] = environment()["loadavg"]
    return out


def _onnx_single(op: str, inputs, outputs, attrs=None, opset: int = 17) -> bytes:
    from onnx import TensorProto, helper

    vi = [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs]
    vo = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs]
    node = helper.make_node(op, [n for n, _, _ in inputs], outputs, **(attrs or {}))
    return helper.make_model(helper.make_graph([node], "g", vi, vo),
                             opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


def op_microbench(budget_s: float = 1.0) -> Dict[str, float]:
    """Median ms of resampling a 3 x 384 x 384 crop onto a 256 x 256 affine grid, 1 thread, per implementation."""
    import cv2
    import onnxruntime as ort
    import torch.nn.functional as F
    from onnx import TensorProto

    S, O, C = 384, 256, 3
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, C, S, S)).astype(np.float32)
    theta = torch.tensor([[[0.6, 0.1, 0.05], [-0.1, 0.6, 0.02]]])
    grid = F.affine_grid(theta, (1, C, O, O), align_corners=False).numpy()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    out: Dict[str, float] = {}

    def sess(model: bytes):
        return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])

    f32 = TensorProto.FLOAT
    for mode in ("linear", "nearest"):
        s = sess(_onnx_single("GridSample", [("x", f32, [1, C, S, S]), ("g", f32, [1, O, O, 2])], ["y"],
                              {"mode": mode, "padding_mode": "zeros", "align_corners": 0}, opset=20))
        out[f"onnxruntime GridSample ({mode})"] = time_callable(lambda: s.run(None, {"x": x, "g": grid}),
                                                                budget_s).median_ms
    xt, gt = torch.from_numpy(x), torch.from_numpy(grid)
    out["PyTorch grid_sample (bilinear)"] = time_callable(lambda: F.grid_sample(xt, gt, align_corners=False),
                                                          budget_s).median_ms
    hwc = np.ascontiguousarray(x[0].transpose(1, 2, 0))
    m = np.float32([[1.6, -0.2, 3.0], [0.2, 1.6, 2.0]])
    out["OpenCV warpAffine (float32 HWC, reference)"] = time_callable(
        lambda: cv2.warpAffine(hwc, m, (O, O), flags=cv2.INTER_LINEAR), budget_s).median_ms
    k = 4 * O * O
    n = (S + 2) * (S + 2)
    idx = np.sort(rng.integers(0, n, k)).astype(np.int64)
    i64 = TensorProto.INT64
    s = sess(_onnx_single("Gather", [("d", f32, [n, C]), ("i", i64, [k])], ["y"], {"axis": 0}))
    d = rng.standard_normal((n, C)).astype(np.float32)
    out["onnxruntime Gather of the 4 taps, NHWC rows (no weighting yet)"] = time_callable(
        lambda: s.run(None, {"d": d, "i": idx}), budget_s).median_ms
    s = sess(_onnx_single("Gather", [("d", f32, [C, n]), ("i", i64, [k])], ["y"], {"axis": 1}))
    d2 = np.ascontiguousarray(d.T)
    out["onnxruntime Gather of the 4 taps, NCHW axis 1 (no weighting yet)"] = time_callable(
        lambda: s.run(None, {"d": d2, "i": idx}), budget_s).median_ms
    try:
        import MNN

        F_ = MNN.expr
        xm = F_.const(x, list(x.shape), F_.NCHW)
        gm = F_.const(grid, list(grid.shape), F_.NCHW)
        if hasattr(F_, "grid_sample"):
            out["MNN grid_sample (expr API, bilinear)"] = time_callable(
                lambda: F_.grid_sample(xm, gm, 0, 0, False).read(), budget_s).median_ms
    except Exception:  # noqa: BLE001 - MNN's expr API differs between versions
        pass
    return {k: round(v, 4) for k, v in out.items()}


def markdown(r: Dict) -> str:
    env = r["environment"]
    lines = ["# Glue study: the current graph against the MatMul sampling grid it replaced", "",
             f"{env['date']} — {env['cpu']['model']}, 1 thread, batch 1; "
             f"onnxruntime {env['libraries']['onnxruntime']},"
             f" MNN {env['libraries']['MNN']}; load average {env['loadavg']} -> {r['loadavg_end']}; "
             f"{r['rounds']} interleaved rounds, min of the per-round medians.", "",
             "| variant | graph | max landmark change (px) | onnxruntime ms | MNN ms | vs current (ORT / MNN) |",
             "|---|---|---:|---:|---:|---|"]
    for v, d in r["variants"].items():
        base = d["timings"]
        for tag in CANDIDATES:
            o = base[f"{tag}/onnx"]["min_of_medians_ms"]
            m = base[f"{tag}/mnn"]["min_of_medians_ms"]
            bo, bm = base["current/onnx"]["min_of_medians_ms"], base["current/mnn"]["min_of_medians_ms"]
            lines.append(f"| {v} | {tag} | {d['max_landmark_change_px'][tag]:.1e} | {o:.3f} | {m:.3f} | "
                         f"{o - bo:+.3f} ms / {m - bm:+.3f} ms |")
    if r.get("ops"):
        lines += ["", "## The resampling op alone (3 x 384 x 384 -> 256 x 256, 1 thread, median ms)", "",
                  "| implementation | ms |", "|---|---:|"] + [f"| {k} | {v:.3f} |" for k, v in r["ops"].items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", nargs="+", default=["small", "medium", "large"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--time", type=float, default=1.5)
    ap.add_argument("-o", "--out", default=None, help="default: benchmarks/results/<machine>")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    r = study(args.variants, args.rounds, args.time)
    r["ops"] = op_microbench()
    write_record("glue_study", r, markdown(r), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
