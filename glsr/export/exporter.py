"""``export_model``: one entry for every format; all-or-nothing writes; parity after every export.

Every artifact is written into a hidden temporary folder inside the output folder and verified there; only when
all requested formats converted are they moved into place (``os.replace``), so a failing converter leaves no
partial artifact. Parity (:mod:`glsr.export.parity`) then runs on the artifacts in place and its JSON report is
written atomically beside them.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from glsr.export.formats import ExportOptions, FormatSpec, plan_formats
from glsr.metadata import ArtifactMetadata
from glsr import atomic


@dataclass(frozen=True)
class ExportResult:
    """Written artifact paths, the parity report (``None`` with ``parity=False``) and what was measured."""

    artifacts: Tuple[Path, ...]
    report: Optional["ParityReport"] = None  # noqa: F821
    report_path: Optional[Path] = None
    skipped: Tuple[Tuple[str, str], ...] = ()
    seconds: Dict[str, float] = field(default_factory=dict)
    sizes: Dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.report is None or self.report.passed


def _resolve_model(weights, variant: Optional[str], scheme: str, model):
    """``(model, source description, default file stem)`` from exactly one of weights / variant / model."""
    given = [x is not None for x in (weights, variant, model)]
    if sum(given) != 1:
        raise ValueError("give exactly one of --weights W.pt or --variant NAME (or model= in Python)")
    if model is not None:
        return model.eval(), f"in-memory {model.cfg.name}", f"{model.cfg.name}-{model.scheme.name}"
    if weights is not None:
        from glsr.models import load_checkpoint

        p = Path(weights)
        return load_checkpoint(p), str(p), p.stem
    import torch

    from glsr.models import create_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        m = create_model(variant, scheme)
    return m.eval(), f"variant {variant} scheme {m.scheme.name}, fresh initialization (seed 0)", \
        f"{variant}-{m.scheme.name}"


def artifact_name(stem: str, spec: Optional[FormatSpec], opts: ExportOptions) -> str:
    """``<stem>_<precision>[_b<N>|_dynamic][_<sampler if not the format default>][_image]<suffix>``; with
    ``spec=None`` the shared part, used for the parity report's name."""
    parts = [stem, opts.precision]
    if opts.batch != "1":
        parts.append("dynamic" if opts.batch == "dynamic" else f"b{opts.batch}")
    if spec is not None and opts.sampler_for(spec) != spec.default_sampler:
        parts.append(opts.sampler_for(spec))
    if opts.image_input:
        parts.append("image")
    return "_".join(parts) + (spec.suffix if spec is not None else "")


def calibration_faces(scheme: str, opts: ExportOptions):
    """Faces for int8 calibration: ``--calib DIR`` if given (its last images), else procedural faces."""
    from glsr.export.parity import image_folder_faces, procedural_faces

    if opts.calib is not None:
        folder = Path(opts.calib)
        n_files = sum(1 for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
        # the parity set reads a folder's first images; calibration takes the last ones so they do not overlap
        faces = image_folder_faces(folder, opts.calib_count, "calib", offset=max(0, n_files - opts.calib_count))
        if not faces:
            raise ValueError(f"--calib {folder} holds no readable images (.jpg, .png, .bmp)")
        return faces
    faces = procedural_faces(scheme, opts.calib_count, seed=0, split="train")
    if faces is None:
        raise ValueError("int8 needs calibration faces: procedural faces (glsr.train.procedural) are not available "
                         "here, so pass --calib DIR with face photos (e.g. ../shared/faces/lfw; a .rct box file "
                         "beside an image is used, else a centred box)")
    return faces


def calibration_crops(faces, meta: ArtifactMetadata) -> Tuple[np.ndarray, np.ndarray]:
    """``(normalized float crops [K,3,S,S], BGR uint8 crops [K,S,S,3])`` with the artifact's pre-processing."""
    from glsr import geometry as geo
    from glsr.runtime.processing import normalize

    floats, raw = [], []
    for f in faces:
        crop, _ = geo.crop_face(f.image, f.box, meta.input_size, meta.crop_enlarge)
        raw.append(crop)
        floats.append(normalize(crop, meta))
    return np.stack(floats), np.stack(raw)


def _size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size


def _move_into_place(src: Path, dst: Path) -> None:
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
                 name: Optional[str] = None, calib_count: int = 32) -> ExportResult:
    """Export a checkpoint (``weights``), a freshly initialized ``variant``, or an in-memory ``model``.

    Returns the written artifact paths and the parity report. Options a requested format cannot honour raise
    ``ValueError`` before anything is written; a failing converter raises (an ``ExportError``) and writes nothing.
    """
    from glsr.export.formats import parse_batch

    opts = ExportOptions(precision=precision, sampler=sampler, batch=str(batch).strip().lower(),
                         calib=None if calib is None else str(calib), image_input=image_input, opset=opset,
                         simplify=simplify, calib_count=calib_count)
    plan = plan_formats(formats, opts)
    opts = ExportOptions(**{**opts.to_dict(), "batch": parse_batch(opts.batch)})
    model, source, stem = _resolve_model(weights, variant, scheme, model)
    stem = name or stem
    faces = calibration_faces(model.scheme.name, opts) if opts.precision == "int8" else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".glsr-export-", dir=out))
    seconds: Dict[str, float] = {}
    sizes: Dict[str, int] = {}
    built: List[Tuple[Path, Path]] = []
    try:
        work = tmp / "work"
        work.mkdir()
        fp32_onnx: Dict[str, Path] = {}
        for spec in plan.formats:
            t0 = time.perf_counter()
            sampler_name = opts.sampler_for(spec)
            meta = _metadata(model, spec, opts, source)
            target = tmp / artifact_name(stem, spec, opts)
            calib_float, calib_raw = calibration_crops(faces, meta) if faces is not None else (None, None)
            if spec.family in ("onnx", "mnn") and sampler_name not in fp32_onnx:
                from glsr.export.onnx_export import export_fp32

                path = work / f"{sampler_name}.fp32.onnx"
                export_fp32(model, path, meta, opts.batch, opts.opset, sampler_name, opts.simplify)
                fp32_onnx[sampler_name] = path
            if spec.name == "onnx":
                from glsr.export.onnx_export import export_onnx

                export_onnx(fp32_onnx[sampler_name], target, meta, opts.precision, opts.batch, calib_float)
            elif spec.name == "mnn":
                from glsr.export.mnn_export import export_mnn

                export_mnn(fp32_onnx[sampler_name], target, meta, opts.precision, calib_raw, work)
            else:
                from glsr.export.coreml_export import export_coreml, require_ok

                export_coreml(model, target, spec.name, meta, opts.precision, opts.batch, sampler_name,
                              opts.image_input)
                require_ok(target, spec.name)
            seconds[spec.name] = time.perf_counter() - t0
            built.append((target, out / target.name))
        for src, dst in built:
            _move_into_place(src, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    artifacts = tuple(dst for _, dst in built)
    for p in artifacts:
        sizes[p.name] = _size(p)
    if not parity:
        return ExportResult(artifacts, None, None, plan.skipped, seconds, sizes)
    from glsr.export.parity import check_artifacts

    report = check_artifacts(model, artifacts, parity_inputs, threads=threads, reference_name=source)
    data = report.to_dict()
    data["export"] = {"source": source, "options": opts.to_dict(), "skipped": [list(s) for s in plan.skipped],
                      "artifacts": {p.name: {"seconds": seconds[spec.name], "bytes": sizes[p.name]}
                                    for p, spec in zip(artifacts, plan.formats)}}
    report_path = write_json_atomic(out / (artifact_name(stem, None, opts) + ".parity.json"), data)
    return ExportResult(artifacts, report, report_path, plan.skipped, seconds, sizes)


def _metadata(model, spec: FormatSpec, opts: ExportOptions, source: str) -> ArtifactMetadata:
    from glsr.runtime.processing import metadata_for

    options = {k: v for k, v in opts.to_dict().items() if k != "calib_count" or opts.precision == "int8"}
    options["source"] = source
    return metadata_for(model, format=spec.name, precision=opts.precision, sampler=opts.sampler_for(spec),
                        batch=opts.batch, export_options=options)
