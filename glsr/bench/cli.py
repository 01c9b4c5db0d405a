"""``glsr bench``: variants x backends x threads x batch on this machine, or MNN on an Android phone over adb.

See :mod:`glsr.bench` for what is measured and ``benchmarks/README.md`` for the procedure (including
iOS / Core ML).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_OUT = "bench-results"
"""Default results folder of ``glsr bench``, relative to the current folder."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="speed benchmark: variants x backends x threads x batch (JSON + Markdown + plot)",
                       description="Benchmark G&LSR_w variants on this machine: PyTorch eager, onnxruntime and MNN "
                                   "(plus CUDA when a GPU is present, Core ML on macOS), 1 thread and all cores, "
                                   "network-only and end-to-end, the resampling/STN glue overhead and per-op "
                                   "profiles. With --android, run MNN's benchmark.out on a phone over adb instead.")
    p.add_argument("--variants", nargs="+", default=["small", "medium", "large"],
                   help="variants to benchmark (default: small medium large)")
    p.add_argument("--weights", help="benchmark this checkpoint (its variant) instead of fresh variants: a .pt file "
                                      "or a shipped model's name (small, small-fast, medium)")
    p.add_argument("--scheme", default="68", help="landmark scheme of fresh variants (default 68)")
    p.add_argument("--backends", nargs="+", default=None,
                   help="torch onnx mnn torch-cuda onnx-cuda coreml (default: every one available here)")
    p.add_argument("--threads", type=int, nargs="+", default=None, help="thread counts (default: 1 and all cores)")
    p.add_argument("--batch", type=int, nargs="+", default=[1], help="batch sizes (default 1)")
    p.add_argument("--precision", default="fp32", help="export precision (fp32 | fp16 | int8; default fp32)")
    p.add_argument("--time", type=float, default=3.0, help="time budget per measurement in seconds (default 3)")
    p.add_argument("--no-e2e", action="store_true", help="skip end-to-end (Predictor.predict) timings")
    p.add_argument("--no-glue", action="store_true", help="skip the whole-graph vs sub-networks measurement")
    p.add_argument("--no-profile", action="store_true", help="skip the per-op profiles (with --peers: the int8 "
                                                                "against fp32 ones)")
    p.add_argument("--no-isolate", action="store_true", help="run every case in this process (faster start, "
                                                             "less clean: runtimes' thread pools coexist)")
    p.add_argument("--image", help="photo for end-to-end timings (default: an LFW photo from ../shared if present, "
                                   "else a synthetic image)")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                   help="before each case wait up to SECONDS for other processes to leave the CPU (shared machines)")
    p.add_argument("--retries", type=int, default=0,
                   help="re-run a case that shared the CPU with other processes (> 0.25 cores) up to N times")
    p.add_argument("--merge", nargs="+", metavar="RUN.json",
                   help="merge earlier runs' JSON (plus this run unless --no-run): per case the least disturbed record")
    p.add_argument("--no-run", action="store_true", help="with --merge: only merge, measure nothing")
    p.add_argument("--quick", action="store_true", help="tiny budgets (smoke test: ~0.2 s per measurement)")
    p.add_argument("--work", help="keep the exported artifacts in this folder")
    p.add_argument("-o", "--out", default=None,
                   help=f"results folder (default: {DEFAULT_OUT}/<machine> under the current folder, e.g. "
                        f"{DEFAULT_OUT}/amd-epyc-avx2-2c; Android runs: {DEFAULT_OUT}). glsr never writes into its own "
                        "checkout: to record results in benchmarks/results, give that folder with -o")
    p.add_argument("--name", default="bench", help="file stem of the results (default: bench)")
    f = p.add_argument_group("per-face comparison with peers (glsr.bench.latency; replaces the variant matrix)")
    f.add_argument("--peers", metavar="LIST", help="peers to time and score beside glsr, comma-separated "
                                                   "(mediapipe,dlib; 'none'); a missing one is skipped with the "
                                                   "reason. Install: pip install -e '.[peers]' && pip install "
                                                   "--no-deps mediapipe==0.10.14. --precision takes a comma list "
                                                   "here (fp32,fp16,int8); with fp32 and int8 the report adds a "
                                                   "section 'int8 against fp32': per backend the int8 / fp32 time "
                                                   "ratio, the NME change, a verdict naming the CPU's int8 "
                                                   "instructions and, where int8 is not faster, a per-op-type "
                                                   "profile of both (after the timings; --no-profile skips it)")
    f.add_argument("--models", nargs="+", metavar="NAME|FILE",
                   help="glsr models for the per-face comparison: shipped names (small, small-fast, medium) or .pt "
                        "files (default with --peers: the shipped models present)")
    f.add_argument("--input-sizes", nargs="+", metavar="native|PX", default=["native"],
                   help="input crop sizes of each glsr model: 'native' (its own) and/or pixels, the same weights "
                        "re-cropped (e.g. native 256; default native)")
    f.add_argument("--modes", default="graph", metavar="LIST",
                   help="glsr runtime modes, comma-separated: graph (the single-graph artifact) and/or hostwarp "
                        "(glsr export --host-warp: the host warps every network input from the photo, the "
                        "networks run as separate graphs; fp32 / fp16 only). Default graph")
    f.add_argument("--faces", help="68-point faces to score and time on (default: 300w:../shared/data/300w)")
    f.add_argument("--split", default="val", help="split of --faces (default val)")
    f.add_argument("--timing-faces", type=int, default=16, help="faces cycled through for timing (default 16)")
    a = p.add_argument_group("Android (MNN benchmark.out over adb)")
    a.add_argument("--android", metavar="BENCHMARK_OUT", help="MNN's benchmark.out built for the phone")
    a.add_argument("--android-lib", action="append", default=[], help="shared library to push with it (libMNN.so; "
                                                                      "repeatable)")
    a.add_argument("--adb", default="adb", help="adb executable")
    a.add_argument("--serial", help="device serial (adb -s)")
    a.add_argument("--android-threads", type=int, default=4)
    a.add_argument("--android-precision", type=int, default=2, help="MNN precision mode: 0 normal, 1 high, 2 low")
    a.add_argument("--android-loop", type=int, default=50)
    a.add_argument("--mnn", nargs="+", help="benchmark these .mnn files on the phone (default: export --variants)")
    p.set_defaults(func=_bench)


def default_out(out: str | None, android: bool = False) -> Path:
    """``-o``, else ``bench-results/<machine>`` (Android: ``bench-results``) under the current folder: a run never
    lands in the checkout's committed ``benchmarks/results`` unless ``-o`` says so."""
    if out:
        return Path(out)
    if android:
        return Path(DEFAULT_OUT)
    from glsr.bench.machine import machine_slug

    return Path(DEFAULT_OUT) / machine_slug()


def default_image() -> str | None:
    from glsr.paths import SHARED

    lfw = SHARED / "faces" / "lfw"
    photos = sorted(lfw.glob("*.jpg")) if lfw.is_dir() else []
    return str(photos[0]) if photos else None


def _bench(args: argparse.Namespace) -> int:
    from glsr import bench

    from glsr.formats import PRECISIONS

    unknown = [t for t in str(args.precision).split(",") if t.strip().lower() not in PRECISIONS]
    if unknown:
        raise ValueError(f"--precision {','.join(unknown)}: unknown precision; choose from {', '.join(PRECISIONS)}")
    out = default_out(args.out, args.android)
    if args.weights:
        from glsr.models.checkpoint import read_checkpoint
        from glsr.shipped import resolve_weights

        args.weights = str(resolve_weights(args.weights))
        args.variants = [read_checkpoint(args.weights)["config"]["name"]]
    if args.android:
        return _android(args, out)
    if args.peers is not None or args.models:
        return _faces(args, out)
    cfg = bench.BenchConfig(
        variants=args.variants, backends=args.backends, threads=args.threads, batches=args.batch,
        budget_s=0.2 if args.quick else args.time, scheme=args.scheme, checkpoint=args.weights,
        precision=args.precision, end_to_end=not args.no_e2e, glue=not args.no_glue,
        glue_budget_s=0.1 if args.quick else max(0.5, args.time / 2), profile=not args.no_profile,
        isolate=not args.no_isolate, image=args.image or default_image(), work=args.work,
        wait_idle_s=args.wait_idle, retries=args.retries)
    runs = [json.loads(Path(p).read_text()) for p in args.merge or []]
    if not (args.merge and args.no_run):
        runs.append(bench.run_benchmark(cfg))
    results = bench.merge_results(runs) if len(runs) > 1 else runs[0]
    paths = bench.write_results(results, out, args.name)
    print(bench.markdown(results))
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 1 if results["errors"] and not results["cases"] else 0


def _faces(args: argparse.Namespace, out: Path) -> int:
    """The per-face comparison (glsr models x backends x precisions, and peers) -> ``faces.{json,md,png}``."""
    from glsr.bench import latency
    from glsr.bench.peers import parse_peers

    peers = parse_peers(args.peers)
    models = args.models or latency.shipped_present()
    if not models and not peers:
        raise ValueError("nothing to compare: no shipped model is present here and no --peers; give --models FILE")
    precisions = [p for item in str(args.precision).split(",") for p in [item.strip()] if p]
    modes = [m.strip().lower().replace("-", "") for m in str(args.modes).split(",") if m.strip()]
    bad = [m for m in modes if m not in latency.MODES]
    if bad or not modes:
        raise ValueError(f"--modes: {', '.join(bad) or repr(args.modes)} unknown; choose from {', '.join(latency.MODES)}")
    bad = [b for b in args.backends or () if b not in latency.GLSR_BACKENDS]
    if bad:
        raise ValueError(f"--backends {' '.join(bad)}: the per-face comparison (--models / --peers) runs "
                         f"{' and '.join(latency.GLSR_BACKENDS)}; choose from those")
    cfg = latency.FacesConfig(modes=modes,
        models=models, input_sizes=parse_input_sizes(args.input_sizes), peers=peers,
        backends=args.backends or latency.GLSR_BACKENDS, precisions=precisions,
        threads=(args.threads or [1])[0], budget_s=0.3 if args.quick else args.time,
        faces=args.faces or latency.DEFAULT_FACES, split=args.split, limit=8 if args.quick else None,
        timing_faces=args.timing_faces, isolate=not args.no_isolate, wait_idle_s=args.wait_idle, work=args.work,
        profile=not args.no_profile, profile_runs={"onnx": 20, "mnn": 4} if args.quick else None)
    results = latency.run_faces(cfg)
    name = "faces" if args.name == "bench" else args.name
    paths = latency.write_faces(results, out, name)
    print(latency.markdown(results))
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 1 if results["errors"] and not results["cases"] else 0


def parse_input_sizes(items) -> list:
    """``["native", "256"]`` -> ``[None, 256]``; anything else is a one-line ``ValueError``."""
    out = []
    for item in items:
        for text in str(item).split(","):
            text = text.strip().lower()
            if not text:
                continue
            if text == "native":
                out.append(None)
            elif text.isdigit() and int(text) >= 16:
                out.append(int(text))
            else:
                raise ValueError(f"--input-sizes: {text!r} is neither 'native' nor a size in pixels >= 16")
    return out or [None]


def _android(args: argparse.Namespace, out: Path) -> int:
    import tempfile

    from glsr import atomic
    from glsr.bench.android import Adb, AndroidTarget, android_markdown

    target = AndroidTarget(args.android, args.android_lib, Adb(args.adb, args.serial))
    models = args.mnn
    if not models:
        from glsr.bench.artifacts import build_model, export_artifacts

        work = Path(args.work or tempfile.mkdtemp(prefix="glsr-android-"))
        models = [str(export_artifacts(build_model(v, args.scheme, args.weights), ["mnn"], work / v, 1,
                                       args.precision)["mnn"]) for v in args.variants]
    results = target.run(models, loop=args.android_loop, threads=args.android_threads,
                         precision=args.android_precision)
    md = android_markdown(results)
    atomic.write_text(out / f"{args.name}-android.json", json.dumps([r.to_dict() for r in results], indent=2))
    atomic.write_text(out / f"{args.name}-android.md", md)
    print(md)
    return 0
