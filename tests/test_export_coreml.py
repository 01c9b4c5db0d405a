"""Core ML export, verified as far as Linux allows: spec type, I/O names and shapes, layers / ops, metadata,
fp16 and image-input variants; parity runs on macOS (skipped with a reason elsewhere)."""
import sys

import numpy as np
import pytest
import torch

from glsr import artifacts
from glsr.export import coreml_export as ce
from glsr.export import export_model
from glsr.models import create_model
from glsr.runtime.backends import CoreMLBackend, PlatformNotSupportedError, load_backend

from support import SMALL
LINUX_ONLY = pytest.mark.skipif(sys.platform == "darwin", reason="on macOS the artifacts execute (parity runs)")


@pytest.fixture(scope="module")
def coreml(exports):
    """Both Core ML kinds of the shared ``model`` (batch 1), parity attempted (skipped off macOS)."""
    return exports("coreml", parity=True)


def test_both_kinds_written_with_contract(coreml):
    names = sorted(p.name for p in coreml.artifacts)
    assert names == ["m_fp32.mlmodel", "m_fp32.mlpackage"]
    for p in coreml.artifacts:
        info = artifacts.coreml_describe(p)
        assert info["inputs"] == {"crop": {"kind": "multiArrayType", "shape": [1, 3, 192, 192]}}
        assert list(info["outputs"]) == ["landmarks"]
        md = info["metadata"]
        assert md["glsr.variant"] == "small" and md["glsr.num_points"] == "68" and md["glsr.input_size"] == "192"
        assert md["glsr.format"] == ("mlpackage" if p.suffix == ".mlpackage" else "mlmodel")
        assert md["glsr.box_convention"] == "tight" and artifacts.coreml_read_metadata(p).box_convention == "tight"


def test_mlprogram_and_neural_network_ops(coreml):
    pkg = next(p for p in coreml.artifacts if p.suffix == ".mlpackage")
    nn = next(p for p in coreml.artifacts if p.suffix == ".mlmodel")
    prog = artifacts.coreml_describe(pkg)
    assert prog["type"] == "mlProgram" and prog["spec_version"] >= 6  # iOS 15
    assert "conv" in prog["ops"] and "resample" in prog["ops"]  # grid sampling as an ML Program op
    net = artifacts.coreml_describe(nn)
    assert net["type"] == "neuralNetwork"
    assert {"gather", "floor", "clip", "convolution"} <= set(net["ops"])  # the gather sampler
    assert artifacts.coreml_read_metadata(nn).sampler == "gather"
    assert artifacts.coreml_read_metadata(pkg).sampler == "gridsample"


@LINUX_ONLY
def test_backend_loads_but_refuses_to_run_off_macos(coreml):
    for p in coreml.artifacts:
        b = load_backend(p)
        assert isinstance(b, CoreMLBackend) and b.metadata.num_points == 68
        with pytest.raises(PlatformNotSupportedError, match="CoreML models execute only on macOS"):
            b.run(np.zeros((1, 3, 192, 192), np.float32))
    assert {r.status for r in coreml.report.results} == {"skipped"}
    assert all("macOS" in r.reason or "darwin" in r.reason for r in coreml.report.results)


@pytest.mark.slow  # 20-40 s on a 2-vCPU AMD EPYC; the default suite stays under 5 minutes there
def test_fp16_and_image_input(tmp_path):
    m = create_model("gsr", "68", **SMALL).eval()
    res = export_model(model=m, formats="coreml", precision="fp16", image_input=True, out_dir=tmp_path,
                       parity=False, name="g")
    pkg = next(p for p in res.artifacts if p.suffix == ".mlpackage")
    nn = next(p for p in res.artifacts if p.suffix == ".mlmodel")
    assert pkg.name == "g_fp16_image.mlpackage"
    prog = artifacts.coreml_describe(pkg)
    assert prog["inputs"]["crop"]["kind"] == "imageType" and "cast" in prog["ops"]  # fp16 islands, fp32 elsewhere
    spec = artifacts.coreml_load_spec(nn)
    pre = spec.neuralNetwork.preprocessing[0].scaler
    assert pre.channelScale == pytest.approx(1 / 127.5) and pre.blueBias == pytest.approx(-1.0)
    assert spec.description.input[0].type.imageType.colorSpace == 30  # BGR
    f32 = export_model(model=m, formats="mlpackage", out_dir=tmp_path, parity=False, name="g")
    weights = lambda p: sum(f.stat().st_size for f in p.rglob("*.bin"))  # noqa: E731
    assert weights(pkg) < 0.7 * weights(f32.artifacts[0])


def test_fp16_selector_keeps_heads_and_adapters_fp32(model):
    heads = ce.head_modules(model)
    assert ("reinit", "fc_loc", "2") in heads and ("regress", "pts_net", "4") in heads
    assert any(h[0] == "local_regress" for h in heads) and any(h[0] == "local_reinit" for h in heads)


def test_unsupported_torch_op_is_named():
    class Odd(torch.nn.Module):
        def forward(self, x):
            return torch.special.i1e(x)  # no coremltools converter

    traced = torch.jit.trace(Odd(), (torch.zeros(1, 3),))
    from glsr.export import UnsupportedOpError

    with pytest.raises(UnsupportedOpError, match=r"coreml \(mlpackage\): unsupported op 'aten::special_i1e'"):
        ce.check_torch_ops(traced, "coreml (mlpackage)")
