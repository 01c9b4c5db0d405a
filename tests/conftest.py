"""Shared fixtures: the ``../shared`` folder (skip with a reason when absent) and small helpers."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DPR_DIR = SHARED / "reference" / "dpr_wflw"
LFW_DIR = SHARED / "faces" / "lfw"


@pytest.fixture(scope="session")
def dpr_dir() -> Path:
    if not (DPR_DIR / "98_points_global_regress.pth.tar").is_file():
        pytest.skip(f"authors' reference checkpoints not found at {DPR_DIR} (../shared is only on CI and dev "
                    "machines); download them from shaoxiaohu/Face_Alignment_DPR to run this test")
    return DPR_DIR


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    if not LFW_DIR.is_dir():
        pytest.skip(f"real face photos not found at {LFW_DIR} (../shared is only on CI and dev machines)")
    return LFW_DIR
