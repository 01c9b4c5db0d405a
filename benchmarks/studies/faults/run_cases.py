"""Fault cases of running a model (``glsr predict``, ``glsr eval``, ``glsr models``, the Python API): EXIF-rotated
photos, truncated models and images, read-only outputs, bad data sets, a huge photo, progress on a terminal and
the ``--help`` text."""
from __future__ import annotations

import json
from typing import Callable, Tuple

from benchmarks.studies.faults.harness import Ctx, box, last_line, refused, short, traceback_of


def exif_eval(ctx: Ctx) -> Tuple[str, str]:
    nme = []
    for name in ("plain", "tagged"):
        js = ctx.ws / f"exif-{name}.json"
        r = ctx.run(["eval", "--weights", ctx.ws / "m.pt", "--data", f"folder:{ctx.ws / 'exif' / name}", "--json", js])
        if r.rc != 0:
            return refused(r, [])
        nme.append(json.loads(js.read_text())["models"][0]["nme"])
    note = f"NME {100 * nme[0]:.2f} % untagged, {100 * nme[1]:.2f} % with Orientation=6"
    return ("clean" if abs(nme[0] - nme[1]) < 1e-9 else "silent"), note


def exif_predict(ctx: Ctx) -> Tuple[str, str]:
    r = ctx.run(["predict", ctx.ws / "exif" / "tagged" / "a.jpg", "--weights", ctx.ws / "m.pt", "--box", "60", "80",
                 "180", "200"])
    if r.rc != 0:
        return refused(r, [])
    doc = json.loads(r.out)
    if "frame" not in doc:
        return "silent", "exit 0; the JSON does not say which frame (upright / stored) the landmarks are in"
    return "clean", f"exit 0, frame {doc['frame']!r}, exif_orientation {doc.get('exif_orientation')}"


def api_truncated_onnx(ctx: Ctx) -> Tuple[str, str]:
    code = f"from glsr.runtime.predictor import Predictor; Predictor.from_file({str(ctx.ws / 'truncated.onnx')!r})"
    r = ctx.run([code], python=True)
    line = last_line(r.err)
    if line.startswith("ValueError") and "truncated.onnx" in line:
        return "clean", f"raises {short(line)}"
    return "traceback", short(line)


def ro_case(kind: str) -> Callable[[Ctx], Tuple[str, str]]:
    def fn(ctx: Ctx) -> Tuple[str, str]:
        if ctx.rofs is None:
            return "not run", "needs root to mount a read-only tmpfs"
        if kind == "export":
            r = ctx.run(["export", "--weights", ctx.ws / "m.pt", "-o", ctx.rofs / "out", "--no-parity"])
        else:
            r = ctx.run(["predict", ctx.ws / "face.jpg", "--weights", ctx.ws / "m.pt", *box(ctx), "--out",
                         ctx.rofs / "ov.png"])
        return refused(r, [str(ctx.rofs), "writable"])
    return fn


def predict_out_txt(ctx: Ctx) -> Tuple[str, str]:
    out = ctx.ws / "ov.txt"
    r = ctx.run(["predict", ctx.ws / "face.jpg", "--weights", ctx.ws / "m.pt", *box(ctx), "--out", out])
    status, note = refused(r, ["ov.txt"])
    if status == "traceback" and r.out.strip():
        note += " (after printing the landmarks)"
    return status, note


def truncated_jpeg(ctx: Ctx) -> Tuple[str, str]:
    r = ctx.run(["predict", ctx.ws / "truncated.jpg", "--weights", ctx.ws / "m.pt", *box(ctx)])
    if r.rc != 0:
        return refused(r, ["truncated.jpg"])
    doc = json.loads(r.out)
    if any("truncated" in w for w in doc.get("warnings", [])):
        return "clean", f"exit 0, JSON warning: {short(doc['warnings'][0], 100)}"
    return "silent", f"exit 0, no warning in the JSON (stderr: {short(r.err, 80) or 'nothing'})"


def skip_bad(ctx: Ctx) -> Tuple[str, str]:
    r = ctx.run(["eval", "--weights", ctx.ws / "m.pt", "--data", f"folder:{ctx.ws / 'baddata'}", "--skip-bad"])
    if r.rc == 0 and "3 faces" in r.out:
        said = next((x for x in r.err.splitlines() if "left out" in x), "")
        return "clean", f"exit 0 on the 3 good faces: {short(said)}"
    return refused(r, ["--skip-bad"], code=0)


def huge_image(ctx: Ctx) -> Tuple[str, str]:
    r = ctx.measured(["predict", ctx.ws / "huge.jpg", "--weights", ctx.ws / "m.pt"])
    tb = traceback_of(r)
    if tb:
        return "traceback", tb
    note = f"exit {r.rc}, {r.seconds:.1f} s, peak {r.rss_gb:.2f} GB"
    return ("clean" if r.rc == 0 and r.rss_gb < 2.0 else "silent"), note


def models_terminal(ctx: Ctx) -> Tuple[str, str]:
    r, first = ctx.on_terminal(["models"])
    if r.rc != 0:
        return refused(r, [])
    if first is None:
        return "silent", f"{r.seconds:.0f} s with nothing on the terminal before the table"
    return "clean", f"progress on the terminal after {first:.1f} s; table after {r.seconds:.0f} s"


def eval_terminal(ctx: Ctx) -> Tuple[str, str]:
    r, first = ctx.on_terminal(["eval", "--weights", ctx.ws / "m.pt", "--data", "procedural:68", "--samples", "16"])
    if r.rc != 0:
        return refused(r, [])
    if first is None or "eval" not in r.err:
        return "silent", f"{r.seconds:.0f} s with no progress on the terminal"
    return "clean", f"progress on the terminal after {first:.1f} s (run {r.seconds:.0f} s)"


def help_box(ctx: Ctx) -> Tuple[str, str]:
    r = ctx.run(["predict", "--help"])
    text = " ".join(r.out.split())
    ok = "box convention" in text.lower() and "tight box" in text
    return ("clean" if ok else "silent"), ("--help states the box convention" if ok else
                                           "--help says nothing about how to draw --box")

