"""Per-op and per-node profiles of an exported graph (onnxruntime's profiler, MNN's per-op callbacks), with
each node attributed to the learned sub-network it belongs to or to the glue between them."""
from __future__ import annotations

import collections
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from glsr.models.network import LEARNED_SCOPES, node_scope
from glsr.runtime.sessions import mnn_session, onnx_session


def scope_of(node: str) -> str:
    """Which learned sub-network a profiled node belongs to (by its name's first path component), else
    ``"glue"`` (resampling, affine grids, theta algebra, index gathers, layout conversions between them)."""
    head = node_scope(node)
    return head if head in LEARNED_SCOPES else "glue"


def _scopes(by_node: Dict[str, float], by_node_op: Dict[str, str], total: float, runs: int, top: Optional[int],
            scale: float) -> Dict[str, Any]:
    scopes: collections.Counter = collections.Counter()
    glue_ops: collections.Counter = collections.Counter()
    glue_nodes = 0
    for node, d in by_node.items():
        sc = scope_of(node)
        scopes[sc] += d
        if sc == "glue":
            glue_ops[by_node_op.get(node, "?")] += d
            glue_nodes += 1
    return {"by_scope": {k: round(v * scale / runs, 4) for k, v in scopes.most_common()},
            "glue_nodes": glue_nodes,
            "glue_by_op": [{"op": k, "ms": round(v * scale / runs, 4), "share_of_total": round(v / total, 4)}
                           for k, v in glue_ops.most_common(top)]}


def profile_onnx(path: Path, threads: int, runs: int = 100, top: Optional[int] = 12) -> Dict[str, Any]:
    """Per-op-type and per-node kernel time from onnxruntime's profiler (ms per run; ``top=None``: every op type
    and node)."""
    tmp = Path(tempfile.mkdtemp(prefix="glsr-prof-"))
    s = onnx_session(path, threads, profile_prefix=str(tmp / "ort"))
    i = s.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
    warmup = 10
    for _ in range(warmup + runs):
        s.run(None, {i.name: x})
    prof = Path(s.end_profiling())
    events = json.loads(prof.read_text())
    prof.unlink(missing_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return {"runtime": "onnx", "threads": threads, **onnx_events_by_op(events, warmup, top)}


def onnx_events_by_op(events: List[Dict[str, Any]], warmup: int, top: Optional[int] = 12) -> Dict[str, Any]:
    """Aggregate onnxruntime profiler ``events`` (its JSON trace) per op type and per node, in ms per run over the
    runs after the first ``warmup`` ``model_run`` events: ``runs``, ``kernel_ms``, ``by_op`` (op, ms, share,
    nodes per run), ``by_node`` and the sub-network scopes (the ``top`` largest of each; ``None``: all)."""
    by_op: collections.Counter = collections.Counter()
    by_node: collections.Counter = collections.Counter()
    node_op: Dict[str, str] = {}
    count: collections.Counter = collections.Counter()
    run_ends = sorted(e["ts"] + e["dur"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    t_after_warmup = run_ends[warmup - 1] if warmup > 0 and len(run_ends) > warmup else -1
    n_runs = sum(1 for t in run_ends if t > t_after_warmup)
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time") and e["ts"] > t_after_warmup:
            op = e["args"].get("op_name", "?")
            by_op[op] += e["dur"]
            node = e["name"][: -len("_kernel_time")]
            by_node[node] += e["dur"]
            node_op[node] = op
            count[op] += 1
    n_runs = max(n_runs, 1)
    total = sum(by_op.values()) or 1
    return {"runs": n_runs, "kernel_ms": round(sum(by_op.values()) / n_runs / 1e3, 4),
            "by_op": [{"op": k, "ms": round(v / n_runs / 1e3, 4), "share": round(v / total, 4),
                       "nodes": count[k] // n_runs} for k, v in by_op.most_common(top)],
            "by_node": [{"node": k, "ms": round(v / n_runs / 1e3, 4), "share": round(v / total, 4)}
                        for k, v in by_node.most_common(top)],
            **_scopes(by_node, node_op, total, n_runs, top, 1e-3)}


def profile_mnn(path: Path, threads: int, runs: int = 8, top: Optional[int] = 12, precision: str = "high"
                ) -> Dict[str, Any]:
    """Per-op-type and per-op wall time from MNN's session callbacks (ms per run; callbacks add a little).

    MNN 3.6.1's ``runSessionWithCallBackInfo`` degrades after about a dozen calls on one session (per-run time
    grows tenfold and stays high even for plain ``runSession``), so a few runs are profiled on a fresh session and
    runs slower than 1.5x the plain runs' median are dropped; ``plain_ms`` is that median.
    """
    import MNN

    itp, sess = mnn_session(path, threads, precision)
    inp = itp.getSessionInput(sess)
    shape = tuple(inp.getShape())
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    inp.copyFrom(MNN.Tensor(shape, MNN.Halide_Type_Float, x, MNN.Tensor_DimensionType_Caffe))
    plain = []
    for i in range(8):
        t0 = time.perf_counter()
        itp.runSession(sess)
        if i >= 3:
            plain.append(time.perf_counter() - t0)
    plain_s = float(np.median(plain))
    start: Dict[str, float] = {}
    node_op: Dict[str, str] = {}
    per_run: List[Dict[str, float]] = []

    def begin(tensors, info):
        start["t"] = time.perf_counter()
        return True

    def end(tensors, info):
        d = time.perf_counter() - start["t"]
        name = info.getName()
        node_op[name] = info.getType()
        per_run[-1][name] = per_run[-1].get(name, 0.0) + d
        return True

    for _ in range(runs):
        per_run.append({})
        itp.runSessionWithCallBackInfo(sess, begin, end)
    kept = [r for r in per_run if sum(r.values()) <= 1.5 * plain_s] or per_run[:1]
    by_node: collections.Counter = collections.Counter()
    for r in kept:
        by_node.update(r)
    by_op: collections.Counter = collections.Counter()
    for k, v in by_node.items():
        by_op[node_op[k]] += v
    n = len(kept)
    total = sum(by_op.values())
    return {"runtime": "mnn", "threads": threads, "runs": n, "plain_ms": round(plain_s * 1e3, 4),
            "kernel_ms": round(total / n * 1e3, 4),
            "by_op": [{"op": k, "ms": round(v / n * 1e3, 4), "share": round(v / total, 4)}
                      for k, v in by_op.most_common(top)],
            "by_node": [{"node": k, "ms": round(v / n * 1e3, 4), "share": round(v / total, 4)}
                        for k, v in by_node.most_common(top)],
            **_scopes(by_node, node_op, total, n, top, 1e3)}
