"""Per-face comparison of glsr's models and the peers (``glsr bench --peers mediapipe,dlib --models ...``):
end-to-end latency image + box -> 68 landmarks in image pixels, split into crop / network / uncrop, and accuracy
on the same real faces, in one run under one thread count.

Conventions:

* Faces: a dataset split (default 300-W ``val``, 122 faces; :data:`DEFAULT_FACES`) with the tight box of the 68
  ground-truth points as every landmarker's box. Timing cycles over the first ``timing_faces`` of them, one face
  per call, batch 1.
* Latency: ``e2e`` is the user's call (``Predictor.predict(image, box)`` for glsr, the peer's ``predict``), timed
  alone; ``crop`` / ``net`` / ``uncrop`` are medians of the stages of instrumented calls interleaved with the
  plain ones (each instrumented call's stages sum to that call's time exactly); for glsr rows also ``net_fixed``,
  the network alone on one fixed random crop as ``glsr bench`` times it. Milliseconds per face.
* Accuracy (all faces of the split): NME68 over the 68 points, NME51 over points 17-67 (without the jaw, which
  MediaPipe's mesh does not trace as 300-W annotates it), both normalized by the inter-ocular distance (outer eye
  corners 36 / 45); failures = faces with NME68 > 10 %. 98-point models are scored on their 68-point subset
  (:func:`glsr.train.evaluate.point_selection`).
* int8 against fp32 (:mod:`glsr.bench.int8`): with ``precisions`` fp32 and int8, per glsr model and backend the
  int8 / fp32 e2e and network-only ratios, the NME change in pp, a verdict naming the CPU's int8 instructions,
  and, where int8 is not faster, a per-op-type profile of both artifacts taken after every e2e timing
  (``profile=False``: none); JSON ``int8_vs_fp32``, Markdown section "int8 against fp32".
* Each case runs in a fresh process (``glsr.bench.worker --task face``, started by :mod:`glsr.bench.isolate`)
  unless ``isolate=False``; every record has the other processes' load during the case.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from glsr.artifacts import artifact_size
from glsr.bench import int8
from glsr.bench.artifacts import private_cwd
from glsr.bench.machine import OtherLoad, environment, loadavg, wait_for_idle
from glsr.bench.peers import PEERS, StagedLandmarker, open_peer, peer_status
from glsr.bench.timing import WARMUP_S, time_callable
from glsr.paths import SHARED

DEFAULT_FACES = f"300w:{SHARED / 'data' / '300w'}"
DEFAULT_SPLIT = "val"
FAILURE_NME = 0.10
NO_JAW = tuple(range(17, 68))
GLSR_BACKENDS = ("onnx", "mnn")
MODES = ("graph", "hostwarp")
SUFFIX = {"onnx": ".onnx", "mnn": ".mnn"}


# ------------------------------------------------------------------------------------------ glsr as a landmarker


class GlsrLandmarker(StagedLandmarker):
    """A glsr artifact through :class:`~glsr.runtime.predictor.Predictor`: the stages are the Predictor's own
    ``crop`` / ``run`` / ``uncrop`` (``predict`` is exactly ``Predictor.predict``), 98-point models reduced to 68."""

    def __init__(self, path: str | os.PathLike, threads: int = 1, selection: Optional[Sequence[int]] = None):
        from glsr.runtime.predictor import Predictor

        self.path = Path(path)
        self.predictor = Predictor.from_file(self.path, threads=threads)
        self.threads = threads
        self.name = f"glsr-{self.predictor.backend.name}"
        self.selection = None if selection is None else list(selection)

    def crop(self, image: np.ndarray, boxes: np.ndarray) -> Any:
        return self.predictor.crop(image, boxes)

    def net(self, state: Any) -> Any:
        x, m, b = state
        return self.predictor.run(x), m, b

    def uncrop(self, state: Any) -> np.ndarray:
        out = self.predictor.uncrop(*state)
        return out if self.selection is None else out[:, self.selection]

    def predict(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        out = self.predictor.predict(image, boxes)
        return out if self.selection is None else out[:, self.selection]

    def describe(self) -> Dict[str, Any]:
        m = self.predictor.metadata
        return {"name": self.name, "model": self.path.name, "size_bytes": artifact_size(self.path),
                "threads": self.threads, "variant": m.variant, "scheme": m.scheme, "input_size": m.input_size,
                "precision": m.precision, "format": m.format}


# ------------------------------------------------------------------------------------------ faces and scoring


@dataclass(frozen=True, eq=False)
class Face:
    """One face: ``image`` HxWx3 uint8 BGR, ground truth ``gt [68, 2]`` and tight ``box`` (image pixels)."""

    image: np.ndarray
    gt: np.ndarray
    box: np.ndarray


def load_faces(spec: str = DEFAULT_FACES, split: Optional[str] = DEFAULT_SPLIT, limit: Optional[int] = None
               ) -> List[Face]:
    """The faces of a 68-point dataset split with their tight boxes; ``ValueError`` for another scheme."""
    from glsr import geometry as geo
    from glsr.train.augment import get_annotation, get_face
    from glsr.train.evaluate import dataset_scheme, open_faces

    ds = open_faces(spec, split)
    if dataset_scheme(ds).name != "68":
        raise ValueError(f"{spec}: the per-face comparison needs 68-point faces, got scheme "
                         f"{dataset_scheme(ds).name}")
    n = len(ds) if limit is None else min(int(limit), len(ds))
    out = []
    for i in range(n):
        gt, _ = get_annotation(ds, i, clean=True)
        gt = np.asarray(gt, dtype=np.float64)
        out.append(Face(get_face(ds, i).image, gt, geo.tight_box(gt)))
    if not out:
        raise ValueError(f"{spec} split {split}: no faces")
    return out


def score68(pred: np.ndarray, gt: np.ndarray) -> Dict[str, Any]:
    """NME68, NME51 (no jaw) and failures of ``pred [K, 68, 2]`` against ``gt``, inter-ocular (module docstring)."""
    from glsr.train.metrics import point_errors

    e = point_errors(np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64), "68", "interocular")
    nme68 = e.mean(axis=1)
    nme51 = e[:, list(NO_JAW)].mean(axis=1)
    return {"nme68": float(nme68.mean()), "nme51": float(nme51.mean()),
            "failures": int((nme68 > FAILURE_NME).sum()), "count": int(len(nme68)),
            "nme68_per_face": [round(float(v), 6) for v in nme68]}


# ------------------------------------------------------------------------------------------ timing


def _stats(ms: np.ndarray) -> Dict[str, float]:
    return {"median_ms": round(float(np.median(ms)), 4), "p90_ms": round(float(np.percentile(ms, 90)), 4),
            "mean_ms": round(float(ms.mean()), 4)}


def time_landmarker(lm: StagedLandmarker, faces: Sequence[Face], budget_s: float = 3.0, min_rounds: int = 3
                    ) -> Dict[str, Any]:
    """Per-face latency of ``lm`` cycling over ``faces``: plain calls (``e2e``) interleaved with instrumented ones
    (``crop`` / ``net`` / ``uncrop`` and their per-call sum ``staged``), after a warm-up; ms, medians and p90."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < WARMUP_S:
        for f in faces:
            lm.predict(f.image, f.box)
    plain: List[float] = []
    stages: List[Tuple[float, float, float]] = []
    cpu: List[float] = []
    start = time.perf_counter()
    rounds = 0
    while rounds < min_rounds or time.perf_counter() - start < budget_s:
        for f in faces:
            c = time.process_time()
            a = time.perf_counter()
            lm.predict(f.image, f.box)
            plain.append(time.perf_counter() - a)
            cpu.append(time.process_time() - c)
            stages.append(lm.predict_timed(f.image, f.box)[1])
        rounds += 1
    p = np.asarray(plain) * 1e3
    s = np.asarray(stages) * 1e3
    out: Dict[str, Any] = {"e2e": _stats(p), "cpu_ms": round(float(np.median(cpu)) * 1e3, 4),
                           "calls": int(len(p)), "rounds": rounds, "seconds": round(time.perf_counter() - start, 2)}
    for i, k in enumerate(("crop", "net", "uncrop")):
        out[k] = _stats(s[:, i])
    out["staged"] = _stats(s.sum(axis=1))
    return out


# ------------------------------------------------------------------------------------------ one case


@dataclass
class FaceCase:
    """One landmarker to time and score: a glsr artifact (``kind="glsr"``, ``path``) or a peer (``kind`` = its
    name); ``label`` names the row (model / backend / precision)."""

    kind: str
    label: str
    path: Optional[str] = None
    threads: int = 1
    budget_s: float = 3.0
    faces: str = DEFAULT_FACES
    split: Optional[str] = DEFAULT_SPLIT
    limit: Optional[int] = None
    timing_faces: int = 16
    model: Optional[str] = None          # glsr: the source model's name (shipped name or checkpoint stem)
    backend: Optional[str] = None
    precision: Optional[str] = None
    recropped: bool = False              # glsr: the model's weights exported for another input crop size
    mode: str = "graph"                  # glsr: "graph" (one graph) or "hostwarp" (glsr.runtime.hostwarp)


def open_landmarker(case: FaceCase) -> StagedLandmarker:
    if case.kind == "glsr":
        from glsr.formats import format_of
        from glsr.schemes import get_scheme
        from glsr.train.evaluate import point_selection

        scheme = format_of(case.path).read_metadata(Path(case.path)).scheme
        return GlsrLandmarker(case.path, case.threads, point_selection(scheme, get_scheme("68"), str(case.path)))
    return open_peer(case.kind, threads=case.threads)


def run_face_case(case: FaceCase) -> Dict[str, Any]:
    """Score ``case`` on every face of the split and time it on the first ``timing_faces``; one record."""
    before = loadavg()
    faces = load_faces(case.faces, case.split, case.limit)
    t = time.perf_counter()
    lm = open_landmarker(case)
    load_s = time.perf_counter() - t
    pred = np.concatenate([lm.predict(f.image, f.box) for f in faces])
    acc = score68(pred, np.stack([f.gt for f in faces]))
    timing = time_landmarker(lm, faces[:max(1, case.timing_faces)], case.budget_s)
    if isinstance(lm, GlsrLandmarker):
        # the network alone on one fixed random crop, as ``glsr bench`` times it (glsr.bench.cases)
        s = lm.predictor.metadata.input_size
        if lm.predictor.host_warp:  # its network stage takes the photo's loc images (and warps face and parts)
            x = lm.predictor.crop(faces[0].image, faces[0].box)[0]
        else:
            x = np.random.default_rng(0).standard_normal((1, 3, s, s)).astype(np.float32)
        timing["net_fixed"] = time_callable(lambda: lm.predictor.run(x), budget_s=max(0.2, case.budget_s / 3)
                                            ).to_dict()
    return {"label": case.label, "kind": case.kind, "model": case.model, "backend": case.backend or case.kind,
            "precision": case.precision, "recropped": case.recropped, "mode": case.mode, "threads": case.threads, "landmarker": lm.describe(),
            "load_s": round(load_s, 3), "accuracy": acc, "latency": timing,
            "timing_faces": min(len(faces), max(1, case.timing_faces)),
            "loadavg_before": before, "loadavg_after": loadavg()}


def face_task(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Worker entry: :func:`run_face_case` of ``FaceCase(**spec)``."""
    return run_face_case(FaceCase(**spec))


# ------------------------------------------------------------------------------------------ the run


@dataclass(frozen=True)
class FacesConfig:
    """A per-face comparison run: glsr ``models`` (shipped names or checkpoint files) x ``backends`` x
    ``precisions``, and ``peers``, on ``faces`` / ``split``, at ``threads``."""

    models: Sequence[str] = ()
    input_sizes: Sequence[Optional[int]] = (None,)   # None = each model's own; others: the same weights re-cropped
    peers: Sequence[str] = ("mediapipe", "dlib")
    backends: Sequence[str] = GLSR_BACKENDS
    precisions: Sequence[str] = ("fp32",)
    modes: Sequence[str] = ("graph",)     # "graph" and / or "hostwarp" (glsr export --host-warp)
    threads: int = 1
    budget_s: float = 3.0
    faces: str = DEFAULT_FACES
    split: Optional[str] = DEFAULT_SPLIT
    limit: Optional[int] = None
    timing_faces: int = 16
    calib: Optional[str] = None          # int8 calibration images (default: ../shared/faces/lfw when present)
    isolate: bool = True
    wait_idle_s: float = 0.0
    work: Optional[str] = None
    profile: bool = True                 # per-op profiles where int8 is not faster than fp32 (glsr.bench.int8)
    profile_runs: Optional[Dict[str, int]] = None   # profiled runs per artifact by backend (None: int8.PROFILE_RUNS)
    progress: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))


def model_sources(names: Sequence[str]) -> List[Tuple[str, Path]]:
    """``(label, checkpoint)`` for shipped names and files (:func:`glsr.shipped.resolve_model`: a missing file is a
    ``FileNotFoundError``, an unknown name a ``ValueError``)."""
    from glsr.shipped import SHIPPED, resolve_model

    out = []
    for n in names:
        p = resolve_model(n)
        out.append((n if n in SHIPPED else p.stem, p))
    return out


def checkpoint_input_size(checkpoint: str | os.PathLike) -> int:
    from glsr.models.checkpoint import read_checkpoint

    return int(read_checkpoint(checkpoint)["config"]["input_size"])


def with_input_size(checkpoint: str | os.PathLike, size: int, out: str | os.PathLike) -> Path:
    """A copy of ``checkpoint`` taking an input crop of ``size`` px: the same weights, context and in-graph sizes
    (loc, face, parts). The graph's sampling grids are normalized, so only the crop -> loc sampling theta and the
    crop-pixel scale of the output depend on the crop size: buffers the network builds from its config. A smaller
    crop is cheaper to build on the host (the Predictor's crop stage) and to sample from."""
    from glsr.models.checkpoint import load_checkpoint, save_checkpoint
    from glsr.models.network import GLSRNet
    from glsr.models.registry import VariantConfig

    size = int(size)
    if size < 16:
        raise ValueError(f"input size must be >= 16 px, got {size}")
    model = load_checkpoint(checkpoint)
    cfg = VariantConfig.from_dict({**model.cfg.to_dict(), "input_size": size})
    new = GLSRNet(cfg, model.scheme, model.mean_shape.numpy())  # the size-dependent buffers are built from cfg
    new.load_state_dict(model.state_dict(), strict=True)
    new.box_convention = getattr(model, "box_convention", "")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(new.eval(), out)
    return out


def shipped_present() -> List[str]:
    """Names of the shipped models whose files exist here."""
    from glsr.shipped import SHIPPED, shipped_path

    out = []
    for n in SHIPPED:
        try:
            shipped_path(n)
            out.append(n)
        except (FileNotFoundError, ValueError):
            pass
    return out


def export_glsr(checkpoint: Path, backends: Sequence[str], precision: str, out_dir: Path,
                calib: Optional[str], host_warp: bool = False) -> Dict[str, Path]:
    """Batch-1 artifacts of a checkpoint for ``backends`` at ``precision`` (parity is ``glsr export``'s job);
    ``host_warp``: the host-warp artifacts instead of the single graph."""
    from glsr.export import export_model

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with private_cwd():
        res = export_model(str(Path(checkpoint).resolve()), formats=list(backends), precision=precision, batch=1,
                           out_dir=out_dir, parity=False, calib=calib if precision == "int8" else None,
                           calib_allow_fewer=True, host_warp=host_warp)
    got = {}
    for b in backends:
        hit = [p for p in res.artifacts if Path(p).name.endswith(SUFFIX[b])]
        if hit:
            got[b] = Path(hit[0])
    return got


def run_faces(cfg: FacesConfig) -> Dict[str, Any]:
    """Export every model, time and score every glsr artifact and peer; the result dict (see :func:`markdown`).
    The artifacts go to ``cfg.work`` (kept) or a temporary folder removed at the end."""
    if cfg.work:
        return _run_faces(cfg, Path(cfg.work).resolve())
    with tempfile.TemporaryDirectory(prefix="glsr-faces-") as tmp:
        return _run_faces(cfg, Path(tmp))


def _run_faces(cfg: FacesConfig, work: Path) -> Dict[str, Any]:
    t_start = time.time()
    calib = cfg.calib
    if calib is None and "int8" in cfg.precisions and (SHARED / "faces" / "lfw").is_dir():
        calib = str(SHARED / "faces" / "lfw")
    results: Dict[str, Any] = {
        "schema": 1, "kind": "faces", "environment": environment(),
        "config": {"models": list(cfg.models), "input_sizes": list(cfg.input_sizes), "peers": list(cfg.peers),
                   "backends": list(cfg.backends),
                   "precisions": list(cfg.precisions), "modes": list(cfg.modes), "threads": cfg.threads, "budget_s": cfg.budget_s,
                   "faces": cfg.faces, "split": cfg.split, "limit": cfg.limit, "timing_faces": cfg.timing_faces,
                   "calib": calib, "isolate": cfg.isolate, "profile": cfg.profile, "command": command_line()},
        "cases": [], "skipped": [], "errors": []}
    cases: List[FaceCase] = []
    common = dict(threads=cfg.threads, budget_s=cfg.budget_s, faces=cfg.faces, split=cfg.split, limit=cfg.limit,
                  timing_faces=cfg.timing_faces)
    for base, source in model_sources(cfg.models):
        native = checkpoint_input_size(source)
        for size in dict.fromkeys(native if s is None else int(s) for s in cfg.input_sizes):
            label, ckpt = base, source
            if size != native:
                label = f"{base}@{size}"
                ckpt = with_input_size(source, size, work / "checkpoints" / f"{label}.pt")
            for prec, mode in ((p, m) for m in cfg.modes for p in cfg.precisions):
                if mode == "hostwarp" and prec == "int8":
                    continue  # host-warp artifacts are fp32 / fp16 (glsr.formats.global_problems)
                tag = "" if mode == "graph" else " host-warp"
                cfg.progress(f"[faces] export {label} {'+'.join(cfg.backends)} {prec}{tag}")
                try:
                    arts = export_glsr(ckpt, cfg.backends, prec, work / label / f"{prec}-{mode}", calib,
                                       host_warp=mode == "hostwarp")
                except Exception as e:  # noqa: BLE001 - report, benchmark the rest
                    results["errors"].append({"model": label, "precision": prec, "mode": mode, "stage": "export",
                                              "error": f"{e.__class__.__name__}: {e}"})
                    cfg.progress(f"[faces]   export failed: {e}")
                    continue
                for b in cfg.backends:
                    if b in arts:
                        cases.append(FaceCase("glsr", f"{label} {b} {prec}{tag}", str(arts[b]), model=label,
                                              backend=b, precision=prec, recropped=size != native, mode=mode,
                                              **common))
    for peer in cfg.peers:
        ok, reason = peer_status(peer)
        if not ok:
            results["skipped"].append({"peer": peer, "reason": reason})
            cfg.progress(f"[faces] skip {peer}: {reason}")
            continue
        cases.append(FaceCase(peer, PEERS[peer].label, backend=peer, precision=PEERS[peer].precision, **common))
    for case in cases:
        _run_one(cfg, case, results)
    results["summary"] = summarize_faces(results)
    results["int8_vs_fp32"] = int8.compare_run(results)
    if cfg.profile:  # after every e2e measurement, never inside one
        int8.attach_profiles(results["int8_vs_fp32"], {c.label: c.path for c in cases if c.path}, cfg.threads,
                             cfg.profile_runs, cfg.isolate, cfg.progress)
    results["environment"]["loadavg_end"] = loadavg()
    results["wall_s"] = round(time.time() - t_start, 1)
    return results


def command_line(argv: Optional[Sequence[str]] = None) -> str:
    """This process's command as typed: ``glsr ...`` for the console script, ``python -m glsr`` and ``python -m
    glsr.cli`` (all three run the same CLI)."""
    import shlex

    argv = list(sys.argv if argv is None else argv)
    path = Path(argv[0]) if argv else Path()
    if path.name == "glsr" or (path.parent.name == "glsr" and path.name in ("__main__.py", "cli.py")):
        argv = ["glsr"] + argv[1:]
    return " ".join(shlex.quote(a) for a in argv)


def _run_one(cfg: FacesConfig, case: FaceCase, results: Dict[str, Any]) -> None:
    import dataclasses

    from glsr.bench.isolate import run_isolated

    cfg.progress(f"[faces] {case.label} ({case.threads} thread{'s' if case.threads > 1 else ''})")
    try:
        if cfg.wait_idle_s > 0:
            wait_for_idle(cfg.wait_idle_s, progress=cfg.progress)
        if cfg.isolate:
            rec = run_isolated("face", dataclasses.asdict(case), case.label)
        else:
            with OtherLoad() as ol:
                rec = run_face_case(case)
            rec["other_load_cores"] = ol.cores
    except Exception as e:  # noqa: BLE001
        results["errors"].append({"case": case.label, "stage": "run", "error": f"{e.__class__.__name__}: {e}"})
        cfg.progress(f"[faces]   failed: {e}")
        return
    results["cases"].append(rec)
    lat, acc = rec["latency"], rec["accuracy"]
    cfg.progress(f"[faces]   e2e {lat['e2e']['median_ms']:.3f} ms (crop {lat['crop']['median_ms']:.3f} / net "
                 f"{lat['net']['median_ms']:.3f} / uncrop {lat['uncrop']['median_ms']:.3f}); NME68 "
                 f"{acc['nme68']:.2%} NME51 {acc['nme51']:.2%}; other load {rec.get('other_load_cores')}")


def summarize_faces(results: Dict[str, Any]) -> Dict[str, Any]:
    """What this run's rows add up to: each glsr row's e2e median / MediaPipe's (``ratios``), the fastest glsr row
    with a lower NME51 than MediaPipe and its ratio (``fastest_more_accurate``; ``..._recropped`` when re-cropped
    rows change it), and each glsr row's e2e against crop + network-only (``e2e_overhead``). The project's goals
    on these figures are checked outside the package (``python -m benchmarks.goals``)."""
    cases = results["cases"]
    mp = next((c for c in cases if c["kind"] == "mediapipe"), None)
    out: Dict[str, Any] = {"ratios": [], "fastest_more_accurate": None, "e2e_overhead": []}
    for c in cases:
        if c["kind"] == "glsr":
            lat = c["latency"]
            if "net_fixed" not in lat:
                continue
            parts = lat["crop"]["median_ms"] + lat["net_fixed"]["median_ms"]
            r = lat["e2e"]["median_ms"] / parts - 1
            out["e2e_overhead"].append({"label": c["label"], "backend": c["backend"],
                                        "e2e_ms": lat["e2e"]["median_ms"],
                                        "net_fixed_ms": lat["net_fixed"]["median_ms"],
                                        "net_in_call_ms": lat["net"]["median_ms"], "crop_ms": lat["crop"]["median_ms"],
                                        "crop_plus_net_ms": round(parts, 4), "overhead": round(r, 4)})
    if mp is None:
        return out
    ref = mp["latency"]["e2e"]["median_ms"]
    for c in cases:
        if c["kind"] == "glsr":
            out["ratios"].append({"label": c["label"], "ratio_e2e": round(c["latency"]["e2e"]["median_ms"] / ref, 3),
                                  "nme51_below_mediapipe": c["accuracy"]["nme51"] < mp["accuracy"]["nme51"]})
    for key, rows in (("fastest_more_accurate", [c for c in cases if not c.get("recropped")]),
                      ("fastest_more_accurate_recropped", cases)):
        better = [c for c in rows if c["kind"] == "glsr" and c["accuracy"]["nme51"] < mp["accuracy"]["nme51"]]
        if better:
            best = min(better, key=lambda c: c["latency"]["e2e"]["median_ms"])
            out[key] = {"label": best["label"], "ms": best["latency"]["e2e"]["median_ms"], "mediapipe_ms": ref,
                        "ratio": round(best["latency"]["e2e"]["median_ms"] / ref, 3)}
    if not any(c.get("recropped") for c in cases):
        out.pop("fastest_more_accurate_recropped", None)
    return out


# ------------------------------------------------------------------------------------------ report


def markdown(results: Dict[str, Any]) -> str:
    env, cfg = results["environment"], results["config"]
    cpu = env["cpu"]
    libs = ", ".join(f"{k} {v}" for k, v in {**env["libraries"], **peer_versions()}.items() if v)
    out = ["# glsr per-face comparison: glsr models and peers", "",
           f"- date: {env['date']}; host: {env['host']}; {env['platform']}; Python {env['python']}",
           f"- CPU: {cpu['model']} — {cpu['cores']} usable cores; flags: {' '.join(cpu['flags'])}",
           f"- libraries: {libs}",
           f"- glsr {env['glsr']}, commit {env['commit'] or 'unknown'}; load average at start {env.get('loadavg')}, "
           f"end {env.get('loadavg_end')}",
           f"- command: `{cfg.get('command', '')}`",
           f"- faces: {cfg['faces']} split {cfg['split']} (tight boxes of the 68 ground-truth points); timing over "
           f"the first {cfg['timing_faces']}, one face per call, {cfg['threads']} thread(s), "
           f"{cfg['budget_s']} s per case", ""]
    out += ["ms per face, medians: e2e = the user's call (image + box -> landmarks in image pixels), timed alone; "
            "crop / net / uncrop = the stages of instrumented calls interleaved with them (sum = their per-call "
            "total). NME inter-ocular (outer eye corners); NME51 without the jaw (points 17-67); failures = faces "
            "with NME68 > 10 %. Other load = cores other processes used during the case (> 0.2: the CPU was "
            "shared).", "",
            "| landmarker | backend | precision | NME68 | NME51 | failures | e2e ms | crop | net | uncrop | "
            "stages sum | e2e p90 | x MediaPipe | size MB | other load |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    ratios = {r["label"]: r["ratio_e2e"] for r in results.get("summary", {}).get("ratios", [])}
    mp = next((c for c in results["cases"] if c["kind"] == "mediapipe"), None)
    for c in results["cases"]:
        lat, acc, d = c["latency"], c["accuracy"], c["landmarker"]
        name = c["model"] if c["kind"] == "glsr" else c["kind"]
        ratio = ratios.get(c["label"], 1.0 if c is mp else None)
        size = d.get("size_bytes")
        backend = c["backend"] + (" host-warp" if c.get("mode") == "hostwarp" else "")
        out.append(f"| {name} | {backend} | {c.get('precision') or 'fp32'} | {acc['nme68']:.2%} | "
                   f"{acc['nme51']:.2%} | {acc['failures']}/{acc['count']} | {lat['e2e']['median_ms']:.3f} | "
                   f"{lat['crop']['median_ms']:.3f} | {lat['net']['median_ms']:.3f} | {lat['uncrop']['median_ms']:.3f}"
                   f" | {lat['staged']['median_ms']:.3f} | {lat['e2e']['p90_ms']:.3f} | "
                   f"{'' if ratio is None else f'{ratio:.2f}x'} | {'' if size is None else f'{size / 1e6:.2f}'} | "
                   f"{'' if c.get('other_load_cores') is None else c['other_load_cores']} |")
    out.append("")
    best = results.get("summary", {}).get("fastest_more_accurate")
    if mp is not None:
        out += ["## Fastest glsr model at a lower NME51 than MediaPipe", ""]
        if best:
            out.append(f"- {best['label']}: {best['ms']:.3f} ms against MediaPipe's {best['mediapipe_ms']:.3f} ms "
                       f"= **{best['ratio']:.2f}x**")
        else:
            out.append(f"- no glsr row has a lower NME51 than MediaPipe ({mp['accuracy']['nme51']:.2%})")
        alt = results.get("summary", {}).get("fastest_more_accurate_recropped")
        if alt and alt != best:
            out.append(f"- counting the re-cropped rows (`@<px>`, the same weights exported for a smaller input crop): "
                       f"{alt['label']}, {alt['ms']:.3f} ms = **{alt['ratio']:.2f}x**")
        out.append("")
    over = results.get("summary", {}).get("e2e_overhead") or []
    if over:
        out += ["## End to end against network-only plus crop", "",
                "network-only = `Predictor.run` on one fixed random crop, as `glsr bench` times the network (host-warp "
                "rows: on the first face's loc image, since their network stage warps from the photo); net in "
                "call = the network stage of the instrumented per-face calls (a fresh crop each time); crop = the "
                "crop stage; all medians of the same case.", "",
                "| glsr row | e2e ms | crop ms | network-only ms | net in call ms | e2e / (crop + network-only) - 1 |",
                "|---|---:|---:|---:|---:|---:|"]
        for r in over:
            out.append(f"| {r['label']} | {r['e2e_ms']:.3f} | {r['crop_ms']:.3f} | {r['net_fixed_ms']:.3f} | "
                       f"{r['net_in_call_ms']:.3f} | {r['overhead']:+.1%} |")
        out.append("")
    out += int8.markdown(results.get("int8_vs_fp32") or [], results["config"].get("profile", True))
    out += ["## Landmarkers", ""]
    for c in results["cases"]:
        out.append(f"- {c['label']}: " + ", ".join(f"{k} {v}" for k, v in c["landmarker"].items() if k != "name"))
    for s in results.get("skipped", []):
        out.append(f"- skipped {s['peer']}: {s['reason']}")
    out.append("")
    if results["errors"]:
        import json

        out += ["## Errors", ""] + [f"- {json.dumps(e)}" for e in results["errors"]] + [""]
    return "\n".join(out)


def peer_versions() -> Dict[str, Optional[str]]:
    import importlib.metadata as md

    out: Dict[str, Optional[str]] = {}
    for dist in ("mediapipe", "ai-edge-litert", "dlib-bin", "face-recognition-models"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


PRECISION_MARKERS = {"fp32": "o", "fp16": "^", "int8": "v"}
PEER_MARKERS = {"mediapipe": "s", "dlib": "D"}


def plot(results: Dict[str, Any], path: str | os.PathLike) -> Optional[Path]:
    """NME68 (left) and NME51 (right) against e2e ms per face, one point per landmarker, log time axis: colour =
    glsr model or peer, marker = precision (peers: square / diamond), filled = onnxruntime, hollow = MNN."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    cases = results["cases"]
    if not cases:
        return None
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    keys = list(dict.fromkeys(c["model"] if c["kind"] == "glsr" else c["kind"] for c in cases))
    color = {k: colors[i % len(colors)] for i, k in enumerate(keys)}
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.8), sharex=True)
    for ax, metric, title in zip(axes, ("nme68", "nme51"), ("NME68 (all points)", "NME51 (without the jaw)")):
        for c in cases:
            ms = c["latency"]["e2e"]["median_ms"]
            glsr = c["kind"] == "glsr"
            col = color[c["model"] if glsr else c["kind"]]
            marker = PRECISION_MARKERS.get(c.get("precision"), "o") if glsr else PEER_MARKERS.get(c["kind"], "s")
            hollow = glsr and c["backend"] != "onnx"
            label = f"{c['model']} {c['backend']} {c.get('precision')}" if glsr else c["kind"]
            ax.scatter([ms], [c["accuracy"][metric] * 100], marker=marker, s=55, zorder=3, label=label,
                       facecolors="none" if hollow else col, edgecolors=col, linewidths=1.5)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(ScalarFormatter())
        ax.tick_params(axis="x", which="both", labelsize=7)
        ax.set_xlabel(f"ms per face, image + box -> landmarks ({results['config']['threads']} thread, median)")
        ax.set_ylabel(f"{metric.upper()} % (inter-ocular)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    ncol = 1 if len(cases) <= 20 else 2
    fig.legend(handles, labels, fontsize=6.5, loc="center right", ncol=ncol, frameon=False)
    env = results["environment"]
    fig.suptitle(f"300-W {results['config']['split']}: accuracy vs per-face latency - {env['cpu']['model']}, "
                 f"{env['date'][:10]}  (filled = onnxruntime, hollow = MNN; o fp32, ^ fp16, v int8)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.87 if ncol == 1 else 0.77, 1))
    from glsr.bench.report import save_figure

    return save_figure(fig, path)


def write_faces(results: Dict[str, Any], out_dir: str | os.PathLike, name: str = "faces") -> Dict[str, Path]:
    """``<name>.json``, ``<name>.md`` and ``<name>.png`` in ``out_dir``, each written atomically."""
    import json

    from glsr import atomic

    out_dir = Path(out_dir)
    paths = {"json": atomic.write_text(out_dir / f"{name}.json", json.dumps(results, indent=1)),
             "md": atomic.write_text(out_dir / f"{name}.md", markdown(results))}
    png = plot(results, out_dir / f"{name}.png")
    if png is not None:
        paths["png"] = png
    return paths
