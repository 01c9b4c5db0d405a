"""Batch order: every format and precision that takes several faces per call (and the checkpoint itself, single
graph and host-warp mode) returns face i's landmarks in slot i.

The faces of a batch differ (procedural faces of different poses) and the shared ``model`` fixture's output
depends on its input, so each slot is compared with the single-face result of the same face: a batch returned
reversed, rotated or with one slot copied fails. Each test first checks that the single-face results are far
apart (``SEPARATION`` times the tolerance), so a model that predicts the same points for every face cannot make
the test pass by accident. Core ML executes on macOS only: elsewhere its batched spec is checked (shapes), and the
per-slot comparison runs on a Mac.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from glsr.export.parity import TOLERANCES, procedural_faces
from glsr.runtime.backends import load_backend
from glsr.runtime.predictor import Predictor
from glsr.runtime.processing import crop_batch, metadata_for

pytestmark = pytest.mark.usefixtures("flush_denormals")

FACES = 3               # odd, so that a reversed batch moves every slot but the middle one
SEPARATION = 20         # single-face results at least this many tolerances apart (measured: >= 3.5 px, >= 350x)
SAME_RUN_PX = 0.01      # a slot vs the same face alone through the same artifact: measured <= 0.0001 px ...
INT8_MNN_PX = 0.1       # ... but MNN's int8 kernels round differently by batch size: measured 0.052 px

# (format, options): every export that batches. Static batches are run at exactly their size. Parity-checked
# exports (int8 on a perturbed model has no meaningful NME tolerance) are the ones the export tests use too.
CASES = {
    "onnx-fp32-dynamic": ("onnx", dict(parity=True, batch="dynamic")),
    "onnx-fp16-dynamic": ("onnx", dict(parity=True, batch="dynamic", precision="fp16")),
    "onnx-int8-dynamic": ("onnx", dict(batch="dynamic", precision="int8", calib_count=4)),
    "onnx-fp32-b3-gather": ("onnx", dict(parity=True, batch=FACES, sampler="gather")),
    "mnn-fp32-dynamic": ("mnn", dict(parity=True, batch="dynamic")),
    "mnn-fp16-dynamic": ("mnn", dict(parity=True, batch="dynamic", precision="fp16")),
    "mnn-int8-dynamic": ("mnn", dict(batch="dynamic", precision="int8", calib_count=4)),
    "mnn-fp32-b3": ("mnn", dict(parity=True, batch=FACES)),
}
HOST_WARP = {"onnx-hostwarp": "onnx", "mnn-hostwarp": "mnn"}
TORCH = {"torch": False, "torch-hostwarp": True}   # the checkpoint itself, single graph and host-warp mode


@pytest.fixture(scope="module")
def faces():
    """``FACES`` different procedural faces side by side on one canvas, and their boxes on it."""
    samples = procedural_faces("68", FACES)
    canvas = np.concatenate([s.image for s in samples], axis=1)
    w = samples[0].image.shape[1]
    boxes = np.stack([s.box + [i * w, 0, i * w, 0] for i, s in enumerate(samples)])
    return canvas, boxes


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    from glsr.models import save_checkpoint

    path = tmp_path_factory.mktemp("batch") / "m.pt"
    save_checkpoint(model, path)
    return path


@pytest.fixture(scope="module")
def crops(model, faces):
    x, _ = crop_batch(*faces, metadata_for(model))
    return x


def assert_slots_match(batched: np.ndarray, single: np.ndarray, tol: float):
    """Slot i of ``batched`` is face i's ``single`` result, and the faces' results are far apart."""
    n = len(single)
    assert batched.shape == single.shape and n == FACES
    apart = min(np.abs(single[i] - single[j]).max() for i in range(n) for j in range(i + 1, n))
    assert apart > SEPARATION * tol, f"faces only {apart:.3g} px apart: the test could not see a reordered batch"
    err = np.abs(batched - single).max(axis=(1, 2))
    assert (err <= tol).all(), f"per-slot max difference {np.round(err, 4).tolist()} px > {tol} px"


@pytest.mark.parametrize("case", sorted(CASES))
def test_backend_batch_slots_are_their_faces(case, exports, model, crops):
    fmt, options = CASES[case]
    (path,) = exports(fmt, **options).artifacts
    b = load_backend(path, threads=1)
    batched = b.run(crops)
    if b.metadata.batch == "dynamic":
        single = np.concatenate([b.run(crops[i:i + 1]) for i in range(FACES)])
        tol = INT8_MNN_PX if b.metadata.format == "mnn" and b.metadata.precision == "int8" else SAME_RUN_PX
    else:   # a static batch takes no single face: each slot against the PyTorch model on that face alone
        with torch.no_grad():
            single = np.concatenate([model(torch.from_numpy(crops[i:i + 1])).numpy() for i in range(FACES)])
        tol = TOLERANCES[(fmt, "fp32")].max_px  # ONNX 0.01 px, MNN 0.05 px
    assert_slots_match(batched, single, tol)


@pytest.mark.parametrize("case", sorted(CASES) + sorted(HOST_WARP) + sorted(TORCH))
def test_predictor_returns_each_face_in_its_row(case, exports, faces, checkpoint):
    """``Predictor.predict`` on one photo with several boxes = each box alone (one call per dynamic batch, chunks
    of a static batch, the host-warp graphs)."""
    host_warp = False
    if case in CASES:
        (path,) = exports(CASES[case][0], **CASES[case][1]).artifacts
    elif case in HOST_WARP:
        res = exports(["mnn", "onnx"], parity=True, host_warp=True, batch="dynamic")
        (path,) = [p for p in res.artifacts if p.suffix == "." + HOST_WARP[case]]
    else:
        path, host_warp = checkpoint, TORCH[case]
    p = Predictor.from_file(path, threads=1, host_warp=host_warp)
    canvas, boxes = faces
    together = p.predict(canvas, boxes)
    alone = np.concatenate([p.predict(canvas, b) for b in boxes])
    m = p.metadata
    assert_slots_match(together, alone, INT8_MNN_PX if (m.format, m.precision) == ("mnn", "int8") else SAME_RUN_PX)


def test_coreml_batched_spec_and_slots(faces, tmp_path):
    """A Core ML static batch: the spec takes and returns ``FACES`` faces; on macOS each slot is its face. The
    perturbed gsr (no local stage) instead of the shared small: a third of the conversion time (the small's took
    13 s on a loaded 2-vCPU EPYC); its faces land >= 2 px apart."""
    from glsr import artifacts
    from glsr.export import export_model
    from support import jittered

    model = jittered("gsr")
    crops, _ = crop_batch(*faces, metadata_for(model))
    (path,) = export_model(model=model, formats="mlpackage", batch=FACES, out_dir=tmp_path, parity=False,
                           name="g").artifacts
    info = artifacts.coreml_describe(path)
    s = model.cfg.input_size
    assert info["inputs"] == {"crop": {"kind": "multiArrayType", "shape": [FACES, 3, s, s]}}
    assert artifacts.coreml_read_metadata(path).batch == str(FACES)
    if sys.platform != "darwin":
        pytest.skip("Core ML executes only on macOS: the batched spec was checked, the slots run on a Mac")
    with torch.no_grad():
        single = np.concatenate([model(torch.from_numpy(crops[i:i + 1])).numpy() for i in range(FACES)])
    assert_slots_match(load_backend(path, threads=1).run(crops), single, TOLERANCES[("mlpackage", "fp32")].max_px)
