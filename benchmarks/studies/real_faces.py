"""Score models on the 300-W validation split: the real-face table of the README and the shipped model cards.

``python -m benchmarks.studies.real_faces LABEL=MODEL.pt ... [--perturb] [--out benchmarks/results/real_faces]``

For each model (a glsr checkpoint or a shipped name), through :class:`glsr.runtime.predictor.Predictor` on the
``val`` split of ``../shared/data/300w`` (faces glsr never trains on):

* NME inter-ocular (outer eye corners, the goal's metric) and inter-pupil (the paper's 300-W metric), per-part
  NME, AUC@0.1 and FR@0.1 (inter-ocular), with the tight box of the 68 ground-truth points (the box convention of
  glsr's real-face models) and through ``glsr predict``'s default path (``glsr eval --boxes detector``: YuNet's
  boxes corrected to the model's convention, each face re-cropped once from its first landmarks; faces YuNet
  misses keep the tight box and are counted); rows recorded before that default (no ``spec`` in their
  ``detector`` record) were measured with OpenCV's Haar cascade, no re-crop, and say so;
* with ``--perturb [LABEL ...]``, the Table 4 protocol (box scale, translation, in-plane rotation; tight boxes)
  for those models (all without a label);
* parameters and milliseconds per face end to end (image + box -> landmarks in image pixels) with the model
  exported to ONNX fp32 and run by onnxruntime on one thread (median over the validation faces, after warm-up),
  timed in the same run for every model, interleaved face by face (so their ratios hold on a noisy machine).

Models of another landmark scheme (the authors' 98-point WFLW GSR) are scored on their 68 points of the standard
WFLW-98 -> 68 list. Writes ``OUT.json``, ``OUT.md`` and ``OUT-ced.png`` atomically.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from benchmarks import RESULTS_DIR, missing_300w
from glsr import atomic
from glsr.paths import SHARED, portable_text

DATA = SHARED / "data" / "300w"
SPEC = f"300w:{DATA}"
SPLIT = "val"
NORM = "interocular"


def onnx_latencies(weights: Sequence[str], items: Sequence[Any], warmup: int = 5, threads: int = 1
                   ) -> List[Dict[str, float]]:
    """Median / p90 ms per face of an ONNX fp32 export of each of ``weights`` through ``Predictor.predict``,
    timed interleaved (face by face, every model in turn) so that the machine's slow and fast spells fall on all
    of them alike and their ratios hold within one run."""
    from glsr.export import export_model
    from glsr.runtime.predictor import Predictor

    with tempfile.TemporaryDirectory(prefix="glsr-real-faces-") as tmp:
        predictors, sizes = [], []
        for i, w in enumerate(weights):
            res = export_model(w, formats="onnx", out_dir=Path(tmp) / str(i), parity=False, name="m")
            onnx = next(p for p in res.artifacts if str(p).endswith(".onnx"))
            predictors.append(Predictor.from_file(onnx, threads=threads))
            sizes.append(Path(onnx).stat().st_size)
        for it in items[:warmup]:
            for pred in predictors:
                pred.predict(it.image, it.box[None])
        times: List[List[float]] = [[] for _ in predictors]
        for it in items:
            for pred, t in zip(predictors, times):
                t0 = time.perf_counter()
                pred.predict(it.image, it.box[None])
                t.append(1000 * (time.perf_counter() - t0))
    return [{"ms_median": float(np.median(t)), "ms_p90": float(np.percentile(t, 90)), "onnx_bytes": size,
             "threads": threads, "interleaved_with": len(weights) - 1} for t, size in zip(times, sizes)]


def describe_start(lineage: List[str], shipped_as: Optional[str] = None) -> str:
    """A checkpoint's ``--init`` chain (:func:`glsr.train.lineage.checkpoint_lineage`) as a table cell: ``scratch``;
    the nearest link; or ``nearest ← … ← root`` for longer chains (links relabelled for ``shipped_as``,
    :func:`glsr.train.lineage.relabel`)."""
    from glsr.train.lineage import relabel

    if not lineage:
        return "scratch"
    links = relabel(lineage, shipped_as)
    if len(links) <= 2:
        return " ← ".join(links)
    return f"{links[0]} ← … ← {links[-1]}"


def describe(weights: str) -> Dict[str, Any]:
    """Variant, face size, loss, start and parameter count of a checkpoint, from the checkpoint itself."""
    from glsr.models import load_checkpoint
    from glsr.models.checkpoint import read_checkpoint
    from glsr.models.complexity import count_params
    from glsr.train.lineage import checkpoint_lineage

    ck = read_checkpoint(weights)
    extra = ck.get("extra") or {}
    tc = extra.get("train_config")
    if tc:
        start = describe_start(checkpoint_lineage(extra), extra.get("shipped_as"))
        if extra.get("soup"):  # glsr ship of several runs: the mean of their weights
            start = f"{start}; mean of {len(extra['soup'])} seeds"
        loss, data = tc["loss"]["kind"], tc["data"].split(":", 1)[0]
    else:
        start, loss, data = "authors' release", "-", "WFLW (not 300-W)"
    epochs = (extra.get("history") or {}).get("epochs") or []  # every epoch trained up to this file
    stages = "+".join(dict.fromkeys(e["stage"] for e in epochs)) or "-"
    return {"variant": ck["config"]["name"], "face_size": ck["config"]["face_size"], "loss": loss, "start": start,
            "data": data, "stages": stages, "params": count_params(load_checkpoint(weights))}


def measure(models: Dict[str, str], perturb: Sequence[str] | None = None, threads: int = 1,
            speed: bool = True) -> Dict[str, Any]:
    """Score ``models`` (label -> weights); ``perturb``: labels to run the Table 4 protocol on (``[]`` = all of
    them, ``None`` = none); ``speed=False``: no timing (``speed`` left ``None``, for :func:`merge_update` to keep
    the recorded one)."""
    from glsr.shipped import resolve_weights
    from glsr.train.evaluate import eval_items, evaluate, open_faces

    weights = [str(resolve_weights(w)) for w in models.values()]
    labels = list(models)
    ds = open_faces(SPEC, SPLIT)
    out: Dict[str, Any] = {"data": SPEC, "split": SPLIT, "faces": len(ds), "norm": NORM, "models": {}}
    tight = evaluate(weights, SPEC, norm=NORM, split=SPLIT, threads=threads, dataset=ds)
    out["ced"] = {lab: m["errors"] for lab, m in zip(labels, tight["models"])}
    items, _ = eval_items(ds, "tight")
    speeds = onnx_latencies(weights, items, threads=threads) if speed else [None] * len(weights)
    for lab, w, m, speed in zip(labels, weights, tight["models"], speeds):
        det = evaluate([w], SPEC, norm=NORM, split=SPLIT, threads=threads, dataset=ds, boxes="detector")
        rec = {"weights": w, **describe(w), "tight": {k: v for k, v in m.items() if k != "errors"},
               "detector": {**{k: v for k, v in det["models"][0].items() if k != "errors"},
                            "misses": det.get("detector_misses"), "spec": det["detector"], "refine": det["refine"]},
               "speed": speed}
        out["models"][lab] = rec
        print(f"{lab}: NME io {100 * rec['tight']['nme']:.2f} % (detector {100 * rec['detector']['nme']:.2f} %)"
              + (f", {speed['ms_median']:.2f} ms/face" if speed else ""), file=sys.stderr)
    if perturb is not None:
        chosen = list(perturb) or labels
        unknown = sorted(set(chosen) - set(labels))
        if unknown:
            raise ValueError(f"--perturb: no model labelled {unknown}; labels: {labels}")
        out["perturb"] = {}
        for kind in ("scale", "translate", "rotate"):
            rep = evaluate([weights[labels.index(c)] for c in chosen], SPEC, norm=NORM, split=SPLIT, threads=threads,
                           dataset=ds, perturb=kind)
            out["perturb"][kind] = [{"level": r["level"], "nme": dict(zip(chosen, r["nme"].values()))}
                                    for r in rep["perturb"]["rows"]]
    return out


def merge_update(r: Dict[str, Any], new: Dict[str, Any], command: str, machine: Dict[str, Any]) -> Dict[str, Any]:
    """A recorded study ``r`` with the models, CED curves, Table 4 rows and runs of the partial study ``new``
    (measured by ``command`` on ``machine``) put in: same labels replaced in place, new ones appended. Rows keep
    where they were measured (``machine`` per model, the study's own machine when absent), so the table can say
    which timings come from another machine."""
    if new["split"] != r["split"] or new["faces"] != r["faces"] or new["norm"] != r["norm"]:
        raise ValueError(f"the update scored {new['faces']} faces of {new['split']} ({new['norm']}); the recorded study "
                         f"{r['faces']} of {r['split']} ({r['norm']}): they do not belong in one table")
    out = json.loads(json.dumps(r))
    for lab, rec in new["models"].items():
        if rec.get("speed") is None:  # accuracy only: the recorded timing (and where it was measured) stays
            if lab not in out["models"]:
                raise ValueError(f"{lab} is not in the recorded study: measure its speed too (no --no-speed)")
            old = out["models"][lab]
            out["models"][lab] = {**rec, "speed": old["speed"], **({"machine": old["machine"]} if "machine" in old
                                                                   else {})}
        else:
            out["models"][lab] = {**rec, "machine": machine["cpu"]["model"]}
        out["ced"][lab] = new["ced"][lab]
    for kind, rows in (new.get("perturb") or {}).items():
        old = out.setdefault("perturb", {}).setdefault(kind, [{"level": row["level"], "nme": {}} for row in rows])
        if [row["level"] for row in old] != [row["level"] for row in rows]:
            raise ValueError(f"Table 4 {kind}: the update's levels differ from the recorded ones")
        for o, n in zip(old, rows):
            o["nme"].update(n["nme"])
    out.setdefault("runs", {}).update(new.get("runs") or {})
    out["updates"] = list(out.get("updates", [])) + [{"command": command, "models": list(new["models"]),
                                                      "machine": machine}]
    return out


def run_summary(run: Path) -> Dict[str, Any]:
    """What a training run folder records: held-out NME (inter-pupil, the trainer's validation) of the mean shape and
    after each stage, the first and last logged training losses, optimizer steps and wall time."""
    from glsr.train.trainer import read_events

    ev = read_events(run)
    start = next(e for e in ev if e["event"] == "start")
    steps = [e for e in ev if e["event"] == "step"]
    stages = []
    for e in ev:
        if e["event"] == "stage":
            own = [s["loss"] for s in steps if s["stage"] == e["stage"]]
            stages.append({"stage": e["stage"], "global_step": e["global_step"],
                           "val_nme": (e.get("val") or {}).get("nme"), "first_loss": own[0] if own else None,
                           "last_loss": own[-1] if own else None})
    return {"run": str(run), "variant": start["variant"], "baseline_nme": (start.get("mean_shape_baseline") or {}).get("nme"),
            "stages": stages, "batch": start.get("batch"), "wall_seconds": ev[-1]["time"] - ev[0]["time"]}


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def detector_path(d: Dict[str, Any]) -> str:
    """How a model's ``detector`` record was measured: ``""`` for ``glsr predict``'s default path (YuNet, refined),
    else a short mark (``"Haar"`` for records from before that default, which name no ``spec``)."""
    spec, refine = d.get("spec", "haar"), d.get("refine", False)
    if spec == "yunet" and refine:
        return ""
    return ("Haar" if spec == "haar" else spec) + (", re-cropped" if refine else "")


PAIRED_REFERENCE = "small"
"""The model every other one is compared with face by face (the shipped default), when the study holds it."""
LADDER = ("B1 (L1)", "GSR (L1)", "G&LSR (L1)", "G&LSR_ω")
"""The labels of the paper's Table 5 ladder in the recorded study, in the paper's order: each step is also compared
face by face with the one before it."""


def paired_lines(r: Dict[str, Any]) -> List[str]:
    """Markdown: every model against :data:`PAIRED_REFERENCE` on the same faces (tight boxes), from the per-face
    errors the study keeps for its CED (:func:`glsr.train.metrics.paired_difference`)."""
    from glsr.train.metrics import BOOTSTRAP_ROUNDS, INTERVAL_LEVEL, paired_difference

    ced = r.get("ced") or {}
    pairs = [(lab, PAIRED_REFERENCE) for lab in ced if lab != PAIRED_REFERENCE and PAIRED_REFERENCE in ced]
    pairs += [(b, a) for a, b in zip(LADDER, LADDER[1:]) if a in ced and b in ced]
    if not pairs:
        return []
    out = ["", f"Face by face (tight box, inter-ocular): each model against `{PAIRED_REFERENCE}`, and each step of "
           "the ladder against the one before it. Mean per-face NME difference (positive: worse than the model "
           f"compared with), its {100 * INTERVAL_LEVEL:g} % bootstrap interval over the faces ({BOOTSTRAP_ROUNDS:,} "
           "resamples) and the faces where the model is better. An interval that holds 0 is a difference these faces "
           "cannot resolve.", "",
           f"| model | against | NME difference | {100 * INTERVAL_LEVEL:g} % interval | faces better |",
           "|---|---|---:|---|---:|"]
    for lab, ref in pairs:
        if len(ced[lab]) != len(ced[ref]):
            continue
        d = paired_difference(ced[lab], ced[ref], INTERVAL_LEVEL)
        out.append(f"| {lab} | {ref} | {100 * d['mean']:+.3f} | {100 * d['low']:+.3f} to {100 * d['high']:+.3f} | "
                   f"{d['better']} / {d['faces']} |")
    return out


def markdown(r: Dict[str, Any], command: str) -> str:
    home = ((r.get("machine") or {}).get("cpu") or {}).get("model", "")
    lines = [f"# Real faces: 300-W `{r['split']}` split ({r['faces']} faces)", "", f"`{command}`", ""]
    for u in r.get("updates", []):
        lines += [f"Updated ({', '.join(u['models'])}; {u['machine']['cpu']['model']}): `{u['command']}`", ""]
    moved = [lab for lab, m in r["models"].items() if m.get("machine", home) != home]
    lines += ["NME in % of the inter-ocular distance (outer eye corners) unless marked; FR and AUC at 0.1 "
              "inter-ocular; ms/face: image + box -> landmarks through `Predictor` with the ONNX fp32 export on "
              "onnxruntime, one thread, median" + (f", on {home}" if home else "")
              + (f"; rows marked * were measured by an update on {r['models'][moved[0]]['machine']}, so their "
                 "ms/face compare with each other, not with the rest" if moved else "") + ".", "",
             "NME io, detector: `glsr predict`'s default path (YuNet's box corrected to the model's convention, one "
             "re-crop from the first landmarks; a face YuNet misses keeps the tight box and counts as a miss); a "
             "mark in brackets names another path (Haar: OpenCV's Haar cascade, corrected, no re-crop, the default "
             "before YuNet, for models not re-measured since).", "",
             "| model | variant (face px) | stages trained here | loss | start | NME io, tight box | NME ip (paper) | FR@0.1 | AUC@0.1 | "
             "NME io, detector | detector misses | params | ms/face |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for lab, m in r["models"].items():
        t, d = m["tight"], m["detector"]
        lines.append(f"| {lab} | {m['variant']} ({m['face_size']}) | {m.get('stages', '-')} | {m['loss']} | {m['start']} | {_pct(t['nme'])} | {_pct(t['by_norm']['interpupil'])} | {_pct(t['fr'])} | "
                     f"{t['auc']:.3f} | {_pct(d['nme'])}{f' ({detector_path(d)})' if detector_path(d) else ''} | "
                     f"{d['misses']} | {m['params'] / 1e6:.2f} M | "
                     f"{m['speed']['ms_median']:.2f}{' *' if lab in moved else ''} |")
    lines += ["", "Per-part NME (inter-ocular, tight box):", "", "| model | contour | brows | eyes | nose | mouth |",
              "|---|---:|---:|---:|---:|---:|"]
    for lab, m in r["models"].items():
        p = m["tight"]["parts"]
        lines.append(f"| {lab} | " + " | ".join(_pct(p[k]) for k in ("contour", "brows", "eyes", "nose", "mouth"))
                     + " |")
    lines += paired_lines(r)
    for name, s in (r.get("runs") or {}).items():
        lines += ["", f"Training run `{name}` ({s['variant']}, batch {s['batch']}, {s['wall_seconds'] / 60:.1f} min): "
                  f"held-out NME (inter-pupil) {_pct(s['baseline_nme'])} % for the mean shape -> "
                  + ", ".join(f"{_pct(st['val_nme'])} % after {st['stage']} (step {st['global_step']}"
                              + (f"; its training loss {st['first_loss']:.3f} at the first logged step -> "
                                 f"{st['last_loss']:.3f} at the last" if st.get("first_loss") is not None else "") + ")"
                              for st in s["stages"]) + "."]
    for kind, rows in (r.get("perturb") or {}).items():
        labs = list(rows[0]["nme"]) if rows else []
        lines += ["", f"Table 4 protocol, {kind} (NME io %, tight boxes perturbed):", "",
                  f"| {kind} | " + " | ".join(labs) + " |", "|---:|" + "---:|" * len(labs)]
        for row in rows:
            lines.append(f"| {row['level']:g} | " + " | ".join(_pct(row["nme"][k]) for k in labs) + " |")
    return "\n".join(lines) + "\n"


README_START, README_END = "<!-- real-faces-table:start -->", "<!-- real-faces-table:end -->"
README_SLOT = "<!-- shipped-models-table -->"


def readme_block(r: Dict[str, Any], command: str, link: str) -> str:
    """The README's copy of the main table (between the markers), regenerated by ``--readme``."""
    md = markdown(r, command).splitlines()
    first = md.index(next(line for line in md if line.startswith("| model |")))
    table = md[first:md.index("", first)]
    return "\n".join([README_START, f"Measured by `python -m benchmarks.studies.real_faces` on the 300-W `{r['split']}` split "
                      f"({r['faces']} faces; the exact command, per-part NME, the Table 4 protocol, the training runs "
                      f"and the CED: [{Path(link).name}]({link})):", ""] + table + [README_END])


def readme_has_slot(text: str) -> bool:
    """Whether a README's ``text`` has this study's table markers or its slot line (what :func:`update_readme`
    replaces)."""
    return (README_START in text and README_END in text) or README_SLOT in text


def update_readme(readme: Path, block: str, markers: Tuple[str, str] = (README_START, README_END)) -> None:
    """Replace the part of ``readme`` between ``markers`` (or the slot line of this study) with ``block``."""
    start, end = markers
    text = readme.read_text()
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    elif README_SLOT in text and markers == (README_START, README_END):
        text = text.replace(README_SLOT, block, 1)
    else:
        raise ValueError(f"{readme} has no {start} ... {end} markers")
    atomic.write_text(readme, text)


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="LABEL=MODEL (a .pt checkpoint or a shipped name)")
    ap.add_argument("--from-json", metavar="JSON", help="re-render OUT.md, the CED plot and --readme from a recorded "
                    "study JSON instead of measuring")
    ap.add_argument("--perturb", nargs="*", metavar="LABEL",
                    help="also the Table 4 box perturbations, for these models (no label: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-speed", action="store_true", help="with --update: re-measure accuracy only and keep the "
                    "recorded ms/face of these models (timing on a busy machine would not compare)")
    ap.add_argument("--out", default=str(RESULTS_DIR / "real_faces"), help="output path without suffix")
    ap.add_argument("--readme", help="also put the main table into this README (between its markers)")
    ap.add_argument("--runs", nargs="*", default=[], help="NAME=RUN_DIR training runs to summarize (e.g. a short run)")
    ap.add_argument("--update", metavar="JSON", help="measure only the given models (and --perturb labels, --runs) and "
                    "merge them into this recorded study: same labels replaced, new ones added, the rest kept")
    args = ap.parse_args(argv)
    if not args.models and not args.from_json:
        ap.error("give LABEL=MODEL ... to measure, or --from-json to re-render a recorded study")
    if not args.from_json and missing_300w():
        return 2
    if args.readme:  # refuse before measuring: nothing written when the README has no slot for the table
        if not readme_has_slot(Path(args.readme).read_text() if Path(args.readme).is_file() else ""):
            print(f"--readme {args.readme}: no {README_START} ... {README_END} markers; add them where the table "
                  "goes, or leave out --readme", file=sys.stderr)
            return 2
    if args.from_json:  # re-render the Markdown, plot and README block of a recorded study (no measuring)
        r = json.loads(Path(args.from_json).read_text())
        command = r["command"]
    else:
        models = dict(m.split("=", 1) if "=" in m else (Path(m).stem, m) for m in args.models)
        if args.no_speed and not args.update:
            ap.error("--no-speed keeps recorded timings: use it with --update")
        r = measure(models, args.perturb, args.threads, speed=not args.no_speed)
        r["runs"] = {n: run_summary(Path(d)) for n, d in (x.split("=", 1) for x in args.runs)}
        command = "python -m benchmarks.studies.real_faces " + shlex.join(argv if argv is not None else sys.argv[1:])
        from glsr.bench.machine import cpu_info, library_versions

        machine = {"cpu": cpu_info(), "libraries": library_versions()}
        if args.update:
            r = merge_update(json.loads(Path(args.update).read_text()), r, command, machine)
            command = r["command"]
        else:
            r["command"], r["machine"] = command, machine
        atomic.write_text(args.out + ".json", portable_text(json.dumps(r, indent=2)) + "\n")  # no machine folders
    from glsr.train.metrics import plot_ced

    atomic.write_text(args.out + ".md", portable_text(markdown(r, command)))
    plot_ced(r["ced"], args.out + "-ced.png", alpha=0.1, title=f"CED, 300-W {SPLIT} split (inter-ocular)")
    if args.readme:
        readme = Path(args.readme)
        link = Path(args.out + ".md").resolve().relative_to(readme.resolve().parent).as_posix()
        update_readme(readme, readme_block(r, command, link))
    print(markdown(r, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
