"""Graph rewrites applied to the ONNX artifact only (onnxruntime runs it), never to the file MNN converts.

:func:`crop_resize_pass`: a ``GridSample`` whose grid does not depend on the image (the single graph's crop -> loc
step: a fixed axis-aligned scale and shift, :func:`glsr.models.network.crop_loc_theta`) becomes ``Resize`` in
``tf_crop_and_resize`` mode with the same sample positions (roi = the sampled window, sizes = the grid's). Same
bilinear weights, no grid tensor to read: 0.172 against 0.243 ms CPU per call in onnxruntime for small-fast's
272 -> 128 px step (``benchmarks/results/amd-epyc-avx512-2c/single_graph_forms.md``). MNN 3.6 converts that mode
but computes wrong values, so the MNN artifact keeps the ``GridSample``.

A grid qualifies when the image reaches it only through ``Shape`` (it may depend on the batch size, not on
pixels), every batch element has the same grid, ``x`` varies only along the width and ``y`` only along the
height, each linearly, and every sample lies inside the image (``padding_mode="zeros"`` and ``Resize``'s
extrapolation differ only outside). Anything else is left as it is.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Set, Tuple

import numpy as np

LINEAR_TOL = 1e-4
"""Largest residual (px) of a grid's sample positions from a straight line for it to count as a scale and shift."""


def _attrs(node) -> Dict[str, object]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _image_free(proto, tensor: str) -> bool:
    """Whether ``tensor`` is computed from constants and graph inputs' shapes only (never their values)."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    inputs = {i.name for i in proto.graph.input}
    stack, seen = [tensor], set()
    while stack:
        t = stack.pop()
        if t in seen or t == "":
            continue
        seen.add(t)
        if t in inputs:
            return False
        n = producer.get(t)
        if n is None or n.op_type == "Shape":  # an initializer, or a value read for its shape only
            continue
        stack.extend(n.input)
    return True


def _input_dims(proto, tensor: str) -> Optional[List[Optional[int]]]:
    """The dimensions of graph input ``tensor`` (``None`` for a symbolic one); ``None`` when it is no graph input."""
    for i in proto.graph.input:
        if i.name == tensor:
            return [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
    return None


def _fixed(proto, tensor: str, axes: Tuple[int, int]) -> Optional[Tuple[int, int]]:
    """Two dimensions of a 4-D graph input ``tensor`` (``(2, 3)``: ``(H, W)``; ``(0, 1)``: ``(N, C)``) when both are
    fixed numbers."""
    dims = _input_dims(proto, tensor)
    if dims is None or len(dims) != 4 or not (dims[axes[0]] and dims[axes[1]]):
        return None
    return int(dims[axes[0]]), int(dims[axes[1]])


def _grids(proto, names: List[str], image: str, hw: Tuple[int, int]) -> Dict[str, List[np.ndarray]]:
    """Each grid in ``names`` evaluated at batch 1 and 2 (``image`` all zeros, other inputs too): ``{name: [g1,
    g2]}``; the whole graph runs with the grids as extra outputs (no shape information needed)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    probe = type(proto)()
    probe.CopyFrom(proto)
    del probe.metadata_props[:]
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    dims = _input_dims(proto, image)
    out: Dict[str, List[np.ndarray]] = {n: [] for n in names}
    for b in ([dims[0]] if dims[0] else [1, 2]):
        feed = {i.name: np.zeros((b, dims[1], hw[0], hw[1]), np.float32) for i in proto.graph.input}
        for n, y in zip(names, sess.run(names, feed)):
            out[n].append(np.asarray(y, dtype=np.float64))
    return out


def _line(pos: np.ndarray) -> Optional[Tuple[float, float]]:
    """``(first, last)`` sample position of ``pos`` if it is a straight line in its index, else ``None``."""
    i = np.arange(len(pos), dtype=np.float64)
    slope, start = np.polyfit(i, pos, 1)
    fit = start + slope * i
    if np.abs(fit - pos).max() > LINEAR_TOL:
        return None
    return float(fit[0]), float(fit[-1])


def crop_window(grids: List[np.ndarray], hw: Tuple[int, int]) -> Optional[Tuple[float, float, float, float]]:
    """``(y0, x0, y1, x1)`` pixel positions of the first and last samples of a grid ``[B, Ho, Wo, 2]``
    (``align_corners=False``) that is one axis-aligned scale and shift inside an ``hw`` image, else ``None``."""
    g = grids[0][0]
    if any(not np.allclose(x, g[None], atol=1e-6) for x in grids):
        return None  # a per-face grid
    h, w = hw
    px = ((g[..., 0] + 1) * w - 1) / 2
    py = ((g[..., 1] + 1) * h - 1) / 2
    if g.shape[0] < 2 or g.shape[1] < 2 or np.abs(px - px[:1]).max() > LINEAR_TOL \
            or np.abs(py - py[:, :1]).max() > LINEAR_TOL:
        return None
    xs, ys = _line(px[0]), _line(py[:, 0])
    if xs is None or ys is None or min(xs + ys) < 0 or max(xs) > w - 1 or max(ys) > h - 1:
        return None
    return ys[0], xs[0], ys[1], xs[1]


def crop_resize_pass(proto) -> Tuple[object, int]:
    """``(proto, k)``: ``proto`` with ``k`` image-independent ``GridSample`` nodes (bilinear, zero padding,
    ``align_corners=0``, on a graph input of fixed height and width) replaced by ``Resize`` ``tf_crop_and_resize``
    (see the module docstring); the proto is changed in place."""
    from onnx import helper, numpy_helper

    candidates = []
    if len(proto.graph.input) != 1:  # the single graph (a crop in); host-warp graphs sample nothing
        return proto, 0
    for n in proto.graph.node:
        if n.op_type != "GridSample":
            continue
        a = _attrs(n)
        if (a.get("mode", b"bilinear") not in (b"bilinear", b"linear") or a.get("padding_mode", b"zeros") != b"zeros"
                or int(a.get("align_corners", 0)) != 0):
            continue
        hw = _fixed(proto, n.input[0], (2, 3))
        if hw is not None and _image_free(proto, n.input[1]):
            candidates.append((n, hw))
    if not candidates:
        return proto, 0
    grids = _grids(proto, [n.input[1] for n, _ in candidates], candidates[0][0].input[0], candidates[0][1])
    done = 0
    for node, hw in candidates:
        window = crop_window(grids[node.input[1]], hw) if node.input[1] in grids else None
        if window is None:
            continue
        y0, x0, y1, x1 = window
        ho, wo = grids[node.input[1]][0].shape[1:3]
        h, w = hw
        tag = node.name.strip("/").replace("/", "_") or f"gridsample{done}"
        roi = np.array([0, 0, y0 / (h - 1), x0 / (w - 1), 1, 1, y1 / (h - 1), x1 / (w - 1)], np.float32)
        inits = [numpy_helper.from_array(roi, f"{tag}_roi")]
        nc = _fixed(proto, node.input[0], (0, 1))
        if nc is not None:  # a fixed batch: the output size is a constant
            inits.append(numpy_helper.from_array(np.array([*nc, ho, wo], np.int64), f"{tag}_sizes"))
            new = []
        else:  # any batch: (N, C) of the image, then the grid's (Ho, Wo)
            inits += [numpy_helper.from_array(np.array([0], np.int64), f"{tag}_zero"),
                      numpy_helper.from_array(np.array([2], np.int64), f"{tag}_two"),
                      numpy_helper.from_array(np.array([ho, wo], np.int64), f"{tag}_hw")]
            new = [helper.make_node("Shape", [node.input[0]], [f"{tag}_shape"], name=f"{tag}_shape"),
                   helper.make_node("Slice", [f"{tag}_shape", f"{tag}_zero", f"{tag}_two"], [f"{tag}_nc"],
                                    name=f"{tag}_nc"),
                   helper.make_node("Concat", [f"{tag}_nc", f"{tag}_hw"], [f"{tag}_sizes"], axis=0,
                                    name=f"{tag}_sizes")]
        new.append(helper.make_node("Resize", [node.input[0], f"{tag}_roi", "", f"{tag}_sizes"], list(node.output),
                                    name=f"{tag}_resize", mode="linear",
                                    coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=0.0))
        at = list(proto.graph.node).index(node)
        proto.graph.node.remove(node)
        for k, m in enumerate(new):
            proto.graph.node.insert(at + k, m)
        proto.graph.initializer.extend(inits)
        done += 1
    if done:
        _drop_dead(proto)
    return proto, done


def _drop_dead(proto) -> None:
    """Remove nodes and initializers no graph output depends on (the replaced grids' computation)."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    live: Set[int] = set()
    stack = [o.name for o in proto.graph.output]
    seen: Set[str] = set()
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        n = producer.get(t)
        if n is not None and id(n) not in live:
            live.add(id(n))
            stack.extend(n.input)
    if len(live) < len(proto.graph.node):
        keep = [type(n)() for n in proto.graph.node if id(n) in live]
        for c, n in zip(keep, [n for n in proto.graph.node if id(n) in live]):
            c.CopyFrom(n)
        del proto.graph.node[:]
        proto.graph.node.extend(keep)
    used = {i for n in proto.graph.node for i in n.input}
    for i in [i for i in proto.graph.initializer if i.name not in used]:
        proto.graph.initializer.remove(i)
    made = {o for n in proto.graph.node for o in n.output}
    for v in [v for v in proto.graph.value_info if v.name not in made]:
        proto.graph.value_info.remove(v)
