"""Helpers shared by the tests (fixtures live in ``conftest.py``): small model sizes and perturbed models."""
from __future__ import annotations

import torch

from glsr.models import create_model

SMALL = dict(input_size=192, face_size=128, loc_size=128, part_size=32)
"""Reduced sizes for fast graph tests (any variant)."""
TINY = dict(input_size=96, face_size=128, loc_size=128, part_size=32)
"""The procedural training sizes (what ``glsr pipeline`` trains)."""


def jitter(model, scale: float = 0.05, seed: int = 0):
    """Add seeded Gaussian noise to every parameter: fresh heads start at zero, so an unperturbed model's
    output would not depend on its input."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


def jittered(variant: str = "gsr", scheme: str = "68", scale: float = 0.03, seed: int = 0, sizes=SMALL,
             **overrides):
    """A seeded, perturbed model in eval mode (``sizes`` plus ``overrides`` as config overrides)."""
    torch.manual_seed(seed)
    return jitter(create_model(variant, scheme, **{**sizes, **overrides}).eval(), scale, seed)
