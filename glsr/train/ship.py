"""``glsr ship``: turn a finished training run into a shippable checkpoint with its model card (what the last step
of ``glsr train --recipe`` does).

The card is written for the model's users and generated, never typed by hand: what the model is for and its
limits, box convention, licence, how it was made (from the checkpoint's own record: training config, ``--init``
chain, soup members; at ship time also the run's ``summary.json``, held-out NME per stage and the stage kept, and
``metrics.jsonl``, wall time), and the file's size and checksum. The exact command is ``glsr train --config
config.json --out RUN`` with the embedded config (or, for a run trained with a target hook, the command its tool
recorded: :mod:`glsr.train.hooks`); paths of the training machine are shown without its folders
(:func:`glsr.paths.portable`). Sections measured elsewhere (the project's real-faces validation and speed) come in
as ready lines (``measured``): the maintainers' ``python -m benchmarks.ship`` adds them to the shipped models'
cards.

The checkpoint written is the run's ``model.pt`` (the best stage on the held-out faces) with the box convention of
its training data stamped in (:func:`glsr.train.trainer.training_box_convention`) and the data licence noted. Given
several runs that differ only in their seed, it is the uniform average of their checkpoints (:mod:`glsr.train.soup`)
and the card lists every member with its own held-out NME.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from glsr import atomic
from glsr.digest import file_sha256
from glsr.models.checkpoint import LOCAL_DROPPED_KEY, TRIM_KEY, atomic_torch_save, read_checkpoint, shipping_form
from glsr.paths import portable
from glsr.train import photometric
from glsr.train.config import without_legacy
from glsr.train.hooks import RECORD_KEY
from glsr.train.lineage import checkpoint_lineage, relabel
from glsr.train.runfiles import CONFIG_FILE, MODEL_FILE, SUMMARY_FILE
from glsr.train.soup import member_names, soup_checkpoint, soup_config_differences
from glsr.train.eventlog import read_events

LICENCES: Dict[str, str] = {
    "300w": ("300-W (iBUG; images from Flickr via AFW and HELEN): annotations for research use only, no commercial "
             "use. These weights were trained on it and inherit these terms."),
    "procedural": "glsr's procedural faces (generated, no licence restriction).",
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


def portable_config(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """A training config as a card shows it: data specs and file paths without the training machine's folders
    (:func:`glsr.paths.portable`), and without the fields of older configs that glsr no longer reads
    (:func:`glsr.train.config.without_legacy`)."""
    out = dict(without_legacy(cfg))
    for key in ("data", "val_data", "init"):
        if isinstance(out.get(key), str):
            out[key] = portable(out[key])
    return out


def _intended_use(kind: str, aug: Dict[str, Any], points: Any) -> List[str]:
    if kind == "procedural":
        return ["- A demonstration model trained on glsr's procedural faces (what `glsr pipeline` trains): for "
                "checking the chain of training, export and runtime, not for real photos."]
    if kind == "300w":
        lines = [f"- For research and prototyping with the {points}-point 300-W (iBUG) markup: alignment for face "
                 "analysis, landmark-driven crops, overlays. Not for commercial use (see the licence).",
                 "- Trained on 300-W's AFW and HELEN photos (Flickr, faces in the wild); the accuracy below is on "
                 "held-out faces of the same collection. Not measured: video, other markups, strong profile views, "
                 "heavy occlusion, low light."]
    else:
        lines = [f"- Trained on `{kind}` data; the accuracy below is on held-out faces of the same data. Check it on "
                 "your own faces (`glsr eval`) before relying on it."]
    if aug.get("max_rotation_deg") is not None:
        lines.append(f"- Training rotated the crops by up to ±{aug['max_rotation_deg']:g} degrees; larger in-plane "
                     "rotations are outside what it has seen.")
    lines.append("- It expects face boxes in its box convention (below). Without boxes `glsr predict` finds faces "
                 "with YuNet, corrects their boxes onto that convention and crops each face again from its first "
                 "landmarks (`benchmarks/results/detector_boxes.md`).")
    return lines


def _training_sentence(cfg: Dict[str, Any], aug: Dict[str, Any]) -> str:
    """The last training step in one sentence: the stages it trained, loss, optimizer, batch, mirroring."""
    names = ("reinit", "global", "local", "finetune")
    trained = [f"{n} {s['epochs']} epoch{'s' if s['epochs'] != 1 else ''} at lr {s['lr']:g}"
               for n, s in zip(names, cfg.get("stages") or []) if s.get("epochs")]
    loss = (cfg.get("loss") or {}).get("kind", "default")
    parts = [f"stages trained: {', '.join(trained) if trained else 'none'}", f"{loss} loss",
             f"{'AdamW' if cfg.get('optimizer') == 'adam' else 'SGD'}, batch {cfg.get('batch_size')}",
             f"{aug.get('samples_per_image')} augmented samples per face and epoch"]
    if aug.get("flip_probability") is not None:
        parts.append(f"mirrored with probability {aug['flip_probability']:g}")
    if aug.get("pose_oversample"):
        parts.append(f"turned faces oversampled (`augment.pose_oversample` {aug['pose_oversample']:g}: "
                     "1 + round(that x |yaw index|) times the samples)")
    if cfg.get("freeze_batchnorm"):
        parts.append("BatchNorm statistics frozen")
    return "- Last training step (`glsr train`): " + "; ".join(parts) + "."


def run_stages(ck: Dict[str, Any], path: str | os.PathLike) -> Tuple[str, str, int]:
    """``(stages run, stages carried but not run, parameters run)`` of checkpoint ``ck``, the stages " > "-joined:
    a stage that cannot change the output is neither exported nor run
    (:meth:`glsr.models.GLSRNet.without_inert_stages`)."""
    from glsr.models.checkpoint import model_from_checkpoint
    from glsr.models.complexity import count_params

    full = model_from_checkpoint(ck, path)
    kept = full.without_inert_stages()
    return (" > ".join(kept.stages), " > ".join(x for x in full.stages if x not in kept.stages),
            count_params(kept))


LOCAL_SUFFIX = " + local stage"
"""How a variant's description ends when it has a local stage (:mod:`glsr.models.registry`); a card whose local
stage is not run names the variant without it."""


def model_card(name: str, file: str, ck: Dict[str, Any], size: int, sha256: str, init_note: Optional[str] = None,
               rec: Optional[Dict[str, Any]] = None, measured: Sequence[str] = (), params: Optional[int] = None
               ) -> str:
    """The Markdown card of a shipped checkpoint ``ck`` (a glsr checkpoint dict with ``extra`` as ``glsr ship``
    stamps it): what it is for, box convention, licence, how it was made, the file. ``rec`` (a :func:`run_record`
    of the run being shipped) adds what only the run folder knows: face count, per-stage held-out NME, wall time,
    each soup member's own NME. ``measured``: Markdown lines of sections measured elsewhere (accuracy and speed),
    placed before the box convention; ``params``: the parameter count they report, named in the opening line.
    Machine folders never appear (:func:`portable_config`)."""
    extra = ck.get("extra") or {}
    cfg = dict((rec or {}).get("config") or extra.get("train_config") or {})
    vcfg = ck.get("config") or {}
    summ = (rec or {}).get("summary") or {}
    aug = cfg.get("augment") or {}
    kind = str(cfg.get("data", "")).split(":", 1)[0].lower()
    points = ck.get("scheme") or summ.get("scheme")
    variant = vcfg.get("name") or summ.get("variant") or cfg.get("variant")
    run, idle, run_params = run_stages(ck, file)
    local_idle = "local" in idle  # carried with zero output layers: the opening line names what runs
    shape = (f"{vcfg['input_size']} px crop = box x {vcfg['context']:g}, {vcfg['face_size']} px face"
             + ("" if local_idle else f", {vcfg['part_size']} px parts")
             if {"input_size", "context", "face_size", "part_size"} <= set(vcfg) else "")
    description = str(vcfg.get("description") or "").split(": ", 1)[-1]  # without the paper's name before ':'
    if local_idle:
        description = description.removesuffix(LOCAL_SUFFIX) + ", its local stage carried but not run"
    count = (f"{params / 1e6:.2f} M parameters" + (f", {run_params / 1e6:.2f} M of them run" if idle else "")
             if params else "")
    about = "; ".join(x for x in (description, count, shape) if x)
    data = "real faces" if kind not in ("procedural", "") else "procedural faces" if kind else "its data"
    lines = [f"# `{name}`: {points}-point face landmarks", "",
             f"`{file}`: the G&LSR_w `{variant}` variant ({about}), trained by `glsr train` on {data}. Given an image "
             f"and a face box it returns {points} landmarks in image pixels.", "",
             "```bash",
             f"glsr predict photo.jpg --weights {name} --out overlay.png   # faces found by YuNet",
             f"glsr export --weights {name} --format onnx,mnn -o export/   # checked against PyTorch",
             "```", "",
             f"In Python: `Predictor.from_file(\"{name}\").predict(image, boxes)` (`from glsr.runtime import "
             "Predictor`; `image` a BGR array, `boxes` `[[x1, y1, x2, y2], ...]`).", "",
             "## Intended use and limitations", ""] + _intended_use(kind, aug, points) + [""]
    lines += [f"Stages run: {run}" + (f" ({idle} carried with exactly-zero last layers: they cannot change the "
                                      "output, so they are neither exported nor run)" if idle else "") + ".", ""]
    lines += list(measured)
    convention = extra.get("box_convention", "")
    lines += ["## Box convention", ""]
    if convention == "tight":
        lines += [f"The tight box of the {points} points (min/max of x and y), which training perturbed at random "
                  f"(centre shift std {aug.get('fallback_center_std')} of the box size, log-scale std "
                  f"{aug.get('fallback_log_scale_std')}). The checkpoint declares it (`box_convention: tight`, "
                  "carried into every export's metadata): `glsr predict` without `--box` finds faces with YuNet "
                  "and corrects its boxes onto it (`glsr.boxes.DETECTOR_TO_TIGHT`, measured on the "
                  "training faces), then crops each face again from the tight box of its first landmarks. A "
                  "hand-drawn box should hug the eyebrows, jaw and chin.", ""]
    else:
        lines += [f"`{convention or 'not recorded'}`, as the checkpoint declares it (`box_convention`, carried into "
                  "every export's metadata).", ""]
    lines += ["## Licence", "", f"{extra.get('licence') or LICENCES.get(kind, 'See the training data licence.')} "
              "glsr's code is MIT.", ""]
    lines += ["## How it was made", ""]
    faces = f" ({rec['train_faces']} faces)" if rec and rec.get("train_faces") else ""
    lines.append(f"- Data: `{portable(str(cfg.get('data')))}` split `{cfg.get('train_split')}`{faces}; held out: "
                 f"split `{cfg.get('val_split')}` of the same set (faces of one photo never on both sides).")
    lineage = relabel(checkpoint_lineage(extra), name)
    lines.append("- Weights started from: " + (" ← ".join(f"`{x}`" for x in lineage) + " (the `--init` chain, "
                 "nearest first)." if lineage else "scratch (random initialization)."))
    if init_note:
        lines.append(f"- Start: {init_note}.")
    lines.append(_training_sentence(cfg, aug))
    trim = crop_sentence(vcfg, extra)
    if trim:
        lines.append(trim)
    if extra.get(LOCAL_DROPPED_KEY):
        lines.append("- Shipped without its local stage (`glsr ship --drop-local`): its local regressors' last layers "
                     "are set to zero, so the stage is carried but neither exported nor run; the landmarks are the "
                     "global stage's (held-out NME with and without it: `glsr eval`).")
    pixels = photometric.describe(aug)
    hook = summ.get(RECORD_KEY) or (extra.get("history") or {}).get(RECORD_KEY) or {}
    made = str(hook.get("card") or "")  # the sentence of the tool whose target hook the run trained with
    lines += [""] + ([pixels, ""] if pixels else []) + ([made, ""] if made else [])
    train = str(hook.get("command") or "glsr train")
    members = (rec or {}).get("members") or [{"run": m["run"], "seed": m["seed"]} for m in extra.get("soup") or []]
    if members:
        runs = " ".join(m["run"] for m in members)
        lines += [f"The uniform average of the weights of {len(members)} runs that differ only in their seed (a model "
                  "soup: one network, same cost per face; `glsr.train.soup`):", "",
                  "```bash\n" + "".join(f"{train} --config config.json --seed {m['seed']} --out {m['run']}\n"
                                         for m in members)
                  + f"glsr ship {runs} --name {name}\n```", ""]
    else:
        run = Path(rec["run"]).name if rec else "RUN"
        lines += [f"```bash\n{train} --config config.json --out {run}\n```", ""]
    if rec:
        lines += _run_tables(rec, members)
    lines += ["with this `config.json`" + (f" (run `{members[0]['run']}`'s)" if members else "") + ":", "",
              "```json", json.dumps(portable_config(cfg), indent=1, sort_keys=True), "```", ""]
    lines += ["## File", "", f"`{file}`: {size / 1e6:.2f} MB, sha256 `{sha256}`.", ""]
    return "\n".join(lines)


def crop_sentence(vcfg: Dict[str, Any], extra: Dict[str, Any]) -> str:
    """The card's line for a checkpoint shipped at another crop than it was trained at (``glsr ship --crop``,
    ``--align-loc``), else ``""``."""
    from glsr.models.network import loc_window

    was = extra.get(TRIM_KEY)
    if not was:
        return ""
    size, context, loc = vcfg["input_size"], vcfg["context"], vcfg["loc_size"]
    trained = f"the {was['input_size']} px crop (context {was['context']:g}) it was trained at"
    scale = (size - 1) / context / ((was["input_size"] - 1) / was["context"])
    if abs(scale - 1) < 1e-9:
        return (f"- Shipped at a {size} px crop (context {context:g}), trimmed from {trained} (`glsr ship --crop "
                f"{size}`): the same pixel scale and centre, so the network samples the same image points wherever its "
                "windows stay inside the smaller crop, and the host crops fewer pixels (checked on held-out faces by "
                "`python -m benchmarks.studies.trimmed_crop`).")
    window = loc_window(size, loc, context)
    how = ""
    if window is not None:
        start, kernel, step = window
        what = "a slice" if kernel == 1 else "2x2 pixel means"
        stepped = f" with step {step}" if step > 1 else ""
        how = (f", so the graph reads its {loc} px loc image off the crop ({what}{stepped} from crop pixel {start}) "
               "instead of resampling it")
    return (f"- Shipped at a {size} px crop (context {context:g}), aligned to the loc image's pixels, from {trained} "
            f"(`glsr ship --crop {size} --align-loc`): {scale:.3f}x its pixel scale{how} (held-out NME: `glsr eval`).")


def _run_tables(rec: Dict[str, Any], members: List[Dict[str, Any]]) -> List[str]:
    """What the run folders say: held-out NME per stage, the kept stage, each member's own NME, wall time."""
    cfg, summ = rec["config"], rec["summary"]
    aug = cfg.get("augment") or {}
    lines = ["| stage | epochs | lr | optimizer steps (cumulative) | held-out NME (inter-pupil) |",
             "|---|---:|---:|---:|---:|"]
    val = {s["stage"]: s.get("val") for s in summ.get("stages", [])}
    for n, s in zip(("reinit", "global", "local", "finetune"), cfg.get("stages") or []):
        if not s.get("epochs"):
            continue
        v = val.get(n)
        lines.append(f"| {n} | {s['epochs']} x {aug.get('samples_per_image')} samples/face | {s['lr']} | "
                     f"{rec['stage_steps'].get(n, 'n/a')} | {_pct(v['nme']) if v else 'n/a'} |")
    sel = summ.get("selected") or {}
    wall = rec.get("wall_seconds")
    if members and "val_nme" in members[0]:
        lines += ["", "| member run | seed | kept stage | its own held-out NME (inter-pupil) | wall time |",
                  "|---|---:|---|---:|---:|"]
        lines += [f"| {m['run']} | {m['seed']} | {m['stage']} | {_pct(m['val_nme'])} | {_minutes(m['wall_seconds'])} |"
                  for m in members]
        walls = [m["wall_seconds"] for m in members]
        wall = None if None in walls else sum(walls)
        lines += ["", f"Shipped: the average of the members' kept stages. Wall time {_minutes(wall)} in all, each run "
                  f"with {rec.get('threads')} thread(s).", ""]
    else:
        lines += ["", f"Kept: the `{sel.get('stage', 'last')}` stage (lowest held-out NME). Wall time "
                  f"{_minutes(wall)} with {rec.get('threads')} thread(s)"
                  + (", resumed once or more" if rec.get("resumed") else "") + ".", ""]
    return lines


def trained_by(path: Path, cfg: "TrainConfig") -> Dict[str, Any]:
    """The checkpoint at ``path`` (a run's ``model.pt`` or stage file), read and checked to hold weights that run
    trained: its recorded training config must be the run's ``config.json`` (runtime-only fields aside).
    ``ValueError`` otherwise: ship stamps the run's data licence and box convention, which describe only the
    weights the run trained, never a file copied into its folder."""
    from glsr.train.config import TrainConfig
    from glsr.train.config import config_differences

    ck = read_checkpoint(path)
    recorded = (ck.get("extra") or {}).get("train_config")
    try:
        diff = config_differences(TrainConfig.from_dict(recorded), cfg) if isinstance(recorded, dict) else None
    except (ValueError, TypeError):
        diff = None
    if diff is None or diff:
        why = "it records no training config" if diff is None else f"its training config differs in {', '.join(diff)}"
        raise ValueError(f"{path} was not trained by the run in {path.parent} ({why}): glsr ship stamps that run's "
                         "data licence and box convention only on weights the run trained; ship the run that "
                         "trained it, or put back the run's own checkpoint")
    return ck


def check_ship_target(target: Path, runs: Sequence[str | os.PathLike]) -> None:
    """``ValueError`` when the checkpoint ``target`` is not a ``.pt`` file (its card, ``<stem>.md``, would land on
    it) or would overwrite a file of a run being shipped (its own source)."""
    if target.suffix != ".pt":
        raise ValueError(f"--file {target.name}: give a .pt file name (the card is written beside it as "
                         f"{target.stem}.md)")
    where = target.resolve()
    for r in runs:
        if where.parent == Path(r).resolve():
            raise ValueError(f"--file {target}: would write into the run folder {r} it ships from (over its own "
                             "checkpoints); choose another -o")


def ship(run: str | os.PathLike | Sequence[str | os.PathLike], name: str, out_dir: str | os.PathLike,
         file: Optional[str] = None, init_note: Optional[str] = None, checkpoint: str = MODEL_FILE,
         measured: Sequence[str] = (), params: Optional[int] = None, crop: Optional[int] = None,
         align_loc: bool = False, drop_local: bool = False) -> Path:
    """Write ``out_dir/file`` (the run's kept checkpoint, or another of its ``checkpoint`` files such as
    ``stage2-global.pt``, with box convention and licence stamped) and its card ``out_dir/<stem>.md``; returns the
    checkpoint path. Several runs (differing only in seed) ship the average of their ``checkpoint`` files.
    ``measured`` / ``params``: see :func:`model_card`. ``crop``: ship at an input crop of that many px at the same
    pixel scale, or with ``align_loc`` at a scale whose pixels hold the loc image's; ``drop_local``: with the local
    stage inert (:func:`glsr.models.checkpoint.shipping_form`)."""
    from glsr.train.config import TrainConfig
    from glsr.train.trainer import training_box_convention

    runs = [run] if isinstance(run, (str, os.PathLike)) else list(run)
    records = [run_record(r) for r in runs]
    rec = records[0]
    configs = [TrainConfig.from_dict(r["config"]) for r in records]
    cfg = configs[0]
    out_dir = Path(out_dir)
    for option, value in (("--file", file), ("--name", name)):
        if value is not None and (not value or Path(value).name != value or value in (".", "..")):
            raise ValueError(f"{option} {value!r}: give a plain name (no folder); choose the folder with -o")
    target = out_dir / (file or f"glsr-{name}-{{scheme}}.pt")
    check_ship_target(target, runs)
    if len(runs) == 1:
        ck = trained_by(Path(runs[0]) / checkpoint, cfg)
    else:
        names = member_names(runs)
        diff = soup_config_differences(configs)
        if diff:
            raise ValueError(f"runs {', '.join(names)} differ in {', '.join(diff)}: a weight average takes runs of one "
                             "recipe that differ only in their seed")
        if any(r["summary"].get(RECORD_KEY) != rec["summary"].get(RECORD_KEY) for r in records):
            raise ValueError(f"runs {', '.join(names)} were trained with different target hooks (glsr.train.hooks): a "
                             "weight average takes runs of one recipe that differ only in their seed")
        seeds = [c.seed for c in configs]
        if len(set(seeds)) < len(seeds):
            raise ValueError(f"runs {', '.join(names)} share a seed ({seeds}): give runs trained with different --seed")
        ck = soup_checkpoint([trained_by(Path(r) / checkpoint, c) for r, c in zip(runs, configs)], names)
        rec = {**rec, "members": [member_record(r, n, checkpoint) for r, n in zip(records, names)]}
    kind = cfg.data.split(":", 1)[0].strip().lower()

    class _Data:  # what training_box_convention reads of a dataset: the readers' box source
        box_source = cfg.box_source or ("tight" if kind in ("300w", "cofw", "folder") else None)

    extra = dict(ck.get("extra") or {})
    extra["box_convention"] = training_box_convention(cfg, _Data()) or extra.get("box_convention", "")
    extra["licence"] = LICENCES.get(kind, "")
    extra["shipped_as"] = name
    if isinstance(extra.get("train_config"), dict):  # a shipped file names no folder of the training machine
        extra["train_config"] = portable_config(extra["train_config"])
    if rec.get("members"):
        extra["soup"] = [{"run": m["run"], "seed": m["seed"]} for m in rec["members"]]
    ck["extra"] = extra
    ck = shipping_form(ck, crop, align_loc, drop_local)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = Path(str(target).replace("{scheme}", str(ck["scheme"])))
    atomic_torch_save(ck, target)
    digest = file_sha256(target)
    if checkpoint != MODEL_FILE:  # the card's "kept" line describes model.pt: say which file this is instead
        kept = {"stage": checkpoint_stage(rec["summary"], checkpoint)}
        rec = {**rec, "summary": {**rec["summary"], "selected": kept}}
    card = model_card(name, target.name, ck, target.stat().st_size, digest, init_note, rec, measured, params)
    atomic.write_text(target.with_suffix(".md"), card)
    return target
