"""Training throughput per stage on this machine (``python -m benchmarks.studies.train_throughput``).

Builds the trainer for a variant on the 300-W ``fit`` faces (``../shared``; procedural faces at the paper's sizes
when it is absent), then times, per stage, one optimizer step's forward + backward + update on a batch (median of
``--repeats``), with the default NCHW layout and with ``channels_last`` (what the trainer uses on CPU), at 1 and 2
threads; and the data pipeline alone (read, augment, crop, normalize) per sample. Samples/s = batch / step time.
Writes ``benchmarks/results/<machine>/train_throughput.{json,md}`` atomically.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from typing import Any, Dict, List

import numpy as np
import torch

from glsr import atomic
from glsr.paths import SHARED


def _batch(trainer: Any, size: int) -> Dict[str, torch.Tensor]:
    items = [trainer.data[(0, i)] for i in range(size)]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def time_stage(trainer: Any, plan: Any, batch: Dict[str, torch.Tensor], channels_last: bool, repeats: int) -> float:
    from glsr.train.trainer import StageModule

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    trainer.model.to(memory_format=fmt)
    groups = trainer._set_trainable(plan)
    opt = torch.optim.SGD(groups, lr=1e-6, momentum=0.9)
    module = StageModule(trainer.model, plan, trainer.loss, trainer.templates, trainer.cfg.targets.local_transform,
                         {"stn_g": True, "stn_l": True})
    crop = batch["crop"].contiguous(memory_format=fmt)
    times = []
    for k in range(repeats + 1):
        t0 = time.perf_counter()
        terms = module(crop, batch["landmarks_loc"], batch.get("theta_g_target"))
        loss = sum(t.float() for t in terms.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if k:  # the first step warms up
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def measure(variant: str, batch_size: int, repeats: int, threads: List[int]) -> Dict[str, Any]:
    from glsr.train.config import StageConfig, TrainConfig
    from glsr.train.trainer import Trainer

    data = SHARED / "data" / "300w"
    spec = f"300w:{data}" if data.is_dir() else "procedural:68"
    cfg = TrainConfig(variant=variant, data=spec, train_split="fit" if data.is_dir() else None, batch_size=batch_size,
                      progress=False, tensorboard=False, stages=tuple(StageConfig(1, 0.01) for _ in range(4)))
    if not data.is_dir():
        from glsr.train.config import ModelOverrides
        cfg = replace(cfg, model=ModelOverrides(), samples=200)
    trainer = Trainer(cfg, tempfile.mkdtemp(prefix="glsr-throughput-"))
    t0 = time.perf_counter()
    batch = _batch(trainer, batch_size)
    data_ms = 1000 * (time.perf_counter() - t0) / batch_size
    rows = []
    for n in threads:
        torch.set_num_threads(n)
        for plan in trainer.plans:
            for cl in (False, True):
                s = time_stage(trainer, plan, batch, cl, repeats)
                rows.append({"stage": plan.name, "threads": n, "channels_last": cl, "step_s": s,
                             "samples_per_s": batch_size / (s + batch_size * data_ms / 1000)})
    return {"variant": variant, "data": spec, "batch": batch_size, "data_ms_per_sample": data_ms, "rows": rows}


def markdown(r: Dict[str, Any], command: str) -> str:
    lines = [f"# Training throughput: `{r['variant']}` on {r['data']}", "", f"`{command}`", "",
             f"Batch {r['batch']}; data pipeline {r['data_ms_per_sample']:.2f} ms per sample (one process, no "
             "workers). Samples/s counts the step plus the data time of its batch.", "",
             "| stage | threads | layout | step (s) | samples/s |", "|---|---:|---|---:|---:|"]
    for row in r["rows"]:
        lines.append(f"| {row['stage']} | {row['threads']} | {'channels_last' if row['channels_last'] else 'NCHW'} | "
                     f"{row['step_s']:.3f} | {row['samples_per_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: List[str] | None = None) -> int:
    from benchmarks import machine_results_dir
    from glsr.bench.machine import cpu_info, library_versions

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="small")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", help="output path without suffix (default: the machine's results folder)")
    args = ap.parse_args(argv)
    r = measure(args.variant, args.batch_size, args.repeats, args.threads)
    command = "python -m benchmarks.studies.train_throughput " + " ".join(argv if argv is not None else sys.argv[1:])
    r.update(command=command, machine=cpu_info(), libraries=library_versions())
    out = args.out or str(machine_results_dir() / f"train_throughput-{args.variant}")
    atomic.write_text(out + ".json", json.dumps(r, indent=2) + "\n")
    atomic.write_text(out + ".md", markdown(r, command))
    print(markdown(r, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
