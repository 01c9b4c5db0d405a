"""Read the constant tensors and the operator list of a TensorFlow Lite model file (a FlatBuffer), without TFLite.

Only what an importer of convolution weights needs: every tensor's name, shape, type, raw data and quantization
(scales, zero points, quantized axis), and every operator's builtin name, inputs, outputs, padding, strides and
fused activation. Field numbers are those of TensorFlow Lite's ``schema.fbs`` (the layout is frozen: fields are
only ever appended). A FlatBuffer table starts with a signed 32-bit offset back to its vtable; the vtable lists,
per field, the field's offset inside the table (0 = absent, default value); references to tables, vectors and
strings are unsigned 32-bit offsets relative to where they are stored.

Written here instead of depending on the ``tflite`` package (generated code tied to one schema version, plus
``flatbuffers``): about a hundred lines cover the fields used, and glsr's runtime dependencies stay as they are.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

TFLITE_IDENTIFIER = b"TFL3"
TENSOR_TYPES: Dict[int, Tuple[str, Optional[np.dtype]]] = {
    0: ("float32", np.dtype("<f4")), 1: ("float16", np.dtype("<f2")), 2: ("int32", np.dtype("<i4")),
    3: ("uint8", np.dtype("u1")), 4: ("int64", np.dtype("<i8")), 5: ("string", None), 6: ("bool", np.dtype("?")),
    7: ("int16", np.dtype("<i2")), 9: ("int8", np.dtype("i1")),
}
BUILTIN_OPS = {0: "ADD", 1: "AVERAGE_POOL_2D", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D", 6: "DEQUANTIZE",
               9: "FULLY_CONNECTED", 22: "RESHAPE", 25: "SOFTMAX", 40: "MEAN", 114: "QUANTIZE"}
"""Builtin operator codes by name (those MobileNetV2 files use; others are reported as ``BUILTIN_<code>``)."""
PADDINGS = {0: "SAME", 1: "VALID"}
ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
CONV_OPTION_FIELDS = {"CONV_2D": (0, 1, 2, 3), "DEPTHWISE_CONV_2D": (0, 1, 2, 4)}
"""Field numbers of (padding, stride_w, stride_h, fused_activation_function) in Conv2DOptions and
DepthwiseConv2DOptions."""


@dataclass(frozen=True)
class TfliteTensor:
    """One tensor: ``data`` is the raw constant (``None`` for activations), shaped as ``shape``; ``scales`` and
    ``zero_points`` are per channel along ``axis`` (one entry each when quantized per tensor, empty when float)."""

    index: int
    name: str
    shape: Tuple[int, ...]
    dtype: str
    data: Optional[np.ndarray]
    scales: np.ndarray
    zero_points: np.ndarray
    axis: int


@dataclass(frozen=True)
class TfliteOp:
    """One operator; ``padding``, ``stride`` (h, w) and ``activation`` are set for convolutions only."""

    name: str
    inputs: Tuple[int, ...]
    outputs: Tuple[int, ...]
    padding: str = ""
    stride: Tuple[int, int] = (1, 1)
    activation: str = "NONE"


@dataclass(frozen=True)
class TfliteGraph:
    """The first subgraph of a model file: its tensors (by index) and operators in execution order."""

    tensors: Tuple[TfliteTensor, ...]
    ops: Tuple[TfliteOp, ...]
    inputs: Tuple[int, ...]
    outputs: Tuple[int, ...]


class _Buf:
    """FlatBuffer accessors over the file's bytes (positions are absolute)."""

    def __init__(self, data: bytes):
        self.data = data

    def u32(self, pos: int) -> int:
        return struct.unpack_from("<I", self.data, pos)[0]

    def ref(self, pos: int) -> int:
        return pos + self.u32(pos)

    def field(self, table: int, number: int) -> Optional[int]:
        """Absolute position of field ``number`` of the table at ``table``, or None when absent."""
        vtable = table - struct.unpack_from("<i", self.data, table)[0]
        size = struct.unpack_from("<H", self.data, vtable)[0]
        slot = 4 + 2 * number
        if slot >= size:
            return None
        offset = struct.unpack_from("<H", self.data, vtable + slot)[0]
        return table + offset if offset else None

    def scalar(self, table: int, number: int, fmt: str, default: float | int = 0):
        pos = self.field(table, number)
        return default if pos is None else struct.unpack_from("<" + fmt, self.data, pos)[0]

    def table(self, table: int, number: int) -> Optional[int]:
        pos = self.field(table, number)
        return None if pos is None else self.ref(pos)

    def vector(self, table: int, number: int) -> Tuple[int, int]:
        """``(start, length)`` of a vector field; ``(0, 0)`` when absent."""
        pos = self.field(table, number)
        if pos is None:
            return 0, 0
        start = self.ref(pos)
        return start + 4, self.u32(start)

    def array(self, table: int, number: int, dtype: str) -> np.ndarray:
        start, n = self.vector(table, number)
        return np.frombuffer(self.data, dtype=np.dtype(dtype), count=n, offset=start) if n else np.zeros(0, dtype)

    def tables(self, table: int, number: int) -> List[int]:
        start, n = self.vector(table, number)
        return [self.ref(start + 4 * i) for i in range(n)]

    def string(self, table: int, number: int) -> str:
        pos = self.field(table, number)
        if pos is None:
            return ""
        start = self.ref(pos)
        return self.data[start + 4: start + 4 + self.u32(start)].decode("utf-8", "replace")


def read_tflite(path: str | Path) -> TfliteGraph:
    """Tensors and operators of the first subgraph of the TensorFlow Lite file ``path``; ``ValueError`` naming
    the file when it is not one (or uses what this reader does not: external buffers, several subgraphs' ops are
    ignored)."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise ValueError(f"{path} is not a TensorFlow Lite model (no {TFLITE_IDENTIFIER.decode()} identifier)")
    try:
        return _parse(_Buf(data))
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a readable TensorFlow Lite model (truncated or corrupt: {e})") from None


def _parse(b: _Buf) -> TfliteGraph:
    model = b.ref(0)
    buffers = [b.array(t, 0, "u1") for t in b.tables(model, 4)]
    codes = []
    for t in b.tables(model, 1):   # OperatorCode: deprecated_builtin_code (byte), ..., builtin_code (int, field 3)
        code = max(b.scalar(t, 0, "b"), b.scalar(t, 3, "i"))
        codes.append(BUILTIN_OPS.get(code, f"BUILTIN_{code}"))
    graphs = b.tables(model, 2)
    if not graphs:
        raise ValueError("no subgraph")
    g = graphs[0]
    tensors = []
    for i, t in enumerate(b.tables(g, 0)):
        shape = tuple(int(v) for v in b.array(t, 0, "<i4"))
        type_code = b.scalar(t, 1, "b")
        dtype_name, dtype = TENSOR_TYPES.get(type_code, (f"type{type_code}", None))
        raw = buffers[b.scalar(t, 2, "I")] if b.scalar(t, 2, "I") < len(buffers) else np.zeros(0, "u1")
        value = None
        if raw.size and dtype is not None:
            value = np.frombuffer(raw.tobytes(), dtype=dtype).reshape(shape)
        q = b.table(t, 4)
        scales = b.array(q, 2, "<f4").astype(np.float64) if q is not None else np.zeros(0)
        zeros = b.array(q, 3, "<i8").copy() if q is not None else np.zeros(0, np.int64)
        axis = b.scalar(q, 6, "i") if q is not None else 0
        tensors.append(TfliteTensor(i, b.string(t, 3), shape, dtype_name, value, scales, zeros, int(axis)))
    ops = []
    for t in b.tables(g, 3):
        name = codes[b.scalar(t, 0, "I")]
        inputs = tuple(int(v) for v in b.array(t, 1, "<i4"))
        outputs = tuple(int(v) for v in b.array(t, 2, "<i4"))
        options = b.table(t, 4)
        if name in CONV_OPTION_FIELDS and options is not None:
            pad, sw, sh, act = CONV_OPTION_FIELDS[name]
            ops.append(TfliteOp(name, inputs, outputs, PADDINGS.get(b.scalar(options, pad, "b"), "?"),
                                (b.scalar(options, sh, "i"), b.scalar(options, sw, "i")),
                                ACTIVATIONS.get(b.scalar(options, act, "b"), "?")))
        else:
            ops.append(TfliteOp(name, inputs, outputs))
    return TfliteGraph(tuple(tensors), tuple(ops), tuple(int(v) for v in b.array(g, 1, "<i4")),
                       tuple(int(v) for v in b.array(g, 2, "<i4")))


def dequantize(tensor: TfliteTensor) -> np.ndarray:
    """The float value of a constant tensor: ``(q - zero_point) * scale``, per channel along ``tensor.axis``
    (float tensors as they are), in float64."""
    if tensor.data is None:
        raise ValueError(f"tensor {tensor.name!r} holds no constant data")
    q = tensor.data.astype(np.float64)
    if tensor.dtype.startswith("float") or not tensor.scales.size:
        return q
    shape = [1] * q.ndim
    if tensor.scales.size > 1:
        shape[tensor.axis] = tensor.scales.size
    zero = tensor.zero_points if tensor.zero_points.size else np.zeros(1)
    return (q - zero.reshape(shape if zero.size > 1 else [1] * q.ndim)) * tensor.scales.reshape(shape)
