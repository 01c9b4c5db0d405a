"""The fault corpus of issue #12, run as a user would run it: each case is a real ``glsr`` process (or two) against
a checkout, classified by what the user gets, and written as a before/after table.

    git worktree add ../head HEAD
    python -m benchmarks.studies.fault_corpus --before ../head     # writes benchmarks/results/fault-corpus.md
    git worktree remove ../head

``--before DIR`` is a checkout of the last commit (``git worktree add ../head HEAD``); ``--after DIR`` defaults
to this working tree. Both are run with ``PYTHONPATH=DIR`` in fresh scratch folders; the model files each case
needs are written by the checkout under test, the images and planted files by this script. Classes:

- ``clean``: the expected result, or one error line naming the file / option and the fix (exit 2; 1 for parity);
- ``traceback``: a Python traceback;
- ``silent``: exit 0 with a wrong, unverified or degraded result (or code run from a model file), or no word;
- ``partial``: partial or misleading files left behind;
- ``unclear``: an error line that does not name the file / option or the fix, or valid input refused.

Cases that need a read-only file system mount a read-only tmpfs (root only; otherwise they are reported as not
run). Everything runs with ``nice -n 10`` and one thread per process.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from glsr import atomic  # noqa: E402
from glsr.paths import portable_text  # noqa: E402

from benchmarks.studies.faults.checkpoint_cases import (evil_case, full_disk_training, resume_corrupt,  # noqa: E402
                                                        resume_truncated, train_lr1000, two_trainings,
                                                        zeroed_checkpoint)
from benchmarks.studies.faults.export_cases import (calib, chatter, format_list, kill_during_export,  # noqa: E402
                                                    one_report_per_format, parity_fail, two_exports,
                                                    variant_checkpoint)
from benchmarks.studies.faults.harness import CLASSES, SETUP, TRAIN, Case, Ctx, box, refused, short  # noqa: E402
from benchmarks.studies.faults.inputs import (overwrite_64_bytes, plant_evil, with_exif_orientation,  # noqa: E402
                                              write_bad_dataset, write_calib_folder, write_face_images, write_inputs)
from benchmarks.studies.faults.run_cases import (api_truncated_onnx, eval_terminal, exif_eval,  # noqa: E402
                                                 exif_predict, help_box, huge_image, models_terminal,
                                                 predict_out_txt, ro_case, skip_bad, truncated_jpeg)

__all__ = ["CASES", "main", "overwrite_64_bytes", "plant_evil", "with_exif_orientation", "write_bad_dataset",
           "write_calib_folder", "write_face_images"]  # the planted inputs the tests reuse


def cli(args: Callable[[Ctx], list], words: Sequence[str], code: int = 2) -> Callable[[Ctx], Tuple[str, str]]:
    return lambda ctx: refused(ctx.run(args(ctx)), words, code)


def W(ctx: Ctx, name: str = "m.pt") -> Path:
    return ctx.ws / name


CASES: List[Case] = [
    *[Case("0 code in checkpoints", f"`{k}` on a .pt whose pickle calls os.system", evil_case(k))
      for k in ("predict", "eval", "export", "parity", "train --init", "train --resume", "import-dpr")],
    Case("1 NaN", "`train --lr 1000 --max-steps 5 --batch-size 8`", train_lr1000),
    Case("1 NaN", "`predict` a NaN checkpoint", cli(lambda c: ["predict", c.ws / "face.jpg", "--weights",
                                                             W(c, "nan.pt"), *box(c)], ["nan.pt", "NaN"])),
    Case("1 NaN", "`eval` a NaN checkpoint", cli(lambda c: ["eval", "--weights", W(c, "nan.pt"), "--data",
                                                          "procedural:68", "--samples", "2"], ["nan.pt", "NaN"])),
    Case("1 NaN", "`export` a NaN checkpoint", cli(lambda c: ["export", "--weights", W(c, "nan.pt"), "-o",
                                                            c.ws / "nan-out"], ["nan.pt", "NaN"])),
    Case("1 NaN", "`--resume` after 64 bytes of 0xFF inside `last.pt`", resume_corrupt),
    Case("1 NaN", "`predict` a model.pt with 64 bytes zeroed (finite garbage)", zeroed_checkpoint),
    Case("2 shared folders", "two `train --out X` at once", two_trainings),
    Case("2 shared folders", "two exports, same stem, one `-o`, at once", two_exports),
    Case("3 EXIF", "`eval` on a data set tagged Orientation=6", exif_eval),
    Case("3 EXIF", "`predict` a photo tagged Orientation=6: JSON names the frame", exif_predict),
    Case("4 tracebacks", "`predict` a truncated .onnx", cli(lambda c: ["predict", c.ws / "face.jpg", "--weights",
                                                                     W(c, "truncated.onnx"), *box(c)],
                                                           ["truncated.onnx"])),
    Case("4 tracebacks", "`eval` a truncated .onnx", cli(lambda c: ["eval", "--weights", W(c, "truncated.onnx"),
                                                                  "--data", "procedural:68", "--samples", "2"],
                                                                 ["truncated.onnx"])),
    Case("4 tracebacks", "`Predictor.from_file` a truncated .onnx", api_truncated_onnx),
    Case("4 tracebacks", "`predict` a folder named x.onnx", cli(lambda c: ["predict", c.ws / "face.jpg", "--weights",
                                                                         W(c, "x.onnx"), *box(c)], ["x.onnx"])),
    Case("4 tracebacks", "`eval` a folder named x.onnx", cli(lambda c: ["eval", "--weights", W(c, "x.onnx"), "--data",
                                                                      "procedural:68", "--samples", "2"], ["x.onnx"])),
    Case("4 tracebacks", "`export -o` an existing file", cli(lambda c: ["export", "--weights", W(c), "-o",
                                                                      c.ws / "face.jpg"], ["face.jpg", "folder"])),
    Case("4 tracebacks", "`export -o` on a read-only file system", ro_case("export")),
    Case("4 tracebacks", "`--resume` a truncated `last.pt`", resume_truncated),
    Case("4 tracebacks", "file-size limit (full disk) while training saves", full_disk_training),
    Case("4 tracebacks", "`predict --out ov.txt`", predict_out_txt),
    Case("4 tracebacks", "`predict --out` on a read-only file system", ro_case("predict")),
    Case("5 debris", "`kill -9` during export, then export again", kill_during_export),
    Case("5 debris", "an export failing parity", parity_fail),
    Case("5 debris", "`--calib` folder with a truncated JPEG and a junk file", calib),
    Case("6 smaller", "`predict` a truncated JPEG", truncated_jpeg),
    Case("6 smaller", "`eval` a data set with 3 bad faces", cli(lambda c: ["eval", "--weights", W(c), "--data",
                                                                         f"folder:{c.ws / 'baddata'}"],
                                                               ["f1.txt", "f3.txt", "f5.png", "--skip-bad"])),
    Case("6 smaller", "`eval --skip-bad` on it", skip_bad),
    Case("6 smaller", "`--box` with 5 numbers", cli(lambda c: ["predict", c.ws / "face.jpg", "--weights", W(c), "--box",
                                                             "1", "2", "30", "40", "50"], ["--box"])),
    Case("6 smaller", "`predict` a 10000x10000 photo (detector)", huge_image),
    Case("rough edges", "`glsr models` on a terminal", models_terminal),
    Case("rough edges", "`glsr eval` on a terminal", eval_terminal),
    Case("rough edges", "`export --format mnn`: library chatter", chatter("mnn")),
    Case("rough edges", "`export --format coreml` on Linux: chatter, one macOS note", chatter("coreml")),
    Case("rough edges", "`predict --help` states the box convention", help_box),
    Case("rough edges", "`export --format onnx,mnn`", format_list),
    Case("rough edges", "onnx then mnn exported into one folder: one report each", one_report_per_format),
    Case("rough edges", "`export --variant b1` writes a checkpoint", variant_checkpoint),
    Case("held", "missing image", cli(lambda c: ["predict", c.ws / "nope.jpg", "--weights", W(c), *box(c)],
                                      ["nope.jpg"])),
    Case("held", "undecodable image", cli(lambda c: ["predict", c.ws / "junk.jpg", "--weights", W(c), *box(c)],
                                          ["junk.jpg"])),
    Case("held", "NaN `--box`", cli(lambda c: ["predict", c.ws / "face.jpg", "--weights", W(c), "--box", "nan", "1",
                                               "20", "30"], ["box"])),
    Case("held", "empty `--box`", cli(lambda c: ["predict", c.ws / "face.jpg", "--weights", W(c), "--box", "50", "50",
                                                 "40", "60"], ["box"])),
    Case("held", "`--resume` without a state", cli(lambda c: ["train", "--out", c.ws / "norun", "--resume", *TRAIN],
                                                   ["last.pt"])),
    Case("held", "missing data set folder", cli(lambda c: ["eval", "--weights", W(c), "--data",
                                                           f"folder:{c.ws / 'nodata'}"], ["nodata"])),
]



# ------------------------------------------------------------------------------------------------- driver
def mount_readonly(path: Path) -> Optional[Path]:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return None
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], capture_output=True)
    return path if r.returncode == 0 else None


def run_side(root: Path, only: Sequence[str]) -> List[Tuple[str, str]]:
    ws = Path(tempfile.mkdtemp(prefix="glsr-faults-"))
    rofs = None
    try:
        rofs = mount_readonly(ws / "rofs")
        setup = subprocess.run(["nice", "-n", "10", sys.executable, "-c", SETUP, str(ws)], capture_output=True,
                               text=True, env=dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1"))
        if setup.returncode != 0:
            raise SystemExit(f"setup failed under {root}:\n{setup.stderr[-2000:]}")
        ctx = Ctx(root, ws, rofs)
        write_inputs(ctx)
        results = []
        for case in CASES:
            if only and not any(o.lower() in case.name.lower() for o in only):
                results.append(("not run", "not selected"))
                continue
            t0 = time.perf_counter()
            try:
                res = case.fn(ctx)
            except Exception as e:  # noqa: BLE001 - a case that cannot run is reported, not fatal
                res = ("not run", f"{type(e).__name__}: {short(str(e), 120)}")
            res = (res[0], res[1].replace(str(ws), "$WS"))  # the scratch folder of this run
            results.append(res)
            print(f"[{root.name}] {case.name}: {res[0]} ({time.perf_counter() - t0:.0f} s) {res[1][:120]}",
                  file=sys.stderr, flush=True)
        return results
    finally:
        if rofs is not None:
            subprocess.run(["umount", str(rofs)])
        shutil.rmtree(ws, ignore_errors=True)


def git(root: Path, *args: str) -> str:
    r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    return r.stdout.strip()


def table(before: List[Tuple[str, str]], after: List[Tuple[str, str]], before_root: Path, after_root: Path,
          command: str) -> str:
    def counts(res):
        return ", ".join(f"{c} {sum(r[0] == c for r in res)}" for c in CLASSES if any(r[0] == c for r in res))

    head = git(before_root, "rev-parse", "--short", "HEAD")
    dirty = git(after_root, "status", "--short")
    lines = [
        "# Fault corpus (issue #12): before and after",
        "",
        f"Produced by `{portable_text(command)}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        f"({os.cpu_count()} cores, shared with other jobs, `nice -n 10`): no hand-written results.",
        "",
        f"- **before**: the last commit `{head}` (a `git worktree` of HEAD, run with `PYTHONPATH` set to it);",
        f"- **after**: the working tree at `{portable_text(str(after_root))}`"
        + (" (uncommitted changes)" if dirty else "") + ".",
        "",
        "Each case is a real `glsr` process (two for the concurrent cases) in a fresh scratch folder; the model "
        "files are written by the checkout under test (a perturbed `small` variant at 96 px, so runs are short). "
        "Paths under that folder are shown as `$WS`. Classes: **clean** = the expected result, or one error line "
        "naming the file / option and the fix; "
        "**traceback** = a Python traceback; **silent** = exit 0 with a wrong, unverified or degraded result (or "
        "code run from a model file), or no word where one is due; **partial** = partial or misleading files left "
        "behind; **unclear** = an error line that does not name the file / option, or valid input refused.",
        "",
        f"**Totals** ({len(after)} cases): before: {counts(before)}; after: {counts(after)}.",
        "",
        "| # | group | case | before | after | before: what happened | after: what happened |",
        "|---:|---|---|---|---|---|---|",
    ]
    for i, (case, b, a) in enumerate(zip(CASES, before, after), 1):
        lines.append(f"| {i} | {case.group} | {case.name} | {b[0]} | {a[0]} | {b[1]} | {a[1]} |")
    lines += ["", "The 71-case survey of the issue also covered cases that already ended cleanly; the `held` rows "
              "keep a few of them in this table, and `tests/test_faults.py` keeps the whole set in the test suite.",
              ""]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="checkout of the last commit (git worktree add ../head HEAD)")
    ap.add_argument("--after", default=str(REPO), help="checkout to compare (default: this working tree)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "fault-corpus.md"))
    ap.add_argument("--only", nargs="*", default=[], help="run only cases whose name holds one of these words")
    args = ap.parse_args(argv)
    before_root, after_root = Path(args.before).resolve(), Path(args.after).resolve()
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))  # unmount and remove the scratch folder on kill
    before = run_side(before_root, args.only)
    after = run_side(after_root, args.only)
    command = "python -m benchmarks.studies.fault_corpus --before " + str(args.before) + \
        ("" if args.after == str(REPO) else f" --after {args.after}") + \
        (f" --only {' '.join(args.only)}" if args.only else "")
    text = table(before, after, before_root, after_root, command)
    if args.only:
        print(text)
        return 0
    atomic.write_text(args.out, text)
    print(f"wrote {args.out}")
    return 0



if __name__ == "__main__":
    sys.exit(main())
