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
    args, extras = parser.parse_known_args(argv)
    if extras:
        parser.error(_extra_values_error(parser, argv, extras) or f"unrecognized arguments: {' '.join(extras)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    set_verbosity(verbose)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as e:
        print(f"glsr {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # full disk, read-only file system, no permission: one line naming the file and the fix
        hint = " (`glsr train --resume` continues the run from its last saved state)" if args.command == "train" \
            else ""
        print(f"glsr {args.command}: error: {_os_error_line(e)}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
