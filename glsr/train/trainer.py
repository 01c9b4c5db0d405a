"""The four-stage training of Section 4.1 in one resumable, optionally distributed, run.

Stages (the paper's "steps"; :func:`plan_stages` skips those a variant lacks):

1. ``reinit``  — global reinit net alone, supervised STN loss (Eq. 3) against theta*_g (Algorithm 1);
2. ``global``  — global regressor (both cascade stages for b2), reinit frozen, Eq. 5 (or Eq. 8);
3. ``local``   — local reinit nets (Eq. 3 against theta*_l) and local regressors from scratch (Eq. 6 / Eq. 8),
   global stage frozen;
4. ``finetune`` — everything end to end, no STN losses, learning rate 0.001.

b1 / b2 train only stage 2; ``large`` and ``gsr`` have no stage 3.

Conventions
-----------
* Frames, thetas and targets: :mod:`glsr.train.targets`. Ground truth enters as loc-frame landmarks; the face-
  frame target is ``S*_g = theta_g^{-1}(S*)`` with the network's own ``theta_g`` (Eq. 4), so the regressor is
  always supervised in the face it actually sees; local targets use the network's own (detached) ``theta_l``.
* While an STN loss supervises a reinit net, that net learns from it alone (stage 1; the local reinit nets'
  outputs are detached from Eq. 6 in stage 3); in ``finetune`` the reinit nets learn from the propagated errors
  at ``reinit_lr_scale`` times the stage's learning rate.
* Frozen modules are put in ``eval`` mode (BatchNorm statistics stay fixed) and get no gradient.
* Determinism: model init from ``torch.manual_seed(seed)``; data order from ``(seed, stage, epoch)``; every
  sample's augmentation from ``(seed, stage, epoch, index)``. The resumable state (``last.pt``) holds model,
  optimizer, scheduler, RNG states, stage / epoch / batch position and the epoch's running loss sums, written
  atomically at every epoch end (and every ``save_every`` optimizer steps); ``--resume`` continues from it and
  ends with the weights an uninterrupted run ends with.
* Distributed: under ``torchrun`` (``WORLD_SIZE > 1``) each process trains ``batch_size / world`` samples of
  every global batch with ``DistributedDataParallel`` (gloo on CPU, nccl on CUDA); loss statistics are
  all-reduced every step so that every rank takes the same STN switch decisions; rank 0 writes files.
* Outputs in ``out``: ``last.pt`` (resumable state), ``stage<k>-<name>.pt`` and ``model.pt`` (glsr
  checkpoints, loadable by every runtime; ``model.pt`` is the stage that scored the lowest held-out NME when there
  is a held-out set, else the last stage; ``summary.json`` says which under ``selected``), ``metrics.jsonl`` (one
  JSON object per line: ``start``, ``step``, ``epoch``, ``stage``, ``done`` events), ``config.json``,
  ``summary.json``; TensorBoard events in ``tb/`` when the ``tensorboard`` package is importable.
* On CPU the model and its input crops use the ``channels_last`` memory layout (NHWC convolutions: about 1.6x
  faster training steps for ``small``, ``benchmarks/studies/train_throughput.py``); weights and results are the
  same as with the default layout up to float rounding.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from glsr import atomic
from glsr.models import create_model, get_variant
from glsr.models.backbones import MNV2_LAYOUTS, MobileNetV2Regressor
from glsr.models.checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, atomic_torch_save, check_checkpoint,
                                   model_from_checkpoint, save_checkpoint, torch_load_safe, upgrade_weights)
from glsr.models.network import GLSRNet
from glsr.models.registry import GEOMETRY_FIELDS, VariantConfig
from glsr.models.widen import widen_features
from glsr.train.grow import grow
from glsr.train.lineage import init_lineage
from glsr.schemes import LandmarkScheme
from glsr.train import targets as tg
from glsr.train.augment import AugmentedFaces, Augmenter, BoxStats, get_annotation
from glsr.train.config import RUNTIME_ONLY_FIELDS, STAGE_NAMES, StageConfig, TrainConfig
from glsr.train.evaluate import EvalItem, dataset_scheme, eval_items, mean_shape_predictions, open_faces, \
    predict_records, score
from glsr.train.losses import ShapeLoss, interocular, stn_loss
from glsr.train.teacher import Teachers
from glsr.train.runfiles import (CONFIG_FILE, GROWN_FILE, METRICS_FILE, MODEL_FILE, STATE_FILE, SUMMARY_FILE,
                                 stage_file)
from glsr.train.runstate import (TrainingDivergedError, check_finite_model, check_finite_outputs, diverged_message,
                                 load_resumable, numpy_rng_state, run_folder_lock, set_numpy_rng_state)

STATE_FORMAT = "glsr-train-state"
STAGE_EPOCH_STRIDE = 1_000_000
"""Augmentation epoch key = stage index x this + epoch: every (stage, epoch) draws its own perturbations."""
SHUFFLE_STREAM = 7
"""Extra seed word separating the shuffling stream from the augmentation stream."""
PROCEDURAL_VAL_SEED_OFFSET = 1
"""Procedural held-out faces use generator seed ``seed + this`` (and the ``test`` split)."""

STN_TERMS = ("stn_g", "stn_l")


# ------------------------------------------------------------------------------------------ stage planning


@dataclass(frozen=True)
class StagePlan:
    """One stage to run: which sub-modules of :class:`GLSRNet` train, which loss terms are on."""

    index: int
    name: str
    epochs: int
    lr: float
    trainable: Tuple[str, ...]
    terms: Tuple[str, ...]
    lr_scales: Tuple[Tuple[str, float], ...] = ()

    def lr_scale(self, module: str) -> float:
        return dict(self.lr_scales).get(module, 1.0)


REINIT_MODULES = ("reinit", "local_reinit")


def plan_stages(vcfg: VariantConfig, stages: Sequence[StageConfig], reinit_lr_scale: float = 1.0,
                allow_empty: bool = False) -> List[StagePlan]:
    """The stages of Section 4.1 that apply to a variant (stages with 0 epochs are dropped).

    ``reinit_lr_scale`` multiplies the learning rate of the reinit nets in the end-to-end ``finetune`` stage,
    where they learn from the errors propagated back through the samplers alone. ``allow_empty``: no stage at all
    is a valid plan (a run that only grows its start, :mod:`glsr.train.grow`).
    """
    reg = ("regress", "regress2") if vcfg.cascade == 2 else ("regress",)
    loc = ("local_reinit", "local_regress")
    spec: Dict[str, Optional[Tuple[Tuple[str, ...], Tuple[str, ...]]]] = {
        "reinit": (("reinit",), ("stn_g",)) if vcfg.global_reinit else None,
        "global": (reg, ("global",)),
        "local": (loc, ("stn_l", "local")) if vcfg.local else None,
        "finetune": ((("reinit",) if vcfg.global_reinit else ()) + reg + (loc if vcfg.local else ()),
                     ("global",) + (("local",) if vcfg.local else ()))
        if (vcfg.global_reinit or vcfg.local) else None,
    }
    plans = []
    for i, (name, sc) in enumerate(zip(STAGE_NAMES, stages)):
        s = spec[name]
        if s is None or sc.epochs == 0:
            continue
        scales = tuple((m, reinit_lr_scale) for m in REINIT_MODULES if m in s[0]) if name == "finetune" else ()
        plans.append(StagePlan(i, name, sc.epochs, sc.lr, s[0], s[1], scales))
    if not plans and not allow_empty:
        raise ValueError(f"variant {vcfg.name!r} has no stage with epochs > 0")
    return plans


# ------------------------------------------------------------------------------------------ distributed


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    device: str = "cpu"

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the ``torchrun`` process group when ``WORLD_SIZE > 1`` (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    dev = f"cuda:{local_rank}" if use_cuda else "cpu"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local_rank, local_world, dev)


def _barrier(dist: DistInfo) -> None:
    if dist.world > 1:
        torch.distributed.barrier()


# ------------------------------------------------------------------------------------------ sampler


class ResumableSampler(Sampler):
    """Shuffled keys ``(epoch_key, index)`` of one epoch for one rank, starting at a batch offset.

    The permutation depends only on ``(seed, epoch_key)``; the first ``n_batches * batch * world`` indices are
    dealt round-robin to the ranks (rank ``r`` gets positions ``r, r + world, ...``), then cut into per-rank
    batches of ``batch``; iteration starts at batch ``start_batch`` (mid-epoch resume).
    """

    def __init__(self, n: int, batch: int, seed: int, epoch_key: int, rank: int = 0, world: int = 1,
                 start_batch: int = 0):
        self.n, self.batch, self.seed, self.epoch_key = n, batch, seed, epoch_key
        self.rank, self.world, self.start_batch = rank, world, start_batch
        self.n_batches = n // (batch * world)
        if self.n_batches == 0:
            raise ValueError(f"{n} training samples cannot fill one batch of {batch} x {world} process(es); "
                             "lower --batch-size or add samples")

    def indices(self) -> np.ndarray:
        perm = np.random.default_rng([self.seed, SHUFFLE_STREAM, self.epoch_key]).permutation(self.n)
        used = perm[: self.n_batches * self.batch * self.world]
        return used[self.rank::self.world][self.start_batch * self.batch:]

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        return iter([(self.epoch_key, int(i)) for i in self.indices()])

    def __len__(self) -> int:
        return (self.n_batches - self.start_batch) * self.batch


# ------------------------------------------------------------------------------------------ stage module


class StageModule(nn.Module):
    """Forward of one stage: batch in, dict of loss terms out (the unit wrapped by DDP)."""

    def __init__(self, model: GLSRNet, plan: StagePlan, loss: ShapeLoss, templates: Sequence[torch.Tensor],
                 local_transform: str, stn_active: Dict[str, bool]):
        super().__init__()
        self.model = model
        self.stn_active = stn_active  # shared with the trainer's position: switch-offs take effect at once
        self.plan = plan
        self.loss = loss
        self.templates = list(templates)
        self.local_transform = local_transform

    def forward(self, crop: torch.Tensor, landmarks_loc: torch.Tensor,
                theta_g_target: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        m = self.model
        scheme = m.scheme
        terms: Dict[str, torch.Tensor] = {}
        if self.plan.terms == ("stn_g",):
            b = crop.shape[0]
            loc = m._sample(crop, m.crop_from_loc.expand(b, 2, 3), m.grid_loc, m.cfg.loc_size)
            terms["stn_g"] = stn_loss(m.reinit(loc), theta_g_target)
            return terms
        live: Dict[str, torch.Tensor] = {}
        handle = None
        if "stn_l" in self.plan.terms and self.stn_active.get("stn_l", True):
            # while theta_l is supervised by Eq. 3 it learns from Eq. 3 alone (as theta_g in the reinit stage);
            # once the STN loss is off it follows the errors propagated back through the sampler
            def gate(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
                live["theta_l"] = output
                return output.detach()

            handle = m.local_reinit.register_forward_hook(gate)
        try:
            out = m(crop, intermediates=True)
        finally:
            if handle is not None:
                handle.remove()
        # Eq. 4 with the network's own theta_g, *not* detached: where the reinit net trains end to end (finetune)
        # the gradient then sees that moving the face frame moves the target too; the loss normalized by d is
        # invariant to the frame's scale, so no shortcut opens (detaching it made fine-tuning drift, measured)
        target_face = tg.to_frame(out["theta_g"], landmarks_loc)
        if "global" in self.plan.terms:
            terms["global"] = self.loss(out["shape_g"], target_face, m.mean_shape, interocular(target_face, scheme))
            if "theta_c" in out:  # b2: second cascade stage in its own re-cropped face
                target2 = tg.to_frame(out["theta_c"].detach(), target_face.detach())
                terms["global"] = terms["global"] + self.loss(out["shape_g2"], target2, m.mean_shape,
                                                              interocular(target2, scheme))
        if "stn_l" in self.plan.terms:
            theta_star = tg.local_theta_targets(target_face.detach(), self.templates, scheme, self.local_transform)
            terms["stn_l"] = stn_loss(live.get("theta_l", out["theta_l"]), theta_star)
        if "local" in self.plan.terms:
            # Eq. 6 on increments from the local initial shape S_l0, a fixed starting point (detached): theta_l
            # and the global shape learn from this loss only through the patch they select, never by moving
            # S_l0 (the target is mapped with the same detached theta_l, so moving S_l0 would be a shortcut)
            local_targets = tg.local_shape_targets(out["theta_l"].detach(), target_face.detach(), scheme)
            inits = [i.detach() for i in out["local_init"]]
            preds = [i0 + (s - i) for i0, s, i in zip(inits, out["local_shape"], out["local_init"])]
            terms["local"] = self.loss.parts(preds, local_targets, inits)
        return terms


# ------------------------------------------------------------------------------------------ helpers


def default_threads(dist: DistInfo) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, dist.local_world))


def make_optimizer(cfg: TrainConfig, groups: List[Dict[str, Any]], lr: float) -> torch.optim.Optimizer:
    """The stage's optimizer over ``groups`` (each with its own ``lr`` scale already applied), by ``cfg.optimizer``."""
    if cfg.optimizer == "adam":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def read_init(path: str | os.PathLike) -> Dict[str, Any]:
    """Tensors (and, for a glsr checkpoint, the variant config) of an ``--init`` file: a glsr checkpoint,
    ``{"state_dict": ...}`` or a bare state dict. Returns ``{"path", "state", "config", "extra", "blob"}``
    (``config`` and ``extra`` may be None; ``blob`` is the file's content as loaded)."""
    from glsr.shipped import resolve_model

    try:
        path = resolve_model(path)  # a file or a shipped model's name
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"--init: {e}") from None
    if not path.is_file():
        raise FileNotFoundError(f"--init file {path} does not exist")
    blob = torch_load_safe(path, "--init file")  # weights only: never runs code from the file
    if isinstance(blob, dict) and blob.get("format") == CHECKPOINT_FORMAT:
        blob = check_checkpoint(blob, path)     # refuses newer versions, brings older ones up to date
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds no state dict")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    config = blob.get("config") if isinstance(blob, dict) and isinstance(blob.get("config"), dict) else None
    extra = blob.get("extra") if isinstance(blob, dict) and isinstance(blob.get("extra"), dict) else None
    return {"path": str(path), "state": state, "config": config, "extra": extra, "blob": blob}


def init_geometry(init: Optional[Dict[str, Any]], overrides: Dict[str, Any]) -> Dict[str, Any]:
    """Model overrides completed with the ``--init`` checkpoint's geometry (:data:`GEOMETRY_FIELDS`) wherever the
    run does not set a field: the copied weights only mean what they were trained to mean in that geometry."""
    out = dict(overrides)
    if init is not None and init.get("config"):
        for name in GEOMETRY_FIELDS:
            if name not in out and name in init["config"]:
                out[name] = init["config"][name]
    return out


def head_keys(model: GLSRNet) -> Tuple[str, ...]:
    """State-dict names of the global regressor's last layer (its outputs are offsets from the mean shape)."""
    last = len(model.regress.pts_net) - 1
    return tuple(f"regress.pts_net.{last}.{n}" for n in ("weight", "bias"))


def init_mean_shape(model: GLSRNet, init: Dict[str, Any]) -> Optional[np.ndarray]:
    """The ``--init`` file's mean shape when its regressor head or its global reinit net fits ``model``: the head
    predicts offsets from that mean, and the reinit net defines the face frame the mean is expressed in."""
    state, own = init["state"], model.state_dict()
    mean = state.get("mean_shape")
    if mean is None or tuple(mean.shape) != tuple(own["mean_shape"].shape):
        return None
    reinit = tuple(k for k in own if k.startswith("reinit."))
    for keys in (head_keys(model), reinit):
        if keys and all(k in state and tuple(state[k].shape) == tuple(own[k].shape) for k in keys):
            return mean.double().numpy()
    return None


INIT_MIN_SHARE = 0.5
"""An ``--init`` file whose tensors fill less than this share of the model *and* of which less than this share
fits is refused: it is another variant's checkpoint (8 of 321 tensors copied said nothing before)."""


def load_init_weights(model: nn.Module, init: "str | os.PathLike | Dict[str, Any]") -> Dict[str, int]:
    """Copy tensors from a local file (or a :func:`read_init` result) into ``model`` wherever the name — as is,
    or under ``regress.`` (a bare backbone) — and the shape match; a flatten head's first layer trained at a
    larger input size is re-laid out for this one (``MobileNetV2Regressor.adapt_input_weight``). The mean shape is
    never copied here (see :func:`init_mean_shape`). Returns ``{"copied": k, "adapted": a, "skipped": m}``."""
    init = init if isinstance(init, dict) else read_init(init)
    state, path = init["state"], init["path"]
    own = model.state_dict()
    copied = 0
    new, widened = widen_init(model, init)
    for k, v in state.items():
        if widened and k.startswith("regress.features."):
            continue  # a narrower backbone's trunk: carried over by widen_init, its names do not correspond
        for name in (k, "regress." + k):
            if name in own and name != "mean_shape" and torch.is_tensor(v) and own[name].shape == v.shape:
                new[name] = v
                copied += 1
                break
    adapted = 0
    for prefix, module in model.named_modules():  # flatten heads trained at a larger input size (a faster variant)
        key = f"{prefix}.pts_net.0.weight"
        if hasattr(module, "adapt_input_weight") and key in state and key not in new and key in own:
            weight = module.adapt_input_weight(state[key])
            if weight is not None and weight.shape == own[key].shape:
                new[key] = weight
                adapted += 1
    if not copied and not widened:
        raise ValueError(f"no tensor of {path} matches the model by name and shape")
    used, tensors = copied + adapted, [k for k in own if k != "mean_shape"]
    if not widened and used < INIT_MIN_SHARE * len(state) and used < INIT_MIN_SHARE * len(tensors):
        source = (init.get("config") or {}).get("name")
        raise ValueError(f"--init {path}{f' (variant {source!r})' if source else ''} fits variant "
                         f"{getattr(getattr(model, 'cfg', None), 'name', '?')!r} poorly: {used} of its {len(state)} "
                         f"tensors match by name and shape, {len(tensors) - used} of the model's {len(tensors)} would "
                         "start untrained; train the --init file's own variant (--variant), or give a checkpoint of "
                         "this variant")
    model.load_state_dict(new, strict=False)
    report: Dict[str, Any] = {"copied": copied, "adapted": adapted, "skipped": len(state) - copied - adapted,
                              "model_tensors": len(own)}
    if widened:
        report["widened"] = widened
    return report


def init_summary(report: Dict[str, Any]) -> str:
    """One line on what ``--init`` gave the model (a :func:`load_init_weights` report): how many of its tensors
    came from the file, so a start that matched little (another variant's file) is seen at once."""
    taken = report["copied"] + report["adapted"]
    text = (f"{taken} of the model's {report['model_tensors']} tensors taken from the file "
            f"({report['copied']} copied, {report['adapted']} re-laid out; {report['skipped']} of the file's tensors "
            "unused)")
    if report.get("widened"):
        text += f"; trunk widened from {report['widened'].get('from')} ({report['widened'].get('rows')} rows)"
    return text


def widen_init(model: nn.Module, init: Dict[str, Any]) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """The global regressor's trunk from a glsr checkpoint of a narrower MobileNetV2-style backbone (``small``
    into ``medium``, :mod:`glsr.models.widen`): ``(tensors, report)``, or ``({}, {})`` when the ``--init`` file
    is not such a checkpoint."""
    src_backbone = (init.get("config") or {}).get("backbone")
    regress = getattr(model, "regress", None)
    dst_backbone = getattr(getattr(model, "cfg", None), "backbone", None)
    if (src_backbone == dst_backbone or src_backbone not in MNV2_LAYOUTS
            or not isinstance(regress, MobileNetV2Regressor)):
        return {}, {}
    tensors, report = widen_features(init["state"], *MNV2_LAYOUTS[src_backbone], regress,
                                     src_prefix="regress.features.", dst_prefix="regress.features.")
    return (tensors, {"from": src_backbone, **report}) if report["rows"] else ({}, {})


def training_box_convention(cfg: TrainConfig, dataset: Any) -> str:
    """The face-box convention a run trains on (:mod:`glsr.runtime.detectors` names): ``procedural`` for
    procedural faces, ``tight`` for readers using the tight box of the landmarks, ``wflw`` for WFLW's annotation
    rectangles, else ``""`` (unknown: the detector then falls back to its default)."""
    if cfg.is_procedural:
        return "procedural"
    source = getattr(dataset, "box_source", None)
    if source == "tight":
        return "tight"
    if source == "annotation" and cfg.data.split(":", 1)[0].strip().lower() == "wflw":
        return "wflw"
    return ""


def _rng_state() -> Dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": numpy_rng_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(s: Optional[Dict[str, Any]]) -> None:
    if s is None:  # resumed from a stage checkpoint (runstate.fallback_state): no RNG state was saved there
        return
    torch.set_rng_state(s["torch"])
    set_numpy_rng_state(s["numpy"])
    random.setstate(s["python"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def config_differences(a: TrainConfig, b: TrainConfig) -> List[str]:
    """Fields (other than :data:`RUNTIME_ONLY_FIELDS`) on which two configs differ."""
    da, db = a.to_dict(), b.to_dict()
    return sorted(k for k in da if k not in RUNTIME_ONLY_FIELDS and da[k] != db.get(k))


class MetricsLog:
    """Append-only JSONL log (rank 0 only), mirrored to TensorBoard when importable and enabled."""

    def __init__(self, path: Path, enabled: bool, tensorboard: bool):
        self.path = path
        self.enabled = enabled
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self.tb = None
            else:
                self.tb = SummaryWriter(str(path.parent / "tb"))

    def write(self, event: str, **fields: Any) -> None:
        if not self.enabled:
            return
        rec = {"event": event, "time": round(time.time(), 3), **fields}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if self.tb is not None and "global_step" in fields:
            for k, v in fields.items():
                if isinstance(v, (int, float)) and k not in ("global_step", "epoch", "batch"):
                    self.tb.add_scalar(f"{fields.get('stage', 'run')}/{event}/{k}", v, fields["global_step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_events(run: str | os.PathLike) -> List[Dict[str, Any]]:
    """The events a run's :class:`MetricsLog` wrote (``RUN/metrics.jsonl``, one dict per line, in order); ``[]``
    when the run has none."""
    path = Path(run) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


# ------------------------------------------------------------------------------------------ trainer


class Trainer:
    """Builds data, targets and model from a :class:`TrainConfig` and runs (or resumes) the stages."""

    def __init__(self, cfg: TrainConfig, out: str | os.PathLike, resume: bool = False):
        self.out = Path(out)
        self.dist = init_distributed(cfg.device)
        state = None
        state_path = self.out / STATE_FILE
        if resume:
            if not state_path.is_file():
                raise FileNotFoundError(f"--resume: no training state {state_path}")
            state = load_resumable(self.out, state_path, STATE_FORMAT)  # weights only; falls back to a stage ckpt
            saved = TrainConfig.from_dict(state["config"])
            diff = config_differences(saved, cfg.resolved())
            if diff:
                raise ValueError(f"--resume with a different config ({', '.join(diff)}); the run in {self.out} "
                                 f"was started with {CONFIG_FILE}")
            cfg = replace(saved, **{k: getattr(cfg, k) for k in RUNTIME_ONLY_FIELDS})
        elif state_path.is_file():
            raise ValueError(f"{self.out} already holds a training run ({STATE_FILE}); pass --resume to continue "
                             "it or choose another --out")
        self.cfg = cfg.resolved()
        self.state = state
        torch.set_num_threads(self.cfg.threads or default_threads(self.dist))
        self.device = torch.device(self.dist.device)
        self.use_amp = bool(self.cfg.amp and self.device.type == "cuda")
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
        _barrier(self.dist)
        self.log = MetricsLog(self.out / METRICS_FILE, self.dist.main, self.cfg.tensorboard)
        self._build()

    # -------------------------------------------------------------------------------------- setup
    def _build(self) -> None:
        cfg = self.cfg
        self.train_set = open_faces(cfg.data, cfg.train_split, cfg.samples, cfg.seed if cfg.is_procedural else None,
                                    cfg.annotation_noise if cfg.is_procedural else None, cfg.box_source,
                                    skip_bad=cfg.skip_bad)
        self.scheme: LandmarkScheme = dataset_scheme(self.train_set)
        init = read_init(cfg.init) if cfg.init else None
        self.vcfg = get_variant(cfg.variant, **init_geometry(init, cfg.model.as_kwargs()))
        annotations = [get_annotation(self.train_set, i) for i in range(len(self.train_set))]
        self.box_stats = BoxStats.measure(annotations, cfg.augment)
        self.reference = tg.reference_shape(np.stack([a[0] for a in annotations]), self.scheme,
                                            cfg.targets.reference_iterations, cfg.targets.symmetric_reference)
        self.margin = cfg.targets.face_margin or self.vcfg.box_scale
        self.augmenter = Augmenter(self.vcfg, self.scheme, cfg.augment, self.box_stats, cfg.seed)
        self.data = AugmentedFaces(self.train_set, self.augmenter, cfg.augment.samples_per_image,
                                   self.reference if self.vcfg.global_reinit else None, self.margin,
                                   cfg.targets.global_transform, cache=cfg.is_procedural)
        self.mean_shape = tg.mean_shape(self.data.loc_shapes(cfg.targets.mean_shape_samples), self.reference,
                                        self.margin, cfg.targets.global_transform, self.vcfg.global_reinit)
        torch.manual_seed(cfg.seed)
        self.model = create_model(self.vcfg, self.scheme, mean_shape=self.mean_shape)
        self.init_report = None
        self.lineage = init_lineage(cfg.init, init["extra"]) if init is not None else []
        if init is not None:
            adopted = init_mean_shape(self.model, init)
            if adopted is not None:  # the copied head predicts offsets from its own mean: rebuild around it
                self.mean_shape = adopted
                torch.manual_seed(cfg.seed)
                self.model = create_model(self.vcfg, self.scheme, mean_shape=self.mean_shape)
            self.init_report = {**load_init_weights(self.model, init), "mean_shape": adopted is not None,
                                "geometry": {k: getattr(self.vcfg, k) for k in GEOMETRY_FIELDS}}
            if self.dist.main:
                print(f"[glsr train] --init {cfg.init}: {init_summary(self.init_report)}", file=sys.stderr)
        if cfg.grow.passes:
            widened = (self.init_report or {}).get("widened")
            if not widened:
                raise ValueError("--grow-passes needs --init with a checkpoint of a narrower MobileNetV2 variant to "
                                 "widen from (e.g. --variant medium --init a small checkpoint)")
            if self.state is None:  # a resumed run's weights come from its state
                narrow = model_from_checkpoint(check_checkpoint(init["blob"], cfg.init), cfg.init)  # read once above
                self.init_report["grow"] = grow(self.model, narrow, self.data, widened["rows"], cfg.grow, cfg.seed)
        self.model.box_convention = training_box_convention(cfg, self.train_set)
        self.teachers: Optional[Teachers] = None
        if cfg.distill.active:
            self.teachers = Teachers.load(cfg.distill.teachers, cfg.distill.weight, self.vcfg, self.scheme,
                                          self.model.box_convention).to(self.device, self.device.type == "cpu")
        self.model.to(self.device)
        if self.device.type == "cpu":  # NHWC convolutions: 1.6x faster training steps on CPU (measured)
            self.model.to(memory_format=torch.channels_last)
        self.templates = [torch.tensor(t, dtype=torch.float32, device=self.device)
                          for t in tg.part_templates(self.mean_shape, self.scheme, self.vcfg.part_margin)]
        self.plans = plan_stages(self.vcfg, cfg.stages, cfg.reinit_lr_scale, allow_empty=cfg.grow.passes > 0)
        self.loss = ShapeLoss.from_config(cfg.loss)
        self.world_batch = cfg.batch_size
        if self.world_batch % self.dist.world:
            raise ValueError(f"batch size {self.world_batch} is not divisible by {self.dist.world} processes")
        self.batch = self.world_batch // self.dist.world
        self.val_items: Optional[List[EvalItem]] = None
        if self.dist.main:
            val_spec = cfg.val_data or (cfg.data if cfg.is_procedural else None)
            if val_spec:
                proc = val_spec.split(":", 1)[0].strip().lower() == "procedural"
                split = cfg.val_split or ("test" if proc else None)
                val_set = open_faces(val_spec, split, cfg.val_samples,
                                     cfg.seed + PROCEDURAL_VAL_SEED_OFFSET if proc else None,
                                     box_source=None if proc else cfg.box_source, skip_bad=cfg.skip_bad)
                self.val_items, _ = eval_items(val_set, "annotation", cfg.val_limit)

    # -------------------------------------------------------------------------------------- helpers
    def _set_trainable(self, plan: StagePlan) -> List[Dict[str, Any]]:
        """Freeze (and put in eval mode) what the stage does not train; optimizer parameter groups."""
        self.model.train()
        for p in self.model.parameters():
            p.requires_grad_(False)
        groups: Dict[float, List[nn.Parameter]] = {}
        for name, module in self.model.named_children():
            if name in plan.trainable:
                for p in module.parameters():
                    p.requires_grad_(True)
                    groups.setdefault(plan.lr_scale(name), []).append(p)
            else:
                module.eval()
        if self.cfg.freeze_batchnorm:  # running statistics, not the batch's: train mode computes what eval mode does
            for module in self.model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return [{"params": ps, "lr": plan.lr * scale} for scale, ps in sorted(groups.items(), reverse=True)]

    def _iters_per_epoch(self) -> int:
        return len(self.data) // self.world_batch

    def _stage_total(self, plan: StagePlan) -> int:
        total = plan.epochs * self._iters_per_epoch()
        return min(total, self.cfg.max_steps) if self.cfg.max_steps else total

    def _save_state(self, pos: Dict[str, Any], optimizer: Any = None, scheduler: Any = None,
                    scaler: Any = None) -> None:
        check_finite_model(self.model, f"before {self.out / STATE_FILE} was written")
        try:  # finite weights can still give NaN landmarks in eval mode (BatchNorm statistics blown up)
            stage = self.plans[min(pos["plan"], len(self.plans) - 1)].name
            check_finite_outputs(self.model, f"in stage {stage} at step {pos['global_step']}", self.out)
        except TrainingDivergedError as e:
            self.log.write("diverged", global_step=pos.get("global_step"), reason=str(e))
            raise
        if not self.dist.main:
            return
        atomic_torch_save({
            "format": STATE_FORMAT, "version": CHECKPOINT_VERSION, "config": self.cfg.to_dict(), "position": dict(pos),
            "model": self.model.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": _rng_state(), "history": self.history,
        }, self.out / STATE_FILE)

    def _checkpoint_extra(self) -> Dict[str, Any]:
        return {"train_config": self.cfg.to_dict(), "box_stats": self.box_stats.to_dict(),
                "reference_shape": self.reference.tolist(), "mean_shape": self.mean_shape.tolist(),
                "history": self.history, "lineage": self.lineage}

    def _validate(self, path: Path) -> Optional[Dict[str, Any]]:
        if self.val_items is None:
            return None
        pred = predict_records(path, self.val_items, threads=torch.get_num_threads())
        s = score(pred, np.stack([it.gt for it in self.val_items]), self.scheme)
        return {k: v for k, v in s.items() if k != "errors"}

    def _reduce(self, values: torch.Tensor) -> torch.Tensor:
        if self.dist.world > 1:
            torch.distributed.all_reduce(values)
            values = values / self.dist.world
        return values

    # -------------------------------------------------------------------------------------- run
    def run(self) -> Path:
        """Run every remaining stage; returns the path of the final glsr checkpoint (``model.pt``)."""
        cfg, dist = self.cfg, self.dist
        pos = {"plan": 0, "epoch": 0, "batch": 0, "stage_step": 0, "global_step": 0, "stage_complete": False,
               "stn_active": {t: True for t in STN_TERMS}, "sums": {}, "count": 0}
        self.history: Dict[str, Any] = {"stages": []}
        resumed = self.state is not None
        if resumed:
            pos = dict(self.state["position"])
            self.history = self.state["history"]
            upgrade_weights(self.vcfg, self.state["model"], self.state.get("version", 1))
            self.model.load_state_dict(self.state["model"])
            _set_rng_state(self.state["rng"])
            if self.teachers is not None:
                self.teachers.check_unchanged(self.history.get("teachers", []))
            self.log.write("resume", position={k: v for k, v in pos.items() if k != "sums"})
        else:
            if dist.main:
                atomic.write_text(self.out / CONFIG_FILE, cfg.to_json() + "\n")
            baseline = None
            if self.val_items is not None:
                b = score(mean_shape_predictions(self.model, np.stack([it.box for it in self.val_items])),
                          np.stack([it.gt for it in self.val_items]), self.scheme)
                baseline = {k: v for k, v in b.items() if k != "errors"}
            self.history["baseline"] = baseline
            if self.teachers is not None:
                self.history["teachers"] = self.teachers.records
            if dist.main and self.init_report and "grow" in self.init_report:
                # the grown start, scored like a stage: the start of seed runs to average (--init GROWN_FILE)
                path = self.out / GROWN_FILE
                save_checkpoint(self.model.eval(), path, extra=self._checkpoint_extra())
                self.history["grown"] = {"checkpoint": str(path), "val": self._validate(path)}
            self.log.write("start", variant=self.vcfg.name, scheme=self.scheme.name, world=dist.world,
                           stages=[p.name for p in self.plans], train_faces=len(self.train_set),
                           samples_per_epoch=len(self.data), batch=self.world_batch, box_stats=self.box_stats.to_dict(),
                           init=self.init_report, mean_shape_baseline=baseline, grown=self.history.get("grown"),
                           threads=torch.get_num_threads())
        progress_enabled = cfg.progress and dist.main
        while pos["plan"] < len(self.plans):
            plan = self.plans[pos["plan"]]
            if not pos["stage_complete"]:
                self._run_stage(plan, pos, resumed, progress_enabled)
                resumed = False
            self._finish_stage(plan, pos)
            pos = {**pos, "plan": pos["plan"] + 1, "epoch": 0, "batch": 0, "stage_step": 0, "stage_complete": False,
                   "stn_active": {t: True for t in STN_TERMS}, "sums": {}, "count": 0}
            self._save_state(pos)
            _barrier(dist)
        final = self.out / MODEL_FILE
        if dist.main:
            selected = select_stage(self.history["stages"])
            if selected is None:
                save_checkpoint(self.model, final, extra=self._checkpoint_extra())
            else:  # the stage that scored best on the held-out faces, not always the last one
                with open(selected["checkpoint"], "rb") as src, atomic.atomic_open(final, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            self.history["selected"] = None if selected is None else {
                "stage": selected["stage"], "checkpoint": selected["checkpoint"], "val_nme": selected["val"]["nme"]}
            summary = {"model": str(final), "variant": self.vcfg.name, "scheme": self.scheme.name,
                       "global_step": pos["global_step"], **self.history}
            atomic.write_text(self.out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
            self.log.write("done", model=str(final), global_step=pos["global_step"])
        self.log.close()
        _barrier(dist)
        return final

    def _run_stage(self, plan: StagePlan, pos: Dict[str, Any], resumed: bool, progress: bool) -> None:
        cfg, dist = self.cfg, self.dist
        groups = self._set_trainable(plan)
        trainable = [p for g in groups for p in g["params"]]
        optimizer = make_optimizer(cfg, groups, plan.lr)
        total = self._stage_total(plan)
        scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=max(total, 1),
                                                          power=cfg.poly_power)
        scaler = torch.amp.GradScaler("cuda") if self.use_amp else None
        if resumed and self.state.get("optimizer") is not None:
            optimizer.load_state_dict(self.state["optimizer"])
            scheduler.load_state_dict(self.state["scheduler"])
            if scaler is not None and self.state.get("scaler") is not None:
                scaler.load_state_dict(self.state["scaler"])
        module = StageModule(self.model, plan, self.loss, self.templates, cfg.targets.local_transform,
                             pos["stn_active"])
        runner: nn.Module = module
        if dist.world > 1:
            runner = nn.parallel.DistributedDataParallel(
                module, device_ids=[dist.local_rank] if self.device.type == "cuda" else None)
        iters = self._iters_per_epoch()
        if iters == 0:
            raise ValueError(f"{len(self.data)} training samples cannot fill one batch of {self.world_batch}")
        weights = {"stn_g": cfg.loss.stn_weight, "global": cfg.loss.global_weight, "stn_l": cfg.loss.local_stn_weight,
                   "local": cfg.loss.local_weight}
        stage_over = False
        while pos["epoch"] < plan.epochs and not stage_over:
            epoch_key = plan.index * STAGE_EPOCH_STRIDE + pos["epoch"]
            sampler = ResumableSampler(len(self.data), self.batch, cfg.seed, epoch_key, dist.rank, dist.world,
                                       pos["batch"])
            loader = DataLoader(self.data, batch_size=self.batch, sampler=sampler, drop_last=True,
                                num_workers=cfg.workers, pin_memory=self.device.type == "cuda")
            bar = _progress(progress, total=iters, initial=pos["batch"],
                            desc=f"{plan.name} {pos['epoch'] + 1}/{plan.epochs}")
            for batch in loader:
                crop = batch["crop"].to(self.device, non_blocking=True)
                if self.device.type == "cpu":
                    crop = crop.contiguous(memory_format=torch.channels_last)
                lm = batch["landmarks_loc"].to(self.device, non_blocking=True)
                if self.teachers is not None:
                    lm = self.teachers.blend(crop, lm)
                theta_t = batch["theta_g_target"].to(self.device) if "theta_g_target" in batch else None
                active = [t for t in plan.terms if t not in STN_TERMS or pos["stn_active"][t]]
                with _autocast(self.device, self.use_amp):
                    terms = runner(crop, lm, theta_t)
                loss = sum(weights[t] * terms[t].float() for t in active)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(trainable, cfg.grad_clip_norm or float("inf"))
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                names = sorted(terms)
                vals = self._reduce(torch.stack([terms[t].detach().float() for t in names]
                                                + [loss.detach(), grad_norm.detach().float()])).cpu()
                step_vals = {t: float(v) for t, v in zip(names + ["loss", "grad_norm"], vals.tolist())}
                if not np.isfinite(step_vals["loss"]) or (scaler is None and not np.isfinite(step_vals["grad_norm"])):
                    self.log.write("diverged", stage=plan.name, global_step=pos["global_step"] + 1, **step_vals)
                    raise TrainingDivergedError(diverged_message(self.out, plan.name, pos["global_step"] + 1, step_vals,
                                                                 scheduler.get_last_lr()[0]))
                for t, v in step_vals.items():
                    pos["sums"][t] = pos["sums"].get(t, 0.0) + v
                pos["count"] += 1
                pos["batch"] += 1
                pos["stage_step"] += 1
                pos["global_step"] += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{step_vals['loss']:.4f}")
                if cfg.log_every and pos["stage_step"] % cfg.log_every == 0:
                    self.log.write("step", stage=plan.name, epoch=pos["epoch"], batch=pos["batch"],
                                   global_step=pos["global_step"], lr=scheduler.get_last_lr()[0], **step_vals)
                if cfg.max_steps and pos["stage_step"] >= cfg.max_steps:
                    stage_over = True
                    break
                if cfg.save_every and pos["global_step"] % cfg.save_every == 0:
                    self._save_state(pos, optimizer, scheduler, scaler)
            if bar is not None:
                bar.close()
            means = {t: v / max(pos["count"], 1) for t, v in pos["sums"].items()}
            switched = []
            for t in STN_TERMS:
                if t in plan.terms and pos["stn_active"][t] and self._stn_off(means.get(t), pos["epoch"] + 1):
                    pos["stn_active"][t] = False
                    switched.append(t)
            self.log.write("epoch", stage=plan.name, epoch=pos["epoch"], global_step=pos["global_step"],
                           lr=scheduler.get_last_lr()[0], stn_switched_off=switched, **means)
            self.history.setdefault("epochs", []).append({"stage": plan.name, "epoch": pos["epoch"], **means})
            if not any(t not in STN_TERMS or pos["stn_active"][t] for t in plan.terms):
                stage_over = True  # the reinit stage's only loss is off: theta is close to its target
            pos.update(epoch=pos["epoch"] + 1, batch=0, sums={}, count=0)
            if stage_over:
                break
            self._save_state(pos, optimizer, scheduler, scaler)
        pos["stage_complete"] = True
        self._save_state(pos)

    def _stn_off(self, mean: Optional[float], epochs_done: int) -> bool:
        lc = self.cfg.loss
        if lc.stn_off_epoch is not None and epochs_done >= lc.stn_off_epoch:
            return True
        return lc.stn_off_threshold is not None and mean is not None and mean < lc.stn_off_threshold

    def _finish_stage(self, plan: StagePlan, pos: Dict[str, Any]) -> None:
        if self.dist.main:
            path = self.out / stage_file(plan.index + 1, plan.name)
            check_finite_model(self.model, f"in stage {plan.name}")
            save_checkpoint(self.model.eval(), path, extra=self._checkpoint_extra())
            val = self._validate(path)
            epochs = [e for e in self.history.get("epochs", []) if e["stage"] == plan.name]
            rec = {"stage": plan.name, "checkpoint": str(path), "global_step": pos["global_step"],
                   "train_loss": epochs[-1] if epochs else None, "val": val}
            self.history["stages"] = [s for s in self.history["stages"] if s["stage"] != plan.name] + [rec]
            self.log.write("stage", **rec)
            if self.cfg.progress:
                nme = f", held-out NME {100 * val['nme']:.2f}%" if val else ""
                print(f"[glsr train] stage {plan.name} done at step {pos['global_step']}{nme} -> {path}",
                      file=sys.stderr)
        _barrier(self.dist)


def select_stage(stages: Sequence[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The stage record with the lowest held-out NME (the earliest on a tie); ``None`` without validation."""
    scored = [s for s in stages if s.get("val") and np.isfinite(s["val"].get("nme", float("nan")))]
    return min(scored, key=lambda s: s["val"]["nme"]) if scored else None


def _progress(enabled: bool, total: int, initial: int, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)


def _autocast(device: torch.device, enabled: bool):
    if enabled:
        return torch.autocast(device_type=device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def train(cfg: TrainConfig, out: str | os.PathLike, resume: bool = False) -> Path:
    """Train (or ``resume``) a run into ``out``; returns the final checkpoint path. One process at a time writes a
    run folder (:func:`glsr.train.runstate.run_folder_lock`; a second one is refused)."""
    with run_folder_lock(out):
        trainer = Trainer(cfg, out, resume)
        try:
            return trainer.run()
        finally:
            if trainer.dist.world > 1 and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
