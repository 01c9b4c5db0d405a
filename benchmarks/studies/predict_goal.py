"""Issue 26's goal, checked as a user would: ``glsr predict`` with no options on the 300-W ``val`` photos, its faces
scored against the tight-box figure of the same model (``python -m benchmarks.studies.predict_goal``).

* The photos go to one ``glsr predict PHOTO ... --no-progress`` call (the command line given by ``--cli``, default
  this checkout's ``python -m glsr.cli``), which prints JSON Lines, one object per photo.
* A face counts as found when a returned box overlaps the tight box of the annotation with IoU >= 0.3; the face
  overlapping most is scored (300-W annotates one face per file; other faces in a photo are counted as extra).
* The reference is the same model given the tight box of the ground truth (``glsr eval --boxes tight``'s path:
  ``Predictor.predict(image, box)``), on the same faces. Difference: mean per-face NME difference, 95 % bootstrap
  interval (:func:`glsr.train.metrics.paired_difference`); a missed face is scored with the tight box.

Writes ``OUT.json`` and ``OUT.md`` atomically; exits with a message when ``../shared`` is absent.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import numpy as np

from benchmarks import RESULTS_DIR, missing_300w, write_portable
from benchmarks.studies.detector_boxes import NORM, SPEC, machine, matched

GOAL_PP = 0.05
"""The issue's goal: within this many points of NME of the tight-box figure."""


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cli", default=f"{shlex.quote(sys.executable)} -m glsr.cli",
                    help="the command that runs glsr (default: this checkout's python -m glsr.cli; e.g. glsr)")
    ap.add_argument("--weights", default="small", help="the model the tight-box reference runs (predict's default)")
    ap.add_argument("--limit", type=int, help="at most this many photos (a quick check)")
    ap.add_argument("--out", default=str(RESULTS_DIR / "predict_goal"), help="output path without suffix")
    args = ap.parse_args(argv)
    if missing_300w():
        return 2
    from glsr import geometry as geo
    from glsr.runtime.predictor import Predictor
    from glsr.schemes import get_scheme
    from glsr.train.augment import get_annotation, get_face
    from glsr.train.evaluate import open_faces
    from glsr.train.metrics import nme_per_image, paired_difference

    ds = open_faces(SPEC, "val")
    n = len(ds) if args.limit is None else min(args.limit, len(ds))
    paths = [str(ds[i].image_path) for i in range(n)]
    cmd = shlex.split(args.cli) + ["predict", *paths, "--no-progress"]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        err.seek(0)
        stderr = err.read()
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        print(f"glsr predict exited with {done.returncode}:\n{stderr[-2000:]}", file=sys.stderr)
        return 1
    objs = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    by_image = {o["image"]: o for o in objs}
    ref = Predictor.from_file(args.weights, threads=1)
    gts, pred, tight, found, extra, quality = [], [], [], 0, 0, []
    for i, p in enumerate(paths):
        gt = np.asarray(get_annotation(ds, i, clean=True)[0], dtype=np.float64)
        t = geo.tight_box(gt)
        tight_pts = ref.predict(get_face(ds, i).image, t[None])[0]
        faces = by_image[p]["faces"]
        boxes = np.array([f["box"] for f in faces]).reshape(-1, 4)
        j = matched(boxes, t)
        gts.append(gt)
        tight.append(tight_pts)
        if j is None:
            pred.append(tight_pts)
            continue
        found += 1
        extra += len(faces) - 1
        pred.append(np.asarray(faces[j]["landmarks"], dtype=np.float64))
        quality.append(faces[j].get("quality"))
    scheme = get_scheme("68")
    e = np.asarray(nme_per_image(np.stack(pred), np.stack(gts), scheme, NORM))
    e_t = np.asarray(nme_per_image(np.stack(tight), np.stack(gts), scheme, NORM))
    d = paired_difference(e, e_t)
    first = objs[0] if objs else {}
    r = {"command": "python -m benchmarks.studies.predict_goal " + shlex.join(argv if argv is not None else sys.argv[1:]),
         "predict_command": "glsr predict PHOTO ... --no-progress (the 300-W val photos)", "cli": args.cli,
         "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(), "photos": n, "found": found,
         "extra_faces": extra, "model": first.get("model"), "detector": first.get("detector"),
         "box_convention": first.get("box_convention"), "nme_predict": float(e.mean()), "nme_tight": float(e_t.mean()),
         "vs_tight": d, "goal_pp": GOAL_PP, "within_goal": bool(100 * d["mean"] <= GOAL_PP),
         "wall_seconds": wall, "errors_predict": e.tolist(), "errors_tight": e_t.tolist(),
         "stderr_lines": len(stderr.splitlines())}
    md = "\n".join([
        "# The goal of issue 26: `glsr predict PHOTO` with no options on the 300-W `val` photos", "",
        f"`{r['command']}` ({r['date']}; {r['machine']['cpu']}, {r['machine']['cores']} cores). Each photo went "
        f"through one `glsr predict PHOTO ... --no-progress` call (model `{Path(str(r['model'])).name}`, detector "
        f"`{r['detector']}`, box convention `{r['box_convention']}`; {wall:.0f} s for the {n} photos on a shared "
        "machine); the reference is the same model given the tight box of the ground truth.", "",
        "| photos | faces found (IoU >= 0.3 with the annotation's tight box) | other faces found | NME io, glsr predict "
        "| NME io, tight box | difference | 95 % interval | goal |",
        "|---:|---:|---:|---:|---:|---:|---|---|",
        f"| {n} | {found} / {n} | {extra} | {100 * r['nme_predict']:.2f} | {100 * r['nme_tight']:.2f} | "
        f"{100 * d['mean']:+.3f} | {100 * d['low']:+.3f} to {100 * d['high']:+.3f} | within {GOAL_PP:g} pp: "
        f"{'yes' if r['within_goal'] else 'no'} (mean) |", ""])
    write_portable(args.out, r, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
