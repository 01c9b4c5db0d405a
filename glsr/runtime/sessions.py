"""The one place onnxruntime sessions and MNN modules are built, so the runtime, parity and every benchmark
figure (headline, glue, profiles) run with the same session options.

onnxruntime: CPU provider unless ``providers`` is given, all graph optimizations, ``threads`` intra-op threads
and one inter-op thread, denormals flushed to zero (as mobile runtimes do; untrained or quantized graphs
otherwise run up to 10x slower on x86), warnings off. MNN: a runtime manager with ``backend`` (``"CPU"``),
``precision`` (``"low" | "normal" | "high"``) and ``threads``; MNN's stdout notices go to stderr.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from glsr.artifacts import mnn_load_module, stdout_to_stderr


def onnx_subgraphs(path: str | Path, graphs: Dict[str, Sequence[Sequence[str]]]) -> Dict[str, bytes]:
    """Serialized sub-models of the ONNX file ``path``, one per ``{name: (inputs, outputs)}`` (a host-warp
    artifact's disconnected graphs; onnxruntime needs every input of a model fed, so each runs as its own)."""
    import onnx
    from onnx.utils import Extractor

    ex = Extractor(onnx.load(str(path)))
    out: Dict[str, bytes] = {}
    for name, (inputs, outputs) in graphs.items():
        sub = ex.extract_model(list(inputs), list(outputs))
        del sub.metadata_props[:]
        out[name] = sub.SerializeToString()
    return out


def onnx_session(path: str | Path | bytes, threads: Optional[int] = None, providers: Optional[Sequence[str]] = None,
                 profile_prefix: Optional[str] = None):
    """An ``onnxruntime.InferenceSession`` for ``path`` (or a serialized model); ``profile_prefix`` turns on
    onnxruntime's profiler."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.add_session_config_entry("session.set_denormal_as_zero", "1")
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, so, providers=list(providers or ["CPUExecutionProvider"]))


class BoundSession:
    """An onnxruntime session run through its I/O binding: ``run(xs)`` gives what ``session.run(outputs, {inputs:
    xs})`` gives, without binding an unchanged input again on every call (what ``session.run`` does; measured 4-7 us
    per input of a host-warp graph).

    One binding per thread (a binding is not thread-safe). Outputs are allocated by onnxruntime and copied out, so
    callers own every array they get. An input is bound again only when a different array object comes: a binding
    keeps the array's memory (not a copy), so an array refilled in place is read afresh, and holding the last
    bound array keeps that memory alive. Inputs must be C-contiguous float32 (the backends make them so)."""

    def __init__(self, session: Any, inputs: Sequence[str], outputs: Sequence[str]):
        self.session = session
        self.inputs, self.outputs = list(inputs), list(outputs)
        self._local = threading.local()

    def _binding(self) -> Tuple[Any, List[Optional[np.ndarray]]]:
        state = self._local.__dict__
        if "binding" not in state:
            state["binding"], state["bound"] = self.session.io_binding(), [None] * len(self.inputs)
        return state["binding"], state["bound"]

    def run(self, xs: Sequence[np.ndarray]) -> List[np.ndarray]:
        binding, bound = self._binding()
        reshaped = False
        for i, (name, x) in enumerate(zip(self.inputs, xs)):
            if bound[i] is not x:
                reshaped |= bound[i] is None or bound[i].shape != x.shape
                binding.bind_cpu_input(name, x)
                bound[i] = x
        if reshaped:  # onnxruntime keeps the outputs it allocated; new input shapes need new (unallocated) ones
            for name in self.outputs:
                binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()


class MnnGraph:
    """An MNN module run on reused input variables: ``run(xs)`` writes each float32 NCHW input into a placeholder
    the thread keeps per input (made anew when the input's shape changes), instead of building an ``expr.const``
    per call (measured 4-11 us less per host-warp graph), and returns the outputs as new float32 NCHW arrays."""

    def __init__(self, module: Any):
        self.module = module
        self._local = threading.local()

    def _input(self, i: int, shape: Tuple[int, ...]) -> Any:
        kept = self._local.__dict__.get(i)
        if kept is None or kept[0] != shape:
            import MNN

            kept = self._local.__dict__[i] = (shape, MNN.expr.placeholder(list(shape), MNN.expr.NCHW))
        return kept[1]

    def run(self, xs: Sequence[np.ndarray]) -> List[np.ndarray]:
        import MNN

        expr = MNN.expr
        ins = []
        for i, x in enumerate(xs):
            var = self._input(i, x.shape)
            var.write(x)
            ins.append(var)
        ys = self.module.forward(ins)
        out = []
        for y in (ys if isinstance(ys, (list, tuple)) else [ys]):
            if y.data_format == expr.NC4HW4:
                y = expr.convert(y, expr.NCHW)
            out.append(np.array(y.read(), dtype=np.float32, copy=True).reshape(y.shape))
        return out


MNN_PRECISION = {"fp32": "high", "fp16": "low", "int8": "normal"}
"""MNN compute precision each artifact precision runs at by default: fp32 at ``high``, fp16 at ``low`` (devices with
fp16 arithmetic use it), int8 at ``normal``."""


def mnn_precision(artifact_precision: Optional[str]) -> str:
    """The MNN precision an artifact of ``artifact_precision`` runs at by default (:data:`MNN_PRECISION`;
    anything else: ``normal``)."""
    return MNN_PRECISION.get(str(artifact_precision), "normal")


def mnn_config(threads: Optional[int] = None, precision: str = "high", backend: str = "CPU") -> Dict[str, Any]:
    """The MNN schedule config every runtime manager and session gets."""
    return {"backend": backend, "precision": precision, "numThread": int(threads or 1)}


def mnn_runtime(threads: Optional[int] = None, precision: str = "high", backend: str = "CPU"):
    """An MNN runtime manager (``MNN.nn.create_runtime_manager``)."""
    with stdout_to_stderr():
        import MNN

        return MNN.nn.create_runtime_manager((mnn_config(threads, precision, backend),))


def mnn_session(path: str | Path, threads: Optional[int] = None, precision: str = "high", backend: str = "CPU"
                ) -> Tuple[Any, Any]:
    """``(MNN.Interpreter, session)`` for the session API (per-op callbacks, used by profiling)."""
    with stdout_to_stderr():
        import MNN

        itp = MNN.Interpreter(str(path))
        return itp, itp.createSession(mnn_config(threads, precision, backend))


def mnn_module(path: str | Path, threads: Optional[int] = None, precision: str = "high", backend: str = "CPU",
               inputs: Optional[Sequence[str]] = None, outputs: Optional[Sequence[str]] = None):
    """An MNN module for ``path`` on its own :func:`mnn_runtime`; inputs / outputs default to the model's own."""
    rt = mnn_runtime(threads, precision, backend)
    if inputs is None or outputs is None:
        info = mnn_load_module(path, rt).get_info()
        inputs = list(info["inputNames"]) if inputs is None else inputs
        outputs = list(info["outputNames"]) if outputs is None else outputs
    return mnn_load_module(path, rt, list(inputs), list(outputs))
