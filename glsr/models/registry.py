"""Variant registry: every G&LSR_ω variant is a frozen dataclass config registered by name.

``create_model(name, scheme=...)`` (in :mod:`glsr.models.factory`) builds any of them for any landmark scheme.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Dict, Optional, Tuple

THETA_MODES = ("sampling", "forward_pixel")


GEOMETRY_FIELDS: Tuple[str, ...] = ("input_size", "context", "box_scale", "loc_size", "face_size", "part_size",
                                    "theta_mode", "tf_layers")
"""Variant fields that fix what the input crop, the frames and the reinit nets' outputs mean, and the regressor's
layer arithmetic (a network's weights are only valid with the geometry and layers they were trained in)."""


@dataclass(frozen=True)
class VariantConfig:
    """One network variant.

    Frames (see :mod:`glsr.geometry`): the network input is a face *crop* of ``input_size`` px covering the
    detector box enlarged by ``box_scale * context``; the *loc* frame is the central region covering the box
    enlarged by ``box_scale`` (what the global reinitialization net sees, at ``loc_size`` px); the *face* frame
    is the normalized face (``face_size`` px) the global regressor sees; *part* frames are ``part_size`` px patches.

    ``theta_mode``: ``"sampling"`` — reinit nets output ``src_norm_from_dst_norm`` directly (our convention);
    ``"forward_pixel"`` — they output the authors' forward pixel matrix (translation column x128), converted
    in-graph (used by imported checkpoints).
    """

    name: str
    description: str
    backbone: str                  # small_mnv2 | mnv2 | resnet50
    global_reinit: bool            # GSR's spatial transformer
    local: bool                    # LSR stage (local reinit + local regression)
    cascade: int = 1               # 2 = hand-crafted two-stage cascade (b2)
    input_size: int = 384
    context: float = 1.5
    box_scale: float = 1.2
    loc_size: int = 128
    face_size: int = 256
    part_size: int = 64
    part_margin: float = 1.4       # local patch half-size / part half-extent at initialization
    theta_mode: str = "sampling"
    channel_order: str = "BGR"
    pixel_mean: float = 127.5      # input = (pixel - mean) / std
    pixel_std: float = 127.5
    tf_layers: bool = False        # regressor with TensorFlow's "SAME" strided padding and ReLU6 (ImageNet trunk)
    paper_name: str = ""
    paper_params_m: Optional[float] = None   # Table 7, millions
    paper_flops_g: Optional[float] = None    # Table 7, G (multiply-accumulates)

    def __post_init__(self) -> None:
        if self.theta_mode not in THETA_MODES:
            raise ValueError(f"theta_mode must be one of {THETA_MODES}, got {self.theta_mode!r}")
        if self.cascade not in (1, 2):
            raise ValueError(f"cascade must be 1 or 2, got {self.cascade}")
        if self.cascade == 2 and (self.global_reinit or self.local):
            raise ValueError("the cascade baseline (b2) has neither reinitialization nor local stage")
        if self.context < 1.0:
            raise ValueError(f"context must be >= 1 (the crop holds the loc region), got {self.context}")

    @property
    def crop_enlarge(self) -> float:
        """Total enlargement of the detector box that the input crop covers."""
        return self.box_scale * self.context

    @property
    def stages(self) -> Tuple[str, ...]:
        s = []
        if self.global_reinit:
            s.append("global-reinit")
        s.append(f"global-regress({self.backbone})" + ("x2" if self.cascade == 2 else ""))
        if self.local:
            s += ["local-reinit", "local-regress"]
        return tuple(s)

    def to_dict(self) -> Dict[str, Any]:
        """All fields; ``tf_layers`` only when set, so files of the other variants stay readable by older glsr."""
        d = asdict(self)
        if not d["tf_layers"]:
            del d["tf_layers"]
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "VariantConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown variant config keys {unknown}; this glsr knows {sorted(known)}")
        return cls(**d)


def trimmed_crop(cfg: VariantConfig, size: int, align_loc: bool = False) -> VariantConfig:
    """``cfg`` with an input crop of ``size`` px at the same centre.

    By default at the same pixel scale: ``context`` becomes ``context * (size - 1) / (input_size - 1)``, so the loc
    region covers the same image pixels at the same resolution and the network samples the same image points
    wherever its windows stay inside the smaller crop (whether they do is a property of the weights and the faces:
    ``python -m benchmarks.studies.trimmed_crop``). With ``align_loc`` the crop's pixel scale becomes the loc's
    times the whole number ``k`` nearest to their ratio in ``cfg`` (at least 1): the loc pixels then sit on crop
    pixels or 2x2 block midpoints, so the graph reads the loc as a slice or an average pool of the crop instead of
    resampling it (:func:`glsr.models.network.loc_window`); the face is then sampled from a crop of that scale.
    ``ValueError`` for a crop that would no longer hold the loc region."""
    size = int(size)
    s, l = cfg.input_size, cfg.loc_size
    if align_loc:
        k = max(1, round((s - 1) / (cfg.context * (l - 1))))
        context, scale = (size - 1) / (k * (l - 1)), f"{k} crop px per loc px"
        lowest = k * (l - 1) + 1
    else:
        context, scale = cfg.context * (size - 1) / (s - 1), f"the pixel scale of {cfg.name}'s {s} px crop"
        lowest = int(math.ceil((s - 1) / cfg.context)) + 1
    if size < 2 or context < 1.0:
        raise ValueError(f"a {size} px crop at {scale} (context {cfg.context:g}) would not hold its loc region; "
                         f"give at least {lowest} px")
    return replace(cfg, input_size=size, context=context)


VARIANTS: Dict[str, VariantConfig] = {}


def register_variant(cfg: VariantConfig) -> VariantConfig:
    if cfg.name in VARIANTS:
        raise ValueError(f"variant {cfg.name!r} is already registered")
    VARIANTS[cfg.name] = cfg
    return cfg


def get_variant(name: str, **overrides: Any) -> VariantConfig:
    """Registered config by name, optionally with fields replaced."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; registered: {', '.join(VARIANTS)}")
    return replace(VARIANTS[name], **overrides) if overrides else VARIANTS[name]


def list_variants() -> Tuple[str, ...]:
    return tuple(VARIANTS)


register_variant(VariantConfig(
    "small", "G&LSR_w: global reinit + Small MobileNetV2 + local stage", "small_mnv2", True, True,
    paper_name="G&LSR_w", paper_params_m=1.83, paper_flops_g=0.0577))
register_variant(VariantConfig(
    "medium", "G&LSR_w/M: global reinit + MobileNetV2 + local stage", "mnv2", True, True,
    paper_name="G&LSR_w/M", paper_params_m=2.91, paper_flops_g=0.27))
register_variant(VariantConfig(
    "large", "G&LSR_w/L: global reinit + ResNet-50, no local stage", "resnet50", True, False,
    paper_name="G&LSR_w/L", paper_params_m=24.39, paper_flops_g=5.28))
register_variant(VariantConfig(
    "b1", "B1 ablation: plain Small MobileNetV2 regression on the box crop", "small_mnv2", False, False,
    paper_name="B_1", paper_params_m=0.3354, paper_flops_g=0.0485))
register_variant(VariantConfig(
    "b2", "B2 ablation: two-stage cascade of B1 (stage 2 re-crops on stage-1 shape)", "small_mnv2", False, False,
    cascade=2, paper_name="B_2"))
register_variant(VariantConfig(
    "gsr", "GSR ablation: global stage only (reinit + Small MobileNetV2)", "small_mnv2", True, False,
    paper_name="GSR", paper_params_m=0.5932, paper_flops_g=0.0526))
