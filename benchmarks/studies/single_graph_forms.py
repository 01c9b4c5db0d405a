"""Single-graph resampling forms, measured alone (``python -m benchmarks.studies.single_graph_forms``).

Issue 24 item 2 asks for cheaper in-graph resampling in the single graph of ``small-fast`` (272 px crop, 128 px
loc, 136 px face). This study exports each candidate form of its two biggest resampling steps as a tiny ONNX graph,
converts it to MNN, checks it against the graph's current form and times both runtimes in interleaved rounds
(1 thread, batch 1, process CPU time per call, min of the per-round medians,
:func:`glsr.bench.glue.min_of_round_medians`):

crop -> loc (a fixed axis-aligned scale and shift, :func:`glsr.models.network.crop_loc_theta`):

* ``gridsample``: what the graph does (constant grid, GridSample);
* ``resize-crop``: ONNX ``Resize`` with ``tf_crop_and_resize`` and roi = the loc region: the same sample positions
  in closed form (the only Resize mode that can express a non-integer start and a non-integer step);
* ``separable-gather``: rows then columns, each two Gathers with constant indices and constant lerp weights;
* ``separable-matmul``: the used 138 x 138 window, then two MatMuls with constant interpolation matrices.

crop -> face (theta from the reinit net, any affine):

* ``elementwise-grid``: :func:`glsr.geometry.affine_grid` (Mul/Add per coordinate, Concat) + GridSample;
* ``matmul-grid``: ``base [H*W, 3] @ theta^T [B, 3, 2]`` + GridSample (batch 1 only here);
* ``broadcast-grid``: ``base_x [H*W, 1] * theta^T[:, 0:1] + ...`` + GridSample.

Writes ``benchmarks/results/<machine>/single_graph_forms.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np

from benchmarks import machine_results_dir
from glsr import atomic
from glsr.bench.glue import min_of_round_medians
from glsr.bench.machine import environment

CROP, LOC, FACE, CONTEXT = 272, 128, 136, 2.0


def loc_forms() -> Dict[str, Any]:
    """``name -> torch module or ONNX ModelProto`` mapping the crop ``[1, 3, 272, 272]`` to the loc image."""
    import torch

    from glsr import geometry as geo
    from glsr.models.network import crop_loc_theta

    th = crop_loc_theta(CROP, LOC, CONTEXT)
    p = geo.compose(geo.pixel_from_norm(CROP), th, geo.norm_from_pixel(LOC))      # crop_px_from_loc_px
    pos = p[0, 0] * np.arange(LOC) + p[0, 2]
    x0 = np.floor(pos).astype(np.int64)
    w1 = (pos - x0).astype(np.float32)
    lo, hi = int(x0.min()), int(x0.max()) + 2
    w = np.zeros((LOC, hi - lo), np.float32)
    w[np.arange(LOC), x0 - lo] = 1 - w1
    w[np.arange(LOC), x0 + 1 - lo] += w1
    theta = torch.tensor(th, dtype=torch.float32)[None]

    class GridSample(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("g", geo.affine_grid(theta, geo.base_grid(LOC, LOC), LOC, LOC))

        def forward(self, x):
            return geo.grid_sample_bilinear(x, self.g)

    class Gather(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("i0", torch.tensor(x0))
            self.register_buffer("i1", torch.tensor(x0 + 1))
            self.register_buffer("w0", torch.tensor(1 - w1))
            self.register_buffer("w1", torch.tensor(w1))

        def forward(self, x):
            r = (torch.index_select(x, 2, self.i0) * self.w0[:, None]
                 + torch.index_select(x, 2, self.i1) * self.w1[:, None])
            return torch.index_select(r, 3, self.i0) * self.w0 + torch.index_select(r, 3, self.i1) * self.w1

    class MatMul(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("w", torch.tensor(w))
            self.register_buffer("wt", torch.tensor(w.T.copy()))

        def forward(self, x):
            return torch.matmul(torch.matmul(self.w, x[:, :, lo:hi, lo:hi]), self.wt)

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    start, end = pos[0] / (CROP - 1), pos[-1] / (CROP - 1)                         # 0.25, 0.75 for small-fast
    roi = np.array([0, 0, start, start, 1, 1, end, end], np.float32)
    node = helper.make_node("Resize", ["x", "roi", "", "sizes"], ["y"], mode="linear",
                            coordinate_transformation_mode="tf_crop_and_resize")
    graph = helper.make_graph([node], "resize_crop", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                      [1, 3, CROP, CROP])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, LOC, LOC])],
                              initializer=[numpy_helper.from_array(roi, "roi"),
                                           numpy_helper.from_array(np.array([1, 3, LOC, LOC], np.int64), "sizes")])
    resize = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    resize.ir_version = 8
    onnx.checker.check_model(resize)
    return {"gridsample": GridSample(), "resize-crop": resize, "separable-gather": Gather(),
            "separable-matmul": MatMul()}


def face_forms() -> Dict[str, Any]:
    """``name -> torch module (crop, theta) -> face``."""
    import torch

    from glsr import geometry as geo

    base = geo.base_grid(FACE, FACE)

    class Elementwise(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("b", base)

        def forward(self, x, t):
            return geo.grid_sample_bilinear(x, geo.affine_grid(t, self.b, FACE, FACE))

    class MatMul(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("b", base)

        def forward(self, x, t):
            return geo.grid_sample_bilinear(x, torch.matmul(self.b, t.transpose(1, 2)).reshape(-1, FACE, FACE, 2))

    class Broadcast(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("bx", base[:, 0:1].contiguous())
            self.register_buffer("by", base[:, 1:2].contiguous())

        def forward(self, x, t):
            tt = t.transpose(1, 2)
            g = self.bx * tt[:, 0:1] + self.by * tt[:, 1:2] + tt[:, 2:3]
            return geo.grid_sample_bilinear(x, g.reshape(-1, FACE, FACE, 2))

    return {"elementwise-grid": Elementwise(), "matmul-grid": MatMul(), "broadcast-grid": Broadcast()}


def export(form: Any, inputs: Dict[str, np.ndarray], path: Path) -> str:
    """Write ``form`` to ``path`` (.onnx) and its MNN conversion beside it; returns the converter's complaint, if
    any ("" when the MNN file was written)."""
    import onnx
    import torch

    if isinstance(form, onnx.ModelProto):
        onnx.save(form, str(path))
    else:
        args = tuple(torch.from_numpy(v) for v in inputs.values())
        torch.onnx.export(form.eval(), args, str(path), input_names=list(inputs), output_names=["y"],
                          opset_version=17, dynamo=False)
    return to_mnn(path)


def to_mnn(path: Path) -> str:
    """Convert ``path`` (.onnx) to MNN beside it; returns the converter's complaint, if any ("" when written)."""
    mnn = path.with_suffix(".mnn")
    r = subprocess.run([sys.executable, "-c", "import sys, _tools; _tools.mnnconvert(sys.argv)", "-f", "ONNX",
                        "--modelFile", str(path.resolve()), "--MNNModel", str(mnn.resolve())],
                       capture_output=True, text=True, cwd=path.parent)
    log = (r.stdout + r.stderr).replace("n't", " not").splitlines()
    bad = [ln.strip() for ln in log if "support" in ln and " not " in f" {ln.lower()} "]
    return bad[0] if bad else ("" if mnn.is_file() else "conversion failed")


def runners(path: Path, inputs: Dict[str, np.ndarray]) -> Dict[str, Callable[[], Any]]:
    import MNN

    from glsr.runtime.sessions import mnn_module, onnx_session

    s = onnx_session(path, 1)
    out = {"onnx": lambda: s.run(None, inputs)[0]}
    mnn = path.with_suffix(".mnn")
    if mnn.is_file():
        m = mnn_module(mnn, 1, inputs=list(inputs), outputs=["y"])

        def run_mnn():
            xs = [MNN.expr.const(v, list(v.shape), MNN.expr.NCHW) for v in inputs.values()]
            return np.asarray(m.forward(xs)[0].read())
        out["mnn"] = run_mnn
    return out


def study(forms: Dict[str, Any], inputs: Dict[str, np.ndarray], work: Path, rounds: int,
          budget_s: float) -> Dict[str, Any]:
    """Every form of one step: max |difference| from the first form (the graph's), per runtime, and times."""
    rec: Dict[str, Any] = {}
    run: Dict[str, Callable[[], Any]] = {}
    ref = None
    for name, form in forms.items():
        path = work / f"{name}.onnx"
        note = export(form, inputs, path)
        r = runners(path, inputs)
        rec[name] = {"mnn_converter": note or None, "max_abs_diff": {}, "wrong_output": []}
        for rt, fn in r.items():
            y = np.asarray(fn(), dtype=np.float32).reshape(-1)
            ref = y if ref is None else ref
            rec[name]["max_abs_diff"][rt] = float(np.abs(y - ref).max())
            if rec[name]["max_abs_diff"][rt] > 1e-3:  # MNN 3.6 Resize: "Don't support ...TensorflowCropAndResize"
                rec[name]["wrong_output"].append(rt)
            elif rt == "onnx" or not note:
                run[f"{name}/{rt}"] = fn
    cpu: Dict[str, float] = {}
    wall = min_of_round_medians(run, rounds, budget_s, cpu)
    for key, ms in cpu.items():
        name, rt = key.split("/")
        rec[name].setdefault("ms", {})[rt] = round(ms, 4)
        rec[name].setdefault("wall_ms", {})[rt] = round(wall[key], 4)
    return rec


CUTS = ("loc", "reinit", "face", "regress", "parts", "full")
"""Prefixes of the single graph, in execution order: the loc image (first GridSample), theta_g (the reinit net's
last node), the face (second GridSample), the global shape (the regressor's last node), the part patches (third
GridSample), the landmarks."""
OWN = {"loc": (), "reinit": ("global_reinit",), "face": (), "regress": ("global_regress",), "parts": (),
       "full": ("local_reinit", "local_regress_")}
"""The sub-networks whose own time each prefix adds (prefix match on :meth:`GLSRNet.sub_networks` names)."""


def cut_points(proto) -> Dict[str, str]:
    """``CUTS`` name -> tensor name in the exported small-fast graph: the loc and the face are what the reinit net
    and the global regressor read (resampled, or sliced off the crop by a loc-aligned geometry), the parts the last
    resampling's output (none without a local stage)."""
    nodes = list(proto.graph.node)
    first = {scope: [n.input[0] for n in nodes if n.name.startswith(f"/{scope}/") and n.op_type == "Conv"][0]
             for scope in ("reinit", "regress")}
    last = {scope: [n.output[0] for n in nodes if n.name.startswith(f"/{scope}/")][-1]
            for scope in ("reinit", "regress")}
    samplers = [n.output[0] for n in nodes if n.op_type == "GridSample"]
    parts = {"parts": samplers[-1]} if any(n.name.startswith("/local_regress") for n in nodes) else {}
    return {"loc": first["reinit"], "reinit": last["reinit"], "face": first["regress"], "regress": last["regress"],
            **parts, "full": proto.graph.output[0].name}


def stage_cuts(weights: str, work: Path, rounds: int, budget_s: float) -> Dict[str, Any]:
    """The shipped single graph cut after each stage (``CUTS``) and run on the real first 300-W val face's crop, both
    runtimes, with the host crop and the sub-networks alone in the same interleaved rounds: what each stage adds
    and how much of that is not its sub-network (the glue), without a profiler's per-node inflation."""
    import MNN
    import onnx

    from benchmarks.studies.host_warp import first_face
    from glsr.bench.artifacts import private_cwd
    from glsr.bench.glue import subnet_runners
    from glsr.export import export_model
    from glsr.export.onnx_export import export_fp32, opset_of
    from glsr.models import load_checkpoint
    from glsr.runtime.predictor import Predictor
    from glsr.runtime.sessions import mnn_module, onnx_session
    from glsr.shipped import resolve_weights

    weights = str(resolve_weights(weights))
    model = load_checkpoint(weights).eval().without_inert_stages()
    with private_cwd():
        res = export_model(weights, formats=["onnx"], out_dir=work / "graph", parity=False, name="m")
    full = Path(res.artifacts[0])                   # the ONNX artifact (onnxruntime's form: glsr.export.onnx_passes)
    image, box = first_face()
    pred = Predictor.from_file(full, threads=1)
    crop = pred.crop(image, box[None])[0]
    plain = work / "graph" / "mnn_source.onnx"       # the graph the MNN artifact is converted from (no ONNX-only pass)
    export_fp32(model, plain, pred.metadata, "1", opset_of(onnx.load(str(full))), "gridsample")
    name_in = pred.metadata.input_name
    run: Dict[str, Callable[[], Any]] = {"host crop/onnx": lambda: pred.crop(image, box[None])}
    cuts = {rt: cut_points(onnx.load(str(src))) for rt, src in (("onnx", full), ("mnn", plain))}
    for rt, src in (("onnx", full), ("mnn", plain)):
        for cut, tensor in cuts[rt].items():
            p = work / f"cut_{cut}.{rt}.onnx"
            onnx.utils.extract_model(str(src), str(p), [name_in], [tensor])
            if rt == "onnx":
                sess = onnx_session(p, 1)
                run[f"{cut}/onnx"] = lambda s=sess: s.run(None, {name_in: crop})
                continue
            with private_cwd():
                to_mnn(p)
            m = mnn_module(p.with_suffix(".mnn"), 1, inputs=[name_in], outputs=[tensor])
            run[f"{cut}/mnn"] = lambda m=m: m.forward([MNN.expr.const(crop, list(crop.shape),
                                                                      MNN.expr.NCHW)])[0].read()
    for rt in ("onnx", "mnn"):
        for k, fn in subnet_runners(model, rt, 1, work / "subnets").items():
            run[f"sub:{k}/{rt}"] = fn
    cpu: Dict[str, float] = {}
    wall = min_of_round_medians(run, rounds, budget_s, cpu)
    best = cpu  # process CPU time per call: what each call computes, robust to other jobs taking the core away
    out: Dict[str, Any] = {"weights": Path(weights).name, "crop_px": pred.metadata.input_size, "cuts": cuts,
                           "clock": "process CPU time per call",
                           "cpu_ms": {k: round(v, 4) for k, v in cpu.items()},
                           "wall_ms": {k: round(v, 4) for k, v in wall.items()}, "runtimes": {}}
    for rt in ("onnx", "mnn"):
        subs = {k[4:-len(rt) - 1]: v for k, v in best.items() if k.startswith("sub:") and k.endswith(f"/{rt}")}
        rows, prev = [], 0.0
        for cut in (c for c in CUTS if c in cuts[rt]):   # no "parts" in a graph without a local stage
            t = best[f"{cut}/{rt}"]
            own = sum(v for k, v in subs.items() if any(k.startswith(o) for o in OWN[cut]))
            rows.append({"stage": cut, "prefix_ms": round(t, 4), "adds_ms": round(t - prev, 4),
                         "subnets_ms": round(own, 4), "glue_ms": round(t - prev - own, 4)})
            prev = t
        total = sum(subs.values())
        crop_ms = best["host crop/onnx"]
        out["runtimes"][rt] = {"stages": rows, "subnets_ms": round(total, 4), "host_crop_ms": round(crop_ms, 4),
                               "graph_glue": round((crop_ms + prev) / total - 1, 4)}
    return out


def cuts_markdown(c: Dict[str, Any]) -> List[str]:
    lines = ["## Where the single graph's time goes, stage by stage", "",
             f"`{c['weights']}` exported as `glsr export` writes it, cut after each stage (`onnx.utils.extract_model`; "
             "onnxruntime runs cuts of the ONNX artifact, MNN converts cuts of the graph its artifact is converted "
             "from, without the ONNX-only crop -> loc Resize) and run on the crop of the first 300-W val face; the "
             "same rounds time the host crop (`Predictor.crop`) and every sub-network alone; process CPU ms per call "
             "(1 thread: what the "
             "call computes, without the time other jobs take the core away; wall times in the JSON). adds = this "
             "prefix minus the previous one; "
             "glue = adds minus the sub-networks the stage runs (the first prefix also holds one runtime call's "
             "overhead).", "",
             "| stage | onnxruntime adds ms | sub-networks ms | glue ms | MNN adds ms | sub-networks ms | glue ms |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    o, m = c["runtimes"]["onnx"], c["runtimes"]["mnn"]
    lines.append(f"| host crop ({c.get('crop_px', 272)} px, normalized) | {o['host_crop_ms']:.3f} | 0 | "
                 f"{o['host_crop_ms']:.3f} | {m['host_crop_ms']:.3f} | 0 | {m['host_crop_ms']:.3f} |")
    for a, b in zip(o["stages"], m["stages"]):
        lines.append(f"| {a['stage']} | {a['adds_ms']:.3f} | {a['subnets_ms']:.3f} | {a['glue_ms']:.3f} | "
                     f"{b['adds_ms']:.3f} | {b['subnets_ms']:.3f} | {b['glue_ms']:.3f} |")
    for label, r in (("onnxruntime", o), ("MNN", m)):
        total = r["host_crop_ms"] + r["stages"][-1]["prefix_ms"]
        lines.append("")
        lines.append(f"{label}: host crop + whole graph = {total:.3f} ms against {r['subnets_ms']:.3f} ms of "
                     f"sub-networks alone: glue {100 * r['graph_glue']:+.0f} %; the goal (<= 50 %) needs <= "
                     f"{1.5 * r['subnets_ms']:.3f} ms, {total - 1.5 * r['subnets_ms']:.3f} ms less.")
    return lines + [""]


def to_markdown(r: Dict[str, Any]) -> str:
    env = r["environment"]
    lines = ["# Single-graph resampling forms of small-fast, measured alone", "",
             f"{env['date']} - {env['cpu']['model']}, 1 thread, batch 1; onnxruntime "
             f"{env['libraries'].get('onnxruntime')}, MNN {env['libraries'].get('MNN')}; {r['rounds']} interleaved "
             f"rounds, min of the per-round medians of the process CPU time per call (ms, 1 thread, including the "
             "runtime's "
             f"call overhead; wall times in the JSON). Command: "
             f"`{r['command']}`", "",
             "Input: a random 3 x 272 x 272 crop (values ~N(0, 1)); max |diff| against the graph's current form "
             "(first row of each step) in the same runtime.", ""]
    for step, recs in r["steps"].items():
        lines += [f"## {step}", "", "| form | onnxruntime ms | MNN ms | max abs diff (ort / MNN) | MNN |",
                  "|---|---:|---:|---|---|"]
        for name, v in recs.items():
            ms, d = v.get("ms", {}), v["max_abs_diff"]
            diff = " / ".join(f"{d[k]:.1e}" for k in ("onnx", "mnn") if k in d)
            cell = {k: (f"{ms[k]:.3f}" if k in ms else "-") for k in ("onnx", "mnn")}
            status = v["mnn_converter"] or ("wrong output, not timed" if "mnn" in v["wrong_output"] else "ok")
            lines.append(f"| {name} | {cell['onnx']} | {cell['mnn']} | {diff} | {status} |")
        lines.append("")
    if "stage_cuts" in r:
        lines += cuts_markdown(r["stage_cuts"])
    return "\n".join(lines)


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--time", type=float, default=2.0, help="seconds per timed figure, over all rounds")
    ap.add_argument("--weights", default="small-fast", help="shipped name or .pt for the stage cuts")
    ap.add_argument("-o", "--out", type=Path, default=None, help="default: benchmarks/results/<machine>")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    crop = rng.standard_normal((1, 3, CROP, CROP)).astype(np.float32)
    theta = np.array([[[0.5, 0.02, 0.01], [-0.03, 0.5, 0.02]]], np.float32)   # a slightly rotated face
    steps: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="glsr-forms-") as tmp:
        for step, forms, inputs in (("crop -> loc (128 px)", loc_forms(), {"x": crop}),
                                    ("crop -> face (136 px)", face_forms(), {"x": crop, "t": theta})):
            work = Path(tmp) / str(len(steps))
            work.mkdir()
            steps[step] = study(forms, inputs, work, args.rounds, args.time)
        cuts = stage_cuts(args.weights, Path(tmp) / "cuts", args.rounds, args.time)
    r = {"environment": environment(), "rounds": args.rounds, "steps": steps, "stage_cuts": cuts,
         "command": "python -m benchmarks.studies.single_graph_forms " + " ".join(argv or sys.argv[1:])}
    out = args.out or machine_results_dir(r["environment"]["cpu"])
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out / "single_graph_forms.json", json.dumps(r, indent=1) + "\n")
    atomic.write_text(out / "single_graph_forms.md", to_markdown(r) + "\n")
    print(to_markdown(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
