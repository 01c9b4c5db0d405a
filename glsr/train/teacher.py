"""Teachers for distillation: trained glsr models whose predictions on each augmented training crop soften the
annotation (:class:`glsr.train.config.DistillConfig`).

Conventions: a teacher reads the student's crop tensor as it is (same ``input_size``, ``crop_enlarge``, channel
order and pixel normalization, and the same landmark scheme; anything else is refused with the field named), in
eval mode and without gradients; its landmarks come out in crop pixels (x, y, pixel centres at integers) and are
mapped into the student's normalized loc frame with the same ``loc_from_crop`` the data set uses for the
annotation, so the blend ``(1 - weight) * annotation + weight * mean(teachers)`` is taken point by point in one
frame. A teacher trained on another box convention than the run's is refused: it would be read off its domain.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Sequence

import torch

from glsr import geometry as geo
from glsr.digest import file_sha256
from glsr.models.checkpoint import load_checkpoint
from glsr.models.network import GLSRNet
from glsr.models.registry import VariantConfig
from glsr.schemes import LandmarkScheme
from glsr.train.augment import loc_from_crop_pixels, preprocess_metadata

CROP_FIELDS = ("input_size", "crop_enlarge", "channel_order", "pixel_mean", "pixel_std")
"""What a teacher must share with the student to read its crop: the crop's size and context and the normalization
(:func:`glsr.train.augment.preprocess_metadata`)."""


@dataclass
class Teachers:
    """Frozen teacher networks and the map from their crop-pixel outputs to the student's loc frame."""

    models: List[GLSRNet]
    records: List[Dict[str, Any]]
    loc_from_crop: torch.Tensor  # [2, 3] crop pixels -> student's normalized loc frame
    weight: float

    @classmethod
    def load(cls, specs: Sequence[str], weight: float, student: VariantConfig, scheme: LandmarkScheme,
             box_convention: str) -> "Teachers":
        """Read and check the teachers (``specs``: files or shipped names) against the student's crop."""
        from glsr.shipped import resolve_weights

        want = preprocess_metadata(student, scheme)
        models, records = [], []
        for spec in specs:
            try:
                path = resolve_weights(spec)  # a file or a shipped model's name
            except (FileNotFoundError, ValueError) as e:
                raise type(e)(f"teacher {spec!r}: {e}") from None
            if not path.is_file():
                raise FileNotFoundError(f"teacher {spec!r}: {path} does not exist (give a glsr checkpoint file or a "
                                        "shipped name: small, medium, ...)")
            model = load_checkpoint(path)
            if model.scheme.name != scheme.name:
                raise ValueError(f"teacher {spec!r} predicts the {model.scheme.name}-point scheme; the training data "
                                 f"is {scheme.name}-point")
            got = preprocess_metadata(model.cfg, model.scheme)
            bad = [f"{f} {getattr(got, f)} (student {getattr(want, f)})" for f in CROP_FIELDS
                   if getattr(got, f) != getattr(want, f)]
            if bad:
                raise ValueError(f"teacher {spec!r} reads another crop than the student: {'; '.join(bad)}. A teacher "
                                 "must share the crop size, context and normalization (e.g. small or medium for a "
                                 "256 px face; not small-fast)")
            if model.box_convention and box_convention and model.box_convention != box_convention:
                raise ValueError(f"teacher {spec!r} was trained on {model.box_convention!r} boxes; this run trains on "
                                 f"{box_convention!r} boxes")
            for p in model.parameters():
                p.requires_grad_(False)
            models.append(model.eval())
            records.append({"teacher": str(spec), "path": str(path), "sha256": file_sha256(path),
                            "variant": model.cfg.name})
        if not models:
            raise ValueError("distillation needs at least one teacher")
        loc = torch.tensor(loc_from_crop_pixels(student), dtype=torch.float32)
        return cls(models, records, loc, float(weight))

    def to(self, device: torch.device, channels_last: bool = False) -> "Teachers":
        for m in self.models:
            m.to(device)
            if channels_last:
                m.to(memory_format=torch.channels_last)
        self.loc_from_crop = self.loc_from_crop.to(device)
        return self

    @torch.no_grad()
    def predict_loc(self, crop: torch.Tensor) -> torch.Tensor:
        """Mean of the teachers' landmarks on ``crop`` ``[B, 3, S, S]``, in the student's loc frame ``[B, N, 2]``
        (float32, full precision whatever autocast the caller runs)."""
        return self.to_loc(torch.stack([m(crop).float() for m in self.models]).mean(0))

    def to_loc(self, pts_crop: torch.Tensor) -> torch.Tensor:
        """Crop-pixel points ``[B, N, 2]`` -> the student's normalized loc frame (the data set's
        ``landmarks_loc``)."""
        return geo.transform_points(self.loc_from_crop.expand(pts_crop.shape[0], 2, 3), pts_crop)

    def blend(self, crop: torch.Tensor, landmarks_loc: torch.Tensor) -> torch.Tensor:
        """The distilled targets: ``(1 - weight) * landmarks_loc + weight * teachers`` (see module docstring)."""
        return torch.lerp(landmarks_loc, self.predict_loc(crop), self.weight)

    def check_unchanged(self, recorded: Sequence[Dict[str, Any]]) -> None:
        """Refuse to resume a run whose teacher files changed since it started (its targets would change)."""
        for old, new in zip(recorded, self.records):
            if old.get("sha256") != new["sha256"]:
                raise ValueError(f"teacher {new['teacher']!r} ({new['path']}) is not the file this run started with "
                                 f"(sha256 {str(old.get('sha256'))[:12]}..., now {new['sha256'][:12]}...); restore "
                                 "it or start a new run")


def teacher_sentence(distill: Dict[str, Any], records: Sequence[Dict[str, Any]] = ()) -> str:
    """One sentence for a model card naming the teachers and the blend (empty when distillation was off)."""
    teachers = list(distill.get("teachers") or [])
    weight = float(distill.get("weight", 0.0) or 0.0)
    if not teachers or weight <= 0:
        return ""
    names = [f"`{r['teacher']}` (sha256 {r['sha256'][:12]})" for r in records] if records else \
        [f"`{t}`" for t in teachers]
    return (f"Distilled: each training sample's target landmarks were {1 - weight:g} x the annotation + {weight:g} x "
            f"the mean prediction of {', '.join(names)} on the same augmented crop (`glsr.train.teacher`). The "
            "weights also inherit the licence of the teachers' training data.")

