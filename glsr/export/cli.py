"""``glsr export`` (one entry for every format) and ``glsr parity`` (artifacts vs the PyTorch reference).

Exit codes: 0 all good, 1 a parity tolerance was breached (or an artifact could not be run), 2 bad options or a
failed conversion (printed as one line by :func:`glsr.cli.main`), 3 (``glsr parity``) some artifact could not run
here, so nothing was verified for it, and ``--allow-unverified`` was not given.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from glsr.shipped import SHIPPED, resolve_weights

MACOS_PARITY_COMMAND = "glsr parity --weights W.pt OUT_DIR --json OUT_DIR/parity-macos.json"


def register(sub: argparse._SubParsersAction) -> None:
    from glsr.formats import FAMILIES, PRECISIONS, SAMPLER_NAMES

    p = sub.add_parser("export", help="export to ONNX / MNN / Core ML with metadata, then check parity vs PyTorch",
                       description="Export the whole G&LSR_w chain (crop in, landmarks in crop pixels out). Every "
                                   "artifact carries its pre-processing metadata; parity against PyTorch runs after "
                                   "the export and a JSON report is written beside the artifacts. Core ML artifacts "
                                   f"execute only on macOS; check them there with: {MACOS_PARITY_COMMAND}")
    src = p.add_mutually_exclusive_group(required=False)
    src.add_argument("--weights", help=f"glsr checkpoint (.pt) or a shipped model's name ({' | '.join(SHIPPED)})")
    src.add_argument("--variant", help="export a freshly initialized variant (small, medium, large, b1, b2, gsr)")
    p.add_argument("--scheme", default="68", help="landmark scheme for --variant (68, 98, 19); default 68")
    p.add_argument("--format", default="onnx", type=format_list(FAMILIES), metavar="FORMAT[,FORMAT...]",
                   help="onnx | mnn | coreml (= mlpackage + mlmodel) | mlpackage | mlmodel | all, or a comma list "
                        "(onnx,mnn); default onnx")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument("--calib", help="int8 calibration: folder of face photos (default: procedural faces)")
    p.add_argument("--calib-count", type=int, default=32, help="calibration faces (default 32)")
    p.add_argument("--calib-allow-fewer", action="store_true",
                   help="calibrate on the readable --calib images even when fewer than --calib-count remain "
                        "(default: refuse)")
    p.add_argument("--sampler", choices=SAMPLER_NAMES, default=None,
                   help="in-graph resampler (default per format: gridsample; the .mlmodel needs gather)")
    p.add_argument("--batch", default="1", help="static batch size N or 'dynamic' (default 1)")
    p.add_argument("--image-input", action="store_true",
                   help="Core ML: image input with the normalization baked in (instead of a float tensor)")
    p.add_argument("--host-warp", action="store_true",
                   help="ONNX / MNN: separate graphs (loc -> theta_g, face -> shape_g + theta_l, parts -> shape) for the "
                        "runtime's host-warp mode, where the host warps the loc image, the face and the part patches "
                        "straight from the photo with OpenCV (faster on a CPU host; the single graph stays the "
                        "default for mobile)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 16; default 17)")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxsim")
    p.add_argument("--no-parity", action="store_true", help="skip the parity check (not recommended)")
    p.add_argument("--threads", type=int, default=None, help="threads for the parity runs")
    p.add_argument("--name", help="artifact file stem (default: the checkpoint's stem or VARIANT-SCHEME)")
    p.add_argument("-o", "--out", default=".", help="output folder (default: current folder)")
    p.add_argument("--list", action="store_true", help="print the format table and the parity tolerances, exit")
    p.set_defaults(func=_export)

    q = sub.add_parser("parity", help="check exported artifacts against the PyTorch reference (non-zero exit on "
                                      "drift)",
                       description="Run artifacts (files, .mlpackage folders, or folders of artifacts) on a fixed "
                                   "input set and compare with the checkpoint in PyTorch, against the tolerance "
                                   "table of glsr.export.parity. Core ML artifacts are checked on macOS only "
                                   f"(elsewhere they are reported as skipped). On a Mac: {MACOS_PARITY_COMMAND}")
    q.add_argument("--weights", required=True,
                   help="the glsr checkpoint (.pt) the artifacts were exported from, or a shipped model's name")
    q.add_argument("artifacts", nargs="+", help="artifact files / folders")
    q.add_argument("--json", help="write the JSON report here (atomically)")
    q.add_argument("--threads", type=int, default=None)
    q.add_argument("--precision", default="fp32", metavar="PRECISION[,PRECISION...]",
                   help="the precision(s) the artifacts were exported at, which set the tolerance (default fp32, the "
                        "checkpoint's own; an artifact declaring another precision fails): fp32 | fp16 | int8 or a "
                        "comma list for a folder of several")
    q.add_argument("--allow-unverified", action="store_true",
                   help="exit 0 even when some artifact cannot run here (Core ML off macOS): they stay 'skipped' "
                        "in the report (default: exit 3, nothing was verified for them)")
    q.add_argument("--procedural", type=int, default=8, help="procedural faces in the input set (default 8)")
    q.add_argument("--lfw", type=int, default=8, help="LFW photos from ../shared in the input set (default 8)")
    q.add_argument("--no-shared", action="store_true", help="do not use ../shared (WFLW samples, LFW photos)")
    q.set_defaults(func=_parity)


def format_list(families):
    """argparse type of ``--format``: one family or a comma list of them (``onnx,mnn``)."""
    def parse(text: str) -> list:
        names = [t.strip().lower() for t in text.split(",") if t.strip()]
        unknown = [n for n in names if n not in families]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"unknown format {', '.join(unknown) or repr(text)}; choose from "
                                             f"{', '.join(families)} (or a comma list such as onnx,mnn)")
        return names

    parse.__name__ = "format list"
    return parse


def _export(args: argparse.Namespace) -> int:
    if args.list:
        from glsr.formats import format_table
        from glsr.export.parity import tolerance_table

        print(format_table())
        print()
        print(tolerance_table())
        return 0
    if not args.weights and not args.variant:
        raise ValueError("give --weights W.pt or --variant NAME")
    from glsr.export import export_model

    weights = str(resolve_weights(args.weights)) if args.weights else None
    result = export_model(weights, variant=args.variant, scheme=args.scheme, formats=args.format,
                          precision=args.precision, calib=args.calib, sampler=args.sampler, batch=args.batch,
                          out_dir=args.out, image_input=args.image_input, opset=args.opset,
                          simplify=not args.no_simplify, parity=not args.no_parity, threads=args.threads,
                          name=args.name, calib_count=args.calib_count, calib_allow_fewer=args.calib_allow_fewer,
                          host_warp=args.host_warp)
    for line in result.summary_lines():
        print(line)
    if result.checkpoint is not None:
        print(f"wrote {result.checkpoint} (the variant's initial weights, for `glsr parity --weights` later)")
    if result.report is None:
        return 0
    print(result.report.table())
    for path in result.report_paths:
        print(f"parity report: {path}")
    if any(r.status == "skipped" for r in result.report.results):
        print(f"Core ML runs only on macOS: its parity was not checked here; on a Mac run {MACOS_PARITY_COMMAND}")
    if not result.passed:
        kept = ", ".join(str(p) for p in result.failed)
        print(f"glsr export: parity tolerance breached (see the report); the failed artifact is kept only as {kept}, "
              "not usable as a model" if kept else "glsr export: parity tolerance breached (see the report)",
              file=sys.stderr)
        return 1
    return 0


def _parity(args: argparse.Namespace) -> int:
    from glsr.export.parity import SHARED, check_artifacts, default_inputs, parse_precisions
    from glsr.models import load_checkpoint

    precisions = parse_precisions(args.precision)  # before any work
    model = load_checkpoint(resolve_weights(args.weights))
    inputs = default_inputs(model.scheme.name, args.procedural, args.lfw, None if args.no_shared else SHARED)
    report = check_artifacts(model, args.artifacts, inputs, threads=args.threads, reference_name=args.weights,
                             precisions=precisions, allow_unverified=args.allow_unverified)
    print(report.table())
    for note in inputs.notes:
        print(f"note: {note}")
    if args.json:
        print(f"report: {report.write(Path(args.json))}")
    if report.verdict == "failed":
        print(f"glsr parity: {report.verdict_line()}: drift beyond tolerance, or an artifact could not be run or "
              "does not belong to --weights (see the table)", file=sys.stderr)
    elif report.exit_code:
        print(f"glsr parity: {report.verdict_line()}", file=sys.stderr)
    else:
        print(report.verdict_line())
    return report.exit_code
