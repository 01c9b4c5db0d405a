"""Safety of a training run folder: reading the resumable state without running code, falling back to the last
good stage checkpoint when the state is unreadable or non-finite, the RNG states as plain data, and the
divergence error.

The resumable ``last.pt`` holds tensors and plain Python data only, so it loads with ``torch.load(...,
weights_only=True)``. States written before the numpy RNG state was stored as plain data hold a numpy array;
they load through an explicit allowlist of exactly the numpy globals that array needs (:data:`LEGACY_NUMPY_GLOBALS`).
"""
from __future__ import annotations

import contextlib
import os
import random
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from glsr import atomic
from glsr.models.checkpoint import CHECKPOINT_FORMAT, UnsafeCheckpointError, nonfinite_tensors, torch_load_safe
from glsr.train.runfiles import STAGE_FILE, STAGE_GLOB, STATE_FILE


def _legacy_numpy_globals() -> List[Any]:
    core = getattr(np, "_core", None) or np.core
    out = [core.multiarray._reconstruct, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        out.append(dtypes.UInt32DType)
    return out


LEGACY_NUMPY_GLOBALS = _legacy_numpy_globals()
"""What ``np.random.get_state()`` pickles into: the array rebuild function, ``ndarray`` and the uint32 dtype."""


RUN_LOCK = ".glsr-run.lock"
"""Lock file of a run folder while a process trains into it (removed when it ends; the lock itself is released by
the operating system even when the process is killed)."""


@contextlib.contextmanager
def run_folder_lock(out: str | os.PathLike) -> Iterator[None]:
    """Exclusive use of the run folder ``out`` (created if missing) by this process; torchrun ranks other than 0
    share rank 0's. A second ``glsr train --out`` on the folder gets one line naming the holder. When the block
    fails, the folders this call created (``out`` and missing parents) are removed while empty: a run that cannot
    start (a bad ``--init`` or ``--data``) leaves nothing behind, a folder the user made stays."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    out = Path(out)
    created = [d for d in (out, *out.parents) if not d.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(out)) from None
    try:
        with atomic.exclusive(out / RUN_LOCK, f"run folder {out}",
                              "wait for that run to finish (then --resume continues it), or choose another --out"):
            yield
    except BaseException:
        for d in created:
            if not d.is_dir() or any(d.iterdir()):
                break
            d.rmdir()
        raise


class TrainingDivergedError(ValueError):
    """A loss, gradient norm or weight went non-finite; the run stops without writing the broken weights."""


def numpy_rng_state() -> Dict[str, Any]:
    """``np.random.get_state()`` as plain data (a string, an int64 tensor, numbers)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)}


def set_numpy_rng_state(s: Any) -> None:
    """Restore :func:`numpy_rng_state` (or the raw tuple of a legacy state)."""
    if isinstance(s, dict):
        keys = np.asarray(s["keys"].numpy() if torch.is_tensor(s["keys"]) else s["keys"], dtype=np.uint32)
        s = (s["kind"], keys, s["pos"], s["has_gauss"], s["cached_gaussian"])
    np.random.set_state(s)


def diverged_message(out: Path, stage: str, step: int, values: Dict[str, float], lr: float) -> str:
    """One line for a non-finite training step: where, what, what was kept, what to do."""
    shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items() if k in ("loss", "grad_norm") or not np.isfinite(v))
    return (f"training diverged in stage {stage} at step {step}: {shown} (learning rate {lr:.4g}); nothing was "
            f"written from the broken weights and {_kept(out)} in {out}; lower --lr (or --lr-last) and start again "
            "in a new --out")


def check_finite_model(model: torch.nn.Module, where: str) -> None:
    """:class:`TrainingDivergedError` when any parameter or buffer of ``model`` is NaN or infinite."""
    bad = nonfinite_tensors(model.state_dict())
    if bad:
        raise TrainingDivergedError(f"training diverged {where}: {len(bad)} weight tensors hold NaN or infinity "
                                    f"(first: {bad[0]}); nothing was written from them")


def _kept(out: Path) -> str:
    kept = [p.name for p in [out / STATE_FILE] + [c[2] for c in stage_checkpoints(out)] if p.is_file()]
    return f"the last good state is kept ({', '.join(kept)})" if kept else "no state had been saved yet"


def check_finite_outputs(model: torch.nn.Module, where: str, out: Optional[Path] = None, batch: int = 4) -> None:
    """:class:`TrainingDivergedError` when ``model`` in eval mode turns a fixed batch of normalized noise crops into
    NaN or infinite landmarks. Weights can stay finite while the outputs do not (weights or BatchNorm running
    statistics blown up by a far too high learning rate): the training loss, computed in train mode on batch
    statistics, then looks finite, and only a model in use would show it. ``out``: the run folder, to say what was
    kept. Uses its own random generator (the training's random streams are untouched)."""
    size = int(model.cfg.input_size)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    modes = [(m, m.training) for m in model.modules()]  # frozen sub-modules stay in eval mode while training
    try:
        with torch.no_grad():
            landmarks = model.eval()(x.to(next(model.parameters()).device))
    finally:
        for m, training in modes:
            m.training = training
    bad = int((~torch.isfinite(landmarks)).flatten(1).any(1).sum())
    if bad:
        keep = f" and {_kept(out)} in {out}" if out is not None else ""
        raise TrainingDivergedError(f"training diverged {where}: the weights are finite but the model's landmarks "
                                    f"are NaN or infinity for {bad} of {batch} probe crops; nothing was written from "
                                    f"them{keep}; lower --lr (or --lr-last) and start again in a new --out")


def read_state(path: Path, state_format: str) -> Dict[str, Any]:
    """The resumable state at ``path``; ``ValueError`` naming it when unreadable, foreign or non-finite."""
    try:
        state = torch_load_safe(path, "training state")
    except UnsafeCheckpointError as e:
        if "numpy" not in str(e):
            raise
        state = torch_load_safe(path, "training state", allow=LEGACY_NUMPY_GLOBALS)
    if not isinstance(state, dict) or state.get("format") != state_format:
        raise ValueError(f"{path} is not a glsr training state")
    bad = nonfinite_tensors({"model": state.get("model"), "optimizer": state.get("optimizer")})
    if bad:
        raise ValueError(f"{path} holds NaN or infinity in {len(bad)} tensors (first: {bad[0]}): it is corrupt")
    return state


def stage_checkpoints(out: Path) -> List[Tuple[int, str, Path]]:
    """``(stage number, name, path)`` of the stage checkpoints in a run folder, in stage order."""
    found = []
    for p in out.glob(STAGE_GLOB):
        m = STAGE_FILE.fullmatch(p.name)
        if m:
            found.append((int(m.group(1)), m.group(2), p))
    return sorted(found)


def fallback_state(out: Path, state_path: Path, problem: str, state_format: str) -> Dict[str, Any]:
    """A resumable state rebuilt from the newest readable, finite stage checkpoint of ``out``: its weights, its
    training config and history, positioned at the start of the next stage (fresh optimizer, current RNG).

    Says on stderr which checkpoint it falls back to; ``ValueError`` when there is none.
    """
    stages = stage_checkpoints(out)
    reasons = []
    for k, (number, name, path) in reversed(list(enumerate(stages))):
        try:
            ck = torch_load_safe(path, "stage checkpoint")
            if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
                raise ValueError(f"{path} is not a glsr checkpoint")
            extra = ck.get("extra") or {}
            if not isinstance(extra.get("train_config"), dict):
                raise ValueError(f"{path} carries no training config")
            bad = nonfinite_tensors(ck["state_dict"])
            if bad:
                raise ValueError(f"{path} holds NaN or infinity")
        except (ValueError, FileNotFoundError) as e:
            reasons.append(str(e))
            continue
        history = extra.get("history") or {"stages": []}
        history["stages"] = [s for s in history.get("stages", []) if STAGE_FILE.search(str(s.get("checkpoint", "")))
                             and int(STAGE_FILE.search(str(s["checkpoint"])).group(1)) <= number]
        step = max([int(s.get("global_step", 0)) for s in history["stages"]] or [0])
        print(f"glsr train: {state_path} is unusable ({problem}); resuming from the end of stage {number} "
              f"({path.name}, step {step}) instead: later steps are trained again", file=sys.stderr)
        pos = {"plan": k + 1, "epoch": 0, "batch": 0, "stage_step": 0, "global_step": step, "stage_complete": False,
               "stn_active": {"stn_g": True, "stn_l": True}, "sums": {}, "count": 0}
        return {"format": state_format, "version": ck.get("version", 1), "config": extra["train_config"],
                "position": pos, "model": ck["state_dict"], "optimizer": None, "scheduler": None, "scaler": None,
                "rng": None, "history": history, "fallback": str(path)}
    more = f" ({'; '.join(reasons)})" if reasons else ""
    raise ValueError(f"{state_path} is unusable ({problem}) and no readable stage checkpoint of {out} can replace "
                     f"it{more}; start the run again in a new --out")


def load_resumable(out: Path, state_path: Path, state_format: str) -> Dict[str, Any]:
    """:func:`read_state`, or :func:`fallback_state` when the state file is unreadable, corrupt or non-finite."""
    try:
        return read_state(state_path, state_format)
    except UnsafeCheckpointError:
        raise
    except ValueError as e:
        problem = str(e).replace(str(state_path), "").replace("; copy or write it again", "").strip(" :")
        return fallback_state(out, state_path, problem, state_format)


def rng_state() -> Dict[str, Any]:
    """The torch, numpy, Python (and CUDA) random states of this process, as plain data."""
    return {"torch": torch.get_rng_state(), "numpy": numpy_rng_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(s: Optional[Dict[str, Any]]) -> None:
    """Restore :func:`rng_state` (``None``: nothing to restore)."""
    if s is None:  # resumed from a stage checkpoint (runstate.fallback_state): no RNG state was saved there
        return
    torch.set_rng_state(s["torch"])
    set_numpy_rng_state(s["numpy"])
    random.setstate(s["python"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])

