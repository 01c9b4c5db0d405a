"""glsr's shipped models beside MediaPipe and dlib, per face, timed *interleaved* in one process: on a machine that
other jobs share, every landmarker meets the same load, so their ratios hold where separate timings drift apart.

    python -m benchmarks.studies.peer_speed --out benchmarks/results/amd-epyc-avx512-2c/peer_speed

Each landmarker scores every face of the split (image + the tight box of the 68 annotated points -> 68 points,
NME inter-ocular; ``glsr.bench.latency.score68``), then the timing rounds call each of them once per timing face, in
an order rotated every round, one thread each; glsr models run their ONNX fp32 host-warp artifacts (exported here,
``glsr export --host-warp``). Reported: median ms per call and its ratio to MediaPipe's median over the same rounds.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from benchmarks import write_portable
from glsr.bench.latency import (DEFAULT_FACES, DEFAULT_SPLIT, FaceCase, export_glsr, load_faces, open_landmarker,
                                score68)
from glsr.bench.machine import OtherLoad, environment, loadavg
from glsr.bench.peers import open_peer
from glsr.shipped import resolve_model

REFERENCE = "mediapipe"
PEER_RUNTIMES = {"mediapipe": "LiteRT, fp16 weights", "dlib": "dlib, regression trees"}


def measure(models: Sequence[str], peers: Sequence[str], faces_spec: str, split: str, rounds: int,
            timing_faces: int, work: Path, progress=print) -> Dict[str, Any]:
    faces = load_faces(faces_spec, split)
    gt = np.stack([f.gt for f in faces])
    landmarkers: Dict[str, Any] = {}
    sizes: Dict[str, int] = {}
    for name in models:
        progress(f"[peer_speed] export {name} (onnx fp32 host-warp)")
        path = export_glsr(resolve_model(name), ["onnx"], "fp32", work / name, None, host_warp=True)["onnx"]
        landmarkers[name] = open_landmarker(FaceCase(kind="glsr", label=name, path=str(path), threads=1))
        sizes[name] = Path(path).stat().st_size
    for peer in peers:
        landmarkers[peer] = open_peer(peer, threads=1)
        sizes[peer] = int(landmarkers[peer].describe().get("size_bytes") or 0)
    accuracy = {}
    for name, lm in landmarkers.items():
        progress(f"[peer_speed] score {name} on {len(faces)} faces")
        accuracy[name] = score68(np.concatenate([lm.predict(f.image, f.box) for f in faces]), gt)
        accuracy[name].pop("nme68_per_face")
    timed = faces[:timing_faces]
    names = list(landmarkers)
    for name in names:  # warm-up
        for f in timed:
            landmarkers[name].predict(f.image, f.box)
    ms: Dict[str, List[float]] = {n: [] for n in names}
    progress(f"[peer_speed] {rounds} interleaved rounds over {len(timed)} faces")
    with OtherLoad() as load:
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for f in timed:
                for name in order:
                    t = time.perf_counter()
                    landmarkers[name].predict(f.image, f.box)
                    ms[name].append((time.perf_counter() - t) * 1e3)
    med = {n: float(np.median(v)) for n, v in ms.items()}
    ref = med.get(REFERENCE)
    rows = [{"name": n, "kind": "glsr" if n in models else n,
             "runtime": "onnx fp32, host-warp" if n in models else PEER_RUNTIMES.get(n, n),
             "accuracy": accuracy[n], "ms_median": round(med[n], 4),
             "ms_p90": round(float(np.percentile(ms[n], 90)), 4), "calls": len(ms[n]),
             "x_reference": round(med[n] / ref, 3) if ref else None, "size_bytes": sizes[n],
             "describe": landmarkers[n].describe()} for n in names]
    return {"faces": faces_spec, "split": split, "count": len(faces), "timing_faces": len(timed), "rounds": rounds,
            "reference": REFERENCE if ref else None, "other_load_cores": load.cores, "rows": rows}


def markdown(r: Dict[str, Any]) -> str:
    env = r["environment"]
    lines = ["# Shipped models beside MediaPipe and dlib, timed interleaved", "",
             f"- command: `{r['command']}`",
             f"- date {env['date']}; CPU: {env['cpu'].get('model')}, {env['cpu'].get('cores')} usable cores; glsr "
             f"{env.get('glsr')} commit {env.get('commit')}; load average at start {r['loadavg_start']}, end "
             f"{r['loadavg_end']}; other processes used {r['other_load_cores']} cores during the timing",
             f"- faces: {r['faces']} split {r['split']} ({r['count']} faces, tight boxes of the 68 annotated points); "
             f"timing: {r['rounds']} rounds x {r['timing_faces']} faces, each landmarker once per face per round in an "
             "order rotated every round, one thread each", "",
             "| landmarker | runtime | NME68 | NME51 (no jaw) | failures (NME68 > 10 %) | ms per face (median) | p90 | "
             f"x {r['reference']} | file MB |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in r["rows"]:
        a = row["accuracy"]
        lines.append(f"| {row['name']} | {row['runtime']} | {100 * a['nme68']:.2f} % | {100 * a['nme51']:.2f} % | "
                     f"{a['failures']} / {a['count']} | {row['ms_median']:.2f} | {row['ms_p90']:.2f} | "
                     f"{row['x_reference']:.2f} | {row['size_bytes'] / 1e6:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["small", "small-fast", "medium"])
    ap.add_argument("--peers", default="mediapipe,dlib")
    ap.add_argument("--faces", default=DEFAULT_FACES)
    ap.add_argument("--split", default=DEFAULT_SPLIT)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--timing-faces", type=int, default=16)
    ap.add_argument("--out", required=True, help="output path without suffix (.json and .md are written)")
    args = ap.parse_args(argv)
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    start = loadavg()
    with tempfile.TemporaryDirectory(prefix="glsr-peer-speed-") as tmp:
        r = measure(args.models, peers, args.faces, args.split, args.rounds, args.timing_faces, Path(tmp))
    r.update(command="python -m benchmarks.studies.peer_speed " + shlex.join(argv if argv is not None
                                                                               else sys.argv[1:]),
             environment=environment(), loadavg_start=start, loadavg_end=loadavg())
    write_portable(args.out, r, markdown(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
