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
import fcntl
import json
import os
import pty
import resource
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from glsr import atomic  # noqa: E402
from glsr.paths import portable_text  # noqa: E402
from glsr.procedural import ProceduralFaces  # noqa: E402

CLASSES = ("clean", "traceback", "silent", "partial", "unclear", "not run")
SIZES = ["--input-size", "96", "--loc-size", "128", "--face-size", "128", "--part-size", "32"]
TRAIN = ["--samples", "8", "--val-samples", "4", "--samples-per-image", "2", "--stage-epochs", "1", "1", "0", "0",
         "--threads", "1", "--no-progress", "--no-tensorboard", *SIZES]
TIMEOUT = 900

SETUP = r"""
import sys, torch
from pathlib import Path
from glsr.models import create_model, save_checkpoint
from glsr.export import export_model

ws = Path(sys.argv[1])

def model(seed):
    torch.manual_seed(seed)
    m = create_model("small", "68", input_size=96, face_size=128, loc_size=128, part_size=32).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.03)
    return m

save_checkpoint(model(0), ws / "m.pt")
(ws / "b").mkdir()
save_checkpoint(model(1), ws / "b" / "m.pt")
ck = torch.load(ws / "m.pt", map_location="cpu", weights_only=True)
key = next(k for k, v in ck["state_dict"].items() if v.is_floating_point() and v.numel() > 1 and k != "mean_shape")
ck["state_dict"][key] = torch.full_like(ck["state_dict"][key], float("nan"))
torch.save(ck, ws / "nan.pt")
export_model(ws / "m.pt", formats="onnx", out_dir=ws / "onnx", name="m", parity=False)
"""


@dataclass
class Run:
    rc: int
    out: str
    err: str
    seconds: float
    rss_gb: float = 0.0


@dataclass
class Case:
    group: str
    name: str
    fn: Callable[["Ctx"], Tuple[str, str]]


@dataclass
class Ctx:
    root: Path
    ws: Path
    rofs: Optional[Path]
    face_box: List[str] = field(default_factory=list)

    def env(self, **extra) -> dict:
        env = dict(os.environ, PYTHONPATH=str(self.root), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   PYTHONWARNINGS="ignore", **extra)
        env.pop("GLSR_VERBOSE", None)
        return env

    def argv(self, args: Sequence) -> List[str]:
        return ["nice", "-n", "10", sys.executable, "-m", "glsr", *map(str, args)]

    def popen(self, args: Sequence, python: bool = False, **kw) -> subprocess.Popen:
        argv = ["nice", "-n", "10", sys.executable, "-c", args[0]] if python else self.argv(args)
        return subprocess.Popen(argv, cwd=self.ws, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, **kw)

    def run(self, args: Sequence, python: bool = False, **kw) -> Run:
        t0 = time.perf_counter()
        p = self.popen(args, python, **kw)
        out, err = p.communicate(timeout=TIMEOUT)
        return Run(p.returncode, out, err, time.perf_counter() - t0)

    def measured(self, args: Sequence) -> Run:
        """Run with the peak resident memory of the process (``wait4``)."""
        t0 = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-m", "glsr", *map(str, args)], cwd=self.ws, env=self.env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=lambda: os.nice(10))
        chunks = {"out": [], "err": []}
        readers = [threading.Thread(target=lambda s, k: chunks[k].append(s.read()), args=(p.stdout, "out")),
                   threading.Thread(target=lambda s, k: chunks[k].append(s.read()), args=(p.stderr, "err"))]
        for t in readers:
            t.start()
        _, status, usage = os.wait4(p.pid, 0)
        for t in readers:
            t.join()
        p.returncode = os.waitstatus_to_exitcode(status)
        return Run(p.returncode, b"".join(chunks["out"]).decode(), b"".join(chunks["err"]).decode(),
                   time.perf_counter() - t0, usage.ru_maxrss / 1e6)

    def on_terminal(self, args: Sequence) -> Tuple[Run, Optional[float]]:
        """Run with stderr on a pseudo-terminal (as in a shell): ``(run, seconds to the first stderr output)``."""
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a real terminal's size
        t0 = time.perf_counter()
        p = subprocess.Popen(self.argv(args), cwd=self.ws, env=self.env(), stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        first, err = None, b""
        out_chunks = []
        reader = threading.Thread(target=lambda: out_chunks.append(p.stdout.read()))
        reader.start()
        while True:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if data:
                    first = first if first is not None else time.perf_counter() - t0
                    err += data
                    continue
                break  # end of file: the process closed the terminal (it exited)
            if p.poll() is not None:
                break
        p.wait()
        reader.join()
        os.close(master)
        return Run(p.returncode, b"".join(out_chunks).decode(), err.decode("utf-8", "replace"),
                   time.perf_counter() - t0), first


# ------------------------------------------------------------------------------------------------- judging
def _short(text: str, n: int = 150) -> str:
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= n else text[: n - 3] + "..."


def _last(err: str) -> str:
    lines = [x for x in err.strip().splitlines() if x.strip()]
    return lines[-1] if lines else ""


def traceback_of(r: Run) -> Optional[str]:
    if "Traceback (most recent call last)" in r.err:
        return f"exit {r.rc}: {_short(_last(r.err))}"
    if r.rc < 0:
        return f"killed by signal {-r.rc}"
    return None


def refused(r: Run, words: Sequence[str], code: int = 2) -> Tuple[str, str]:
    """One line naming ``words`` with exit ``code`` is clean."""
    tb = traceback_of(r)
    if tb:
        return "traceback", tb
    if r.rc == 0:
        return "silent", f"exit 0: {_short(r.out, 100)}"
    line = _last(r.err)
    missing = [w for w in words if w.lower() not in line.lower()]
    if missing or r.rc != code:
        return "unclear", f"exit {r.rc}: {_short(line)}" + (f" (names no {', '.join(missing)})" if missing else "")
    return "clean", f"exit {r.rc}: {_short(line)}"


def finite_checkpoint(path: Path) -> Optional[bool]:
    if not path.is_file():
        return None
    import torch

    ck = torch.load(path, map_location="cpu", weights_only=True)
    state = ck.get("state_dict", ck.get("model", {}))
    return all(bool(torch.isfinite(v).all()) for v in state.values() if torch.is_tensor(v) and v.is_floating_point())


# ------------------------------------------------------------------------------------------------- inputs
class Evil:
    """Unpickling this runs ``touch MARKER`` (what a malicious checkpoint does)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant_evil(path: Path, marker: Path, **fields) -> Path:
    """A ``.pt`` whose pickle calls ``os.system`` (glsr checkpoint keys around it, so only unpickling stops it)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "glsr-checkpoint", **fields, "payload": Evil(marker)}, path)
    return path


def with_exif_orientation(jpeg: bytes, value: int) -> bytes:
    """JPEG bytes with an APP1 EXIF segment holding only the orientation tag."""
    tiff = b"II*\x00" + struct.pack("<IH", 8, 1) + struct.pack("<HHIHH", 0x0112, 3, 1, value, 0) + struct.pack("<I", 0)
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def write_bad_dataset(bad: Path) -> Path:
    """A ``folder:`` data set of 6 procedural faces, 3 of them bad: 60 points (f1), a NaN coordinate (f3), an
    undecodable image (f5)."""
    bad.mkdir()
    for i, s in enumerate(ProceduralFaces(scheme="68", count=6, seed=0, split="train")):
        cv2.imwrite(str(bad / f"f{i}.png"), np.ascontiguousarray(s["image"]))
        rows = [f"{x:.3f} {y:.3f}" for x, y in np.asarray(s["landmarks"])[: 60 if i == 1 else None]]
        if i == 3:
            rows[5] = "nan 3"
        (bad / f"f{i}.txt").write_text("\n".join(rows) + "\n")
    (bad / "f5.png").write_bytes(b"not a png")
    return bad


def write_calib_folder(calib: Path, jpeg: bytes) -> Path:
    """An int8 calibration folder: 2 good photos, a truncated JPEG (a third of ``jpeg``) and a junk file."""
    calib.mkdir()
    for i, s in enumerate(ProceduralFaces(scheme="68", count=2, seed=1, split="train")):
        cv2.imwrite(str(calib / f"a{i}.jpg"), np.ascontiguousarray(s["image"]))
    (calib / "z_truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (calib / "z_junk.jpg").write_bytes(b"junk" * 50)
    return calib


def write_inputs(ctx: Ctx) -> None:
    ws = ctx.ws
    face = ProceduralFaces(scheme="68", count=1, seed=0, split="test")[0]
    image = np.ascontiguousarray(face["image"])
    cv2.imwrite(str(ws / "face.jpg"), image)
    data = (ws / "face.jpg").read_bytes()
    (ws / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (ws / "junk.jpg").write_bytes(b"not an image" * 20)
    ctx.face_box = [f"{v:.2f}" for v in np.asarray(face["box"], dtype=float)]
    big = cv2.resize(image, (10000, 10000), interpolation=cv2.INTER_LINEAR)
    cv2.imwrite(str(ws / "huge.jpg"), big)
    onnx = (ws / "onnx" / "m_fp32.onnx").read_bytes()
    (ws / "truncated.onnx").write_bytes(onnx[: len(onnx) // 2])
    (ws / "x.onnx").mkdir()
    # a folder data set: 3 good faces, 3 bad ones (60 points, a NaN coordinate, an undecodable image)
    write_bad_dataset(ws / "baddata")
    write_calib_folder(ws / "calib", data)
    # EXIF: one face padded to 320 x 256, landmarks in stored pixels; tagged Orientation=6 or not
    padded = np.pad(image, ((0, 0), (0, 64), (0, 0)))
    ok, buf = cv2.imencode(".jpg", padded)
    for name, tag in (("plain", None), ("tagged", 6)):
        d = ws / "exif" / name
        d.mkdir(parents=True)
        (d / "a.jpg").write_bytes(with_exif_orientation(buf.tobytes(), tag) if tag else buf.tobytes())
        (d / "a.txt").write_text("\n".join(f"{x:.3f} {y:.3f}" for x, y in np.asarray(face["landmarks"])) + "\n")


# ------------------------------------------------------------------------------------------------- cases
def box(ctx: Ctx) -> List[str]:
    return ["--box", *ctx.face_box]


def evil_case(kind: str) -> Callable[[Ctx], Tuple[str, str]]:
    def fn(ctx: Ctx) -> Tuple[str, str]:
        ws = ctx.ws / f"evil-{kind.replace(' ', '-')}"
        ws.mkdir()
        marker = ws / "RAN"
        evil = plant_evil(ws / "evil.pt", marker)
        argv = {
            "predict": ["predict", ctx.ws / "face.jpg", "--weights", evil, *box(ctx)],
            "eval": ["eval", "--weights", evil, "--data", "procedural:68", "--samples", "2"],
            "export": ["export", "--weights", evil, "-o", ws / "out"],
            "parity": ["parity", "--weights", evil, ctx.ws / "onnx" / "m_fp32.onnx"],
            "train --init": ["train", "--out", ws / "run", "--init", evil, *TRAIN],
            "train --resume": ["train", "--out", ws / "run", "--resume", *TRAIN],
            "import-dpr": ["import-dpr", ws / "release", "-o", ws / "dpr.pt"],
        }[kind]
        if kind == "train --resume":
            plant_evil(ws / "run" / "last.pt", marker, position={})
        if kind == "import-dpr":
            (ws / "release").mkdir()
            np.save(ws / "release" / "mean_98_face.npy", np.zeros(196))
            for n in ("98_points_global_reinit.pth.tar", "98_points_global_regress.pth.tar"):
                plant_evil(ws / "release" / n, marker, state_dict={})
        r = ctx.run(argv)
        named = {"import-dpr": "release", "train --resume": "last.pt"}.get(kind, "evil.pt")
        status, note = refused(r, [named])
        if marker.exists():
            return ("traceback" if status == "traceback" else "silent"), f"the planted command RAN; {note}"
        return status, note
    return fn


def train_lr1000(ctx: Ctx) -> Tuple[str, str]:
    out = ctx.ws / "nanrun"
    r = ctx.run(["train", "--out", out, *TRAIN, "--lr", "1000", "--max-steps", "5", "--batch-size", "8"])
    finite = finite_checkpoint(out / "model.pt")
    if finite is False:
        return "silent", f"exit {r.rc}, model.pt holds NaN"
    status, note = refused(r, ["diverged", "--lr"])
    return status, note + ("" if finite is None else "; model.pt finite")


def overwrite_64_bytes(path: Path, fill: bytes) -> None:
    """64 bytes of ``fill`` in the middle of the largest tensor record of a torch zip file."""
    with zipfile.ZipFile(path) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    off = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.file_size // 2
    raw[off:off + 64] = fill * 64
    path.write_bytes(bytes(raw))


def zeroed_checkpoint(ctx: Ctx) -> Tuple[str, str]:
    bad = ctx.ws / "zeroed.pt"
    shutil.copy(ctx.ws / "m.pt", bad)
    overwrite_64_bytes(bad, b"\x00")
    r = ctx.run(["predict", ctx.ws / "face.jpg", "--weights", bad, *box(ctx)])
    if r.rc == 0:
        return "silent", "exit 0: landmarks from the damaged weights, no word"
    return refused(r, ["zeroed.pt", "corrupt"])


def tiny_run(ctx: Ctx) -> Path:
    run = ctx.ws / "run0"
    if not (run / "model.pt").is_file():
        r = ctx.run(["train", "--out", run, *TRAIN, "--batch-size", "4", "--lr", "0.002"])
        if r.rc != 0:
            raise RuntimeError(f"the reference training run failed: {r.err[-500:]}")
    return run


def resume_corrupt(ctx: Ctx) -> Tuple[str, str]:
    run = ctx.ws / "corrupt-run"
    shutil.copytree(tiny_run(ctx), run)
    overwrite_64_bytes(run / "last.pt", b"\xff")
    (run / "model.pt").unlink()
    r = ctx.run(["train", "--out", run, "--resume", *TRAIN, "--batch-size", "4", "--lr", "0.002"])
    tb = traceback_of(r)
    if tb:
        return "traceback", tb
    finite = finite_checkpoint(run / "model.pt")
    if r.rc == 0 and finite is False:
        return "silent", "exit 0, the resumed model.pt holds NaN"
    if r.rc == 0 and finite and "unusable" in r.err:
        return "clean", f"exit 0, model.pt finite: {_short(next(x for x in r.err.splitlines() if 'unusable' in x))}"
    return refused(r, ["last.pt"])


def resume_truncated(ctx: Ctx) -> Tuple[str, str]:
    run = ctx.ws / "trunc-run"
    shutil.copytree(tiny_run(ctx), run)
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 2])
    (run / "model.pt").unlink()
    r = ctx.run(["train", "--out", run, "--resume", *TRAIN, "--batch-size", "4", "--lr", "0.002"])
    tb = traceback_of(r)
    if tb:
        return "traceback", tb
    if r.rc == 0 and (run / "model.pt").is_file() and "unusable" in r.err:
        return "clean", f"exit 0: {_short(next(x for x in r.err.splitlines() if 'unusable' in x))}"
    return refused(r, ["last.pt"])


def full_disk_training(ctx: Ctx) -> Tuple[str, str]:
    out = ctx.ws / "fsize-run"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    r = ctx.run(["train", "--out", out, *TRAIN, "--batch-size", "4"], preexec_fn=limit)
    status, note = refused(r, ["File too large", "--resume"])
    tmp = [p.name for p in out.rglob("*.tmp")] if out.is_dir() else []
    if tmp and status == "clean":
        return "partial", f"{note}; left {tmp}"
    return status, note


def two_trainings(ctx: Ctx) -> Tuple[str, str]:
    out = ctx.ws / "shared-run"
    procs = [ctx.popen(["train", "--out", out, *TRAIN, "--batch-size", "4", "--seed", str(s)]) for s in (1, 2)]
    res = [p.communicate(timeout=TIMEOUT) for p in procs]
    runs = [Run(p.returncode, o, e, 0) for p, (o, e) in zip(procs, res)]
    for r in runs:
        if traceback_of(r):
            return "traceback", traceback_of(r)
    codes = sorted(r.rc for r in runs)
    if codes == [0, 0]:
        return "partial", "both exit 0 into one folder (config.json, model.pt, metrics.jsonl of both runs)"
    if codes == [0, 2]:
        loser = next(r for r in runs if r.rc == 2)
        return refused(loser, ["in use", str(out)])
    return "unclear", f"exit codes {codes}"


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
    line = _last(r.err)
    if line.startswith("ValueError") and "truncated.onnx" in line:
        return "clean", f"raises {_short(line)}"
    return "traceback", _short(line)


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


def truncated_jpeg(ctx: Ctx) -> Tuple[str, str]:
    r = ctx.run(["predict", ctx.ws / "truncated.jpg", "--weights", ctx.ws / "m.pt", *box(ctx)])
    if r.rc != 0:
        return refused(r, ["truncated.jpg"])
    doc = json.loads(r.out)
    if any("truncated" in w for w in doc.get("warnings", [])):
        return "clean", f"exit 0, JSON warning: {_short(doc['warnings'][0], 100)}"
    return "silent", f"exit 0, no warning in the JSON (stderr: {_short(r.err, 80) or 'nothing'})"


def skip_bad(ctx: Ctx) -> Tuple[str, str]:
    r = ctx.run(["eval", "--weights", ctx.ws / "m.pt", "--data", f"folder:{ctx.ws / 'baddata'}", "--skip-bad"])
    if r.rc == 0 and "3 faces" in r.out:
        said = next((x for x in r.err.splitlines() if "left out" in x), "")
        return "clean", f"exit 0 on the 3 good faces: {_short(said)}"
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


def chatter(fmt: str) -> Callable[[Ctx], Tuple[str, str]]:
    def fn(ctx: Ctx) -> Tuple[str, str]:
        r = ctx.run(["export", "--weights", ctx.ws / "m.pt", "--format", fmt, "-o", ctx.ws / f"chatter-{fmt}",
                     "--threads", "1"])
        tb = traceback_of(r)
        if tb:
            return "traceback", tb
        lines = [x for x in r.err.splitlines() if x.strip()]
        macos = sum("only on macOS" in x for x in (r.out + r.err).splitlines())
        note = f"exit {r.rc}, {len(lines)} stderr line(s)" + (f" (first: {_short(lines[0], 70)})" if lines else "")
        if fmt == "coreml":
            note += f"; 'runs only on macOS' said {macos}x"
            return ("clean" if r.rc == 0 and not lines and macos == 1 else "silent"), note
        return ("clean" if r.rc == 0 and not lines else "silent"), note
    return fn


def help_box(ctx: Ctx) -> Tuple[str, str]:
    r = ctx.run(["predict", "--help"])
    text = " ".join(r.out.split())
    ok = "box convention" in text.lower() and "tight box" in text
    return ("clean" if ok else "silent"), ("--help states the box convention" if ok else
                                           "--help says nothing about how to draw --box")


def format_list(ctx: Ctx) -> Tuple[str, str]:
    out = ctx.ws / "two-formats"
    r = ctx.run(["export", "--weights", ctx.ws / "m.pt", "--format", "onnx,mnn", "-o", out, "--threads", "1"])
    if r.rc != 0:
        tb = traceback_of(r)
        return ("traceback", tb) if tb else ("unclear", f"valid input refused: exit {r.rc}: {_short(_last(r.err))}")
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
                res = ("not run", f"{type(e).__name__}: {_short(str(e), 120)}")
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
        f"- **after**: the working tree at `{portable_text(str(after_root))}`" + (" (uncommitted changes)" if dirty else "") + ".",
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
