"""benchmarks.studies.face_frame: the face frame's numbers on a model whose annotation is its own prediction, and
the inside / outside split of the Markdown table on hand-made frames."""
from __future__ import annotations

import numpy as np

from benchmarks.studies.face_frame import frame_of, markdown
from glsr import geometry as geo
from glsr.models import create_model, save_checkpoint
from glsr.runtime.processing import crop_batch, metadata_for
from glsr.train.evaluate import EvalItem
from support import TINY


def test_a_model_scored_on_its_own_prediction_has_zero_error_and_the_same_low_point(tmp_path):
    import torch

    torch.manual_seed(0)
    model = create_model("small", "68", **TINY).eval()
    path = tmp_path / "tiny.pt"
    save_checkpoint(model, path)
    rng = np.random.default_rng(0)
    items = []
    for _ in range(3):
        image = rng.integers(0, 256, (90, 100, 3), dtype=np.uint8)
        box = np.array([20.0, 15.0, 70.0, 72.0])
        x, crop_from_image = crop_batch(image, box[None], metadata_for(model))
        with torch.no_grad():
            crop_px = model(torch.from_numpy(x))[0].double().numpy()
        items.append(EvalItem(image, geo.apply_affine(geo.invert_affine(crop_from_image[0]), crop_px), box))
    f = frame_of(str(path), items)
    np.testing.assert_allclose(f["contour"], 0.0, atol=1e-9)
    np.testing.assert_allclose(f["rest"], 0.0, atol=1e-9)
    np.testing.assert_allclose(f["gt_low"], f["low"], atol=1e-4)      # the annotation maps back to the face frame
    assert np.all(f["side"] > 0)


def test_markdown_splits_faces_at_the_face_image_edge():
    a = {"side": np.array([10.0, 10.0, 10.0]), "low": np.array([0.9, 1.0, 1.2]), "gt_low": np.array([0.95, 1.0, 1.1]),
         "contour": np.array([0.04, 0.06, 0.10]), "rest": np.array([0.02, 0.02, 0.05])}
    b = {**a, "side": np.array([5.0, 5.0, 6.0]), "gt_low": np.array([1.5, 1.5, 1.5])}
    md = markdown(["a", "b"], [a, b], 3, "cmd")
    assert "| a | 10.0 | 1.000 | 1.000 / 1.200 |" in md
    assert "| b | 5.0 | 0.500 | 1.000 / 1.200 |" in md
    assert "| a | 2 | 5.00 | 2.00 | 1 | 10.00 | 5.00 |" in md        # y = 1.0 counts as inside
    assert "| b | 0 | - | - | 3 | 6.67 | 3.00 |" in md


def test_study_needs_the_shared_faces_or_says_where(monkeypatch, capsys, tmp_path):
    import benchmarks.studies.face_frame as ff

    monkeypatch.setattr(ff, "DATA", tmp_path / "missing")
    assert ff.main(["small"]) == 2
    assert "needs the 300-W faces" in capsys.readouterr().err
