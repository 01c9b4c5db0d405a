"""Fault corpus (see ``test_faults.py``): parity that cannot be talked into a pass, artifacts that cannot lie, the
pipeline's verdict, malformed model files, --init, messages that blame the right thing."""
from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from glsr.models import save_checkpoint
from glsr.train.trainer import train
from support import TINY, jittered, one_line_error, run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread", "flush_denormals")


# ------------------------------------------------------------------------------------------------- 1: tolerance
def _edit_onnx(src: Path, dst: Path, props=None, noise: float = 0.0, redigest: bool = False) -> Path:
    """A copy of an ONNX artifact with metadata props replaced, weights perturbed by ``noise`` (relative), and the
    digest recomputed (what a hostile who read glsr's source would do) when ``redigest``."""
    import onnx
    from onnx import numpy_helper

    from glsr.metadata import DIGEST_KEY, metadata_digest

    proto = onnx.load(str(src))
    for kv in proto.metadata_props:
        if props and kv.key in props:
            kv.value = props[kv.key]
    if redigest:
        values = {kv.key: kv.value for kv in proto.metadata_props}
        for kv in proto.metadata_props:
            if kv.key == DIGEST_KEY:
                kv.value = metadata_digest(values)
    rng = np.random.default_rng(0)
    for init in proto.graph.initializer if noise else []:
        w = numpy_helper.to_array(init)
        if w.dtype == np.float32 and w.size > 16:
            init.CopyFrom(numpy_helper.from_array((w * (1 + noise * rng.standard_normal(w.shape))).astype(np.float32),
                                                  init.name))
    onnx.save(proto, str(dst))
    return dst


def test_the_parity_tolerance_comes_from_precision_not_from_the_artifact(files, exported, tmp_path, capsys):
    """An fp32 ONNX with 0.5 % weight noise fails; claiming int8 in its own metadata (digest recomputed) no longer
    loosens the tolerance: it fails too, naming --precision; only the user's --precision int8 checks it so."""
    onnx = exported[0] / "m_fp32.onnx"
    noisy = _edit_onnx(onnx, tmp_path / "noisy.onnx", noise=0.005)
    liar = _edit_onnx(onnx, tmp_path / "liar.onnx", {"glsr.precision": "int8"}, noise=0.005, redigest=True)
    args = ["--weights", files["pt"], "--procedural", "2", "--no-shared", "--json"]
    rc, _, err = run_cli(["parity", noisy, *args, tmp_path / "a.json"], capsys)
    assert rc == 1 and json.loads((tmp_path / "a.json").read_text())["results"][0]["status"] == "fail"
    rc, out, err = run_cli(["parity", liar, *args, tmp_path / "b.json"], capsys)
    (r,) = json.loads((tmp_path / "b.json").read_text())["results"]
    assert rc == 1 and r["status"] == "error" and "--precision int8" in r["reason"] and "Traceback" not in err
    rc, _, _ = run_cli(["parity", liar, *args, tmp_path / "c.json", "--precision", "int8"], capsys)
    assert json.loads((tmp_path / "c.json").read_text())["reference"]["precisions"] == ["int8"]
    rc, _, err = run_cli(["parity", onnx, "--weights", files["pt"], "--precision", "int4"], capsys)
    assert rc == 2 and "--precision" in one_line_error(err)


# ------------------------------------------------------------------------------------------------- 2: digests
def test_edited_metadata_is_refused_and_overridden_only_loudly(files, exported, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GLSR_TRUST_METADATA", "")  # restored after --trust-metadata
    mnn = exported[0] / "m_fp32.mnn"
    data = mnn.read_bytes()
    size = f'"glsr.input_size":"{files["model"].cfg.input_size}"'.encode()
    assert data.count(size) == 1
    halved = tmp_path / "halved.mnn"
    halved.write_bytes(data.replace(size, size.replace(b"96", b"48")))
    crop = _edit_onnx(exported[0] / "m_fp32.onnx", tmp_path / "crop.onnx", {"glsr.crop_enlarge": "1.5"})
    box = ["--box", *files["box"]]
    for path in (halved, crop):
        rc, out, err = run_cli(["predict", files["face"], "--weights", path, *box], capsys)
        line = one_line_error(err)
        assert rc == 2 and out == "" and str(path) in line and "changed after the export" in line, line
        assert "--trust-metadata" in line
    rc, out, err = run_cli(["predict", files["face"], "--weights", crop, *box, "--trust-metadata"], capsys)
    assert rc == 0 and json.loads(out)["faces"] and "WARNING" in err and "crop.onnx" in err
    # the digest recomputed by hand: the graph still contradicts an edited input size
    size_edit = _edit_onnx(exported[0] / "m_fp32.onnx", tmp_path / "size.onnx", {"glsr.input_size": "48"},
                           redigest=True)
    rc, out, err = run_cli(["predict", files["face"], "--weights", size_edit, *box], capsys)
    line = one_line_error(err)
    assert rc == 2 and "does not describe its graph" in line and "input shape" in line, line


def test_an_artifact_of_other_weights_fails_parity(files, exported):
    from glsr.export.parity import check_artifacts, default_inputs

    other = jittered("small", "68", sizes=TINY, seed=5)
    (r,) = check_artifacts(other, [exported[0] / "m_fp32.onnx"], default_inputs("68", 2, 0, None)).results
    assert r.status == "fail" and any("exported from another checkpoint" in b for b in r.breaches)


# ------------------------------------------------------------------------------------------------- 3: verdicts
def test_parity_separates_passed_failed_and_not_run(files, exported, tmp_path, monkeypatch, capsys):
    """An artifact that cannot run here (as Core ML on Linux): 'skipped' in the JSON, exit 3 (nothing verified)
    unless --allow-unverified."""
    from glsr.formats import FormatSpec

    monkeypatch.setattr(FormatSpec, "runs_here", lambda self, platform=sys.platform: self.name != "onnx")
    args = ["parity", "--weights", files["pt"], exported[0] / "m_fp32.onnx", "--procedural", "2", "--no-shared",
            "--json", tmp_path / "p.json"]
    rc, _, err = run_cli(args, capsys)
    rep = json.loads((tmp_path / "p.json").read_text())
    assert rc == 3 and rep["passed"] is False and rep["verdict"] == "not verified" and "--allow-unverified" in err
    assert rep["counts"] == {"passed": 0, "failed": 0, "not_run": 1} and rep["results"][0]["status"] == "skipped"
    rc, out, _ = run_cli(args + ["--allow-unverified"], capsys)
    rep = json.loads((tmp_path / "p.json").read_text())
    assert rc == 0 and rep["passed"] is True and rep["counts"]["not_run"] == 1 and "1 not run" in out


def test_the_pipeline_verdict_fails_on_an_export_kept_as_parity_failed(files, exported, tmp_path, monkeypatch):
    from glsr import pipeline as P
    from glsr.export.exporter import ExportResult

    out = tmp_path / "pl"
    pl = P.Pipeline(out, "small", P.QUICK, 1, [], str(files["pt"]), None, True)
    (out / "export").mkdir(parents=True)
    shutil.copy(exported[0] / "m_fp32.onnx", out / "export" / "model_fp32.onnx")
    shutil.copy(exported[0] / "m_fp32.mnn", out / "export" / "model_fp32.mnn.parity-failed")
    failed = ExportResult((out / "export" / "model_fp32.onnx",),
                          failed=(out / "export" / "model_fp32.mnn.parity-failed",))
    monkeypatch.setattr(P, "_export", lambda *a, **k: failed)
    pl.stage("train", pl.train)
    pl.stage("export", pl.export, needs=("train",))
    pl.stage("parity", pl.parity)
    assert pl.results["export"].status == "failed" and "model_fp32.mnn.parity-failed" in pl.results["export"].detail
    assert pl.results["parity"].status == "failed" and "failed parity in the export" in pl.results["parity"].detail
    assert json.loads((out / "parity.json").read_text())["passed"] is True  # the files left did pass...
    assert pl.failed_stages() == ["export", "parity"] and "**FAILED**" in P.verdict_line(pl)  # ...the verdict not


# ------------------------------------------------------------------------------------------------- 6: model files
@pytest.mark.parametrize("damage", ["no config", "odd version", "wrong shape"])
def test_malformed_checkpoints_are_one_line_for_every_command(files, exported, tmp_path, capsys, damage):
    ck = torch.load(files["pt"], weights_only=True)
    if damage == "no config":
        del ck["config"]
    elif damage == "odd version":
        ck["version"] = "two"
    else:
        w = ck["state_dict"]["regress.features.0.0.weight"]
        ck["state_dict"]["regress.features.0.0.weight"] = w[:, :, :2]
    bad = tmp_path / "bad.pt"
    torch.save(ck, bad)
    commands = {"export": ["export", "--weights", bad, "-o", tmp_path / "o"],
                "parity": ["parity", "--weights", bad, exported[0] / "m_fp32.onnx"],
                "bench": ["bench", "--weights", bad, "--quick", "--backends", "torch", "-o", tmp_path / "b"],
                "eval": ["eval", "--weights", bad, "--data", "procedural:68", "--samples", "2"]}
    for what, argv in commands.items():
        rc, out, err = run_cli(argv, capsys)
        line = one_line_error(err)
        assert rc == 2 and "bad.pt" in line, (what, line)
    assert not (tmp_path / "o").exists() and not (tmp_path / "b").exists()


# ------------------------------------------------------------------------------------------------- 7: --init
def test_init_from_an_incompatible_variant_is_refused(tmp_path):
    from glsr.models import create_model
    from glsr.train.trainer import load_init_weights

    save_checkpoint(create_model("large", "68", **TINY), tmp_path / "large.pt")
    with pytest.raises(ValueError, match=r"large.pt \(variant 'large'\) fits variant 'small' poorly: \d+ of its"):
        load_init_weights(create_model("small", "68", **TINY), tmp_path / "large.pt")


# ------------------------------------------------------------------------------------------------- 8: messages
def test_a_thread_creation_failure_is_not_called_a_corrupt_file(exported, monkeypatch):
    from glsr.runtime import backends

    def no_threads(*a, **k):
        raise RuntimeError("pthread_create failed: Resource temporarily unavailable")

    monkeypatch.setattr(backends, "onnx_session", no_threads)
    with pytest.raises(ValueError) as e:
        backends.load_backend(exported[0] / "m_fp32.onnx", threads=2)
    assert "could not start its threads" in str(e.value) and "corrupt" not in str(e.value)
    assert "--threads" in str(e.value) and "m_fp32.onnx" in str(e.value)


def test_skip_bad_is_not_advised_when_it_was_given(tmp_path):
    from glsr.train.datasets import bad_faces_error

    assert "pass --skip-bad" in str(bad_faces_error(["a.txt: 67 points", "b.txt: NaN"], tmp_path))
    given = str(bad_faces_error(["a.txt: 67 points", "b.txt: NaN"], tmp_path, skip_bad=True))
    assert "pass --skip-bad" not in given and "--skip-bad was given" in given
