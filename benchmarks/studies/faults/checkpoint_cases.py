"""Fault cases on checkpoints and training runs: code planted in a checkpoint, NaN and damaged weights, a
diverging run, a corrupt or truncated resumable state, a full disk, two trainings into one folder."""
from __future__ import annotations

import resource
import shutil
from pathlib import Path
from typing import Callable, Tuple

import numpy as np

from benchmarks.studies.faults.harness import (TIMEOUT, TRAIN, Ctx, Run, box, finite_checkpoint, refused, short,
                                               traceback_of)
from benchmarks.studies.faults.inputs import overwrite_64_bytes, plant_evil


def evil_case(kind: str) -> Callable[[Ctx], Tuple[str, str]]:
    def fn(ctx: Ctx) -> Tuple[str, str]:
        ws = ctx.ws / f"evil-{kind.replace(' ', '-')}"
        ws.mkdir()
        marker = ws / "RAN"
        evil = plant_evil(ws / "evil.pt", marker)
        argv = {
            "predict": ["predict", ctx.ws / "face.jpg", "--weights", evil, *box(ctx)],
            "eval": ["eval", "--weights", evil, "--data", "procedural:68", "--samples", "2"],
            "export": ["export", "--weights", evil, "-o", ws / "out"],
            "parity": ["parity", "--weights", evil, ctx.ws / "onnx" / "m_fp32.onnx"],
            "train --init": ["train", "--out", ws / "run", "--init", evil, *TRAIN],
            "train --resume": ["train", "--out", ws / "run", "--resume", *TRAIN],
            "import-dpr": ["import-dpr", ws / "release", "-o", ws / "dpr.pt"],
        }[kind]
        if kind == "train --resume":
            plant_evil(ws / "run" / "last.pt", marker, position={})
        if kind == "import-dpr":
            (ws / "release").mkdir()
            np.save(ws / "release" / "mean_98_face.npy", np.zeros(196))
            for n in ("98_points_global_reinit.pth.tar", "98_points_global_regress.pth.tar"):
                plant_evil(ws / "release" / n, marker, state_dict={})
        r = ctx.run(argv)
        named = {"import-dpr": "release", "train --resume": "last.pt"}.get(kind, "evil.pt")
        status, note = refused(r, [named])
        if marker.exists():
            return ("traceback" if status == "traceback" else "silent"), f"the planted command RAN; {note}"
        return status, note
    return fn


def train_lr1000(ctx: Ctx) -> Tuple[str, str]:
    out = ctx.ws / "nanrun"
    r = ctx.run(["train", "--out", out, *TRAIN, "--lr", "1000", "--max-steps", "5", "--batch-size", "8"])
    finite = finite_checkpoint(out / "model.pt")
    if finite is False:
        return "silent", f"exit {r.rc}, model.pt holds NaN"
    status, note = refused(r, ["diverged", "--lr"])
    return status, note + ("" if finite is None else "; model.pt finite")


def zeroed_checkpoint(ctx: Ctx) -> Tuple[str, str]:
    bad = ctx.ws / "zeroed.pt"
    shutil.copy(ctx.ws / "m.pt", bad)
    overwrite_64_bytes(bad, b"\x00")
    r = ctx.run(["predict", ctx.ws / "face.jpg", "--weights", bad, *box(ctx)])
    if r.rc == 0:
        return "silent", "exit 0: landmarks from the damaged weights, no word"
    return refused(r, ["zeroed.pt", "corrupt"])


def tiny_run(ctx: Ctx) -> Path:
    run = ctx.ws / "run0"
    if not (run / "model.pt").is_file():
        r = ctx.run(["train", "--out", run, *TRAIN, "--batch-size", "4", "--lr", "0.002"])
        if r.rc != 0:
            raise RuntimeError(f"the reference training run failed: {r.err[-500:]}")
    return run


def resume_corrupt(ctx: Ctx) -> Tuple[str, str]:
    run = ctx.ws / "corrupt-run"
    shutil.copytree(tiny_run(ctx), run)
    overwrite_64_bytes(run / "last.pt", b"\xff")
    (run / "model.pt").unlink()
    r = ctx.run(["train", "--out", run, "--resume", *TRAIN, "--batch-size", "4", "--lr", "0.002"])
    tb = traceback_of(r)
    if tb:
        return "traceback", tb
    finite = finite_checkpoint(run / "model.pt")
    if r.rc == 0 and finite is False:
        return "silent", "exit 0, the resumed model.pt holds NaN"
    if r.rc == 0 and finite and "unusable" in r.err:
        return "clean", f"exit 0, model.pt finite: {short(next(x for x in r.err.splitlines() if 'unusable' in x))}"
    return refused(r, ["last.pt"])


def resume_truncated(ctx: Ctx) -> Tuple[str, str]:
    run = ctx.ws / "trunc-run"
    shutil.copytree(tiny_run(ctx), run)
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 2])
    (run / "model.pt").unlink()
    r = ctx.run(["train", "--out", run, "--resume", *TRAIN, "--batch-size", "4", "--lr", "0.002"])
    tb = traceback_of(r)
    if tb:
        return "traceback", tb
    if r.rc == 0 and (run / "model.pt").is_file() and "unusable" in r.err:
        return "clean", f"exit 0: {short(next(x for x in r.err.splitlines() if 'unusable' in x))}"
    return refused(r, ["last.pt"])


def full_disk_training(ctx: Ctx) -> Tuple[str, str]:
    out = ctx.ws / "fsize-run"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    r = ctx.run(["train", "--out", out, *TRAIN, "--batch-size", "4"], preexec_fn=limit)
    status, note = refused(r, ["File too large", "--resume"])
    tmp = [p.name for p in out.rglob("*.tmp")] if out.is_dir() else []
    if tmp and status == "clean":
        return "partial", f"{note}; left {tmp}"
    return status, note


def two_trainings(ctx: Ctx) -> Tuple[str, str]:
    out = ctx.ws / "shared-run"
    procs = [ctx.popen(["train", "--out", out, *TRAIN, "--batch-size", "4", "--seed", str(s)]) for s in (1, 2)]
    res = [p.communicate(timeout=TIMEOUT) for p in procs]
    runs = [Run(p.returncode, o, e, 0) for p, (o, e) in zip(procs, res)]
    for r in runs:
        if traceback_of(r):
            return "traceback", traceback_of(r)
    codes = sorted(r.rc for r in runs)
    if codes == [0, 0]:
        return "partial", "both exit 0 into one folder (config.json, model.pt, metrics.jsonl of both runs)"
    if codes == [0, 2]:
        loser = next(r for r in runs if r.rc == 2)
        return refused(loser, ["in use", str(out)])
    return "unclear", f"exit codes {codes}"

