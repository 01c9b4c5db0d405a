"""A smaller crop at the same pixel scale (``python -m benchmarks.studies.trimmed_crop [--sizes 224 208 192]``).

The single graph's host crop (272 px for small-fast, context 2.0) is its largest resampling, yet the network reads it
only inside the loc window and the face window (``single_graph_forms.md``). A crop of ``S2`` px with context
``context * (S2 - 1) / (S - 1)`` has the same pixel scale and the same centre, so the graph samples the same image
points wherever its windows stay inside it. For the shipped model's weights under each trimmed geometry (PyTorch,
1 thread) on every 300-W ``val`` face (tight boxes, inter-ocular NME): how far the face window reaches from the crop
centre, the landmarks' change against the trained geometry, the NME, and the host crop's CPU time
(``glsr.runtime.processing.crop_batch``; 5 interleaved rounds, min of the per-round medians). Writes
``benchmarks/results/<machine>/trimmed_crop.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from benchmarks import machine_results_dir
from glsr import atomic
from glsr.bench.glue import min_of_round_medians
from glsr.bench.machine import environment
from glsr.paths import SHARED


def trimmed(model, size: int):
    """``model``'s weights under a crop of ``size`` px at the same pixel scale (``model`` itself for its own size)."""
    from glsr.models.network import GLSRNet
    from glsr.models.registry import trimmed_crop

    if size == model.cfg.input_size:
        return model
    net = GLSRNet(trimmed_crop(model.cfg, size), model.scheme, model.mean_shape.numpy())
    net.load_state_dict(model.state_dict(), strict=False)  # the local buffers of a dropped inert stage are absent
    return net.eval().without_inert_stages()


def measure(weights: str, sizes: List[int], rounds: int, budget_s: float) -> Dict[str, Any]:
    import cv2
    import torch

    from glsr import geometry as geo
    from glsr.models.checkpoint import TRIM_KEY, model_from_checkpoint, read_checkpoint, trim_checkpoint_crop
    from glsr.runtime.processing import crop_batch, metadata_for, uncrop
    from glsr.shipped import resolve_weights
    from glsr.train.datasets import open_dataset
    from glsr.train.metrics import nme_per_image

    torch.set_num_threads(1)
    path = resolve_weights(weights)
    ck = read_checkpoint(path)
    trained = (ck.get("extra") or {}).get(TRIM_KEY)
    if trained:  # shipped at a trimmed crop: compare against the crop it was trained at
        ck = trim_checkpoint_crop(ck, trained["input_size"])
    base = model_from_checkpoint(ck, path).eval().without_inert_stages()
    s = base.cfg.input_size
    models = {n: trimmed(base, n) for n in [s] + [n for n in sizes if n != s]}
    recs = open_dataset(f"300w:{SHARED / 'data' / '300w'}", split="val")
    preds: Dict[int, List[np.ndarray]] = {n: [] for n in models}
    gts, reach = [], []
    corners = np.array([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])
    with torch.no_grad():
        for r in recs:
            image = cv2.imread(r.image_path)
            gt = np.asarray(r.landmarks, dtype=np.float64)
            box = geo.tight_box(gt)[None]
            gts.append(gt)
            for n, m in models.items():
                x, crop_from_image = crop_batch(image, box, metadata_for(m))
                out = m(torch.from_numpy(x), intermediates=True)
                preds[n].append(uncrop(out["landmarks"].numpy(), crop_from_image)[0])
                if n == s:  # the face window's corners in crop pixels
                    pc = geo.apply_affine(geo.compose(geo.pixel_from_norm(s), out["crop_from_face"][0].numpy()),
                                          corners)
                    reach.append(float(np.abs(pc - (s - 1) / 2).max()))
    g = np.stack(gts)
    image = cv2.imread(recs[0].image_path)
    box = geo.tight_box(np.asarray(recs[0].landmarks))[None]
    cpu: Dict[str, float] = {}
    min_of_round_medians({str(n): (lambda meta=metadata_for(m): crop_batch(image, box, meta))
                          for n, m in models.items()}, rounds, budget_s, cpu)
    rows = []
    for n, m in models.items():
        p = np.stack(preds[n])
        change = np.abs(p - np.stack(preds[s])).max(axis=(1, 2))
        rows.append({"crop_px": n, "context": round(m.cfg.context, 6),
                     "nme_pct": round(float(nme_per_image(p, g, base.scheme, "interocular").mean() * 100), 4),
                     "max_landmark_change_px": float(change.max()), "faces_changed_1e-3px": int((change > 1e-3).sum()),
                     "host_crop_cpu_ms": round(cpu[str(n)], 4),
                     "windows_inside": int((np.array(reach) + 1 <= (n - 1) / 2).sum())})
    r = np.array(reach)
    return {"weights": Path(path).name, "faces": len(recs), "input_size": s,
            "face_window_reach_px": {"median": round(float(np.median(r)), 2),
                                     "p99": round(float(np.percentile(r, 99)), 2), "max": round(float(r.max()), 2)},
            "rows": rows}


def to_markdown(r: Dict[str, Any]) -> str:
    env, m = r["environment"], r["result"]
    reach = m["face_window_reach_px"]
    lines = ["# A smaller crop at the same pixel scale", "",
             f"{env['date']} - {env['cpu']['model']}, 1 thread; {r['rounds']} interleaved rounds for the crop times "
             f"(process CPU ms per call, min of the per-round medians). Command: `{r['command']}`", "",
             f"`{m['weights']}` on the {m['faces']} faces of 300-W `val` (tight boxes, inter-ocular NME). The face "
             f"window's corners reach {reach['median']} px from the crop centre (median), {reach['p99']} (p99), "
             f"{reach['max']} (max); the trained crop's half width is {(m['input_size'] - 1) / 2}. Landmark change: "
             "against the trained geometry, per face, max over points. Even with every window inside, a few crop "
             "pixels differ by a grey level or more: OpenCV's warp rounds its sample positions to 1/32 px, and the "
             "trimmed crop's matrix differs from the trained one's (shifted) by float rounding.",
             "", "| crop px | context | NME % | max landmark change px | faces changed > 0.001 px | face windows "
             "inside (+1 px tap) | host crop CPU ms |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for row in m["rows"]:
        lines.append(f"| {row['crop_px']} | {row['context']:.4f} | {row['nme_pct']:.4f} | "
                     f"{row['max_landmark_change_px']:.3f} | {row['faces_changed_1e-3px']} | {row['windows_inside']} "
                     f"| {row['host_crop_cpu_ms']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="small-fast", help="shipped name or .pt")
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 208, 192], help="trimmed crop sizes, px")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--time", type=float, default=3.0, help="seconds per timed crop, over all rounds")
    ap.add_argument("-o", "--out", type=Path, default=None, help="default: benchmarks/results/<machine>")
    args = ap.parse_args(argv)
    if not (SHARED / "data" / "300w").is_dir():
        sys.exit("trimmed_crop: needs the 300-W data in ../shared/data/300w")
    r = {"environment": environment(), "rounds": args.rounds,
         "command": "python -m benchmarks.studies.trimmed_crop " + " ".join(argv or sys.argv[1:]),
         "result": measure(args.weights, args.sizes, args.rounds, args.time)}
    out = args.out or machine_results_dir(r["environment"]["cpu"])
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out / "trimmed_crop.json", json.dumps(r, indent=1) + "\n")
    atomic.write_text(out / "trimmed_crop.md", to_markdown(r))
    print(to_markdown(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
