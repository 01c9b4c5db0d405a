"""Where a face's milliseconds go in glsr's Predictor (``python -m benchmarks.studies.face_cost --weights W``).

One thread, batch 1, the first ``--faces`` 300-W validation faces (tight boxes), the checkpoint exported to ONNX
and MNN (fp32). Measures, each as a median over the faces:

1. the input crop: ``cv2.warpAffine`` of the ``S`` px crop alone, ``normalize`` alone, ``crop_batch`` (both);
2. the network on one fixed random crop (what ``glsr bench``'s network figure times) against the network on the
   real crops of successive faces, and ``Predictor.predict`` end to end (does the end-to-end time equal crop +
   network + uncrop, or does running the network after a crop cost more?);
3. MNN's ``run`` taken apart: the input ``const`` (a copy of the crop), ``forward``, reading the output;
4. the in-graph resampling: per-op time of the whole graph (onnxruntime's profiler, MNN's per-op callbacks): the
   GridSample nodes against ``cv2.warpAffine`` producing a face of the model's face size on the host, from the
   uint8 image and from the float crop;
5. the crop resolution: NME68 / NME51 on all validation faces of the same weights fed crops of other sizes
   (the STN grids are normalized, so the graph takes any size; eager PyTorch).

Writes ``benchmarks/results/<machine>/face_cost.{json,md}`` atomically and prints the Markdown.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np

from benchmarks import machine_results_dir
from glsr import atomic
from glsr import geometry as geo
from glsr.bench.latency import export_glsr, load_faces, score68
from glsr.bench.machine import OtherLoad, environment
from glsr.bench.profile import profile_mnn, profile_onnx
from glsr.imaging import normalize
from glsr.runtime.predictor import Predictor
from glsr.runtime.processing import crop_batch


def med(fn: Callable[[int], Any], n: int, budget_s: float) -> float:
    """Median ms of ``fn(i)`` cycling i over ``n`` faces for ``budget_s`` after a short warm-up."""
    for i in range(2 * n):
        fn(i % n)
    ts: List[float] = []
    start = time.perf_counter()
    i = 0
    while len(ts) < 3 * n or time.perf_counter() - start < budget_s:
        a = time.perf_counter()
        fn(i % n)
        ts.append(time.perf_counter() - a)
        i += 1
    return round(float(np.median(ts)) * 1e3, 4)


def backend_costs(path: Path, faces, budget: float) -> Dict[str, Any]:
    p = Predictor.from_file(path, threads=1)
    meta = p.metadata
    s, enlarge = meta.input_size, meta.crop_enlarge
    crops = [crop_batch(f.image, f.box[None], meta)[0] for f in faces]
    fixed = np.random.default_rng(0).standard_normal(crops[0].shape).astype(np.float32)
    n = len(faces)
    out: Dict[str, Any] = {"artifact": path.name, "input_size": s}
    raw = [geo.crop_face(f.image, f.box, s, enlarge)[0] for f in faces]
    out["warp_ms"] = med(lambda i: geo.crop_face(faces[i].image, faces[i].box, s, enlarge), n, budget)
    buf = np.empty((3, s, s), np.float32)
    out["normalize_ms"] = med(lambda i: normalize(raw[i], meta, out=buf), n, budget)
    out["crop_batch_ms"] = med(lambda i: crop_batch(faces[i].image, faces[i].box[None], meta), n, budget)
    out["net_fixed_ms"] = med(lambda i: p.run(fixed), n, budget)
    out["net_faces_ms"] = med(lambda i: p.run(crops[i]), n, budget)
    out["predict_ms"] = med(lambda i: p.predict(faces[i].image, faces[i].box), n, budget)
    if p.backend.name == "mnn":
        import MNN

        expr, module = MNN.expr, p.backend.module
        x = crops[0]
        out["mnn_const_ms"] = med(lambda i: expr.const(crops[i], list(x.shape), expr.NCHW), n, budget)
        consts = [expr.const(c, list(x.shape), expr.NCHW) for c in crops]
        out["mnn_forward_ms"] = med(lambda i: module.forward([consts[i]]), n, budget)
        ys = [module.forward([c]) for c in consts]
        ys = [y[0] if isinstance(y, (list, tuple)) else y for y in ys]
        out["mnn_read_ms"] = med(lambda i: np.array(ys[i].read(), dtype=np.float32, copy=True), n, budget)
    prof = profile_onnx(path, 1) if p.backend.name == "onnx" else profile_mnn(path, 1)
    out["profile"] = {"kernel_ms": prof["kernel_ms"], "by_scope": prof.get("by_scope"),
                      "glue_by_op": prof.get("glue_by_op"), "by_op": prof["by_op"][:8]}
    return out


def host_warp_costs(faces, meta, budget: float, face_size: int = 256) -> Dict[str, float]:
    """``cv2.warpAffine`` producing a ``face_size`` face (the θ of a typical face: the loc region) on the host."""
    import cv2

    n = len(faces)
    ms = [geo.crop_from_image(f.box, face_size, meta.box_scale) for f in faces]
    crops = [crop_batch(f.image, f.box[None], meta)[0][0].transpose(1, 2, 0).copy() for f in faces]
    s = meta.input_size
    half = (s - 1) / (2 * meta.crop_enlarge / meta.box_scale)
    a = (s - 1) / 2 - half
    k = (face_size - 1) / (2 * half)
    m_crop = np.array([[k, 0, -a * k], [0, k, -a * k]])
    return {"uint8_image_ms": med(lambda i: cv2.warpAffine(faces[i].image, ms[i], (face_size, face_size),
                                                           flags=cv2.INTER_LINEAR), n, budget),
            "float_crop_ms": med(lambda i: cv2.warpAffine(crops[i], m_crop, (face_size, face_size),
                                                          flags=cv2.INTER_LINEAR), n, budget)}


def crop_size_sweep(weights: str, faces, sizes: List[int]) -> List[Dict[str, Any]]:
    """NME of the same weights on crops of other sizes (same context), eager PyTorch, all faces."""
    import torch

    from glsr.models import load_checkpoint
    from glsr.models.network import crop_loc_theta
    from glsr.runtime.processing import metadata_for

    torch.set_num_threads(1)
    rows = []
    for s in sizes:
        model = load_checkpoint(weights).eval()
        cfg = dataclasses.replace(model.cfg, input_size=s)
        model.cfg = cfg
        model.crop_from_loc.copy_(torch.tensor(crop_loc_theta(s, cfg.loc_size, cfg.context),
                                               dtype=model.crop_from_loc.dtype))
        model.pixel_from_crop.copy_(torch.tensor(geo.pixel_from_norm(s), dtype=model.pixel_from_crop.dtype))
        meta = metadata_for(model, format="pt", batch="dynamic", sampler=model.sampler_name)
        preds = []
        with torch.no_grad():
            for f in faces:
                x, m = crop_batch(f.image, f.box[None], meta)
                preds.append(geo.apply_affine(geo.invert_affine(m), model(torch.from_numpy(x)).numpy()))
        sc = score68(np.concatenate(preds)[:, :68] if preds[0].shape[1] == 68 else np.concatenate(preds),
                     np.stack([f.gt for f in faces]))
        rows.append({"input_size": s, "nme68": sc["nme68"], "nme51": sc["nme51"], "failures": sc["failures"]})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", required=True, help="a 68-point glsr checkpoint (.pt) or shipped name")
    ap.add_argument("--faces", type=int, default=16)
    ap.add_argument("--time", type=float, default=2.0, help="seconds per measurement")
    ap.add_argument("--sizes", type=int, nargs="*", default=None,
                    help="input crop sizes for the NME sweep (default: 1/2, 5/8, 3/4 and 1x the model's, multiples "
                         "of 32; none to skip)")
    ap.add_argument("-o", "--out", default=None)
    args = ap.parse_args(argv)
    from glsr.models.checkpoint import read_checkpoint
    from glsr.shipped import resolve_weights

    weights = resolve_weights(args.weights)
    faces_all = load_faces(split="val")
    faces = faces_all[:args.faces]
    work = Path(tempfile.mkdtemp(prefix="glsr-cost-"))
    arts = export_glsr(weights, ["onnx", "mnn"], "fp32", work, None)
    res: Dict[str, Any] = {"environment": environment(), "weights": str(weights), "faces": len(faces),
                           "command": " ".join(["python -m benchmarks.studies.face_cost"] + sys.argv[1:]),
                           "backends": {}}
    with OtherLoad() as ol:
        for b, path in arts.items():
            res["backends"][b] = backend_costs(path, faces, args.time)
        meta = Predictor.from_file(arts["onnx"], threads=1).metadata
        face_size = int(read_checkpoint(weights)["config"].get("face_size") or 256)
        res["host_warp"] = {"face_size": face_size, **host_warp_costs(faces, meta, args.time, face_size)}
    res["other_load_cores"] = ol.cores
    sizes = args.sizes
    if sizes is None:
        s = int(read_checkpoint(weights)["config"]["input_size"])
        sizes = sorted({max(32, round(s * f / 32) * 32) for f in (0.5, 0.625, 0.75, 1.0)})
    res["crop_sizes"] = crop_size_sweep(str(weights), faces_all, sizes) if sizes else []
    md = markdown(res)
    out = Path(args.out) if args.out else machine_results_dir()
    stem = f"face_cost-{Path(weights).stem}"
    atomic.write_text(out / f"{stem}.json", json.dumps(res, indent=1))
    atomic.write_text(out / f"{stem}.md", md)
    print(md)
    return 0


def markdown(res: Dict[str, Any]) -> str:
    env = res["environment"]
    out = [f"# Where a face's time goes: {Path(res['weights']).name}", "",
           f"- `{res['command']}`; {env['date']}; {env['cpu']['model']} ({env['cpu']['cores']} cores); 1 thread; "
           f"{res['faces']} 300-W val faces; other processes' load during the timings: {res['other_load_cores']} "
           "cores", "",
           "| step (ms per face, median) | " + " | ".join(res["backends"]) + " |",
           "|---|" + "---:|" * len(res["backends"])]
    keys = ["warp_ms", "normalize_ms", "crop_batch_ms", "net_fixed_ms", "net_faces_ms", "predict_ms",
            "mnn_const_ms", "mnn_forward_ms", "mnn_read_ms"]
    for k in keys:
        vals = [res["backends"][b].get(k) for b in res["backends"]]
        if any(v is not None for v in vals):
            out.append(f"| {k[:-3]} | " + " | ".join("" if v is None else f"{v:.3f}" for v in vals) + " |")
    hw = dict(res["host_warp"])
    out += ["", f"Host-side {hw.pop('face_size')} px face warp (the model's face size; `cv2.warpAffine`, bilinear): "
            + ", ".join(f"{k[:-3]} {v:.3f} ms" for k, v in hw.items()), ""]
    for b, r in res["backends"].items():
        p = r["profile"]
        out.append(f"- {b} profile: kernels {p['kernel_ms']:.3f} ms; by sub-network "
                   + ", ".join(f"{k} {v:.3f}" for k, v in (p.get("by_scope") or {}).items())
                   + "; glue by op " + ", ".join(f"{g['op']} {g['ms']:.3f}" for g in (p.get("glue_by_op") or [])[:6]))
    if res["crop_sizes"]:
        out += ["", "Crop resolution (same weights and context, eager PyTorch, all val faces):", "",
                "| input crop px | NME68 | NME51 | failures |", "|---:|---:|---:|---:|"]
        for r in res["crop_sizes"]:
            out.append(f"| {r['input_size']} | {r['nme68']:.2%} | {r['nme51']:.2%} | {r['failures']} |")
    out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
