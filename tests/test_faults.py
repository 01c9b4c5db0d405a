"""The fault corpus of issues #12 and #25: what a hostile but realistic user does to glsr, and what must happen.

Every bad input ends in one line naming the file (or option) and the fix, exit code 2 (1 for a parity breach, 3 for
a parity run that verified nothing), no traceback, no half-written or misleading file, nothing of the user's changed
or removed, and never code run from a model file. Themes: this file (the CLI table, pickles, NaN);
``test_faults_artifacts.py`` (parity verdicts and tolerances, artifact metadata, model files);
``test_faults_outputs.py`` (locks, outputs that never destroy or escape, debris); ``test_faults_inputs.py`` (images,
boxes, options, configs); ``test_faults_processes.py`` (real processes, rough edges). Shared inputs are fixtures in
``conftest.py``, helpers in ``support.py``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from glsr.models import load_checkpoint
from glsr.models.checkpoint import UnsafeCheckpointError, nonfinite_tensors, torch_load_safe
from glsr.runtime.predictor import NonFiniteOutputError, Predictor
from glsr.train.config import StageConfig
from glsr.train.runstate import RUN_LOCK, LEGACY_NUMPY_GLOBALS, TrainingDivergedError, read_state
from glsr.train.trainer import STATE_FILE, STATE_FORMAT, train
from support import TINY, TRAIN_ARGS, copy_run, finite_state, jittered, one_line_error, run_cli, tiny_config

# the corpus's planted inputs, shared with the study that runs the same cases as processes before and after a change
from benchmarks.studies.fault_corpus import overwrite_64_bytes, plant_evil

pytestmark = pytest.mark.usefixtures("one_torch_thread", "flush_denormals")

# ------------------------------------------------------------------------------------------------- CLI table
def _cases(f, ex):
    """``(name, argv, exit code, words the last stderr line must hold)``; none may print NaN or a traceback."""
    d = f["dir"]
    evil = d / "evil"
    box = ["--box", *f["box"]]
    onnx = ex[0] / "m_fp32.onnx"
    return [
        ("predict a NaN checkpoint", ["predict", f["face"], "--weights", f["nan"], *box], 2, ["nan.pt", "NaN"]),
        ("eval a NaN checkpoint", ["eval", "--weights", f["nan"], "--data", "procedural:68", "--samples", "2"], 2,
         ["nan.pt", "NaN"]),
        ("export a NaN checkpoint", ["export", "--weights", f["nan"], "-o", evil / "nan_out"], 2, ["nan.pt"]),
        ("predict a truncated ONNX", ["predict", f["face"], "--weights", d / "truncated.onnx", *box], 2,
         ["truncated.onnx", "truncated"]),
        ("eval a truncated ONNX", ["eval", "--weights", d / "truncated.onnx", "--data", "procedural:68", "--samples",
                                   "2"], 2, ["truncated.onnx"]),
        ("predict a folder named .onnx", ["predict", f["face"], "--weights", d / "x.onnx", *box], 2,
         ["x.onnx", "folder"]),
        ("eval a folder named .onnx", ["eval", "--weights", d / "x.onnx", "--data", "procedural:68"], 2,
         ["x.onnx", "folder"]),
        ("export -o an existing file", ["export", "--weights", f["pt"], "-o", f["face"]], 2, ["face.jpg", "folder"]),
        ("predict --out with no image suffix", ["predict", f["face"], "--weights", f["pt"], *box, "--out",
                                                d / "ov.txt"], 2, ["ov.txt", ".png"]),
        ("--box with 5 numbers", ["predict", f["face"], "--weights", f["pt"], "--box", "1", "2", "30", "40", "50"], 2,
         ["--box", "4 numbers"]),
        ("several bad faces in one pass", ["eval", "--weights", f["pt"], "--data", f"folder:{f['bad']}"], 2,
         ["3 malformed faces", "f1.txt", "f3.txt", "f5.png", "--skip-bad"]),
        ("--calib with unreadable images", ["export", "--weights", f["pt"], "--precision", "int8", "--calib",
                                            f["calib"], "--calib-count", "4", "-o", evil / "calib_out"], 2,
         ["2 usable", "4 requested", "z_truncated.jpg", "z_junk.jpg", "--calib-allow-fewer"]),
        ("parity against a NaN checkpoint", ["parity", "--weights", f["nan"], onnx], 2, ["nan.pt"]),
        # bad input that was already handled: kept so that it stays handled
        ("missing image", ["predict", d / "nope.jpg", "--weights", f["pt"], *box], 2, ["nope.jpg"]),
        ("undecodable image", ["predict", f["junk"], "--weights", f["pt"], *box], 2, ["junk.jpg"]),
        ("NaN box", ["predict", f["face"], "--weights", f["pt"], "--box", "nan", "1", "20", "30"], 2, ["NaN"]),
        ("empty box", ["predict", f["face"], "--weights", f["pt"], "--box", "50", "50", "40", "60"], 2, ["empty"]),
        ("unknown format", ["export", "--weights", f["pt"], "--format", "onnx,tflite"], 2, ["tflite"]),
        ("int8 .mlmodel", ["export", "--weights", f["pt"], "--format", "mlmodel", "--precision", "int8"], 2,
         ["mlmodel", "int8"]),
        ("resume without a state", ["train", "--out", d / "norun", "--resume", *TRAIN_ARGS], 2, ["last.pt"]),
        ("missing data set", ["eval", "--weights", f["pt"], "--data", f"folder:{d / 'nodata'}"], 2, ["nodata"]),
    ]


@pytest.fixture(scope="module")
def cli_cases(files, exported):
    d = files["dir"]
    data = (exported[0] / "m_fp32.onnx").read_bytes()
    (d / "truncated.onnx").write_bytes(data[: len(data) // 2])
    (d / "x.onnx").mkdir(exist_ok=True)
    return {c[0]: c for c in _cases(files, exported)}


CLI_FAULTS = [c[0] for c in _cases({"dir": Path("."), "face": "", "box": [], "nan": "", "pt": "", "bad": "",
                                    "calib": "", "junk": ""}, (Path("."), None))]


@pytest.mark.parametrize("name", CLI_FAULTS)
def test_cli_fault_corpus(name, cli_cases, capsys):
    _, argv, code, words = cli_cases[name]
    rc, out, err = run_cli(argv, capsys)
    assert rc == code, (rc, out, err)
    line = one_line_error(err)
    for w in words:
        assert w.lower() in line.lower(), (w, line)
    assert "NaN" not in out and "Traceback" not in out


# ------------------------------------------------------------------------------------------------- 0: pickles
def test_no_glsr_command_runs_code_from_a_model_file(files, exported, tmp_path, capsys):
    marker = tmp_path / "ran"
    evil = plant_evil(tmp_path / "evil.pt", marker)
    run = tmp_path / "run"
    plant_evil(run / STATE_FILE, marker, position={})
    release = tmp_path / "release"
    release.mkdir()
    np.save(release / "mean_98_face.npy", np.zeros(196))
    plant_evil(release / "98_points_global_reinit.pth.tar", marker, state_dict={})
    box = ["--box", *files["box"]]
    commands = {
        "predict --weights": ["predict", files["face"], "--weights", evil, *box],
        "eval --weights": ["eval", "--weights", evil, "--data", "procedural:68", "--samples", "2"],
        "export --weights": ["export", "--weights", evil, "-o", tmp_path / "out"],
        "parity --weights": ["parity", "--weights", evil, exported[0] / "m_fp32.onnx"],
        "train --init": ["train", "--out", tmp_path / "init_run", "--init", evil, *TRAIN_ARGS],
        "train --resume": ["train", "--out", run, "--resume", *TRAIN_ARGS],
        "import-dpr": ["import-dpr", release, "-o", tmp_path / "dpr.pt"],
    }
    for what, argv in commands.items():
        rc, out, err = run_cli(argv, capsys)
        assert not marker.exists(), f"{what} ran code from the model file"
        line = one_line_error(err)
        assert rc == 2 and "posix.system" in line and "never loads" in line, (what, line)
    with pytest.raises(UnsafeCheckpointError, match="evil.pt"):
        Predictor.from_file(evil)
    assert not marker.exists()


def test_every_model_file_glsr_writes_loads_weights_only(files, tiny_run):
    for path in [files["pt"], tiny_run / "model.pt", tiny_run / STATE_FILE, *tiny_run.glob("stage*.pt")]:
        torch.load(path, map_location="cpu", weights_only=True)  # no allowlist needed


def test_a_legacy_state_with_a_numpy_rng_loads_through_the_allowlist_only(tiny_run, tmp_path):
    state = torch.load(tiny_run / STATE_FILE, map_location="cpu", weights_only=True)
    state["rng"]["numpy"] = np.random.get_state()  # what states written before the fix hold
    torch.save(state, tmp_path / STATE_FILE)
    with pytest.raises(UnsafeCheckpointError, match="numpy"):
        torch_load_safe(tmp_path / STATE_FILE)
    legacy = read_state(tmp_path / STATE_FILE, STATE_FORMAT)
    assert isinstance(legacy["rng"]["numpy"][1], np.ndarray)
    assert len(LEGACY_NUMPY_GLOBALS) <= 4  # the array rebuild, ndarray, dtype, the uint32 dtype class


# ------------------------------------------------------------------------------------------------- 1: NaN
def test_training_stops_on_a_non_finite_loss_and_keeps_the_last_good_state(tmp_path):
    out = tmp_path / "r"
    cfg = tiny_config(stages=(StageConfig(1, 0.002), StageConfig(3, 1e6), StageConfig(0, 1.0), StageConfig(0, 1.0)),
                      batch_size=8)
    with pytest.raises(TrainingDivergedError, match="diverged in stage global") as e:
        train(cfg, out)
    assert "lower --lr" in str(e.value) and "last.pt" in str(e.value)
    assert not (out / "model.pt").exists() and not (out / "stage2-global.pt").exists()
    assert finite_state(out / STATE_FILE)  # the last good state, written before the divergence
    load_checkpoint(out / "stage1-reinit.pt")  # refuses non-finite weights: the stage checkpoint is good
    events = [json.loads(x)["event"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert "diverged" in events and "done" not in events
    assert not (out / RUN_LOCK).exists()  # the run folder lock went with the run


def test_the_issue_repro_lr_1000_stops_with_one_line_and_writes_no_broken_model(tmp_path, capsys):
    """`glsr train --out r --lr 1000 --max-steps 5 --batch-size 8`: before, exit 0 with a NaN model.pt. The loss can
    stay finite while the eval-mode landmarks are not (BatchNorm statistics blown up): the probe catches that."""
    out = tmp_path / "r"
    argv = ["train", "--out", out, *TRAIN_ARGS, "--stage-epochs", "1", "1", "0", "0", "--lr", "1000", "--max-steps",
            "5", "--batch-size", "8"]
    rc, _, err = run_cli(argv, capsys)
    line = one_line_error(err)
    assert rc == 2 and "diverged" in line and "lower --lr" in line, line
    assert not (out / "model.pt").exists()
    from glsr.train.runstate import check_finite_outputs

    if (out / STATE_FILE).exists():
        assert finite_state(out / STATE_FILE)
    for p in out.glob("stage*.pt"):  # whatever was kept is usable
        check_finite_outputs(load_checkpoint(p), str(p))
    assert not (out / RUN_LOCK).exists()


def test_finite_weights_with_non_finite_landmarks_count_as_diverged():
    from glsr.train.runstate import check_finite_outputs

    m = jittered("small", "68", sizes=TINY)
    check_finite_outputs(m, "here")  # a healthy model passes
    m.train()
    m.regress.eval()  # as the trainer leaves a frozen sub-module
    with torch.no_grad():  # finite running statistics and weights, but the eval-mode outputs overflow
        for bn in (x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)):
            bn.running_mean.fill_(1e30)
            bn.weight.fill_(1e30)
    assert not nonfinite_tensors(m.state_dict())
    with pytest.raises(TrainingDivergedError, match="here: the weights are finite but the model's landmarks are NaN"):
        check_finite_outputs(m, "here")
    assert m.training and not m.regress.training and m.reinit.training  # every module's mode as it was


def test_predict_refuses_non_finite_outputs(files, monkeypatch):
    p = Predictor.from_file(files["pt"])
    monkeypatch.setattr(p.backend, "run", lambda x: np.full((len(x), 68, 2), np.nan, np.float32))
    with pytest.raises(NonFiniteOutputError, match="NaN or infinity"):
        p.predict(files["image"], [[60, 60, 180, 190]])


def test_export_refuses_a_non_finite_in_memory_model(files, tmp_path):
    from glsr.export import export_model

    m = jittered("small", "68", sizes=TINY)
    with torch.no_grad():
        next(m.parameters()).fill_(float("inf"))
    with pytest.raises(ValueError, match="NaN or infinity"):
        export_model(model=m, out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.parametrize("fill", [b"\xff", b"\x00"], ids=["NaN-bytes", "finite-zeros"])
def test_resume_of_a_corrupt_state_falls_back_to_the_last_stage_checkpoint(tiny_run, tmp_path, capsys, fill):
    run = copy_run(tiny_run, tmp_path / "r")
    overwrite_64_bytes(run / STATE_FILE, fill)  # 0xFF: NaN bit patterns; zeros: finite, wrong weights
    (run / "model.pt").unlink()
    train(tiny_config(), run, resume=True)
    err = capsys.readouterr().err
    assert "last.pt is unusable" in err and "stage2-global.pt" in err
    load_checkpoint(run / "model.pt")  # finite


def test_finite_garbage_in_a_model_file_is_caught_by_its_checksums(files, tmp_path, capsys):
    """torch.load itself accepts overwritten tensor bytes that happen to be finite: silently wrong weights."""
    bad = tmp_path / "zeroed.pt"
    shutil.copy(files["pt"], bad)
    overwrite_64_bytes(bad, b"\x00")
    torch.load(bad, map_location="cpu", weights_only=True)  # what glsr used to rely on: no complaint
    with pytest.raises(ValueError, match="zeroed.pt is not a readable torch checkpoint .corrupt: checksum mismatch"):
        load_checkpoint(bad)
    rc, out, err = run_cli(["predict", files["face"], "--weights", bad, "--box", *files["box"]], capsys)
    assert rc == 2 and out == "" and "zeroed.pt" in one_line_error(err) and "copy or write it again" in err


# ------------------------------------------------------------------------------------------------- 4: one line
def test_model_loading_errors_name_the_file(files, cli_cases):
    d = files["dir"]
    with pytest.raises(ValueError, match="truncated.onnx could not be loaded.*truncated, corrupt or not a model"):
        Predictor.from_file(d / "truncated.onnx")
    with pytest.raises(ValueError, match="x.onnx is a folder"):
        Predictor.from_file(d / "x.onnx")
