"""``glsr models`` (variant table) and ``glsr import-dpr`` (the authors' release -> glsr checkpoint)."""
from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list every variant: parameters, FLOPs, stages, beside the paper's Table 7; "
                                    "and the stages each shipped model runs")
    p.add_argument("--scheme", default="68", help="landmark scheme (68, 98, 19); default 68 as the paper's 300-W")
    p.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    p.add_argument("--shipped", action="store_true",
                   help="list the trained models glsr ships (the names every --weights, --init and "
                        "Predictor.from_file take) instead of the variants")
    p.set_defaults(func=_models)

    p = sub.add_parser("import-dpr", help="convert the authors' released WFLW checkpoints into a glsr checkpoint")
    p.add_argument("folder", help="folder with 98_points_global_reinit.pth.tar, 98_points_global_regress.pth.tar, "
                                  "mean_98_face.npy (and 98_points_local_reinit.pth.tar for --variant small)")
    p.add_argument("-o", "--out", required=True, help="output .pt checkpoint")
    p.add_argument("--variant", default="gsr", choices=("gsr", "small"))
    p.add_argument("--context", type=float, default=None,
                   help="input crop = box x context (default 2.0; the release's STN zooms out)")
    p.add_argument("--input-size", type=int, default=None, help="input crop size in px (default 512)")
    p.add_argument("--scheme", default="98", choices=("98", "68"),
                   help="98 (the release) or 68: the standard WFLW-98 -> 68 subset of the global stage, a start "
                        "for 300-W training (`glsr train --init`)")
    p.set_defaults(func=_import_dpr)

    p = sub.add_parser("import-mobilenetv2", help="ImageNet MobileNetV2 1.0 (TFLite) -> a glsr start for "
                                                  "`glsr train --init` (medium's global regressor trunk)")
    p.add_argument("file", help="the TFLite file, or the folder holding it (default file in a folder: "
                                "tf2_mobilenet_v2_1.0_224_ptq.tflite, per-channel int8)")
    p.add_argument("-o", "--out", required=True, help="output .pt checkpoint")
    p.add_argument("--base", help="a glsr checkpoint whose geometry, scheme, mean shape and global reinit net the "
                                  "start takes (e.g. the authors' WFLW model from `glsr import-dpr --scheme 68`)")
    p.add_argument("--variant", default="medium", choices=("medium",),
                   help="the variant whose global regressor takes the trunk (a MobileNetV2 1.0: medium)")
    p.set_defaults(func=_import_mobilenetv2)


def _import_mobilenetv2(args: argparse.Namespace) -> int:
    from pathlib import Path

    from glsr.models.checkpoint import save_checkpoint
    from glsr.models.mobilenetv2_import import DEFAULT_FILE, import_mobilenetv2, imagenet_start, imported_extra

    src = Path(args.file)
    src = src / DEFAULT_FILE if src.is_dir() else src
    imported = import_mobilenetv2(src)
    model = imagenet_start(imported, args.variant, args.base)
    extra = imported_extra(imported, args.base)
    if args.base:
        from glsr.models.checkpoint import read_checkpoint

        base_extra = read_checkpoint(args.base).get("extra") or {}
        if base_extra.get("box_convention"):
            extra["box_convention"] = base_extra["box_convention"]
    save_checkpoint(model, args.out, extra=extra)
    print(f"wrote {args.out}: variant {model.cfg.name} (TensorFlow layers), {len(imported.trunk)} trunk tensors "
          f"from {src.name}" + (f", global reinit, geometry and mean shape from {args.base}" if args.base else ""))
    return 0


def _models(args: argparse.Namespace) -> int:
    if args.shipped:
        return _shipped(args)
    from glsr.models.complexity import format_shipped, format_table, model_rows, shipped_rows

    rows = model_rows(args.scheme)
    shipped = shipped_rows()
    if args.json:
        print(json.dumps({"variants": [r.__dict__ for r in rows], "shipped": [r.__dict__ for r in shipped]},
                         indent=2))
    else:
        print(format_table(rows))
        print(f"\nscheme {args.scheme}; MACs counted by torch.utils.flop_counter on the real graph (FLOPs/2, the "
              "paper's unit); '!' marks a difference above 10 % (explained in benchmarks/results/model-family.md).")
        if shipped:
            print("\n" + format_shipped(shipped))
            print("\nShipped models: the stages `glsr export` writes and the runtime runs; a stage whose last layers "
                  "are exactly zero cannot change the output and is neither exported nor run.")
    return 0


def _shipped(args: argparse.Namespace) -> int:
    from glsr.shipped import DEFAULT_SHIPPED, SHIPPED, list_models, models_dir

    rows = [{"name": n, "file": SHIPPED[n].file, "installed": (models_dir() / SHIPPED[n].file).is_file(),
             "default": n == DEFAULT_SHIPPED, "description": SHIPPED[n].description} for n in list_models()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("| name | file | installed | description |\n| --- | --- | --- | --- |")
    for r in rows:
        name = f"{r['name']} (default)" if r["default"] else r["name"]
        print(f"| {name} | {r['file']} | {'yes' if r['installed'] else 'no'} | {r['description']} |")
    print(f"\nmodel cards: {models_dir()}/<file stem>.md")
    return 0


def _import_dpr(args: argparse.Namespace) -> int:
    from glsr.models.checkpoint import save_checkpoint
    from glsr.models.dpr import DPR_DEFAULT_CONTEXT, DPR_DEFAULT_INPUT, import_dpr

    model = import_dpr(args.folder, args.variant, args.context or DPR_DEFAULT_CONTEXT,
                       args.input_size or DPR_DEFAULT_INPUT, scheme=args.scheme)
    save_checkpoint(model, args.out, extra={"source": "shaoxiaohu/Face_Alignment_DPR (MIT)", "imported_from":
                                            str(args.folder)})
    print(f"wrote {args.out}: variant {model.cfg.name}, scheme {model.scheme.name}, input {model.cfg.input_size} px, "
          f"crop = box x {model.cfg.crop_enlarge:g}")
    return 0
