"""glsr: G&LSR_ω face alignment — train, export (ONNX / MNN / CoreML), run, benchmark and verify."""
__version__ = "0.1.0"
