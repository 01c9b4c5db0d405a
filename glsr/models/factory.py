"""``create_model``: build any registered variant for any landmark scheme (timm-style entry point)."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from glsr.models.network import GLSRNet
from glsr.models.registry import VariantConfig, get_variant
from glsr.schemes import LandmarkScheme, get_scheme


def default_mean_shape(scheme: LandmarkScheme, cfg: VariantConfig) -> np.ndarray:
    """The scheme's template face in normalized face coordinates.

    The template's unit square stands for the detector box; the face frame initially equals the loc region,
    which is the box enlarged by ``box_scale``, hence ``u = (2 t - 1) / box_scale``. Training replaces this
    with the training set's mean shape.
    """
    from glsr.shapes import template_shape

    return (2.0 * template_shape(scheme) - 1.0) / cfg.box_scale


def create_model(name: str | VariantConfig, scheme: str | int | LandmarkScheme = "68",
                 mean_shape: Optional[np.ndarray] = None, **overrides: Any) -> GLSRNet:
    """Build a variant by registered name (``small``, ``medium``, ``large``, ``b1``, ``b2``, ``gsr``) or config.

    ``overrides`` replace config fields (e.g. ``input_size=256, context=1.0``), of a registered variant or of a
    given config alike.
    """
    if isinstance(name, str):
        cfg = get_variant(name, **overrides)
    else:
        cfg = dataclasses.replace(name, **overrides) if overrides else name
    sch = get_scheme(scheme)
    if mean_shape is None:
        mean_shape = default_mean_shape(sch, cfg)
    return GLSRNet(cfg, sch, mean_shape)
