"""Runtime: backends, predictor, face detectors, pre/post-processing (depends on geometry and metadata only).

``from glsr.runtime import Predictor`` (imported lazily, so ``glsr.runtime.io`` stays light).
"""
from __future__ import annotations

__all__ = ["Predictor", "Prediction", "FaceDetector", "make_detector", "Tracker", "TrackConfig", "OneEuroConfig",
           "RefineConfig"]


def __getattr__(name: str):
    if name in ("Predictor", "Prediction"):
        from glsr.runtime import predictor

        return getattr(predictor, name)
    if name in ("FaceDetector", "make_detector"):
        from glsr.runtime import detectors

        return getattr(detectors, name)
    if name in ("Tracker", "TrackConfig", "OneEuroConfig"):
        from glsr.runtime import tracking

        return getattr(tracking, name)
    if name == "RefineConfig":
        from glsr.runtime import refine

        return refine.RefineConfig
    raise AttributeError(f"module 'glsr.runtime' has no attribute {name!r}")
