"""Host-warp mode against the single graph and against the sub-networks alone (``python -m
benchmarks.studies.host_warp [--models small small-fast] [--rounds 3] [--time 1.5]``).

For each model, one thread, batch 1, on one real 300-W ``val`` face (``../shared``), in interleaved rounds (each
figure is the lowest of its per-round medians, so a burst of other load hits one round, not the comparison):

* ``subnets``: every learned sub-network the model runs (:meth:`glsr.models.GLSRNet.sub_networks` after
  :meth:`~glsr.models.GLSRNet.without_inert_stages`) exported alone and run on random input, summed -- the floor
  with no resampling or theta algebra at all;
* ``graph``: the single-graph artifact through ``Predictor`` -- crop (host) + network (the graph);
* ``host-warp``: the host-warp artifact through ``Predictor`` -- crop (the loc warp) + network (the reinit, global
  and local graphs, the host's face and part warps and its local assembly);

for onnxruntime and MNN. Glue = (crop + network) / subnets - 1: what building the inputs of the networks costs
beyond the networks themselves (the goal: <= 15 % for the paper-size ``small``). Writes
``benchmarks/results/<machine>/host_warp.{json,md}``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np

from benchmarks import loadavg, missing_300w, study_record, timing_line, write_record
from benchmarks.goals import GLUE_GOAL
from glsr.bench.artifacts import private_cwd
from glsr.bench.glue import min_of_round_medians, subnet_runners
from glsr.paths import SHARED

RUNTIMES = ("onnx", "mnn")


def first_face():
    """The first face of the 300-W ``val`` split: ``(image, tight box)``."""
    import cv2

    from glsr import geometry as geo
    from glsr.train.datasets import open_dataset

    rec = open_dataset(f"300w:{SHARED / 'data' / '300w'}", split="val")[0]
    return cv2.imread(rec.image_path), geo.tight_box(np.asarray(rec.landmarks))


def measure(name: str, weights: str, image: np.ndarray, box: np.ndarray, work: Path, rounds: int,
            budget_s: float) -> Dict[str, Any]:
    from glsr.export import export_model
    from glsr.models import load_checkpoint
    from glsr.runtime.predictor import Predictor
    from glsr.shipped import resolve_weights

    weights = resolve_weights(weights)
    model = load_checkpoint(weights).eval()
    model = getattr(model, "without_inert_stages", lambda: model)()  # the sub-networks the artifacts run
    arts = {}
    with private_cwd():
        for mode in ("graph", "host-warp"):
            res = export_model(str(weights), formats=list(RUNTIMES), out_dir=work / mode, parity=False, name="m",
                               host_warp=mode == "host-warp")
            for p in res.artifacts:
                arts[(mode, Path(p).suffix[1:])] = Path(p)
    out: Dict[str, Any] = {"model": name, "weights": Path(weights).name, "variant": model.cfg.name,
                           "stages": " > ".join(getattr(model, "stages", model.cfg.stages)),
                           "input_size": model.cfg.input_size, "face_size": model.cfg.face_size,
                           "part_size": model.cfg.part_size, "runtimes": {}}
    for rt in RUNTIMES:
        runners = {f"sub:{k}": fn for k, fn in subnet_runners(model, rt, 1, work / "subnets").items()}
        for mode in ("graph", "host-warp"):
            pred = Predictor.from_file(arts[(mode, rt)], threads=1)
            x, m, b = pred.crop(image, box)
            runners[f"{mode}:crop"] = (lambda p=pred: p.crop(image, box))
            runners[f"{mode}:net"] = (lambda p=pred, x=x: p.run(x))
            runners[f"{mode}:uncrop"] = (lambda p=pred, y=pred.run(x), m=m, b=b: p.uncrop(y, m, b))
        cpu: Dict[str, float] = {}
        best = min_of_round_medians(runners, rounds, budget_s, cpu)
        subnets = {k[4:]: round(v, 4) for k, v in best.items() if k.startswith("sub:")}
        total = sum(subnets.values())
        cpu_total = sum(v for k, v in cpu.items() if k.startswith("sub:"))
        rec: Dict[str, Any] = {"subnets_ms": subnets, "subnets_sum_ms": round(total, 4),
                               "subnets_sum_cpu_ms": round(cpu_total, 4)}
        for mode in ("graph", "host-warp"):
            crop, net, unc = (best[f"{mode}:{s}"] for s in ("crop", "net", "uncrop"))
            c_crop, c_net, c_unc = (cpu[f"{mode}:{s}"] for s in ("crop", "net", "uncrop"))
            rec[mode] = {"crop_ms": round(crop, 4), "net_ms": round(net, 4), "uncrop_ms": round(unc, 4),
                         "sum_ms": round(crop + net + unc, 4), "glue_ms": round(crop + net - total, 4),
                         "glue": round((crop + net) / total - 1, 4),
                         "cpu": {"crop_ms": round(c_crop, 4), "net_ms": round(c_net, 4), "uncrop_ms": round(c_unc, 4),
                                 "sum_ms": round(c_crop + c_net + c_unc, 4),
                                 "glue": round((c_crop + c_net) / cpu_total - 1, 4)}}
        out["runtimes"][rt] = rec
        print(f"{name} {rt}: subnets {total:.3f} ms; graph {rec['graph']['sum_ms']:.3f} ms (glue "
              f"{rec['graph']['glue']:+.0%}); host-warp {rec['host-warp']['sum_ms']:.3f} ms (glue "
              f"{rec['host-warp']['glue']:+.0%})", file=sys.stderr)
    return out


def markdown(r: Dict[str, Any]) -> str:
    env = r["environment"]
    lines = ["# Host-warp mode against the single graph and the sub-networks alone", "",
             timing_line(r, f"1 thread, batch 1; onnxruntime {env['libraries'].get('onnxruntime')}, MNN "
                            f"{env['libraries'].get('MNN')}"), "",
             "One real 300-W `val` face. crop / net / uncrop: the `Predictor` stages (host-warp: crop = the loc warp "
             "from the photo; net = the reinit, global and local graphs, the host's face and part warps and its "
             "local assembly). Glue = (crop + net) / "
             f"sub-networks alone - 1; goal <= {GLUE_GOAL:.0%} for the paper-size `small`.", "",
             "| model | runtime | sub-networks ms | graph: crop + net + uncrop ms | graph glue | host-warp: crop + "
             "net + uncrop ms | host-warp glue | host-warp / graph |",
             "|---|---|---:|---|---:|---|---:|---:|"]
    for m in r["models"]:
        for rt, v in m["runtimes"].items():
            g, h = v["graph"], v["host-warp"]
            lines.append(f"| {m['model']} ({m['input_size']} px crop, {m['face_size']} px face) | {rt} | "
                         f"{v['subnets_sum_ms']:.3f} | {g['crop_ms']:.3f} + {g['net_ms']:.3f} + {g['uncrop_ms']:.3f}"
                         f" = {g['sum_ms']:.3f} | {g['glue']:+.0%} | {h['crop_ms']:.3f} + {h['net_ms']:.3f} + "
                         f"{h['uncrop_ms']:.3f} = {h['sum_ms']:.3f} | {h['glue']:+.0%} | "
                         f"{h['sum_ms'] / g['sum_ms']:.2f}x |")
    lines += ["", "The same figures in process CPU time per call (1 thread: what each call computes, without the time "
              "other processes of a shared machine take the core away; the robust figure when the load average "
              "is above the core count):", "",
              "| model | runtime | sub-networks cpu ms | graph cpu ms | graph glue (cpu) | host-warp cpu ms | "
              "host-warp glue (cpu) |", "|---|---|---:|---:|---:|---:|---:|"]
    for m in r["models"]:
        for rt, v in m["runtimes"].items():
            if "subnets_sum_cpu_ms" not in v:
                continue
            g, h = v["graph"]["cpu"], v["host-warp"]["cpu"]
            lines.append(f"| {m['model']} | {rt} | {v['subnets_sum_cpu_ms']:.3f} | {g['sum_ms']:.3f} | "
                         f"{g['glue']:+.0%} | "
                         f"{h['sum_ms']:.3f} | {h['glue']:+.0%} |")
    lines += ["", "Sub-networks alone (ms):", ""]
    for m in r["models"]:
        for rt, v in m["runtimes"].items():
            lines.append(f"- {m['model']} {rt} (stages run: {m.get('stages', '?')}): "
                         + ", ".join(f"{k} {t:.3f}" for k, t in v["subnets_ms"].items()))
    return "\n".join(lines) + "\n"


def face_study_main(study: str, doc: str, measure: Callable[..., Dict[str, Any]], markdown: Callable[[Dict], str],
                    argv: List[str] | None, rounds: int, budget_s: float) -> int:
    """The command line of a timing study that measures each of ``--models`` on :func:`first_face`:
    ``measure(label, weights, image, box, work, rounds, budget_s)`` per model, one record ``study`` written with
    ``markdown``; ``rounds`` / ``budget_s`` are the defaults of ``--rounds`` / ``--time``."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["small", "small-fast"],
                    help="shipped names, .pt files or LABEL=FILE")
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--time", type=float, default=budget_s, help="seconds per timed figure, over all rounds")
    ap.add_argument("-o", "--out", default=None, help="default: benchmarks/results/<machine>")
    args = ap.parse_args(argv)
    if missing_300w():
        return 2
    image, box = first_face()
    before = loadavg()
    with tempfile.TemporaryDirectory(prefix=f"glsr-{study}-") as tmp:
        named = [m.split("=", 1) if "=" in m else (Path(m).stem, m) for m in args.models]
        models = [measure(label, w, image, box, Path(tmp) / f"m{i}", args.rounds, args.time)
                  for i, (label, w) in enumerate(named)]
    r = study_record(study, argv, before, rounds=args.rounds, models=models)
    write_record(study, r, markdown(r), args.out)
    return 0


def main(argv: List[str] | None = None) -> int:
    return face_study_main("host_warp", __doc__, measure, markdown, argv, rounds=3, budget_s=1.5)


if __name__ == "__main__":
    sys.exit(main())
