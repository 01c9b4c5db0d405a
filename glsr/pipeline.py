"""``glsr pipeline``: the whole job on the embedded default, into one report folder.

Stages (each calls the library function behind its own command; a stage that fails is reported and the stages
that need its output are skipped):

1. **train** ``small`` briefly on procedural faces (:func:`glsr.train.trainer.train`, as ``glsr train``; the
   trainer's procedural budget). ``model.pt`` is the stage that scored best on the held-out faces; the report
   says which;
2. **eval** on held-out procedural faces (:func:`glsr.train.evaluate.run_eval`, as ``glsr eval``: NME / AUC /
   FR, CED plot, mean-shape baseline);
3. **export** every format (:func:`glsr.export.export_model`, as ``glsr export --format all``: ONNX, MNN, Core ML
   ``.mlpackage`` / ``.mlmodel``; parity runs inside the export);
4. **parity** of all artifacts against PyTorch (:func:`glsr.export.parity.check_artifacts`, as ``glsr parity``,
   the CI check; Core ML is skipped off macOS);
5. **bench** the trained model: PyTorch eager, onnxruntime, MNN x 1 thread and all cores
   (:func:`glsr.bench.run_benchmark`, as ``glsr bench``, with glue overhead and profiles);
6. **shipped**: export, parity-check and benchmark the shipped real-face model (``small``,
   :func:`glsr.shipped.shipped_path`; landmarks on real photos when ``../shared`` is present). Skipped, with the
   reason, when the install has no shipped weights;
7. **overlays**: landmarks drawn on procedural faces (prediction and ground truth) and, when ``../shared`` is
   present, on real photos (LFW, Haar boxes);
8. **report**: ``report.md`` with tables and the images, and ``pipeline.json`` (stage times and statuses).

``--quick`` runs every stage with tiny budgets (for the test suite: about a minute of work on 2 cores, plus about
half a minute for the shipped model's ONNX export, parity and PyTorch timing when it is installed).
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
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from glsr import paths
from glsr.atomic import write_text
from glsr.shipped import DEFAULT_SHIPPED, SHIPPED
from glsr.train.config import StageConfig, TrainConfig
from glsr.train.runfiles import MODEL_FILE, STATE_FILE, SUMMARY_FILE

if TYPE_CHECKING:
    from glsr.export.exporter import ExportResult
    from glsr.export.parity import ParityInputs

SHARED = paths.SHARED
STAGES = ("train", "eval", "export", "parity", "bench", "shipped", "overlays", "report")


@dataclass(frozen=True)
class Budget:
    """What each stage is allowed to spend (``None`` = the stage's own default)."""

    train: Mapping[str, Any] = field(default_factory=dict)   # TrainConfig fields ({} = the procedural defaults)
    samples_per_image: Optional[int] = None   # perturbed samples per face (None = the procedural default)
    eval_samples: Optional[int] = None
    parity_procedural: int = 8
    parity_lfw: int = 8
    bench_time: float = 2.0
    bench_isolate: bool = True
    bench_glue: float = 1.0
    bench_profile: bool = True
    overlay_faces: int = 8
    formats: Sequence[str] = ("all",)
    export_parity: bool = True                # the export's own parity run (the parity stage runs anyway)
    bench_threads: Optional[Sequence[int]] = None   # None = 1 and all cores
    shipped_formats: Sequence[str] = ("all",)  # the shipped model's export (its parity runs inside the export)
    shipped_backends: Sequence[str] = ("torch", "onnx", "mnn")


FULL = Budget()
# one optimizer step per stage; a small learning rate keeps such a run from diverging (at the default 0.01 one
# step on 4 faces throws the STN off and the exported graph's outputs become huge)
QUICK = Budget(train={"samples": 8, "val_samples": 4, "batch_size": 4, "max_steps": 1,
                      "stages": (StageConfig(1, 0.001),) * 3 + (StageConfig(1, 0.0001),)},
               samples_per_image=1, eval_samples=8, parity_procedural=2, parity_lfw=1, bench_time=0.05,
               bench_isolate=False, bench_glue=0.03, bench_profile=True, overlay_faces=2, export_parity=False,
               bench_threads=(1,), shipped_formats=("onnx",), shipped_backends=("torch",))
"""Tiny budgets: one optimizer step per training stage; the shipped model (when installed) is exported to ONNX,
parity-checked and timed in PyTorch only (a second, bench-owned export would double the stage's time)."""


@dataclass
class StageResult:
    """What one stage did: status, wall time, a one-line detail and the files it wrote."""

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
    p.add_argument("--quick", action="store_true",
                   help="tiny budgets for every stage (smoke test, about a minute on 2 cores)")
    p.add_argument("--threads", type=int, default=None, help="threads for training / evaluation (default: all)")
    p.add_argument("--skip", nargs="+", default=[], choices=[s for s in STAGES if s not in ("train", "report")],
                   help="stages to leave out")
    p.add_argument("--weights", help="skip training and use this checkpoint")
    p.add_argument("--shared", default=str(SHARED), help="the ../shared folder (real photos; optional)")
    p.add_argument("--shipped", default=DEFAULT_SHIPPED, choices=sorted(SHIPPED),
                   help=f"shipped model the shipped stage exports, checks and benchmarks (default {DEFAULT_SHIPPED})")
    p.set_defaults(func=_pipeline)


def _pipeline(args: argparse.Namespace) -> int:
    return run_pipeline(args.out, variant=args.variant, quick=args.quick, threads=args.threads, skip=args.skip,
                        weights=args.weights, shared=args.shared, shipped=args.shipped)


def log(msg: str) -> None:
    """One progress line on stderr."""
    print(f"[pipeline] {msg}", file=sys.stderr, flush=True)


class Pipeline:
    """The stages of one run into ``out`` (see the module docstring); :meth:`run` drives them."""

    def __init__(self, out: Path, variant: str, budget: Budget, threads: Optional[int], skip: Sequence[str],
                 weights: Optional[str], shared: Optional[Path], quick: bool, shipped: str = DEFAULT_SHIPPED):
        self.out, self.variant, self.budget, self.threads = out, variant, budget, threads
        self.skip, self.weights, self.shared, self.quick = set(skip), weights, shared, quick
        self.shipped_name = shipped
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
                write_text(self.out / "logs" / f"{name}.traceback.txt", traceback.format_exc())
            r.seconds = round(time.time() - t, 1)
            log(f"{name}: {r.status} in {r.seconds:.1f} s" + (f" ({r.detail})" if r.detail else ""))
            return
        log(f"{name}: skipped ({r.detail})")

    def run(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        self.stage("train", self.train)
        self.stage("eval", self.eval, needs=("train",))
        self.stage("export", self.export, needs=("train",))
        self.stage("parity", self.parity, needs=("export",))
        self.stage("bench", self.bench, needs=("train",))
        self.stage("shipped", self.shipped)
        self.stage("overlays", self.overlays, needs=("train",))
        self.stage("report", self.report)
        failed = self.failed_stages()
        write_text(self.out / "pipeline.json", json.dumps(
            {"quick": self.quick, "variant": self.variant, "wall_s": round(time.time() - self.t0, 1),
             "verdict": "failed" if failed else "passed", "failed": failed,
             "stages": {k: vars(v) for k, v in self.results.items()}}, indent=2))
        log(f"done in {time.time() - self.t0:.0f} s; report: {self.out / 'report.md'}"
            + (f"; FAILED: {', '.join(failed)}" if failed else "; every check passed"))
        return 1 if failed else 0

    def failed_stages(self) -> List[str]:
        """The stages whose check failed: the report's verdict and the exit code follow from this one list."""
        return [r.name for r in self.results.values() if r.status == "failed"]

    @property
    def model_path(self) -> Path:
        return Path(self.weights).resolve() if self.weights else self.out / "train" / MODEL_FILE

    def train_config(self) -> TrainConfig:
        """The training run's config: procedural faces at the trainer's procedural budget, with this budget's
        overrides."""
        from dataclasses import replace

        cfg = TrainConfig(variant=self.variant, data="procedural:68", threads=self.threads, **self.budget.train)
        if self.budget.samples_per_image is not None:
            cfg = replace(cfg, augment=replace(cfg.augment, samples_per_image=self.budget.samples_per_image))
        return replace(cfg, progress=False) if self.quick else cfg

    # ------------------------------------------------------------------------------------------ stages
    def train(self, r: StageResult) -> None:
        if self.weights:
            if not Path(self.weights).is_file():
                raise FileNotFoundError(f"checkpoint {self.weights} does not exist")
            r.detail = f"using {self.weights}"
        else:
            from glsr.train.trainer import train

            train_dir = self.out / "train"
            resume = train_dir.joinpath(STATE_FILE).is_file()  # an earlier run here: continue it (a no-op when done)
            log(f"train {self.variant} on procedural:68 into {train_dir}" + (" (resuming)" if resume else ""))
            final = train(self.train_config(), train_dir, resume=resume)
            if not Path(final).is_file():
                raise RuntimeError(f"training wrote no checkpoint at {final}")
            kept = (_read_json(train_dir / SUMMARY_FILE) or {}).get("selected")
            notes = ["resumed the run already in the folder"] if resume else []
            if kept:
                notes.append(f"kept stage {kept['stage']} (held-out NME {100 * kept['val_nme']:.2f} %)")
            r.detail = "; ".join(notes)
        r.outputs["model"] = str(self.model_path)

    def eval(self, r: StageResult) -> None:
        from glsr.train.evaluate import run_eval

        d = self.out / "eval"
        d.mkdir(parents=True, exist_ok=True)
        log(f"evaluate {self.model_path.name} on held-out procedural:68 faces")
        report = run_eval([str(self.model_path)], "procedural:68", json_path=d / "eval.json",
                          md_path=d / "eval.md", plot_path=d / "ced.png", baseline=True, threads=self.threads,
                          samples=self.budget.eval_samples)
        m = report["models"][0]
        log(f"NME {100 * m['nme']:.2f} % ({report['norm']}), FR@{report['alpha']:g} {100 * m['fr']:.2f} % "
            f"on {report['count']} faces")
        r.outputs.update(json=str(d / "eval.json"), md=str(d / "eval.md"), ced=str(d / "ced.png"))

    def export(self, r: StageResult) -> None:
        d = self.out / "export"
        result = _export(self.model_path, d, "model", self.budget.formats, self.budget.export_parity)
        r.outputs["folder"] = str(d)
        if result.failed:  # kept only as .parity-failed: a failed check, whatever the parity stage finds later
            r.status = "failed"
            r.detail = ("parity failed in the export for " + ", ".join(p.name for p in result.failed)
                        + " (kept only under that name; see the .parity.json beside it)")

    def parity(self, r: StageResult) -> None:
        from glsr.export.exporter import FAILED_SUFFIX
        from glsr.export.parity import check_artifacts
        from glsr.models import load_checkpoint

        model = load_checkpoint(self.model_path)
        # Core ML cannot run off macOS: the pipeline exports it anyway, and the verdict counts it as not run
        report = check_artifacts(model, [self.out / "export"], self._parity_inputs(model.scheme.name),
                                 reference_name=str(self.model_path), allow_unverified=True)
        report.write(self.out / "parity.json")
        for line in report.table().splitlines():
            log(line)
        r.outputs["json"] = str(self.out / "parity.json")
        kept = sorted(p.name for p in (self.out / "export").glob("*" + FAILED_SUFFIX))
        problems = [report.verdict_line()] if report.verdict != "passed" else []
        if kept:  # an export that failed parity is no longer among the artifacts checked above: still a failure
            problems.append(f"{', '.join(kept)} failed parity in the export")
        if problems:
            r.status, r.detail = "failed", "; ".join(problems) + " (see parity.json)"
        elif report.counts()["not_run"]:
            r.detail = report.verdict_line()

    def bench(self, r: StageResult) -> None:
        from glsr import bench

        b = self.budget
        cfg = bench.BenchConfig(variants=[self.variant], backends=["torch", "onnx", "mnn"],
                                threads=b.bench_threads, batches=(1,), budget_s=b.bench_time,
                                checkpoint=str(self.model_path),
                                glue=True, glue_budget_s=b.bench_glue, profile=b.bench_profile,
                                isolate=b.bench_isolate, image=self._photos(1)[0] if self._photos(1) else None,
                                work=str(self.out / "bench" / "artifacts"), progress=log)
        results = bench.run_benchmark(cfg)
        paths = bench.write_results(results, self.out / "bench", "bench")
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

    def shipped(self, r: StageResult) -> None:
        """Export the shipped model (parity inside the export), benchmark it, and draw it on real photos."""
        from glsr import bench, shipped
        from glsr.models import load_checkpoint

        name = self.shipped_name
        try:
            path = shipped.shipped_path(name).resolve()
        except FileNotFoundError:
            r.status = "skipped"
            r.detail = (f"no shipped `{name}` model in this install "
                        f"({shipped.models_dir() / shipped.SHIPPED[name].file} is absent)")
            return
        d, b = self.out / "shipped", self.budget
        r.outputs["model"] = str(path)
        model = load_checkpoint(path)
        result = _export(path, d / "export", path.stem, b.shipped_formats, True,
                         self._parity_inputs(model.scheme.name))
        if result.report is not None:
            from dataclasses import replace

            result = replace(result, report=replace(result.report, allow_unverified=True))  # Core ML off macOS
            result.report.write(d / "parity.json")
            r.outputs["parity"] = str(d / "parity.json")
            for line in result.report.table().splitlines():
                log(line)
        photos = self._photos(1)
        cfg = bench.BenchConfig(variants=[model.cfg.name], backends=list(b.shipped_backends),
                                threads=b.bench_threads, batches=(1,), budget_s=b.bench_time, checkpoint=str(path),
                                glue=False, profile=False, isolate=b.bench_isolate,
                                image=photos[0] if photos else None, work=str(d / "bench" / "artifacts"),
                                progress=log)
        results = bench.run_benchmark(cfg)
        written = bench.write_results(results, d / "bench", "bench")
        shutil.rmtree(d / "bench" / "artifacts", ignore_errors=True)
        r.outputs.update({f"bench_{k}": str(v) for k, v in written.items()})
        source, photos = self._shipped_photos(self.budget.overlay_faces)
        if photos:
            r.outputs["photos"] = str(photo_overlay(path, photos, d / "photos.png"))
            r.outputs["photos_source"] = source
        notes = [f"{name}: {path.name}"]
        if not result.passed:
            r.status = "failed"
            notes.append("parity breached (see shipped/parity.json)")
        if results["errors"]:
            notes.append(f"{len(results['errors'])} benchmark errors (see shipped/bench/bench.md)")
            if not results["cases"]:
                r.status = "failed"
        r.detail = "; ".join(notes)

    # ------------------------------------------------------------------------------------------ helpers
    def _parity_inputs(self, scheme: str) -> "ParityInputs":
        """The parity input set at this budget (LFW photos and WFLW samples only when ``../shared`` is here)."""
        from glsr.export.parity import default_inputs

        return default_inputs(scheme, self.budget.parity_procedural, self.budget.parity_lfw,
                              self.shared if self._shared_ok() else None)

    def _shared_ok(self) -> bool:
        return self.shared is not None and (self.shared / "faces" / "lfw").is_dir()

    def _shipped_photos(self, n: int) -> Tuple[str, List[str]]:
        """Photos for the shipped model's overlay: 300-W `val` faces (clean photos it never trained on) when
        ``../shared`` has them, else LFW (whose pixels carry a burned-in box and dots)."""
        root = self.shared / "data" / "300w" if self.shared is not None else None
        if root is not None and root.is_dir():
            from glsr.train.datasets import open_dataset

            ds = open_dataset(f"300w:{root}", split="val")
            paths = list(dict.fromkeys(ds[i].image_path for i in range(len(ds))))[:n]
            return "300-W `val` split, faces it never trained on", paths
        return "LFW; their pixels carry a burned-in box and dots", self._photos(n)

    def _photos(self, n: int) -> List[str]:
        if not self._shared_ok():
            return []
        return [str(p) for p in sorted((self.shared / "faces" / "lfw").glob("*.jpg"))[:n]]


def _export(weights: Path, out: Path, name: str, formats: Sequence[str], parity: bool,
            parity_inputs: Optional["ParityInputs"] = None) -> "ExportResult":
    """:func:`glsr.export.export_model` of ``weights`` into ``out`` (as ``glsr export``), logging what it wrote."""
    from glsr.bench.artifacts import private_cwd
    from glsr.export import export_model

    log(f"export {weights.name} as {', '.join(formats)} into {out}")
    with private_cwd():  # MNN's converter writes a fixed-name scratch file into the working folder
        result = export_model(weights, formats=list(formats), out_dir=out, name=name, parity=parity,
                              parity_inputs=parity_inputs)
    for line in result.summary_lines():
        log(line)
    return result


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
    """``report.md`` from the files the stages wrote (a stage that did not run leaves its section out)."""
    from glsr.bench.machine import environment

    out = pl.out
    env = environment()
    lines = [f"# glsr pipeline report{' (--quick)' if pl.quick else ''}", "",
             f"{env['date']} — {env['cpu']['model']}, {env['cpu']['cores']} cores; glsr {env['glsr']} "
             f"(commit {env['commit'] or 'unknown'}); torch {env['libraries'].get('torch')}, onnxruntime "
             f"{env['libraries'].get('onnxruntime')}, MNN {env['libraries'].get('MNN')}", "",
             "## Verdict", "", verdict_line(pl), "",
             "## Stages", "", "| stage | status | seconds | detail |", "|---|---|---:|---|"]
    total = 0.0
    for r in pl.results.values():
        if r.name == "report":
            continue
        total += r.seconds
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.1f} | {r.detail} |")
    lines += [f"| **total** | | {time.time() - pl.t0:.1f} | |", ""]

    summary = _read_json(out / "train" / SUMMARY_FILE)
    if summary and not pl.weights:
        keep = {k: v for k, v in summary.items() if isinstance(v, (int, float, str)) and k != "model"}
        lines += ["## Training", "", f"Checkpoint: `{_rel(pl.model_path, out)}`", ""] + kept_stage_lines(summary)
        lines += ["| key | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in keep.items()] + [""]
    elif pl.weights:
        lines += ["## Training", "", f"Skipped: using `{pl.weights}`.", ""]

    ev = out / "eval" / "eval.md"
    if ev.is_file():
        lines += ["## Evaluation (held-out procedural faces)", "", ev.read_text().strip(), ""]
        if (out / "eval" / "ced.png").is_file():
            lines += ["![CED](eval/ced.png)", ""]
        lines += ["What to expect: this is a smoke-scale run (a few minutes of CPU training on a few hundred "
                  "procedural faces), not a converged model. A held-out NME around 12-13 % against about 34 % for "
                  "the mean shape is normal here; with most faces above NME 0.1, FR@0.1 near 70 % and a CED that "
                  "rises late are expected too. The paper's models reach a few percent NME after full training "
                  "on real faces (`glsr train --data 300w:DIR`).", ""]

    exp = out / "export"
    if exp.is_dir():
        lines += ["## Export", ""] + _artifact_lines(exp)

    par = _read_json(out / "parity.json")
    if par:
        lines += ["## Parity against PyTorch (`glsr parity`)", ""] + parity_lines(par)

    bench = _read_json(out / "bench" / "bench.json")
    if bench:
        lines += ["## Speed (trained model, batch 1)", ""] + speed_lines(bench)
        for g in bench.get("glue", []):
            for rt, v in g["runtimes"].items():
                lines.append("")
                lines.append(f"Glue ({rt}, {g['threads']} thread{'s' if g['threads'] > 1 else ''}): whole graph "
                             f"{v['whole_ms']:.3f} ms vs sub-networks alone {v['sum_ms']:.3f} ms "
                             f"({v['overhead']:+.1%}).")
        lines += ["", "Full tables, profiles and the plot: [bench/bench.md](bench/bench.md).", ""]
        if (out / "bench" / "bench.png").is_file():
            lines += ["![speed](bench/bench.png)", ""]

    lines += shipped_lines(pl)

    ov = out / "overlays"
    if (ov / "procedural.png").is_file():
        lines += ["## Overlays", "", "Held-out procedural faces (red: ground truth, green: prediction, box: the "
                  "annotation box):", "", "![procedural](overlays/procedural.png)", ""]
    if (ov / "photos.png").is_file():
        lines += ["Real photos (LFW; Haar boxes corrected to the model's box convention):", "",
                  "![photos](overlays/photos.png)", ""]
    return write_text(out / "report.md", "\n".join(lines) + "\n")


def verdict_line(pl: Pipeline) -> str:
    """The report's verdict: failed when any stage's check failed (an export kept as ``.parity-failed``
    included), naming the stages."""
    failed = [r for r in pl.results.values() if r.status == "failed" and r.name != "report"]
    if not failed:
        return "**PASSED**: every stage that ran passed its checks."
    return "**FAILED**: " + "; ".join(f"{r.name}: {r.detail}" for r in failed)


def kept_stage_lines(summary: Mapping[str, Any]) -> List[str]:
    """Which stage's checkpoint became ``model.pt`` (``summary.json``'s ``selected``) and every stage's held-out
    NME."""
    sel = summary.get("selected")
    if not sel:
        return ["`model.pt` is the last stage's checkpoint (no held-out faces to choose by).", ""]
    lines = [f"`model.pt` is the checkpoint of stage **{sel['stage']}**: the lowest held-out NME "
             f"({100 * sel['val_nme']:.2f} %) of the stages.", "",
             "| stage | step | held-out NME (%) | kept |", "|---|---:|---:|---|"]
    for st in summary.get("stages", []):
        nme = (st.get("val") or {}).get("nme")
        lines.append(f"| {st['stage']} | {st.get('global_step', '')} | "
                     f"{'-' if nme is None else f'{100 * nme:.2f}'} | {'yes' if st['stage'] == sel['stage'] else ''} |")
    return lines + [""]


def parity_lines(par: Mapping[str, Any]) -> List[str]:
    """A parity report (``ParityReport.to_dict``) as a verdict line and a Markdown table."""
    f = lambda v, nd=4: "-" if v is None else f"{float(v):.{nd}f}"  # noqa: E731
    counts = par.get("counts") or {}
    lines = [f"Passed: **{par.get('passed')}** (verdict: {par.get('verdict', 'unknown')}; "
             f"{counts.get('passed', '?')} passed, {counts.get('failed', '?')} failed, "
             f"{counts.get('not_run', '?')} not run here)", "",
             "| artifact | format | precision | max px | mean px | dNME pp | status |",
             "|---|---|---|---:|---:|---:|---|"]
    for res in par.get("results", []):
        m = res.get("metrics") or {}
        lines.append(f"| {Path(res.get('artifact', '')).name} | {res.get('format')} | {res.get('precision')} | "
                     f"{f(m.get('max_px'))} | {f(m.get('mean_px'))} | {f(m.get('dnme_pp'), 3)} | "
                     f"{res.get('status')}{' — ' + res['reason'] if res.get('reason') else ''} |")
    return lines + [""]


def speed_lines(bench: Mapping[str, Any]) -> List[str]:
    """Network and end-to-end timings of a bench result, one row per case."""
    lines = ["| backend | threads | network ms (median) | p90 | fps | end-to-end ms | size MB |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for c in sorted(bench["cases"], key=lambda c: (c["threads"], c["network"]["median_ms"])):
        e = c.get("end_to_end") or {}
        lines.append(f"| {c['backend']} | {c['threads']} | {c['network']['median_ms']:.3f} | "
                     f"{c['network']['p90_ms']:.3f} | {c['fps']:.1f} | "
                     f"{e.get('median_ms', float('nan')):.3f} | {c['size_bytes'] / 1e6:.2f} |")
    return lines


def shipped_lines(pl: Pipeline) -> List[str]:
    """The shipped stage's section: skip reason, or artifacts, parity, speed and the real-photo overlay."""
    r, d = pl.results["shipped"], pl.out / "shipped"
    title = f"## Shipped model (`{pl.shipped_name}`)"
    if r.status in ("skipped", "pending") or not d.is_dir():  # never an earlier run's files left in the folder
        return [title, "", f"{r.status.capitalize()}: {r.detail or 'not run'}.", ""]
    lines = [title, "", f"`{r.outputs.get('model', SHIPPED[pl.shipped_name].file)}` "
             f"({SHIPPED[pl.shipped_name].description}), exported, checked against PyTorch and timed like the "
             "trained model above.", ""]
    if r.status == "failed":
        lines += [f"Failed: {r.detail}.", ""]
    exp = d / "export"
    if exp.is_dir():
        lines += _artifact_lines(exp)
    par = _read_json(d / "parity.json")
    if par:
        lines += ["Parity against PyTorch:", ""] + parity_lines(par)
    bench = _read_json(d / "bench" / "bench.json")
    if bench:
        lines += ["Speed (batch 1):", ""] + speed_lines(bench) + [
            "", "Full tables: [shipped/bench/bench.md](shipped/bench/bench.md).", ""]
    if (d / "photos.png").is_file():
        source = r.outputs.get("photos_source") or "real photos"
        lines += [f"Real photos ({source}; Haar boxes mapped to the model's box convention):", "",
                  "![shipped on photos](shipped/photos.png)", ""]
    return lines


def _artifact_lines(folder: Path) -> List[str]:
    """Artifacts of an export folder and their sizes as a Markdown table."""
    arts = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and not p.name.endswith(".json"))
    lines = ["| artifact | size |", "|---|---:|"]
    for p in arts:
        size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
        lines.append(f"| {p.name} | {size / 1e6:.2f} MB |")
    return lines + [""]


def run_pipeline(out: str | os.PathLike = "runs/pipeline", variant: str = "small", quick: bool = False,
                 threads: Optional[int] = None, skip: Sequence[str] = (), weights: Optional[str] = None,
                 shared: Optional[str | os.PathLike] = SHARED, shipped: str = DEFAULT_SHIPPED) -> int:
    """Run the pipeline (see module docstring); returns 0 when every stage that ran passed."""
    unknown = [s for s in skip if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages are {STAGES}")
    pl = Pipeline(Path(out).resolve(), variant, QUICK if quick else FULL, threads, skip, weights,
                  Path(shared) if shared else None, quick, shipped)
    return pl.run()
