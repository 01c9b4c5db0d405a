"""Single graphs against each other, end to end, in the same rounds (``python -m benchmarks.studies.graph_ab
--models A=FILE B=FILE``).

``host_warp`` times one model after another, minutes apart, and on this shared machine a graph's time moves by
0.2-0.4 ms between such windows: too much to see a 0.15 ms change. Here every model's single graph, exported by
``glsr export`` for onnxruntime and MNN, runs ``Predictor.predict`` on the first 300-W ``val`` face (image + tight
box -> landmarks, 1 thread, batch 1) in one set of interleaved rounds (:func:`glsr.bench.glue.min_of_round_medians`:
process CPU ms per call, min of the per-round medians), so the models share every window. Also recorded: how far
each model's landmarks are from the first model's on that face. Writes
``benchmarks/results/<machine>/graph_ab.{json,md}``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from benchmarks import loadavg, missing_300w, study_record, timing_line, write_record
from benchmarks.studies.host_warp import RUNTIMES, first_face
from glsr.bench.artifacts import private_cwd
from glsr.bench.glue import min_of_round_medians


def measure(models: List[List[str]], rounds: int, budget_s: float, work: Path) -> List[Dict[str, Any]]:
    from glsr.export import export_model
    from glsr.runtime.predictor import Predictor
    from glsr.shipped import resolve_weights

    image, box = first_face()
    runners, rows, points = {}, [], {}
    for i, (label, weights) in enumerate(models):
        path = resolve_weights(weights)
        with private_cwd():
            res = export_model(str(path), formats=list(RUNTIMES), out_dir=work / f"m{i}", parity=False, name="m")
        for art in res.artifacts:
            rt = Path(art).suffix[1:]
            pred = Predictor.from_file(art, threads=1)
            runners[f"{label}/{rt}"] = lambda p=pred: p.predict(image, box[None])
            points[(label, rt)] = pred.predict(image, box[None])[0]
            rows.append({"model": label, "weights": Path(path).name, "runtime": rt,
                         "input_size": pred.metadata.input_size})
    cpu: Dict[str, float] = {}
    wall = min_of_round_medians(runners, rounds, budget_s, cpu)
    first = models[0][0]
    for r in rows:
        key = f"{r['model']}/{r['runtime']}"
        r.update(cpu_ms=round(cpu[key], 4), wall_ms=round(wall[key], 4),
                 cpu_vs_first=round(cpu[key] / cpu[f"{first}/{r['runtime']}"], 4),
                 max_px_from_first=float(np.abs(points[(r["model"], r["runtime"])]
                                                - points[(first, r["runtime"])]).max()))
    return rows


def markdown(r: Dict[str, Any]) -> str:
    lines = ["# Single graphs end to end, in the same rounds", "", timing_line(r, "1 thread, batch 1"), "",
             "`Predictor.predict` on the first 300-W `val` face (photo + tight box -> landmarks) with each model's "
             "single graph as `glsr export` writes it; process CPU ms per call (wall in the JSON); landmarks: max "
             "distance from the first model's on that face, same runtime.", "",
             "| model | crop px | runtime | CPU ms | wall ms | against the first | landmarks from the first, px |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for row in r["rows"]:
        lines.append(f"| {row['model']} | {row['input_size']} | {row['runtime']} | {row['cpu_ms']:.3f} | "
                     f"{row['wall_ms']:.3f} | {row['cpu_vs_first']:.3f}x | {row['max_px_from_first']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", required=True, help="shipped names, .pt files or LABEL=FILE (two or more)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--time", type=float, default=4.0, help="seconds per timed figure, over all rounds")
    ap.add_argument("-o", "--out", default=None, help="default: benchmarks/results/<machine>")
    args = ap.parse_args(argv)
    if len(args.models) < 2:
        ap.error("--models: give two or more")
    if missing_300w():
        return 2
    named = [m.split("=", 1) if "=" in m else [Path(m).stem, m] for m in args.models]
    before = loadavg()
    with tempfile.TemporaryDirectory(prefix="glsr-graph-ab-") as tmp:
        rows = measure(named, args.rounds, args.time, Path(tmp))
    r = study_record("graph_ab", argv, before, rounds=args.rounds, rows=rows)
    write_record("graph_ab", r, markdown(r), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
