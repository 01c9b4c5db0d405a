"""int8 against fp32 in one per-face run (``glsr bench --peers ... --precision fp32,int8``): the report's section
"int8 against fp32".

For every glsr model / mode / backend with both an fp32 and an int8 row of the same run:

* ``ratio_e2e`` = int8 e2e median / fp32 e2e median (< 1: int8 is faster), ``ratio_net`` the same for the
  network alone (``net_fixed``); NME differences int8 - fp32 in percentage points over all faces of the split,
  ``within_nme`` when |dNME68| <= :data:`NME_TOLERANCE_PP`;
* a verdict: faster or not faster on this CPU, naming the CPU's int8 dot-product instruction flags from the
  recorded machine info (:data:`glsr.bench.machine.INT8_FLAGS`, or none), and when int8 is not faster on a CPU
  with them, the backend's measured reason and the study that shows it (:data:`WHY_NOT_FASTER`);
* when int8 is not faster, a per-op-type profile of both artifacts' network (:mod:`glsr.bench.profile`:
  onnxruntime's profiler kernel time, MNN's per-op callbacks at the precision the runtime runs each artifact),
  taken after every e2e measurement of the run (never inside one), in a fresh process unless the run is not
  isolated; :func:`op_changes` lines the two up per op type (ms per call, largest increase first) and
  :func:`families` counts each int8 kernel with the fp32 op it replaces (``QLinearConv`` with ``Conv``) and the
  float <-> int8 conversions apart.

The network-by-network study of the same question is ``python -m benchmarks.studies.int8_subnets``.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from glsr.bench.machine import INT8_FLAGS, int8_flags

TITLE = "int8 against fp32"
NME_TOLERANCE_PP = 0.1
"""Largest |NME68 int8 - NME68 fp32| in percentage points for int8 to count as accurate as fp32."""
SHARED_CPU = 0.2
"""Other processes' cores during a case above which its time is not this machine's (the report's threshold)."""
TOP_OPS = 8
PROFILE_RUNS = {"onnx": 50, "mnn": 8}
"""Profiled runs per artifact by default (MNN's callback API degrades after about a dozen runs on one session)."""
RUNTIME_NAMES = {"onnx": "onnxruntime", "mnn": "MNN"}
WHY_NOT_FASTER = {
    "onnx": "measured on an AVX-512 VNNI CPU by python -m benchmarks.studies.int8_configs: onnxruntime's int8 "
            "convolutions cost what its fp32 (NCHWc) ones cost on one small crop per call (small-fast's global "
            "regressor alone: 1.02x) and pay with more work per call: 16 faces in one call (--batch dynamic) take "
            "0.91x fp32's time per face for small-fast, 0.83x for small",
    "mnn": "measured on an AVX-512 VNNI CPU by python -m benchmarks.studies.int8_subnets: MNN's int8 kernels "
           "(convolution, depthwise, the requantized residual add) run slower than its fp32 ones",
}
"""Why int8 is not faster although the CPU has int8 instructions, per backend: the measured reason and the study
that shows it (the verdict adds it)."""


# ------------------------------------------------------------------------------------------ comparison


def pairs(cases: Sequence[Dict[str, Any]]) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """``(fp32 record, int8 record)`` of every glsr model / mode / backend with both precisions, in row order."""
    by_key: Dict[Tuple[Any, ...], Dict[str, Dict[str, Any]]] = {}
    for c in cases:
        if c.get("kind") == "glsr" and c.get("precision") in ("fp32", "int8"):
            by_key.setdefault((c["model"], c.get("mode", "graph"), c["backend"]), {})[c["precision"]] = c
    return [(v["fp32"], v["int8"]) for v in by_key.values() if "fp32" in v and "int8" in v]


def compare(fp32: Dict[str, Any], int8: Dict[str, Any], cpu: Mapping[str, Any]) -> Dict[str, Any]:
    """One entry of the section: end-to-end and network-only ratios, NME differences, the verdict."""
    e2e = (fp32["latency"]["e2e"]["median_ms"], int8["latency"]["e2e"]["median_ms"])
    nets = [c["latency"].get("net_fixed", {}).get("median_ms") for c in (fp32, int8)]
    d68 = (int8["accuracy"]["nme68"] - fp32["accuracy"]["nme68"]) * 100
    d51 = (int8["accuracy"]["nme51"] - fp32["accuracy"]["nme51"]) * 100
    loads = [c.get("other_load_cores") for c in (fp32, int8)]
    out = {"model": fp32["model"], "mode": fp32.get("mode", "graph"), "backend": fp32["backend"],
           "fp32": fp32["label"], "int8": int8["label"], "e2e_fp32_ms": e2e[0], "e2e_int8_ms": e2e[1],
           "ratio_e2e": round(e2e[1] / e2e[0], 3),
           "ratio_net": round(nets[1] / nets[0], 3) if all(nets) else None,
           "nme68_fp32": fp32["accuracy"]["nme68"], "nme68_int8": int8["accuracy"]["nme68"],
           "d_nme68_pp": round(d68, 3), "d_nme51_pp": round(d51, 3),
           "within_nme": abs(d68) <= NME_TOLERANCE_PP + 1e-9, "int8_flags": int8_flags(cpu),
           "other_load_cores": max((v for v in loads if v is not None), default=None)}
    out["faster"] = out["ratio_e2e"] < 1.0
    out["verdict"] = verdict(out)
    return out


def verdict(entry: Mapping[str, Any]) -> str:
    """One line: faster / not faster on this CPU, by how much, with which int8 instructions, and the NME change."""
    flags = entry["int8_flags"]
    insn = (f"int8 instructions: {', '.join(flags)}" if flags else
            f"the CPU has no int8 dot-product instructions (none of {', '.join(INT8_FLAGS)})")
    if entry["faster"]:
        head = f"int8 is faster on this CPU: {entry['ratio_e2e']:.2f}x fp32's end-to-end time ({insn})"
    else:
        head = (f"int8 is not faster on this CPU: {entry['ratio_e2e']:.2f}x fp32's end-to-end time "
                + (f"although the CPU has int8 instructions ({', '.join(flags)})" if flags else f"and {insn}"))
    nme = (f"NME68 {entry['d_nme68_pp']:+.2f} pp ({'within' if entry['within_nme'] else 'outside'} "
           f"{NME_TOLERANCE_PP} pp of fp32)")
    line = f"{head}; {nme}"
    if flags and not entry["faster"] and entry.get("backend") in WHY_NOT_FASTER:
        line += f" ({WHY_NOT_FASTER[entry['backend']]})"
    load = entry.get("other_load_cores")
    if load is not None and load > SHARED_CPU:
        line += f"; other processes used up to {load:.2f} cores during these cases, so the ratio is unreliable"
    return line


def compare_run(results: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """The section's entries for a per-face result (empty without both precisions of some row)."""
    cpu = results["environment"]["cpu"]
    return [compare(f, q, cpu) for f, q in pairs(results["cases"])]


def op_changes(fp32_by_op: Sequence[Mapping[str, Any]], int8_by_op: Sequence[Mapping[str, Any]],
               top: int = TOP_OPS) -> Dict[str, Any]:
    """Line up two per-op-type profiles (``[{"op", "ms"}]``, ms per call, every op type) of the same network:
    ``rows`` = the ``top`` op types with the largest |int8 - fp32| plus every op type only the int8 artifact has
    (QuantizeLinear, QLinearAdd, ...), largest increase first, each with ``only`` = ``"int8"`` / ``"fp32"`` /
    ``None``; ``other`` = the remaining op types summed; ``total`` = all op types (rows + other = total)."""
    a, b = _per_op(fp32_by_op), _per_op(int8_by_op)
    ops = list(dict.fromkeys(list(a) + list(b)))

    def row(op: str) -> Dict[str, Any]:
        only = "int8" if op not in a else "fp32" if op not in b else None
        return {"op": op, "fp32_ms": round(a.get(op, 0.0), 4), "int8_ms": round(b.get(op, 0.0), 4),
                "change_ms": round(b.get(op, 0.0) - a.get(op, 0.0), 4), "only": only}

    by_size = sorted(ops, key=lambda op: (-abs(b.get(op, 0.0) - a.get(op, 0.0)), op))
    chosen = set(by_size[:top]) | {op for op in ops if op not in a}
    rows = sorted((row(op) for op in chosen), key=lambda r: (-r["change_ms"], r["op"]))
    rest = [op for op in ops if op not in chosen]
    fa, fb = sum(a.get(op, 0.0) for op in rest), sum(b.get(op, 0.0) for op in rest)
    ta, tb = sum(a.values()), sum(b.values())
    return {"top": top, "rows": rows,
            "other": {"op_types": len(rest), "fp32_ms": round(fa, 4), "int8_ms": round(fb, 4),
                      "change_ms": round(fb - fa, 4)},
            "total": {"fp32_ms": round(ta, 4), "int8_ms": round(tb, 4), "change_ms": round(tb - ta, 4)}}


CONVERSIONS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "FloatToInt8", "Int8ToFloat")
"""Op types that only convert between float and int8 (onnxruntime, MNN)."""
CONVERSION_FAMILY = "float <-> int8 conversions"


def op_family(op: str) -> str:
    """The fp32 op type an int8 op type computes (``QLinearConv`` and MNN's ``Convolution [ DT_INT8 ]``: ``Conv``
    / ``Convolution``; ``QGemm``: ``Gemm``; ``ConvInteger``: ``Conv``), :data:`CONVERSION_FAMILY` for conversions,
    else the op type itself."""
    op = " ".join(op.split())
    if op.endswith("[ DT_INT8 ]"):
        op = op[: -len("[ DT_INT8 ]")].strip()
    if op in CONVERSIONS:
        return CONVERSION_FAMILY
    if op.startswith("QLinear") and len(op) > len("QLinear"):
        return op[len("QLinear"):]
    if op == "QGemm":
        return "Gemm"
    if op.endswith("Integer") and len(op) > len("Integer"):
        return op[: -len("Integer")]
    return op


def families(fp32_by_op: Sequence[Mapping[str, Any]], int8_by_op: Sequence[Mapping[str, Any]]
             ) -> List[Dict[str, Any]]:
    """Both profiles summed by :func:`op_family` (each int8 kernel counted with the fp32 op it replaces),
    largest increase first: ``[{"family", "fp32_ms", "int8_ms", "change_ms"}]``."""
    a: Dict[str, float] = {}
    b: Dict[str, float] = {}
    for src, dst in ((_per_op(fp32_by_op), a), (_per_op(int8_by_op), b)):
        for op, ms in src.items():
            dst[op_family(op)] = dst.get(op_family(op), 0.0) + ms
    rows = [{"family": f, "fp32_ms": round(a.get(f, 0.0), 4), "int8_ms": round(b.get(f, 0.0), 4),
             "change_ms": round(b.get(f, 0.0) - a.get(f, 0.0), 4)} for f in dict.fromkeys(list(a) + list(b))]
    return sorted(rows, key=lambda r: (-r["change_ms"], r["family"]))


def _per_op(by_op: Sequence[Mapping[str, Any]]) -> Dict[str, float]:
    """``{op type: ms}``, names with their whitespace collapsed (MNN's read ``"Convolution [ DT_INT8 ] "``)."""
    out: Dict[str, float] = {}
    for r in by_op:
        op = " ".join(str(r["op"]).split())
        out[op] = out.get(op, 0.0) + float(r["ms"])
    return out


# ------------------------------------------------------------------------------------------ profiles


def profile_pair(backend: str, paths: Mapping[str, str], threads: int = 1, runs: Optional[int] = None
                 ) -> Dict[str, Any]:
    """Per-op-type profiles of the fp32 and int8 artifacts of one backend (``paths`` = ``{"fp32": ..., "int8":
    ...}``), one after the other in this process; MNN runs each at the precision the runtime gives it."""
    from glsr.bench.profile import profile_mnn, profile_onnx
    from glsr.runtime.sessions import mnn_precision

    out: Dict[str, Any] = {}
    n = int(runs or PROFILE_RUNS[backend])
    for prec in ("fp32", "int8"):
        path = Path(paths[prec])
        if backend == "onnx":
            p = profile_onnx(path, threads, runs=n, top=None)
        elif backend == "mnn":
            p = profile_mnn(path, threads, runs=n, top=None, precision=mnn_precision(prec))
            p["precision"] = mnn_precision(prec)
        else:
            raise ValueError(f"no per-op profiler for backend {backend!r} (onnx, mnn)")
        out[prec] = {k: p[k] for k in ("runtime", "threads", "runs", "kernel_ms", "plain_ms", "precision", "by_op",
                                       "by_scope") if k in p}
    return out


def int8_profile_task(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Worker entry (``glsr.bench.worker --task int8_profile``): :func:`profile_pair` of ``spec``."""
    return profile_pair(spec["backend"], spec["paths"], int(spec.get("threads", 1)), spec.get("runs"))


def attach_profiles(entries: List[Dict[str, Any]], artifacts: Mapping[str, str], threads: int = 1,
                    runs: Optional[Mapping[str, int]] = None, isolate: bool = True,
                    progress: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)) -> None:
    """Profile both artifacts of every entry where int8 is not faster (``artifacts``: row label -> artifact path)
    and add ``profile`` (``fp32``, ``int8``, ``ops`` = :func:`op_changes`) or ``profile_error`` to the entry.
    Run after the run's e2e measurements; ``isolate``: in a fresh process per backend."""
    from glsr.bench.isolate import run_isolated

    for e in entries:
        if e["faster"] or e["backend"] not in PROFILE_RUNS:
            continue
        spec = {"backend": e["backend"], "paths": {"fp32": artifacts[e["fp32"]], "int8": artifacts[e["int8"]]},
                "threads": threads, "runs": (runs or PROFILE_RUNS).get(e["backend"])}
        progress(f"[faces] profile {e['fp32']} and {e['int8']} per op type")
        t0 = time.perf_counter()
        try:
            rec = run_isolated("int8_profile", spec, f"{e['model']} {e['backend']}") if isolate \
                else int8_profile_task(spec)
        except Exception as err:  # noqa: BLE001 - the section says why there is no profile
            e["profile_error"] = f"{err.__class__.__name__}: {err}".splitlines()[0]
            progress(f"[faces]   profile failed: {e['profile_error']}")
            continue
        e["profile"] = {"fp32": rec["fp32"], "int8": rec["int8"], "other_load_cores": rec.get("other_load_cores"),
                        "seconds": round(time.perf_counter() - t0, 1),
                        "ops": op_changes(rec["fp32"]["by_op"], rec["int8"]["by_op"]),
                        "families": families(rec["fp32"]["by_op"], rec["int8"]["by_op"])}


# ------------------------------------------------------------------------------------------ report


def markdown(entries: Sequence[Mapping[str, Any]], profiled: bool = True) -> List[str]:
    """The report's "int8 against fp32" section (no lines without entries); ``profiled=False``: the run skipped
    the profiles (``--no-profile``)."""
    if not entries:
        return []
    out = [f"## {TITLE}", "",
           "The same run's fp32 and int8 rows of each glsr model and backend: int8 / fp32 = int8's median over "
           "fp32's (< 1: int8 is faster), end to end and for the network alone (network-only, one fixed crop); "
           f"dNME = int8 - fp32 in percentage points on all faces of the split (within {NME_TOLERANCE_PP} pp: as "
           "accurate as fp32).", "",
           "| model | backend | fp32 e2e ms | int8 e2e ms | int8 / fp32 e2e | int8 / fp32 network-only | NME68 fp32 | "
           "dNME68 pp | dNME51 pp |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for e in entries:
        net = "" if e["ratio_net"] is None else f"{e['ratio_net']:.2f}x"
        out.append(f"| {e['model']} | {_backend(e)} | {e['e2e_fp32_ms']:.3f} | {e['e2e_int8_ms']:.3f} | "
                   f"{e['ratio_e2e']:.2f}x | {net} | {e['nme68_fp32']:.2%} | {e['d_nme68_pp']:+.2f} | "
                   f"{e['d_nme51_pp']:+.2f} |")
    out.append("")
    for e in entries:
        line = f"- {e['model']} {_backend(e)}: {e['verdict']}"
        if not e["faster"]:
            if "profile" in e:
                line += "; where the time goes: the profile below"
            elif "profile_error" in e:
                line += f"; the profile failed: {e['profile_error']}"
            elif not profiled:
                line += "; profile skipped (--no-profile)"
        out.append(line + ".")
    out.append("")
    for e in entries:
        if "profile" in e:
            out += _profile_lines(e)
    return out


def _backend(e: Mapping[str, Any]) -> str:
    return e["backend"] + (" host-warp" if e.get("mode") == "hostwarp" else "")


def _profile_lines(e: Mapping[str, Any]) -> List[str]:
    p, ops = e["profile"], e["profile"]["ops"]
    f, q = p["fp32"], p["int8"]
    if e["backend"] == "onnx":
        how = "onnxruntime's profiler, kernel time"
    else:
        how = (f"MNN's per-op callbacks, wall time between them (fp32 at precision {f.get('precision')}, int8 at "
               f"{q.get('precision')}, as the runtime runs them)")
    load = p.get("other_load_cores")
    out = [f"### {e['model']} {_backend(e)}: int8 against fp32 per op type", "",
           f"{how}; ms per call, {f.get('threads', 1)} thread(s), {f['runs']} / {q['runs']} profiled runs of fp32 / "
           f"int8 on one random crop, after the run's e2e timings"
           + ("" if load is None else f" (other load {load:.2f} cores"
              + (": the CPU was shared, op times are inflated unevenly)" if load > SHARED_CPU else ")"))
           + f". Rows: the {ops.get('top', TOP_OPS)} op types that changed most and every int8-only one, largest "
           "increase first; the rest summed.", "",
           "| op type | fp32 ms | int8 ms | int8 - fp32 ms |", "|---|---:|---:|---:|"]
    for r in ops["rows"]:
        tag = f" ({r['only']} only)" if r["only"] else ""
        out.append(f"| {r['op']}{tag} | {_ms(r['fp32_ms'], r['only'] == 'int8')} | "
                   f"{_ms(r['int8_ms'], r['only'] == 'fp32')} | {r['change_ms']:+.3f} |")
    o, t = ops["other"], ops["total"]
    if o["op_types"]:
        out.append(f"| {o['op_types']} other op type{'s' if o['op_types'] > 1 else ''} | {o['fp32_ms']:.3f} | "
                   f"{o['int8_ms']:.3f} | {o['change_ms']:+.3f} |")
    out += [f"| all op types | {t['fp32_ms']:.3f} | {t['int8_ms']:.3f} | {t['change_ms']:+.3f} |", ""]
    fam = [r for r in p.get("families", []) if r["fp32_ms"] != r["int8_ms"]]
    if fam:
        top = sorted(fam, key=lambda r: -abs(r["change_ms"]))[:5]
        out += ["Each int8 kernel counted with the fp32 op it replaces (largest changes): "
                + "; ".join(f"{r['family']} {r['fp32_ms']:.3f} -> {r['int8_ms']:.3f} ms ({r['change_ms']:+.3f})"
                            for r in sorted(top, key=lambda r: -r["change_ms"])) + ".", ""]
    return out


def _ms(v: float, absent: bool) -> str:
    return "" if absent else f"{v:.3f}"
