"""The models and files a benchmark times: a checkpoint's network or a fresh variant, its artifacts through
:func:`glsr.export.export_model`, and sub-networks exported alone (for the glue measurement)."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from glsr import atomic
from glsr.formats import DEFAULT_OPSET, FORMATS


@contextlib.contextmanager
def private_cwd():
    """Run the block in a fresh temporary working folder (then return and delete it).

    MNN's converter (3.6.1) spills large constants into a fixed-name scratch file, ``.__convert_external_data.bin``,
    in the *current* folder; two conversions running at once in one folder (two test runs, a pipeline beside a
    test run) overwrite each other's and silently produce models with wrong fully-connected weights. Every export
    made here runs in its own folder; paths handed to it must be absolute.
    """
    old = os.getcwd()
    tmp = tempfile.mkdtemp(prefix="glsr-cwd-")
    os.chdir(tmp)
    try:
        yield Path(tmp)
    finally:
        os.chdir(old)
        shutil.rmtree(tmp, ignore_errors=True)


def build_model(variant: str, scheme: str = "68", checkpoint: Optional[str | os.PathLike] = None):
    """The network to benchmark: a checkpoint's, or an untrained variant (speed does not depend on weights)."""
    from glsr.models import create_model, load_checkpoint

    if checkpoint is not None:
        return load_checkpoint(checkpoint)
    return create_model(variant, scheme).eval()


def export_artifacts(model, formats: Sequence[str], out_dir: Path, batch: int, precision: str = "fp32"
                     ) -> Dict[str, Path]:
    """Artifacts of ``model`` for each format: ``.pt`` via :func:`save_checkpoint`, the rest through one
    :func:`glsr.export.export_model` call (one ONNX trace shared by ONNX and MNN; parity is the pipeline's job)."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    out: Dict[str, Path] = {}
    if "pt" in formats:
        from glsr.models import save_checkpoint

        out["pt"] = out_dir / f"{model.cfg.name}.pt"
        save_checkpoint(model, out["pt"])
    fmts = [f for f in formats if f != "pt"]
    if fmts:
        from glsr.export import export_model

        with private_cwd():
            res = export_model(model=model, formats=fmts, precision=precision, batch=batch, out_dir=out_dir,
                               parity=False, name=model.cfg.name)
        by_suffix = {FORMATS[f].suffix: f for f in fmts}
        for p in res.artifacts:
            fmt = next((f for sfx, f in by_suffix.items() if p.name.endswith(sfx)), None)
            if fmt is not None:
                out[fmt] = Path(p)
        missing = [f for f in fmts if f not in out]
        if missing:
            raise RuntimeError(f"export_model wrote {[p.name for p in res.artifacts]}, nothing for {missing}")
    return out


def export_sub_onnx(module, shape: Tuple[int, ...], path: Path, batch: int = 1) -> Path:
    """Export one sub-network alone (same opset and onnxsim pass as :mod:`glsr.export`); written atomically."""
    import onnx
    import torch

    from glsr.export.onnx_export import simplify

    x = torch.zeros((batch,) + tuple(shape[1:]))
    raw = path.with_name(path.stem + ".raw.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (x,), str(raw), input_names=["x"], output_names=["y"],
                          opset_version=DEFAULT_OPSET, dynamo=False)
    proto = simplify(onnx.load(str(raw)))
    raw.unlink()
    return atomic.write_bytes(path, proto.SerializeToString())
