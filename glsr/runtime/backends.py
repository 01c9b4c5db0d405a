"""Inference backends behind one small interface: a model file in, crops ``[B, 3, S, S]`` -> landmarks out.

Each backend class runs one family of artifacts and registers under its name in ``BACKENDS``; the format table
(:data:`glsr.formats.FORMATS`) says which backend runs which artifact kind and how its metadata is read, so
:func:`load_backend` picks by the file's format record (``.pt`` checkpoints run in PyTorch). Sessions come from
:mod:`glsr.runtime.sessions`. Every backend exposes the artifact's :class:`~glsr.metadata.ArtifactMetadata`
so pre/post-processing is read from the file itself.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple, Type

import numpy as np

from glsr.artifacts import check_graph, coreml_describe
from glsr.formats import format_of
from glsr.metadata import ArtifactMetadata
from glsr.runtime.hostwarp import check_host_warp_meta
from glsr.runtime.sessions import (BoundSession, MnnGraph, mnn_module, mnn_precision, onnx_session,
                                   onnx_subgraphs)


class Backend:
    """Base class. ``run(x)`` takes float32 ``[B, 3, S, S]`` crops, returns float32 ``[B, N, 2]`` crop pixels."""

    name = "base"

    def __init__(self, path: str | Path, threads: Optional[int] = None, **options):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"model file {self.path} does not exist")
        self.threads = threads
        self.options = options
        self.metadata: ArtifactMetadata = self._load()

    def _load(self) -> ArtifactMetadata:  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def host_warp(self) -> bool:
        """True for a host-warp artifact (separate graphs, :mod:`glsr.runtime.hostwarp`): use :meth:`run_graph`."""
        return bool(self.metadata.host_warp)

    def run_graph(self, graph: str, *xs: np.ndarray) -> List[np.ndarray]:
        """Host-warp mode: run graph ``graph`` (``"reinit"``, ``"global"``, ``"local"``) on its float32 inputs in
        the order of :func:`glsr.models.hostwarp.graph_io`; returns its outputs."""
        if not self.host_warp:
            raise ValueError(f"{self.path.name} is a single-graph artifact (crop in, landmarks out): call run(), or "
                             "export with --host-warp")
        names = self._graph_io(graph)[0]
        if len(xs) != len(names):
            raise ValueError(f"host-warp graph {graph!r} takes {len(names)} inputs ({', '.join(names)}), got {len(xs)}")
        xs = tuple(np.ascontiguousarray(x, dtype=np.float32) for x in xs)
        if self.metadata.batch not in ("dynamic", str(xs[0].shape[0])):
            raise ValueError(f"{self.path.name} was exported for batch {self.metadata.batch}, got {xs[0].shape[0]}")
        return self._run_graph(graph, xs)

    def _run_graph(self, graph: str, xs: Tuple[np.ndarray, ...]) -> List[np.ndarray]:
        raise ValueError(f"the {self.name} backend has no host-warp mode; use an ONNX or MNN host-warp artifact")

    def _graph_io(self, graph: str) -> Tuple[List[str], List[str]]:
        try:
            ins, outs = self.metadata.host_warp["graphs"][graph]
            return list(ins), list(outs)
        except KeyError:
            raise ValueError(f"{self.path.name}: no host-warp graph {graph!r} (graphs: "
                             f"{sorted(self.metadata.host_warp.get('graphs', {}))})") from None

    def check_input(self, x: np.ndarray) -> np.ndarray:
        s = self.metadata.input_size
        if x.ndim != 4 or x.shape[1:] != (3, s, s):
            raise ValueError(f"{self.name} backend for {self.path.name} expects crops [B, 3, {s}, {s}], got "
                             f"{tuple(x.shape)}")
        if self.metadata.batch not in ("dynamic", str(x.shape[0])):
            raise ValueError(f"{self.path.name} was exported for batch {self.metadata.batch}, got {x.shape[0]}; "
                             "re-export with --batch dynamic or feed that batch size")
        return np.ascontiguousarray(x, dtype=np.float32)


BACKENDS: Dict[str, Type[Backend]] = {}
"""Backend name (:attr:`glsr.formats.FormatSpec.backend`, ``"torch"`` for checkpoints) -> class."""
CHECKPOINT_SUFFIX = ".pt"


def register_backend(cls: Type[Backend]) -> Type[Backend]:
    BACKENDS[cls.name] = cls
    return cls


@register_backend
class TorchBackend(Backend):
    """A glsr ``.pt`` checkpoint run in PyTorch eager mode."""

    name = "torch"

    def _load(self) -> ArtifactMetadata:
        import torch

        from glsr.models import load_checkpoint
        from glsr.runtime.processing import metadata_for

        self.model = load_checkpoint(self.path).without_inert_stages()  # runs only the stages that act
        if self.options.get("sampler"):
            self.model.set_sampler(self.options["sampler"])
        self._torch = torch
        if self.threads:
            torch.set_num_threads(int(self.threads))
        extra = {}
        self._graphs = None
        if self.options.get("host_warp"):  # the checkpoint run as a host-warp artifact would be (parity reference)
            from glsr.models.hostwarp import host_warp_spec

            extra["host_warp"] = host_warp_spec(self.model)
        return metadata_for(self.model, format="pt", batch="dynamic", sampler=self.model.sampler_name, **extra)

    def _run_graph(self, graph: str, xs: Tuple[np.ndarray, ...]) -> List[np.ndarray]:
        if self._graphs is None:
            from glsr.models.hostwarp import numpy_runner

            self._graphs = numpy_runner(self.model)
        self._graph_io(graph)
        return self._graphs(graph, *xs)

    def run(self, x: np.ndarray) -> np.ndarray:
        x = self.check_input(x)
        with self._torch.no_grad():
            return self.model(self._torch.from_numpy(x)).numpy()


@register_backend
class OnnxBackend(Backend):
    """An exported ``.onnx`` run with onnxruntime (CPU); metadata from ``metadata_props``.

    ``threads`` sets ``SessionOptions.intra_op_num_threads``; option ``providers`` overrides the providers.
    """

    name = "onnx"

    def _load(self) -> ArtifactMetadata:
        meta = format_of(self.path).read_metadata(self.path)
        if meta.host_warp:
            check_host_warp_meta(meta)
            try:
                graphs = onnx_subgraphs(self.path, meta.host_warp["graphs"])
            except Exception as e:  # noqa: BLE001 - a name the metadata gives is not in the graph
                from glsr.metadata import MetadataError

                raise MetadataError(f"{self.path}: its metadata does not describe its graph (the host-warp graphs "
                                    f"it names cannot be cut from the file: {e.__class__.__name__}: "
                                    f"{str(e).strip()[:160]}); export it again with `glsr export --host-warp`") from e
            self.sessions = {g: onnx_session(proto, self.threads, self.options.get("providers"))
                             for g, proto in graphs.items()}
            self._runners = {g: BoundSession(s, *meta.host_warp["graphs"][g]) for g, s in self.sessions.items()}
            return meta
        self.session = onnx_session(self.path, self.threads, self.options.get("providers"))
        check_graph(meta, {i.name: i.shape for i in self.session.get_inputs()},
                    {o.name: o.shape for o in self.session.get_outputs()}, self.path, batch_known=True)
        return meta

    def _run_graph(self, graph: str, xs: Tuple[np.ndarray, ...]) -> List[np.ndarray]:
        self._graph_io(graph)
        return self._runners[graph].run(xs)

    def run(self, x: np.ndarray) -> np.ndarray:
        x = self.check_input(x)
        return self.session.run([self.metadata.output_name], {self.metadata.input_name: x})[0]


@register_backend
class MNNBackend(Backend):
    """An exported ``.mnn`` run with MNN's module API; metadata from the model's bizCode JSON.

    Options: ``precision`` (MNN's ``"low" | "normal" | "high"``; default ``"high"`` for fp32 artifacts,
    ``"low"`` for fp16 so devices with fp16 arithmetic use it, ``"normal"`` for int8), ``backend`` (``"CPU"``).
    """

    name = "mnn"

    def _load(self) -> ArtifactMetadata:
        meta = format_of(self.path).read_metadata(self.path)  # imports MNN with its stdout notices redirected
        import MNN

        precision = self.options.get("precision") or mnn_precision(meta.precision)
        self._mnn = MNN
        if meta.host_warp:
            check_host_warp_meta(meta)
            self.modules = {g: mnn_module(self.path, self.threads, precision, self.options.get("backend", "CPU"),
                                          list(ins), list(outs)) for g, (ins, outs) in meta.host_warp["graphs"].items()}
            self._runners = {g: MnnGraph(m) for g, m in self.modules.items()}
            return meta
        self.module = mnn_module(self.path, self.threads, precision, self.options.get("backend", "CPU"),
                                 [meta.input_name], [meta.output_name])
        info = self.module.get_info()
        shapes = [list(v.shape) for v in info.get("inputs") or []]
        check_graph(meta, {n: (shapes[i] if i < len(shapes) else None) for i, n in enumerate(info["inputNames"])},
                    {n: None for n in info["outputNames"]}, self.path)
        return meta

    def _run_graph(self, graph: str, xs: Tuple[np.ndarray, ...]) -> List[np.ndarray]:
        self._graph_io(graph)
        return self._runners[graph].run(xs)

    def run(self, x: np.ndarray) -> np.ndarray:
        x = self.check_input(x)
        expr = self._mnn.expr
        y = self.module.forward([expr.const(x, list(x.shape), expr.NCHW)])
        y = y[0] if isinstance(y, (list, tuple)) else y
        return np.array(y.read(), dtype=np.float32, copy=True).reshape(x.shape[0], self.metadata.num_points, 2)


class PlatformNotSupportedError(ValueError):
    """The artifact loads here but executes only on another OS (a ValueError so the CLI prints one line)."""


@register_backend
class CoreMLBackend(Backend):
    """An exported ``.mlpackage`` / ``.mlmodel``; metadata from user-defined metadata.

    Loads anywhere (spec only off macOS); ``run`` executes on macOS only. Option ``compute_units`` (a
    ``coremltools.ComputeUnit`` name; default ``CPU_ONLY`` for fp32 artifacts so parity sees fp32 arithmetic,
    ``ALL`` otherwise). Image-input models get the crops de-normalized into 8-bit images.
    """

    name = "coreml"

    def _load(self) -> ArtifactMetadata:
        import sys

        meta = format_of(self.path).read_metadata(self.path)
        info = coreml_describe(self.path)
        check_graph(meta, {n: v["shape"] if v["kind"] == "multiArrayType" else None for n, v in info["inputs"].items()},
                    {n: v["shape"] for n, v in info["outputs"].items()}, self.path)
        self.image_input = info["inputs"][meta.input_name]["kind"] == "imageType"
        self.model = None
        if sys.platform == "darwin":
            import coremltools as ct

            units = self.options.get("compute_units") or ("CPU_ONLY" if meta.precision == "fp32" else "ALL")
            self.model = ct.models.MLModel(str(self.path), compute_units=getattr(ct.ComputeUnit, units))
        return meta

    def run(self, x: np.ndarray) -> np.ndarray:
        x = self.check_input(x)
        if self.model is None:
            raise PlatformNotSupportedError(f"CoreML models execute only on macOS; {self.path.name} was loaded "
                                            "for inspection only (run `glsr parity` on a Mac)")
        m = self.metadata
        if not self.image_input:
            feed = {m.input_name: x}
        else:
            from PIL import Image

            if x.shape[0] != 1:
                raise ValueError("image-input Core ML models take one crop per call")
            img = np.clip(np.rint(x[0].transpose(1, 2, 0) * m.pixel_std + m.pixel_mean), 0, 255).astype(np.uint8)
            if m.channel_order.upper() == "BGR":
                img = img[..., ::-1]  # PIL images are RGB; Core ML reorders to the model's BGR layout
            feed = {m.input_name: Image.fromarray(np.ascontiguousarray(img))}
        out = self.model.predict(feed)[m.output_name]
        return np.asarray(out, dtype=np.float32).reshape(x.shape[0], m.num_points, 2)


def backend_name(path: str | Path) -> str:
    """The backend that runs ``path``: ``"torch"`` for a ``.pt`` checkpoint, else its format record's."""
    if str(path).lower().rstrip("/").endswith(CHECKPOINT_SUFFIX):
        return TorchBackend.name
    try:
        return format_of(path).backend
    except ValueError:
        raise ValueError(f"don't know how to run {path!s}: give a {CHECKPOINT_SUFFIX} checkpoint or an exported "
                         "artifact (glsr export --list)") from None


def load_backend(path: str | Path, threads: Optional[int] = None, **options) -> Backend:
    """Open a model file with the backend its format record names.

    A missing file, a folder where a file belongs, or a file the backend cannot parse (truncated, corrupt, not a
    model) raises ``FileNotFoundError`` / ``ValueError`` naming the file, never a library's own exception.
    """
    name = backend_name(path)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"model file {p} does not exist")
    if p.is_dir() and not p.name.lower().endswith(".mlpackage"):
        raise ValueError(f"model file {p} is a folder, not a {p.suffix or 'model'} file; give the model file itself")
    try:
        return BACKENDS[name](path, threads=threads, **options)
    except (ValueError, FileNotFoundError):
        raise
    except Exception as e:  # noqa: BLE001 - protobuf DecodeError, onnxruntime / MNN / coremltools errors
        detail = (str(e).strip().splitlines() or [""])[0][:200]
        if out_of_resources(e):  # the machine, not the file: a loaded machine cannot start the runtime's threads
            raise ValueError(f"{p}: the {name} backend could not start its threads or get memory "
                             f"({e.__class__.__name__}: {detail}); the machine is out of threads or memory, not the "
                             "file at fault: lower --threads, or run it again when the machine is less loaded") from e
        raise ValueError(f"{p} could not be loaded by the {name} backend ({e.__class__.__name__}: {detail}); the "
                         "file is truncated, corrupt or not a model: copy or export it again") from e


RESOURCE_WORDS = ("pthread", "thread", "resource temporarily unavailable", "bad_alloc", "out of memory",
                  "cannot allocate", "failed to allocate", "std::system_error", "errno 11", "errno 12")
"""Words of a runtime's error that blame the machine (thread creation, memory), not the model file."""


def out_of_resources(e: BaseException) -> bool:
    """Whether a load failure was the machine running out of threads or memory (``MemoryError``, ``EAGAIN`` /
    ``ENOMEM``, a runtime's thread-creation or allocation message)."""
    import errno

    if isinstance(e, MemoryError) or (isinstance(e, OSError) and e.errno in (errno.EAGAIN, errno.ENOMEM)):
        return True
    return any(w in str(e).lower() for w in RESOURCE_WORDS)
