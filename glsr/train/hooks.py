"""The trainer's plug-in point for tools outside the package: a target hook rewrites each batch's target landmarks
(``train(cfg, out, target_hook=...)``). glsr itself passes none; a research tool such as knowledge distillation
(``python -m benchmarks.distill``) does.

Conventions
-----------
* :meth:`TargetHook.start` is called once per process, after the run has built its data and model and before any
  step (also when a run resumes), with a :class:`RunInfo`. It returns the hook's *record*: JSON data saying what
  the hook does, kept in the run's history (``summary.json``, every checkpoint's ``extra["history"]``, the
  resumable state) under :data:`RECORD_KEY`. Keys the package reads: ``"command"``, the command that replaces
  ``glsr train`` to reproduce the run (a model card shows it), and ``"card"``, a sentence for the model card's
  "How it was made"; anything else is the hook's own. A resumed run must be given a hook whose record equals the
  one it started with (``start`` sees that record and may refuse first with its own message); a run started
  without a hook resumes without one.
* :meth:`TargetHook.__call__` is called for every optimizer step of every stage, in every process, with the
  batch as the network sees it: ``crop`` ``[B, 3, S, S]`` float32, the augmented and normalized crops (on the
  run's device; ``channels_last`` on CPU), and ``landmarks_loc`` ``[B, N, 2]`` float32, their annotation in the
  normalized loc frame (``align_corners=False`` coordinates of the loc region, the data set's
  ``landmarks_loc``; :attr:`RunInfo.loc_from_crop` maps crop pixels into it). It returns the targets ``[B, N, 2]``
  in the same frame, without gradient. Every shape target (the face-frame target, the local parts, the local
  stage's STN targets) follows from them; the reinit stage's theta target is the data set's, from the annotation.
  It runs outside the training autocast and must not draw from the global random generators (the run's data
  order and augmentation would change).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Protocol, runtime_checkable

import numpy as np
import torch

from glsr.models.registry import VariantConfig
from glsr.schemes import LandmarkScheme

RECORD_KEY = "target_hook"
"""Where a run keeps its hook's record: ``history[RECORD_KEY]`` (also in ``summary.json``)."""


@dataclass(frozen=True)
class RunInfo:
    """What a target hook may need to know of the run it plugs into."""

    variant: VariantConfig          # the trained variant with the run's geometry (crop size, context, ...)
    scheme: LandmarkScheme          # the landmark scheme of the training data
    box_convention: str             # the face-box convention the run trains on (glsr.boxes)
    device: torch.device            # where the batches are
    channels_last: bool             # whether crops come in the channels_last memory layout
    loc_from_crop: np.ndarray       # [2, 3] crop pixels (centres at integers) -> the normalized loc frame
    out: str                        # the run folder


@runtime_checkable
class TargetHook(Protocol):
    """Rewrites the target landmarks of every training batch (see the module docstring for the conventions)."""

    def start(self, run: RunInfo, recorded: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        """Bind to ``run``; ``recorded`` is the record the run started with when it resumes (else ``None``).
        Returns this hook's record (JSON data)."""
        ...

    def __call__(self, crop: torch.Tensor, landmarks_loc: torch.Tensor) -> torch.Tensor:
        """The targets ``[B, N, 2]`` (loc frame) of one batch."""
        ...


def check_resumed_record(recorded: Optional[Dict[str, Any]], record: Optional[Dict[str, Any]], out: str) -> None:
    """Refuse to resume a run with another target hook than it started with (its targets would change): ``recorded``
    is the run's, ``record`` the given hook's (``None``: no hook)."""
    if recorded == record:
        return
    if record is None:
        raise ValueError(f"the run in {out} was trained with a target hook ({recorded.get('command') or recorded}); "
                         "resume it with the same command")
    if recorded is None:
        raise ValueError(f"the run in {out} was started without a target hook; resume it with glsr train --resume "
                         f"(not {record.get('command') or 'a target hook'})")
    raise ValueError(f"the run in {out} was started with another target hook ({recorded.get('command')}; now "
                     f"{record.get('command')}); resume it with the same settings or start a new run")
