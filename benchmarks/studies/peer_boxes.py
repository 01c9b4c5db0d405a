"""Fit each peer's native box from the tight 68-point box (``python -m benchmarks.studies.peer_boxes``).

glsr's real-face models take the tight box of the 68 ground-truth points; MediaPipe's landmark model expects the
ROI its own pipeline derives from its face detector (a square 1.5x its box), and dlib's predictor the boxes of
dlib's HOG detector. Handing the tight box to a peer unchanged would measure the box mismatch, not the peer. This
study picks, for each peer, the scale about the box centre and the vertical shift (x box height) of
:class:`glsr.bench.peers.PeerBox` that minimise the peer's mean NME on 300-W's ``fit`` split (never the
validation faces the comparison is scored on): NME51 (no jaw) for MediaPipe, whose mesh does not trace 300-W's
jaw, NME68 for dlib. The results go into :data:`glsr.bench.peers.PEER_BOXES`; writes
``benchmarks/results/peer_boxes.{json,md}`` atomically. Needs the peers (``pip install -e ".[peers]"``) and
``../shared``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Dict, List

import numpy as np

from benchmarks import RESULTS_DIR
from glsr import atomic
from glsr.bench.latency import DEFAULT_FACES, load_faces, peer_versions, score68
from glsr.bench.peers import PeerBox, open_peer, peer_status
from glsr.paths import SHARED

GRIDS = {
    "mediapipe": {"scale": np.round(np.arange(1.3, 2.01, 0.05), 3),
                  "shift_y": np.round(np.arange(-0.15, 0.051, 0.025), 3),
                  "objective": "nme51"},
    "dlib": {"scale": np.round(np.arange(0.8, 1.201, 0.025), 3), "shift_y": np.round(np.arange(-0.1, 0.051, 0.0125), 4),
             "objective": "nme68"},
}


def fit_peer(peer: str, faces, grid: Dict[str, Any]) -> Dict[str, Any]:
    """Grid search of (scale, shift_y) for one peer; every grid point's NME68 / NME51 and the best."""
    lm = open_peer(peer, threads=1)
    gt = np.stack([f.gt for f in faces])
    rows: List[Dict[str, Any]] = []
    for s in grid["scale"]:
        for dy in grid["shift_y"]:
            lm.box = PeerBox(float(s), float(dy))
            pred = np.concatenate([lm.predict(f.image, f.box) for f in faces])
            sc = score68(pred, gt)
            rows.append({"scale": float(s), "shift_y": float(dy), "nme68": sc["nme68"], "nme51": sc["nme51"],
                         "failures": sc["failures"]})
    best = min(rows, key=lambda r: r[grid["objective"]])
    return {"objective": grid["objective"], "best": best, "grid": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=300, help="fit faces used (default 300)")
    ap.add_argument("--peers", default="mediapipe,dlib")
    args = ap.parse_args(argv)
    if not (SHARED / "data" / "300w").is_dir():
        print(f"needs {SHARED / 'data' / '300w'}", file=sys.stderr)
        return 2
    faces = load_faces(DEFAULT_FACES, "fit", args.limit)
    versions = {k: v for k, v in peer_versions().items() if v}
    out: Dict[str, Any] = {"faces": f"300-W fit split, first {len(faces)} faces", "command": " ".join(sys.argv),
                           "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": versions, "peers": {}}
    md = ["# Peer box conventions fitted on 300-W fit faces", "",
          f"`python -m benchmarks.studies.peer_boxes --limit {args.limit} --peers {args.peers}` ({out['date']}; "
          + ", ".join(f"{k} {v}" for k, v in versions.items()) + f"): {out['faces']}; box = tight box of the "
          "68 ground-truth points, scaled about its centre, moved down by shift x its height; the best of each "
          "peer goes into `glsr.bench.peers.PEER_BOXES`. NME inter-ocular. dlib's model was trained on 300-W's "
          "training photos, which the fit split is part of: its figures here are on faces it has seen.", "",
          "| peer | objective | scale | shift_y | NME68 | NME51 | failures | tight box unchanged: NME68 / NME51 |",
          "|---|---|---:|---:|---:|---:|---:|---|"]
    for peer in [p.strip() for p in args.peers.split(",") if p.strip()]:
        ok, reason = peer_status(peer)
        if not ok:
            md.append(f"| {peer} | skipped: {reason} | | | | | | |")
            continue
        r = fit_peer(peer, faces, GRIDS[peer])
        b = r["best"]
        ident = open_peer(peer, threads=1)
        ident.box = PeerBox(1.0, 0.0)
        base = score68(np.concatenate([ident.predict(f.image, f.box) for f in faces]), np.stack([f.gt for f in faces]))
        r["tight_box"] = {k: base[k] for k in ("nme68", "nme51", "failures")}
        out["peers"][peer] = r
        md.append(f"| {peer} | {r['objective']} | {b['scale']} | {b['shift_y']} | {b['nme68']:.2%} | {b['nme51']:.2%} "
                  f"| {b['failures']} | {base['nme68']:.2%} / {base['nme51']:.2%} |")
    md.append("")
    atomic.write_text(RESULTS_DIR / "peer_boxes.json", json.dumps(out, indent=1))
    atomic.write_text(RESULTS_DIR / "peer_boxes.md", "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
