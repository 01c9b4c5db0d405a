"""``glsr train`` (the four-stage training of Section 4.1) and ``glsr eval`` (NME / AUC / FR / CED, Table 4).

Precedence of training settings: :class:`glsr.train.config.TrainConfig` defaults < ``--config FILE.json`` <
flags given on the command line < ``--set KEY=VALUE`` (any config field by its dotted path,
:func:`glsr.train.config.apply_settings`). Heavy imports happen inside the handlers.
"""
from __future__ import annotations

import argparse
from typing import Dict, List, Optional

from glsr.train.config import OPTIMIZERS, TrainConfig  # a light module (dataclasses only)
from glsr.runtime.detectors import DEFAULT_DETECTOR  # numpy only

LOSS_CHOICES = ("l1", "adaptive")
RESEARCH_FLAGS = (
    "--lr-last", "--samples", "--val-samples", "--samples-per-image", "--box-jitter", "--flip-probability",
    "--max-rotation", "--color-jitter", "--blur-probability", "--grayscale-probability", "--occlusion-probability",
    "--annotation-noise", "--error-scale", "--stn-off-threshold", "--stn-off-epoch", "--input-size", "--loc-size",
    "--face-size", "--part-size", "--context", "--box-scale", "--theta-mode", "--grow-passes", "--grow-epochs",
    "--grow-lr", "--grow-normalize", "--freeze-batchnorm", "--optimizer", "--log-every", "--val-limit")
"""``glsr train`` flags of research settings: accepted as always, listed by ``--help-all`` only (``--help`` shows
what a user needs; every setting is also ``--set KEY=VALUE``)."""


class _HelpAll(argparse.Action):
    """``glsr train --help-all``: the help with the research flags too."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        full = argparse.ArgumentParser(prog=parser.prog.rsplit(" ", 1)[0])
        register(full.add_subparsers(), show_all=True)
        full._subparsers._group_actions[0].choices["train"].print_help()
        parser.exit()


def register(sub: argparse._SubParsersAction, show_all: bool = False) -> None:
    from glsr.train.config import AugmentConfig, GrowConfig

    A, G, T = AugmentConfig(), GrowConfig(), TrainConfig()  # noqa: N806 (the defaults' home)
    p = sub.add_parser("train",
                       help="train a variant (four stages of the paper's Section 4.1; resumable, torchrun-ready)",
                       description="Train a G&LSR_w variant. Procedural data (procedural[:68|:98]) gets a small "
                                   "default budget that finishes in minutes on a CPU. Multi-process: "
                                   "torchrun --nproc_per_node N -m glsr train ...")
    p.add_argument("--variant", help=f"small | medium | large | b1 | b2 | gsr (default {T.variant})")
    p.add_argument("--data", help="training data: procedural[:68|:98] | 300w:DIR | wflw:DIR | aflw:DIR | folder:DIR "
                                  f"(default {T.data})")
    p.add_argument("--val-data", help="held-out data spec (default: a procedural test split for procedural data)")
    p.add_argument("--split", dest="train_split", help="training split of a dataset reader (default: the reader's)")
    p.add_argument("--val-split", help="split of --val-data")
    p.add_argument("--box-source", help="readers' face boxes: annotation | file | tight | auto")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave malformed faces (bad landmark files, unreadable images) of the data out and count "
                        "them, instead of refusing the data set")
    p.add_argument("--recipe", metavar="NAME|FILE", help="make a shipped model the way it was made: its chain of runs "
                                                         "(small, small-fast, medium; glsr.train.recipe) on --data, "
                                                         "into --out; re-running it continues where it stopped")
    p.add_argument("--jobs", type=int, metavar="N", help="with --recipe: train up to N seeds of a step at once, "
                                                          "one process each (N x the recipe's threads <= cores)")
    p.add_argument("--config", help="JSON file of TrainConfig fields (flags override it)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="any training setting by its dotted path, after --config and the flags (repeatable): "
                        "augment.flip_probability=0, stages.global.lr=0.0003, loss.kind=l1, weight_decay=1e-4")
    p.add_argument("--out", required=True, help="run folder: checkpoints, metrics.jsonl, summary.json")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last saved state")
    p.add_argument("--seed", type=int)
    p.add_argument("--epochs", type=int, help="epochs of every stage")
    p.add_argument("--stage-epochs", type=int, nargs=4, metavar=("REINIT", "GLOBAL", "LOCAL", "FINETUNE"),
                   help="epochs per stage (0 skips a stage)")
    p.add_argument("--lr", type=float, help="starting learning rate of the first three stages (paper: 0.01)")
    p.add_argument("--lr-last", type=float, help="starting learning rate of the fine-tuning stage (paper: 0.001)")
    p.add_argument("--stage-lr", type=float, nargs=4, metavar=("REINIT", "GLOBAL", "LOCAL", "FINETUNE"),
                   help="starting learning rate per stage (overrides --lr / --lr-last)")
    p.add_argument("--max-steps", type=int, help="cap on optimizer steps of each stage")
    p.add_argument("--batch-size", type=int, help="global mini-batch (split over processes; paper: 64)")
    p.add_argument("--samples", type=int, help="procedural training faces")
    p.add_argument("--val-samples", type=int, help="procedural held-out faces")
    p.add_argument("--samples-per-image", type=int, help="perturbed samples per face per epoch (paper: 20)")
    p.add_argument("--box-jitter", type=float, nargs=2, metavar=("SHIFT", "LOG_SCALE"),
                   help="std of the random box centre shift (fraction of the box) and log-scale when the data has "
                        f"no detector boxes to measure them from (default {A.fallback_center_std:g} "
                        f"{A.fallback_log_scale_std:g})")
    p.add_argument("--flip-probability", type=float,
                   help=f"probability of a mirrored training sample (default {A.flip_probability:g}; 0 keeps a "
                        "left-right offset of the annotations relative to the pixels learnable, see "
                        "benchmarks/research/models-record.md)")
    p.add_argument("--max-rotation", type=float, metavar="DEG",
                   help="in-plane rotation of training samples, uniform in [-DEG, DEG] (paper and default: 10)")
    p.add_argument("--color-jitter", type=float, nargs=2, metavar=("CONTRAST", "BRIGHTNESS"),
                   help="photometric jitter of training crops: contrast factor exp(U(-C, C)), brightness offset "
                        "U(-B, B) of the grey range (default 0 0 = off, as the paper; glsr.train.photometric)")
    p.add_argument("--blur-probability", type=float, help="probability of a Gaussian blur of a training crop "
                                                          f"(sigma up to 2 px of a 256 px crop; default "
                                                          f"{A.blur_probability:g})")
    p.add_argument("--grayscale-probability", type=float,
                   help=f"probability of a grey training crop (default {A.grayscale_probability:g})")
    p.add_argument("--occlusion-probability", type=float,
                   help="probability of a random-colour rectangle (sides up to 0.4 of the crop) over the middle of "
                        f"a training crop (default {A.occlusion_probability:g})")
    p.add_argument("--annotation-noise", type=float, help="procedural annotation noise radius delta (px)")
    p.add_argument("--loss", choices=LOSS_CHOICES, help="shape loss: l1 (Eq. 5/6) or adaptive (Eq. 8-9, default)")
    p.add_argument("--error-scale", type=float, help="scale of the errors z fed to the adaptive weights")
    p.add_argument("--stn-off-threshold", type=float, help="switch the STN losses off below this epoch mean")
    p.add_argument("--stn-off-epoch", type=int, help="switch the STN losses off after this many epochs of a stage")
    for name in ("input-size", "loc-size", "face-size", "part-size"):
        p.add_argument(f"--{name}", type=int, help=f"override the variant's {name.replace('-', '_')}")
    p.add_argument("--context", type=float, help="override the variant's crop context")
    p.add_argument("--box-scale", type=float, help="override the variant's box enlargement of the loc region")
    p.add_argument("--theta-mode", choices=("sampling", "forward_pixel"),
                   help="reinit nets' output convention (an --init glsr checkpoint's geometry is the default)")
    p.add_argument("--init", help="weights file or shipped model name (small, ...) to initialise from (matching "
                                  "names and shapes; a glsr checkpoint also gives its geometry and, with its "
                                  "regressor head, its mean shape)")
    p.add_argument("--grow-passes", type=int, help="with --init of a narrower variant (small for --variant medium): "
                                                   "fit the layers the widening cannot carry on this many augmented "
                                                   "passes, so training starts from the narrower model's function "
                                                   f"(glsr.train.grow; default {G.passes} = off)")
    p.add_argument("--grow-epochs", type=int, help=f"epochs of that fit (default {G.epochs})")
    p.add_argument("--grow-lr", type=float, help=f"peak learning rate of that fit (default {G.lr:g})")
    p.add_argument("--grow-normalize", action="store_true",
                   help="before that fit, estimate the BatchNorm statistics of the widened trunk's new channels "
                        "(left at 0 / 1 by the widening) on the training faces, so train and eval mode agree")
    p.add_argument("--freeze-batchnorm", action="store_true",
                   help="BatchNorm layers normalize with their running statistics while training (a grown start "
                        "needs it: its widened trunk computes the narrower model's features only that way)")
    p.add_argument("--optimizer", choices=OPTIMIZERS,
                   help="sgd (the paper's, default) or adam (AdamW: per-parameter step sizes, e.g. for a grown start)")
    p.add_argument("--workers", type=int, help=f"data loader worker processes (default {T.workers})")
    p.add_argument("--threads", type=int, help="torch threads per process (default: cores / processes)")
    p.add_argument("--save-every", type=int, help="also save the resumable state every N optimizer steps")
    p.add_argument("--val-limit", type=int, help="evaluate at most this many held-out faces per stage")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"))
    p.add_argument("--log-every", type=int, help="write a metrics line every N steps")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard events even if installed")
    p.add_argument("--help-all", action=_HelpAll, help="show the research flags too (augmentation, geometry, "
                                                         "growing, optimizer; all also --set)")
    if not show_all:
        hidden = [a for a in p._actions if set(a.option_strings) & set(RESEARCH_FLAGS)]
        for action in hidden:
            action.help = argparse.SUPPRESS
        p.epilog = (f"{len(hidden)} flags of research settings are not shown: glsr train --help-all lists them; "
                    "any setting is also --set KEY=VALUE (glsr.train.config.TrainConfig fields as dotted paths).")
    p.set_defaults(func=_train)

    e = sub.add_parser("eval", help="NME / per-part NME / AUC / FR / CED of checkpoints, optionally under the "
                                    "Table 4 box perturbations")
    e.add_argument("--weights", nargs="+", required=True, help="one or more model files, compared side by side")
    e.add_argument("--data", required=True, help="procedural[:68|:98] | 300w:DIR | wflw:DIR | aflw:DIR | cofw:DIR "
                                                 "| folder:DIR")
    e.add_argument("--split", help="dataset split (default: the paper's test split of that dataset)")
    e.add_argument("--norm", choices=("interocular", "interpupil", "box"),
                   help="NME normalization (default: the scheme's, as the paper)")
    e.add_argument("--alpha", type=float, default=0.1, help="AUC / FR threshold (paper: 0.1; 0.08 also common)")
    e.add_argument("--boxes", choices=("annotation", "tight", "detector"), default="annotation")
    e.add_argument("--detector", default=DEFAULT_DETECTOR,
                   help=f"detector spec for --boxes detector (glsr.runtime.detectors; default {DEFAULT_DETECTOR}, as "
                        "glsr predict; haar: OpenCV's Haar cascade)")
    e.add_argument("--refine", action=argparse.BooleanOptionalAction, default=None,
                   help="re-crop each face from the tight box of its first landmarks, as glsr predict does (default: "
                        "on with --boxes detector, off with the other boxes)")
    e.add_argument("--box-source", help="readers' face boxes: annotation | file | tight | auto")
    e.add_argument("--skip-bad", action="store_true",
                   help="leave malformed faces (bad landmark files, unreadable images) out and count them, instead "
                        "of refusing the data set")
    e.add_argument("--perturb", choices=("scale", "translate", "rotate"),
                   help="Table 4 protocol: one row per perturbation level")
    e.add_argument("--samples", type=int, help="procedural faces to evaluate")
    e.add_argument("--data-seed", type=int, help="procedural generator seed")
    e.add_argument("--limit", type=int, help="evaluate at most this many faces")
    e.add_argument("--seed", type=int, default=0, help="seed of the random perturbation directions")
    e.add_argument("--threads", type=int)
    e.add_argument("--baseline", action="store_true", help="add the mean-shape baseline of the first model")
    e.add_argument("--json", help="write the report as JSON")
    e.add_argument("--md", help="write the report as Markdown")
    e.add_argument("--plot", help="write the CED curves as PNG")
    e.set_defaults(func=_eval)

    s = sub.add_parser("ship", help="turn a finished training run into a checkpoint with a generated model card",
                       description="Copy RUN/model.pt (the best stage on the held-out faces) with its box convention "
                                   "and data licence stamped in, and write its model card from the run's records "
                                   "(config, per-stage validation, wall time).")
    s.add_argument("run", nargs="+", help="a finished `glsr train` run folder; several runs that differ only in "
                                          "their seed ship the average of their weights (glsr.train.soup)")
    s.add_argument("--name", required=True, help="short model name (e.g. small)")
    s.add_argument("-o", "--out", required=True, help="output folder")
    s.add_argument("--file", help="checkpoint file name (default glsr-NAME-SCHEME.pt)")
    s.add_argument("--crop", type=int, metavar="PX", help="ship at an input crop of PX px at the same pixel scale and "
                   "centre (a smaller context; weights untouched). Check first that the network's windows stay "
                   "inside: python -m benchmarks.studies.trimmed_crop")
    s.add_argument("--align-loc", action="store_true", help="ship at a crop whose pixels hold the loc image's (a "
                   "whole number of crop px per loc px, nearest the trained scale): the graph then reads the loc as "
                   "a slice of the crop instead of resampling it. Check the held-out NME first: glsr eval")
    s.add_argument("--drop-local", action="store_true", help="ship with the local stage inert (its last layers "
                   "zeroed: neither exported nor run), for a local stage that does not help on held-out faces "
                   "(check with glsr eval)")
    s.add_argument("--checkpoint", default="model.pt", help="which checkpoint of the run (default model.pt, the "
                                                            "stage kept; e.g. stage2-global.pt)")
    s.set_defaults(func=_ship)


FLAG_SETTINGS: Dict[str, str] = {
    "variant": "variant", "data": "data", "val_data": "val_data", "train_split": "train_split",
    "val_split": "val_split", "box_source": "box_source", "seed": "seed", "max_steps": "max_steps",
    "batch_size": "batch_size", "samples": "samples", "val_samples": "val_samples",
    "annotation_noise": "annotation_noise", "init": "init", "workers": "workers", "threads": "threads",
    "save_every": "save_every", "val_limit": "val_limit", "device": "device", "log_every": "log_every",
    "optimizer": "optimizer",
    "samples_per_image": "augment.samples_per_image", "flip_probability": "augment.flip_probability",
    "max_rotation": "augment.max_rotation_deg", "color_jitter": "augment.color_jitter",
    "blur_probability": "augment.blur_probability", "grayscale_probability": "augment.grayscale_probability",
    "occlusion_probability": "augment.occlusion_probability",
    "loss": "loss.kind", "error_scale": "loss.error_scale", "stn_off_threshold": "loss.stn_off_threshold",
    "stn_off_epoch": "loss.stn_off_epoch",
    "grow_passes": "grow.passes", "grow_epochs": "grow.epochs", "grow_lr": "grow.lr",
    "input_size": "model.input_size", "loc_size": "model.loc_size", "face_size": "model.face_size",
    "part_size": "model.part_size", "context": "model.context", "box_scale": "model.box_scale",
    "theta_mode": "model.theta_mode",
}
"""Each ``glsr train`` flag that sets one config field: flag destination -> the field's dotted path
(:func:`glsr.train.config.apply_settings`); the defaults live in the config dataclasses only."""
SWITCH_SETTINGS: Dict[str, str] = {"skip_bad": "skip_bad=true", "freeze_batchnorm": "freeze_batchnorm=true",
                                   "grow_normalize": "grow.normalize_new=true", "no_progress": "progress=false",
                                   "no_tensorboard": "tensorboard=false"}
"""On/off flags: destination -> the setting they make."""


def flag_settings(args: argparse.Namespace) -> List[str]:
    """The flags given, as ``KEY=VALUE`` settings in the order :func:`config_from_args` applies them."""
    import json

    from glsr.train.config import STAGE_NAMES

    out = [f"{key}={json.dumps(getattr(args, dest))}" for dest, key in FLAG_SETTINGS.items()
           if getattr(args, dest, None) is not None]
    out += [setting for dest, setting in SWITCH_SETTINGS.items() if getattr(args, dest, False)]
    if args.box_jitter is not None:
        out += [f"augment.fallback_center_std={args.box_jitter[0]}",
                f"augment.fallback_log_scale_std={args.box_jitter[1]}"]
    for i, name in enumerate(STAGE_NAMES):  # --epochs / --stage-epochs, then --lr / --lr-last, --stage-lr last
        epochs = args.stage_epochs[i] if args.stage_epochs else args.epochs
        if epochs is not None:
            out.append(f"stages.{name}.epochs={int(epochs)}")
        lr = args.stage_lr[i] if args.stage_lr else args.lr_last if name == "finetune" else args.lr
        if lr is not None:
            out.append(f"stages.{name}.lr={lr}")
    return out


def config_from_args(args: argparse.Namespace, base: Optional[TrainConfig] = None) -> TrainConfig:
    """TrainConfig from the dataclass defaults, ``--config``, the flags given (:data:`FLAG_SETTINGS`) and
    ``--set``, in that order. ``base``: the TrainConfig to start from instead of the defaults and ``--config`` (a
    tool that read the ``--config`` file itself)."""
    from glsr.train.config import apply_settings

    cfg = base if base is not None else TrainConfig.from_json_file(args.config) if args.config else TrainConfig()
    return apply_settings(cfg, flag_settings(args) + list(getattr(args, "settings", None) or ()))


RECIPE_OPTIONS = {"recipe", "data", "out", "settings", "resume", "jobs", "func", "command", "verbose"}
"""What ``glsr train --recipe`` combines with: the data, the output folder, ``--set`` for every step."""


def _recipe(args: argparse.Namespace) -> int:
    from glsr.train.recipe import load_recipe, run_recipe

    given = sorted(k for k, v in vars(args).items() if k not in RECIPE_OPTIONS and v not in (None, False, []))
    if given:
        raise ValueError(f"--recipe makes a model as its recipe says; change a setting of every step with --set "
                         f"KEY=VALUE instead of --{given[0].replace('_', '-')}")
    if not args.data:
        raise ValueError("--recipe needs --data with the faces to train on, e.g. --data 300w:../shared/data/300w")
    recipe = load_recipe(args.recipe)
    if args.jobs is not None and args.jobs < 1:
        raise ValueError(f"--jobs {args.jobs}: give 1 or more seed runs at once")
    path = run_recipe(recipe, args.data, args.out, args.settings, jobs=args.jobs or 1)
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from glsr.train.trainer import train

    if args.recipe:
        return _recipe(args)
    if args.jobs is not None:
        raise ValueError("--jobs runs seeds of a --recipe at once; one run takes --threads (or torchrun for "
                         "several processes)")
    final = train(config_from_args(args), args.out, resume=args.resume)
    print(f"wrote {final}")
    return 0


def _ship(args: argparse.Namespace) -> int:
    from glsr.train.ship import ship

    path = ship(args.run, args.name, args.out, args.file, checkpoint=args.checkpoint, crop=args.crop,
                align_loc=args.align_loc, drop_local=args.drop_local)
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from glsr.train.evaluate import format_markdown, run_eval

    report = run_eval(args.weights, args.data, json_path=args.json, md_path=args.md, plot_path=args.plot,
                      norm=args.norm, alpha=args.alpha, boxes=args.boxes, perturb=args.perturb, split=args.split,
                      samples=args.samples, data_seed=args.data_seed, limit=args.limit, seed=args.seed,
                      threads=args.threads, baseline=args.baseline, box_source=args.box_source,
                      detector=args.detector, refine=args.refine, skip_bad=args.skip_bad)
    print(format_markdown(report), end="")
    return 0
