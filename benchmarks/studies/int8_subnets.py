"""int8 against fp32, network by network, in onnxruntime and MNN (``python -m benchmarks.studies.int8_subnets
[--model small-fast] [--runtimes onnx mnn] [--rounds 3] [--time 1.0]``).

Every learned sub-network of the model (as it runs: :meth:`glsr.models.GLSRNet.without_inert_stages`) exported
alone, then statically quantized: by onnxruntime with per-channel int8 weights and uint8 activations, in the QDQ
form ``glsr export --precision int8`` writes and in the QOperator form; by MNN's offline quantizer (``mnnquant``, the
settings ``glsr export --format mnn --precision int8`` uses: :func:`glsr.export.mnn_export.quantize`, every layer in
int8), run with the precision the runtime gives int8 artifacts (``normal``; fp32: ``high``). Calibrated on random
inputs (speed does not depend on the ranges). Each is timed alone on random input, one thread, batch 1 (min of
per-round medians, wall and process CPU time), and profiled per op type (onnxruntime's profiler, MNN's per-op
callbacks): where an int8 network is not faster, the profile says which kernels take its time. Writes
``benchmarks/results/<machine>/int8_subnets.{json,md}``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from benchmarks import loadavg, study_record, write_record
from glsr.bench.artifacts import export_sub_onnx
from glsr.bench.glue import RawMNN, RawOnnx, min_of_round_medians
from glsr.bench.profile import profile_mnn, profile_onnx
from glsr.runtime.sessions import mnn_precision

FORMS = ("QDQ", "QOperator")
MNN_KINDS = ("mnn fp32", "mnn int8")


def mnn_pair(model, name: str, shape, fp32_onnx: Path, work: Path) -> Dict[str, Path]:
    """``{"mnn fp32": path, "mnn int8": path}``: the sub-network converted by MNN and quantized by ``mnnquant``
    (every layer, random calibration images of its input size)."""
    import dataclasses

    from glsr.bench.artifacts import private_cwd
    from glsr.export.mnn_export import convert_onnx, quantize as mnn_quantize
    from glsr.runtime.processing import metadata_for

    meta = dataclasses.replace(metadata_for(model, format="mnn", batch="1"), variant=f"{model.cfg.name}/{name}",
                               input_size=int(shape[-1]))
    fp32 = fp32_onnx.with_suffix(".mnn").resolve()
    int8 = fp32_onnx.with_name(f"{name}.int8.mnn").resolve()
    calib = np.random.default_rng(0).integers(0, 256, (8, shape[-2], shape[-1], 3), dtype=np.uint8)
    with private_cwd():
        convert_onnx(fp32_onnx.resolve(), fp32, meta)
        mnn_quantize(fp32, int8, meta, calib, (work / f"{name}-quant").resolve())
    return {"mnn fp32": fp32, "mnn int8": int8}


def random_reader(name: str, shape, count: int):
    """An onnxruntime ``CalibrationDataReader`` of ``count`` standard-normal inputs ``name`` of ``shape`` (seed 0):
    the speed of a quantized graph does not depend on its ranges."""
    from onnxruntime.quantization import CalibrationDataReader

    rng = np.random.default_rng(0)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.left = count

        def get_next(self):
            self.left -= 1
            return None if self.left < 0 else {name: rng.standard_normal(shape).astype(np.float32)}

    return Reader()


def quantize(src: Path, dst: Path, shape, form: str) -> None:
    """Static per-channel int8 quantization of ``src`` (random calibration inputs of ``shape``)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    name = onnx.load(str(src)).graph.input[0].name
    quantize_static(str(src), str(dst), random_reader(name, shape, 8), quant_format=getattr(QuantFormat, form),
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def main(argv: List[str] | None = None) -> int:
    from glsr.models import load_checkpoint
    from glsr.shipped import resolve_weights

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="small-fast", help="shipped name or .pt file")
    ap.add_argument("--runtimes", nargs="+", default=["onnx", "mnn"], choices=["onnx", "mnn"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--time", type=float, default=1.0, help="seconds per timed figure, over all rounds")
    ap.add_argument("-o", "--out", default=None, help="default: benchmarks/results/<machine>")
    args = ap.parse_args(argv)
    model = load_checkpoint(resolve_weights(args.model)).eval().without_inert_stages()
    before = loadavg()
    runners, profiles = {}, {}
    with tempfile.TemporaryDirectory(prefix="glsr-int8-") as tmp:
        for name, mod, shape in model.sub_networks():
            if name == "local_reinit":  # a few small fully connected layers on 68 points; glsr keeps it float
                continue
            fp32 = Path(tmp) / f"{name}.onnx"
            export_sub_onnx(mod, shape, fp32)
            if "onnx" in args.runtimes:
                paths = {"fp32": fp32}
                for form in FORMS:
                    paths[f"int8 {form}"] = fp32.with_name(f"{name}.int8.{form}.onnx")
                    quantize(fp32, paths[f"int8 {form}"], shape, form)
                for kind, p in paths.items():
                    runners[f"{name}|{kind}"] = RawOnnx(p, 1)
                    prof = profile_onnx(p, 1, runs=100, top=6)
                    profiles[f"{name}|{kind}"] = {"kernel_ms": prof["kernel_ms"],
                                                  "by_op": [(o["op"], o["ms"], o["nodes"]) for o in prof["by_op"]]}
            if "mnn" in args.runtimes:
                for kind, p in mnn_pair(model, name, shape, fp32, Path(tmp)).items():
                    precision = mnn_precision("int8" if "int8" in kind else "fp32")
                    runners[f"{name}|{kind}"] = RawMNN(p, 1, shape, precision)
                    prof = profile_mnn(p, 1, runs=8, top=6, precision=precision)
                    profiles[f"{name}|{kind}"] = {"kernel_ms": prof["kernel_ms"],
                                                  "by_op": [(o["op"], o["ms"], None) for o in prof["by_op"]]}
        cpu: Dict[str, float] = {}
        best = min_of_round_medians(runners, args.rounds, args.time, cpu)
    rows: Dict[str, Any] = {}
    for key, ms in best.items():
        name, kind = key.split("|")
        rows.setdefault(name, {})[kind] = {"wall_ms": round(ms, 4), "cpu_ms": round(cpu[key], 4),
                                           "profile": profiles[key]}
    r = study_record("int8_subnets", argv, before, model=args.model, rounds=args.rounds, runtimes=args.runtimes,
                     subnets=rows)
    write_record("int8_subnets", r, markdown(r), args.out)
    return 0


def markdown(r: Dict[str, Any]) -> str:
    env = r["environment"]
    flags = "(" + ", ".join(env["cpu"].get("flags") or []) + ")"
    runtimes = r.get("runtimes", ["onnx"])
    lines = ["# int8 against fp32 per sub-network (" + " and ".join(RUNTIME_NAMES[x] for x in runtimes) + ")", "",
             f"{env['date']} - {env['cpu']['model']} {flags}, 1 thread, batch 1; onnxruntime "
             f"{env['libraries'].get('onnxruntime')}, MNN {env['libraries'].get('MNN')}; load average "
             f"{r['loadavg'][0]} -> {r['loadavg'][1]}; {r['rounds']} interleaved rounds, min of the per-round "
             f"medians. Command: `{r['command']}`", "",
             "int8 weights, 8-bit activations, static ranges. int8 / fp32 < 1 means int8 is faster. Profile: the "
             "runtime's kernel time by op type (ms per run, with the profiler on; MNN: wall time between its per-op "
             "callbacks).", ""]
    if "onnx" in runtimes:
        lines += ["onnxruntime (per-channel QDQ as `glsr export --precision int8` writes it, and QOperator):", "",
                  "| sub-network | fp32 ms (cpu) | int8 QDQ ms (cpu) | QDQ / fp32 | int8 QOperator ms (cpu) | "
                  "QOp / fp32 |", "|---|---:|---:|---:|---:|---:|"]
        for name, v in r["subnets"].items():
            f, q, o = v["fp32"], v["int8 QDQ"], v["int8 QOperator"]
            lines.append(f"| {name} | {f['wall_ms']:.3f} ({f['cpu_ms']:.3f}) | {q['wall_ms']:.3f} "
                         f"({q['cpu_ms']:.3f}) | {q['cpu_ms'] / f['cpu_ms']:.2f}x | {o['wall_ms']:.3f} "
                         f"({o['cpu_ms']:.3f}) | {o['cpu_ms'] / f['cpu_ms']:.2f}x |")
        lines.append("")
    if "mnn" in runtimes:
        lines += ["MNN (`mnnquant`, every layer int8; fp32 run at precision high, int8 at normal as the runtime "
                  "does):", "", "| sub-network | fp32 ms (cpu) | int8 ms (cpu) | int8 / fp32 |", "|---|---:|---:|---:|"]
        for name, v in r["subnets"].items():
            f, q = v["mnn fp32"], v["mnn int8"]
            lines.append(f"| {name} | {f['wall_ms']:.3f} ({f['cpu_ms']:.3f}) | {q['wall_ms']:.3f} "
                         f"({q['cpu_ms']:.3f}) | {q['cpu_ms'] / f['cpu_ms']:.2f}x |")
        lines.append("")
    lines += ["Kernel time by op type (ms, nodes):", ""]
    for name, v in r["subnets"].items():
        for kind, d in v.items():
            lines.append(f"- {name} {kind}: {d['profile']['kernel_ms']:.3f} ms = "
                         + ", ".join(f"{op} {ms:.3f}" + (f" ({n})" if n is not None else "")
                                     for op, ms, n in d["profile"]["by_op"]))
    return "\n".join(lines) + "\n"


RUNTIME_NAMES = {"onnx": "onnxruntime", "mnn": "MNN"}


if __name__ == "__main__":
    sys.exit(main())
