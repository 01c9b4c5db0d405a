"""The floor under each form's glue: the resampling kernels a face needs, alone, against the sub-networks
(``python -m benchmarks.studies.glue_floor [--models small small-fast] [--rounds 5] [--time 2]``).

Issue 24 asks for host-warp glue <= 15 % and single-graph glue <= 50 % of the sub-networks. Whatever the host code
around them, each form has to resample the photo into its networks' inputs; this study times only those kernels,
on one real 300-W ``val`` face (the warps' real matrices, the in-graph sampler's real theta), beside the
sub-networks, all in the same interleaved rounds (1 thread, batch 1, wall time per call, min of the per-round
medians; the process CPU time of each is in the JSON):

* ``subnets``: every sub-network the model runs, exported alone, on random input
  (:func:`glsr.bench.glue.subnet_runners`);
* host-warp kernels: ``cv2.warpAffine`` of the loc and of the face from the photo (uint8, bilinear, the matrices
  the host-warp ``Predictor`` computes) and the normalization of each (:class:`glsr.runtime.processing.Normalizer`);
* single-graph kernels: ``cv2.warpAffine`` of the crop and its normalization on the host, then in the runtime the
  graph's own loc step (:meth:`glsr.models.GLSRNet.loc_image`) and face sampling (:func:`glsr.geometry.affine_grid`
  and the model's sampler, the real ``crop_from_face``), each exported alone, less the runtime's cost of calling a
  graph that does nothing on the same input (``noop``: a one-pixel slice);

floor = the sum of one form's kernels; floor / subnets is the lowest glue ratio that form can reach with these
kernels, with every other piece of host code, session call and cache miss at zero. Models whose local stage runs
are refused (their part patches are not covered). Writes ``benchmarks/results/<machine>/glue_floor.{json,md}``.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np

from benchmarks import timing_line
from glsr.bench.artifacts import private_cwd
from glsr.bench.glue import min_of_round_medians, subnet_runners

RUNTIMES = ("onnx", "mnn")
GOALS = {"host-warp": 0.15, "graph": 0.50}
"""Issue 24's glue goals: host-warp <= 15 % (item 1), single graph <= 50 % (item 2) of the sub-networks."""
HOST_KERNELS = {"host-warp": ("warp loc", "normalize loc", "warp face", "normalize face"),
                "graph": ("warp crop", "normalize crop")}
GRAPH_KERNELS = ("loc step", "face step")
"""In-graph kernels of the single graph (each less ``noop``)."""


def _tiny_graphs(model, crop: np.ndarray, crop_from_face: np.ndarray) -> Dict[str, Any]:
    """``name -> (torch module, inputs)``: the single graph's loc step and face sampling alone, and ``noop``."""
    import torch

    class Loc(torch.nn.Module):
        def forward(self, x):
            return model.loc_image(x)

    class Face(torch.nn.Module):
        def forward(self, x, t):
            return model._sample(x, t, model.grid_face, model.cfg.face_size)

    class Noop(torch.nn.Module):
        def forward(self, x):
            return x[:, :, :1, :1] + 0.0

    x = {"x": crop}
    return {"noop": (Noop(), x), "loc step": (Loc(), x),
            "face step": (Face(), {"x": crop, "t": crop_from_face.astype(np.float32)})}


def _graph_runners(model, crop: np.ndarray, crop_from_face: np.ndarray, work: Path
                   ) -> Dict[str, Dict[str, Callable[[], Any]]]:
    """``runtime -> {name: runner}`` for :func:`_tiny_graphs`; the ONNX loc step gets the export's
    ``crop_resize_pass`` as the shipped artifact does (the MNN file is converted without it, as the shipped one)."""
    import onnx

    from benchmarks.studies.single_graph_forms import export, runners
    from glsr.export.onnx_passes import crop_resize_pass

    out: Dict[str, Dict[str, Callable[[], Any]]] = {rt: {} for rt in RUNTIMES}
    work.mkdir(parents=True, exist_ok=True)
    with private_cwd():
        for name, (module, inputs) in _tiny_graphs(model, crop, crop_from_face).items():
            path = work / f"{name.replace(' ', '_')}.onnx"
            note = export(module, inputs, path)
            if note:
                raise RuntimeError(f"MNN cannot convert the {name} graph: {note}")
            found = runners(path, inputs)
            out["mnn"][name] = found["mnn"]
            proto, k = crop_resize_pass(onnx.load(str(path)))
            if k:
                onnx_path = work / f"{name.replace(' ', '_')}_resize.onnx"
                onnx.save(proto, str(onnx_path))
                found = runners(onnx_path, inputs)
            out["onnx"][name] = found["onnx"]
    return out


def measure(name: str, weights: str, image: np.ndarray, box: np.ndarray, work: Path, rounds: int,
            budget_s: float) -> Dict[str, Any]:
    import cv2
    import torch

    from glsr import geometry as geo
    from glsr.export import export_model
    from glsr.models import load_checkpoint
    from glsr.runtime import hostwarp as hw
    from glsr.runtime.predictor import Predictor
    from glsr.runtime.processing import normalizer
    from glsr.shipped import resolve_weights

    weights = resolve_weights(weights)
    model = load_checkpoint(weights).eval().without_inert_stages()
    if model.local_reinit is not None or model.regress2 is not None:
        raise SystemExit(f"glue_floor: {name} runs a local or cascade stage, whose warps this study does not "
                         "cover; pass a model that runs the global stage only")
    cfg = model.cfg
    arts: Dict[str, Path] = {}   # the ONNX exports' predictors give the warps' real matrices
    with private_cwd():
        for mode in ("graph", "host-warp"):
            res = export_model(str(weights), formats=["onnx"], out_dir=work / mode, parity=False, name="m",
                               host_warp=mode == "host-warp")
            arts[mode] = Path(res.artifacts[0])
    preds = {mode: Predictor.from_file(arts[mode], threads=1) for mode in GOALS}

    # the kernels' real inputs: the crop and crop_from_face of this face, the host-warp matrices
    graph = preds["graph"]
    norm = normalizer(graph.metadata)
    image_from_crop = geo.invert_affine(geo.crop_from_image(box, cfg.input_size, cfg.crop_enlarge))
    crop = graph.crop(image, box)[0]
    with torch.no_grad():
        crop_from_face = model.global_face(torch.from_numpy(crop))[2].numpy()
    hwp = preds["host-warp"]
    plan = hw.plan_of(hwp.metadata)
    batch = hwp.crop(image, box)[0]
    theta_g = np.asarray(hwp.backend.run_graph("reinit", batch.loc)[0], dtype=np.float64).reshape(1, 2, 3)
    image_from_face = hw._image_from_face(batch, theta_g, plan)[0]
    image_from_loc = batch.image_from_loc[0]

    def warp(m: np.ndarray, size: int) -> Callable[[], Any]:
        u8 = np.empty((size, size, 3), np.uint8)
        return lambda: cv2.warpAffine(image, m, (size, size), dst=u8, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                      borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def normalize(m: np.ndarray, size: int) -> Callable[[], Any]:
        u8 = warp(m, size)()
        out = np.empty((3, size, size), np.float32)
        return lambda: norm.into(u8, out)

    host = {"warp crop": warp(image_from_crop, cfg.input_size),
            "normalize crop": normalize(image_from_crop, cfg.input_size),
            "warp loc": warp(image_from_loc, plan.loc_size), "normalize loc": normalize(image_from_loc, plan.loc_size),
            "warp face": warp(image_from_face, plan.face_size),
            "normalize face": normalize(image_from_face, plan.face_size)}
    graphs = _graph_runners(model, crop, crop_from_face, work / "kernels")
    out: Dict[str, Any] = {"model": name, "weights": Path(weights).name, "variant": cfg.name,
                           "stages": " > ".join(model.stages), "input_size": cfg.input_size,
                           "loc_size": cfg.loc_size, "face_size": cfg.face_size,
                           "loc_window": list(model.loc_window) if model.loc_window else None, "runtimes": {}}
    for rt in RUNTIMES:
        runners: Dict[str, Callable[[], Any]] = {f"sub:{k}": fn for k, fn in
                                                 subnet_runners(model, rt, 1, work / "subnets").items()}
        runners.update({f"host:{k}": fn for k, fn in host.items()})
        runners.update({f"graph:{k}": fn for k, fn in graphs[rt].items()})
        cpu: Dict[str, float] = {}
        wall = min_of_round_medians(runners, rounds, budget_s, cpu)
        rec: Dict[str, Any] = {"cpu_ms": {k: round(v, 4) for k, v in cpu.items()}}
        rec.update(_floors(wall))
        out["runtimes"][rt] = rec
        print(f"{name} {rt}: subnets {rec['subnets_sum_ms']:.3f} ms; " + "; ".join(
            f"{mode} floor {rec[mode]['floor']:+.0%} (goal {goal:.0%})"
            for mode, goal in GOALS.items()), file=sys.stderr)
    return out


def _floors(ms: Dict[str, float]) -> Dict[str, Any]:
    """The record of one runtime from its runners' times ``ms`` (``sub:``, ``host:`` and ``graph:`` keys)."""
    subnets = {k[4:]: round(v, 4) for k, v in ms.items() if k.startswith("sub:")}
    total = sum(subnets.values())
    kernels = {k[5:]: round(v, 4) for k, v in ms.items() if k.startswith("host:")}
    noop = ms["graph:noop"]
    kernels.update({k: round(max(ms[f"graph:{k}"] - noop, 0.0), 4) for k in GRAPH_KERNELS})
    rec: Dict[str, Any] = {"subnets_ms": subnets, "subnets_sum_ms": round(total, 4), "kernels_ms": kernels,
                           "noop_call_ms": round(noop, 4),
                           "raw_graph_ms": {k: round(ms[f"graph:{k}"], 4) for k in GRAPH_KERNELS}}
    for mode, goal in GOALS.items():
        parts = HOST_KERNELS[mode] + (GRAPH_KERNELS if mode == "graph" else ())
        floor = sum(kernels[k] for k in parts)
        rec[mode] = {"kernels": list(parts), "floor_ms": round(floor, 4), "floor": round(floor / total, 4),
                     "goal": goal, "goal_ms": round(goal * total, 4)}
    return rec


def markdown(r: Dict[str, Any]) -> str:
    lines = ["# The floor under the glue: the resampling kernels alone against the sub-networks", "",
             timing_line(r, "1 thread, batch 1, wall ms per call (process CPU ms in the JSON)"), "",
             "One real 300-W `val` face. floor ms = the kernels a form cannot do without (host-warp: warp + "
             "normalize the loc and the face from the photo; single graph: warp + normalize the crop on the host, "
             "then the graph's loc step and face sampling in the runtime, each less a do-nothing call on the same "
             "input); floor = floor ms / sub-networks ms, the lowest glue ratio the form can have with these "
             "kernels (the glue itself: `host_warp.md`, `single_graph_forms.md`). A floor above the goal means the "
             "form cannot reach the goal with these kernels, whatever else is cut; one just below it leaves the goal "
             "ms less the floor ms for every session call, line of host code and cache miss.", "",
             "| model | runtime | form | sub-networks ms | kernels ms | floor ms | floor | goal | goal ms |",
             "|---|---|---|---:|---|---:|---:|---:|---:|"]
    for m in r["models"]:
        for rt, rec in m["runtimes"].items():
            for mode in GOALS:
                f = rec[mode]
                ks = " + ".join(f"{k} {rec['kernels_ms'][k]:.3f}" for k in f["kernels"])
                lines.append(f"| {m['model']} ({m['input_size']} px crop, {m['face_size']} px face) | {rt} | {mode} | "
                             f"{rec['subnets_sum_ms']:.3f} | {ks} | {f['floor_ms']:.3f} | {f['floor']:+.0%} | "
                             f"{f['goal']:+.0%} | {f['goal_ms']:.3f} |")
    lines += ["", "In-graph steps as timed (before the do-nothing call is taken off), ms:", ""]
    for m in r["models"]:
        for rt, rec in m["runtimes"].items():
            raw = ", ".join(f"{k} {v:.3f}" for k, v in rec["raw_graph_ms"].items())
            lines.append(f"- {m['model']} {rt}: {raw}; noop {rec['noop_call_ms']:.3f}; sub-networks "
                         + ", ".join(f"{k} {v:.3f}" for k, v in rec["subnets_ms"].items()))
    return "\n".join(lines) + "\n"


def main(argv: List[str] | None = None) -> int:
    from benchmarks.studies.host_warp import face_study_main

    return face_study_main("glue_floor", __doc__, measure, markdown, argv, rounds=5, budget_s=2.0)


if __name__ == "__main__":
    sys.exit(main())
