"""Core ML export: ``.mlpackage`` (ML Program, iOS >= 15) and ``.mlmodel`` (neural network, gather sampler).

The traced torch graph is converted by coremltools. Before converting, every ``aten::`` node is looked up in
coremltools' torch-op registry so an unsupported op is named with its module scope and the target format.
Input ``crop`` is a float32 tensor ``[B, 3, S, S]`` (normalized as the metadata says) or, with
``image_input=True``, an image whose normalization is baked in (``ct.ImageType(scale=1/std, bias=-mean/std)``,
colour layout = the artifact's channel order). Output ``landmarks`` ``[B, N, 2]`` in crop pixels. Metadata:
``user_defined_metadata`` = :meth:`~glsr.metadata.ArtifactMetadata.to_props`.

fp16 (ML Program): compute precision float16 for the ops of the learned sub-networks except each stage's last
layer (see :mod:`glsr.export.onnx_export` for why), selected by the torch module scope coremltools records on
every MIL op; coordinate math stays float32. fp16 (neural network): float16 weight storage of conv / inner
product layers.

On Linux the artifacts can be converted and inspected (spec, ops, I/O, metadata) but not executed.
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Set, Tuple

import numpy as np

from glsr.artifacts import coreml_describe, coreml_quiet, coreml_read_metadata, coreml_set_metadata
from glsr.export.errors import ConverterError, UnsupportedOpError
from glsr.metadata import ArtifactMetadata
from glsr.models.network import LEARNED_SCOPES

if TYPE_CHECKING:
    from glsr.export.job import ExportJob

INPUT_NAME = "crop"
OUTPUT_NAME = "landmarks"
FP16_WEIGHT_LAYERS = ("convolution", "innerProduct", "batchnorm")
_PATCHED = False


def _patch_int_cast() -> None:
    """coremltools 9 folds ``aten::Int`` of a 1-element constant with ``int(array)``, which numpy >= 2.4 refuses
    for arrays with ``ndim > 0`` ("only 0-dimensional arrays can be converted to Python scalars"). Register the
    same conversion with the element taken explicitly (``override=True``; identical results otherwise)."""
    global _PATCHED
    if _PATCHED:
        return
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs
    from coremltools.converters.mil.frontend.torch.torch_op_registry import register_torch_op

    def cast(context, node, dtype, dtype_name):
        x = _get_inputs(context, node, expected=1)[0]
        if not (len(x.shape) == 0 or all(d == 1 for d in x.shape)):
            raise ValueError("input to cast must be either a scalar or a length 1 tensor")
        if x.can_be_folded_to_const():
            res = mb.const(val=dtype(np.asarray(x.val).reshape(-1)[0]), name=node.name)
        elif len(x.shape) > 0:
            res = mb.cast(x=mb.squeeze(x=x, name=node.name + "_item"), dtype=dtype_name, name=node.name)
        else:
            res = mb.cast(x=x, dtype=dtype_name, name=node.name)
        context.add(res, node.name)

    @register_torch_op(torch_alias=["int"], override=True)
    def _int(context, node):  # noqa: ANN001
        cast(context, node, int, "int32")

    @register_torch_op(torch_alias=["bool"], override=True)
    def _bool(context, node):  # noqa: ANN001
        cast(context, node, bool, "bool")

    _PATCHED = True


def check_torch_ops(traced, fmt: str) -> None:
    """Raise :class:`UnsupportedOpError` for the first ``aten::`` node coremltools has no converter for."""
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    for node in traced.inlined_graph.nodes():
        kind = node.kind()
        if not kind.startswith("aten::"):
            continue
        if _TORCH_OPS_REGISTRY.get_func(kind.split("::", 1)[1]) is None:
            scope = node.scopeName() or "(top level)"
            out = next(iter(node.outputs()), None)
            where = f"{scope} %{out.debugName()}" if out is not None else scope
            raise UnsupportedOpError(kind, where, fmt, "coremltools has no converter for it")


def head_modules(model) -> Set[Tuple[str, ...]]:
    """Module paths of each learned stage's last Linear/Conv2d (kept float32 in fp16 programs)."""
    from torch import nn

    roots: List[Tuple[Tuple[str, ...], nn.Module]] = []
    for name, child in model.named_children():
        if name not in LEARNED_SCOPES or child is None:
            continue
        if name in ("local_reinit", "local_regress"):
            roots += [((name, sub), m) for sub, m in child.named_children() if sub != "adapter"]
        else:
            roots.append(((name,), child))
    heads = set()
    for path, root in roots:
        last = None
        for sub, m in root.named_modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                last = sub
        if last is not None:
            heads.add(path + tuple(last.split(".")))
    return heads


def iterated_module_list(model) -> Optional[str]:
    """The learned ``nn.ModuleList`` the forward iterates (``local_regress``): TorchScript scopes of its items
    start at the item index, without the list's own name."""
    from torch import nn

    names = [n for n, c in model.named_children() if n in LEARNED_SCOPES and isinstance(c, nn.ModuleList)]
    return names[0] if len(names) == 1 else None


def fp16_selector(heads: Set[Tuple[str, ...]], module_list: Optional[str] = None):
    """MIL op selector: float16 for ops inside learned modules, not in a theta adapter, not in a head.

    The torch module path of an op is its ``TORCHSCRIPT_MODULE_NAME`` scope minus the last entry (a value name);
    a path starting with an index belongs to ``module_list``.
    """
    from coremltools.converters.mil.mil.scope import ScopeSource

    def select(op) -> bool:
        names = list(op.scopes.get(ScopeSource.TORCHSCRIPT_MODULE_NAME, []))
        path = tuple(names[:-1])
        if path and path[0].isdigit() and module_list:
            path = (module_list,) + path
        if not path or path[0] not in LEARNED_SCOPES or "adapter" in path:
            return False
        return not any(path[:len(h)] == h for h in heads)

    return select


def _trace(model, batch: int):
    import torch

    s = model.cfg.input_size
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.jit.trace(model.eval(), (torch.zeros(batch, 3, s, s),), check_trace=False)


def _input_type(meta: ArtifactMetadata, batch: int, image_input: bool):
    import coremltools as ct

    shape = (batch, 3, meta.input_size, meta.input_size)
    if not image_input:
        return ct.TensorType(name=INPUT_NAME, shape=shape, dtype=np.float32)
    layout = ct.colorlayout.BGR if meta.channel_order.upper() == "BGR" else ct.colorlayout.RGB
    scale = 1.0 / float(meta.pixel_std)
    return ct.ImageType(name=INPUT_NAME, shape=shape, scale=scale, bias=[-float(meta.pixel_mean) * scale] * 3,
                        color_layout=layout)


def export_coreml(model, path: Path, kind: str, meta: ArtifactMetadata, precision: str, batch: str, sampler: str,
                  image_input: bool = False) -> None:
    """Write ``path`` (``kind`` = ``"mlpackage"`` or ``"mlmodel"``)."""
    import coremltools as ct

    from glsr.export.onnx_export import sampler_set

    _patch_int_cast()
    fmt = f"coreml ({kind})"
    b = int(batch)
    with sampler_set(model, sampler):
        traced = _trace(model, b)
    check_torch_ops(traced, fmt)
    kwargs: Dict[str, object] = {"inputs": [_input_type(meta, b, image_input)],
                                 "outputs": [ct.TensorType(name=OUTPUT_NAME)]}
    if kind == "mlpackage":
        kwargs.update(convert_to="mlprogram", minimum_deployment_target=ct.target.iOS15,
                      compute_precision=(ct.precision.FLOAT32 if precision == "fp32" else
                                         ct.transform.FP16ComputePrecision(op_selector=fp16_selector(
                                             head_modules(model), iterated_module_list(model)))))
    else:
        kwargs.update(convert_to="neuralnetwork")
    try:
        with coreml_quiet():
            ml = ct.convert(traced, **kwargs)
    except Exception as e:  # noqa: BLE001 - named and re-raised
        raise ConverterError(fmt, f"coremltools could not convert the graph: {e.__class__.__name__}: {e}") from e
    if kind == "mlmodel" and precision == "fp16":
        ml = _fp16_weights(ml)
    coreml_set_metadata(ml, meta)
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    ml.save(str(path))


def _fp16_weights(ml):
    from coremltools.models.neural_network import quantization_utils as qu

    class Layers(qu.QuantizedLayerSelector):
        def do_quantize(self, layer, **kwargs) -> bool:  # noqa: ANN001
            return layer.WhichOneof("layer") in FP16_WEIGHT_LAYERS

    with coreml_quiet():
        return qu.quantize_weights(ml, nbits=16, selector=Layers())


def require_ok(path: Path, kind: str) -> Dict[str, object]:
    """Post-conversion verification on any OS; raises :class:`ConverterError` when the written model is off."""
    info = coreml_describe(path)
    fmt = f"coreml ({kind})"
    want_type = "mlProgram" if kind == "mlpackage" else "neuralNetwork"
    if info["type"] != want_type:
        raise ConverterError(fmt, f"wrote a {info['type']} model, expected {want_type}")
    if list(info["inputs"]) != [INPUT_NAME] or list(info["outputs"]) != [OUTPUT_NAME]:
        raise ConverterError(fmt, f"I/O names {list(info['inputs'])} -> {list(info['outputs'])}, expected "
                                  f"[{INPUT_NAME!r}] -> [{OUTPUT_NAME!r}]")
    try:
        coreml_read_metadata(path)
    except ValueError as e:
        raise ConverterError(fmt, f"metadata missing from the written model: {e}") from e
    return info


def write_artifact(job: ExportJob) -> None:
    """The Core ML writer of :data:`glsr.formats.FORMATS` (``.mlpackage`` or ``.mlmodel``), verified after writing."""
    export_coreml(job.model, job.target, job.spec.name, job.meta, job.opts.precision, job.opts.batch,
                  job.opts.sampler_for(job.spec), job.opts.image_input)
    require_ok(job.target, job.spec.name)
