"""Training configuration as frozen dataclasses (one JSON file <-> one :class:`TrainConfig`).

Conventions
-----------
* Defaults follow the paper's Section 4.1 unless marked otherwise: 20 perturbed samples per image, in-plane
  rotation up to 10 degrees, SGD with momentum 0.9, weight decay 2e-4, mini-batch 64, polynomial learning-rate
  decay from 0.01 (0.001 for the last, end-to-end step).
* The paper's four training *steps* are called **stages** here (``reinit``, ``global``, ``local``,
  ``finetune``) so that "step" can keep its usual meaning of one optimizer update. Stages a variant does not
  have are skipped (see :func:`glsr.train.stages.plan_stages`).
* ``max_steps`` caps the optimizer updates of *each* stage (a tiny budget still runs every stage).
* Procedural data (``procedural[:68|:98]``) gets a small CPU-friendly default budget
  (:data:`PROCEDURAL_DEFAULTS`): a run of the four stages of ``small`` takes minutes on two cores.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
import typing
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

STAGE_NAMES: Tuple[str, ...] = ("reinit", "global", "local", "finetune")
"""The paper's four training steps, in order (Section 4.1, "Training Pipeline")."""

LOSS_KINDS: Tuple[str, ...] = ("l1", "adaptive")
BOX_MODELS: Tuple[str, ...] = ("gaussian", "empirical")
TRANSFORMS: Tuple[str, ...] = ("affine", "similarity")
REDUCTIONS: Tuple[str, ...] = ("sum", "mean")

PAPER_EPOCHS = 150                      # Section 4.1: "epochs of 150"
PAPER_LR = 0.01                         # first three steps
PAPER_LR_LAST = 0.001                   # end-to-end fine-tuning
PAPER_BATCH = 64
PAPER_MOMENTUM = 0.9
PAPER_WEIGHT_DECAY = 2e-4
PAPER_SAMPLES_PER_IMAGE = 20
PAPER_MAX_ROTATION_DEG = 10.0
OPTIMIZERS = ("sgd", "adam")
"""``sgd``: the paper's SGD with momentum; ``adam``: AdamW (``momentum`` is then unused; ``weight_decay`` is
decoupled), per-parameter step sizes for starts whose layers differ widely in gradient scale (a grown start)."""
GRAD_CLIP_NORM = 100.0
"""Cap on the global gradient norm of an optimizer step (not in the paper; ``None`` = no cap). Healthy steps on
procedural faces have norms of ~10-30 with the summed L1 losses; the samplers can send the end-to-end stage's
gradient far beyond (a tiny 4-step model reached 1.5e3 / 1.5e4 on regressors / reinit nets, then NaN), which the
cap turns into bounded steps. Every step logs its pre-clip norm (``grad_norm``)."""
POLY_POWER = 0.9                        # Caffe "poly" policy's usual power (the paper gives none)
REINIT_LR_SCALE = 0.1
"""Learning-rate multiplier of the reinit nets in the end-to-end stage (not in the paper). Measured on procedural
faces (gsr, 40 fine-tuning steps from the global stage's weights): with 1.0 the training loss rose from ~10 to
12-16, with 0.1 it stayed at 9.4-10.6; the theta outputs are far more sensitive than the regressors' weights."""


@dataclass(frozen=True)
class StageConfig:
    """Budget of one training stage: ``epochs`` over the augmented set, starting learning rate ``lr``."""

    epochs: int
    lr: float

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"stage epochs must be >= 0, got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"stage learning rate must be > 0, got {self.lr}")


def paper_stages(epochs: int = PAPER_EPOCHS) -> Tuple[StageConfig, ...]:
    """Per-stage budgets of Section 4.1 with ``epochs`` each."""
    return tuple(StageConfig(epochs, PAPER_LR_LAST if name == "finetune" else PAPER_LR) for name in STAGE_NAMES)


@dataclass(frozen=True)
class AugmentConfig:
    """Section 4.1 augmentation (see :mod:`glsr.train.augment`).

    Box perturbations are drawn from the distribution of detector-box vs ground-truth tight-box differences
    measured on the training records (``box_model``: a 4-D Gaussian fit or resampling of the measured rows).
    When fewer than ``min_measured_boxes`` records carry a box, a zero-mean Gaussian with the ``fallback_*``
    standard deviations (fractions of the tight box size / natural-log scale ratios) is used instead.
    ``fresh_each_epoch``: draw new perturbations every epoch (the paper draws its 20 samples once; with
    ``False`` the same 20 are reused every epoch). ``samples_per_image=None``: the paper's 20, or
    :data:`PROCEDURAL_DEFAULTS` for procedural data (whose faces are already random).

    Beyond the paper, off by default (:mod:`glsr.train.photometric`): ``color_jitter = (c, b)``, contrast factor
    ``exp(U(-c, c))`` and brightness offset ``255 U(-b, b)``; ``blur_probability`` of a Gaussian blur with sigma up
    to ``max_blur`` pixels of a 256 px crop; ``grayscale_probability``; ``occlusion_probability`` of a random-colour
    rectangle with sides up to ``max_occlusion`` of the crop side.

    ``pose_oversample``: more samples of turned faces; face ``i`` gets ``samples_per_image`` times
    ``1 + round(pose_oversample * min(|yaw_i|, 1))`` samples per epoch, ``yaw_i`` its annotation's yaw index
    (:func:`glsr.pose.yaw_index`; 0 = every face alike, as the paper; needs a scheme with the 68 points' jaw).
    """

    samples_per_image: Optional[int] = None
    max_rotation_deg: float = PAPER_MAX_ROTATION_DEG
    flip_probability: float = 0.5
    box_model: str = "gaussian"
    fresh_each_epoch: bool = True
    min_measured_boxes: int = 2
    fallback_center_std: float = 0.05
    fallback_log_scale_std: float = 0.05
    fallback_log_scale_mean: float = 0.0
    color_jitter: Tuple[float, float] = (0.0, 0.0)
    blur_probability: float = 0.0
    max_blur: float = 2.0
    grayscale_probability: float = 0.0
    occlusion_probability: float = 0.0
    max_occlusion: float = 0.4
    pose_oversample: float = 0.0

    def __post_init__(self) -> None:
        if not self.pose_oversample >= 0:
            raise ValueError(f"pose_oversample must be >= 0, got {self.pose_oversample}")
        jitter = tuple(float(v) for v in self.color_jitter)
        if len(jitter) != 2 or not all(v >= 0 for v in jitter):
            raise ValueError(f"color_jitter must be two numbers >= 0 (contrast, brightness), got {self.color_jitter}")
        object.__setattr__(self, "color_jitter", jitter)
        for name in ("blur_probability", "grayscale_probability", "occlusion_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not self.max_blur >= 0.5:
            raise ValueError(f"max_blur must be >= 0.5 (pixels of a 256 px crop), got {self.max_blur}")
        if not 0.1 <= self.max_occlusion <= 1.0:
            raise ValueError(f"max_occlusion must be in [0.1, 1] (fraction of the crop side), got {self.max_occlusion}")
        if self.samples_per_image is not None and self.samples_per_image < 1:
            raise ValueError(f"samples_per_image must be >= 1, got {self.samples_per_image}")
        if self.box_model not in BOX_MODELS:
            raise ValueError(f"box_model must be one of {BOX_MODELS}, got {self.box_model!r}")
        if not 0.0 <= self.flip_probability <= 1.0:
            raise ValueError(f"flip_probability must be in [0, 1], got {self.flip_probability}")
        if self.max_rotation_deg < 0:
            raise ValueError(f"max_rotation_deg must be >= 0, got {self.max_rotation_deg}")


@dataclass(frozen=True)
class TargetConfig:
    """How interim targets are built (see :mod:`glsr.train.targets`).

    ``global_transform``: Algorithm 1 step 1 (GT shape -> reference) is an affine fit (paper) or a similarity.
    ``face_margin``: the region bounded by the warped shape is enlarged by this factor before it becomes the
    normalized face (``None`` = the variant's ``box_scale``, so a tight face fills the face frame as the box
    fills the loc frame). ``local_transform``: fit of the pre-defined part patch to the GT part (similarity by
    default: 3-point parts of the 19-point scheme are nearly collinear). ``reference_iterations``: similarity
    Procrustes passes for the reference mean shape; ``symmetric_reference`` averages it with its mirror image.
    ``mean_shape_samples``: augmented samples (geometry only, no pixels) averaged into ``S_g0``.
    """

    global_transform: str = "affine"
    face_margin: Optional[float] = None
    local_transform: str = "similarity"
    reference_iterations: int = 3
    symmetric_reference: bool = True
    mean_shape_samples: int = 4000

    def __post_init__(self) -> None:
        for name in ("global_transform", "local_transform"):
            if getattr(self, name) not in TRANSFORMS:
                raise ValueError(f"{name} must be one of {TRANSFORMS}, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class LossConfig:
    """Losses of Sections 3.2-3.4 (see :mod:`glsr.train.losses`).

    ``kind``: ``"l1"`` (Eq. 5 / Eq. 6) or ``"adaptive"`` (Eq. 8-9 as a drop-in for both). ``error_scale``
    multiplies the coordinate errors ``z`` before the weights ``exp(-sigma |z - mu|)`` are computed (1 = the
    paper's normalized units). ``reduction``: ``"sum"`` over coordinates (the paper's ``||.||_1``) or
    ``"mean"``. ``stn_off_threshold`` / ``stn_off_epoch``: the supervised-STN losses (Eq. 3, global and local)
    are switched off for the rest of a stage once an epoch's mean STN loss falls below the threshold, or from
    that epoch of the stage on; in the ``reinit`` stage (whose only loss it is) that ends the stage.
    """

    kind: str = "adaptive"
    error_scale: float = 1.0
    reduction: str = "sum"
    global_weight: float = 1.0
    local_weight: float = 1.0
    stn_weight: float = 1.0
    local_stn_weight: float = 1.0
    stn_off_threshold: Optional[float] = None
    stn_off_epoch: Optional[int] = None

    def __post_init__(self) -> None:
        if self.kind not in LOSS_KINDS:
            raise ValueError(f"loss kind must be one of {LOSS_KINDS}, got {self.kind!r}")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {self.reduction!r}")


@dataclass(frozen=True)
class GrowConfig:
    """Start a wider regressor as the function of the narrower ``--init`` it was widened from
    (:mod:`glsr.train.grow`). ``passes`` augmented passes over the training faces (0 = off) give the features
    the layers the widening could not carry are fitted on, for ``epochs`` epochs of Adam at a one-cycle learning
    rate peaking at ``lr``, in mini-batches of ``batch``; ``output_weight`` weighs the head-output term against
    the relative feature term. ``normalize_new``: before the fit, estimate the running statistics of the trunk's
    BatchNorm channels that the widening left at PyTorch's initial values (its new channels), so that eval mode
    normalizes them as train mode does; the carried channels compute what they did
    (:func:`glsr.train.grow.estimate_new_statistics`)."""

    passes: int = 0
    epochs: int = 30
    lr: float = 0.002
    batch: int = 128
    output_weight: float = 100.0
    normalize_new: bool = False

    def __post_init__(self) -> None:
        for name in ("passes", "epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"grow.{name} must be >= 0, got {getattr(self, name)}")
        if self.batch < 1:
            raise ValueError(f"grow.batch must be >= 1, got {self.batch}")
        if not self.lr > 0:
            raise ValueError(f"grow.lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class ModelOverrides:
    """Variant fields replaced for training (``None`` = the registered variant's value, or the ``init``
    checkpoint's when training starts from a glsr checkpoint: see :func:`glsr.train.init_weights.init_geometry`)."""

    input_size: Optional[int] = None
    loc_size: Optional[int] = None
    face_size: Optional[int] = None
    part_size: Optional[int] = None
    context: Optional[float] = None
    box_scale: Optional[float] = None
    theta_mode: Optional[str] = None

    def as_kwargs(self) -> Dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


PROCEDURAL_DEFAULTS: Dict[str, Any] = {
    # small images and a small budget so that a CPU run of all four stages finishes in minutes
    "samples": 200,
    "val_samples": 100,
    "samples_per_image": 10,
    "batch_size": 32,
    "stage_epochs": (8, 3, 2, 1),           # the reinit stage is cheap (reinit net only)
    "model": ModelOverrides(input_size=96, loc_size=128, face_size=128, part_size=32),
}
"""Budget used when ``data`` is procedural and the corresponding field was left at ``None``."""



def read_json_object(path: Path, what: str) -> Dict[str, Any]:
    """The JSON object stored in ``path``; ``ValueError`` naming the file (and the line of a syntax error) for
    invalid JSON or a JSON value that is not an object of ``what``."""
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a JSON object of {what}")
    return d

@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run's result (same config + seed -> same weights).

    ``data`` / ``val_data`` are :func:`glsr.train.datasets.open_dataset` specs; ``val_data=None`` uses the
    procedural test split for procedural training data and no held-out set otherwise. ``samples`` /
    ``val_samples``: procedural face counts. ``box_source``: the readers' box choice (e.g. ``"file"`` for 300-W's
    detector boxes; the measured detector-vs-tight differences drive the box augmentation). ``skip_bad``: leave
    malformed faces of the data out (counted) instead of refusing it. ``stages``: per-stage budgets (``None`` = the
    paper's, or :data:`PROCEDURAL_DEFAULTS` for procedural data). ``init``: a local file (glsr checkpoint or a state
    dict) whose tensors initialise the model wherever names and shapes match (no downloads); ``grow``: fit what a
    widened ``init`` could not carry (:class:`GrowConfig`); ``freeze_batchnorm``: BatchNorm layers normalize with
    their running statistics while training (their scale and shift still learn), as a grown start needs: its
    widened trunk computes the narrower model's features only that way. ``threads``: torch intra-op threads per
    process (``None`` = cores / local processes). ``save_every``: also write the resumable state every that many
    optimizer steps (0 = at epoch ends only). ``reinit_lr_scale``: see :data:`REINIT_LR_SCALE`; ``grad_clip_norm``:
    :data:`GRAD_CLIP_NORM`; ``optimizer``: :data:`OPTIMIZERS`. Fields of older configs: :data:`LEGACY_FIELDS`.
    """

    variant: str = "small"
    data: str = "procedural:68"
    val_data: Optional[str] = None
    train_split: Optional[str] = None
    val_split: Optional[str] = None
    box_source: Optional[str] = None
    skip_bad: bool = False
    samples: Optional[int] = None
    val_samples: Optional[int] = None
    annotation_noise: float = 0.0
    seed: int = 0
    batch_size: Optional[int] = None
    stages: Optional[Tuple[StageConfig, ...]] = None
    max_steps: Optional[int] = None
    optimizer: str = "sgd"
    momentum: float = PAPER_MOMENTUM
    weight_decay: float = PAPER_WEIGHT_DECAY
    poly_power: float = POLY_POWER
    reinit_lr_scale: float = REINIT_LR_SCALE
    grad_clip_norm: Optional[float] = GRAD_CLIP_NORM
    model: Optional[ModelOverrides] = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    targets: TargetConfig = field(default_factory=TargetConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    init: Optional[str] = None
    grow: GrowConfig = field(default_factory=GrowConfig)
    freeze_batchnorm: bool = False
    workers: int = 0
    threads: Optional[int] = None
    save_every: int = 0
    val_limit: Optional[int] = None
    device: str = "auto"
    amp: bool = True
    tensorboard: bool = True
    progress: bool = True
    log_every: int = 10

    def __post_init__(self) -> None:
        if self.stages is not None and len(self.stages) != len(STAGE_NAMES):
            raise ValueError(f"stages needs {len(STAGE_NAMES)} entries ({', '.join(STAGE_NAMES)}), "
                             f"got {len(self.stages)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.annotation_noise < 0:
            raise ValueError(f"annotation_noise must be >= 0, got {self.annotation_noise}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")

    # ------------------------------------------------------------------------------------------ derived
    @property
    def is_procedural(self) -> bool:
        return self.data.split(":", 1)[0].strip().lower() == "procedural"

    def resolved(self) -> "TrainConfig":
        """Fill every ``None`` budget field (procedural defaults or the paper's)."""
        proc = self.is_procedural
        aug = self.augment
        if aug.samples_per_image is None:
            aug = replace(aug, samples_per_image=(PROCEDURAL_DEFAULTS["samples_per_image"] if proc
                                                  else PAPER_SAMPLES_PER_IMAGE))
        stages = self.stages
        if stages is None:
            if proc:
                stages = tuple(StageConfig(e, PAPER_LR_LAST if n == "finetune" else PAPER_LR)
                               for n, e in zip(STAGE_NAMES, PROCEDURAL_DEFAULTS["stage_epochs"]))
            else:
                stages = paper_stages()
        return replace(
            self,
            samples=self.samples if self.samples is not None or not proc else PROCEDURAL_DEFAULTS["samples"],
            val_samples=(self.val_samples if self.val_samples is not None or not proc
                         else PROCEDURAL_DEFAULTS["val_samples"]),
            batch_size=self.batch_size or (PROCEDURAL_DEFAULTS["batch_size"] if proc else PAPER_BATCH),
            stages=stages,
            model=self.model if self.model is not None else (PROCEDURAL_DEFAULTS["model"] if proc
                                                             else ModelOverrides()),
            augment=aug,
        )

    # ------------------------------------------------------------------------------------------ (de)serialize
    def to_dict(self) -> Dict[str, Any]:
        return _to_plain(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """The config of plain data ``d`` (a ``config.json``, a checkpoint's ``train_config``); fields of older
        configs that it no longer has are dropped or refused (:func:`without_legacy`)."""
        return _from_plain(cls, without_legacy(d, "config"), "config")

    @classmethod
    def from_json_file(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        d = read_json_object(path, "TrainConfig fields")
        try:
            return cls.from_dict(d)
        except (ValueError, TypeError) as e:  # a wrong type or value: name the file, the key and what it takes
            raise ValueError(f"--config {path}: {e}") from None


LEGACY_FIELDS: Dict[str, str] = {
    "distill": "knowledge distillation moved out of glsr: python -m benchmarks.distill --teacher W... "
               "--teacher-weight F -- GLSR_TRAIN_ARGS",
}
"""Fields that configs recorded by earlier versions carry and :class:`TrainConfig` no longer has -> where that
setting went."""


def without_legacy(d: Any, where: str = "config") -> Any:
    """``d`` (TrainConfig fields as plain data) without :data:`LEGACY_FIELDS`. ``distill`` (teachers whose
    predictions were blended into the targets) is dropped when it was off (no teachers or weight 0: what every run
    recorded before the move holds unless it distilled) and refused in one line when it was on: such a run's
    targets came from its teachers, which glsr no longer loads (``python -m benchmarks.distill`` does; it reads a
    ``--config`` with ``distill`` too)."""
    if not isinstance(d, Mapping) or not set(d) & set(LEGACY_FIELDS):
        return d
    distill = d.get("distill")
    teachers = distill.get("teachers") if isinstance(distill, Mapping) else distill
    weight = distill.get("weight", 0.5) if isinstance(distill, Mapping) else None
    if teachers and not (isinstance(weight, (int, float)) and weight <= 0):
        raise ValueError(f"{where}.distill: teachers {json.dumps(teachers)} at weight {json.dumps(weight)}: "
                         f"{LEGACY_FIELDS['distill']} (it reads this distill field from a --config too; a run "
                         "recorded with teachers cannot be resumed or shipped by glsr)")
    return {k: v for k, v in d.items() if k not in LEGACY_FIELDS}


RUNTIME_ONLY_FIELDS: Tuple[str, ...] = ("workers", "threads", "progress", "tensorboard", "log_every", "device",
                                         "val_limit")
"""Fields that may differ between a run and its ``--resume`` without changing the weights it produces."""


def _to_plain(obj: Any) -> Any:
    if is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


_NESTED = {"augment": AugmentConfig, "targets": TargetConfig, "loss": LossConfig, "model": ModelOverrides,
           "grow": GrowConfig}


def _type_problem(value: Any, hint: Any) -> Optional[str]:
    """What is wrong with ``value`` for the field type ``hint`` (``None`` when it fits): numbers, strings, booleans,
    ``Optional`` and tuples of them (JSON lists); other types are left to the dataclass."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _type_problem(value, inner[0]) if len(inner) == 1 else None
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return f"a list, got {json.dumps(value)}"
        item = args[0] if args else Any
        if len(args) > 1 and args[1] is not Ellipsis and len(value) != len(args):
            return f"a list of {len(args)}, got {len(value)} items"
        for v in value:
            problem = _type_problem(v, item if len(args) < 2 or args[1] is Ellipsis else args[0])
            if problem:
                return problem
        return None
    kinds = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}
    if hint in kinds:
        ok = isinstance(value, kinds[hint]) and (hint is bool or not isinstance(value, bool))
        return None if ok else f"{'a number' if hint is float else hint.__name__}, got {json.dumps(value)}"
    return None


def _from_plain(cls: type, d: Mapping[str, Any], where: str) -> Any:
    if not isinstance(d, Mapping):
        raise ValueError(f"{where}: expected an object of {cls.__name__} fields, got {json.dumps(d)}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    kwargs: Dict[str, Any] = {}
    for k, v in d.items():
        if cls is TrainConfig and k in _NESTED and v is not None:
            kwargs[k] = _from_plain(_NESTED[k], v, f"{where}.{k}")
        elif cls is TrainConfig and k == "stages" and v is not None:
            if not isinstance(v, list) or not all(isinstance(s, (Mapping, list)) for s in v):
                raise ValueError(f"{where}.stages: expected a list of stages ({{\"epochs\": N, \"lr\": X}} or [N, X]), "
                                 f"got {json.dumps(v)}")
            kwargs[k] = tuple(_from_plain(StageConfig, s if isinstance(s, Mapping) else
                                          dict(zip([f.name for f in fields(StageConfig)], s)), f"{where}.stages[{i}]")
                              for i, s in enumerate(v))
        else:
            problem = _type_problem(v, hints.get(k, Any))
            if problem:
                raise ValueError(f"{where}.{k}: expected {problem}")
            kwargs[k] = tuple(v) if isinstance(v, list) else v
    return cls(**kwargs)


# ------------------------------------------------------------------------------------------ --set KEY=VALUE

def setting_keys(cfg: Optional[TrainConfig] = None) -> List[str]:
    """Every key ``glsr train --set`` takes: the dotted paths of the (resolved) config's fields, stages by name
    (``stages.global.lr``)."""
    def walk(node: Any, prefix: str) -> List[str]:
        if isinstance(node, dict):
            return [k for key, v in node.items() for k in walk(v, f"{prefix}{key}.")] or [prefix[:-1]]
        if isinstance(node, list) and node and isinstance(node[0], dict):
            names = STAGE_NAMES if prefix == "stages." else range(len(node))
            return [k for name, v in zip(names, node) for k in walk(v, f"{prefix}{name}.")]
        return [prefix[:-1]]

    return walk((cfg or TrainConfig()).resolved().to_dict(), "")


def _setting_value(text: str, current: Any, key: str) -> Any:
    """``text`` as JSON (numbers, true / false, null, lists) or plain text, checked against the type of the value it
    replaces (a comma list for a list field)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    if isinstance(current, (list, tuple)) and isinstance(value, str):
        value = [_setting_value(t.strip(), current[0] if current else None, key) for t in value.split(",") if t.strip()]
    if value is None or current is None:
        return value
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ValueError(f"--set {key}={text}: expected true or false")
    elif isinstance(current, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"--set {key}={text}: expected a whole number")
    elif isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"--set {key}={text}: expected a number")
        value = float(value)
    elif isinstance(current, str) and not isinstance(value, str):
        value = text
    return value


def apply_settings(cfg: TrainConfig, settings: Sequence[str]) -> TrainConfig:
    """``cfg`` with ``KEY=VALUE`` settings applied in order (``glsr train --set``).

    ``KEY`` is a dotted path of a config field (:func:`setting_keys`: ``augment.flip_probability``,
    ``loss.kind``, ``stages.global.lr``, ``model.face_size``, ``weight_decay``); ``VALUE`` is JSON or plain text
    (a comma list for list fields: ``augment.color_jitter=0.3,0.1``). A field left to its default budget
    (``stages``, ``model``) is filled with its resolved default first, as the settings before it leave the config
    (``data=300w:DIR`` then ``model.face_size=136``: the registered variant's sizes, not procedural data's). An
    unknown key names the closest known ones; the result goes through the dataclasses' own checks.
    """
    if not settings:
        return cfg
    plain = cfg.to_dict()
    for item in settings:
        resolved = TrainConfig.from_dict(plain).resolved().to_dict()  # the defaults as the settings so far make them
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set {item!r}: give KEY=VALUE, e.g. --set augment.flip_probability=0")
        parts = key.split(".")
        if len(parts) > 1 and parts[0] == "stages" and parts[1] in STAGE_NAMES:
            parts[1] = str(STAGE_NAMES.index(parts[1]))
        node, ref = plain, resolved
        try:
            for i, part in enumerate(parts):
                index: Any = int(part) if isinstance(node, list) else part
                missing = part not in node if isinstance(node, dict) else not 0 <= index < len(node)
                if missing or not isinstance(node, (dict, list)):
                    raise KeyError(part)
                if i == len(parts) - 1:
                    node[index] = _setting_value(text.strip(), node[index] if node[index] is not None
                                                 else ref[index], key)
                    break
                if node[index] is None:  # a default budget: fill it in before changing a part of it
                    node[index] = json.loads(json.dumps(ref[index]))
                node, ref = node[index], ref[index]
        except (KeyError, ValueError, TypeError) as e:
            if isinstance(e, ValueError) and str(e).startswith("--set"):
                raise
            if parts[0] in LEGACY_FIELDS:
                raise ValueError(f"--set {key}: not a glsr train setting any more; {LEGACY_FIELDS[parts[0]]}") from None
            keys = setting_keys(cfg)
            close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ValueError(f"--set {key}: unknown setting; {hint}settings are the fields of glsr.train.config."
                             f"TrainConfig as dotted paths ({len(keys)} keys, e.g. augment.flip_probability, "
                             "stages.global.lr, loss.kind)") from None
    try:
        return TrainConfig.from_dict(plain)
    except (TypeError, ValueError) as e:
        raise ValueError(f"--set {', '.join(map(str, settings))}: {e}") from None


def config_differences(a: TrainConfig, b: TrainConfig) -> List[str]:
    """Fields (other than :data:`RUNTIME_ONLY_FIELDS`) on which two configs differ."""
    da, db = a.to_dict(), b.to_dict()
    return sorted(k for k in da if k not in RUNTIME_ONLY_FIELDS and da[k] != db.get(k))
