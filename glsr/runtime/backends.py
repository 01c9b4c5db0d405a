"""Inference backends behind one small interface: a model file in, crops ``[B, 3, S, S]`` -> landmarks out.

Each backend class handles one family of artifacts and is registered by file suffix in ``BACKENDS``;
:func:`load_backend` picks by suffix (no if-chain). Every backend exposes the artifact's
:class:`~glsr.metadata.ArtifactMetadata` so pre/post-processing is read from the file itself.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Type

import numpy as np

from glsr.metadata import ArtifactMetadata


class Backend:
    """Base class. ``run(x)`` takes float32 ``[B, 3, S, S]`` crops, returns float32 ``[B, N, 2]`` crop pixels."""

    name = "base"
    suffixes: tuple[str, ...] = ()

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


def register_backend(cls: Type[Backend]) -> Type[Backend]:
    for s in cls.suffixes:
        BACKENDS[s] = cls
    return cls


@register_backend
class TorchBackend(Backend):
    """A glsr ``.pt`` checkpoint run in PyTorch eager mode."""

    name = "torch"
    suffixes = (".pt",)

    def _load(self) -> ArtifactMetadata:
        import torch

        from glsr.models import load_checkpoint
        from glsr.runtime.processing import metadata_for

        self.model = load_checkpoint(self.path)
        if self.options.get("sampler"):
            self.model.set_sampler(self.options["sampler"])
        self._torch = torch
        if self.threads:
            torch.set_num_threads(int(self.threads))
        return metadata_for(self.model, format="pt", batch="dynamic", sampler=self.model.sampler_name)

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
    suffixes = (".onnx",)

    def _load(self) -> ArtifactMetadata:
        import onnxruntime as ort

        from glsr.export.onnx_export import read_metadata

        meta = read_metadata(self.path)
        so = ort.SessionOptions()
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
            so.inter_op_num_threads = 1
        so.log_severity_level = 3
        so.add_session_config_entry("session.set_denormal_as_zero", "1")  # as mobile runtimes do; 10x on x86
        providers = self.options.get("providers") or ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(self.path), so, providers=providers)
        names = [i.name for i in self.session.get_inputs()]
        if names != [meta.input_name]:
            raise ValueError(f"{self.path.name}: inputs {names}, metadata says [{meta.input_name!r}]")
        return meta

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
    suffixes = (".mnn",)

    def _load(self) -> ArtifactMetadata:
        from glsr.export.mnn_export import read_metadata, stdout_to_stderr

        with stdout_to_stderr():  # MNN prints notices on stdout
            import MNN
        meta = read_metadata(self.path)
        precision = self.options.get("precision") or {"fp32": "high", "fp16": "low"}.get(meta.precision, "normal")
        config = {"backend": self.options.get("backend", "CPU"), "precision": precision,
                  "numThread": int(self.threads or 1)}
        self._mnn = MNN
        with stdout_to_stderr():
            self.runtime = MNN.nn.create_runtime_manager((config,))
            self.module = MNN.nn.load_module_from_file(str(self.path), [meta.input_name], [meta.output_name],
                                                       runtime_manager=self.runtime)
        return meta

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
    suffixes = (".mlpackage", ".mlmodel")

    def _load(self) -> ArtifactMetadata:
        import sys

        from glsr.export.coreml_export import describe, read_metadata

        meta = read_metadata(self.path)
        info = describe(self.path)
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


def artifact_kind(path: str | Path) -> str:
    p = str(path).lower().rstrip("/")
    for s in sorted(BACKENDS, key=len, reverse=True):
        if p.endswith(s):
            return s
    return Path(p).suffix


def load_backend(path: str | Path, threads: Optional[int] = None, **options) -> Backend:
    """Open a model file with the backend registered for its suffix."""
    kind = artifact_kind(path)
    if kind not in BACKENDS:
        raise ValueError(f"don't know how to run {path!s}: supported files are {', '.join(sorted(BACKENDS))}")
    return BACKENDS[kind](path, threads=threads, **options)
