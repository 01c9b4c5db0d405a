"""Import ImageNet-trained MobileNetV2 1.0 weights from a quantized TensorFlow Lite file into glsr's layout.

The files (``../shared/reference/mobilenetv2``; Apache-2.0) hold the standard MobileNetV2 (Sandler et al.) with
BatchNorm folded into every convolution's bias, weights quantized to 8 bits. Converted here:

* weights: ``(q - zero_point) * scale`` per output channel (:func:`glsr.models.tflite_reader.dequantize`);
  ``[out, kh, kw, in]`` -> torch's ``[out, in, kh, kw]``, depthwise ``[1, kh, kw, c]`` -> ``[c, 1, kh, kw]``;
* the folded bias becomes the BatchNorm's shift with an identity normalization (weight 1, running mean 0,
  running variance ``1 - eps``): in eval mode, or in training with ``--freeze-batchnorm``, each block computes
  exactly the TFLite float graph;
* channel order: the network reads RGB; glsr's variants read BGR (``VariantConfig.channel_order``), so the stem's
  input channels are reversed for them;
* the trunk (stem and the 17 bottlenecks) matches ``MobileNetV2Regressor`` layer for layer; the last 1x1
  convolution (320 -> 1280) and the classifier are kept only for :class:`ImageNetClassifier`, the proof of the
  mapping. ``medium``'s regressor ends in 320 -> 64 and a flatten head, which start from their initialization.

TensorFlow pads stride-2 convolutions "SAME" (the extra pixel on the bottom / right) where glsr's layers pad 1 on
every side, and clips activations at 6 (ReLU6) where they use ReLU: a start from these weights sets the variant's
``tf_layers`` (``VariantConfig``), which builds the regressor with TensorFlow's arithmetic. With glsr's default
layers the same weights compute a different function (``python -m benchmarks.studies.mobilenetv2_import``).
``medium`` keeps the paper's stride on the 96-channel row, which the ImageNet network does not have.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from glsr.models.backbones import MNV2_STAGES, MNV2_STEM, MobileNetV2Regressor
from glsr.models.factory import create_model
from glsr.models.network import GLSRNet
from glsr.models.registry import GEOMETRY_FIELDS, get_variant
from glsr.models.tflite_reader import TfliteGraph, dequantize, read_tflite

IMAGENET_STAGES: Tuple[Tuple[int, int, int, int], ...] = tuple(
    (t, c, q, 1 if c == 96 else s) for t, c, q, s in MNV2_STAGES)
"""Sandler et al.'s table: glsr's ``MNV2_STAGES`` without the paper's stride on the 96-channel row."""
IMAGENET_LAST = 1280
IMAGENET_CLASSES = 1001   # class 0 = background
IMAGENET_SIZE = 224
DEFAULT_FILE = "tf2_mobilenet_v2_1.0_224_ptq.tflite"
"""The per-channel int8 file: its weights are the closest to the float ones (the other is per-tensor uint8)."""
SOURCE = "MobileNetV2 1.0 ImageNet (TensorFlow release via google-coral/test_data, Apache-2.0)"
BN_EPS = 1e-5
"""torch's BatchNorm2d default, which glsr's layers use."""


@dataclass(frozen=True)
class ImportedConv:
    """One convolution of the file, dequantized, in torch layout (float32)."""

    name: str
    weight: torch.Tensor
    bias: torch.Tensor
    stride: int
    depthwise: bool
    activation: str


def read_convs(graph: TfliteGraph) -> List[ImportedConv]:
    """The graph's convolutions (regular and depthwise) in execution order."""
    out = []
    for op in graph.ops:
        if op.name not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        w_t, b_t = graph.tensors[op.inputs[1]], graph.tensors[op.inputs[2]]
        w = dequantize(w_t)
        depthwise = op.name == "DEPTHWISE_CONV_2D"
        w = w.transpose(3, 0, 1, 2) if depthwise else w.transpose(0, 3, 1, 2)
        if op.stride[0] != op.stride[1] or op.padding != "SAME":
            raise ValueError(f"convolution {w_t.name!r}: stride {op.stride}, padding {op.padding}; expected a "
                             "square stride and SAME padding (a standard MobileNetV2)")
        out.append(ImportedConv(w_t.name, torch.from_numpy(np.ascontiguousarray(w)).float(),
                                torch.from_numpy(dequantize(b_t)).float(), op.stride[0], depthwise, op.activation))
    return out


def reference_trunk(stages: Sequence[Tuple[int, int, int, int]] = IMAGENET_STAGES, last: int = IMAGENET_LAST,
                    input_size: int = IMAGENET_SIZE, tf_layers: bool = True) -> MobileNetV2Regressor:
    """A glsr MobileNetV2 with ``stages`` and a ``last``-channel final 1x1 conv (a 1-unit head: only ``features``
    is used)."""
    return MobileNetV2Regressor(1, stages, MNV2_STEM, last, 1, input_size, tf_layers)


def conv_bn_pairs(features: nn.Sequential) -> List[Tuple[str, nn.Conv2d, str, nn.BatchNorm2d]]:
    """``(conv name, conv, BatchNorm name, BatchNorm)`` of every convolution of a MobileNetV2 ``features`` in
    execution order (each glsr convolution is followed by its BatchNorm)."""
    mods = list(features.named_modules())
    out = []
    for i, (name, m) in enumerate(mods):
        if isinstance(m, nn.Conv2d):
            bn_name, bn = mods[i + 1]
            if not isinstance(bn, nn.BatchNorm2d):
                raise ValueError(f"{name} is not followed by a BatchNorm")
            out.append((name, m, bn_name, bn))
    return out


def trunk_state(convs: Sequence[ImportedConv], features: nn.Sequential, channel_order: str = "RGB",
                prefix: str = "features.") -> Tuple[Dict[str, torch.Tensor], int]:
    """State-dict entries (names ``prefix`` + module path) for ``features`` from the file's convolutions, taken in
    order while the shapes match; returns ``(state, number of convolutions mapped)``. Every convolution of the
    standard trunk must map (``ValueError`` otherwise); the ones after it (a narrower final conv, the
    classifier) are left out."""
    state: Dict[str, torch.Tensor] = {}
    pairs = conv_bn_pairs(features)
    mapped = 0
    for (conv_name, conv, bn_name, bn), src in zip(pairs, convs):
        if tuple(conv.weight.shape) != tuple(src.weight.shape):   # strides may differ (medium's 96-channel row)
            break
        weight = src.weight
        if mapped == 0 and channel_order.upper() == "BGR":
            weight = weight.flip(1)   # the stem reads BGR: the file's RGB input channels reversed
        state[f"{prefix}{conv_name}.weight"] = weight.clone()
        state.update(folded_batchnorm(src.bias, bn.eps, f"{prefix}{bn_name}."))
        mapped += 1
    trunk_convs = sum(1 for _ in conv_bn_pairs(features)) - 1   # all but the final 1x1 conv
    if mapped < trunk_convs:
        where = pairs[mapped][0] if mapped < len(pairs) else "the end of the file"
        raise ValueError(f"the file's convolution {mapped} does not fit glsr's MobileNetV2 at {where}: not a "
                         "MobileNetV2 1.0 (expected 52 trunk convolutions, 32-channel stem)")
    return state, mapped


def folded_batchnorm(bias: torch.Tensor, eps: float, prefix: str) -> Dict[str, torch.Tensor]:
    """BatchNorm entries that add ``bias`` and nothing else (eval mode): weight 1, running mean 0, running
    variance ``1 - eps`` (so ``sqrt(var + eps) = 1`` exactly)."""
    n = bias.numel()
    return {prefix + "weight": torch.ones(n), prefix + "bias": bias.clone(), prefix + "running_mean": torch.zeros(n),
            prefix + "running_var": torch.full((n,), 1.0 - eps), prefix + "num_batches_tracked": torch.tensor(0)}


@dataclass(frozen=True)
class ImportedMobileNetV2:
    """A file's weights on glsr's layout: ``trunk`` (``features.*`` of the stem and bottlenecks), the last 1x1
    conv and the classifier (for :class:`ImageNetClassifier`), and the input quantization (``scale``,
    ``zero_point``: float input = ``(pixel - zero_point) * scale``)."""

    path: str
    trunk: Dict[str, torch.Tensor]
    last: ImportedConv
    classifier: ImportedConv
    input_scale: float
    input_zero_point: int
    channel_order: str


def import_mobilenetv2(path: str | Path, channel_order: str = "BGR") -> ImportedMobileNetV2:
    """Read a MobileNetV2 1.0 TFLite file (:data:`DEFAULT_FILE` or the uint8 one) onto glsr's trunk layout, its
    stem reading ``channel_order`` (glsr's variants: BGR)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (the MobileNetV2 files are in ../shared/reference/"
                                "mobilenetv2)")
    graph = read_tflite(path)
    convs = read_convs(graph)
    if len(convs) != 53:
        raise ValueError(f"{path}: {len(convs)} convolutions, a MobileNetV2 1.0 has 53 (stem, 17 bottlenecks, "
                         "final 1x1, classifier)")
    features = reference_trunk().features
    trunk, mapped = trunk_state(convs, features, channel_order)
    last = [k for k in trunk if k.startswith(f"features.{len(features) - 1}.")]
    for k in last:   # the 1280-channel final conv is not part of glsr's trunk
        del trunk[k]
    image = graph.tensors[graph.inputs[0]]
    return ImportedMobileNetV2(str(path), trunk, convs[mapped - 1], convs[mapped], float(image.scales[0]),
                               int(image.zero_points[0]), channel_order.upper())


class ImageNetClassifier(nn.Module):
    """The whole ImageNet network on glsr's layers (trunk, 320 -> 1280 conv, average pool, classifier), for
    proving the mapping against the TFLite interpreter, at ``input_size`` px. ``tf_layers=True`` pads and clips
    as TensorFlow does (``MobileNetV2Regressor``); ``False`` runs glsr's default layers (symmetric padding, ReLU)."""

    def __init__(self, imported: ImportedMobileNetV2, tf_layers: bool = True, input_size: int = IMAGENET_SIZE):
        super().__init__()
        trunk = reference_trunk(input_size=input_size, tf_layers=tf_layers)
        features = trunk.features
        state = dict(imported.trunk)
        last = len(features) - 1
        state[f"features.{last}.0.weight"] = imported.last.weight
        state.update(folded_batchnorm(imported.last.bias, BN_EPS, f"features.{last}.1."))
        features.load_state_dict({k[len("features."):]: v for k, v in state.items()})
        self.features = features
        self.classifier = nn.Conv2d(IMAGENET_LAST, IMAGENET_CLASSES, 1)
        with torch.no_grad():
            self.classifier.weight.copy_(imported.classifier.weight)
            self.classifier.bias.copy_(imported.classifier.bias)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, 1001]`` of images ``[B, 3, H, W]`` scaled as the file's input (about [-1, 1])."""
        pooled = self.features(x).mean(dim=(2, 3), keepdim=True)
        return self.classifier(pooled).flatten(1)


def trunk_for(model: nn.Module, imported: ImportedMobileNetV2, prefix: str = "regress.") -> Dict[str, torch.Tensor]:
    """The imported trunk under ``prefix`` (a glsr network's global regressor), checked against ``model``'s names
    and shapes; ``ValueError`` naming the variant when the regressor is not a MobileNetV2 1.0 (e.g. ``small``)."""
    own = model.state_dict()
    out = {prefix + k: v for k, v in imported.trunk.items()}
    bad = [k for k, v in out.items() if k not in own or tuple(own[k].shape) != tuple(v.shape)]
    if bad:
        raise ValueError(f"the ImageNet MobileNetV2 trunk does not fit this network ({len(bad)} of {len(out)} "
                         f"tensors differ, first {bad[0]}); only a MobileNetV2 1.0 regressor (variant medium) "
                         "takes it")
    return out


def imported_extra(imported: ImportedMobileNetV2, base: Optional[str] = None) -> Dict[str, object]:
    """Checkpoint ``extra`` of an imported start: what it holds and where from."""
    extra: Dict[str, object] = {"source": SOURCE, "imported_from": Path(imported.path).name,
                                "imagenet_trunk": {"tensors": len(imported.trunk),
                                                   "channel_order": imported.channel_order}}
    if base:
        extra["base"] = Path(base).name
    return extra


def imagenet_start(imported: ImportedMobileNetV2, variant: str = "medium", base: Optional[str | Path] = None,
                   scheme: str = "68", seed: int = 0) -> GLSRNet:
    """A glsr network of ``variant`` whose global regressor's trunk holds the imported weights (``tf_layers`` set,
    so it computes the ImageNet network's function), for ``glsr train --init``.

    With ``base`` (a glsr checkpoint, e.g. ``glsr import-dpr ... --scheme 68``): its geometry, scheme, mean shape
    and global reinit net; everything else (the regressor's last conv and head, the local stage) starts from the
    variant's initialization (``seed``)."""
    from glsr.models.checkpoint import load_checkpoint

    geometry: Dict[str, object] = {}
    mean = None
    reinit: Dict[str, torch.Tensor] = {}
    if base is not None:
        src = load_checkpoint(base)
        geometry = {k: getattr(src.cfg, k) for k in GEOMETRY_FIELDS}
        scheme, mean = src.scheme.name, src.mean_shape.double().numpy()
        reinit = {k: v for k, v in src.state_dict().items() if k.startswith("reinit.")}
    geometry["tf_layers"] = True
    cfg = get_variant(variant, **geometry)
    if cfg.channel_order.upper() != imported.channel_order:
        raise ValueError(f"the trunk was imported for {imported.channel_order} input; variant {variant} reads "
                         f"{cfg.channel_order}")
    torch.manual_seed(seed)
    model = create_model(cfg, scheme, mean_shape=mean)
    state = model.state_dict()
    state.update(trunk_for(model, imported))
    missing = [k for k in reinit if k not in state or state[k].shape != reinit[k].shape]
    if missing:
        raise ValueError(f"{base}: its global reinit net does not fit variant {variant} (first: {missing[0]})")
    state.update(reinit)
    model.load_state_dict(state)
    return model.eval()
