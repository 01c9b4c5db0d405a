"""Several faces in one image: per-face cost at 1, 4 and 16 faces (``python -m benchmarks.studies.many_faces
[--models small-fast] [--faces 1 4 16] [--rounds 3] [--time 1.0]``).

For each model, runtime (onnxruntime, MNN) and form (single graph, host-warp), one thread, ``Predictor.predict``
(image + boxes -> landmarks in image pixels) on one real 300-W ``val`` photo with ``N`` face boxes (the face's tight
box shifted by a few pixels each, so every crop differs), for two exports of the same weights:

* ``batch 1``: the default artifact; ``Predictor`` runs it once per face (per graph, in host-warp mode);
* ``dynamic``: ``glsr export --batch dynamic``; ``Predictor`` sends all faces of the image in one call per graph.

Per-face ms = predict time / N, min of the per-round medians over interleaved rounds
(:func:`glsr.bench.glue.min_of_round_medians`). Writes ``benchmarks/results/<machine>/many_faces.{json,md}``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from benchmarks import loadavg, missing_300w, study_record, write_record
from glsr.bench.artifacts import private_cwd
from glsr.bench.glue import min_of_round_medians

RUNTIMES = ("onnx", "mnn")
MODES = ("graph", "host-warp")
BATCHES = ("1", "dynamic")


def face_boxes(box: np.ndarray, n: int, image_shape) -> np.ndarray:
    """``n`` boxes: ``box`` shifted by up to 6 px in a fixed pattern, clipped to stay inside the image."""
    h, w = image_shape[:2]
    rng = np.random.default_rng(0)
    shifts = np.concatenate([[[0.0, 0.0]], rng.uniform(-6, 6, (max(n - 1, 0), 2))])[:n]
    out = np.tile(np.asarray(box, dtype=np.float64), (n, 1))
    out[:, [0, 2]] += shifts[:, :1]
    out[:, [1, 3]] += shifts[:, 1:]
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, w - 1)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, h - 1)
    return out


def measure(name: str, weights: str, image: np.ndarray, box: np.ndarray, counts: List[int], work: Path,
            rounds: int, budget_s: float) -> Dict[str, Any]:
    from glsr.export import export_model
    from glsr.runtime.predictor import Predictor
    from glsr.shipped import resolve_weights

    weights = resolve_weights(weights)
    arts: Dict[tuple, Path] = {}
    with private_cwd():
        for mode in MODES:
            for batch in BATCHES:
                res = export_model(str(weights), formats=list(RUNTIMES), out_dir=work / f"{mode}-{batch}",
                                   parity=False, name="m", host_warp=mode == "host-warp", batch=batch)
                for p in res.artifacts:
                    arts[(mode, batch, Path(p).suffix[1:])] = Path(p)
    boxes = face_boxes(box, max(counts), image.shape)
    out: Dict[str, Any] = {"model": name, "weights": Path(weights).name, "runtimes": {}}
    for rt in RUNTIMES:
        runners = {}
        preds = {(mode, batch): Predictor.from_file(arts[(mode, batch, rt)], threads=1)
                 for mode in MODES for batch in BATCHES}
        for mode in MODES:
            for batch in BATCHES:
                for n in counts:
                    # one predictor per face count: a dynamic-batch session keeps its shapes between calls with
                    # the same count (as in a video), while one fed 1, 4, 16 in turn would re-plan every call
                    pred = Predictor.from_file(arts[(mode, batch, rt)], threads=1)
                    runners[f"{mode}|{batch}|{n}"] = (lambda p=pred, b=boxes[:n]: p.predict(image, b))
        # the two exports of a form give the same landmarks (to the float summation order a batch changes in MNN)
        for mode in MODES:
            a, b = (preds[(mode, batch)].predict(image, boxes) for batch in BATCHES)
            if np.abs(a - b).max() > 0.05:
                raise RuntimeError(f"{name} {rt} {mode}: batch 1 and dynamic exports differ by "
                                   f"{np.abs(a - b).max()} px")
        cpu: Dict[str, float] = {}
        best = min_of_round_medians(runners, rounds, budget_s, cpu)
        rec: Dict[str, Any] = {}
        for key, ms in best.items():
            mode, batch, n = key.split("|")
            rec.setdefault(mode, {}).setdefault(batch, {})[n] = round(ms / int(n), 4)
            rec[mode].setdefault(f"{batch} cpu", {})[n] = round(cpu[key] / int(n), 4)
        out["runtimes"][rt] = rec
        for mode in MODES:
            print(f"{name} {rt} {mode}: per face (cpu) " + "; ".join(
                f"batch {b}: " + ", ".join(f"{n} faces {v:.3f} ms" for n, v in rec[mode][f"{b} cpu"].items())
                for b in BATCHES), file=sys.stderr)
    return out


def markdown(r: Dict[str, Any]) -> str:
    env = r["environment"]
    counts = r["faces"]
    lines = ["# Several faces in one image: per-face cost", "",
             f"{env['date']} - {env['cpu']['model']}, 1 thread; onnxruntime {env['libraries'].get('onnxruntime')}, "
             f"MNN {env['libraries'].get('MNN')}; load average {r['loadavg'][0]} -> {r['loadavg'][1]}; "
             f"{r['rounds']} interleaved rounds, min of the per-round medians. Command: `{r['command']}`", "",
             "`Predictor.predict(image, boxes)` on one real 300-W `val` photo with N boxes, time / N (ms per face). "
             "batch 1: the default export, run face by face; dynamic: `glsr export --batch dynamic`, all faces of the "
             "image in one call per graph. Ratio: dynamic at N faces / batch 1 at 1 face.", "",
             ]
    head = ["| model | runtime | form | export | " + " | ".join(f"{n} face{'s' if n > 1 else ''}" for n in counts)
            + f" | {counts[-1]} faces dynamic / 1 face batch 1 |", "|---|---|---|---|" + "---:|" * (len(counts) + 1)]
    lines += head
    for clock, suffix in (("wall", ""), ("process CPU time", " cpu")):
        if clock != "wall":
            lines += ["", "The same in process CPU time per face (1 thread: what the calls compute, without the time "
                      "other processes take the core away -- on a machine loaded above its core count a longer "
                      "call is preempted more often, so the wall figures above penalize many faces per call):", ""]
            lines += head
        for m in r["models"]:
            for rt, v in m["runtimes"].items():
                for mode, per in v.items():
                    if f"1{suffix}" not in per:
                        continue
                    base = per[f"1{suffix}"][str(counts[0])]
                    for batch in BATCHES:
                        cells = " | ".join(f"{per[batch + suffix][str(n)]:.3f}" for n in counts)
                        ratio = (f"{per['dynamic' + suffix][str(counts[-1])] / base:.2f}x" if batch == "dynamic"
                                 else "")
                        lines.append(f"| {m['model']} | {rt} | {mode} | batch {batch} | {cells} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv: List[str] | None = None) -> int:
    from benchmarks.studies.host_warp import first_face

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["small-fast"], help="shipped names, .pt files or LABEL=FILE")
    ap.add_argument("--faces", nargs="+", type=int, default=[1, 4, 16], help="faces per image")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--time", type=float, default=1.0, help="seconds per timed figure, over all rounds")
    ap.add_argument("-o", "--out", default=None, help="default: benchmarks/results/<machine>")
    args = ap.parse_args(argv)
    if missing_300w():
        return 2
    if min(args.faces) < 1:
        print("--faces: counts must be >= 1", file=sys.stderr)
        return 2
    image, box = first_face()
    before = loadavg()
    with tempfile.TemporaryDirectory(prefix="glsr-many-faces-") as tmp:
        named = [m.split("=", 1) if "=" in m else (Path(m).stem, m) for m in args.models]
        models = [measure(label, w, image, box, sorted(set(args.faces)), Path(tmp) / f"m{i}", args.rounds, args.time)
                  for i, (label, w) in enumerate(named)]
    r = study_record("many_faces", argv, before, rounds=args.rounds, faces=sorted(set(args.faces)), models=models)
    write_record("many_faces", r, markdown(r), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
