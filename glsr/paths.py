"""Folders beside the source checkout, derived in one place. Bottom layer: imports nothing from glsr.

* :data:`CHECKOUT`: the folder holding the ``glsr`` package (the repository root in a source checkout);
* :data:`SHARED`: ``../shared`` next to the checkout, the reference material (authors' checkpoints, WFLW samples,
  LFW photos) present on CI and dev machines only; everything that uses it works, or skips, without it;
* :data:`RESULTS_DIR`: ``benchmarks/results`` of the checkout, recorded benchmark results per kind of machine.
"""
from __future__ import annotations

from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
SHARED = CHECKOUT.parent / "shared"
RESULTS_DIR = CHECKOUT / "benchmarks" / "results"
