"""The benchmark worker: ``python -m glsr.bench.worker --task NAME --spec JSON`` runs one task (a case, a glue
measurement, a profile, a per-face case) in a fresh interpreter and prints its JSON record; the parent side is
:func:`glsr.bench.isolate.run_isolated`. This module imports the tasks; the tasks never import it."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

from glsr.bench.artifacts import build_model
from glsr.bench.cases import Case, run_case
from glsr.bench.glue import glue_overhead
from glsr.bench.int8 import int8_profile_task
from glsr.bench.isolate import run_isolated
from glsr.bench.latency import face_task
from glsr.bench.profile import profile_mnn, profile_onnx

__all__ = ["TASKS", "glue_task", "profile_task", "run_case_isolated", "run_isolated"]


def run_case_isolated(case: Case, timeout_s: float = 900) -> Dict[str, Any]:
    """:func:`run_case` in a fresh interpreter (``python -m glsr.bench.worker --task case --spec JSON``)."""
    return run_isolated("case", dataclasses.asdict(case), case.key(), timeout_s)


def glue_task(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Worker: :func:`glue_overhead` for ``spec`` = variant, scheme, checkpoint, whole {fmt: path}, threads,
    work, budget_s, rounds (the model is rebuilt; sub-network speed does not depend on weights)."""
    import torch

    torch.manual_seed(0)
    model = build_model(spec["variant"], spec.get("scheme", "68"), spec.get("checkpoint"))
    return glue_overhead(model, {k: Path(v) for k, v in spec["whole"].items()}, int(spec["threads"]),
                         Path(spec["work"]), float(spec["budget_s"]), runtimes=spec.get("runtimes", ("onnx", "mnn")),
                         rounds=int(spec.get("rounds", 3)))


def profile_task(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Worker: :func:`profile_onnx` / :func:`profile_mnn` of ``spec["path"]`` at ``spec["threads"]``."""
    path, threads = Path(spec["path"]), int(spec.get("threads", 1))
    return profile_onnx(path, threads) if spec["format"] == "onnx" else profile_mnn(path, threads)


TASKS: Dict[str, Callable[[Dict[str, Any]], Dict[str, Any]]] = {
    "case": lambda spec: run_case(Case(**spec)), "glue": glue_task, "profile": profile_task, "face": face_task,
    "int8_profile": int8_profile_task}


def _main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="benchmark worker: run one task and print its JSON record")
    ap.add_argument("--task", required=True, choices=sorted(TASKS))
    ap.add_argument("--spec", required=True, help="JSON arguments of the task")
    args = ap.parse_args(argv)
    print(json.dumps(TASKS[args.task](json.loads(args.spec))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
