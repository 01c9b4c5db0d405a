"""Export G&LSR_ω to ONNX, MNN and Core ML, with metadata in every artifact and parity against PyTorch.

Entry points: :func:`export_model` (``glsr export``) and :func:`glsr.export.parity.check_artifacts`
(``glsr parity``). What each format accepts is the table :data:`glsr.formats.FORMATS`; the parity limits
are the table :data:`glsr.export.parity.TOLERANCES`.
"""
from __future__ import annotations

import importlib
from typing import Any

# imported on first use (PEP 562): ``glsr.export.cli`` registers its sub-commands without loading PyTorch
_HOME = {"ConverterError": "glsr.export.errors", "ExportError": "glsr.export.errors",
         "UnsupportedOpError": "glsr.export.errors", "ExportResult": "glsr.export.exporter",
         "export_model": "glsr.export.exporter", "FAMILIES": "glsr.formats", "FORMATS": "glsr.formats",
         "ExportOptions": "glsr.formats", "FormatSpec": "glsr.formats", "plan_formats": "glsr.formats"}

__all__ = ["ConverterError", "ExportError", "ExportOptions", "ExportResult", "FAMILIES", "FORMATS", "FormatSpec",
           "UnsupportedOpError", "export_model", "plan_formats"]


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'glsr.export' has no attribute {name!r}")
