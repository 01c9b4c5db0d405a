"""Inference backends behind one small interface: a model file in, crops ``[B, 3, S, S]`` -> landmarks out.

Each backend class handles one family of artifacts and is registered by file suffix in ``BACKENDS``;
:func:`load_backend` picks by suffix (no if-chain). Every backend exposes the artifact's
:class:`~glsr.metadata.ArtifactMetadata` so pre/post-processing is read from the file itself.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Optional, Type

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
