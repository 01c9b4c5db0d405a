"""Runtime: backends, predictor, face detectors, pre/post-processing (depends on geometry and metadata only).

``from glsr.runtime import Predictor`` (imported lazily, so ``glsr.runtime.io`` stays light).
"""
from __future__ import annotations

__all__ = ["Predictor", "Prediction", "FaceDetector", "make_detector"]


def __getattr__(name: str):
    if name in ("Predictor", "Prediction"):
        from glsr.runtime import predictor

        return getattr(predictor, name)
    if name in ("FaceDetector", "make_detector"):
        from glsr.runtime import detectors

        return getattr(detectors, name)
    raise AttributeError(f"module 'glsr.runtime' has no attribute {name!r}")
