"""The shipped models' cards with the project's measurements: ``python -m benchmarks.ship``.

A maintainers' tool beside the product. ``glsr ship RUN... --name NAME -o DIR`` (:mod:`glsr.train.ship`) packages a
run with a card generated from the run's own records; this tool adds what the project measured about the model
in the real-faces study (``python -m benchmarks.studies.real_faces``: validation NME / FR / AUC with tight and
detector boxes, per part, ms per face) and a note on where the weights started, and rewrites the card of a
shipped checkpoint from what the checkpoint records once its run folders are gone (``--card``)::

    python -m benchmarks.ship RUN... --name small --eval benchmarks/results/real_faces.json   # into models/
    python -m benchmarks.ship --card models/glsr-small-68.pt --name small --eval benchmarks/results/real_faces.json

The commands that made the committed cards are in ``benchmarks/research/models-record.md`` ("Regenerating the
cards").
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from glsr import atomic
from glsr.digest import file_sha256
from glsr.paths import CHECKOUT, portable

MODELS_DIR = CHECKOUT / "models"
"""The shipped models of this checkout (installed as ``glsr.zoo``): where this tool ships by default."""
STUDY = "python -m benchmarks.studies.real_faces"
INIT_NOTES: Dict[str, str] = {
    "wflw": ("initialized from the authors' released WFLW GSR (shaoxiaohu/Face_Alignment_DPR, MIT), cut to the "
             "standard WFLW-98 -> 68 points with `glsr import-dpr DIR --scheme 68`"),
}
"""Short names ``--init-note`` accepts for a sentence."""


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def load_evaluation(path: str | os.PathLike, label: str) -> Dict[str, Any]:
    """The record of ``label`` in a ``benchmarks.studies.real_faces`` JSON, with the command and machine that
    measured it: the last ``--update`` that named it, else the study's own."""
    r = json.loads(Path(path).read_text())
    if label not in r.get("models", {}):
        raise ValueError(f"{path} has no model labelled {label!r}; labels: {sorted(r.get('models', {}))}")
    source = next((u for u in reversed(r.get("updates", [])) if label in u.get("models", [])), r)
    cpu = (source.get("machine") or {}).get("cpu") or {}
    machine = cpu.get("model") or cpu.get("name") or ""
    return {**r["models"][label], "label": label, "command": source.get("command"), "machine": machine,
            "count": r.get("faces"), "source": STUDY, "record": portable(Path(path).resolve())}


def detector_row(d: Dict[str, Any]) -> str:
    """The card's label of a study's detector row: ``glsr predict``'s default path (YuNet, corrected, re-cropped) or,
    for records from before it (no ``spec``), OpenCV's Haar cascade without refinement."""
    spec, misses = d.get("spec", "haar"), d.get("misses")
    name = {"yunet": "YuNet", "haar": "Haar"}.get(spec, spec)
    how = "then one re-crop from its landmarks, as `glsr predict`" if d.get("refine") else "no refinement"
    return f"{name} detector (corrected, {how}; misses: {misses}, a miss keeps the tight box)"


def evaluation_section(evaluation: Dict[str, Any]) -> List[str]:
    """A card's validation and speed sections from a :func:`load_evaluation` record."""
    t, d, sp = evaluation["tight"], evaluation["detector"], evaluation["speed"]
    faces = evaluation.get("count") or t.get("count")
    source = evaluation.get("source") or STUDY
    return ["## Validation (300-W `val` split, faces never trained on)", "",
            f"{faces} faces; measured by `{source}`"
            + (f" (record: `{evaluation['record']}`)" if evaluation.get("record") else "") + ":", "",
            "| boxes | NME inter-ocular | NME inter-pupil | FR@0.1 (inter-ocular) | AUC@0.1 |",
            "|---|---:|---:|---:|---:|",
            f"| tight box | {_pct(t['nme'])} | {_pct(t['by_norm']['interpupil'])} | {_pct(t['fr'])} | "
            f"{t['auc']:.3f} |",
            f"| {detector_row(d)} | "
            f"{_pct(d['nme'])} | {_pct(d['by_norm']['interpupil'])} | {_pct(d['fr'])} | {d['auc']:.3f} |", "",
            "Per part (inter-ocular, tight box): " + ", ".join(f"{k} {_pct(v)}" for k, v in t["parts"].items())
            + ".", "",
            "## Speed", "",
            f"{sp['ms_median']:.2f} ms per face (p90 {sp['ms_p90']:.2f}) end to end, image + box -> landmarks, "
            f"ONNX fp32 on onnxruntime with {sp['threads']} thread; machine: "
            f"{evaluation.get('machine') or 'see the study record'}. Other runtimes, precisions and the host-warp "
            f"mode: `glsr bench --peers mediapipe,dlib --models {evaluation.get('label', 'NAME')}`.", ""]


def measured_sections(evaluation: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """``glsr.train.ship`` keyword arguments carrying an evaluation: its sections and parameter count."""
    if not evaluation:
        return {}
    return {"measured": evaluation_section(evaluation), "params": evaluation.get("params")}


def refresh_card_evaluation(card: str | os.PathLike, evaluation: Dict[str, Any]) -> None:
    """Re-render the validation and speed sections of an existing card (``## Validation`` and ``## Speed``, up to
    the next section) from a newer study record, leaving the rest as it was."""
    card = Path(card)
    text = card.read_text()
    start = text.find("## Validation")
    heads = [i for i in range(start + 1, len(text)) if text.startswith("\n## ", i - 1) and
             not text.startswith(("## Validation", "## Speed"), i)] if start >= 0 else []
    if start < 0 or not heads:
        raise ValueError(f"{card} has no '## Validation' section followed by another section to refresh")
    atomic.write_text(card, text[:start] + "\n".join(evaluation_section(evaluation)) + "\n" + text[heads[0]:])


def write_card(checkpoint: str | os.PathLike, name: str, evaluation: Optional[Dict[str, Any]] = None,
               init_note: Optional[str] = None, crop: Optional[int] = None, align_loc: bool = False,
               drop_local: bool = False) -> Path:
    """(Re)write the card beside a shipped checkpoint from what the checkpoint itself records (``--card``): the
    run folders may be gone. ``crop``: first rewrite the checkpoint at an input crop of that many px at the same
    pixel scale, or with ``align_loc`` at a scale whose pixels hold the loc image's (the weights stay);
    ``drop_local``: with the local stage made inert, its last layers zeroed
    (:func:`glsr.models.checkpoint.shipping_form`). Without these options the checkpoint is not rewritten. Returns
    the card's path."""
    from glsr.models.checkpoint import atomic_torch_save, read_checkpoint, shipping_form
    from glsr.train.ship import model_card

    path = Path(checkpoint)
    read = read_checkpoint(path)
    ck = shipping_form(read, crop, align_loc, drop_local)
    if ck is not read:
        atomic_torch_save(ck, path)
    card = path.with_suffix(".md")
    atomic.write_text(card, model_card(name, path.name, ck, path.stat().st_size, file_sha256(path), init_note,
                                       **measured_sections(evaluation)))
    return card


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ship", description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="*", help="finished `glsr train` run folders (several: their seeds' weight average)")
    ap.add_argument("--card", metavar="FILE.pt", help="instead of shipping a run, rewrite the card beside this shipped "
                                                      "checkpoint from what it records (the weights are not touched)")
    ap.add_argument("--name", required=True, help="short model name (e.g. small)")
    ap.add_argument("-o", "--out", default=str(MODELS_DIR), help="output folder (default: this checkout's models/)")
    ap.add_argument("--file", help="checkpoint file name (default glsr-NAME-SCHEME.pt)")
    ap.add_argument("--eval", help="benchmarks.studies.real_faces JSON holding this model's validation and speed")
    ap.add_argument("--label", help="the model's label in --eval (default NAME)")
    ap.add_argument("--init-note", help="say where the weights started from: 'wflw' (the authors' WFLW GSR cut to 68 "
                                        "points) or a sentence of your own")
    ap.add_argument("--checkpoint", default="model.pt", help="which checkpoint of the run (default model.pt)")
    ap.add_argument("--crop", type=int, metavar="PX", help="ship at an input crop of PX px at the same pixel scale and "
                    "centre (weights untouched); with --card, rewrite that checkpoint's crop. Check first that the "
                    "network's windows stay inside: python -m benchmarks.studies.trimmed_crop")
    ap.add_argument("--align-loc", action="store_true", help="at a crop whose pixels hold the loc image's (the graph "
                    "slices the loc off the crop; glsr ship --align-loc)")
    ap.add_argument("--drop-local", action="store_true", help="with the local stage inert (glsr ship --drop-local)")
    args = ap.parse_args(argv)
    note = INIT_NOTES.get(args.init_note, args.init_note)
    try:
        evaluation = load_evaluation(args.eval, args.label or args.name) if args.eval else None
        if bool(args.card) == bool(args.run):
            raise ValueError("give run folders to ship, or --card FILE.pt (not both)")
        if args.card:
            card = write_card(args.card, args.name, evaluation, note, args.crop, args.align_loc, args.drop_local)
            print(f"wrote {card}")
            return 0
        from glsr.train.ship import ship

        path = ship(args.run, args.name, args.out, args.file, note, args.checkpoint, **measured_sections(evaluation),
                    crop=args.crop, align_loc=args.align_loc, drop_local=args.drop_local)
    except (OSError, ValueError) as e:
        print(f"python -m benchmarks.ship: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
