"""glsr checkpoints (``.pt``): variant config, scheme, mean shape and weights in one file, written atomically."""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from glsr.models.network import GLSRNet
from glsr.models.registry import VariantConfig, trimmed_crop
from glsr.schemes import get_scheme
from glsr import atomic

CHECKPOINT_FORMAT = "glsr-checkpoint"
CHECKPOINT_VERSION = 2
"""2: the global reinit net's raw thetas address a face-size-independent frame (:func:`glsr.models.reinit.
forward_pixel_right`); version-1 files are rewritten on reading (:func:`upgrade_checkpoint`)."""
FRAME_FIX_VERSION = 2
"""The first checkpoint version written with the face-size-independent reinit frame."""
REINIT_OUTPUT = "reinit.fc_loc.2"
"""The global reinit net's output layer (raw 6-vector), where :func:`fold_legacy_frame` rewrites the weights."""


class UnsafeCheckpointError(ValueError):
    """A model file holds Python objects beyond tensors and plain data: glsr never unpickles those (loading them
    could run code), so it refuses the file."""


def torch_load_safe(path: str | os.PathLike, what: str = "checkpoint", allow: Sequence[Any] = ()) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: tensors, numbers, strings and containers only.

    A pickle that would build any other object (e.g. call ``os.system``) raises :class:`UnsafeCheckpointError`
    without executing anything; a truncated or corrupt file raises ``ValueError``; both name ``path``. ``allow``
    adds globals to the weights-only allowlist for this call (only for glsr's own legacy files).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder, not a file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    bad = _corrupt_member(path)
    if bad:
        raise ValueError(f"{path} is not a readable torch {what} (corrupt: checksum mismatch in {bad}); copy or "
                         "write it again")
    ctx = torch.serialization.safe_globals(list(allow)) if allow else contextlib.nullcontext()
    try:
        with ctx:
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        found = re.search(r"GLOBAL\s+([\w.]+)", text)
        if "Unsupported operand" not in text and (found or "weights only load failed" in text.lower()):
            name = found.group(1) if found else "a Python object"
            raise UnsafeCheckpointError(
                f"{path} holds Python objects besides tensors and plain data ({name}); glsr never loads those, "
                "since unpickling them can run code. Use a checkpoint written by glsr (`glsr train`, `glsr "
                "import-dpr`), or re-save the weights as a plain state dict if you trust the file") from None
        raise ValueError(f"{path} is not a readable torch {what} (not a torch file, or a truncated / corrupt one); "
                         "copy or write it again") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise ValueError(f"{path} is not a readable torch {what} (truncated or corrupt: {e.__class__.__name__}: "
                         f"{_first_line(str(e))}); copy or write it again") from None


def _corrupt_member(path: Path) -> Optional[str]:
    """The first record of a torch zip file whose bytes fail their CRC-32 (``None`` when all pass, or when the file
    is not a readable zip: torch.load reports that). torch itself does not check them: bytes overwritten with
    finite garbage would load as silently wrong weights."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError):
        return None


def _first_line(text: str, limit: int = 160) -> str:
    line = (text.strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[:limit] + "..."


def nonfinite_tensors(obj: Any, prefix: str = "") -> List[str]:
    """Names of the floating-point tensors in a (nested dict / list of) tensors holding NaN or infinity."""
    out: List[str] = []
    if torch.is_tensor(obj):
        if obj.is_floating_point() and not bool(torch.isfinite(obj).all()):
            out.append(prefix or "tensor")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out += nonfinite_tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out += nonfinite_tensors(v, f"{prefix}[{i}]")
    return out


def check_finite_weights(state: Dict[str, Any], source: str) -> None:
    """``ValueError`` naming ``source`` when any weight holds NaN or infinity (a diverged training run)."""
    bad = nonfinite_tensors(state)
    if bad:
        n = sum(1 for v in state.values() if torch.is_tensor(v) and v.is_floating_point())
        raise ValueError(f"{source}: {len(bad)} of {n} weight tensors hold NaN or infinity (first: {bad[0]}); "
                         "the training that wrote them diverged: use an earlier checkpoint or retrain with a lower "
                         "--lr")


def weights_sha256(state: Dict[str, Any]) -> str:
    """Hex SHA-256 of a state dict's tensors (name, dtype, shape and bytes, in name order): the identity of the
    weights an artifact was exported from, whatever file held them (recorded in its metadata, checked by parity)."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(state):
        v = state[name]
        if torch.is_tensor(v):
            t = v.detach().cpu().contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: readers never see a half file.

    The bytes are serialized in memory first, so a full disk or a file-size limit surfaces as an ``OSError``
    naming ``path`` (torch's zip writer would report it as an opaque ``RuntimeError``).
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    try:
        with atomic.atomic_open(path, "wb") as f:
            f.write(buf.getbuffer())
    except OSError as e:
        raise OSError(e.errno or errno.EIO, e.strerror or str(e), str(path)) from None


def checkpoint_dict(model: GLSRNet, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    own = {"box_convention": model.box_convention} if getattr(model, "box_convention", "") else {}
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": model.cfg.to_dict(),
            "scheme": model.scheme.name, "state_dict": model.state_dict(), "extra": {**own, **(extra or {})}}


def save_checkpoint(model: GLSRNet, path: str | os.PathLike, extra: Optional[Dict[str, Any]] = None) -> None:
    atomic_torch_save(checkpoint_dict(model, extra), path)


def read_checkpoint(path: str | os.PathLike) -> Dict[str, Any]:
    """Load and validate the raw checkpoint dict; clear errors for a missing or foreign file."""
    return check_checkpoint(torch_load_safe(Path(path), "checkpoint"), path)


def check_checkpoint(ck: Any, path: str | os.PathLike) -> Dict[str, Any]:
    """``ck`` (loaded from ``path``) if it is a glsr checkpoint this version understands, else a ``ValueError``
    naming the file and the fix."""
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a glsr checkpoint (no format={CHECKPOINT_FORMAT!r}); "
                         "train one with `glsr train` or convert the authors' release with `glsr import-dpr`")
    version = ck.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ValueError(f"{path}: checkpoint version {version!r} is not a version glsr writes (a whole number): "
                         "the file was edited or damaged; copy or write it again")
    if version > CHECKPOINT_VERSION:
        raise ValueError(f"{path} has checkpoint version {ck['version']}, newer than this glsr understands "
                         f"({CHECKPOINT_VERSION}); upgrade glsr")
    problems = [f"no {k} ({what})" for k, kind, what in (("config", dict, "the variant config"),
                                                        ("scheme", str, "the landmark scheme"),
                                                        ("state_dict", dict, "the weights"))
                if not isinstance(ck.get(k), kind)]
    if not problems and not isinstance(ck["config"].get("name"), str):
        problems.append("no variant name in its config")
    if problems:
        raise ValueError(f"{path}: glsr checkpoint with {', '.join(problems)}: the file was edited or damaged; copy "
                         "or write it again")
    try:
        return upgrade_checkpoint(ck)
    except (ValueError, TypeError, KeyError, RuntimeError) as e:
        raise ValueError(f"{path}: {e}" if str(path) not in str(e) else str(e)) from None


def upgrade_checkpoint(ck: Dict[str, Any]) -> Dict[str, Any]:
    """Bring a checkpoint dict to :data:`CHECKPOINT_VERSION` in place (and return it): a version-1 file with a
    forward-pixel global reinit net and a face size that is not a whole multiple of the loc size gets its reinit
    output layer rewritten (:func:`fold_legacy_frame`), so that it computes exactly the thetas it did before."""
    if isinstance(ck.get("config"), dict) and isinstance(ck.get("state_dict"), dict):
        upgrade_weights(VariantConfig.from_dict(ck["config"]), ck["state_dict"], ck.get("version", 0))
    ck["version"] = CHECKPOINT_VERSION
    return ck


def upgrade_weights(cfg: VariantConfig, state: Dict[str, torch.Tensor], version: int) -> None:
    """Bring weights written at checkpoint ``version`` (a checkpoint's, or a training state's) up to date in
    ``state``, in place: before :data:`FRAME_FIX_VERSION`, :func:`fold_legacy_frame`."""
    if version < FRAME_FIX_VERSION:
        fold_legacy_frame(cfg, state)


def fold_legacy_frame(cfg: VariantConfig, state: Dict[str, torch.Tensor]) -> bool:
    """Rewrite, in ``state``, the global reinit output layer of a network trained with the version-1 destination
    frame (:func:`glsr.models.reinit.forward_pixel_right` with ``legacy=True``) so that the current frame gives the
    same thetas. Returns whether anything changed (only forward-pixel nets with ``face_size / loc_size`` not whole).

    With ``A`` the raw theta as a ``dst_px_from_src_px`` affine and ``R`` the frame, the network samples with
    ``N ∘ inv(A) ∘ R``; ``A' = R_new ∘ inv(R_old) ∘ A`` keeps it, and ``A'`` is affine in ``A``, so it folds into
    the output layer's weight and bias exactly (in float64)."""
    from glsr.geometry import compose, invert_affine
    from glsr.models.reinit import FORWARD_PIXEL_UNIT, forward_pixel_right

    scale = cfg.face_size / cfg.loc_size
    weight, bias = f"{REINIT_OUTPUT}.weight", f"{REINIT_OUTPUT}.bias"
    if (cfg.theta_mode != "forward_pixel" or not cfg.global_reinit or scale == int(scale)
            or weight not in state or bias not in state):
        return False
    k = torch.tensor(compose(forward_pixel_right(cfg.loc_size, scale),
                             invert_affine(forward_pixel_right(cfg.loc_size, scale, legacy=True))), dtype=torch.float64)
    # raw' = m @ raw + c with raw = (a, b, tx/u, c, d, ty/u): K's linear part acts on each of the three columns
    m = torch.kron(k[:, :2], torch.eye(3, dtype=torch.float64))
    c = torch.zeros(6, dtype=torch.float64)
    c[2], c[5] = k[0, 2] / FORWARD_PIXEL_UNIT, k[1, 2] / FORWARD_PIXEL_UNIT
    w, b = state[weight], state[bias]
    state[weight] = (m @ w.to(torch.float64)).to(w.dtype)
    state[bias] = (m @ b.to(torch.float64) + c).to(b.dtype)
    return True


TRIM_KEY = "crop_trimmed_from"
"""``extra`` key of a checkpoint shipped at a trimmed crop: ``{"input_size", "context"}`` it was trained at."""


def trim_checkpoint_crop(ck: Dict[str, Any], size: Optional[int], align_loc: bool = False) -> Dict[str, Any]:
    """A copy of checkpoint dict ``ck`` whose input crop is ``size`` px (``None``: its present size) at the same
    centre and the pixel scale the weights were trained at, or with ``align_loc`` a scale whose pixels hold the loc
    image's (:func:`glsr.models.registry.trimmed_crop`); the weights are untouched. ``extra["crop_trimmed_from"]``
    keeps the crop the weights were trained at (the first one, when a trimmed file is trimmed again; none when the
    result is that crop again), so cards and users can tell the geometry shipped from the geometry trained."""
    cfg = VariantConfig.from_dict(ck["config"])
    extra = dict(ck.get("extra") or {})
    trained = extra.pop(TRIM_KEY, None) or {"input_size": cfg.input_size, "context": cfg.context}
    base = dataclasses.replace(cfg, input_size=int(trained["input_size"]), context=float(trained["context"]))
    size = cfg.input_size if size is None else int(size)
    new = base if size == base.input_size and not align_loc else trimmed_crop(base, size, align_loc)
    if new != base:
        extra[TRIM_KEY] = {"input_size": base.input_size, "context": base.context}
    return {**ck, "config": new.to_dict(), "extra": extra}


LOCAL_DROPPED_KEY = "local_stage_dropped"
"""``extra`` key of a checkpoint shipped without its local stage (:func:`drop_local_stage`): ``True``."""


def drop_local_stage(ck: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of checkpoint dict ``ck`` whose local stage is inert: every local regressor's last layer (weight and
    bias) set to exactly zero, so its increments are zero for any input and the landmarks are the global stage's;
    export and inference then neither export nor run the stage (:meth:`GLSRNet.inert_stages`).
    ``extra["local_stage_dropped"]`` says it was done at shipping. ``ValueError`` without a local stage."""
    last = re.compile(r"local_regress\.\d+\.fc\.2\.(weight|bias)")
    state = dict(ck["state_dict"])
    keys = [k for k in state if last.fullmatch(k)]
    if not keys:
        raise ValueError("the checkpoint has no local stage to drop")
    for k in keys:
        state[k] = torch.zeros_like(state[k])
    return {**ck, "state_dict": state, "extra": {**(ck.get("extra") or {}), LOCAL_DROPPED_KEY: True}}


def shipping_form(ck: Dict[str, Any], crop: Optional[int] = None, align_loc: bool = False,
                  drop_local: bool = False) -> Dict[str, Any]:
    """Checkpoint dict ``ck`` as ``glsr ship --crop PX --align-loc --drop-local`` writes it
    (:func:`trim_checkpoint_crop`, :func:`drop_local_stage`); ``ck`` itself when no option is given."""
    if crop is not None or align_loc:
        ck = trim_checkpoint_crop(ck, crop, align_loc)
    return drop_local_stage(ck) if drop_local else ck


def load_checkpoint(path: str | os.PathLike) -> GLSRNet:
    """Rebuild the network stored in a glsr checkpoint, a file or a shipped model's name (in eval mode)."""
    from glsr.shipped import resolve_model

    path = resolve_model(path)
    return model_from_checkpoint(read_checkpoint(path), path)


def model_from_checkpoint(ck: Dict[str, Any], path: str | os.PathLike) -> GLSRNet:
    """Rebuild the network of a checkpoint dict already read (and checked) from ``path`` (in eval mode)."""
    try:
        cfg = VariantConfig.from_dict(ck["config"])
        scheme = get_scheme(ck["scheme"])
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{path}: {e}; the file was edited, damaged or written by another glsr") from None
    state = ck["state_dict"]
    if not isinstance(state, dict) or not torch.is_tensor(state.get("mean_shape")):
        raise ValueError(f"{path}: glsr checkpoint without its weights (no state_dict / mean_shape)")
    check_finite_weights(state, str(path))
    try:
        model = GLSRNet(cfg, scheme, state["mean_shape"].numpy())
    except (ValueError, TypeError, KeyError, RuntimeError, AssertionError) as e:
        raise ValueError(f"{path}: its config and weights do not build variant {cfg.name!r} ({e.__class__.__name__}: "
                         f"{_first_line(str(e))}); the file was edited or damaged") from None
    own = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} (variant {cfg.name!r}: {tuple(own[k].shape)})" for k, v in state.items()
             if k in own and torch.is_tensor(v) and tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise ValueError(f"{path}: {len(wrong)} weight tensors have the wrong shape for its config (first: "
                         f"{wrong[0]}); the file was edited or damaged; copy or write it again")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match variant {cfg.name!r} "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    model.box_convention = str((ck.get("extra") or {}).get("box_convention", "") or "")
    return model.eval()
