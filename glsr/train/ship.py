"""``glsr ship``: turn a finished training run into a shippable checkpoint with its model card.

The card is generated from the run's own records, never typed by hand: ``config.json`` (the exact command is
``glsr train --config config.json --out RUN``, the config is embedded), ``summary.json`` (held-out NME per stage,
the stage kept), ``metrics.jsonl`` (wall time per stage, threads) and, optionally, the record of the model in a
``benchmarks.studies.real_faces`` JSON (NME / FR / AUC with tight and detector boxes, per part, ms per face).

The checkpoint written is the run's ``model.pt`` (the best stage on the held-out faces) with the box convention of
its training data stamped in (:func:`glsr.train.trainer.training_box_convention`) and the data licence noted. Given
several runs that differ only in their seed, it is the uniform average of their checkpoints (:mod:`glsr.train.soup`)
and the card lists every member with its own held-out NME.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from glsr import atomic
from glsr.digest import file_sha256
from glsr.models.checkpoint import atomic_torch_save, read_checkpoint
from glsr.train import photometric
from glsr.train.lineage import checkpoint_lineage, relabel
from glsr.train.runfiles import CONFIG_FILE, MODEL_FILE, SUMMARY_FILE
from glsr.train.teacher import teacher_sentence
from glsr.train.soup import member_names, soup_checkpoint, soup_config_differences
from glsr.train.trainer import read_events

LICENCES: Dict[str, str] = {
    "300w": ("300-W (iBUG; images from Flickr via AFW and HELEN): annotations for research use only, no commercial "
             "use. These weights were trained on it and inherit these terms."),
    "procedural": "glsr's procedural faces (generated, no licence restriction).",
}
INIT_NOTES: Dict[str, str] = {
    "wflw": ("initialized from the authors' released WFLW GSR (shaoxiaohu/Face_Alignment_DPR, MIT), cut to the "
             "standard WFLW-98 -> 68 points with `glsr import-dpr DIR --scheme 68`"),
}


def run_record(run: str | os.PathLike) -> Dict[str, Any]:
    """What a run folder says about itself: config, per-stage held-out NME and wall time, the kept stage."""
    run = Path(run)
    for name in (CONFIG_FILE, SUMMARY_FILE, MODEL_FILE):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{run / name} is missing: is {run} a finished `glsr train` run?")
    config = json.loads((run / CONFIG_FILE).read_text())
    summary = json.loads((run / SUMMARY_FILE).read_text())
    ev = read_events(run)
    times = [e["time"] for e in ev]
    starts = [e for e in ev if e["event"] in ("start", "resume")]
    stage_ends = {e["stage"]: e["time"] for e in ev if e["event"] == "stage"}
    steps = {e["stage"]: e["global_step"] for e in ev if e["event"] == "stage"}
    return {"run": str(run), "config": config, "summary": summary,
            "wall_seconds": (max(times) - min(times)) if times else None, "resumed": len(starts) > 1,
            "threads": next((e.get("threads") for e in starts if "threads" in e), config.get("threads")),
            "train_faces": next((e.get("train_faces") for e in starts if "train_faces" in e), None),
            "stage_end_times": stage_ends, "stage_steps": steps,
            "start_time": min(times) if times else None}


def checkpoint_stage(summary: Dict[str, Any], checkpoint: str) -> Optional[str]:
    """The stage a run's ``checkpoint`` file holds: the kept one for ``model.pt``, else its name's (``stage2-global.pt``
    -> ``global``)."""
    if checkpoint == MODEL_FILE:
        return (summary.get("selected") or {}).get("stage")
    return Path(checkpoint).stem.split("-", 1)[-1]


def member_record(rec: Dict[str, Any], name: str, checkpoint: str) -> Dict[str, Any]:
    """One soup member for the card: run name, seed, the stage its ``checkpoint`` holds and that stage's NME."""
    summ = rec["summary"]
    stage = checkpoint_stage(summ, checkpoint)
    val = next((s.get("val") for s in summ.get("stages", []) if s.get("stage") == stage), None)
    return {"run": name, "seed": rec["config"].get("seed"), "stage": stage,
            "val_nme": val.get("nme") if val else None, "wall_seconds": rec.get("wall_seconds")}


def _minutes(seconds: Optional[float]) -> str:
    return "n/a" if seconds is None else f"{seconds / 60:.1f} min"


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def model_card(name: str, file: str, rec: Dict[str, Any], evaluation: Optional[Dict[str, Any]], size: int,
               sha256: str, init_note: Optional[str], lineage: Optional[List[str]] = None) -> str:
    """The Markdown card of a shipped model (see module docstring for the sources of every figure); ``lineage``:
    the weights' ``--init`` chain, nearest first (:mod:`glsr.train.lineage`)."""
    cfg, summ = rec["config"], rec["summary"]
    kind = str(cfg.get("data", "")).split(":", 1)[0].lower()
    stages = cfg.get("stages") or []
    aug = cfg.get("augment") or {}
    lines = [f"# `{name}`: {file}", "",
             f"Variant `{summ.get('variant')}`, {summ.get('scheme')}-point scheme, trained by `glsr train` on real "
             "faces. Use it with `glsr predict IMAGE --weights " + name + "` (or `--weights models/" + file + "`).", "",
             "## Data and licence", "",
             f"- Training data: `{cfg.get('data')}` split `{cfg.get('train_split')}` ({rec.get('train_faces')} faces); "
             f"validation: split `{cfg.get('val_split')}` of the same set (faces of one photo never on both sides).",
             f"- Licence: {LICENCES.get(kind, 'see the training data licence.')}"]
    if lineage is not None:
        lines.append("- Weights started from: " + (" ← ".join(f"`{x}`" for x in lineage) + " (the `--init` chain, "
                     "nearest first)." if lineage else "scratch (random initialization)."))
    if init_note:
        lines.append(f"- Start: {init_note}.")
    lines += ["", "## Box convention", "",
              "The tight box of the 68 points (min/max of x and y), which training perturbed at random (centre "
              f"shift std {aug.get('fallback_center_std')} of the box size, log-scale std "
              f"{aug.get('fallback_log_scale_std')}, in-plane rotation up to {aug.get('max_rotation_deg')} degrees). "
              "The checkpoint declares it (`box_convention: tight`): `glsr predict` without `--box` finds faces with "
              "YuNet and corrects its boxes onto it (`glsr.runtime.detectors.DETECTOR_TO_TIGHT`, measured on the "
              "training faces), then crops each face again from the tight box of its first landmarks "
              "(`benchmarks/results/detector_boxes.md`). A hand-drawn box should hug the eyebrows, jaw and chin.", ""]
    pixels = photometric.describe(aug)
    if pixels:
        lines += [pixels, ""]
    distilled = teacher_sentence(cfg.get("distill") or {}, summ.get("teachers") or ())
    if distilled:
        lines += [distilled, ""]
    lines += ["## Command and budget", ""]
    members = rec.get("members")
    if members:
        runs = " ".join(m["run"] for m in members)
        lines += ["The uniform average of the weights of runs that differ only in their seed (a model soup: one "
                  "network, same cost per face; `glsr.train.soup`):", "",
                  "```bash\n" + "".join(f"glsr train --config config.json --seed {m['seed']} --out {m['run']}\n"
                                         for m in members)
                  + f"glsr ship {runs} --name {name}\n```", ""]
    else:
        lines += [f"```bash\nglsr train --config config.json --out {Path(rec['run']).name}\n```", ""]
    lines += ["with this `config.json`" + (f" (run `{members[0]['run']}`'s)" if members else "") + ":", "",
              "```json", json.dumps(cfg, indent=1, sort_keys=True), "```", "",
              "| stage | epochs | lr | optimizer steps (cumulative) | held-out NME (inter-pupil) |",
              "|---|---:|---:|---:|---:|"]
    val = {s["stage"]: s.get("val") for s in summ.get("stages", [])}
    names = ("reinit", "global", "local", "finetune")
    for n, s in zip(names, stages):
        if not s.get("epochs"):
            continue
        v = val.get(n)
        lines.append(f"| {n} | {s['epochs']} x {aug.get('samples_per_image')} samples/face | {s['lr']} | "
                     f"{rec['stage_steps'].get(n, 'n/a')} | {_pct(v['nme']) if v else 'n/a'} |")
    sel = summ.get("selected") or {}
    wall = rec.get("wall_seconds")
    if members:
        lines += ["", "| member run | seed | kept stage | its own held-out NME (inter-pupil) | wall time |",
                  "|---|---:|---|---:|---:|"]
        lines += [f"| {m['run']} | {m['seed']} | {m['stage']} | {_pct(m['val_nme'])} | {_minutes(m['wall_seconds'])} |"
                  for m in members]
        walls = [m["wall_seconds"] for m in members]
        wall = None if None in walls else sum(walls)
        lines += ["", f"Shipped: the average of the members' kept stages. Wall time {_minutes(wall)} in all, each run with {rec.get('threads')} "
                  "thread(s) on a 2-core VM shared with other training runs and tests (so the wall time is an upper "
                  "bound).", ""]
    else:
        lines += ["", f"Kept: the `{sel.get('stage', 'last')}` stage (lowest held-out NME). Wall time "
                  f"{_minutes(wall)} with {rec.get('threads')} thread(s) on a "
                  "2-core VM shared with other training runs and tests (so the wall time is an upper bound)"
                  + (", resumed once or more" if rec.get("resumed") else "") + ".", ""]
    if evaluation:
        lines += evaluation_section(evaluation)
    lines += ["## File", "", f"`{file}`: {size / 1e6:.2f} MB, sha256 `{sha256}`.", ""]
    return "\n".join(lines)


def evaluation_section(evaluation: Dict[str, Any]) -> List[str]:
    """A card's validation and speed lines from a :func:`load_evaluation` record."""
    t, d, sp = evaluation["tight"], evaluation["detector"], evaluation["speed"]
    return ["## Validation (300-W `val` split, faces never trained on)", "",
            f"From `{evaluation.get('command', 'python -m benchmarks.studies.real_faces')}`:", "",
            "| boxes | NME inter-ocular | NME inter-pupil | FR@0.1 (inter-ocular) | AUC@0.1 |",
            "|---|---:|---:|---:|---:|",
            f"| tight box | {_pct(t['nme'])} | {_pct(t['by_norm']['interpupil'])} | {_pct(t['fr'])} | "
            f"{t['auc']:.3f} |",
            f"| Haar detector (corrected, no refinement; {d.get('misses')} misses keep the tight box) | "
            f"{_pct(d['nme'])} | {_pct(d['by_norm']['interpupil'])} | {_pct(d['fr'])} | {d['auc']:.3f} |", "",
            "Per part (inter-ocular, tight box): " + ", ".join(f"{k} {_pct(v)}" for k, v in t["parts"].items())
            + ".", "",
            "## Speed", "",
            f"{sp['ms_median']:.2f} ms per face (p90 {sp['ms_p90']:.2f}) end to end, image + box -> landmarks, "
            f"ONNX fp32 on onnxruntime with {sp['threads']} thread; {evaluation.get('params', 0) / 1e6:.2f} M "
            f"parameters; machine: {evaluation.get('machine', 'see the study JSON')}.", ""]


def refresh_card_evaluation(card: str | os.PathLike, evaluation: Dict[str, Any]) -> None:
    """Re-render the validation and speed sections of an existing card (``## Validation`` up to ``## File``) from
    a newer study record, leaving the rest (run records that may no longer exist) as it was."""
    card = Path(card)
    text = card.read_text()
    start, end = text.find("## Validation"), text.find("## File")
    if start < 0 or end < start:
        raise ValueError(f"{card} has no '## Validation' ... '## File' sections to refresh")
    atomic.write_text(card, text[:start] + "\n".join(evaluation_section(evaluation)) + "\n" + text[end:])


def ship(run: str | os.PathLike | Sequence[str | os.PathLike], name: str, out_dir: str | os.PathLike,
         file: Optional[str] = None, evaluation: Optional[Dict[str, Any]] = None, init_note: Optional[str] = None,
         checkpoint: str = MODEL_FILE) -> Path:
    """Write ``out_dir/file`` (the run's kept checkpoint, or another of its ``checkpoint`` files such as
    ``stage2-global.pt``, with box convention and licence stamped) and its card ``out_dir/<stem>.md``; returns the
    checkpoint path. Several runs (differing only in seed) ship the average of their ``checkpoint`` files."""
    from glsr.train.config import TrainConfig
    from glsr.train.trainer import training_box_convention

    runs = [run] if isinstance(run, (str, os.PathLike)) else list(run)
    records = [run_record(r) for r in runs]
    rec = records[0]
    configs = [TrainConfig.from_dict(r["config"]) for r in records]
    cfg = configs[0]
    if len(runs) == 1:
        ck = read_checkpoint(Path(runs[0]) / checkpoint)
    else:
        names = member_names(runs)
        diff = soup_config_differences(configs)
        if diff:
            raise ValueError(f"runs {', '.join(names)} differ in {', '.join(diff)}: a weight average takes runs of one "
                             "recipe that differ only in their seed")
        seeds = [c.seed for c in configs]
        if len(set(seeds)) < len(seeds):
            raise ValueError(f"runs {', '.join(names)} share a seed ({seeds}): give runs trained with different --seed")
        ck = soup_checkpoint([read_checkpoint(Path(r) / checkpoint) for r in runs], names)
        rec = {**rec, "members": [member_record(r, n, checkpoint) for r, n in zip(records, names)]}
    kind = cfg.data.split(":", 1)[0].strip().lower()

    class _Data:  # what training_box_convention reads of a dataset: the readers' box source
        box_source = cfg.box_source or ("tight" if kind in ("300w", "cofw", "folder") else None)

    extra = dict(ck.get("extra") or {})
    extra["box_convention"] = training_box_convention(cfg, _Data()) or extra.get("box_convention", "")
    extra["licence"] = LICENCES.get(kind, "")
    extra["shipped_as"] = name
    if rec.get("members"):
        extra["soup"] = [{"run": m["run"], "seed": m["seed"]} for m in rec["members"]]
    ck["extra"] = extra
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / (file or f"glsr-{name}-{ck['scheme']}.pt")
    atomic_torch_save(ck, target)
    digest = file_sha256(target)
    if checkpoint != MODEL_FILE:  # the card's "kept" line describes model.pt: say which file this is instead
        rec = {**rec, "summary": {**rec["summary"], "selected": {"stage": checkpoint_stage(rec["summary"], checkpoint)}}}
    card = model_card(name, target.name, rec, evaluation, target.stat().st_size, digest, init_note,
                      relabel(checkpoint_lineage(extra), name))
    atomic.write_text(target.with_suffix(".md"), card)
    return target


def load_evaluation(path: str | os.PathLike, label: str) -> Dict[str, Any]:
    """The record of ``label`` in a ``benchmarks.studies.real_faces`` JSON, with the command and machine that
    measured it: the last ``--update`` that named it, else the study's own."""
    r = json.loads(Path(path).read_text())
    if label not in r.get("models", {}):
        raise ValueError(f"{path} has no model labelled {label!r}; labels: {sorted(r.get('models', {}))}")
    source = next((u for u in reversed(r.get("updates", [])) if label in u.get("models", [])), r)
    cpu = (source.get("machine") or {}).get("cpu") or {}
    machine = cpu.get("model") or cpu.get("name") or ""
    return {**r["models"][label], "command": source.get("command"), "machine": machine}

