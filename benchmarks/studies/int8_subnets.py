"""int8 against fp32, network by network, in onnxruntime (``python -m benchmarks.studies.int8_subnets [--model
small-fast] [--rounds 3] [--time 1.0]``).

Every learned sub-network of the model (as it runs: :meth:`glsr.models.GLSRNet.without_inert_stages`) exported
alone, then statically quantized by onnxruntime with per-channel int8 weights and uint8 activations, in the QDQ
form ``glsr export --precision int8`` writes and in the QOperator form, calibrated on random inputs (speed does not
depend on the ranges). Each is timed alone on random input, one thread, batch 1 (min of per-round medians, wall and
process CPU time), and profiled per op type with onnxruntime's profiler: where an int8 network is not faster, the
profile says which kernels take its time. Writes ``benchmarks/results/<machine>/int8_subnets.{json,md}``.
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
from glsr.bench.glue import RawOnnx, min_of_round_medians
from glsr.bench.profile import profile_onnx

FORMS = ("QDQ", "QOperator")


def quantize(src: Path, dst: Path, shape, form: str) -> None:
    """Static per-channel int8 quantization of ``src`` (random calibration inputs of ``shape``)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    name = onnx.load(str(src)).graph.input[0].name
    rng = np.random.default_rng(0)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.left = 8

        def get_next(self):
            self.left -= 1
            return None if self.left < 0 else {name: rng.standard_normal(shape).astype(np.float32)}

    quantize_static(str(src), str(dst), Reader(), quant_format=getattr(QuantFormat, form), per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def main(argv: List[str] | None = None) -> int:
    from glsr.models import load_checkpoint
    from glsr.shipped import resolve_weights

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="small-fast", help="shipped name or .pt file")
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
            paths = {"fp32": fp32}
            for form in FORMS:
                paths[f"int8 {form}"] = fp32.with_name(f"{name}.int8.{form}.onnx")
                quantize(fp32, paths[f"int8 {form}"], shape, form)
            for kind, p in paths.items():
                runners[f"{name}|{kind}"] = RawOnnx(p, 1)
                prof = profile_onnx(p, 1, runs=100, top=6)
                profiles[f"{name}|{kind}"] = {"kernel_ms": prof["kernel_ms"],
                                              "by_op": [(o["op"], o["ms"], o["nodes"]) for o in prof["by_op"]]}
        cpu: Dict[str, float] = {}
        best = min_of_round_medians(runners, args.rounds, args.time, cpu)
    rows: Dict[str, Any] = {}
    for key, ms in best.items():
        name, kind = key.split("|")
        rows.setdefault(name, {})[kind] = {"wall_ms": round(ms, 4), "cpu_ms": round(cpu[key], 4),
                                           "profile": profiles[key]}
    r = study_record("int8_subnets", argv, before, model=args.model, rounds=args.rounds, subnets=rows)
    write_record("int8_subnets", r, markdown(r), args.out)
    return 0


def markdown(r: Dict[str, Any]) -> str:
    env = r["environment"]
    flags = "(" + ", ".join(env["cpu"].get("flags") or []) + ")"
    lines = ["# int8 against fp32 per sub-network (onnxruntime)", "",
             f"{env['date']} - {env['cpu']['model']} {flags}, 1 thread, batch 1; onnxruntime "
             f"{env['libraries'].get('onnxruntime')}; load average {r['loadavg'][0]} -> {r['loadavg'][1]}; "
             f"{r['rounds']} interleaved rounds, min of the per-round medians. Command: `{r['command']}`", "",
             "Per-channel int8 weights, uint8 activations, static ranges. int8 / fp32 < 1 means int8 is faster. "
             "Profile: onnxruntime's kernel time by op type (ms per run, with the profiler on).", "",
             "| sub-network | fp32 ms (cpu) | int8 QDQ ms (cpu) | QDQ / fp32 | int8 QOperator ms (cpu) | QOp / fp32 |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, v in r["subnets"].items():
        f, q, o = v["fp32"], v["int8 QDQ"], v["int8 QOperator"]
        lines.append(f"| {name} | {f['wall_ms']:.3f} ({f['cpu_ms']:.3f}) | {q['wall_ms']:.3f} ({q['cpu_ms']:.3f}) | "
                     f"{q['cpu_ms'] / f['cpu_ms']:.2f}x | {o['wall_ms']:.3f} ({o['cpu_ms']:.3f}) | "
                     f"{o['cpu_ms'] / f['cpu_ms']:.2f}x |")
    lines += ["", "Kernel time by op type (ms, nodes):", ""]
    for name, v in r["subnets"].items():
        for kind, d in v.items():
            lines.append(f"- {name} {kind}: {d['profile']['kernel_ms']:.3f} ms = "
                         + ", ".join(f"{op} {ms:.3f} ({n})" for op, ms, n in d["profile"]["by_op"]))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
