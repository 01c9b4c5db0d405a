"""ImageNet MobileNetV2 import: the FlatBuffer reader, dequantization, TensorFlow's layer arithmetic (``tf_layers``),
the proof against the TFLite interpreter on real photos, and the start ``glsr train --init`` takes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from glsr.cli import main
from glsr.models import load_checkpoint
from glsr.models.backbones import MNV2_STAGES, MobileNetV2Regressor, SamePadConv2d
from glsr.models.checkpoint import save_checkpoint
from glsr.models.factory import create_model
from glsr.models.registry import VariantConfig, get_variant
from glsr.models.tflite_reader import TfliteTensor, dequantize, read_tflite
from glsr.paths import SHARED
from glsr.train.trainer import init_geometry, init_summary, load_init_weights, read_init

MNV2_DIR = SHARED / "reference" / "mobilenetv2"
PTQ = MNV2_DIR / "tf2_mobilenet_v2_1.0_224_ptq.tflite"
UINT8 = MNV2_DIR / "mobilenet_v2_1.0_224_quant.tflite"

MAX_LOGIT_DIFF = 1.0
"""Largest logit difference allowed against the interpreter (measured 0.975 for the int8 file, 0.866 for the uint8
one, on the study's 30 photos; the logits' own quantization step is 0.063 / 0.099): the interpreter rounds every
activation to 8 bits over 53 layers, glsr computes in float32."""
STEM_STEPS = 0.51
"""First layer: within half a quantization step of the interpreter's output (its rounding; measured 0.51)."""
LAYER_STEPS = 1.0
"""Every convolution fed the interpreter's own input: within one quantization step of its output (measured 0.62
for the int8 file, 0.75 for the uint8 one, on 30 photos: benchmarks/results/mobilenetv2_import.json)."""
TEST_LFW = 3


@pytest.fixture(scope="module")
def tflite_files():
    if not PTQ.is_file() or not UINT8.is_file():
        pytest.skip(f"ImageNet MobileNetV2 files not found in {MNV2_DIR} (../shared is only on CI and dev machines)")
    return PTQ, UINT8


@pytest.fixture(scope="module")
def litert():
    return pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert (the test extra) not installed")


def test_dequantize_per_channel_hand_checked():
    q = np.array([[[[10]], [[-4]]], [[[3]], [[0]]]], dtype=np.int8)   # [out=2, kh=2, kw=1, in=1]
    t = TfliteTensor(0, "w", q.shape, "int8", q, np.array([0.5, 0.25]), np.array([2, -1]), 0)
    want = np.array([(10 - 2) * 0.5, (-4 - 2) * 0.5, (3 + 1) * 0.25, (0 + 1) * 0.25]).reshape(q.shape)
    np.testing.assert_array_equal(dequantize(t), want)
    d = TfliteTensor(1, "dw", (1, 1, 1, 2), "uint8", np.array([[[[130, 120]]]], np.uint8), np.array([0.1]),
                     np.array([128]), 0)   # per tensor
    np.testing.assert_allclose(dequantize(d), [[[[0.2, -0.8]]]])


def test_reader_refuses_other_files(tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="model.tflite is not a TensorFlow Lite model"):
        read_tflite(bad)
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 8)
    with pytest.raises(ValueError, match="cut.tflite is not a readable TensorFlow Lite model"):
        read_tflite(cut)


@pytest.mark.parametrize("size,pads", [(8, (0, 1, 0, 1)), (7, (1, 1, 1, 1))])
def test_same_padding_is_tensorflows(size, pads):
    torch.manual_seed(0)
    conv = SamePadConv2d(3, 4, 3, 2, size)
    x = torch.randn(1, 3, size, size)
    want = F.conv2d(F.pad(x, pads), conv.weight, stride=2)
    torch.testing.assert_close(conv(x), want)
    assert conv(x).shape[-1] == -(-size // 2)


def test_tf_layers_same_parameters_other_function():
    torch.manual_seed(0)
    plain = MobileNetV2Regressor(4, MNV2_STAGES, 32, 64, 16, 64)
    tf = MobileNetV2Regressor(4, MNV2_STAGES, 32, 64, 16, 64, tf_layers=True)
    assert [(k, v.shape) for k, v in plain.state_dict().items()] == [(k, v.shape) for k, v in tf.state_dict().items()]
    assert plain.feature_shape == tf.feature_shape
    tf.load_state_dict(plain.state_dict())
    assert sum(isinstance(m, SamePadConv2d) for m in tf.modules()) == 6   # stem + one per stride-2 row
    assert sum(isinstance(m, torch.nn.ReLU6) for m in tf.modules()) == sum(
        isinstance(m, torch.nn.ReLU) for m in plain.modules())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = plain.eval().features[:2](x), tf.eval().features[:2](x)
    assert a.shape == b.shape and not torch.allclose(a, b)


def test_tf_layers_in_config_and_checkpoint(tmp_path):
    assert "tf_layers" not in get_variant("medium").to_dict()   # other files stay readable by older glsr
    cfg = get_variant("medium", tf_layers=True, input_size=256, face_size=64, part_size=16)
    assert VariantConfig.from_dict(cfg.to_dict()) == cfg
    torch.manual_seed(0)
    model = create_model(cfg).eval()
    save_checkpoint(model, tmp_path / "m.pt")
    back = load_checkpoint(tmp_path / "m.pt")
    assert back.cfg.tf_layers and isinstance(back.regress.features[0][0], SamePadConv2d)
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x))


def test_init_summary_counts_what_was_taken():
    text = init_summary({"copied": 8, "adapted": 1, "skipped": 300, "model_tensors": 321})
    assert text.startswith("9 of the model's 321 tensors taken from the file") and "300 of the file's" in text


def test_reader_matches_the_interpreter(tflite_files, litert):
    for path in tflite_files:
        graph = read_tflite(path)
        it = litert.Interpreter(model_path=str(path))
        it.allocate_tensors()
        details = it.get_tensor_details()
        assert len(details) == len(graph.tensors)
        for d, t in zip(details, graph.tensors):
            q = d["quantization_parameters"]
            assert (d["name"], tuple(d["shape"])) == (t.name, t.shape)
            np.testing.assert_allclose(q["scales"], t.scales)
            np.testing.assert_array_equal(q["zero_points"], t.zero_points)
            assert q["quantized_dimension"] == t.axis
            if t.data is not None:
                np.testing.assert_array_equal(it.get_tensor(d["index"]), t.data)
        convs = [op for op in graph.ops if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D")]
        assert len(convs) == 53 and sum(op.stride == (2, 2) for op in convs) == 5


def check_proof(r, photos_count):
    assert r["photos"] == photos_count
    assert r["stem_max_diff_steps"] <= STEM_STEPS
    assert r["isolated_max_diff_steps"] <= LAYER_STEPS   # every layer exact up to the interpreter's rounding
    assert r["max_abs_logit_diff"] <= MAX_LOGIT_DIFF
    assert r["decisive_top1_agreement"] in (None, 1.0) and r["top1_agreement"] >= 0.75


def test_imported_weights_reproduce_the_interpreter(tflite_files, litert, dpr_dir, lfw_dir):
    """The proof on 8 photos (the study, ``python -m benchmarks.studies.mobilenetv2_import``: 30 photos, both
    files; the slow test below)."""
    from benchmarks.studies.mobilenetv2_import import compare, load_rgb, photos

    images = [load_rgb(p) for p in photos(TEST_LFW)]
    check_proof(compare(PTQ, images, tf_layers=True), len(images))
    plain = compare(PTQ, images[:2], tf_layers=False)   # glsr's default layers: another function
    assert plain["max_abs_logit_diff"] > 3 * MAX_LOGIT_DIFF


@pytest.mark.slow
def test_imported_weights_reproduce_the_interpreter_full(tflite_files, litert, dpr_dir, lfw_dir):
    from benchmarks.studies.mobilenetv2_import import LFW_PHOTOS, compare, load_rgb, photos

    images = [load_rgb(p) for p in photos(LFW_PHOTOS)]
    for path in tflite_files:
        check_proof(compare(path, images, tf_layers=True), len(images))


def test_start_for_medium(tflite_files, dpr_dir, tmp_path, capsys):
    gsr = tmp_path / "gsr68.pt"
    assert main(["import-dpr", str(dpr_dir), "-o", str(gsr), "--variant", "gsr", "--scheme", "68"]) == 0
    start = tmp_path / "start.pt"
    assert main(["import-mobilenetv2", str(MNV2_DIR), "-o", str(start), "--base", str(gsr)]) == 0
    assert "306 trunk tensors" in capsys.readouterr().out
    model, base = load_checkpoint(start), load_checkpoint(gsr)
    assert model.cfg.name == "medium" and model.cfg.tf_layers and model.cfg.input_size == base.cfg.input_size
    for k, v in base.state_dict().items():
        if k.startswith("reinit.") or k == "mean_shape":
            torch.testing.assert_close(model.state_dict()[k], v)
    # `glsr train --init` adopts the layers and geometry and takes every tensor but the mean shape (adopted apart)
    init = read_init(start)
    target = create_model(get_variant("medium", **init_geometry(init, {})), "68", mean_shape=base.mean_shape.numpy())
    assert target.cfg.tf_layers
    report = load_init_weights(target, init)
    assert report["copied"] == report["model_tensors"] - 1 and report["skipped"] == 1
    # BGR trunk == the ImageNet network on RGB, through the rows medium shares with it (before its extra stride)
    from glsr.models.mobilenetv2_import import ImageNetClassifier, import_mobilenetv2

    net = ImageNetClassifier(import_mobilenetv2(PTQ, channel_order="RGB"), input_size=model.cfg.face_size)
    rgb = torch.rand(1, 3, model.cfg.face_size, model.cfg.face_size) * 2 - 1
    with torch.no_grad():
        want = net.features[:11](rgb)
        got = model.regress.features[:11](rgb.flip(1))
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    # small's regressor cannot take the trunk
    from glsr.models.mobilenetv2_import import trunk_for

    with pytest.raises(ValueError, match="only a MobileNetV2 1.0 regressor"):
        trunk_for(create_model("small"), import_mobilenetv2(PTQ))


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["import-mobilenetv2", str(tmp_path / "none.tflite"), "-o", str(tmp_path / "o.pt")]) == 2
    err = capsys.readouterr().err
    assert "none.tflite does not exist" in err and len(err.strip().splitlines()) == 1
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model at all")
    assert main(["import-mobilenetv2", str(junk), "-o", str(tmp_path / "o.pt")]) == 2
    assert "junk.tflite is not a TensorFlow Lite model" in capsys.readouterr().err
    assert not (tmp_path / "o.pt").exists()

