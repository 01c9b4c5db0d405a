"""Helpers shared by the tests (fixtures live in ``conftest.py``): small model sizes, perturbed models, and what the
fault corpus (``test_faults*.py``) runs commands with."""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

from glsr.models import create_model
from glsr.train.config import AugmentConfig, ModelOverrides, StageConfig, TrainConfig

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


# ------------------------------------------------------------------------------------------------- fault corpus
REPO = Path(__file__).resolve().parents[1]
TRAIN_MODEL = ModelOverrides(input_size=64, loc_size=128, face_size=128, part_size=32)
TRAIN_ARGS = ["--lr", "0.002", "--lr-last", "0.0002", "--samples", "8", "--val-samples", "4", "--samples-per-image",
              "2", "--batch-size", "4", "--input-size", "64", "--loc-size", "128", "--face-size", "128",
              "--part-size", "32", "--threads", "1", "--no-progress", "--no-tensorboard"]


def jpeg_bytes(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return buf.tobytes()


def run_cli(argv, capsys):
    """``(exit code, stdout, stderr)`` of ``glsr ARGV`` run in this process (argparse errors included)."""
    from glsr.cli import main

    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(err: str) -> str:
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert "Traceback" not in err, err
    assert lines and "error:" in lines[-1], err
    return lines[-1]


def tiny_config(**kw) -> TrainConfig:
    cfg = TrainConfig(variant="small", data="procedural:68", samples=8, val_samples=4, batch_size=4, threads=1,
                      model=TRAIN_MODEL, progress=False, tensorboard=False, log_every=1,
                      stages=(StageConfig(1, 0.002), StageConfig(1, 0.002), StageConfig(0, 0.002),
                              StageConfig(0, 0.0002)),
                      augment=AugmentConfig(samples_per_image=2),
                      targets=replace(TrainConfig().targets, mean_shape_samples=64))
    return replace(cfg, **kw)


def finite_state(path: Path) -> bool:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return all(bool(torch.isfinite(v).all()) for v in state["model"].values() if v.is_floating_point())


def copy_run(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst)
    return dst

