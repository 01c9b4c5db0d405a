"""Knowledge distillation of a glsr training run: ``python -m benchmarks.distill``.

A research tool beside the package (formerly ``glsr train --teacher``): trained glsr models (the *teachers*)
predict the landmarks of every augmented training crop, and each sample's target landmarks become ``(1 - weight)
* annotation + weight * mean of the teachers' predictions`` (Hinton et al. 2015, as regression targets). It plugs
into the trainer's target hook (:mod:`glsr.train.hooks`) and otherwise runs ``glsr train`` as it is, with glsr's
own arguments after ``--``::

    python -m benchmarks.distill --teacher small medium [--teacher-weight 0.5] -- --data 300w:DIR --out RUN ...
    python -m benchmarks.distill --teacher small medium -- --data 300w:DIR --out RUN --resume   # same teachers

Every shape target (and the local stage's STN target) follows from the blended landmarks; the reinit stage's
theta target stays the annotation's. ``--teacher-weight 0`` trains on the annotation alone, without teachers (as
``glsr train``). A ``--config`` file with the ``distill`` field of earlier glsr versions gives the teachers and
weight when the flags do not. The run records the teachers (file, checksum, variant), the command and the card's
sentence in its history (``target_hook``), so ``glsr ship RUN`` writes a card that says how it was distilled.

Conventions: a teacher reads the student's crop tensor as it is (same ``input_size``, ``crop_enlarge``, channel
order and pixel normalization, and the same landmark scheme; anything else is refused with the field named), in
eval mode and without gradients; its landmarks come out in crop pixels (x, y, pixel centres at integers) and are
mapped into the student's normalized loc frame with the same ``loc_from_crop`` the data set uses for the
annotation (:attr:`glsr.train.hooks.RunInfo.loc_from_crop`), so the blend is taken point by point in one frame. A
teacher trained on another box convention than the run's is refused: it would be read off its domain.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from glsr import geometry as geo
from glsr.digest import file_sha256
from glsr.models.checkpoint import load_checkpoint
from glsr.models.network import GLSRNet
from glsr.models.registry import VariantConfig
from glsr.paths import portable
from glsr.schemes import LandmarkScheme
from glsr.shipped import resolve_model
from glsr.train.augment import loc_from_crop_pixels, preprocess_metadata
from glsr.train.hooks import RunInfo

TOOL = "python -m benchmarks.distill"
DEFAULT_WEIGHT = 0.5
"""Share of the teachers in the targets when ``--teacher-weight`` is not given (as ``glsr train --teacher`` had)."""
CROP_FIELDS = ("input_size", "crop_enlarge", "channel_order", "pixel_mean", "pixel_std")
"""What a teacher must share with the student to read its crop: the crop's size and context and the normalization
(:func:`glsr.train.augment.preprocess_metadata`)."""


def teacher_path(spec: str) -> Path:
    """The checkpoint file a teacher (a file or a shipped model's name) stands for; one-line errors naming it."""
    try:
        path = resolve_model(spec)
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"teacher {spec!r}: {e}") from None
    if not path.is_file():
        raise FileNotFoundError(f"teacher {spec!r}: {path} is not a file (give a glsr checkpoint file or a shipped "
                                "name: small, medium, ...)")
    return path


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
        want = preprocess_metadata(student, scheme)
        models, records = [], []
        for spec in specs:
            path = teacher_path(spec)
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


def check_weight(weight: Any) -> float:
    """``weight`` as a float in 0..1; ``ValueError`` otherwise (NaN too)."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
        raise ValueError(f"--teacher-weight {weight}: give a share in 0..1 (0 = the annotation alone, 1 = the "
                         "teachers alone)")
    return float(weight)


def distill_command(teachers: Sequence[str], weight: float) -> str:
    """The command that replaces ``glsr train`` to reproduce a distilled run (its card shows it)."""
    return f"{TOOL} --teacher {' '.join(portable(t) for t in teachers)} --teacher-weight {weight:g} --"


def teacher_sentence(weight: float, records: Sequence[Dict[str, Any]]) -> str:
    """The model card's sentence naming the teachers (without the training machine's folders), their checksums and
    the blend."""
    names = [f"`{portable(r['teacher'])}` (sha256 {r['sha256'][:12]})" for r in records]
    return (f"Distilled: each training sample's target landmarks were {1 - weight:g} x the annotation + {weight:g} x "
            f"the mean prediction of {', '.join(names)} on the same augmented crop (`{TOOL}`). The weights also "
            "inherit the licence of the teachers' training data.")


class Distill:
    """The trainer's target hook (:class:`glsr.train.hooks.TargetHook`) that blends the teachers' predictions into
    every batch's targets."""

    def __init__(self, teachers: Sequence[str], weight: float = DEFAULT_WEIGHT):
        if isinstance(teachers, (str, os.PathLike)):
            raise ValueError(f"teachers must be a list of model files, got the single string {teachers!r}")
        self.specs = [str(t) for t in teachers]
        if not self.specs:
            raise ValueError("distillation needs at least one teacher (--teacher W [W ...])")
        self.weight = check_weight(weight)
        self.teachers: Optional[Teachers] = None

    def start(self, run: RunInfo, recorded: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        """Load the teachers for ``run``; on a resume, refuse other teachers, another weight or a changed teacher
        file (and keep the record the run started with)."""
        self.teachers = Teachers.load(self.specs, self.weight, run.variant, run.scheme,
                                      run.box_convention).to(run.device, run.channels_last)
        record = {"tool": TOOL, "command": distill_command(self.specs, self.weight),
                  "card": teacher_sentence(self.weight, self.teachers.records), "weight": self.weight,
                  "teachers": self.teachers.records}
        if recorded is None:
            return record
        was = [str(t.get("teacher")) for t in recorded.get("teachers", [])], recorded.get("weight")
        if recorded.get("tool") != TOOL or was != (self.specs, self.weight):
            raise ValueError(f"the run in {run.out} was started with {recorded.get('command')}; resume it with the "
                             f"same teachers and weight (not {record['command']})")
        self.teachers.check_unchanged(recorded["teachers"])
        return recorded

    def __call__(self, crop: torch.Tensor, landmarks_loc: torch.Tensor) -> torch.Tensor:
        if self.teachers is None:
            raise RuntimeError("Distill.start was not called")
        return self.teachers.blend(crop, landmarks_loc)


# ------------------------------------------------------------------------------------------ command line


def split_argv(argv: Sequence[str]) -> Tuple[argparse.Namespace, List[str]]:
    """``(this tool's options, glsr train's arguments)``: those after ``--``, or the ones this tool does not know."""
    ap = argparse.ArgumentParser(
        prog=TOOL, allow_abbrev=False, usage=f"{TOOL} --teacher W [W ...] [--teacher-weight F] -- GLSR_TRAIN_ARGS",
        description="Train a glsr run whose target landmarks blend the annotation with the mean prediction of trained "
                    "models (knowledge distillation; formerly glsr train --teacher).",
        epilog="GLSR_TRAIN_ARGS: what glsr train takes (glsr train --help-all), e.g. --data 300w:DIR --out RUN; "
               "--resume continues a run given the same teachers and weight. glsr ship RUN ships it with a card "
               "that names the teachers.")
    ap.add_argument("--teacher", nargs="+", metavar="W",
                    help="trained glsr models (files or shipped names, e.g. small medium) whose mean prediction on "
                         "each augmented crop is blended into its target landmarks; they must read the same crop as "
                         "the trained variant (default: the distill field of a --config of earlier glsr versions)")
    ap.add_argument("--teacher-weight", type=float, metavar="F",
                    help=f"share of the teachers in the target landmarks, 0..1 (default {DEFAULT_WEIGHT:g})")
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return ap.parse_args(argv[:i]), argv[i + 1:]
    return ap.parse_known_args(argv)


def parse(argv: Sequence[str]) -> Tuple[Optional[Distill], Any, argparse.Namespace]:
    """``(hook or None, TrainConfig, glsr train's parsed arguments)`` of a command line; ``ValueError`` for bad use.
    The hook is ``None`` for ``--teacher-weight 0`` (the annotation alone, as ``glsr train``)."""
    from glsr.cli import build_parser, option_problem
    from glsr.train.cli import config_from_args
    from glsr.train.config import TrainConfig, read_json_object

    own, rest = split_argv(argv)
    parser = build_parser()
    args, extras = parser.parse_known_args(["train", *rest])
    if extras:
        raise ValueError(f"glsr train does not take {' '.join(extras)}")
    problem = option_problem(parser, args)
    if problem:
        raise ValueError(problem)
    if args.recipe:
        raise ValueError("--recipe makes a shipped model as its recipe says; distill a single run (give its "
                         "settings with --config / --set)")
    teachers, weight, base = own.teacher, own.teacher_weight, None
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        fields = read_json_object(path, "TrainConfig fields")
        legacy = fields.pop("distill", None) or {}
        if not isinstance(legacy, dict):
            raise ValueError(f"--config {path}: distill: expected an object of teachers and weight")
        teachers = teachers or list(legacy.get("teachers") or [])
        weight = weight if weight is not None else legacy.get("weight")
        try:
            base = TrainConfig.from_dict(fields)
        except (TypeError, ValueError) as e:
            raise ValueError(f"--config {path}: {e}") from None
    if not teachers:
        raise ValueError("give the teachers: --teacher W [W ...] (glsr model files or shipped names, e.g. small "
                         "medium)")
    weight = check_weight(DEFAULT_WEIGHT if weight is None else weight)
    cfg = config_from_args(args, base)
    return (Distill(teachers, weight) if weight > 0 else None), cfg, args


def main(argv: Optional[Sequence[str]] = None) -> int:
    from glsr.train.trainer import train

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        hook, cfg, args = parse(argv)
        for spec in hook.specs if hook is not None else ():
            teacher_path(spec)  # a missing teacher is refused before the run folder is made
        if hook is None:
            print(f"{TOOL}: --teacher-weight 0 is the annotation alone: training without teachers, as glsr train",
                  file=sys.stderr)
        final = train(cfg, args.out, resume=args.resume, target_hook=hook)
    except KeyboardInterrupt:
        print(f"\n{TOOL}: interrupted; nothing half-written was left (--resume continues from the last saved state)",
              file=sys.stderr)
        return 130
    except (OSError, ValueError) as e:
        print(f"{TOOL}: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {final}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
