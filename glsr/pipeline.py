"""``glsr pipeline``: the whole job on the embedded default, into one report folder.

Stages (each the same code path as its own command; a stage that fails is reported and the stages that need its
output are skipped):

1. **train** ``small`` briefly on procedural faces (``glsr train``; the trainer's procedural budget);
2. **eval** on held-out procedural faces (``glsr eval``: NME / AUC / FR, CED plot, mean-shape baseline);
3. **export** every format (``glsr export --format all``: ONNX, MNN, Core ML ``.mlpackage`` / ``.mlmodel``;
   parity runs inside the export);
4. **parity** of all artifacts against PyTorch (``glsr parity``, the CI check; Core ML is skipped off macOS);
5. **bench** the trained model: PyTorch eager, onnxruntime, MNN x 1 thread and all cores (``glsr bench``'s
   harness, with glue overhead and profiles);
6. **overlays**: landmarks drawn on procedural faces (prediction and ground truth) and, when ``../shared`` is
   present, on real photos (LFW, Haar boxes) and the WFLW samples;
7. **report**: ``report.md`` with tables and the images, and ``pipeline.json`` (stage times and statuses).

``--quick`` runs every stage with tiny budgets (for the test suite: well under a minute of work on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
STAGES = ("train", "eval", "export", "parity", "bench", "overlays", "report")


@dataclass(frozen=True)
class Budget:
    """What each stage is allowed to spend (``None`` = the stage's own default)."""

    train: Sequence[str] = ()                 # extra ``glsr train`` flags
    eval_samples: Optional[int] = None
    parity_procedural: int = 8
    parity_lfw: int = 8
    bench_time: float = 2.0
    bench_isolate: bool = True
    bench_glue: float = 1.0
    bench_profile: bool = True
    overlay_faces: int = 8
    formats: str = "all"
    export_parity: bool = True                # the export's own parity run (the parity stage runs anyway)
    bench_threads: Optional[Sequence[int]] = None   # None = 1 and all cores


FULL = Budget()
# one optimizer step per stage; a small learning rate keeps such a run from diverging (at the default 0.01 one
# step on 4 faces throws the STN off and the exported graph's outputs become huge)
QUICK = Budget(train=("--samples", "8", "--val-samples", "4", "--samples-per-image", "1", "--batch-size", "4",
                      "--stage-epochs", "1", "1", "1", "1", "--max-steps", "1", "--lr", "0.001", "--lr-last", "0.0001"),
               eval_samples=8, parity_procedural=2, parity_lfw=1, bench_time=0.05, bench_isolate=False,
               bench_glue=0.03, bench_profile=True, overlay_faces=2, export_parity=False, bench_threads=(1,))


@dataclass
class StageResult:
    name: str
    status: str = "pending"         # ok | failed | skipped
    seconds: float = 0.0
    detail: str = ""
    outputs: Dict[str, str] = field(default_factory=dict)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="train small on procedural faces, evaluate, export every format, check "
                                        "parity, benchmark, and write one report folder",
                       description="Train small on procedural faces, evaluate, export every format, check parity, "
                                   "benchmark, draw overlays, and write one report folder (report.md). Stages: "
                                   + ", ".join(STAGES) + ". --quick runs every stage with tiny budgets.")
    p.add_argument("-o", "--out", default="runs/pipeline", help="report folder (default runs/pipeline)")
    p.add_argument("--variant", default="small", help="variant to train (default small)")
    p.add_argument("--quick", action="store_true", help="tiny budgets for every stage (smoke test, < 1 min)")
    p.add_argument("--threads", type=int, default=None, help="threads for training / evaluation (default: all)")
    p.add_argument("--skip", nargs="+", default=[], choices=[s for s in STAGES if s not in ("train", "report")],
                   help="stages to leave out")
    p.add_argument("--weights", help="skip training and use this checkpoint")
    p.add_argument("--shared", default=str(SHARED), help="the ../shared folder (real photos; optional)")
    p.set_defaults(func=_pipeline)


def _pipeline(args: argparse.Namespace) -> int:
    return run_pipeline(args.out, variant=args.variant, quick=args.quick, threads=args.threads, skip=args.skip,
                        weights=args.weights, shared=args.shared)


def log(msg: str) -> None:
    print(f"[pipeline] {msg}", file=sys.stderr, flush=True)


def _glsr(argv: List[str]) -> int:
    """Run a ``glsr`` sub-command in this process (same code path as the shell command)."""
    from glsr.cli import main

    log("$ glsr " + " ".join(argv))
    return main(argv)


class Pipeline:
    def __init__(self, out: Path, variant: str, budget: Budget, threads: Optional[int], skip: Sequence[str],
                 weights: Optional[str], shared: Optional[Path], quick: bool):
        self.out, self.variant, self.budget, self.threads = out, variant, budget, threads
        self.skip, self.weights, self.shared, self.quick = set(skip), weights, shared, quick
        self.results: Dict[str, StageResult] = {s: StageResult(s) for s in STAGES}
        self.t0 = time.time()

    # ------------------------------------------------------------------------------------------ driver
    def stage(self, name: str, fn: Callable[[StageResult], None], needs: Sequence[str] = ()) -> None:
        r = self.results[name]
        missing = [n for n in needs if self.results[n].status != "ok"]
        if name in self.skip:
            r.status, r.detail = "skipped", "--skip"
        elif missing:
            r.status, r.detail = "skipped", f"needs {', '.join(missing)}"
        else:
            k = STAGES.index(name) + 1
            log(f"stage {k}/{len(STAGES)}: {name} (elapsed {time.time() - self.t0:.0f} s)")
            t = time.time()
            try:
                fn(r)
                r.status = "ok" if r.status == "pending" else r.status
            except Exception as e:  # noqa: BLE001 - the report says what broke; later stages still run
                r.status, r.detail = "failed", f"{e.__class__.__name__}: {e}"
                log(f"{name} failed: {r.detail}")
                (self.out / "logs").mkdir(parents=True, exist_ok=True)
                (self.out / "logs" / f"{name}.traceback.txt").write_text(traceback.format_exc())
            r.seconds = round(time.time() - t, 1)
            log(f"{name}: {r.status} in {r.seconds:.1f} s" + (f" ({r.detail})" if r.detail else ""))
        if r.status == "skipped":
            log(f"{name}: skipped ({r.detail})")

    def run(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        self.stage("train", self.train)
        self.stage("eval", self.eval, needs=("train",))
        self.stage("export", self.export, needs=("train",))
        self.stage("parity", self.parity, needs=("export",))
        self.stage("bench", self.bench, needs=("train",))
        self.stage("overlays", self.overlays, needs=("train",))
        self.stage("report", self.report)
        from glsr.atomic import write_text

        write_text(self.out / "pipeline.json", json.dumps(
            {"quick": self.quick, "variant": self.variant, "wall_s": round(time.time() - self.t0, 1),
             "stages": {k: vars(v) for k, v in self.results.items()}}, indent=2))
        failed = [r.name for r in self.results.values() if r.status == "failed"]
        log(f"done in {time.time() - self.t0:.0f} s; report: {self.out / 'report.md'}"
            + (f"; failed: {', '.join(failed)}" if failed else ""))
        return 1 if failed else 0

    @property
    def model_path(self) -> Path:
        return Path(self.weights).resolve() if self.weights else self.out / "train" / "model.pt"

    def _threads(self) -> List[str]:
        return ["--threads", str(self.threads)] if self.threads else []

    # ------------------------------------------------------------------------------------------ stages
    def train(self, r: StageResult) -> None:
        if self.weights:
            if not Path(self.weights).is_file():
                raise FileNotFoundError(f"checkpoint {self.weights} does not exist")
            r.detail = f"using {self.weights}"
        else:
            train_dir = self.out / "train"
            argv = ["train", "--variant", self.variant, "--data", "procedural:68", "--out", str(train_dir),
                    *self.budget.train, *self._threads()]
            if self.quick:
                argv.append("--no-progress")
            if train_dir.joinpath("last.pt").is_file():  # an earlier run here: continue it (a no-op when finished)
                argv.append("--resume")
                r.detail = "resumed the run already in the folder"
            code = _glsr(argv)
            if code != 0 or not self.model_path.is_file():
                raise RuntimeError(f"glsr train exited with {code}")
        r.outputs["model"] = str(self.model_path)

    def eval(self, r: StageResult) -> None:
        d = self.out / "eval"
        argv = ["eval", "--weights", str(self.model_path), "--data", "procedural:68", "--baseline",
                "--json", str(d / "eval.json"), "--md", str(d / "eval.md"), "--plot", str(d / "ced.png"),
                *self._threads()]
        if self.budget.eval_samples:
            argv += ["--samples", str(self.budget.eval_samples)]
        d.mkdir(parents=True, exist_ok=True)
        code = _glsr(argv)
        if code != 0:
            raise RuntimeError(f"glsr eval exited with {code}")
        r.outputs.update(json=str(d / "eval.json"), md=str(d / "eval.md"), ced=str(d / "ced.png"))

    def export(self, r: StageResult) -> None:
        d = self.out / "export"
        argv = ["export", "--weights", str(self.model_path), "--format", self.budget.formats, "-o", str(d),
                "--name", "model"]
        if not self.budget.export_parity:
            argv.append("--no-parity")
        from benchmarks.harness import private_cwd

        with private_cwd():  # MNN's converter writes a fixed-name scratch file into the working folder
            code = _glsr(argv)
        if code not in (0, 1):
            raise RuntimeError(f"glsr export exited with {code}")
        if code == 1:  # artifacts are written; the parity stage is the verdict
            r.detail = "the export's parity check reported a breach (see the parity stage)"
        r.outputs["folder"] = str(d)

    def parity(self, r: StageResult) -> None:
        d = self.out / "export"
        argv = ["parity", "--weights", str(self.model_path), str(d), "--json", str(self.out / "parity.json"),
                "--procedural", str(self.budget.parity_procedural), "--lfw", str(self.budget.parity_lfw)]
        if not self._shared_ok():
            argv.append("--no-shared")
        code = _glsr(argv)
        r.outputs["json"] = str(self.out / "parity.json")
        if code == 1:
            r.status, r.detail = "failed", "parity breached (see parity.json)"
        elif code != 0:
            raise RuntimeError(f"glsr parity exited with {code}")

    def bench(self, r: StageResult) -> None:
        from benchmarks import harness

        b = self.budget
        cfg = harness.BenchConfig(variants=[self.variant], backends=["torch", "onnx", "mnn"],
                                  threads=b.bench_threads, batches=(1,), budget_s=b.bench_time,
                                  checkpoint=str(self.model_path),
                                  glue=True, glue_budget_s=b.bench_glue, profile=b.bench_profile,
                                  isolate=b.bench_isolate, image=self._photos(1)[0] if self._photos(1) else None,
                                  work=str(self.out / "bench" / "artifacts"), progress=log)
        results = harness.run_benchmark(cfg)
        paths = harness.write_results(results, self.out / "bench", "bench")
        shutil.rmtree(self.out / "bench" / "artifacts", ignore_errors=True)
        r.outputs.update({k: str(v) for k, v in paths.items()})
        if results["errors"]:
            r.detail = f"{len(results['errors'])} benchmark errors (see bench.md)"
            if not results["cases"]:
                raise RuntimeError(r.detail)

    def overlays(self, r: StageResult) -> None:
        d = self.out / "overlays"
        r.outputs["procedural"] = str(procedural_overlay(self.model_path, d / "procedural.png",
                                                         self.budget.overlay_faces))
        photos = self._photos(self.budget.overlay_faces)
        if photos:
            r.outputs["photos"] = str(photo_overlay(self.model_path, photos, d / "photos.png"))
        else:
            r.detail = "no ../shared: real-photo overlays skipped"

    def report(self, r: StageResult) -> None:
        write_report(self)
        r.outputs["md"] = str(self.out / "report.md")

    # ------------------------------------------------------------------------------------------ helpers
    def _shared_ok(self) -> bool:
        return self.shared is not None and (self.shared / "faces" / "lfw").is_dir()

    def _photos(self, n: int) -> List[str]:
        if not self._shared_ok():
            return []
        return [str(p) for p in sorted((self.shared / "faces" / "lfw").glob("*.jpg"))[:n]]


# ------------------------------------------------------------------------------------------ overlays


def _grid(tiles: Sequence["np.ndarray"], cols: int, size: int = 256):  # noqa: F821
    import cv2
    import numpy as np

    tiles = [cv2.resize(t, (size, int(round(t.shape[0] * size / t.shape[1])))) for t in tiles]
    h = max(t.shape[0] for t in tiles)
    tiles = [np.pad(t, ((0, h - t.shape[0]), (0, 0), (0, 0))) for t in tiles]
    rows = []
    for i in range(0, len(tiles), cols):
        row = tiles[i:i + cols]
        row += [np.zeros_like(tiles[0])] * (cols - len(row))
        rows.append(np.concatenate(row, axis=1))
    return np.concatenate(rows, axis=0)


def procedural_overlay(model: Path, path: Path, n: int) -> Path:
    """Held-out procedural faces: ground truth (red) and prediction (green) from the annotation box."""
    import numpy as np

    from glsr.runtime.io import draw_landmarks, write_image_atomic
    from glsr.runtime.predictor import Predictor
    from glsr.train.augment import get_face
    from glsr.train.evaluate import open_faces

    pred = Predictor.from_file(model)
    faces = open_faces(f"procedural:{pred.metadata.scheme}", split="test", samples=max(n, 1))
    tiles = []
    for i in range(min(n, len(faces))):
        f = get_face(faces, i)
        box = f.box if f.box is not None else None
        lm = pred.predict(f.image, [box])
        img = draw_landmarks(f.image, np.asarray(f.landmarks_clean)[None], None, color=(0, 0, 255))
        tiles.append(draw_landmarks(img, lm, [box]))
    write_image_atomic(path, _grid(tiles, cols=min(4, len(tiles))))
    return path


def photo_overlay(model: Path, photos: Sequence[str], path: Path) -> Path:
    """Real photos: Haar boxes (corrected to the model's box convention) and predicted landmarks."""
    from glsr.runtime.io import draw_landmarks, read_image, write_image_atomic
    from glsr.runtime.predictor import Predictor

    pred = Predictor.from_file(model, detector="haar")
    tiles = []
    for p in photos:
        image = read_image(p)
        res = pred.predict_faces(image, path=p)
        tiles.append(draw_landmarks(image, res.landmarks, res.boxes.tolist()))
    write_image_atomic(path, _grid(tiles, cols=min(4, len(tiles))))
    return path


# ------------------------------------------------------------------------------------------ report


def _read_json(path: Path) -> Optional[Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _rel(p: str | Path, root: Path) -> str:
    return os.path.relpath(str(p), str(root))


def write_report(pl: Pipeline) -> Path:
    from benchmarks.harness import environment
    from glsr.atomic import write_text

    out = pl.out
    env = environment()
    lines = [f"# glsr pipeline report{' (--quick)' if pl.quick else ''}", "",
             f"{env['date']} — {env['cpu']['model']}, {env['cpu']['cores']} cores; glsr {env['glsr']} "
             f"(commit {env['commit'] or 'unknown'}); torch {env['libraries'].get('torch')}, onnxruntime "
             f"{env['libraries'].get('onnxruntime')}, MNN {env['libraries'].get('MNN')}", "",
             "## Stages", "", "| stage | status | seconds | detail |", "|---|---|---:|---|"]
    total = 0.0
    for r in pl.results.values():
        if r.name == "report":
            continue
        total += r.seconds
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.1f} | {r.detail} |")
    lines += [f"| **total** | | {time.time() - pl.t0:.1f} | |", ""]

    summary = _read_json(out / "train" / "summary.json")
    if summary:
        keep = {k: v for k, v in summary.items() if isinstance(v, (int, float, str)) and k != "model"}
        lines += ["## Training", "", f"Checkpoint: `{_rel(pl.model_path, out)}`", "",
                  "| key | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in keep.items()] + [""]
    elif pl.weights:
        lines += ["## Training", "", f"Skipped: using `{pl.weights}`.", ""]

    ev = out / "eval" / "eval.md"
    if ev.is_file():
        lines += ["## Evaluation (held-out procedural faces)", "", ev.read_text().strip(), ""]
        if (out / "eval" / "ced.png").is_file():
            lines += ["![CED](eval/ced.png)", ""]

    exp = out / "export"
    if exp.is_dir():
        arts = sorted(p for p in exp.iterdir() if not p.name.startswith(".") and not p.name.endswith(".json"))
        lines += ["## Export", "", "| artifact | size |", "|---|---:|"]
        for p in arts:
            size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
            lines.append(f"| {p.name} | {size / 1e6:.2f} MB |")
        lines.append("")

    par = _read_json(out / "parity.json")
    if par:
        lines += ["## Parity against PyTorch (`glsr parity`)", "", f"Passed: **{par.get('passed')}**", "",
                  "| artifact | format | precision | max px | mean px | dNME pp | status |",
                  "|---|---|---|---:|---:|---:|---|"]
        for res in par.get("results", []):
            m = res.get("metrics") or {}
            f = lambda v, nd=4: "-" if v is None else f"{float(v):.{nd}f}"  # noqa: E731
            lines.append(f"| {Path(res.get('artifact', '')).name} | {res.get('format')} | {res.get('precision')} | "
                         f"{f(m.get('max_px'))} | {f(m.get('mean_px'))} | {f(m.get('dnme_pp'), 3)} | "
                         f"{res.get('status')}{' — ' + res['reason'] if res.get('reason') else ''} |")
        lines.append("")

    bench = _read_json(out / "bench" / "bench.json")
    if bench:
        lines += ["## Speed (trained model, batch 1)", "",
                  "| backend | threads | network ms (median) | p90 | fps | end-to-end ms | size MB |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for c in sorted(bench["cases"], key=lambda c: (c["threads"], c["network"]["median_ms"])):
            e = c.get("end_to_end") or {}
            lines.append(f"| {c['backend']} | {c['threads']} | {c['network']['median_ms']:.3f} | "
                         f"{c['network']['p90_ms']:.3f} | {c['fps']:.1f} | "
                         f"{e.get('median_ms', float('nan')):.3f} | {c['size_bytes'] / 1e6:.2f} |")
        for g in bench.get("glue", []):
            for rt, v in g["runtimes"].items():
                lines.append("")
                lines.append(f"Glue ({rt}, {g['threads']} thread{'s' if g['threads'] > 1 else ''}): whole graph "
                             f"{v['whole_ms']:.3f} ms vs sub-networks alone {v['sum_ms']:.3f} ms "
                             f"({v['overhead']:+.1%}).")
        lines += ["", "Full tables, profiles and the plot: [bench/bench.md](bench/bench.md).", ""]
        if (out / "bench" / "bench.png").is_file():
            lines += ["![speed](bench/bench.png)", ""]

    ov = out / "overlays"
    if (ov / "procedural.png").is_file():
        lines += ["## Overlays", "", "Held-out procedural faces (red: ground truth, green: prediction, box: the "
                  "annotation box):", "", "![procedural](overlays/procedural.png)", ""]
    if (ov / "photos.png").is_file():
        lines += ["Real photos (LFW; Haar boxes corrected to the model's box convention):", "",
                  "![photos](overlays/photos.png)", ""]
    return write_text(out / "report.md", "\n".join(lines) + "\n")


def run_pipeline(out: str | os.PathLike = "runs/pipeline", variant: str = "small", quick: bool = False,
                 threads: Optional[int] = None, skip: Sequence[str] = (), weights: Optional[str] = None,
                 shared: Optional[str | os.PathLike] = SHARED) -> int:
    """Run the pipeline (see module docstring); returns 0 when every stage that ran passed."""
    unknown = [s for s in skip if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages are {STAGES}")
    pl = Pipeline(Path(out).resolve(), variant, QUICK if quick else FULL, threads, skip, weights,
                  Path(shared) if shared else None, quick)
    return pl.run()
