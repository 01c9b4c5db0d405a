"""Export G&LSR_ω to ONNX, MNN and Core ML, with metadata in every artifact and parity against PyTorch.

Entry points: :func:`export_model` (``glsr export``) and :func:`glsr.export.parity.check_artifacts`
(``glsr parity``). What each format accepts is the table :data:`glsr.export.formats.FORMATS`; the parity limits
are the table :data:`glsr.export.parity.TOLERANCES`.
"""
from glsr.export.errors import ConverterError, ExportError, UnsupportedOpError
from glsr.export.exporter import ExportResult, export_model
from glsr.export.formats import FAMILIES, FORMATS, ExportOptions, FormatSpec, plan_formats

__all__ = ["ConverterError", "ExportError", "ExportOptions", "ExportResult", "FAMILIES", "FORMATS", "FormatSpec",
           "UnsupportedOpError", "export_model", "plan_formats"]
