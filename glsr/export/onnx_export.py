"""ONNX export of the whole G&LSR_ω chain: trace, check, simplify, fp16 / int8, metadata.

Graph contract: input ``crop`` (NCHW float32, normalized as the metadata says), output ``landmarks``
``[B, N, 2]`` in crop pixels; opset >= 16; no ``AffineGrid`` node (grids are element-wise Mul/Add,
:func:`glsr.geometry.affine_grid`). The exporter is torch's TorchScript-based one (``dynamo=False``): the
torch.export-based exporter needs onnxscript, which this project does not depend on.

*Learned* nodes are the ones inside the network's learned sub-modules (``/reinit/``, ``/regress/``,
``/local_reinit/``, ``/local_regress.*/``) except the theta adapters; everything else is coordinate math
(sampling grids, resampling, theta algebra, the pixel conversion). A *head* is a learned Conv/Gemm/MatMul whose
output leaves the learned nodes (each stage's last layer: the theta FC, the shape FC). Reduced precision is
applied to learned nodes only, and never to heads: measured on the authors' GSR weights, an fp16 theta FC alone
moves landmarks by up to 2 px (its output translation is scaled by 128 in-graph); see
:mod:`glsr.export.parity` for the numbers.
"""
from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Set, Tuple

import numpy as np

from glsr.artifacts import onnx_set_metadata
from glsr.export.errors import ExportError, UnsupportedOpError
from glsr.export.onnx_passes import crop_resize_pass
from glsr.metadata import ArtifactMetadata
from glsr.models.network import LEARNED_SCOPES, node_scope

if TYPE_CHECKING:
    from glsr.export.job import ExportJob

INPUT_NAME = "crop"
OUTPUT_NAME = "landmarks"
FP32_SCOPE_MARKERS: Tuple[str, ...] = ("/adapter/",)
HEAD_OPS: Tuple[str, ...] = ("Gemm", "MatMul", "Conv")
FORBIDDEN_OPS = {"AffineGrid": "sampling grids must be element-wise Mul/Add (glsr.geometry.affine_grid)"}
QUANTIZED_OPS: Tuple[str, ...] = ("Conv", "Gemm", "Relu")
"""Op types onnxruntime's quantizer is given. ``Relu`` is there so that a Conv's ReLU folds into its output
quantization (the quantizer drops the Relu, the uint8 zero point clips) and onnxruntime fuses Conv + ReLU into
one QLinearConv: without it every ReLU runs in float between a DequantizeLinear and a QuantizeLinear (35 pairs in
small-fast's global regressor: 1.38x its fp32 time instead of 1.02x; ``benchmarks.studies.int8_configs``)."""
CALIB_PERCENTILE = 99.99
"""int8 activation ranges keep this percentage of the calibration values (see :func:`quantize_int8`)."""
INT8_SCOPES: Tuple[str, ...] = ("regress", "regress2", "local_regress")
"""Learned scopes quantized to int8 by MNN: the image CNNs. The theta nets (global / local reinit) stay float:
their theta drives every later crop, and they are a few percent of the compute."""
ONNX_INT8_SCOPES: Tuple[str, ...] = ("regress", "regress2")
"""Learned scopes onnxruntime runs in int8: the global regressors only. Measured per sub-network on an AVX-512
VNNI CPU (``benchmarks.studies.int8_configs``, CPU time, 1 thread): the 40x40 part regressors run 1.13-1.17x
slower in int8 than in fp32 at 1 and 16 faces per call, the global regressors 0.68-0.77x at 16 faces per call
(0.97-1.02x at 1)."""


def is_int8(name: str, scopes: Tuple[str, ...] = INT8_SCOPES) -> bool:
    """Whether node ``name`` is quantized: a learned node of one of ``scopes`` (MNN's :data:`INT8_SCOPES` by
    default; onnxruntime's :data:`ONNX_INT8_SCOPES`)."""
    return is_learned(name) and node_scope(name) in scopes


# ------------------------------------------------------------------------------------------------- tracing
@contextlib.contextmanager
def quiet_fds() -> Iterator[None]:
    """Silence stdout/stderr at the file-descriptor level (C++ libraries print there directly)."""
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved + [devnull]:
            os.close(fd)


@contextlib.contextmanager
def sampler_set(model, sampler: str) -> Iterator[None]:
    """Temporarily switch the model's in-graph resampler."""
    old = model.sampler_name
    model.set_sampler(sampler)
    try:
        yield
    finally:
        model.set_sampler(old)


def example_input(model, batch: str) -> "torch.Tensor":  # noqa: F821
    import torch

    s = model.cfg.input_size
    b = 2 if batch == "dynamic" else int(batch)
    return torch.zeros(b, 3, s, s)


def trace_to_onnx(model, path: Path, batch: str, opset: int, sampler: str, host_warp: bool = False) -> None:
    """Export ``model`` (eval mode) to ``path`` with the given sampler, batch (``"N"`` or ``"dynamic"``) and opset;
    ``host_warp`` traces its two host-warp graphs (:class:`glsr.models.hostwarp.HostWarpGraphs`) instead."""
    import torch

    model = model.eval()
    if host_warp:
        from glsr.models.hostwarp import HostWarpGraphs

        traced = HostWarpGraphs(model).eval()
        args = traced.example_inputs(2 if batch == "dynamic" else int(batch))
        inputs, outputs = traced.input_names, traced.output_names
    else:
        traced, args, inputs, outputs = model, (example_input(model, batch),), [INPUT_NAME], [OUTPUT_NAME]
    dynamic = {n: {0: "batch"} for n in inputs + outputs} if batch == "dynamic" else None
    with sampler_set(model, sampler), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # deprecation of the TorchScript exporter, tracer warnings
        try:
            torch.onnx.export(traced, tuple(args), str(path), input_names=inputs, output_names=outputs,
                              opset_version=opset, dynamic_axes=dynamic, do_constant_folding=True, dynamo=False)
        except Exception as e:  # noqa: BLE001 - re-raised naming the op
            text = str(e)
            m = re.search(r"operator '?(aten::[\w.]+|prim::[\w.]+)'?", text) or re.search(r"(aten::[\w.]+)", text)
            if m:
                raise UnsupportedOpError(m.group(1), _torch_node_hint(text), "onnx",
                                         f"torch.onnx opset {opset}: {text.splitlines()[0]}") from e
            raise ExportError(f"onnx: torch.onnx.export failed: {e.__class__.__name__}: {text}") from e


def _torch_node_hint(text: str) -> str:
    m = re.search(r"node '?([^'\n]+)'?", text)
    return m.group(1) if m else "(traced graph)"


# ------------------------------------------------------------------------------------------------- checks
def check_graph(proto, fmt: str = "onnx", supported: Optional[Set[str]] = None) -> None:
    """Raise :class:`UnsupportedOpError` for the first forbidden node or node outside ``supported``."""
    for node in proto.graph.node:
        if node.op_type in FORBIDDEN_OPS:
            raise UnsupportedOpError(node.op_type, node.name or "(unnamed)", fmt, FORBIDDEN_OPS[node.op_type])
        if supported is not None and node.op_type not in supported:
            raise UnsupportedOpError(node.op_type, node.name or "(unnamed)", fmt,
                                     f"{fmt} converts {len(supported)} ONNX ops; this is not one of them")


def full_check(proto, what: str = "onnx") -> None:
    """``onnx.checker.check_model(full_check=True)`` with the failure named."""
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"{what}: onnx.checker rejected the graph: {e}") from e


def opset_of(proto) -> int:
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)


def simplify(proto):
    """onnxsim; on any failure keep the plain model with a warning."""
    try:
        import onnxsim

        with quiet_fds():
            out, ok = onnxsim.simplify(proto)
        if not ok:
            raise RuntimeError("onnxsim's own check of the simplified model failed")
        return out
    except Exception as e:  # noqa: BLE001 - the plain model is still valid
        warnings.warn(f"onnxsim failed ({e.__class__.__name__}: {e}); keeping the unsimplified model", stacklevel=2)
        return proto


# ------------------------------------------------------------------------------------------------- partition
def is_learned(name: str) -> bool:
    return node_scope(name) in LEARNED_SCOPES and not any(m in name for m in FP32_SCOPE_MARKERS)


def partition(proto) -> Tuple[Set[str], Set[str]]:
    """``(learned, heads)`` node names (see the module docstring)."""
    learned = {n.name for n in proto.graph.node if is_learned(n.name)}
    consumers: dict = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in proto.graph.output}
    heads: Set[str] = set()
    for n in proto.graph.node:
        if n.name not in learned or n.op_type not in HEAD_OPS:
            continue
        if _leaves_learned(n, consumers, learned, outputs):
            heads.add(n.name)
    return learned, heads


def _leaves_learned(node, consumers, learned: Set[str], outputs: Set[str]) -> bool:
    """Whether ``node``'s output reaches a non-learned node through shape-only ops (Reshape/Flatten/Identity)."""
    frontier = list(node.output)
    seen: Set[str] = set()
    while frontier:
        t = frontier.pop()
        if t in outputs:
            return True
        for c in consumers.get(t, []):
            if c.name in seen:
                continue
            seen.add(c.name)
            if c.name not in learned:
                return True
            if c.op_type in ("Reshape", "Flatten", "Identity", "Squeeze", "Unsqueeze"):
                frontier.extend(c.output)
    return False


# ------------------------------------------------------------------------------------------------- precision
def to_fp16(proto):
    """Learned non-head nodes in float16 (weights and compute); I/O, coordinate math and heads stay float32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    learned, heads = partition(proto)
    keep = [n.name for n in proto.graph.node if n.name not in learned or n.name in heads]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = convert_float_to_float16(proto, keep_io_types=True, node_block_list=keep, disable_shape_infer=False)
    toposort(out.graph)  # the converter appends its Cast nodes out of order
    return out


def toposort(graph) -> None:
    """Sort ``graph.node`` topologically in place (Kahn; stable for nodes already in order)."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ExportError(f"onnx: graph has a cycle or a dangling input at node {rest[0].name!r}")
        pending = rest
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


class _CropReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over calibration crops, ``batch`` at a time."""

    def __init__(self, crops: np.ndarray, batch: str):
        b = 1 if batch == "dynamic" else int(batch)
        n = (len(crops) // b) * b
        if n == 0:
            raise ExportError(f"onnx int8: {len(crops)} calibration crops are fewer than the batch {b}")
        self._chunks = [np.ascontiguousarray(crops[i:i + b], dtype=np.float32) for i in range(0, n, b)]
        self._it = iter(self._chunks)

    def get_next(self):
        x = next(self._it, None)
        return None if x is None else {INPUT_NAME: x}


@contextlib.contextmanager
def quiet_root_logger() -> Iterator[None]:
    """onnxruntime's quantizer logs advice ("consider pre-processing ...") on the root logger: hold it to errors
    while it runs, so an export prints its own lines only."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_int8(src: Path, dst: Path, crops: np.ndarray, batch: str) -> None:
    """Static QDQ quantization of the Conv/Gemm layers (with their ReLUs, :data:`QUANTIZED_OPS`) of
    :data:`ONNX_INT8_SCOPES` except heads: int8 per-channel weights, uint8 activations with ranges from ``crops``
    clipped to the central :data:`CALIB_PERCENTILE` % of each tensor's calibration values (on the authors' GSR
    weights with 32 calibration faces: 21-27 % lower mean landmark error than MinMax ranges, NME(int8 vs fp32) on
    LFW 0.69-0.80 pp instead of 0.96-1.11 pp). Everything else stays float32.

    Speed (``benchmarks.studies.int8_configs``, AVX-512 VNNI, onnxruntime 1.32): per-tensor weights, QOperator
    form, 8-bit weights and Add in int8 time the same as this (within 2 %); int8 activations (S8S8) are 1.3-1.65x
    fp32's time at batch 1, leaving depthwise convolutions float 1.05-1.25x (Q / DQ pairs and layout changes).

    Weights use 7 bits (``reduce_range``) so that the artifact computes the same with and without VNNI: on
    x86 CPUs without it (AVX2, e.g. AMD Zen 3; AVX-512 without VNNI) onnxruntime's u8 x s8 kernels add pairs of
    products in saturating int16 (``vpmaddubsw``), which overflows with 8-bit weights. Measured on the authors'
    GSR weights (``tests/test_export_onnx.py``, MinMax ranges): dNME 0.72 pp with 8-bit weights on an AVX2-only
    CPU, 0.15 pp with 7-bit.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, \
        quantize_static

    proto = onnx.load(str(src))
    _, heads = partition(proto)
    exclude = sorted(n.name for n in proto.graph.node if not is_int8(n.name, ONNX_INT8_SCOPES) or n.name in heads)
    reader = _CropReader(crops, batch)

    class Reader(CalibrationDataReader):
        def get_next(self):
            return reader.get_next()

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), quiet_root_logger():
        warnings.simplefilter("ignore")
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        reduce_range=True, nodes_to_exclude=exclude, calibrate_method=CalibrationMethod.Percentile,
                        extra_options={"CalibPercentile": CALIB_PERCENTILE})


# ------------------------------------------------------------------------------------------------- entry
def export_fp32(model, path: Path, meta: ArtifactMetadata, batch: str, opset: int, sampler: str,
                do_simplify: bool = True, host_warp: bool = False) -> None:
    """Trace, check (no AffineGrid, full checker), simplify, stamp metadata; writes ``path``."""
    import onnx

    raw = path.with_name(path.stem + ".raw.onnx")
    trace_to_onnx(model, raw, batch, opset, sampler, host_warp)
    proto = onnx.load(str(raw))
    raw.unlink()
    check_graph(proto)
    full_check(proto, "onnx (traced)")
    if do_simplify:
        proto = simplify(proto)
        check_graph(proto)
    onnx_set_metadata(proto, meta)
    full_check(proto)
    onnx.save(proto, str(path))


def export_onnx(fp32_path: Path, path: Path, meta: ArtifactMetadata, precision: str, batch: str,
                calib_crops: Optional[np.ndarray] = None) -> None:
    """Write the ONNX artifact at ``path`` in ``precision`` from the fp32 export at ``fp32_path``."""
    import onnx

    if precision == "fp32":
        proto = onnx.load(str(fp32_path))
    elif precision == "fp16":
        proto = to_fp16(onnx.load(str(fp32_path)))
    elif precision == "int8":
        if calib_crops is None:
            raise ExportError("onnx int8: no calibration crops")
        qpath = path.with_name(path.stem + ".q.onnx")
        quantize_int8(fp32_path, qpath, calib_crops, batch)
        proto = onnx.load(str(qpath))
        qpath.unlink()
    else:
        raise ExportError(f"onnx: unknown precision {precision!r}")
    proto, _ = crop_resize_pass(proto)  # onnxruntime only: the MNN artifact converts fp32_path, with its GridSample
    check_graph(proto)
    onnx_set_metadata(proto, meta)
    if opset_of(proto) < 16:
        raise ExportError(f"onnx: opset {opset_of(proto)} < 16")
    full_check(proto, f"onnx {precision}")
    onnx.save(proto, str(path))


def node_counts(path: str | Path) -> dict:
    """``{op_type: count}`` of an ONNX file (for reports and tests)."""
    import collections

    import onnx

    return dict(collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node))



def write_artifact(job: ExportJob) -> None:
    """The ONNX writer of :data:`glsr.formats.FORMATS`."""
    export_onnx(job.fp32_onnx, job.target, job.meta, job.opts.precision, job.opts.batch, job.calib_float)
