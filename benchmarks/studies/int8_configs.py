"""Which onnxruntime int8 configuration, if any, beats fp32 for the shipped models (``python -m
benchmarks.studies.int8_configs [--models small-fast small] [--batches 1 16] [--faces 1 16] [--rounds 3]
[--time 0.6]``).

Two parts, each timed in process CPU time per call (1 thread; robust on a machine another process loads), fp32 and
every int8 form of a part interleaved in the same rounds (:func:`glsr.bench.glue.min_of_round_medians`):

1. *Sub-networks*: each model's global regressor and one part regressor (as it runs:
   :meth:`glsr.models.GLSRNet.without_inert_stages`; the four part regressors have one shape) exported alone at
   each ``--batches`` size, then quantized statically with onnxruntime's quantizer in every configuration of
   :data:`CONFIGS` (format, per-channel, 7/8-bit weights, U8S8 / S8S8, which ops and layers, session options),
   calibrated on random inputs (speed does not depend on the ranges). ms per face = ms per call / batch.
2. *End to end*: ``Predictor.predict`` (image + boxes -> landmarks, what ``glsr bench`` times) on one real 300-W
   ``val`` photo, the single graph exported by ``glsr export`` in fp32 and in int8 as it quantizes now and as it
   did before this study (Conv/Gemm only, ReLUs float, part regressors int8), at 1 face (batch-1 export) and at
   each larger ``--faces`` count (``--batch dynamic`` export, all faces in one call); and NME68 / NME51 of each
   artifact over every face of 300-W ``val`` (tight boxes, one face per call), with int8 - fp32 in pp.

Writes ``benchmarks/results/<machine>/int8_configs.{json,md}``.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from benchmarks import loadavg, missing_300w, study_record, write_record
from glsr.bench.artifacts import export_sub_onnx, private_cwd
from glsr.bench.glue import min_of_round_medians
from glsr.export.onnx_export import quiet_root_logger

ALL = ("Conv", "Gemm", "Relu")
CONFIGS: Dict[str, Dict[str, Any]] = {
    "glsr int8": {},
    "ReLU float (before)": {"ops": ("Conv", "Gemm")},
    "per-tensor weights": {"per_channel": False},
    "8-bit weights": {"reduce_range": False},
    "QOperator form": {"format": "QOperator"},
    "int8 activations (S8S8)": {"activation": "QInt8", "reduce_range": False},
    "S8S8, qdqisint8allowed=1": {"activation": "QInt8", "reduce_range": False,
                                 "session": {"session.qdqisint8allowed": "1"}},
    "Add in int8 too": {"ops": ALL + ("Add",)},
    "depthwise float": {"skip": "depthwise"},
    "depthwise only": {"skip": "not depthwise"},
    "x64quantprecision=1 (U8U8)": {"session": {"session.x64quantprecision": "1"}},
    "graph opt. extended (no NCHWc)": {"level": "extended"},
}
"""Quantization settings against ``glsr int8`` (:func:`glsr.export.onnx_export.quantize_int8`: QDQ, per-channel
7-bit int8 weights, uint8 activations, Conv/Gemm/Relu, every layer but the head) and session options."""
FP32_CONFIGS: Dict[str, Dict[str, Any]] = {"fp32": {}, "fp32, graph opt. extended (no NCHWc)": {"level": "extended"}}


# ------------------------------------------------------------------------------------------ sub-networks


def is_depthwise(node) -> bool:
    return node.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in node.attribute)


def quantize(src: Path, dst: Path, shape: Sequence[int], cfg: Mapping[str, Any]) -> Path:
    """``src`` statically quantized with ``cfg`` (keys of :data:`CONFIGS`' values), random calibration inputs."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from benchmarks.studies.int8_subnets import random_reader

    proto = onnx.load(str(src))
    g = proto.graph
    skip = cfg.get("skip")
    exclude = sorted(_head(g) | {n.name for n in g.node if (skip == "depthwise" and is_depthwise(n))
                                 or (skip == "not depthwise" and not is_depthwise(n))})
    reader = random_reader(g.input[0].name, shape, 4)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), quiet_root_logger():
        warnings.simplefilter("ignore")
        quantize_static(str(src), str(dst), reader, quant_format=getattr(QuantFormat, cfg.get("format", "QDQ")),
                        op_types_to_quantize=list(cfg.get("ops", ALL)), per_channel=cfg.get("per_channel", True),
                        reduce_range=cfg.get("reduce_range", True),
                        activation_type=getattr(QuantType, cfg.get("activation", "QUInt8")),
                        weight_type=QuantType.QInt8, nodes_to_exclude=exclude)
    return dst


def _head(g) -> set:
    """The sub-network's head, kept float as ``glsr export`` keeps it: its last Gemm (names carry no scopes)."""
    gemms = [n.name for n in g.node if n.op_type == "Gemm"]
    return set(gemms[-1:])


class Session:
    """A 1-thread onnxruntime session as the runtime builds it, with optional config entries / optimization
    level, run on one fixed random input."""

    def __init__(self, path: Path, shape: Sequence[int], cfg: Mapping[str, Any]):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = 1, 1, 3
        so.add_session_config_entry("session.set_denormal_as_zero", "1")
        for k, v in cfg.get("session", {}).items():
            so.add_session_config_entry(k, v)
        if cfg.get("level") == "extended":
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        self.s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.name = self.s.get_inputs()[0].name
        self.x = np.random.default_rng(1).standard_normal(tuple(shape)).astype(np.float32)

    def __call__(self):
        return self.s.run(None, {self.name: self.x})


def subnet_sweep(name: str, weights: str, batches: Sequence[int], work: Path, rounds: int, budget_s: float
                 ) -> Dict[str, Any]:
    """``{subnet: {batch: {config: {"cpu_ms", "per_face_ms", "ratio"}}}}`` for the global and one part regressor."""
    from glsr.models import load_checkpoint
    from glsr.shipped import resolve_weights

    model = load_checkpoint(resolve_weights(weights)).eval().without_inert_stages()
    subs = [(n, m, s) for n, m, s in model.sub_networks() if n.startswith("global_regress")]
    subs += [(n, m, s) for n, m, s in model.sub_networks() if n.startswith("local_regress")][:1]
    out: Dict[str, Any] = {}
    for sub, mod, shape in subs:
        for b in batches:
            shape_b = (b,) + tuple(shape[1:])
            src = export_sub_onnx(mod, shape_b, work / f"{name}-{sub}-b{b}.onnx", batch=b)
            runners: Dict[str, Callable[[], Any]] = {k: Session(src, shape_b, c) for k, c in FP32_CONFIGS.items()}
            for k, c in CONFIGS.items():
                q = quantize(src, work / f"{name}-{sub}-b{b}-{len(runners)}.onnx", shape_b, c)
                runners[k] = Session(q, shape_b, c)
            cpu: Dict[str, float] = {}
            min_of_round_medians(runners, rounds, budget_s, cpu)
            base = cpu["fp32"]
            out.setdefault(sub, {})[str(b)] = {k: {"cpu_ms": round(v, 4), "per_face_ms": round(v / b, 4),
                                                   "ratio": round(v / base, 3)} for k, v in cpu.items()}
            print(f"[int8] {name} {sub} batch {b}: " + ", ".join(f"{k} {v / base:.2f}x" for k, v in cpu.items()),
                  file=sys.stderr, flush=True)
    return out


# ------------------------------------------------------------------------------------------ end to end


@contextlib.contextmanager
def before_settings():
    """``glsr export --precision int8`` as it quantized before this study: Conv/Gemm only (ReLUs float between a
    DequantizeLinear and a QuantizeLinear), part regressors int8 too."""
    from glsr.export import onnx_export as oe

    old = oe.QUANTIZED_OPS, oe.ONNX_INT8_SCOPES
    oe.QUANTIZED_OPS, oe.ONNX_INT8_SCOPES = ("Conv", "Gemm"), oe.INT8_SCOPES
    try:
        yield
    finally:
        oe.QUANTIZED_OPS, oe.ONNX_INT8_SCOPES = old


KINDS = ("fp32", "int8", "int8 before")


def export_kinds(weights: str, work: Path) -> Dict[Tuple[str, str], Path]:
    """``{(kind, batch): artifact}`` for :data:`KINDS` and batches ``"1"`` / ``"dynamic"`` (single graph)."""
    from glsr.export import export_model
    from glsr.shipped import resolve_weights

    arts: Dict[Tuple[str, str], Path] = {}
    with private_cwd():
        for kind in KINDS:
            for batch in ("1", "dynamic"):
                ctx = before_settings() if kind == "int8 before" else contextlib.nullcontext()
                with ctx:
                    res = export_model(str(resolve_weights(weights)), formats="onnx", precision=kind.split()[0],
                                       out_dir=work / f"{kind.replace(' ', '-')}-{batch}", parity=False, name="m",
                                       batch=batch)
                arts[(kind, batch)] = Path(res.artifacts[0])
    return arts


def end_to_end(name: str, weights: str, faces: Sequence[int], work: Path, rounds: int, budget_s: float,
               val: Sequence[Any]) -> Dict[str, Any]:
    from benchmarks.studies.host_warp import first_face
    from benchmarks.studies.many_faces import face_boxes
    from glsr.bench.latency import score68
    from glsr.export.onnx_export import node_counts
    from glsr.runtime.predictor import Predictor

    arts = export_kinds(weights, work)
    image, box = first_face()
    boxes = face_boxes(box, max(faces), image.shape)
    runners: Dict[str, Callable[[], Any]] = {}
    for kind in KINDS:
        for n in faces:
            pred = Predictor.from_file(arts[(kind, "1" if n == 1 else "dynamic")], threads=1)
            runners[f"{kind}|{n}"] = (lambda p=pred, b=boxes[:n]: p.predict(image, b))
    cpu: Dict[str, float] = {}
    wall = min_of_round_medians(runners, rounds, budget_s, cpu)
    speed: Dict[str, Any] = {}
    for key, ms in cpu.items():
        kind, n = key.split("|")
        speed.setdefault(kind, {})[n] = {"cpu_ms_per_face": round(ms / int(n), 4),
                                         "wall_ms_per_face": round(wall[key] / int(n), 4)}
    accuracy: Dict[str, Any] = {}
    gt = np.stack([f.gt for f in val])
    for kind in KINDS:
        pred = Predictor.from_file(arts[(kind, "1")], threads=1)
        pts = np.stack([pred.predict(f.image, f.box)[0] for f in val])
        s = score68(pts, gt)
        accuracy[kind] = {"nme68": round(s["nme68"], 6), "nme51": round(s["nme51"], 6), "failures": s["failures"],
                          "count": s["count"], "ops": node_counts(arts[(kind, "1")])}
    for kind in KINDS[1:]:
        for k in ("nme68", "nme51"):
            accuracy[kind][f"d_{k}_pp"] = round((accuracy[kind][k] - accuracy["fp32"][k]) * 100, 3)
    print(f"[int8] {name} end to end: " + "; ".join(
        f"{kind} " + ", ".join(f"{n} faces {v['cpu_ms_per_face']:.3f}" for n, v in speed[kind].items())
        for kind in KINDS), file=sys.stderr, flush=True)
    return {"speed": speed, "accuracy": accuracy}


# ------------------------------------------------------------------------------------------ report


def markdown(r: Dict[str, Any]) -> str:
    env = r["environment"]
    flags = ", ".join(env["cpu"].get("flags") or [])
    lines = ["# onnxruntime int8 configurations against fp32", "",
             f"{env['date']} - {env['cpu']['model']} ({flags}), 1 thread; onnxruntime "
             f"{env['libraries'].get('onnxruntime')}; load average {r['loadavg'][0]} -> {r['loadavg'][1]}; "
             f"{r['rounds']} interleaved rounds, min of the per-round medians of process CPU time. Command: "
             f"`{r['command']}`", ""]
    for m in r["models"]:
        lines += [f"## {m['model']}", ""]
        e = m.get("end_to_end")
        if e:
            counts = list(e["speed"]["fp32"])
            lines += ["End to end, `Predictor.predict` on one 300-W val photo, single graph as `glsr export` writes "
                      "it; CPU ms per face (1 face: batch-1 export; more: `--batch dynamic`, all faces in one call); "
                      "int8 / fp32 of the same face count. NME over all val faces (tight boxes), int8 - fp32 in pp.",
                      "", "| artifact | " + " | ".join(f"{n} face{'s' if int(n) > 1 else ''} ms | int8 / fp32"
                                                      for n in counts)
                      + " | NME68 | dNME68 pp | dNME51 pp | Q / DQ nodes |",
                      "|---|" + "---:|---:|" * len(counts) + "---:|---:|---:|---:|"]
            for kind, per in e["speed"].items():
                a = e["accuracy"][kind]
                cells = " | ".join(f"{per[n]['cpu_ms_per_face']:.3f} | " + (
                    "" if kind == "fp32" else
                    f"{per[n]['cpu_ms_per_face'] / e['speed']['fp32'][n]['cpu_ms_per_face']:.2f}x") for n in counts)
                d68 = "" if kind == "fp32" else f"{a['d_nme68_pp']:+.3f}"
                d51 = "" if kind == "fp32" else f"{a['d_nme51_pp']:+.3f}"
                q = f"{a['ops'].get('QuantizeLinear', 0)} / {a['ops'].get('DequantizeLinear', 0)}"
                lines.append(f"| {kind} | {cells} | {a['nme68']:.3%} | {d68} | {d51} | {q} |")
            lines.append("")
        for sub, per_b in m.get("subnets", {}).items():
            bs = list(per_b)
            lines += [f"{sub} alone (random input), CPU ms per face and / fp32 of the same batch:", "",
                      "| configuration | " + " | ".join(f"batch {b} ms/face | / fp32" for b in bs) + " |",
                      "|---|" + "---:|---:|" * len(bs)]
            for k in per_b[bs[0]]:
                lines.append(f"| {k} | " + " | ".join(f"{per_b[b][k]['per_face_ms']:.3f} | {per_b[b][k]['ratio']:.2f}x"
                                                     for b in bs) + " |")
            lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["small-fast", "small"], help="shipped names or .pt files")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16], help="sub-network batch sizes")
    ap.add_argument("--faces", nargs="+", type=int, default=[1, 16], help="faces per image, end to end")
    ap.add_argument("--parts", nargs="+", default=["subnets", "e2e"], choices=["subnets", "e2e"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--time", type=float, default=0.6, help="seconds per timed figure, over all rounds")
    ap.add_argument("-o", "--out", default=None, help="default: benchmarks/results/<machine>")
    args = ap.parse_args(argv)
    if min(args.batches + args.faces) < 1:
        print("--batches / --faces: counts must be >= 1", file=sys.stderr)
        return 2
    if "e2e" in args.parts and missing_300w():
        return 2
    val = None
    if "e2e" in args.parts:
        from glsr.bench.latency import load_faces
        from glsr.paths import SHARED

        val = load_faces(f"300w:{SHARED / 'data' / '300w'}", "val")
    before = loadavg()
    models = []
    with tempfile.TemporaryDirectory(prefix="glsr-int8-configs-") as tmp:
        for i, name in enumerate(args.models):
            work = Path(tmp) / f"m{i}"
            work.mkdir()
            rec: Dict[str, Any] = {"model": Path(name).stem}
            if "e2e" in args.parts:
                rec["end_to_end"] = end_to_end(name, name, sorted(set(args.faces)), work, args.rounds, args.time, val)
            if "subnets" in args.parts:
                rec["subnets"] = subnet_sweep(name, name, sorted(set(args.batches)), work, args.rounds, args.time)
            models.append(rec)
    r = study_record("int8_configs", argv, before, rounds=args.rounds, models=models)
    write_record("int8_configs", r, markdown(r), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
