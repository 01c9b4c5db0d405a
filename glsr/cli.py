"""``glsr`` command line: one sub-command per job, each registered by the component that owns it.

Sub-command modules expose ``register(subparsers)``; heavy imports happen inside the handlers so that
``glsr --help`` stays fast.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
from typing import List, Optional, Sequence

VERBOSE_FLAGS = ("-v", "--verbose")
MAX_PIXELS_FLAG, TRUST_FLAG = "--max-image-pixels", "--trust-metadata"
"""Global options accepted anywhere on the line (like ``-v``): they reach the library through the environment
(``GLSR_MAX_IMAGE_PIXELS``, ``GLSR_TRUST_METADATA``), so every command and reader honours them alike."""
OS_ERROR_FIXES = {
    errno.ENOSPC: "free some disk space (or choose another location) and run it again",
    errno.EDQUOT: "free some space in your quota (or choose another location) and run it again",
    errno.EFBIG: "the file exceeds the size limit of this system or shell (ulimit -f); raise it or choose another "
                 "location",
    errno.EROFS: "choose a writable location",
    errno.EACCES: "no permission to write there: choose a writable location (or fix its permissions)",
    errno.EPERM: "no permission to write there: choose a writable location (or fix its permissions)",
    errno.EISDIR: "a folder is in the way where a file belongs: give a file path",
    errno.ENOTDIR: "a file is in the way where a folder belongs: give a folder path",
    errno.EEXIST: "a file is in the way where a folder belongs: give a folder path",
}
"""What to do about an ``OSError``, by ``errno``: printed after the file it names (one line)."""


def max_threads() -> int:
    """The most threads any ``--threads`` may ask for: 4 per core of this machine, at least 16 (a million threads
    crashes the runtimes' pools or hangs the machine)."""
    return max(16, 4 * (os.cpu_count() or 1))


POSITIVE, NON_NEGATIVE, FRACTION = (1, None), (0, None), (0.0, 1.0)
OPTION_BOUNDS = {
    "threads": (1, max_threads), "android_threads": (1, max_threads), "workers": (0, 64),
    "batch": (1, 256), "batch_size": (1, 4096), "samples": POSITIVE, "val_samples": NON_NEGATIVE,
    "samples_per_image": POSITIVE, "calib_count": (1, 100000), "timing_faces": POSITIVE, "android_loop": POSITIVE,
    "epochs": NON_NEGATIVE, "stage_epochs": NON_NEGATIVE, "max_steps": POSITIVE, "log_every": POSITIVE,
    "save_every": POSITIVE, "val_limit": POSITIVE, "limit": POSITIVE, "procedural": NON_NEGATIVE,
    "lfw": NON_NEGATIVE, "retries": (0, 100), "indent": (0, 16), "seed": NON_NEGATIVE, "data_seed": NON_NEGATIVE,
    "grow_passes": NON_NEGATIVE, "grow_epochs": NON_NEGATIVE, "stn_off_epoch": NON_NEGATIVE,
    "input_size": (16, 4096), "loc_size": (16, 4096), "face_size": (16, 4096), "part_size": (4, 4096),
    "opset": (1, 10000), "android_precision": (0, 2),
    "time": (1e-3, 86400.0), "wait_idle": (0.0, 86400.0), "lr": (1e-12, None), "lr_last": (1e-12, None),
    "stage_lr": (0.0, None), "grow_lr": (1e-12, None), "alpha": (1e-6, 1.0), "context": (1e-3, 100.0),
    "box_scale": (1e-3, 100.0), "error_scale": (1e-12, None), "stn_off_threshold": NON_NEGATIVE,
    "annotation_noise": NON_NEGATIVE, "max_rotation": (0.0, 180.0), "box_jitter": NON_NEGATIVE,
    "color_jitter": NON_NEGATIVE, "flip_probability": FRACTION, "blur_probability": FRACTION,
    "grayscale_probability": FRACTION, "occlusion_probability": FRACTION,
}
"""Numeric option (``dest``) -> ``(low, high)`` inclusive, ``None`` = open, a callable = computed here. Checked
for every command by :func:`option_problem` before anything runs; every number must also be finite."""


def option_problem(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Optional[str]:
    """The first numeric option of the parsed command out of range or not finite, as a message naming the option
    and the range (``None`` when all are fine)."""
    import math

    for action in _command_actions(parser, args):
        if action.type not in (int, float) or not action.option_strings:
            continue
        value = getattr(args, action.dest, None)
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        flat = [v for x in values for v in (x if isinstance(x, list) else [x])]
        lo, hi = OPTION_BOUNDS.get(action.dest, (None, None))
        lo, hi = (b() if callable(b) else b for b in (lo, hi))
        for v in flat:
            bad = not math.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi)
            if bad and v == action.default:
                continue
            if bad:
                span = (f"{lo:g}..{hi:g}" if lo is not None and hi is not None else f">= {lo:g}" if lo is not None
                        else f"<= {hi:g}" if hi is not None else "a finite number")
                why = " (4 per core of this machine, at least 16)" if hi is not None and \
                    OPTION_BOUNDS.get(action.dest, (0, 0))[1] is max_threads else ""
                return f"argument {action.option_strings[-1]}: {v:g} is out of range; give {span}{why}"
    return None


def _subparser(parser: argparse.ArgumentParser, command: Optional[str]) -> Optional[argparse.ArgumentParser]:
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    return sub.choices.get(command) if sub is not None and command else None


def _command_actions(parser: argparse.ArgumentParser, args: argparse.Namespace) -> List[argparse.Action]:
    own = _subparser(parser, getattr(args, "command", None))
    return list(parser._actions) + (list(own._actions) if own is not None else [])


# module paths whose ``register`` adds sub-commands, in help order
COMMAND_MODULES = (
    "glsr.models.cli",       # models, import-dpr
    "glsr.runtime.cli",      # predict
    "glsr.train.cli",        # train, eval
    "glsr.export.cli",       # export, parity
    "glsr.bench.cli",        # bench
    "glsr.pipeline",         # pipeline
)


def build_parser() -> argparse.ArgumentParser:
    import glsr

    parser = argparse.ArgumentParser(prog="glsr", description="G&LSR_w face alignment: train, export, run, "
                                     "benchmark and verify.")
    parser.add_argument("--version", action="version", version=f"glsr {glsr.__version__}")
    parser.add_argument(*VERBOSE_FLAGS, dest="verbose", action="store_true",
                        help="show the chatter of coremltools, MNN and libjpeg (hidden by default); may also follow "
                             "the command")
    parser.add_argument(MAX_PIXELS_FLAG, dest="max_image_pixels", type=int, metavar="N",
                        help="largest image (width x height) glsr decodes; default 134217728 (128 Mi pixels); an image "
                             "whose header claims more is refused before decoding; may also follow the command")
    parser.add_argument(TRUST_FLAG, dest="trust_metadata", action="store_true",
                        help="use an artifact whose glsr metadata fails its digest or disagrees with its graph "
                             "(refused by default), with a warning; may also follow the command")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    return parser


def set_verbosity(verbose: bool) -> None:
    """Third-party chatter (coremltools' import warnings, MNN's C++ notices) only with ``-v``."""
    if verbose:
        os.environ["GLSR_VERBOSE"] = "1"
    else:
        os.environ.pop("GLSR_VERBOSE", None)
        logging.getLogger("coremltools").setLevel(logging.ERROR)


def _extra_values_error(parser: argparse.ArgumentParser, argv: Sequence[str], extras: Sequence[str]) -> Optional[str]:
    """A message naming the option when ``extras`` are surplus values of a fixed-count option (``--box 1 2 3 4
    5``): argparse itself would only say ``unrecognized arguments: 5``."""
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    parsers = [parser] + ([sub.choices[argv[i]] for i in range(len(argv)) if sub and argv[i] in sub.choices][:1])
    for prs in parsers:
        for action in prs._actions:
            if not action.option_strings or not isinstance(action.nargs, int):
                continue
            for i, tok in enumerate(argv):
                j = i + 1 + action.nargs
                if tok in action.option_strings and j < len(argv) and argv[j] in extras:
                    try:
                        float(argv[j])
                    except ValueError:
                        continue
                    names = " ".join(action.metavar) if isinstance(action.metavar, tuple) else str(action.nargs)
                    return (f"argument {tok}: takes exactly {action.nargs} numbers ({names}), got more: "
                            f"{' '.join(argv[i + 1:j + 1])}")
    return None


def _global_options(argv: List[str]) -> tuple:
    """``(argv without the global options, problem or None)``; sets ``GLSR_MAX_IMAGE_PIXELS`` /
    ``GLSR_TRUST_METADATA`` for this process from ``--max-image-pixels N`` / ``--trust-metadata``."""
    out: List[str] = []
    i = 0
    os.environ.pop("GLSR_TRUST_METADATA", None)
    while i < len(argv):
        a = argv[i]
        if a == TRUST_FLAG:
            os.environ["GLSR_TRUST_METADATA"] = "1"
        elif a == MAX_PIXELS_FLAG or a.startswith(MAX_PIXELS_FLAG + "="):
            value = a.split("=", 1)[1] if "=" in a else (argv[i + 1] if i + 1 < len(argv) else "")
            i += 0 if "=" in a else 1
            try:
                n = int(value)
            except ValueError:
                n = 0
            if n < 1:
                return argv, f"argument {MAX_PIXELS_FLAG}: {value!r} is not a positive whole number of pixels"
            os.environ["GLSR_MAX_IMAGE_PIXELS"] = str(n)
        else:
            out.append(a)
        i += 1
    return out, None


def _os_error_line(e: OSError) -> str:
    where = e.filename or ""
    what = e.strerror or str(e)
    fix = OS_ERROR_FIXES.get(e.errno or 0, "check the path and run it again")
    return f"cannot use {where}: {what}; {fix}" if where else f"{what}; {fix}"


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = any(a in VERBOSE_FLAGS for a in argv)
    argv = [a for a in argv if a not in VERBOSE_FLAGS]
    argv, global_problem = _global_options(argv)
    if global_problem:
        parser.error(global_problem)
    args, extras = parser.parse_known_args(argv)
    if extras:
        parser.error(_extra_values_error(parser, argv, extras) or f"unrecognized arguments: {' '.join(extras)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    problem = option_problem(parser, args)
    if problem:
        (_subparser(parser, args.command) or parser).error(problem)
    set_verbosity(verbose)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C: one line; outputs are atomic, so nothing half-written is left
        print(f"\nglsr {args.command}: interrupted; nothing half-written was left"
              + (" (`glsr train --resume` continues from the last saved state)" if args.command == "train" else ""),
              file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError) as e:
        print(f"glsr {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of stdout went away (`glsr predict DIR | head`): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout
        return 141
    except OSError as e:  # full disk, read-only file system, no permission: one line naming the file and the fix
        hint = " (`glsr train --resume` continues the run from its last saved state)" if args.command == "train" \
            else ""
        print(f"glsr {args.command}: error: {_os_error_line(e)}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
