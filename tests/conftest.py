"""Shared fixtures: the ``../shared`` folder (skip with a reason when absent), denormal flushing and one torch
thread (for every test). Helpers (model sizes, perturbed models) are in ``support.py``."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from glsr.paths import SHARED
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


@pytest.fixture(scope="module")
def flush_denormals():
    """Perturbed random weights push activations into the denormal range, 10x slower on CPUs."""
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Eager PyTorch in one thread, for every test: with two threads on a loaded 2-core machine a forward pass
    crawls (a 192 px ``small`` at batch 2: 3.5 s instead of 0.03 s). No test times PyTorch; code that sets its
    own thread count (the trainer, ``--threads``) still does."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
