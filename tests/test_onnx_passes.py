"""The ONNX-only graph pass (glsr.export.onnx_passes): the single graph's constant crop -> loc GridSample runs as
Resize tf_crop_and_resize in the ONNX artifact (same sample positions), while the file MNN converts keeps its
GridSample (MNN computes that Resize mode wrongly); grids that are not one axis-aligned scale and shift stay."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from glsr import geometry as geo
from glsr.export.onnx_passes import crop_resize_pass, crop_window
from glsr.models.network import crop_loc_theta

pytestmark = pytest.mark.usefixtures("flush_denormals")


def grid(theta, size, batch=1):
    return geo.affine_grid(torch.tensor(theta, dtype=torch.float32)[None].expand(batch, 2, 3),
                           geo.base_grid(size, size), size, size).double().numpy()


def test_the_loc_grid_is_a_crop_window():
    # small-fast as trained: loc pixel i samples crop pixel 67.75 + 1.0669 i (roi 0.25 .. 0.75 of 271)
    y0, x0, y1, x1 = crop_window([grid(crop_loc_theta(272, 128, 2.0), 128)], (272, 272))
    assert (y0, x0) == pytest.approx((67.75, 67.75), abs=1e-4) and (y1, x1) == pytest.approx((203.25, 203.25), abs=1e-4)
    assert crop_window([grid(crop_loc_theta(272, 128, 2.0), 128, 1), grid(crop_loc_theta(272, 128, 2.0), 128, 3)],
                       (272, 272)) is not None                              # the same grid for every face of a batch


@pytest.mark.parametrize("theta", [
    [[0.5, 0.1, 0.0], [-0.1, 0.5, 0.0]],       # rotated
    [[0.5, 0.0, 0.7], [0.0, 0.5, 0.0]],        # reaches past the right edge (zero padding and Resize differ there)
])
def test_other_grids_stay_gridsample(theta):
    assert crop_window([grid(np.array(theta), 64)], (128, 128)) is None


def test_a_grid_that_differs_per_face_stays():
    a, b = grid(crop_loc_theta(128, 64, 1.5), 64), grid(crop_loc_theta(128, 64, 1.6), 64)
    assert crop_window([np.concatenate([a, b])], (128, 128)) is None


def _run(proto, x):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), so).run(None, {"crop": x})[0]


@pytest.mark.parametrize("batch", ["1", "dynamic"])
def test_onnx_artifact_runs_the_loc_step_as_crop_and_resize(exports, model, batch, tmp_path):
    """The artifact has the Resize on its input and one GridSample fewer than the graph before the pass; the
    landmarks agree with that graph (measured: <= 3.1e-5 px on 3 procedural faces) and parity with PyTorch holds
    (checked by the export)."""
    from glsr.export import onnx_export as oe
    from glsr.export.onnx_export import export_fp32
    from glsr.export.parity import procedural_faces
    from glsr.formats import read_metadata
    from glsr.runtime.processing import crop_batch

    res = exports("onnx", parity=True, batch=batch)
    assert res.report.passed
    proto = onnx.load(str(res.artifacts[0]))
    resizes = [n for n in proto.graph.node if n.op_type == "Resize"]
    assert len(resizes) == 1 and resizes[0].input[0] == "crop"
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in resizes[0].attribute}
    assert attrs["coordinate_transformation_mode"] == b"tf_crop_and_resize" and attrs["mode"] == b"linear"
    assert not [n for n in proto.graph.node if n.op_type == "GridSample" and n.input[0] == "crop"
                and n.output[0] in resizes[0].output]
    # the graph without the pass: what MNN converts (export_fp32's output), rebuilt here from the same model
    meta = read_metadata(res.artifacts[0])
    path = tmp_path / "plain.onnx"
    export_fp32(model, path, meta, batch, oe.opset_of(proto), "gridsample")
    plain = onnx.load(str(path))
    gs = sum(n.op_type == "GridSample" for n in plain.graph.node)
    assert sum(n.op_type == "GridSample" for n in proto.graph.node) == gs - 1
    assert "Resize" not in {n.op_type for n in plain.graph.node}
    faces = procedural_faces("68", 3)
    x = np.concatenate([crop_batch(f.image, geo.tight_box(f.gt)[None], meta)[0] for f in faces])
    for xi in ([x[i:i + 1] for i in range(3)] if batch == "1" else [x]):
        assert np.abs(_run(proto, xi) - _run(plain, xi)).max() < 1e-3
    passed, k = crop_resize_pass(plain)
    assert k == 1 and crop_resize_pass(passed)[1] == 0                       # nothing left to replace
