"""``export_model``: one entry for every format; all-or-nothing writes; parity before anything is moved into place.

Every artifact is written into a hidden scratch folder inside the output folder (``.glsr-export-*``, removed
afterwards; one a killed export left behind is removed by the next export into that folder) and checked there by
parity (:mod:`glsr.export.parity`). Only when every requested format converted are the artifacts moved into place
(``os.replace``): those that passed parity (or cannot run on this OS) under their own names, one that failed as
``<name>.parity-failed`` (kept for inspection, never loaded by glsr); then each artifact's JSON report,
``<artifact name>.parity.json``, is written atomically beside it. A failing converter leaves nothing behind. One
export at a time writes a given file stem into a folder (a lock, :func:`glsr.atomic.exclusive`).
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from glsr import atomic
from glsr.artifacts import artifact_size
from glsr.export.job import ExportJob
from glsr.formats import ExportOptions, FormatSpec, parse_batch, plan_formats
from glsr.metadata import ArtifactMetadata


@dataclass(frozen=True)
class ExportResult:
    """Written artifact paths, the parity report (``None`` with ``parity=False``) and what was measured."""

    artifacts: Tuple[Path, ...]
    report: Optional["ParityReport"] = None  # noqa: F821
    report_path: Optional[Path] = None
    skipped: Tuple[Tuple[str, str], ...] = ()
    seconds: Dict[str, float] = field(default_factory=dict)
    sizes: Dict[str, int] = field(default_factory=dict)
    report_paths: Tuple[Path, ...] = ()
    """One report per artifact (``report_path`` is the first)."""
    failed: Tuple[Path, ...] = ()
    """Artifacts that failed parity, kept as ``<name>.parity-failed`` (not in ``artifacts``)."""
    checkpoint: Optional[Path] = None
    """The checkpoint written beside the artifacts of a ``variant`` export (for ``glsr parity`` later)."""
    notes: Tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        """No artifact failed parity. Artifacts that cannot run here (Core ML off macOS) do not fail the export
        (it wrote what was asked and says they were not checked); their reports say ``not verified``."""
        return self.report is None or not self.report.counts()["failed"]

    def summary_lines(self) -> List[str]:
        """What the export did, a line each: its notes, the formats it skipped and why, the artifacts it wrote
        with their sizes (``glsr export`` prints them, ``glsr pipeline`` logs them)."""
        return ([f"note: {note}" for note in self.notes] + [f"skipped {kind}: {why}" for kind, why in self.skipped]
                + [f"wrote {p} ({self.sizes[p.name] / 1e6:.2f} MB)" for p in self.artifacts])


def _resolve_model(weights, variant: Optional[str], scheme: str, model):
    """``(model, source description, default file stem)`` from exactly one of weights / variant / model."""
    given = [x is not None for x in (weights, variant, model)]
    if sum(given) != 1:
        raise ValueError("give exactly one of --weights W.pt or --variant NAME (or model= in Python)")
    if model is not None:
        return model.eval(), f"in-memory {model.cfg.name}", f"{model.cfg.name}-{model.scheme.name}"
    if weights is not None:
        from glsr.models import load_checkpoint

        from glsr.shipped import resolve_model

        p = resolve_model(weights)
        return load_checkpoint(p), str(p), p.stem
    import torch

    from glsr.models import create_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        m = create_model(variant, scheme)
    return m.eval(), f"variant {variant} scheme {m.scheme.name}, fresh initialization (seed 0)", \
        f"{variant}-{m.scheme.name}"


def artifact_name(stem: str, spec: Optional[FormatSpec], opts: ExportOptions) -> str:
    """``<stem>_<precision>[_b<N>|_dynamic][_<sampler if not the format default>][_image][_hostwarp]<suffix>``; with
    ``spec=None`` the shared part, used for the parity report's name."""
    parts = [stem, opts.precision]
    if opts.batch != "1":
        parts.append("dynamic" if opts.batch == "dynamic" else f"b{opts.batch}")
    if spec is not None and opts.sampler_for(spec) != spec.default_sampler:
        parts.append(opts.sampler_for(spec))
    if opts.image_input:
        parts.append("image")
    if opts.host_warp:
        parts.append("hostwarp")
    return "_".join(parts) + (spec.suffix if spec is not None else "")


SCRATCH_PREFIX = ".glsr-export-"
FAILED_SUFFIX = ".parity-failed"
REPORT_SUFFIX = ".parity.json"


def calibration_faces(scheme: str, opts: ExportOptions, allow_fewer: bool = False,
                      notes: Optional[List[str]] = None):
    """Faces for int8 calibration: ``--calib DIR`` if given (its last readable images), else procedural faces.

    Unreadable images (undecodable, truncated) are skipped and counted in ``notes``; fewer usable images than
    ``opts.calib_count`` is a ``ValueError`` naming the folder unless ``allow_fewer``.
    """
    from glsr.export.parity import IMAGE_SUFFIXES, folder_face, procedural_faces

    if opts.calib is None:
        return procedural_faces(scheme, opts.calib_count, seed=0, split="train")
    folder = Path(opts.calib)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    faces, bad = [], []
    # the parity set reads a folder's first images; calibration takes the last ones so they do not overlap
    for f in reversed(files):
        if len(faces) == opts.calib_count:
            break
        face, problem = folder_face(f, "calib")
        if face is None:
            bad.append(f"{f.name}: {problem}")
        else:
            faces.append(face)
    faces.reverse()
    skipped = (f"{len(bad)} unreadable image(s) skipped ({'; '.join(bad[:4])}{'; ...' if len(bad) > 4 else ''})"
               if bad else "")
    if not faces:
        raise ValueError(f"--calib {folder} holds no readable images ({', '.join(IMAGE_SUFFIXES)})"
                         + (f": {skipped}" if skipped else ""))
    if len(faces) < opts.calib_count and not allow_fewer:
        raise ValueError(f"--calib {folder}: {len(faces)} usable image(s), {opts.calib_count} requested"
                         + (f"; {skipped}" if skipped else "") + f"; add images, lower --calib-count to "
                         f"{len(faces)}, or pass --calib-allow-fewer")
    if notes is not None:
        if skipped:
            notes.append(f"--calib {folder}: {skipped}")
        if len(faces) < opts.calib_count:
            notes.append(f"--calib {folder}: calibrating on {len(faces)} image(s), {opts.calib_count} requested")
    return faces


def calibration_crops(faces, meta: ArtifactMetadata) -> Tuple[np.ndarray, np.ndarray]:
    """``(normalized float crops [K,3,S,S], BGR uint8 crops [K,S,S,3])`` with the artifact's pre-processing."""
    from glsr import geometry as geo
    from glsr.imaging import normalize

    floats, raw = [], []
    for f in faces:
        crop, _ = geo.crop_face(f.image, f.box, meta.input_size, meta.crop_enlarge)
        raw.append(crop)
        floats.append(normalize(crop, meta))
    return np.stack(floats), np.stack(raw)




def _relocated(report, where: Dict[str, Path]):
    """The parity report with each artifact's scratch path replaced by where it was moved."""
    from dataclasses import replace

    from glsr.export.parity import ParityReport

    return ParityReport(report.reference, report.inputs,
                        tuple(replace(r, artifact=str(where.get(r.artifact, r.artifact))) for r in report.results),
                        report.allow_unverified)


def written_by_glsr(path: Path, spec: Optional[FormatSpec], folder: bool) -> bool:
    """Whether ``path`` is an output an earlier ``glsr export`` wrote, so this export may replace it: an artifact
    of the same kind (``folder``: a ``.mlpackage``) whose glsr metadata reads back, a parity report of glsr's
    schema, or a checkpoint of glsr's format. Anything else is the user's, and never replaced or removed."""
    if path.is_symlink() or path.is_dir() != folder:
        return False
    try:
        if folder and path.name.endswith(FAILED_SUFFIX):  # Core ML reads packages by their suffix only
            return (path / "Manifest.json").is_file()
        if spec is not None:
            spec.read_metadata(path, verify=False)  # an older glsr's export (no digest) is still ours to replace
            return True
        if path.name.endswith(REPORT_SUFFIX):
            return str(json.loads(path.read_text()).get("schema", "")).startswith("glsr-parity/")
        from glsr.models.checkpoint import read_checkpoint

        read_checkpoint(path)
        return True
    except Exception:  # noqa: BLE001 - unreadable as a glsr output: not ours
        return False


def check_targets(out: Path, targets: Sequence[Tuple[Path, Optional[FormatSpec]]]) -> None:
    """``ValueError`` before anything is converted when a path this export would write (``out / name``, with the
    format that reads it; ``None`` for reports and checkpoints) exists and is not an earlier glsr output."""
    for path, spec in targets:
        if not (path.exists() or path.is_symlink()):
            continue
        folder = spec is not None and spec.suffix == ".mlpackage"
        if not written_by_glsr(path, spec, folder):
            kind = "a symbolic link" if path.is_symlink() else "a folder" if path.is_dir() else "a file"
            raise ValueError(f"-o {out}: {path.name} exists there ({kind} not written by `glsr export`); glsr never "
                             "replaces or removes what it did not create: move it away, or choose another -o or "
                             "--name")


def _move_into_place(src: Path, dst: Path) -> None:
    """Move a finished output over ``dst`` (an earlier glsr output, :func:`check_targets`)."""
    if dst.is_dir() and not dst.is_symlink():
        old = dst.with_name(dst.name + ".old-" + str(os.getpid()))
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def write_json_atomic(path: Path, data: dict) -> Path:
    from glsr.export.parity import _json_default

    return atomic.write_text(path, json.dumps(data, indent=1, default=_json_default) + "\n")


def export_model(weights: Optional[str | os.PathLike] = None, *, variant: Optional[str] = None,
                 scheme: str = "68", model=None, formats: str | Sequence[str] = "onnx", precision: str = "fp32",
                 calib: Optional[str | os.PathLike] = None, sampler: Optional[str] = None, batch: int | str = 1,
                 out_dir: str | os.PathLike = ".", image_input: bool = False, opset: int = 17,
                 simplify: bool = True, parity: bool = True, parity_inputs=None, threads: Optional[int] = None,
                 name: Optional[str] = None, calib_count: int = 32, calib_allow_fewer: bool = False,
                 host_warp: bool = False) -> ExportResult:
    """Export a checkpoint (``weights``), a freshly initialized ``variant``, or an in-memory ``model``.

    Returns the written artifact paths and the parity report. Options a requested format cannot honour, weights
    holding NaN / infinity, an output path that is a file, or another export writing the same stem into the same
    folder raise ``ValueError`` before anything is written; a failing converter raises (an ``ExportError``) and
    writes nothing; an artifact failing parity is kept only as ``<name>.parity-failed``. A ``variant`` export also
    writes its checkpoint (``<stem>.pt``) so that ``glsr parity`` can re-check the artifacts later.
    ``host_warp`` writes host-warp artifacts (ONNX / MNN; separate graphs, the host does the warps:
    :mod:`glsr.models.hostwarp`) instead of the single graph.
    """
    from glsr.models.checkpoint import check_finite_weights

    opts = ExportOptions(precision=precision, sampler=sampler, batch=str(batch).strip().lower(),
                         calib=None if calib is None else str(calib), image_input=image_input, opset=opset,
                         simplify=simplify, calib_count=calib_count, host_warp=bool(host_warp))
    plan = plan_formats(formats, opts)
    opts = ExportOptions(**{**opts.to_dict(), "batch": parse_batch(opts.batch)})
    if name is not None and (not name or name != Path(name).name or name.startswith(".") or "\\" in name):
        raise ValueError(f"--name {name!r}: give a plain file stem (no folder, not starting with '.'); choose the "
                         "folder with -o")
    full, source, stem = _resolve_model(weights, variant, scheme, model)
    stem = name or stem
    model = full.without_inert_stages()  # a stage that cannot change the output is neither exported nor run
    dropped = [s for s in full.stages if s not in model.stages]
    pre_notes = [f"stages {', '.join(dropped)} not exported: the local regressors' last layers are exactly zero, "
                 "so they cannot change the output"] if dropped else []
    if opts.host_warp:
        from glsr.models.hostwarp import check_host_warp

        check_host_warp(model)
    check_finite_weights(model.state_dict(), source)  # a NaN model is never exported
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"-o {out} is a file, not a folder; give a folder for the artifacts")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(out)) from None
    with atomic.exclusive(out / f"{SCRATCH_PREFIX}{stem}.lock", f"export target {out / stem}*",
                          "wait for that export to finish, or choose another -o or --name"):
        atomic.remove_stale_scratch(out, SCRATCH_PREFIX)
        targets: List[Tuple[Path, Optional[FormatSpec]]] = [(out / f"{stem}.pt", None)] if variant else []
        for spec in plan.formats:
            name = artifact_name(stem, spec, opts)
            targets += [(out / name, spec), (out / (name + FAILED_SUFFIX), spec), (out / (name + REPORT_SUFFIX), None)]
        check_targets(out, targets)
        notes: List[str] = list(pre_notes)
        faces = calibration_faces(model.scheme.name, opts, calib_allow_fewer, notes) \
            if opts.precision == "int8" else None
        with atomic.scratch_dir(out, SCRATCH_PREFIX) as tmp:
            return _export_into(model, source, stem, variant, plan, opts, faces, out, tmp, parity, parity_inputs,
                                threads, tuple(notes), full)


def _export_into(model, source: str, stem: str, variant: Optional[str], plan, opts: ExportOptions, faces,
                 out: Path, tmp: Path, parity: bool, parity_inputs, threads: Optional[int],
                 notes: Tuple[str, ...], full=None) -> ExportResult:
    """Convert every planned format into the scratch folder ``tmp``, check parity there, then move into ``out``.
    ``model`` is what is exported (inert stages dropped); ``full`` the model as given (saved for a variant)."""
    seconds: Dict[str, float] = {}
    sizes: Dict[str, int] = {}
    built: List[Tuple[Path, Path]] = []
    work = tmp / "work"
    work.mkdir()
    fp32_onnx: Dict[str, Path] = {}
    for spec in plan.formats:
        t0 = time.perf_counter()
        sampler_name = opts.sampler_for(spec)
        meta = _metadata(model, spec, opts, source)
        target = tmp / artifact_name(stem, spec, opts)
        calib_float, calib_raw = calibration_crops(faces, meta) if faces is not None else (None, None)
        if spec.via_onnx and sampler_name not in fp32_onnx:
            from glsr.export.onnx_export import export_fp32

            path = work / f"{sampler_name}.fp32.onnx"
            export_fp32(model, path, meta, opts.batch, opts.opset, sampler_name, opts.simplify, opts.host_warp)
            fp32_onnx[sampler_name] = path
        writer(spec)(ExportJob(model, spec, target, meta, opts, work, fp32_onnx.get(sampler_name) if spec.via_onnx
                               else None, calib_float, calib_raw))
        seconds[spec.name] = time.perf_counter() - t0
        built.append((target, out / target.name))
    for src, _ in built:
        sizes[src.name] = artifact_size(src)
    checkpoint = None
    if variant is not None:  # the untrained weights, so `glsr parity --weights` can re-check these artifacts later
        from glsr.models.checkpoint import save_checkpoint

        save_checkpoint(full if full is not None else model, tmp / f"{stem}.pt", extra={"source": source})
        checkpoint = out / f"{stem}.pt"
    report = None
    if parity:
        from glsr.export.parity import check_artifacts

        report = check_artifacts(model, [src for src, _ in built], parity_inputs, threads=threads,
                                 reference_name=str(checkpoint) if checkpoint else source,
                                 precisions=(opts.precision,))  # the tolerance of what the user asked for
    status = {Path(r.artifact).name: r for r in report.results} if report else {}
    placed: Dict[str, Path] = {}
    for src, dst in built:
        ok = src.name not in status or status[src.name].ok
        placed[str(src)] = dst if ok else dst.with_name(dst.name + FAILED_SUFFIX)
    if checkpoint is not None:
        _move_into_place(tmp / checkpoint.name, checkpoint)
    for src, _ in built:
        _move_into_place(src, placed[str(src)])
    report_paths: List[Path] = []
    if report is not None:
        report = _relocated(report, placed)
        for r, spec in zip(report.results, plan.formats):
            one = type(report)(report.reference, report.inputs, (r,), report.allow_unverified)
            data = one.to_dict()
            name = Path(r.artifact).name
            data["export"] = {"source": source, "options": opts.to_dict(), "skipped": [list(s) for s in plan.skipped],
                              "checkpoint": str(checkpoint) if checkpoint else None, "notes": list(notes),
                              "artifacts": {name: {"seconds": seconds[spec.name],
                                                   "bytes": sizes[name.replace(FAILED_SUFFIX, "")]}}}
            target = out / (artifact_name(stem, spec, opts) + REPORT_SUFFIX)
            report_paths.append(write_json_atomic(target, data))
    artifacts = tuple(d for d in placed.values() if not d.name.endswith(FAILED_SUFFIX))
    failed = tuple(d for d in placed.values() if d.name.endswith(FAILED_SUFFIX))
    return ExportResult(artifacts, report, report_paths[0] if report_paths else None, plan.skipped, seconds, sizes,
                        tuple(report_paths), failed, checkpoint, notes)


def writer(spec: FormatSpec):
    """The export function a format record names (``"module:function"``)."""
    module, _, name = spec.writer.partition(":")
    return getattr(importlib.import_module(module), name)


def _metadata(model, spec: FormatSpec, opts: ExportOptions, source: str) -> ArtifactMetadata:
    from glsr.runtime.processing import metadata_for

    options = {k: v for k, v in opts.to_dict().items() if k != "calib_count" or opts.precision == "int8"}
    options["source"] = source
    extra = {}
    if opts.host_warp:
        from glsr.models.hostwarp import host_warp_spec

        hw = host_warp_spec(model)
        extra = {"host_warp": hw, "input_name": ",".join(n for i, _ in hw["graphs"].values() for n in i),
                 "output_name": ",".join(n for _, o in hw["graphs"].values() for n in o)}
    from glsr.models.checkpoint import weights_sha256

    return metadata_for(model, format=spec.name, precision=opts.precision, sampler=opts.sampler_for(spec),
                        batch=opts.batch, export_options=options, weights_sha256=weights_sha256(model.state_dict()),
                        **extra)
