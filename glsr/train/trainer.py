"""The four-stage training of Section 4.1 in one resumable, optionally distributed, run.

Stages (the paper's "steps"; :func:`glsr.train.stages.plan_stages` skips those a variant lacks):

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

Parts: :mod:`glsr.train.stages` (stage plan, a stage's forward and loss terms), :mod:`glsr.train.optim`
(trainable groups, optimizer, schedule, one step), :mod:`glsr.train.sampler` (data order),
:mod:`glsr.train.distributed`, :mod:`glsr.train.init_weights` (``--init``), :mod:`glsr.train.eventlog`
(``metrics.jsonl``), :mod:`glsr.train.hooks` (the target hook a tool outside the package may pass); this module
keeps the :class:`Trainer` and :func:`train` and re-exports their public names.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from glsr import atomic
from glsr.boxes import data_convention
from glsr.models import create_model, get_variant
from glsr.models.checkpoint import CHECKPOINT_VERSION, atomic_torch_save, check_checkpoint, model_from_checkpoint, \
    save_checkpoint, upgrade_weights
from glsr.models.registry import GEOMETRY_FIELDS
from glsr.pose import pose_repeats, yaw_index
from glsr.schemes import LandmarkScheme
from glsr.train import targets as tg
from glsr.train.augment import AugmentedFaces, Augmenter, BoxStats, get_annotation, loc_from_crop_pixels
from glsr.train.config import RUNTIME_ONLY_FIELDS, TrainConfig, config_differences
from glsr.train.distributed import DistInfo, barrier, default_threads, init_distributed
from glsr.train.evaluate import EvalItem, dataset_scheme, eval_items, mean_shape_predictions, open_faces, \
    predict_records, score
from glsr.train.eventlog import MetricsLog, read_events
from glsr.train.grow import grow
from glsr.train.hooks import RECORD_KEY, RunInfo, TargetHook, check_resumed_record
from glsr.train.init_weights import (INIT_MIN_SHARE, head_keys, init_geometry, init_mean_shape, init_summary,
                                     load_init_weights, read_init, widen_init)
from glsr.train.lineage import init_lineage
from glsr.train.losses import ShapeLoss
from glsr.train.optim import autocast, make_optimizer, optimizer_step, stage_optimizer, trainable_groups
from glsr.train.runfiles import (CONFIG_FILE, GROWN_FILE, METRICS_FILE, MODEL_FILE, STATE_FILE, SUMMARY_FILE,
                                 stage_file)
from glsr.train.runstate import (TrainingDivergedError, check_finite_model, check_finite_outputs, diverged_message,
                                 load_resumable, rng_state, run_folder_lock, set_rng_state)
from glsr.train.sampler import SHUFFLE_STREAM, STAGE_EPOCH_STRIDE, ResumableSampler
from glsr.train.stages import REINIT_MODULES, STN_TERMS, StageModule, StagePlan, plan_stages, select_stage

__all__ = [  # this module's own names and those it re-exports from the modules the trainer was split into
    "CONFIG_FILE", "DistInfo", "GROWN_FILE", "INIT_MIN_SHARE", "METRICS_FILE", "MODEL_FILE", "MetricsLog",
    "PROCEDURAL_VAL_SEED_OFFSET", "REINIT_MODULES", "ResumableSampler", "SHUFFLE_STREAM", "STAGE_EPOCH_STRIDE",
    "STATE_FILE", "STATE_FORMAT", "STN_TERMS", "SUMMARY_FILE", "StageModule", "StagePlan", "TargetHook", "Trainer",
    "TrainingDivergedError", "config_differences", "default_threads", "head_keys", "init_distributed",
    "init_geometry", "init_mean_shape", "init_summary", "load_init_weights", "make_optimizer", "plan_stages",
    "read_events", "read_init", "select_stage", "stage_file", "train", "training_box_convention", "widen_init",
]

STATE_FORMAT = "glsr-train-state"
PROCEDURAL_VAL_SEED_OFFSET = 1
"""Procedural held-out faces use generator seed ``seed + this`` (and the ``test`` split)."""


def training_box_convention(cfg: TrainConfig, dataset: Any) -> str:
    """The face-box convention a run trains on: its data's (:func:`glsr.boxes.data_convention`, by the data's kind
    and the readers' ``box_source``)."""
    return data_convention("procedural" if cfg.is_procedural else cfg.data.split(":", 1)[0],
                           getattr(dataset, "box_source", None))


# ------------------------------------------------------------------------------------------ trainer


class Trainer:
    """Builds data, targets and model from a :class:`TrainConfig` and runs (or resumes) the stages. ``target_hook``
    rewrites every batch's target landmarks (:mod:`glsr.train.hooks`; ``None``: the annotation, as the paper)."""

    def __init__(self, cfg: TrainConfig, out: str | os.PathLike, resume: bool = False,
                 target_hook: Optional[TargetHook] = None):
        self.out = Path(out)
        self.target_hook = target_hook
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
        barrier(self.dist)
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
        repeats = None
        if cfg.augment.pose_oversample:
            repeats = pose_repeats(yaw_index(np.stack([a[0] for a in annotations]), self.scheme),
                                   cfg.augment.pose_oversample)
        self.data = AugmentedFaces(self.train_set, self.augmenter, cfg.augment.samples_per_image,
                                   self.reference if self.vcfg.global_reinit else None, self.margin,
                                   cfg.targets.global_transform, cache=cfg.is_procedural, repeats=repeats)
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
        self.hook_record: Optional[Dict[str, Any]] = None
        recorded = (self.state["history"].get(RECORD_KEY) if self.state is not None else None)
        if self.target_hook is not None:
            info = RunInfo(self.vcfg, self.scheme, self.model.box_convention, self.device, self.device.type == "cpu",
                           loc_from_crop_pixels(self.vcfg), str(self.out))
            self.hook_record = self.target_hook.start(info, recorded)
        if self.state is not None:
            check_resumed_record(recorded, self.hook_record, str(self.out))
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
        return trainable_groups(self.model, plan, self.cfg.freeze_batchnorm)

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
            "rng": rng_state(), "history": self.history,
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
            set_rng_state(self.state["rng"])
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
            if self.hook_record is not None:
                self.history[RECORD_KEY] = self.hook_record
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
            barrier(dist)
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
        barrier(dist)
        return final

    def _run_stage(self, plan: StagePlan, pos: Dict[str, Any], resumed: bool, progress: bool) -> None:
        cfg, dist = self.cfg, self.dist
        groups = self._set_trainable(plan)
        trainable = [p for g in groups for p in g["params"]]
        optimizer, scheduler, scaler = stage_optimizer(cfg, groups, plan.lr, self._stage_total(plan), self.use_amp,
                                                       self.state if resumed else None)
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
                if self.target_hook is not None:
                    lm = self.target_hook(crop, lm)
                theta_t = batch["theta_g_target"].to(self.device) if "theta_g_target" in batch else None
                active = [t for t in plan.terms if t not in STN_TERMS or pos["stn_active"][t]]
                with autocast(self.device, self.use_amp):
                    terms = runner(crop, lm, theta_t)
                loss = sum(weights[t] * terms[t].float() for t in active)
                grad_norm = optimizer_step(loss, optimizer, scheduler, scaler, trainable, cfg.grad_clip_norm)
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
        barrier(self.dist)



def _progress(enabled: bool, total: int, initial: int, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)



def train(cfg: TrainConfig, out: str | os.PathLike, resume: bool = False,
          target_hook: Optional[TargetHook] = None) -> Path:
    """Train (or ``resume``) a run into ``out``; returns the final checkpoint path. One process at a time writes a
    run folder (:func:`glsr.train.runstate.run_folder_lock`; a second one is refused). ``target_hook``: see
    :class:`Trainer`."""
    with run_folder_lock(out):
        trainer = Trainer(cfg, out, resume, target_hook)
        try:
            return trainer.run()
        finally:
            if trainer.dist.world > 1 and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
