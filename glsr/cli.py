"""``glsr`` command line: one sub-command per job, each registered by the component that owns it.

Sub-command modules expose ``register(subparsers)``; heavy imports happen inside the handlers so that
``glsr --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

# module paths whose ``register`` adds sub-commands, in help order
COMMAND_MODULES = (
    "glsr.models.cli",       # models, import-dpr
    "glsr.runtime.cli",      # predict
    "glsr.train.cli",        # train, eval
    "glsr.export.cli",       # export, parity
    "benchmarks.cli",        # bench
    "glsr.pipeline",         # pipeline
)


def build_parser() -> argparse.ArgumentParser:
    import glsr

    parser = argparse.ArgumentParser(prog="glsr", description="G&LSR_w face alignment: train, export, run, "
                                     "benchmark and verify.")
    parser.add_argument("--version", action="version", version=f"glsr {glsr.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMAND_MODULES:
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as e:
        print(f"glsr {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
