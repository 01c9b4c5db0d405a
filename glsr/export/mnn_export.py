"""MNN export: MNN's own converter on the fp32 ONNX graph, ``--fp16`` weights, offline int8 quantizer.

Metadata lives **inside the .mnn file**, in its ``bizCode`` string: the JSON of
:meth:`~glsr.metadata.ArtifactMetadata.to_props` (``{"glsr.variant": ..., ...}``), read back with
``MNN.nn.load_module_from_file(...).get_info()["bizCode"]`` (:func:`glsr.artifacts.mnn_read_metadata`). MNN's quantizer keeps it.

The converter and quantizer are called through MNN's compiled ``_tools`` module in a child Python process:
a crash of the C++ tool (it aborts on bad input) cannot take the caller down, its log is captured for error
messages, and the ``MNN.tools`` Python wrappers are bypassed (they import a usage logger that tries to reach
the network, and the ``mnnquant`` wrapper passes its arguments in a form this MNN's ``_tools.mnnquant`` rejects
with a C++ abort). Success is judged by the output file, not by the tools' return values (always true).
"""
from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Dict, FrozenSet, List, Optional, Sequence

import numpy as np

from glsr.artifacts import mnn_biz_code, mnn_read_metadata
from glsr.export.errors import ConverterError, ExportError
from glsr.metadata import ArtifactMetadata

if TYPE_CHECKING:
    from glsr.export.job import ExportJob

TOOL_TIMEOUT_S = 1800
QUANT_FEATURE_METHOD = "KL"
QUANT_WEIGHT_METHOD = "MAX_ABS"


def _abs(path: str | os.PathLike) -> str:
    """Absolute path string: the MNN tools run in a scratch folder (see :func:`_run_tool`)."""
    return str(Path(path).resolve())


def _run_tool(tool: str, argv: Sequence[str], what: str) -> str:
    """Run ``_tools.<tool>(argv)`` in a child interpreter; return its combined log.

    The child runs in a private scratch folder: MNN's converter writes ``.__convert_external_data.bin`` into its
    working directory, so two conversions sharing one folder swap each other's weights. Paths in ``argv`` (and in
    quantizer configs) must therefore be absolute.
    """
    code = f"import sys, _tools; _tools.{tool}(sys.argv)"
    try:
        with tempfile.TemporaryDirectory(prefix="glsr-mnn-") as scratch:
            r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                               timeout=TOOL_TIMEOUT_S, cwd=scratch)
    except subprocess.TimeoutExpired as e:
        raise ConverterError("mnn", f"{what} did not finish within {TOOL_TIMEOUT_S} s") from e
    log = (r.stdout or "") + (r.stderr or "")
    if r.returncode < 0:
        raise ConverterError("mnn", f"{what} crashed (signal {-r.returncode})", log)
    return log


@functools.lru_cache(maxsize=1)
def supported_onnx_ops() -> FrozenSet[str]:
    """ONNX op types the installed MNN converter handles (its own ``--OP`` listing)."""
    log = _run_tool("mnnconvert", ["-f", "ONNX", "--OP"], "mnnconvert --OP")
    lines = log.splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if "support Ops" in ln) + 1
    except StopIteration:
        raise ConverterError("mnn", "could not read the converter's supported-op list", log) from None
    ops = set()
    for ln in lines[start:]:
        ln = ln.strip()
        if ln.startswith("Total"):
            break
        if re.fullmatch(r"[A-Za-z_][\w]*", ln):
            ops.add(ln)
    if not ops:
        raise ConverterError("mnn", "the converter listed no supported ops", log)
    return frozenset(ops)


_NOT_SUPPORTED = re.compile(r"(?:not support|don't support|unsupported)[^\n]*?(?:type|op)[\s:\[]*([A-Za-z_]\w*)"
                            r"(?:[^\n]*?(?:name|node)[\s:\[=]*([^\s\],]+))?", re.IGNORECASE)


def convert_onnx(onnx_path: Path, mnn_path: Path, meta: ArtifactMetadata, fp16: bool = False) -> str:
    """ONNX -> MNN with the metadata JSON as bizCode. Checks the graph's ops first; returns the converter log."""
    import onnx

    from glsr.export.onnx_export import check_graph

    try:
        proto = onnx.load(str(onnx_path))
    except Exception as e:  # noqa: BLE001 - named
        raise ConverterError("mnn", f"{onnx_path} is not a readable ONNX model ({e.__class__.__name__})") from e
    check_graph(proto, "mnn", set(supported_onnx_ops()))
    argv: List[str] = ["-f", "ONNX", "--modelFile", _abs(onnx_path), "--MNNModel", _abs(mnn_path),
                       "--bizCode", mnn_biz_code(meta)]
    if fp16:
        argv.append("--fp16")
    mnn_path.unlink(missing_ok=True)
    log = _run_tool("mnnconvert", argv, "mnnconvert")
    if "Converted Success" not in log or not mnn_path.is_file() or mnn_path.stat().st_size == 0:
        mnn_path.unlink(missing_ok=True)
        m = _NOT_SUPPORTED.search(log)
        if m:
            from glsr.export.errors import UnsupportedOpError

            raise UnsupportedOpError(m.group(1), m.group(2) or "(see log)", "mnn", "reported by mnnconvert")
        raise ConverterError("mnn", "mnnconvert did not write a model", log)
    return log


def write_calibration_images(crops_uint8: np.ndarray, folder: Path) -> int:
    """Write ``[K, S, S, 3]`` BGR uint8 crops (true colours on disk) as PNG files for the quantizer, which reads
    them and converts to the model's channel order (``format`` in :func:`quant_config`)."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for i, c in enumerate(crops_uint8):
        if not cv2.imwrite(str(folder / f"calib_{i:04d}.png"), np.ascontiguousarray(c)):
            raise ExportError(f"mnn int8: cannot write calibration image into {folder}")
    return len(crops_uint8)


def quant_config(meta: ArtifactMetadata, folder: Path, count: int, skip: Sequence[str] = ()) -> Dict[str, object]:
    """``mnnquant`` JSON: images are read as stored (``format`` = channel order), ``(v - mean) * normal``."""
    cfg: Dict[str, object] = {
        "format": meta.channel_order.upper(), "mean": [float(meta.pixel_mean)] * 3,
        "normal": [1.0 / float(meta.pixel_std)] * 3, "width": int(meta.input_size), "height": int(meta.input_size),
        "path": _abs(folder) + "/", "used_image_num": int(count), "feature_quantize_method": QUANT_FEATURE_METHOD,
        "weight_quantize_method": QUANT_WEIGHT_METHOD,
    }
    if skip:
        cfg["skip_quant_op_names"] = list(skip)
    return cfg


def quantize(src: Path, dst: Path, meta: ArtifactMetadata, crops_uint8: np.ndarray, work: Path,
             skip: Sequence[str] = ()) -> str:
    """Offline int8 quantization of ``src`` into ``dst`` calibrated on the crops; returns the quantizer log."""
    folder = work / "mnn_calib"
    n = write_calibration_images(crops_uint8, folder)
    cfg_path = work / "mnn_quant.json"
    cfg_path.write_text(json.dumps(quant_config(meta, folder, n, skip), indent=1))
    dst.unlink(missing_ok=True)
    log = _run_tool("mnnquant", [_abs(src), _abs(dst), _abs(cfg_path)], "mnnquant")
    if "Quantize model done" not in log or not dst.is_file() or dst.stat().st_size == 0:
        dst.unlink(missing_ok=True)
        raise ConverterError("mnn", "mnnquant did not write a quantized model", log)
    return log


def export_mnn(onnx_fp32: Path, path: Path, meta: ArtifactMetadata, precision: str,
               calib_uint8: Optional[np.ndarray], work: Path) -> None:
    """Write the MNN artifact at ``path`` from an fp32 ONNX file."""
    if precision == "fp32":
        convert_onnx(onnx_fp32, path, meta)
    elif precision == "fp16":
        convert_onnx(onnx_fp32, path, meta, fp16=True)
    elif precision == "int8":
        if calib_uint8 is None:
            raise ExportError("mnn int8: no calibration crops")
        fp32 = work / (path.stem + ".fp32.mnn")
        convert_onnx(onnx_fp32, fp32, meta)
        quantized = work / (path.stem + ".kl.mnn")
        quantize(fp32, quantized, meta, calib_uint8, work, skip=float_op_names(onnx_fp32))
        keep_int8_islands(quantized, path, meta, onnx_fp32, work)
        fp32.unlink(missing_ok=True)
        quantized.unlink(missing_ok=True)
    else:
        raise ExportError(f"mnn: unknown precision {precision!r}")
    check_metadata(path)


def _int8_scope(name: str) -> bool:
    """Whether an op belongs to :data:`glsr.export.onnx_export.INT8_SCOPES` (the image CNNs). Measured on the
    authors' GSR weights with MNN: int8 in the global reinit net too moves landmarks by up to 18 px (its theta
    drives every later crop), 3.7 px with it float."""
    from glsr.export.onnx_export import is_int8

    return is_int8(name)


def _head_outputs(proto) -> List[str]:
    from glsr.export.onnx_export import partition

    _, heads = partition(proto)
    return [o for n in proto.graph.node if n.name in heads for o in n.output]


def float_op_names(onnx_path: Path) -> List[str]:
    """MNN op names of the layers kept float (heads and every Conv/Gemm outside the int8 scopes).

    MNN names an op after its ONNX output tensor; a Gemm becomes a 1x1 convolution named
    ``<output>__matmul_converted``.
    """
    import onnx

    proto = onnx.load(str(onnx_path))
    heads = set(_head_outputs(proto))
    outs = [o for n in proto.graph.node if n.op_type in ("Conv", "Gemm") for o in n.output
            if o in heads or not _int8_scope(n.name)]
    return sorted(outs + [o + "__matmul_converted" for o in outs])


_NONFINITE_IN = re.compile(r"(?<=[\s\[,:])(-?)(nan|inf)(?=[\s\],}])")
_NONFINITE_OUT = re.compile(r"(?<=[\s\[,:])(-?)(NaN|Infinity)(?=[\s\],}])")


def _loads_mnn_json(text: str) -> dict:
    """MNN's JSON dump writes non-finite floats as bare ``nan`` / ``inf`` (seen in quantization scales)."""
    text = _NONFINITE_IN.sub(lambda m: m.group(1) + ("NaN" if m.group(2) == "nan" else "Infinity"), text)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConverterError("mnn", f"MNN's JSON dump is not parseable at char {e.pos}: "
                                    f"{text[max(0, e.pos - 80):e.pos + 40]!r}") from e


def _dumps_mnn_json(model: dict) -> str:
    return _NONFINITE_OUT.sub(lambda m: m.group(1) + ("nan" if m.group(2) == "NaN" else "inf"),
                              json.dumps(model, separators=(", ", ": ")))


def keep_int8_islands(src: Path, dst: Path, meta: ArtifactMetadata, onnx_path: Path, work: Path) -> int:
    """Drop int8 tensor descriptions outside the int8 layers; returns how many int8 tensors remain.

    MNN 3.6's quantizer also marks the outputs of MatMul, BinaryOp, GridSample and friends as int8 (its
    ``skip_quant_op_names`` covers convolutions only). In this graph those tensors carry coordinates (sampling
    grids, thetas, landmarks), and int8 there moves landmarks by tens of pixels (measured: 37 px max on the
    authors' GSR weights). It also gives unary ops an int8 lookup table (``tableInt8``) that the runtime uses
    even for float tensors: a ``Reciprocal`` in the theta inversion moved landmarks by 260 px. The model is dumped
    to MNN's JSON form, every ``quantInfo`` whose producing op is not an int8 layer and every such table outside
    the int8 layers are removed, and the JSON is converted back with the bizCode set again.
    """
    import onnx

    heads = tuple(_head_outputs(onnx.load(str(onnx_path))))
    dump = work / (src.stem + ".json")
    log = _run_tool("mnnconvert", ["-f", "MNN", "--modelFile", _abs(src), "--JsonFile", _abs(dump)], "mnn json dump")
    if not dump.is_file():
        raise ConverterError("mnn", "could not dump the quantized model to JSON", log)
    model = _loads_mnn_json(dump.read_text())
    producer = {t: op.get("name", "") for op in model.get("oplists", []) for t in op.get("outputIndexes", [])}
    kept, described = 0, []
    for d in model.get("extraTensorDescribe", []):
        if "quantInfo" in d:
            name = producer.get(d.get("index"), "")
            finite = all(np.isfinite(v) for v in d["quantInfo"].values() if isinstance(v, float))
            if finite and _int8_scope(name) and not (heads and name.startswith(heads)):
                kept += 1
            else:
                d = {k: v for k, v in d.items() if k != "quantInfo"}
        if set(d) - {"index"}:
            described.append(d)
    if kept == 0:
        raise ConverterError("mnn", "the quantizer left no int8 layer in the image CNNs", log)
    for op in model.get("oplists", []):  # int8 lookup tables (e.g. a Reciprocal's) outside the int8 layers
        main = op.get("main")
        if isinstance(main, dict) and "tableInt8" in main and not _int8_scope(op.get("name", "")):
            del main["tableInt8"]
    model["extraTensorDescribe"] = described
    model["bizCode"] = mnn_biz_code(meta)
    dump.write_text(_dumps_mnn_json(model))
    dst.unlink(missing_ok=True)
    log = _run_tool("mnnconvert", ["-f", "JSON", "--modelFile", _abs(dump), "--MNNModel", _abs(dst),
                                   "--bizCode", mnn_biz_code(meta)], "mnn json -> model")
    dump.unlink(missing_ok=True)
    if not dst.is_file() or dst.stat().st_size == 0:
        raise ConverterError("mnn", "could not rebuild the quantized model from JSON", log)
    return kept


def check_metadata(path: Path) -> None:
    try:
        mnn_read_metadata(path)
    except ValueError as e:
        raise ConverterError("mnn", f"the written model does not carry its metadata: {e}") from e


def write_artifact(job: ExportJob) -> None:
    """The MNN writer of :data:`glsr.formats.FORMATS`."""
    export_mnn(job.fp32_onnx, job.target, job.meta, job.opts.precision, job.calib_raw, job.work)
