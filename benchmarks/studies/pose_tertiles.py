"""Large poses on 300-W ``val``: NME and failures per yaw tertile through ``glsr predict``'s default path, models and
options compared face by face with the shipped model
(``python -m benchmarks.studies.pose_tertiles [LABEL=MODEL ...] [--mirror-average]``).

* Faces split in thirds by the absolute yaw index of their ground truth (:func:`glsr.pose.yaw_index`,
  :func:`glsr.pose.pose_tertiles`: 0 frontal, towards 1 a profile).
* Every row runs :class:`glsr.runtime.predictor.Predictor` as users get it (``Predictor.from_file(MODEL)``, the
  ``.pt`` checkpoint, one thread): YuNet finds the faces, each is re-cropped once from its first landmarks and
  scored with the mirror-view quality (:mod:`glsr.runtime.refine`); the face whose box overlaps the annotation's
  tight box most is scored (a miss is scored with the tight box and counted).
* ``--mirror-average`` adds the reference model with :attr:`glsr.runtime.refine.RefineConfig.mirror_average` (the
  landmarks averaged with the mirror view's, which the quality score runs anyway), and times the default path
  with and without the mirror view (``quality=False``: what the averaging costs when the quality is not wanted).
* Per tertile: NME (inter-ocular), failures (NME > 10 %, FR@0.1's threshold, and NME > 5 %), the mean per-face
  difference against the reference model with its 95 % bootstrap interval (:func:`glsr.train.metrics.
  paired_difference`), and the Spearman rank correlation of the quality's disagreement with the error.
* ``--pair A:B`` (repeatable) adds the same per-tertile difference of row ``A`` against row ``B``: a controlled
  comparison of two models other than the reference (a training change against its control run).
* ``--mean LABEL=A+B[+C...]`` (repeatable) adds a row whose landmarks are, face by face, the mean of rows ``A``,
  ``B``, ...: an output ensemble of models run on the same faces (its quality: the first row's).

Writes ``OUT.json`` and ``OUT.md`` atomically; exits with a message when ``../shared`` is absent.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from benchmarks import RESULTS_DIR, missing_300w, write_portable
from benchmarks.studies.detector_boxes import NORM, SPEC, machine, matched, spearman

REFERENCE = "small"
FAIL_LEVELS = (0.10, 0.05)
"""NME levels (fractions of the inter-ocular distance) above which a face counts as failed: FR@0.1's and a stricter
one (no shipped model fails at 10 % on these faces)."""


def run_rows(rows: Dict[str, Any], limit: Optional[int], timing: bool) -> Dict[str, Any]:
    """Every row (label -> :class:`Predictor`) on the ``val`` faces: landmarks and quality of the matched face, the
    tight-box landmarks of the first row's model, and (``timing``) ms per image of the default path with and
    without the mirror view, interleaved face by face."""
    from glsr import geometry as geo
    from glsr.train.augment import get_annotation, get_face
    from glsr.train.evaluate import open_faces

    ds = open_faces(SPEC, "val")
    n = len(ds) if limit is None else min(limit, len(ds))
    out = {k: {"pred": [], "disagreement": [], "found": 0} for k in rows}
    gts, ms = [], {"mirror view (quality)": [], "no mirror view": []}
    first = next(iter(rows.values()))
    plain = None
    if timing:
        from dataclasses import replace

        from glsr.runtime.predictor import Predictor

        plain = Predictor(first.backend, first.detector, replace(first.refine, quality=False, mirror_average=False))
    for i in range(n):
        gt = np.asarray(get_annotation(ds, i, clean=True)[0], dtype=np.float64)
        image = get_face(ds, i).image
        t = geo.tight_box(gt)
        gts.append(gt)
        tight_pts = first.predict(image, t[None])[0]
        for key, p in rows.items():
            res = p.predict_faces(image)
            j = matched(res.boxes, t)
            if j is None:
                out[key]["pred"].append(tight_pts)
                out[key]["disagreement"].append(np.nan)
                continue
            out[key]["found"] += 1
            out[key]["pred"].append(res.landmarks[j])
            out[key]["disagreement"].append(float(-np.log(res.quality[j])) if res.quality is not None else np.nan)
        if plain is not None:
            for label, p in (("mirror view (quality)", first), ("no mirror view", plain)):
                t0 = time.perf_counter()
                p.predict_faces(image)
                ms[label].append(1000 * (time.perf_counter() - t0))
        print(f"\r{i + 1}/{n}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return {"rows": out, "gt": np.stack(gts), "ms": ms if plain is not None else None, "count": n}


def add_mean_row(raw: Dict[str, Any], label: str, members: Sequence[str]) -> None:
    """Add row ``label`` to ``raw`` (:func:`run_rows`' result): per face the mean of the ``members`` rows'
    landmarks, the first member's quality, the faces every member found."""
    rows = raw["rows"]
    preds = np.mean([np.stack(rows[m]["pred"]) for m in members], axis=0)
    rows[label] = {"pred": list(preds), "disagreement": list(rows[members[0]]["disagreement"]),
                   "found": min(rows[m]["found"] for m in members)}


def summarize(raw: Dict[str, Any], reference: str, pairs: Sequence[Tuple[str, str]] = ()) -> Dict[str, Any]:
    from glsr.pose import TERTILE_NAMES, pose_tertiles, yaw_index
    from glsr.schemes import get_scheme
    from glsr.train.metrics import paired_difference, nme_per_image

    gt = raw["gt"]
    yaw = yaw_index(gt, "68")
    tert, edges = pose_tertiles(yaw)
    scheme = get_scheme("68")
    errs = {k: np.asarray(nme_per_image(np.stack(v["pred"]), gt, scheme, NORM)) for k, v in raw["rows"].items()}
    rows = {}
    for k, v in raw["rows"].items():
        e, d = errs[k], np.asarray(v["disagreement"])
        per = []
        for t, name in enumerate(TERTILE_NAMES):
            m = tert == t
            ok = m & np.isfinite(d)
            rec = {"tertile": name, "faces": int(m.sum()), "nme": float(e[m].mean()),
                   "failures": {f"{lv:g}": int((e[m] > lv).sum()) for lv in FAIL_LEVELS},
                   "spearman_disagreement_vs_nme": spearman(d[ok], e[ok]) if ok.sum() > 2 else None}
            if k != reference:
                rec["vs_reference"] = paired_difference(e[m], errs[reference][m])
            per.append(rec)
        rows[k] = {"nme": float(e.mean()), "found": v["found"], "faces": raw["count"], "tertiles": per,
                   "failures": {f"{lv:g}": int((e > lv).sum()) for lv in FAIL_LEVELS}}
        if k != reference:
            rows[k]["vs_reference"] = paired_difference(e, errs[reference])
    timing = None
    if raw["ms"]:
        med = {k: float(np.median(v)) for k, v in raw["ms"].items()}
        timing = {"ms_median": med, "ratio": med["mirror view (quality)"] / med["no mirror view"]}
    paired = [{"row": a, "against": b,
               "tertiles": [paired_difference(errs[a][tert == t], errs[b][tert == t]) for t in range(3)],
               "all": paired_difference(errs[a], errs[b])} for a, b in pairs]
    return {"rows": rows, "paired": paired, "yaw_index": yaw.tolist(), "edges": edges.tolist(),
            "tertile_ranges": [[float(np.abs(yaw[tert == t]).min()), float(np.abs(yaw[tert == t]).max())]
                               for t in range(3)],
            "errors": {k: v.tolist() for k, v in errs.items()}, "timing": timing}


def _p(x: float) -> str:
    return f"{100 * x:.2f}"


def markdown(r: Dict[str, Any]) -> str:
    m, v = r["machine"], r["val"]
    ref = r["reference"]
    lines = ["# Large poses: NME per yaw tertile on 300-W `val`, through `glsr predict`'s default path", "",
             f"`{r['command']}` ({r['date']}; {m['cpu']}, {m['cores']} cores, one thread; OpenCV {m['opencv']}).", "",
             "Faces split in thirds by the absolute yaw index of their ground truth (`glsr.pose.yaw_index`: 0 "
             "frontal, towards 1 a profile; |yaw| ranges "
             + ", ".join(f"{n} {a:.2f} - {b:.2f}" for n, (a, b) in zip(("frontal", "middle", "large yaw"),
                                                                        v["tertile_ranges"]))
             + "). Each row runs `Predictor.from_file(MODEL)` as users get it (the `.pt`; YuNet, one re-crop from the "
             "first landmarks, the mirror-view quality); NME in % of the inter-ocular distance; failures: faces "
             "above 10 % (FR@0.1) / above 5 %; difference: mean per-face NME difference against "
             f"`{ref}` on the same faces (negative: better), 95 % bootstrap interval; rho: Spearman rank correlation "
             "of the quality's disagreement with the face's NME within the tertile.", "",
             "| row | model | faces found | all faces NME | tertile | NME | failures >10 % / >5 % | vs " + ref
             + " | 95 % interval | faces better | rho |",
             "|---|---|---:|---:|---|---:|---:|---:|---|---:|---:|"]
    for label, row in v["rows"].items():
        for k, t in enumerate(row["tertiles"]):
            d = t.get("vs_reference")
            head = (f"| {label} | {r['models'][label]} | {row['found']} / {row['faces']} | {_p(row['nme'])} | "
                    if k == 0 else "| | | | | ")
            rho = t["spearman_disagreement_vs_nme"]
            lines.append(head + f"{t['tertile']} ({t['faces']}) | {_p(t['nme'])} | "
                         f"{t['failures']['0.1']} / {t['failures']['0.05']} | "
                         + (f"{100 * d['mean']:+.3f} | {100 * d['low']:+.3f} to {100 * d['high']:+.3f} | "
                            f"{d['better']} / {d['faces']} | " if d else "- | - | - | ")
                         + (f"{rho:.2f} |" if rho is not None else "- |"))
    lines += ["", "All faces against the reference:", ""]
    for label, row in v["rows"].items():
        d = row.get("vs_reference")
        if d:
            lines.append(f"* {label}: {100 * d['mean']:+.3f} ({100 * d['low']:+.3f} to {100 * d['high']:+.3f}), "
                         f"{d['better']} / {d['faces']} faces better")
    for p in v.get("paired", []):
        lines += ["", f"`{p['row']}` against `{p['against']}` (mean per-face NME difference, 95 % interval, faces "
                  "better):", ""]
        for name, d in zip(("frontal", "middle", "large yaw", "all faces"), p["tertiles"] + [p["all"]]):
            lines.append(f"* {name}: {100 * d['mean']:+.3f} ({100 * d['low']:+.3f} to {100 * d['high']:+.3f}), "
                         f"{d['better']} / {d['faces']}")
    if v["timing"]:
        t = v["timing"]
        lines += ["", "Cost of the mirror view (the quality score, which the averaging reuses), default path of "
                  f"`{ref}`, ms per image (detection and every pass), medians of the same run, interleaved: "
                  + ", ".join(f"{k} {x:.1f}" for k, x in t["ms_median"].items())
                  + f"; ratio {t['ratio']:.2f}."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="LABEL=MODEL (shipped name or .pt) compared with the reference")
    ap.add_argument("--reference", default=REFERENCE, help=f"the model compared with (default {REFERENCE})")
    ap.add_argument("--mirror-average", action="store_true",
                    help="add the reference with the mirror view's landmarks averaged in, and time the mirror view")
    ap.add_argument("--pair", action="append", default=[], metavar="A:B",
                    help="also compare row A against row B per tertile (labels of the rows; repeatable)")
    ap.add_argument("--mean", action="append", default=[], metavar="LABEL=A+B",
                    help="also a row of the face-by-face mean of rows A, B, ... (an output ensemble; repeatable)")
    ap.add_argument("--limit", type=int, help="at most this many faces (a quick check)")
    ap.add_argument("--out", default=str(RESULTS_DIR / "pose_tertiles"), help="output path without suffix")
    args = ap.parse_args(argv)
    if missing_300w():
        return 2
    from glsr.runtime.predictor import Predictor
    from glsr.runtime.refine import RefineConfig

    try:
        models = {args.reference: args.reference, **dict(m.split("=", 1) for m in args.models)}
    except ValueError:
        ap.error("models are LABEL=MODEL")
    means = {}
    for m in args.mean:
        label, _, joined = m.partition("=")
        members = joined.split("+")
        if not label or len(members) < 2 or not set(members) <= set(models):
            ap.error(f"--mean {m}: give LABEL=A+B with two or more row labels out of {', '.join(models)}")
        means[label] = members
    pairs = [tuple(p.split(":", 1)) for p in args.pair]
    labels = set(models) | set(means)
    unknown = [p for p in args.pair if len(p.split(":")) != 2 or not set(p.split(":")) <= labels]
    if unknown:
        ap.error(f"--pair {unknown[0]}: give two row labels A:B out of {', '.join(sorted(labels))}")
    rows = {lab: Predictor.from_file(w, threads=1) for lab, w in models.items()}
    if args.mirror_average:
        label = f"{args.reference}, mirror-averaged"
        models[label] = args.reference
        rows[label] = Predictor.from_file(args.reference, threads=1, refine=RefineConfig(mirror_average=True))
    raw = run_rows(rows, args.limit, args.mirror_average)
    for label, members in means.items():
        add_mean_row(raw, label, members)
        models[label] = "mean of " + " + ".join(members)
    given = argv if argv is not None else sys.argv[1:]
    r = {"command": " ".join(["python -m benchmarks.studies.pose_tertiles", *given]),
         "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "reference": args.reference, "models": models,
         "machine": machine(), "val": summarize(raw, args.reference, pairs)}
    write_portable(args.out, r, markdown(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
