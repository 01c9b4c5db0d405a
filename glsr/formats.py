"""The one table of artifact formats: one record per artifact kind, serving export, runtime, parity and bench.

A record says which suffix the kind has, what its export accepts (precisions, samplers, batch, image input),
how to export it (:attr:`FormatSpec.writer`), how to load it (:attr:`FormatSpec.backend`, a runtime backend
name), how its metadata is read (:attr:`FormatSpec.read_metadata`, :mod:`glsr.artifacts`) and where it executes.

``--format`` names a *family* (``onnx``, ``mnn``, ``coreml``) or one artifact kind (``mlpackage``,
``mlmodel``) or ``all``. An explicitly requested kind that cannot honour an option is refused up front with a
message naming the option, the format and what it does accept; ``all`` exports every kind that can honour the
options and lists the ones it leaves out. Bottom layer: imports only :mod:`glsr.artifacts` and
:mod:`glsr.metadata`, nothing heavy (no torch, onnx, MNN or coremltools at import time).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from glsr import artifacts
from glsr.metadata import ArtifactMetadata

PRECISIONS: Tuple[str, ...] = ("fp32", "fp16", "int8")
SAMPLER_NAMES: Tuple[str, ...] = ("gridsample", "gather")
MIN_OPSET = 16          # GridSample entered the ONNX standard in opset 16
DEFAULT_OPSET = 17
MAX_STATIC_BATCH = 256


@dataclass(frozen=True)
class FormatSpec:
    """One artifact kind.

    ``precisions`` maps each accepted precision to what it means for this format; ``samplers`` are the in-graph
    resamplers the target can execute (first = default); ``dynamic_batch`` whether ``--batch dynamic`` works;
    ``image_input`` whether the input can be an image type with the normalization baked in; ``runs_on`` the
    platforms where the artifact executes (so parity can run there); ``why_not`` explains a refusal, keyed by
    ``"precision"`` or ``"sampler"``. ``read_metadata`` reads the artifact's metadata; ``backend`` names the
    :mod:`glsr.runtime.backends` class that runs it and ``bench_label`` how benchmarks name that runtime;
    ``writer`` names the export function (``"module:function"``, resolved by :mod:`glsr.export.exporter`, which
    calls it with a :class:`~glsr.export.job.ExportJob`); ``via_onnx`` whether it is built from the traced fp32
    ONNX graph (one trace per sampler serves every such format of an export).
    """

    name: str
    family: str
    suffix: str
    description: str
    precisions: Mapping[str, str]
    samplers: Tuple[str, ...]
    dynamic_batch: bool
    read_metadata: Callable[[str | Path], ArtifactMetadata]
    backend: str
    bench_label: str
    writer: str
    image_input: bool = False
    via_onnx: bool = False
    runs_on: Tuple[str, ...] = ("linux", "darwin", "win32")
    why_not: Mapping[str, str] = field(default_factory=dict)

    @property
    def default_sampler(self) -> str:
        return self.samplers[0]

    def runs_here(self, platform: str = sys.platform) -> bool:
        return any(platform.startswith(p) for p in self.runs_on)


_COREML = dict(dynamic_batch=False, image_input=True, runs_on=("darwin",), read_metadata=artifacts.coreml_read_metadata,
               backend="coreml", bench_label="Core ML (macOS)", writer="glsr.export.coreml_export:write_artifact")
"""What both Core ML kinds share."""

FORMATS: Dict[str, FormatSpec] = {s.name: s for s in (
    FormatSpec(
        "onnx", "onnx", ".onnx", "ONNX (opset >= 16), checked with onnx.checker full_check, simplified by onnxsim",
        {"fp32": "float32 throughout",
         "fp16": "float16 weights and compute in the CNN/MLP layers; input, output and the coordinate math "
                 "(theta algebra, sampling grids, resampling, pixel conversion) and each stage's last FC layer "
                 "stay float32",
         "int8": "static QDQ (onnxruntime.quantization): the global regressors' Conv/Gemm layers with their ReLUs, "
                 "weights int8 per channel, activations uint8 calibrated on face crops; theta nets, part "
                 "regressors and coordinate math stay float32"},
        ("gridsample", "gather"), dynamic_batch=True, read_metadata=artifacts.onnx_read_metadata, backend="onnx",
        bench_label="onnxruntime (CPU, ORT_ENABLE_ALL)", writer="glsr.export.onnx_export:write_artifact", via_onnx=True),
    FormatSpec(
        "mnn", "mnn", ".mnn", "MNN, converted from the ONNX graph by MNN's own converter; metadata in bizCode",
        {"fp32": "float32 throughout",
         "fp16": "float16 weight storage (converter --fp16); compute precision is the runtime's choice",
         "int8": "MNN's offline quantizer (KL feature calibration on face crops, MAX_ABS weights); "
                 "coordinate math stays float"},
        ("gridsample", "gather"), dynamic_batch=True, read_metadata=artifacts.mnn_read_metadata, backend="mnn",
        bench_label="MNN (CPU)", writer="glsr.export.mnn_export:write_artifact", via_onnx=True),
    FormatSpec(
        "mlpackage", "coreml", ".mlpackage", "Core ML ML Program (iOS >= 15), user-defined metadata",
        {"fp32": "compute precision float32",
         "fp16": "compute precision float16 in the CNN/MLP layers; coordinate math and each stage's last FC "
                 "layer stay float32"},
        ("gridsample", "gather"), **_COREML,
        why_not={"precision": "Core ML int8 activation quantization calibrates by running the model, which "
                              "executes only on macOS"}),
    FormatSpec(
        "mlmodel", "coreml", ".mlmodel", "Core ML neural network (.mlmodel), user-defined metadata",
        {"fp32": "float32 weights and compute",
         "fp16": "float16 weight storage; compute precision is the device's choice"},
        ("gather",), **_COREML,
        why_not={"sampler": "the neural-network format has no grid-sample layer, so resampling uses the gather "
                            "sampler (floor / clip / gather with int32 indices)",
                 "precision": "the neural-network format has no calibrated int8 path here; use fp16 or the "
                              "mlpackage"}),
)}

FAMILIES: Dict[str, Tuple[str, ...]] = {
    "onnx": ("onnx",), "mnn": ("mnn",), "coreml": ("mlpackage", "mlmodel"),
    "mlpackage": ("mlpackage",), "mlmodel": ("mlmodel",), "all": tuple(FORMATS),
}


@dataclass(frozen=True)
class ExportOptions:
    """Options shared by every format of one export.

    ``sampler=None`` lets each format use its default; ``batch`` is a positive integer as a string or
    ``"dynamic"``; ``calib`` a folder of face images for int8 calibration (procedural faces when ``None``).
    """

    precision: str = "fp32"
    sampler: Optional[str] = None
    batch: str = "1"
    calib: Optional[str] = None
    image_input: bool = False
    opset: int = DEFAULT_OPSET
    simplify: bool = True
    calib_count: int = 32
    host_warp: bool = False

    def sampler_for(self, spec: FormatSpec) -> str:
        return self.sampler or spec.default_sampler

    def to_dict(self) -> Dict[str, object]:
        return {"precision": self.precision, "sampler": self.sampler, "batch": self.batch, "calib": self.calib,
                "image_input": self.image_input, "opset": self.opset, "simplify": self.simplify,
                "calib_count": self.calib_count, "host_warp": self.host_warp}


HOST_WARP_FAMILIES: Tuple[str, ...] = ("onnx", "mnn")
"""Format families that can hold a host-warp artifact (its graphs in one file, :mod:`glsr.models.hostwarp`)."""


def parse_batch(batch: object) -> str:
    """``1``, ``"4"``, ``"dynamic"`` -> canonical string; ``ValueError`` otherwise."""
    b = str(batch).strip().lower()
    if b == "dynamic":
        return b
    if not b.isdigit() or not 1 <= int(b) <= MAX_STATIC_BATCH:
        raise ValueError(f"--batch must be a whole number 1..{MAX_STATIC_BATCH} or 'dynamic', got {batch!r}")
    return str(int(b))


def option_problems(spec: FormatSpec, opts: ExportOptions) -> List[str]:
    """Every reason ``spec`` cannot honour ``opts`` (empty when it can)."""
    out: List[str] = []
    if opts.precision not in spec.precisions:
        out.append(f"{spec.name}: precision {opts.precision} is not supported (accepts {', '.join(spec.precisions)})"
                   + (f"; {spec.why_not['precision']}" if "precision" in spec.why_not else ""))
    sampler = opts.sampler_for(spec)
    if sampler not in spec.samplers:
        out.append(f"{spec.name}: sampler {sampler} is not supported (accepts {', '.join(spec.samplers)})"
                   + (f"; {spec.why_not['sampler']}" if "sampler" in spec.why_not else ""))
    if opts.batch == "dynamic" and not spec.dynamic_batch:
        out.append(f"{spec.name}: --batch dynamic is not supported (static batch only); give a number")
    if opts.host_warp and spec.family not in HOST_WARP_FAMILIES:
        out.append(f"{spec.name}: --host-warp is not supported (ONNX and MNN only); Core ML keeps the single graph")
    if opts.image_input and not spec.image_input:
        out.append(f"{spec.name}: --image-input is not supported (only Core ML has an image input type); the "
                   "input stays a normalized float32 tensor")
    return out


def global_problems(opts: ExportOptions) -> List[str]:
    """Option combinations no format can honour."""
    out: List[str] = []
    if opts.precision not in PRECISIONS:
        out.append(f"unknown precision {opts.precision!r}; choose one of {', '.join(PRECISIONS)}")
    if opts.sampler is not None and opts.sampler not in SAMPLER_NAMES:
        out.append(f"unknown sampler {opts.sampler!r}; choose one of {', '.join(SAMPLER_NAMES)}")
    try:
        parse_batch(opts.batch)
    except ValueError as e:
        out.append(str(e))
    if opts.batch == "dynamic" and opts.sampler == "gather":
        out.append("the gather sampler needs a static batch (its flat gather indices are laid out per batch): "
                   "give --batch N or use --sampler gridsample")
    if opts.image_input and opts.batch != "1":
        out.append("--image-input takes one image per prediction: use --batch 1")
    if opts.opset < MIN_OPSET:
        out.append(f"opset {opts.opset} is too old: GridSample needs opset >= {MIN_OPSET}")
    if opts.host_warp and opts.precision == "int8":
        out.append("--host-warp exports fp32 or fp16 (int8 calibration feeds whole crops to one graph)")
    if opts.host_warp and opts.image_input:
        out.append("--host-warp takes float tensors from the host's warps, not an image input")
    if opts.calib is not None and opts.precision != "int8":
        out.append("--calib is only used to calibrate --precision int8")
    if opts.calib is not None and not Path(opts.calib).is_dir():
        out.append(f"--calib {opts.calib} is not a folder of face images")
    if opts.calib_count < 1:
        out.append(f"calibration needs at least one image, got calib_count={opts.calib_count}")
    return out


@dataclass(frozen=True)
class FormatPlan:
    """The kinds an export will write and the kinds ``all`` left out (with the reason)."""

    formats: Tuple[FormatSpec, ...]
    skipped: Tuple[Tuple[str, str], ...] = field(default=())


def plan_formats(requested: str | Sequence[str], opts: ExportOptions) -> FormatPlan:
    """Resolve ``--format`` values into format rows, refusing any option a requested format cannot honour.

    Raises ``ValueError`` listing every problem at once.
    """
    names = [requested] if isinstance(requested, str) else list(requested)
    problems = global_problems(opts)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown or not names:
        problems.append(f"unknown format {', '.join(unknown) or '(none)'}; choose from {', '.join(FAMILIES)}")
    if problems:
        raise ValueError("; ".join(problems))
    chosen: List[FormatSpec] = []
    skipped: List[Tuple[str, str]] = []
    for n in names:
        for kind in FAMILIES[n]:
            spec = FORMATS[kind]
            if spec in chosen:
                continue
            why = option_problems(spec, opts)
            if not why:
                chosen.append(spec)
            elif n == "all":
                skipped.append((kind, "; ".join(why)))
            else:
                problems.extend(why)
    if problems:
        raise ValueError("; ".join(problems))
    if not chosen:
        raise ValueError("no format can honour these options: " + "; ".join(w for _, w in skipped))
    return FormatPlan(tuple(chosen), tuple(skipped))


def format_of(path: str | Path) -> FormatSpec:
    """The row for an artifact path, by suffix."""
    p = str(path).rstrip("/").lower()
    for spec in FORMATS.values():
        if p.endswith(spec.suffix):
            return spec
    raise ValueError(f"{path} is not an exported artifact (suffixes: "
                     f"{', '.join(s.suffix for s in FORMATS.values())})")


def read_metadata(path: str | Path) -> ArtifactMetadata:
    """The metadata of any exported artifact, read the way its format stores it."""
    return format_of(path).read_metadata(path)


def format_table() -> str:
    """Markdown table of the formats (for the README and ``glsr export --list``)."""
    rows = ["| format | file | precisions | samplers | dynamic batch | image input | executes on |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for s in FORMATS.values():
        rows.append(f"| {s.name} | `{s.suffix}` | {', '.join(s.precisions)} | {', '.join(s.samplers)} | "
                    f"{'yes' if s.dynamic_batch else 'no'} | {'yes' if s.image_input else 'no'} | "
                    f"{', '.join(s.runs_on)} |")
    return "\n".join(rows)
