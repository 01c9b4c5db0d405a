"""What one format's writer is handed by :func:`glsr.export.export_model` (one call per artifact kind)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from glsr.formats import ExportOptions, FormatSpec
from glsr.metadata import ArtifactMetadata


@dataclass(frozen=True)
class ExportJob:
    """One artifact to write at ``target``: the model, its format record, metadata and options.

    ``fp32_onnx`` is the traced fp32 ONNX graph for formats built from it (``spec.via_onnx``), else ``None``;
    ``calib_float`` / ``calib_raw`` are int8 calibration crops (normalized float ``[K, 3, S, S]`` / BGR uint8
    ``[K, S, S, 3]``), ``None`` unless the precision is int8; ``work`` a scratch folder.
    """

    model: Any
    spec: FormatSpec
    target: Path
    meta: ArtifactMetadata
    opts: ExportOptions
    work: Path
    fp32_onnx: Optional[Path] = None
    calib_float: Optional[np.ndarray] = None
    calib_raw: Optional[np.ndarray] = None
