"""Fault cases of ``glsr export``: two exports into one folder, ``kill -9`` mid-export, a failing parity check, a
calibration folder with broken images, library chatter, format lists, reports and the ``--variant`` checkpoint."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Callable, Tuple

from benchmarks.studies.faults.harness import TIMEOUT, Ctx, Run, last_line, refused, short, traceback_of


def two_exports(ctx: Ctx) -> Tuple[str, str]:
    out = ctx.ws / "shared-export"
    p1 = ctx.popen(["export", "--weights", ctx.ws / "m.pt", "-o", out, "--threads", "1"])
    deadline = time.time() + 120
    while time.time() < deadline and p1.poll() is None and not out.is_dir():
        time.sleep(0.05)
    p2 = ctx.popen(["export", "--weights", ctx.ws / "b" / "m.pt", "-o", out, "--threads", "1"])
    outputs = [p.communicate(timeout=TIMEOUT) for p in (p1, p2)]
    runs = [Run(p.returncode, o, e, 0) for p, (o, e) in zip((p1, p2), outputs)]
    for r in runs:
        if traceback_of(r):
            return "traceback", traceback_of(r)
    codes = sorted(r.rc for r in runs)
    if codes == [0, 2]:
        return refused(next(r for r in runs if r.rc == 2), ["in use"])
    if 1 in codes:
        return "partial", f"exit codes {[r.rc for r in runs]}: a false parity FAIL (the other export replaced " \
                          "the files)"
    return "partial", f"exit codes {[r.rc for r in runs]}: both wrote m_fp32.onnx into one folder"


def kill_during_export(ctx: Ctx) -> Tuple[str, str]:
    out = ctx.ws / "killed-export"
    p = ctx.popen(["export", "--weights", ctx.ws / "m.pt", "-o", out, "--threads", "1"], start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if out.is_dir() and any(x.suffix == ".onnx" for x in out.rglob("*.onnx")):
            break
        time.sleep(0.02)
    if p.poll() is not None:
        return "not run", "the export finished before it could be killed"
    os.killpg(p.pid, signal.SIGKILL)
    p.communicate()
    visible = sorted(x.name for x in out.iterdir() if not x.name.startswith("."))
    unverified = [n for n in visible if n.endswith(".onnx") and f"{n}.parity.json" not in visible
                  and not (out / "m_fp32.parity.json").is_file()]
    r = ctx.run(["export", "--weights", ctx.ws / "m.pt", "-o", out, "--threads", "1"])
    left = sorted(x.name for x in out.iterdir() if x.name.startswith(".glsr-export") and x.is_dir())
    tb = traceback_of(r)
    if tb:
        return "traceback", f"re-export: {tb}"
    if unverified:
        return "partial", f"after kill -9: {unverified} in -o without a parity report; hidden scratch after a " \
                          f"re-export: {left or 'none'}"
    if left:
        return "partial", f"hidden scratch folders never cleaned: {left}"
    return "clean", f"after kill -9 nothing unverified in -o ({visible or 'empty'}); the re-export cleaned the scratch"



PARITY_FAIL = """
import sys
import glsr.export.parity as P
P.TOLERANCES = {k: P.Tolerance(max_px=-1.0) for k in P.TOLERANCES}
from glsr.cli import main
sys.exit(main(["export", "--weights", "m.pt", "-o", "failing", "--threads", "1"]))
"""


def parity_fail(ctx: Ctx) -> Tuple[str, str]:
    r = ctx.run([PARITY_FAIL], python=True)
    tb = traceback_of(r)
    if tb:
        return "traceback", tb
    names = sorted(x.name for x in (ctx.ws / "failing").iterdir() if not x.name.startswith("."))
    if "m_fp32.onnx" in names:
        return "partial", f"exit {r.rc}; a finished-looking m_fp32.onnx in -o ({names})"
    if r.rc == 1:
        return "clean", f"exit 1; -o holds {names}"
    return "unclear", f"exit {r.rc}: {names}"


def calib(ctx: Ctx) -> Tuple[str, str]:
    r = ctx.run(["export", "--weights", ctx.ws / "m.pt", "--precision", "int8", "--calib", ctx.ws / "calib",
                 "--calib-count", "4", "-o", ctx.ws / "calib-out", "--no-parity"])
    if r.rc == 0:
        return "silent", "exit 0: calibrated on what it could decode, no word about the truncated and junk files"
    return refused(r, ["z_truncated.jpg", "z_junk.jpg", "--calib"])


def chatter(fmt: str) -> Callable[[Ctx], Tuple[str, str]]:
    def fn(ctx: Ctx) -> Tuple[str, str]:
        r = ctx.run(["export", "--weights", ctx.ws / "m.pt", "--format", fmt, "-o", ctx.ws / f"chatter-{fmt}",
                     "--threads", "1"])
        tb = traceback_of(r)
        if tb:
            return "traceback", tb
        lines = [x for x in r.err.splitlines() if x.strip()]
        macos = sum("only on macOS" in x for x in (r.out + r.err).splitlines())
        note = f"exit {r.rc}, {len(lines)} stderr line(s)" + (f" (first: {short(lines[0], 70)})" if lines else "")
        if fmt == "coreml":
            note += f"; 'runs only on macOS' said {macos}x"
            return ("clean" if r.rc == 0 and not lines and macos == 1 else "silent"), note
        return ("clean" if r.rc == 0 and not lines else "silent"), note
    return fn


def format_list(ctx: Ctx) -> Tuple[str, str]:
    out = ctx.ws / "two-formats"
    r = ctx.run(["export", "--weights", ctx.ws / "m.pt", "--format", "onnx,mnn", "-o", out, "--threads", "1"])
    if r.rc != 0:
        tb = traceback_of(r)
        return ("traceback", tb) if tb else ("unclear", f"valid input refused: exit {r.rc}: {short(last_line(r.err))}")
    return "clean", f"exit 0: {sorted(x.name for x in out.iterdir())}"


def one_report_per_format(ctx: Ctx) -> Tuple[str, str]:
    out = ctx.ws / "reports"
    for fmt in ("onnx", "mnn"):
        r = ctx.run(["export", "--weights", ctx.ws / "m.pt", "--format", fmt, "-o", out, "--threads", "1"])
        if r.rc != 0:
            return refused(r, [])
    reports = sorted(x.name for x in out.glob("*.json"))
    artifacts = sorted({Path(a).name for n in reports for a in
                        [x["artifact"] for x in json.loads((out / n).read_text())["results"]]})
    if len(artifacts) == 2:
        return "clean", f"reports {reports} cover {artifacts}"
    return "partial", f"reports {reports} cover only {artifacts}: the second export replaced the first's report"


def variant_checkpoint(ctx: Ctx) -> Tuple[str, str]:
    out = ctx.ws / "variant"
    r = ctx.run(["export", "--variant", "b1", "-o", out, "--threads", "1"])
    if r.rc != 0:
        return refused(r, [])
    pts = sorted(x.name for x in out.glob("*.pt"))
    return ("clean", f"wrote {pts} for `glsr parity` later") if pts else \
        ("silent", "exit 0, no checkpoint: the artifacts cannot be re-checked with `glsr parity`")

