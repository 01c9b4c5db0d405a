"""Prove the ImageNet MobileNetV2 import (``python -m benchmarks.studies.mobilenetv2_import``).

glsr's MobileNetV2 layers with the weights :mod:`glsr.models.mobilenetv2_import` reads from a TFLite file (plus the
file's 1280-channel conv and classifier, :class:`~glsr.models.mobilenetv2_import.ImageNetClassifier`) against the
TFLite interpreter (``ai-edge-litert``, reference kernels, no delegate) on real photos: the five WFLW sample photos
and the first LFW photos of ``../shared``, RGB, squashed to 224 x 224, the same uint8 pixels fed to both.

Recorded per file and per layer arithmetic (``tf_layers`` True: TensorFlow's "SAME" padding and ReLU6, what an
imported start trains with; False: glsr's default layers, symmetric padding and ReLU):

* ``top1_agreement``: share of photos with the same top-1 class as the interpreter; ``decisive_top1_agreement``:
  the same over the photos whose interpreter top-1 leads its runner-up by more than twice the largest logit
  difference seen (where a disagreement could not come from the interpreter's activation rounding);
* ``max_abs_logit_diff`` / ``mean_abs_logit_diff`` against the interpreter's pre-softmax logits (dequantized; the
  interpreter quantizes every activation to 8 bits, glsr computes in float32, so they differ by rounding noise that
  grows through the 53 layers; ``logit_step`` is the logits' quantization step);
* ``stem_max_diff_steps``: largest difference of the first convolution's output, in its quantization steps (0.5 =
  the interpreter's own rounding: the weights, bias, padding and activation of that layer are exact);
* ``isolated_max_diff_steps``: every convolution of the file (the 52 of the trunk, the 1280-channel conv, the
  classifier) fed the interpreter's own input to it (dequantized) through glsr's layer (conv, BatchNorm,
  activation; clipped to the output tensor's 8-bit range, as the interpreter stores it): the largest difference
  from the interpreter's output, in that output's quantization steps, over all layers and photos. About 1 means
  each layer is mapped exactly (weights, bias, padding, activation) and the end-to-end differences are the
  interpreter's rounding accumulated through the depth;
* ``layer_rel_rms``: end to end, per convolution, RMS difference / RMS value of its output (worst layer).

Writes ``benchmarks/results/mobilenetv2_import.{json,md}`` atomically; exits with a message when ``../shared`` or
``ai_edge_litert`` is absent.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from glsr import atomic
from glsr.models.mobilenetv2_import import DEFAULT_FILE, ImageNetClassifier, import_mobilenetv2
from glsr.models.tflite_reader import TfliteGraph, read_tflite
from benchmarks import RESULTS_DIR
from glsr.paths import SHARED

MNV2_DIR = SHARED / "reference" / "mobilenetv2"
FILES = (DEFAULT_FILE, "mobilenet_v2_1.0_224_quant.tflite")
WFLW_SAMPLES = SHARED / "reference" / "dpr_wflw" / "samples"
LFW = SHARED / "faces" / "lfw"
LFW_PHOTOS = 25
SIZE = 224


def photos(lfw: int = LFW_PHOTOS) -> List[Path]:
    """The photos compared: every WFLW sample and the first ``lfw`` LFW photos (sorted by name)."""
    return sorted(WFLW_SAMPLES.glob("*.jpg")) + sorted(p for p in LFW.glob("*") if p.suffix.lower() in
                                                       (".jpg", ".jpeg", ".png"))[:lfw]


def load_rgb(path: Path) -> np.ndarray:
    """A photo as ``[224, 224, 3]`` uint8 RGB (area-resized, aspect not kept)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read {path}")
    return cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), (SIZE, SIZE), interpolation=cv2.INTER_AREA)


def _interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    return it


def _value(it, graph: TfliteGraph, index: int) -> np.ndarray:
    t = graph.tensors[index]
    return (it.get_tensor(index).astype(np.float64) - t.zero_points[0]) * t.scales[0]


def _conv_outputs(net: ImageNetClassifier, x: torch.Tensor) -> List[np.ndarray]:
    """Every trunk convolution's output after its BatchNorm and activation (NHWC), in execution order."""
    outs: List[np.ndarray] = []
    mods = list(net.features.modules())
    hooks = []
    for i, m in enumerate(mods):
        if isinstance(m, nn.BatchNorm2d):
            act = mods[i + 1] if i + 1 < len(mods) and isinstance(mods[i + 1], (nn.ReLU, nn.ReLU6)) else None
            relu6 = isinstance(act, nn.ReLU6)
            clip = (lambda y, r6=relu6: y.clamp(0, 6) if r6 else y.clamp_min(0)) if act is not None else (lambda y: y)
            hooks.append(m.register_forward_hook(lambda _m, _i, y, f=clip: outs.append(
                f(y)[0].permute(1, 2, 0).double().numpy())))
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return outs


def _clip(activation: str):
    return {"RELU6": lambda y: y.clamp(0, 6), "RELU": lambda y: y.clamp_min(0)}.get(activation, lambda y: y)


def isolated_steps(net: ImageNetClassifier, it, graph: TfliteGraph) -> float:
    """Largest difference, in output quantization steps, of every convolution fed the interpreter's own input
    (after an ``invoke``); glsr's layers in execution order match the file's convolutions one to one."""
    from glsr.models.mobilenetv2_import import conv_bn_pairs

    layers = [(conv, bn) for _n, conv, _b, bn in conv_bn_pairs(net.features)] + [(net.classifier, None)]
    ops = [op for op in graph.ops if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    worst = 0.0
    for (conv, bn), op in zip(layers, ops):
        x = torch.from_numpy(_value(it, graph, op.inputs[0])).permute(0, 3, 1, 2).float()
        with torch.no_grad():
            y = conv(x) if bn is None else bn(conv(x))
            y = _clip(op.activation)(y)[0].permute(1, 2, 0).double().numpy()
        out = graph.tensors[op.outputs[0]]
        qmin, qmax = (-128, 127) if out.dtype == "int8" else (0, 255)
        y = np.clip(y, (qmin - out.zero_points[0]) * out.scales[0], (qmax - out.zero_points[0]) * out.scales[0])
        want = _value(it, graph, op.outputs[0])[0]
        worst = max(worst, float(np.abs(y.reshape(want.shape) - want).max() / out.scales[0]))
    return worst


def compare(path: Path, images: Sequence[np.ndarray], tf_layers: bool) -> Dict[str, Any]:
    """glsr's import of ``path`` against the interpreter on ``images`` (see the module docstring)."""
    graph = read_tflite(path)
    imported = import_mobilenetv2(path, channel_order="RGB")
    net = ImageNetClassifier(imported, tf_layers=tf_layers)
    it = _interpreter(path)
    image_index = graph.inputs[0]
    logits_index = next(op.inputs[0] for op in graph.ops if op.name == "SOFTMAX")
    conv_ops = [op for op in graph.ops if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D")][:-2]   # trunk + no head
    ref, ours, rel, stem, isolated = [], [], np.zeros(len(conv_ops)), 0.0, 0.0
    for image in images:
        it.set_tensor(image_index, image[None])
        it.invoke()
        ref.append(_value(it, graph, logits_index).reshape(-1))
        if tf_layers:
            isolated = max(isolated, isolated_steps(net, it, graph))
        x = torch.from_numpy((image.astype(np.float32) - imported.input_zero_point) * imported.input_scale)
        x = x.permute(2, 0, 1)[None]
        with torch.no_grad():
            ours.append(net(x)[0].double().numpy())
        layers = _conv_outputs(net, x)
        for k, op in enumerate(conv_ops):
            want = _value(it, graph, op.outputs[0])[0]
            got = layers[k]
            if got.shape != want.shape:
                raise ValueError(f"layer {k}: glsr {got.shape} against TFLite {want.shape}")
            rel[k] = max(rel[k], float(np.sqrt(np.mean((got - want) ** 2)) / (np.sqrt(np.mean(want ** 2)) + 1e-12)))
            if k == 0:
                stem = max(stem, float(np.abs(got - want).max() / graph.tensors[op.outputs[0]].scales[0]))
    ref_a, ours_a = np.stack(ref), np.stack(ours)
    diff = np.abs(ours_a - ref_a)
    top = np.sort(ref_a, axis=1)
    margin = top[:, -1] - top[:, -2]
    agree = ours_a.argmax(1) == ref_a.argmax(1)
    decisive = margin > 2 * diff.max()
    top5 = [len(set(np.argsort(-a)[:5]) & set(np.argsort(-b)[:5])) / 5 for a, b in zip(ours_a, ref_a)]
    return {"file": path.name, "tf_layers": tf_layers, "photos": len(images),
            "top1_agreement": float(agree.mean()), "top5_overlap": float(np.mean(top5)),
            "decisive_photos": int(decisive.sum()),
            "decisive_top1_agreement": float(agree[decisive].mean()) if decisive.any() else None,
            "max_abs_logit_diff": float(diff.max()), "mean_abs_logit_diff": float(diff.mean()),
            "logit_range": [float(ref_a.min()), float(ref_a.max())],
            "logit_step": float(graph.tensors[logits_index].scales[0]),
            "stem_max_diff_steps": stem, "isolated_max_diff_steps": isolated if tf_layers else None,
            "layer_rel_rms_max": float(rel.max()),
            "layer_rel_rms_median": float(np.median(rel))}


def measure(lfw: int = LFW_PHOTOS) -> Dict[str, Any]:
    import ai_edge_litert

    names = photos(lfw)
    images = [load_rgb(p) for p in names]
    rows = [compare(MNV2_DIR / f, images, tf) for f in FILES for tf in (True, False)]
    return {"what": "glsr's MobileNetV2 with imported ImageNet weights against the TFLite interpreter's logits",
            "command": "python -m benchmarks.studies.mobilenetv2_import",
            "photos": [str(p.relative_to(SHARED.parent)) for p in names], "input": "RGB, 224 x 224, uint8",
            "versions": {"torch": torch.__version__, "ai_edge_litert": getattr(ai_edge_litert, "__version__", "?"),
                         "python": platform.python_version()},
            "rows": rows}


def markdown(result: Dict[str, Any]) -> str:
    lines = ["# ImageNet MobileNetV2 import: glsr against the TFLite interpreter", "",
             f"`{result['command']}`; {len(result['photos'])} real photos ({result['input']}); "
             f"torch {result['versions']['torch']}, ai-edge-litert {result['versions']['ai_edge_litert']}.", "",
             "| file | layers | top-1 agreement | decisive photos: top-1 | top-5 overlap | max / mean abs logit "
             "diff | logit step | stem max diff (steps) | each layer on the interpreter's input: max diff (steps) | "
             "worst layer rel. RMS end to end |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        dec = "-" if r["decisive_top1_agreement"] is None else \
            f"{r['decisive_top1_agreement']:.0%} of {r['decisive_photos']}"
        lines.append(f"| `{r['file']}` | {'TensorFlow (tf_layers)' if r['tf_layers'] else 'glsr default'} | "
                     f"{r['top1_agreement']:.0%} | {dec} | {r['top5_overlap']:.0%} | "
                     f"{r['max_abs_logit_diff']:.3f} / {r['mean_abs_logit_diff']:.3f} | {r['logit_step']:.4f} | "
                     f"{r['stem_max_diff_steps']:.2f} | "
                     f"{'-' if r['isolated_max_diff_steps'] is None else format(r['isolated_max_diff_steps'], '.2f')}"
                     f" | {r['layer_rel_rms_max']:.3f} |")
    lines += ["", "The interpreter runs 8-bit activations; glsr runs float32 with the dequantized weights, so the "
              "logits differ by rounding noise (a few logit steps), and photos whose two best classes are closer "
              "than that can swap their top-1. \"Decisive photos\" are those whose interpreter top-1 leads by more "
              "than twice the largest difference seen. Fed the interpreter's own input, every layer reproduces its "
              "output to about one quantization step: the mapping is exact and the end-to-end differences are the "
              "interpreter's 8-bit rounding accumulated through the depth. With glsr's default layers (symmetric "
              "padding, ReLU) the same weights compute a different function, hence `tf_layers` for an imported "
              "start."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lfw", type=int, default=LFW_PHOTOS, help="LFW photos besides the WFLW samples")
    ap.add_argument("-o", "--out", default=str(RESULTS_DIR / "mobilenetv2_import"), help="output stem")
    args = ap.parse_args(argv)
    if not all((MNV2_DIR / f).is_file() for f in FILES) or not WFLW_SAMPLES.is_dir() or not LFW.is_dir():
        print(f"needs ../shared ({MNV2_DIR}, {WFLW_SAMPLES}, {LFW}); not found", file=sys.stderr)
        return 2
    try:
        import ai_edge_litert  # noqa: F401
    except ImportError:
        print("needs ai-edge-litert (pip install -e '.[test]')", file=sys.stderr)
        return 2
    result = measure(args.lfw)
    atomic.write_text(Path(args.out + ".json"), json.dumps(result, indent=2) + "\n")
    atomic.write_text(Path(args.out + ".md"), markdown(result))
    print(markdown(result), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
