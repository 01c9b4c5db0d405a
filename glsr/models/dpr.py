"""Import the authors' released WFLW checkpoints (``shaoxiaohu/Face_Alignment_DPR``, MIT) into a glsr model.

The release stores the global reinitialization net, the Small MobileNetV2 global regressor and the four local
reinit FC nets as DataParallel state dicts (``module.`` prefix). Their conventions (documented in the release's
inference code) are converted here, never copied:

* θ: their nets output forward pixel matrices (crop-128 -> face-128, translation x128, face doubled to 256;
  face-256 -> part-128 for the local nets). Our variant config sets ``theta_mode="forward_pixel"`` and the
  graph converts them to sampling thetas (:class:`glsr.models.reinit.ThetaAdapter`).
* shape: they predict ``p`` with landmarks ``(0.5 p + mean) * 256`` in face pixels; in our normalized face
  coordinates that is ``p + (2 mean - 1 + 1/256)``, so the regressor output is kept and the mean is converted.
* local reinit input: their nets read the shape in 256-face pixels ``x = 128 (u + 1) - 0.5``; the affine
  change of units is folded into the first FC layer.
* crop: their localization net sees the bare box (box_scale 1.0); our graph takes a crop with ``context`` x the
  box so the zoomed-out normalized face stays inside the input (the STN scale is about 0.85).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np
import torch

from glsr.boxes import WFLW
from glsr.models.factory import create_model
from glsr.models.network import GLSRNet
from glsr.models.registry import GEOMETRY_FIELDS
from glsr.models.reinit import LOCAL_REINIT_NAMES
from glsr.schemes import LandmarkScheme, conversion, get_scheme

DPR_FILES = {
    "reinit": "98_points_global_reinit.pth.tar",
    "regress": "98_points_global_regress.pth.tar",
    "local_reinit": "98_points_local_reinit.pth.tar",
    "mean": "mean_98_face.npy",
}
DPR_FACE_PX = 256.0
DPR_BOX_CONVENTION = WFLW
"""The release was trained on WFLW's annotation rectangles."""
DPR_DEFAULT_CONTEXT = 2.0
DPR_DEFAULT_INPUT = 512


def _read_state(path: Path) -> Dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; the authors' release folder must hold {sorted(DPR_FILES.values())}")
    from glsr.models.checkpoint import torch_load_safe

    ck = torch_load_safe(path, "authors' checkpoint")
    if not isinstance(ck, dict) or "state_dict" not in ck:
        raise ValueError(f"{path} is not one of the authors' checkpoints (no 'state_dict' entry)")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in ck["state_dict"].items()}


def dpr_mean_to_norm(mean: np.ndarray) -> np.ndarray:
    """Their mean (196 floats, x/y interleaved, units of the 256 face) -> ``[98, 2]`` normalized face coords."""
    m = np.asarray(mean, dtype=np.float64).reshape(-1, 2)
    return 2.0 * m - 1.0 + 1.0 / DPR_FACE_PX


def _load_into(model: GLSRNet, prefix: str, state: Dict[str, torch.Tensor], source: Path) -> None:
    target = {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    theirs = {prefix + k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    target = {k: v for k, v in target.items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(target) - set(theirs))
    unknown = sorted(set(theirs) - set(target))
    if missing or unknown:
        raise ValueError(f"{source}: keys do not match glsr's {prefix.rstrip('.')} network: "
                         f"missing {missing[:6]}{'...' if len(missing) > 6 else ''}, "
                         f"unknown {unknown[:6]}{'...' if len(unknown) > 6 else ''}")
    for k, v in theirs.items():
        if tuple(v.shape) != tuple(target[k].shape):
            raise ValueError(f"{source}: {k[len(prefix):]} has shape {tuple(v.shape)}, glsr expects "
                             f"{tuple(target[k].shape)}")
    model.load_state_dict(theirs, strict=False)


def import_dpr(folder: str | Path, variant: str = "gsr", context: float = DPR_DEFAULT_CONTEXT,
               input_size: int = DPR_DEFAULT_INPUT, scheme: str = "98") -> GLSRNet:
    """Build a 98-point ``gsr`` (or ``small``, whose local regression then stays untrained) from the release.

    ``scheme="68"`` keeps the 68 points of the standard WFLW-98 -> 68 list (:data:`glsr.schemes.WFLW98_TO_68`):
    the regressor head's rows and the mean shape are selected, so the 68-point model predicts exactly those points
    of the 98-point one. The release's local reinit nets read all 98 points and stay out of a 68-point model.
    """
    target = get_scheme(scheme)
    if target.name != "98":
        return select_points(import_dpr(folder, "gsr", context, input_size), target, variant)
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; point at the authors' release folder holding "
                                f"{sorted(DPR_FILES.values())}")
    mean_path = folder / DPR_FILES["mean"]
    if not mean_path.is_file():
        raise FileNotFoundError(f"{mean_path} is missing (the 98-point mean shape of the release)")
    mean = np.load(mean_path, allow_pickle=False)
    if mean.size != 196:
        raise ValueError(f"{mean_path} holds {mean.size} numbers, expected 196 (98 points, x/y interleaved)")
    model = create_model(variant, get_scheme("98"), mean_shape=dpr_mean_to_norm(mean), box_scale=1.0,
                         context=context, input_size=input_size, theta_mode="forward_pixel")
    if not model.cfg.global_reinit or model.cfg.backbone != "small_mnv2":
        raise ValueError(f"variant {variant!r} cannot carry the release's weights (needs global reinit + Small "
                         "MobileNetV2: use gsr or small)")
    _load_into(model, "reinit.", _read_state(folder / DPR_FILES["reinit"]), folder / DPR_FILES["reinit"])
    _load_into(model, "regress.", _read_state(folder / DPR_FILES["regress"]), folder / DPR_FILES["regress"])
    model.box_convention = DPR_BOX_CONVENTION
    if model.cfg.local:
        path = folder / DPR_FILES["local_reinit"]
        state = _read_state(path)
        fold_local_input_units(state, model.cfg.face_size)
        _load_into(model, "local_reinit.", state, path)
    return model.eval()


def select_points(model: GLSRNet, scheme: "str | LandmarkScheme", variant: "str | None" = None) -> GLSRNet:
    """A copy of a global-stage ``model`` predicting the ``scheme`` subset of its points (rows of the regressor
    head and of the mean shape, by :func:`glsr.schemes.conversion`); ``variant`` may add an untrained local stage.
    """
    target = get_scheme(scheme)
    if model.local_reinit is not None or model.regress2 is not None:
        raise ValueError("only a global-stage model (gsr, b1) can be cut to another landmark scheme")
    index = list(conversion(model.scheme, target))
    rows = torch.tensor([2 * i + c for i in index for c in (0, 1)])
    cfg = model.cfg
    mean = model.mean_shape.detach().double().numpy()[index]
    new = create_model(variant or cfg.name, target, mean_shape=mean, **{k: getattr(cfg, k) for k in GEOMETRY_FIELDS})
    state = {}
    head_keys = {f"regress.pts_net.{len(model.regress.pts_net) - 1}.{n}" for n in ("weight", "bias")}
    for k, v in model.state_dict().items():
        if k == "mean_shape":
            continue
        state[k] = v[rows] if k in head_keys else v
    new.box_convention = model.box_convention
    _missing, unexpected = new.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"cannot carry {unexpected[:4]} into variant {new.cfg.name!r}")
    return new.eval()


def fold_local_input_units(state: Dict[str, torch.Tensor], face_size: int) -> None:
    """Rewrite each local net's first layer so it reads normalized coords instead of 256-face pixels."""
    half = face_size / 2.0
    for name in LOCAL_REINIT_NAMES:
        w, b = state[f"{name}.0.weight"], state[f"{name}.0.bias"]
        # W x + b with x = half * u + (half - 0.5)  ->  (half W) u + (b + (half - 0.5) W 1)
        state[f"{name}.0.bias"] = b + (half - 0.5) * w.sum(dim=1)
        state[f"{name}.0.weight"] = w * half
