"""Predictor: the documented crop and uncrop (checked against a hand-built reference), batching by the artifact's
batch mode, clear errors for bad input, detector integration, and ``glsr predict`` (positional image, --image, no
box). Each batch slot's landmarks per format and precision: test_batch_order.py."""
import json

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from glsr.models import save_checkpoint
from glsr.runtime.detectors import FaceDetector
from glsr.runtime.predictor import Predictor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def predictor_files(model, exports, tmp_path_factory):
    """The shared ``model`` as a checkpoint and exported at batch 1 (ONNX, MNN), 2 and dynamic (ONNX)."""
    d = tmp_path_factory.mktemp("predictor")
    save_checkpoint(model, d / "m.pt")
    out = {"pt": d / "m.pt", "mnn": exports("mnn").artifacts[0]}
    for batch in ("1", "2", "dynamic"):
        out[f"onnx_{batch}"] = exports("onnx", batch=batch).artifacts[0]
    return out


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    return img


BOXES = np.array([[40.0, 30.0, 140.0, 150.0], [180.0, 60.0, 300.0, 200.0], [100.0, 100.0, 160.0, 170.0]])


class Counting:
    """Wrap a backend's ``run`` to count calls and batch sizes."""

    def __init__(self, predictor):
        self.calls = []
        self._run = predictor.backend.run
        predictor.backend.run = self

    def __call__(self, x):
        self.calls.append(len(x))
        return self._run(x)


def hand_built_prediction(model, image: np.ndarray, box) -> np.ndarray:
    """The documented pre- and post-processing written out here, independently of glsr's crop / uncrop code: the
    box scaled by ``crop_enlarge`` about its centre, its corners onto the crop's outer pixel centres
    (``glsr.geometry``'s docstring), ``cv2.warpAffine`` bilinear with a zero border, ``(pixel - 127.5) / 127.5``
    in BGR order, and the crop-pixel landmarks mapped back with the same scale and offset."""
    import cv2

    s, e = model.cfg.input_size, model.cfg.crop_enlarge
    x1, y1, x2, y2 = box
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, e * (x2 - x1) / 2, e * (y2 - y1) / 2
    left, top, sx, sy = cx - hw, cy - hh, (s - 1) / (2 * hw), (s - 1) / (2 * hh)
    crop = cv2.warpAffine(image, np.array([[sx, 0, -left * sx], [0, sy, -top * sy]]), (s, s),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    x = ((crop.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
    with torch.no_grad():
        pts = model(torch.from_numpy(np.ascontiguousarray(x)))[0].numpy().astype(np.float64)
    return np.stack([left + pts[:, 0] / sx, top + pts[:, 1] / sy], axis=-1)


def test_predictions_match_a_hand_built_crop_and_uncrop(model, predictor_files, image):
    """Predictor (checkpoint and exported artifacts) against :func:`hand_built_prediction`: a crop or an uncrop
    shifted by half a pixel, a box scaled about the wrong point or a channel swap fails (measured 0.00003 px)."""
    assert model.cfg.channel_order == "BGR" and (model.cfg.pixel_mean, model.cfg.pixel_std) == (127.5, 127.5)
    p = Predictor.from_file(predictor_files["pt"], threads=1)
    assert p.metadata.box_convention == "tight"             # the checkpoint keeps the box convention
    ref = np.stack([hand_built_prediction(model, image, b) for b in BOXES])
    got = p.predict(image, BOXES)
    assert got.shape == (3, 68, 2)
    np.testing.assert_allclose(got, ref, atol=1e-3)
    np.testing.assert_allclose(p.predict(image, BOXES[1])[0], ref[1], atol=1e-3)   # a single box: 4 numbers
    onnx = Predictor.from_file(predictor_files["onnx_dynamic"], threads=1).predict(image, BOXES)
    np.testing.assert_allclose(onnx, ref, atol=0.02)                                # fp32 parity tolerance 0.01


@pytest.mark.parametrize("kind", ["onnx_1", "onnx_2", "onnx_dynamic", "mnn"])
def test_exported_artifacts_agree_with_torch(predictor_files, image, kind):
    ref = Predictor.from_file(predictor_files["pt"]).predict(image, BOXES)
    p = Predictor.from_file(predictor_files[kind], threads=1)
    np.testing.assert_allclose(p.predict(image, BOXES), ref, atol=2e-2)


@pytest.mark.parametrize("kind, calls", [("onnx_dynamic", [3]), ("onnx_1", [1, 1, 1]), ("onnx_2", [2, 2])])
def test_batching_follows_the_artifact(predictor_files, image, kind, calls):
    p = Predictor.from_file(predictor_files[kind], threads=1)
    counter = Counting(p)
    out = p.predict(image, BOXES)
    assert counter.calls == calls and out.shape == (3, 68, 2)
    singles = np.concatenate([p.predict(image, b) for b in BOXES])
    np.testing.assert_allclose(out, singles, atol=1e-4)  # zero padding of the last chunk changes nothing


def test_precision_and_threads_reach_the_backend(predictor_files):
    p = Predictor.from_file(predictor_files["mnn"], threads=2, precision="normal")
    assert p.backend.threads == 2 and p.backend.options["precision"] == "normal"
    assert Predictor.from_file(predictor_files["onnx_1"]).static_batch == 1
    assert Predictor.from_file(predictor_files["onnx_dynamic"]).static_batch is None
    with pytest.raises(ValueError, match="threads must be >= 1"):
        Predictor.from_file(predictor_files["pt"], threads=0)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((50, 50, 3), np.float32), "uint8"),
    (np.zeros((50, 50), np.uint8), "3 channels"),
    (np.zeros((50, 50, 4), np.uint8), "3 channels"),
    (np.zeros((0, 50, 3), np.uint8), "empty"),
    ([[1, 2, 3]], "numpy array"),
])
def test_bad_images(predictor_files, bad, match):
    p = Predictor.from_file(predictor_files["pt"])
    with pytest.raises(ValueError, match=match):
        p.predict(bad, BOXES[:1])


@pytest.mark.parametrize("box, match", [
    ([np.nan, 0, 10, 10], "NaN"),
    ([10, 10, 5, 20], "empty"),
    ([400, 300, 500, 400], "outside"),
    ([1, 2, 3], r"\[F, 4\]"),
    ([[1, 2, 3, 4, 5]], r"\[F, 4\]"),
    ("box", "numbers"),
])
def test_bad_boxes(predictor_files, image, box, match):
    p = Predictor.from_file(predictor_files["pt"])
    with pytest.raises(ValueError, match=match):
        p.predict(image, box)


def test_bad_files(tmp_path, predictor_files):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Predictor.from_file(tmp_path / "missing.onnx")
    txt = tmp_path / "model.txt"
    txt.write_text("hello")
    with pytest.raises(ValueError, match="don't know how to run"):
        Predictor.from_file(txt)
    fake = tmp_path / "fake.pt"
    fake.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        Predictor.from_file(fake)
    # an ONNX file without glsr metadata
    import onnx

    proto = onnx.load(str(predictor_files["onnx_1"]))
    del proto.metadata_props[:]
    foreign = tmp_path / "foreign.onnx"
    onnx.save(proto, str(foreign))
    with pytest.raises(ValueError, match="glsr"):
        Predictor.from_file(foreign)
    with pytest.raises(ValueError, match="unknown face detector"):
        Predictor.from_file(predictor_files["pt"], detector="mtcnn")


class FakeDetector(FaceDetector):
    name = "fake"

    def __init__(self, boxes):
        super().__init__()
        self.boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        self.bound = None

    def bind(self, metadata):
        self.bound = metadata
        return self

    def _detect(self, image, path):
        return self.boxes


def test_detector_boxes_when_none_given(predictor_files, image):
    d = FakeDetector(BOXES[:2])
    p = Predictor.from_file(predictor_files["pt"], detector=d)
    assert d.bound is p.metadata
    res = p.predict_faces(image, refine=False)
    np.testing.assert_allclose(res.boxes, BOXES[[1, 0]])  # largest first
    np.testing.assert_allclose(res.landmarks, p.predict(image, BOXES[[1, 0]]), atol=1e-5)
    assert json.loads(json.dumps(res.to_json()))[0]["box"] == BOXES[1].tolist()
    refined = p.predict_faces(image)  # detected faces are refined and scored by default
    assert refined.landmarks.shape == (2, 68, 2) and np.all((refined.quality > 0) & (refined.quality <= 1))
    assert [set(f) for f in refined.to_json()] == [{"box", "landmarks", "quality"}] * 2
    none = Predictor.from_file(predictor_files["pt"], detector=FakeDetector(np.zeros((0, 4))))
    assert none.predict(image).shape == (0, 68, 2)
    with pytest.raises(ValueError, match="no face detector"):
        Predictor.from_file(predictor_files["pt"], detector=None).predict(image)


def test_lazy_package_export():
    import glsr.runtime as rt

    assert rt.Predictor is Predictor
    with pytest.raises(AttributeError):
        rt.Nothing  # noqa: B018


# ------------------------------------------------------------------------------------------ CLI


def run_cli(argv, capsys):
    from glsr.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def photo(tmp_path_factory, image):
    from glsr.runtime.io import write_image_atomic

    p = tmp_path_factory.mktemp("img") / "photo.png"
    write_image_atomic(p, image)
    return p


def test_cli_positional_image_and_boxes(predictor_files, photo, tmp_path, capsys):
    over = tmp_path / "over.png"
    code, out, _ = run_cli(["predict", str(photo), "--weights", str(predictor_files["onnx_dynamic"]), "--box", "40",
                            "30", "140", "150", "--box", "180", "60", "300", "200", "--out", str(over)], capsys)
    assert code == 0
    d = json.loads(out)
    assert d["scheme"] == "68" and len(d["faces"]) == 2 and d["detector"] is None
    assert np.asarray(d["faces"][0]["landmarks"]).shape == (68, 2)
    assert over.is_file()
    code, out2, _ = run_cli(["predict", "--image", str(photo), "--weights", str(predictor_files["onnx_dynamic"]),
                             "--box", "40", "30", "140", "150"], capsys)
    assert code == 0 and json.loads(out2)["faces"][0] == d["faces"][0]


def test_cli_errors(predictor_files, photo, tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(["predict", "--weights", str(predictor_files["pt"])], capsys)
    assert code == 2 and "give an image" in err
    code, _, err = run_cli(["predict", str(photo), "--weights", str(tmp_path / "none.pt")], capsys)
    assert code == 2 and "none.pt" in err
    code, _, err = run_cli(["predict", str(photo), "--image", str(tmp_path / "other.png"), "--weights",
                            str(predictor_files["pt"])], capsys)
    assert code == 2 and "two different images" in err
    code, _, err = run_cli(["predict", str(tmp_path / "none.png"), "--weights", str(predictor_files["pt"])], capsys)
    assert code == 2 and "does not exist" in err
    code, _, err = run_cli(["predict", str(photo), "--weights", str(predictor_files["pt"]), "--box", "1", "2", "0",
                            "0"], capsys)
    assert code == 2 and "empty" in err


def test_cli_default_weights_are_the_shipped_small(photo, tmp_path, capsys, monkeypatch):
    from glsr.shipped import shipped_path

    monkeypatch.chdir(tmp_path)  # the default does not depend on the working folder
    code, out, _ = run_cli(["predict", str(photo), "--box", "40", "30", "140", "150"], capsys)
    res = json.loads(out)
    assert code == 0 and res["model"] == str(shipped_path("small")) and res["scheme"] == "68"
    assert len(res["faces"][0]["landmarks"]) == 68
    code, out, _ = run_cli(["predict", str(photo), "--weights", "medium", "--box", "40", "30", "140", "150"], capsys)
    assert code == 0 and json.loads(out)["model"] == str(shipped_path("medium"))
    code, _, err = run_cli(["predict", str(photo), "--weights", "huge", "--box", "40", "30", "140", "150"], capsys)
    assert code == 2 and "huge" in err


def test_cli_without_box_uses_the_detector(predictor_files, photo, tmp_path, capsys):
    # random noise: the default detector (YuNet) finds no face -> an empty list, exit 0, and stderr says so
    code, out, err = run_cli(["predict", str(photo), "--weights", str(predictor_files["pt"])], capsys)
    assert code == 0 and json.loads(out)["faces"] == [] and json.loads(out)["detector"] == "yunet"
    assert f"no face found in {photo}" in err and "--box" in err and "--detector haar" in err
    # a box file beside the image
    (photo.parent / "photo.rct").write_text("40 30 140 150\n")
    code, out, _ = run_cli(["predict", str(photo), "--weights", str(predictor_files["pt"]), "--detector", "boxfile",
                            "--no-refine"], capsys)
    assert code == 0 and json.loads(out)["faces"][0]["box"] == [40.0, 30.0, 140.0, 150.0]


def test_cli_detects_real_faces(predictor_files, lfw_dir, tmp_path, capsys):
    photo = sorted(lfw_dir.glob("*.jpg"))[0]
    over = tmp_path / "lfw.jpg"
    code, out, _ = run_cli(["predict", str(photo), "--weights", str(predictor_files["pt"]), "--out", str(over)], capsys)
    faces = json.loads(out)["faces"]
    assert code == 0 and len(faces) >= 1 and over.is_file()
    x1, y1, x2, y2 = faces[0]["box"]
    assert 60 < (x1 + x2) / 2 < 190 and 60 < (y1 + y2) / 2 < 190


def test_normalize_layout_and_values():
    """HxWx3 uint8 -> 3xHxW float32 (pixel - mean) / std, channel c of pixel (y, x) at [c, y, x]."""
    from glsr.imaging import normalize

    crop = np.zeros((2, 3, 3), np.uint8)
    crop[1, 2] = (0, 255, 51)
    meta = SimpleNamespace(pixel_mean=127.5, pixel_std=127.5, channel_order="BGR")
    x = normalize(crop, meta)
    assert x.shape == (3, 2, 3) and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(x[:, 1, 2], [-1.0, 1.0, (51 - 127.5) / 127.5], rtol=1e-6)
    assert np.all(x[:, 0] == -1.0)
    rgb = normalize(crop, SimpleNamespace(pixel_mean=127.5, pixel_std=127.5, channel_order="RGB"))
    np.testing.assert_array_equal(rgb[:, 1, 2], x[::-1, 1, 2])  # an RGB model gets the channels reversed
    out = np.full((3, 2, 3), np.nan, np.float32)
    assert normalize(crop, meta, out=out) is out and np.array_equal(out, x)
