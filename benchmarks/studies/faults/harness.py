"""The fault corpus's harness: the setup every checkout under test runs (:data:`SETUP`), one case
(:class:`Case`), one process's result (:class:`Run`), the scratch folder a side runs in with the ways to start a
``glsr`` process there (:class:`Ctx`), and the judging of a result into the classes of :data:`CLASSES`."""
from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

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



def short(text: str, n: int = 150) -> str:
    """``text`` on one line, at most ``n`` characters, safe in a Markdown table cell."""
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= n else text[: n - 3] + "..."


def last_line(err: str) -> str:
    """The last non-blank line of ``err``."""
    lines = [x for x in err.strip().splitlines() if x.strip()]
    return lines[-1] if lines else ""


def traceback_of(r: Run) -> Optional[str]:
    if "Traceback (most recent call last)" in r.err:
        return f"exit {r.rc}: {short(last_line(r.err))}"
    if r.rc < 0:
        return f"killed by signal {-r.rc}"
    return None


def refused(r: Run, words: Sequence[str], code: int = 2) -> Tuple[str, str]:
    """One line naming ``words`` with exit ``code`` is clean."""
    tb = traceback_of(r)
    if tb:
        return "traceback", tb
    if r.rc == 0:
        return "silent", f"exit 0: {short(r.out, 100)}"
    line = last_line(r.err)
    missing = [w for w in words if w.lower() not in line.lower()]
    if missing or r.rc != code:
        return "unclear", f"exit {r.rc}: {short(line)}" + (f" (names no {', '.join(missing)})" if missing else "")
    return "clean", f"exit {r.rc}: {short(line)}"


def finite_checkpoint(path: Path) -> Optional[bool]:
    if not path.is_file():
        return None
    import torch

    ck = torch.load(path, map_location="cpu", weights_only=True)
    state = ck.get("state_dict", ck.get("model", {}))
    return all(bool(torch.isfinite(v).all()) for v in state.values() if torch.is_tensor(v) and v.is_floating_point())


def box(ctx: Ctx) -> List[str]:
    """``--box`` with the test face's box."""
    return ["--box", *ctx.face_box]

