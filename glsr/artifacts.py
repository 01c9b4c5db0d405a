"""Where each exported file format keeps the :class:`~glsr.metadata.ArtifactMetadata`, and how to read / write it.

* ONNX: ``metadata_props`` (flat ``glsr.*`` strings), plus producer and doc string;
* MNN: the model's ``bizCode`` string, the JSON of the same ``glsr.*`` props (MNN's quantizer keeps it);
* Core ML: ``user_defined_metadata`` (the same props), plus descriptions of input and output.

Bottom layer: imports only :mod:`glsr.metadata` (and the format's own library, lazily).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from glsr.metadata import ArtifactMetadata


def artifact_size(path: str | os.PathLike) -> int:
    """Bytes of an exported artifact: a file, or every file of a folder format (``.mlpackage``)."""
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Keep file-descriptor-level stdout clean: MNN's C++ code prints notices ("The device supports ...",
    "MNN use high precision") on stdout, which would corrupt machine-readable output such as `glsr predict`. They
    go to stderr when the environment sets ``GLSR_VERBOSE`` (``glsr -v``), else nowhere."""
    sys.stdout.flush()
    saved = os.dup(1)
    target = 2 if os.environ.get("GLSR_VERBOSE") else os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(target, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        if target != 2:
            os.close(target)


@contextlib.contextmanager
def coreml_quiet() -> Iterator[None]:
    """Silence coremltools' progress bars and torch-version warnings."""
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), \
            contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            logger.setLevel(level)


# ------------------------------------------------------------------------------------------------- ONNX
def onnx_set_metadata(proto, meta: ArtifactMetadata) -> None:
    """Replace every ``glsr.*`` entry of ``metadata_props`` with ``meta``."""
    import glsr

    keep = [(p.key, p.value) for p in proto.metadata_props if not p.key.startswith("glsr.")]
    del proto.metadata_props[:]
    for k, v in keep + sorted(meta.to_props().items()):
        e = proto.metadata_props.add()
        e.key, e.value = k, v
    proto.producer_name = "glsr"
    proto.producer_version = glsr.__version__
    proto.doc_string = (f"G&LSR_w {meta.variant}, scheme {meta.scheme} ({meta.num_points} points): input "
                        f"'{meta.input_name}' [B,3,{meta.input_size},{meta.input_size}] = (pixel - {meta.pixel_mean:g})"
                        f" / {meta.pixel_std:g}, {meta.channel_order}; output '{meta.output_name}' [B,N,2] in crop "
                        "pixels")


def onnx_read_metadata(path: str | Path, verify: bool = True) -> ArtifactMetadata:
    """The ``glsr.*`` metadata of an ONNX file. Read straight from the protobuf wire format (importing the
    ``onnx`` package costs seconds of start-up that a one-image ``glsr predict`` should not pay); anything this
    reader does not recognise goes through ``onnx.load``, so malformed files fail exactly as they always did."""
    try:
        props = _onnx_metadata_props(Path(path).read_bytes())
    except (ValueError, IndexError, UnicodeDecodeError, OSError):
        props = None
    if not props or not any(k.startswith("glsr.") for k in props):
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        props = {p.key: p.value for p in proto.metadata_props}
    return ArtifactMetadata.from_props(props, path, verify)


def _varint(buf: bytes, i: int) -> tuple:
    result, shift = 0, 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ValueError("malformed varint")


def _wire_fields(buf: bytes, start: int, end: int):
    """``(field number, value)`` of one protobuf message; length-delimited values as ``(start, end)`` slices."""
    i = start
    while i < end:
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, i = _varint(buf, i)
        elif wire == 1:
            i += 8
        elif wire == 2:
            n, i = _varint(buf, i)
            if i + n > end:
                raise ValueError("truncated field")
            yield field, (i, i + n)
            i += n
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    if i != end:
        raise ValueError("truncated message")


def _onnx_metadata_props(buf: bytes) -> Dict[str, str]:
    """``ModelProto.metadata_props`` (field 14, ``StringStringEntryProto`` key 1 / value 2) of a serialized model."""
    props: Dict[str, str] = {}
    for field, (a, b) in _wire_fields(buf, 0, len(buf)):
        if field == 14:
            kv = {f: buf[x:y].decode("utf-8") for f, (x, y) in _wire_fields(buf, a, b)}
            props[kv.get(1, "")] = kv.get(2, "")
    return props


# ------------------------------------------------------------------------------------------------- MNN
def mnn_biz_code(meta: ArtifactMetadata) -> str:
    """The bizCode string an MNN artifact carries: its metadata props as compact JSON."""
    return json.dumps(meta.to_props(), sort_keys=True, separators=(",", ":"))


def mnn_load_module(path: str | Path, runtime_manager=None, inputs: Optional[List[str]] = None,
                    outputs: Optional[List[str]] = None):
    """``MNN.nn.load_module_from_file`` with MNN's stdout notices sent to stderr; a clear ``ValueError`` when the
    file is not an MNN model."""
    with stdout_to_stderr():
        import MNN

    kw = {"runtime_manager": runtime_manager} if runtime_manager is not None else {}
    try:
        with stdout_to_stderr():
            return MNN.nn.load_module_from_file(str(path), list(inputs or []), list(outputs or []), **kw)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path} is not a loadable MNN model ({e.__class__.__name__}: {e})") from e


def mnn_read_metadata(path: str | Path, verify: bool = True) -> ArtifactMetadata:
    """Metadata from the model's bizCode (``verify``: against its digest, :meth:`ArtifactMetadata.from_props`)."""
    code = mnn_load_module(path).get_info().get("bizCode", "")
    try:
        props = json.loads(code)
    except json.JSONDecodeError:
        raise ValueError(f"{path}: bizCode {code[:40]!r} is not glsr metadata; was it exported by `glsr export`?") \
            from None
    return ArtifactMetadata.from_props(props, path, verify)


# ------------------------------------------------------------------------------------------------- Core ML
def coreml_load_spec(path: str | Path):
    """The model spec (protobuf) of an ``.mlpackage`` or ``.mlmodel``; works on any OS."""
    import coremltools as ct

    with coreml_quiet():
        return ct.utils.load_spec(str(path))


def coreml_set_metadata(mlmodel, meta: ArtifactMetadata) -> None:
    """User-defined metadata = the ``glsr.*`` props; author, version and descriptions of input and output."""
    import glsr

    for k, v in meta.to_props().items():
        mlmodel.user_defined_metadata[k] = v
    mlmodel.author = "glsr"
    mlmodel.version = glsr.__version__
    mlmodel.short_description = (f"G&LSR_w {meta.variant}, scheme {meta.scheme}: '{meta.input_name}' "
                                 f"[B,3,{meta.input_size},{meta.input_size}] -> '{meta.output_name}' [B,"
                                 f"{meta.num_points},2] crop pixels")
    mlmodel.input_description[meta.input_name] = (f"face crop {meta.input_size}px, {meta.channel_order}, (pixel - "
                                                  f"{meta.pixel_mean:g}) / {meta.pixel_std:g}")
    mlmodel.output_description[meta.output_name] = "landmarks (x, y) in crop pixels, pixel centres at integers"


def coreml_read_metadata(path: str | Path, verify: bool = True) -> ArtifactMetadata:
    return ArtifactMetadata.from_props(dict(coreml_load_spec(path).description.metadata.userDefined), path, verify)


def graph_mismatches(meta: ArtifactMetadata, inputs: Dict[str, Optional[List]],
                     outputs: Dict[str, Optional[List]], batch_known: bool = False) -> List[str]:
    """Where the metadata disagrees with the graph it describes: ``inputs`` / ``outputs`` map the graph's names to
    their shapes (``None`` unknown; a dimension that is not an int is symbolic). Single graph: one input
    ``input_name`` of ``[batch, 3, input_size, input_size]``, the output ``output_name`` ``[batch, num_points, 2]``
    where known; host-warp: every graph's named inputs and outputs exist. ``batch_known``: the format reports a
    dynamic batch as a symbolic dimension (ONNX; MNN reports 1), so a fixed one under ``batch: dynamic`` is a lie."""
    out: List[str] = []
    if meta.host_warp:
        graphs = meta.host_warp.get("graphs") or {}
        missing = sorted({n for ins, outs in graphs.values() for n in list(ins) + list(outs)}
                         - set(inputs) - set(outputs))
        if not graphs or missing:
            out.append(f"host-warp graphs name {missing or 'nothing'} the file does not hold")
        return out
    if list(inputs) != [meta.input_name]:
        out.append(f"inputs {list(inputs)}, the metadata says [{meta.input_name!r}]")
    if meta.output_name not in outputs:
        out.append(f"outputs {list(outputs)}, the metadata says {meta.output_name!r}")

    def dims(shape: Optional[List], expected: List) -> Optional[str]:
        if not shape:  # unknown, or left flexible by the format
            return None
        if len(shape) != len(expected) or any(isinstance(s, int) and s > 0 and e is not None and s != e
                                              for s, e in zip(shape, expected)):
            return str(list(shape))
        return None

    batch = None if meta.batch == "dynamic" else int(meta.batch)
    shape = inputs.get(meta.input_name)
    if batch_known and batch is None and shape and isinstance(shape[0], int) and shape[0] > 0:
        out.append(f"input batch {shape[0]}, the metadata says dynamic")
    bad_in = dims(shape, [batch, 3, meta.input_size, meta.input_size])
    if bad_in:
        out.append(f"input shape {bad_in}, the metadata says [{meta.batch}, 3, {meta.input_size}, {meta.input_size}]")
    bad_out = dims(outputs.get(meta.output_name), [batch, meta.num_points, 2])
    if bad_out:
        out.append(f"output shape {bad_out}, the metadata says [{meta.batch}, {meta.num_points}, 2]")
    return out


def check_graph(meta: ArtifactMetadata, inputs: Dict[str, Optional[List]], outputs: Dict[str, Optional[List]],
                source: object, batch_known: bool = False) -> None:
    """:func:`graph_mismatches` refused (or, with ``--trust-metadata``, warned about) in one line naming
    ``source``."""
    from glsr.metadata import refuse_or_warn

    problems = graph_mismatches(meta, inputs, outputs, batch_known)
    if problems:
        refuse_or_warn("its metadata does not describe its graph (" + "; ".join(problems) + ")", source)


def coreml_describe(path: str | Path) -> Dict[str, object]:
    """What can be verified without executing: spec type, I/O names and shapes, op / layer types, metadata."""
    spec = coreml_load_spec(path)
    d = spec.description

    def shape(f) -> Optional[List[int]]:
        t = f.type.WhichOneof("Type")
        if t == "multiArrayType":
            return list(f.type.multiArrayType.shape)
        if t == "imageType":
            return [f.type.imageType.height, f.type.imageType.width]
        return None

    kind = spec.WhichOneof("Type")
    if kind == "mlProgram":
        ops = sorted({op.type for fn in spec.mlProgram.functions.values() for blk in fn.block_specializations.values()
                      for op in blk.operations})
    elif kind == "neuralNetwork":
        ops = sorted({layer.WhichOneof("layer") for layer in spec.neuralNetwork.layers})
    else:
        ops = []
    return {"type": kind, "spec_version": spec.specificationVersion,
            "inputs": {f.name: {"kind": f.type.WhichOneof("Type"), "shape": shape(f)} for f in d.input},
            "outputs": {f.name: {"kind": f.type.WhichOneof("Type"), "shape": shape(f)} for f in d.output},
            "ops": ops, "metadata": dict(d.metadata.userDefined)}
