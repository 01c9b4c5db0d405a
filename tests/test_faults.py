"""The fault corpus of issue #12: what a hostile but realistic user does to glsr, and what must happen.

Every bad input ends in one line naming the file (or option) and the fix, exit code 2 (1 for a parity breach),
no traceback, no half-written or misleading file, and never code run from a model file. Fast cases run in-process
through :func:`glsr.cli.main` (the table :data:`CLI_FAULTS` plus one test per defect); the cases that need real
processes (two writers at once, ``kill -9``, a file-size limit) are marked ``slow``.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from glsr import atomic
from glsr.cli import build_parser, main
from glsr.models import load_checkpoint, save_checkpoint
from glsr.models.checkpoint import UnsafeCheckpointError, nonfinite_tensors, torch_load_safe
from glsr.procedural import ProceduralFaces
from glsr.runtime.io import (apply_orientation, exif_orientation, image_data_problem, jpeg_complete,
                             read_image_file)
from glsr.runtime.predictor import NonFiniteOutputError, Predictor
from glsr.train.config import AugmentConfig, ModelOverrides, StageConfig, TrainConfig
from glsr.train.datasets import DatasetError, FolderReader, load_image, open_checked
from glsr.train.runstate import RUN_LOCK, LEGACY_NUMPY_GLOBALS, TrainingDivergedError, read_state, run_folder_lock
from glsr.train.trainer import STATE_FILE, STATE_FORMAT, train
from support import TINY, jittered

# the corpus's planted inputs, shared with the study that runs the same cases as processes before and after a change
from benchmarks.studies.fault_corpus import (overwrite_64_bytes, plant_evil, with_exif_orientation,
                                              write_bad_dataset, write_calib_folder)

REPO = Path(__file__).resolve().parents[1]
TRAIN_MODEL = ModelOverrides(input_size=64, loc_size=128, face_size=128, part_size=32)
TRAIN_ARGS = ["--lr", "0.002", "--lr-last", "0.0002", "--samples", "8", "--val-samples", "4", "--samples-per-image",
              "2", "--batch-size", "4", "--input-size", "64", "--loc-size", "128", "--face-size", "128",
              "--part-size", "32", "--threads", "1", "--no-progress", "--no-tensorboard"]

pytestmark = pytest.mark.usefixtures("one_torch_thread", "flush_denormals")


# ------------------------------------------------------------------------------------------------- helpers


def jpeg_bytes(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return buf.tobytes()


def run_cli(argv, capsys):
    """``(exit code, stdout, stderr)`` of ``glsr ARGV`` run in this process (argparse errors included)."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(err: str) -> str:
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert "Traceback" not in err, err
    assert lines and "error:" in lines[-1], err
    return lines[-1]


def tiny_config(**kw) -> TrainConfig:
    cfg = TrainConfig(variant="small", data="procedural:68", samples=8, val_samples=4, batch_size=4, threads=1,
                      model=TRAIN_MODEL, progress=False, tensorboard=False, log_every=1,
                      stages=(StageConfig(1, 0.002), StageConfig(1, 0.002), StageConfig(0, 0.002),
                              StageConfig(0, 0.0002)),
                      augment=AugmentConfig(samples_per_image=2),
                      targets=replace(TrainConfig().targets, mean_shape_samples=64))
    return replace(cfg, **kw)


def finite_state(path: Path) -> bool:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return all(bool(torch.isfinite(v).all()) for v in state["model"].values() if v.is_floating_point())


# ------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Model files, faces and broken inputs shared by the corpus."""
    d = tmp_path_factory.mktemp("faults")
    model = jittered("small", "68", sizes=TINY)
    save_checkpoint(model, d / "m.pt")
    ck = torch.load(d / "m.pt", weights_only=True)
    ck["state_dict"]["regress.features.0.0.weight"] = torch.full_like(ck["state_dict"]["regress.features.0.0.weight"],
                                                                    float("nan"))
    torch.save(ck, d / "nan.pt")
    face = ProceduralFaces(scheme="68", count=1, seed=0, split="test")[0]
    image = np.ascontiguousarray(face["image"])
    cv2.imwrite(str(d / "face.jpg"), image)
    data = (d / "face.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (d / "junk.jpg").write_bytes(b"not an image" * 20)
    box = [f"{v:.2f}" for v in np.asarray(face["box"], dtype=float)]
    # a folder data set: 3 good faces and 3 bad ones (wrong point count, NaN coordinate, undecodable image)
    bad = write_bad_dataset(d / "baddata")
    calib = write_calib_folder(d / "calib", data)
    return {"dir": d, "model": model, "pt": d / "m.pt", "nan": d / "nan.pt", "face": d / "face.jpg",
            "image": image, "box": box, "truncated": d / "truncated.jpg", "junk": d / "junk.jpg", "bad": bad,
            "calib": calib}


@pytest.fixture(scope="module")
def exported(files, tmp_path_factory):
    """One export of two formats into one folder (ONNX + MNN, parity on 2 procedural faces)."""
    from glsr.export import export_model
    from glsr.export.parity import default_inputs

    out = tmp_path_factory.mktemp("exported")
    res = export_model(files["pt"], formats=["onnx", "mnn"], out_dir=out, name="m", threads=1,
                       parity_inputs=default_inputs("68", 2, 0, None))
    return out, res


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished two-stage training run (reinit, global) with its resumable state and stage checkpoints."""
    out = tmp_path_factory.mktemp("run") / "r"
    train(tiny_config(), out)
    return out


def copy_run(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst)
    return dst


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


# ------------------------------------------------------------------------------------------------- 2: locks
def test_a_second_writer_of_a_run_folder_is_refused(tmp_path):
    out = tmp_path / "r"
    with run_folder_lock(out):
        with pytest.raises(atomic.LockedError, match=f"run folder {out}.*pid {os.getpid()}"):
            train(tiny_config(), out)
        assert (out / RUN_LOCK).is_file()
    assert not (out / RUN_LOCK).exists()
    assert not (out / "config.json").exists() and not (out / "metrics.jsonl").exists()


def test_a_second_export_into_the_same_target_is_refused(files, tmp_path):
    from glsr.export import export_model
    from glsr.export.exporter import SCRATCH_PREFIX

    with atomic.exclusive(tmp_path / f"{SCRATCH_PREFIX}m.lock", "held", "wait"):
        with pytest.raises(atomic.LockedError, match="export target .*in use by another glsr process"):
            export_model(files["pt"], out_dir=tmp_path, name="m")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_lock_is_released_when_its_holder_is_killed(tmp_path):
    lock = tmp_path / "x.lock"
    code = ("import sys, time; from glsr import atomic\n"
            f"with atomic.exclusive({str(lock)!r}, 'thing', 'wait'):\n"
            "    print('held', flush=True); time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(atomic.LockedError, match=f"pid {p.pid}"):
            with atomic.exclusive(lock, "thing", "wait"):
                pass
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    with atomic.exclusive(lock, "thing", "wait"):  # the kernel released it: no stale lock
        pass


# ------------------------------------------------------------------------------------------------- 3: EXIF
def test_exif_orientation_transforms_match_opencv(tmp_path):
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 255, (40, 60, 3), np.uint8), (5, 5), 0)
    data = jpeg_bytes(img)
    for value in range(1, 9):
        path = tmp_path / f"o{value}.jpg"
        path.write_bytes(with_exif_orientation(data, value))
        assert exif_orientation(path.read_bytes()) == value
        upright = cv2.imread(str(path))  # OpenCV applies the tag itself
        stored = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        assert np.array_equal(apply_orientation(stored, value), upright), value
        assert np.array_equal(read_image_file(path).image, upright)
        assert np.array_equal(read_image_file(path, exif=False).image, stored)


def _exif_dataset(files, root: Path, tag) -> Path:
    """One procedural face padded to 320 x 256 (so a 90 degree turn changes the size), landmarks as stored."""
    face = ProceduralFaces(scheme="68", count=1, seed=0, split="test")[0]
    image = np.pad(np.asarray(face["image"]), ((0, 0), (0, 64), (0, 0)))
    root.mkdir()
    data = jpeg_bytes(image)
    (root / "a.jpg").write_bytes(with_exif_orientation(data, tag) if tag else data)
    (root / "a.txt").write_text("\n".join(f"{x:.3f} {y:.3f}" for x, y in np.asarray(face["landmarks"])) + "\n")
    return root


def test_dataset_readers_read_the_stored_pixels_not_the_exif_rotation(files, tmp_path):
    from glsr.train.evaluate import evaluate

    plain = _exif_dataset(files, tmp_path / "plain", None)
    tagged = _exif_dataset(files, tmp_path / "tagged", 6)
    a = load_image(FolderReader(plain)[0])
    b = load_image(FolderReader(tagged)[0])
    assert b.shape == (256, 320, 3) and np.array_equal(a, b)
    nme = [evaluate([str(files["pt"])], f"folder:{d}")["models"][0]["nme"] for d in (plain, tagged)]
    assert nme[0] == nme[1]


def test_predict_honours_exif_and_names_the_frame(files, tmp_path, capsys):
    tagged = _exif_dataset(files, tmp_path / "tagged", 6) / "a.jpg"
    box = ["--box", "60", "80", "180", "200"]
    rc, out, _ = run_cli(["predict", tagged, "--weights", files["pt"], *box], capsys)
    doc = json.loads(out)
    assert rc == 0 and doc["frame"] == "upright" and doc["exif_orientation"] == 6 and doc["size"] == [256, 320]
    upright = tmp_path / "upright.png"
    cv2.imwrite(str(upright), cv2.rotate(cv2.imread(str(tagged), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION),
                                         cv2.ROTATE_90_CLOCKWISE))
    _, out2, _ = run_cli(["predict", upright, "--weights", files["pt"], *box], capsys)
    assert json.loads(out2)["faces"] == doc["faces"] and json.loads(out2)["frame"] == "stored"
    rc, out3, _ = run_cli(["predict", tagged, "--weights", files["pt"], *box, "--ignore-exif"], capsys)
    assert json.loads(out3)["frame"] == "stored" and json.loads(out3)["size"] == [320, 256]


# ------------------------------------------------------------------------------------------------- 4: one line
def test_model_loading_errors_name_the_file(files, cli_cases):
    d = files["dir"]
    with pytest.raises(ValueError, match="truncated.onnx could not be loaded.*truncated, corrupt or not a model"):
        Predictor.from_file(d / "truncated.onnx")
    with pytest.raises(ValueError, match="x.onnx is a folder"):
        Predictor.from_file(d / "x.onnx")


def test_resume_of_a_truncated_state_falls_back_and_says_so(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path / "r")
    data = (run / STATE_FILE).read_bytes()
    (run / STATE_FILE).write_bytes(data[: len(data) // 2])
    (run / "model.pt").unlink()
    train(tiny_config(), run, resume=True)
    err = capsys.readouterr().err
    assert "last.pt is unusable" in err and "truncated or corrupt" in err and "resuming from the end of stage 2" in err
    assert (run / "model.pt").is_file()


def test_resume_without_any_usable_checkpoint_is_one_clear_error(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "r")
    for p in [run / STATE_FILE, *run.glob("stage*.pt")]:
        p.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="no readable stage checkpoint.*new --out"):
        train(tiny_config(), run, resume=True)


def test_a_full_disk_while_saving_names_the_file(tmp_path):
    code = ("import resource, torch, sys\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))\n"
            "from glsr.models.checkpoint import atomic_torch_save\n"
            "try:\n"
            f"    atomic_torch_save({{'w': torch.zeros(1 << 20)}}, {str(tmp_path / 'big.pt')!r})\n"
            "except OSError as e:\n"
            "    print(e.errno, e.filename)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.stdout.split() == [str(errno.EFBIG), str(tmp_path / "big.pt")], r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no half file, no temporary file


def test_os_errors_become_one_line_naming_the_path(tmp_path, monkeypatch, capsys):
    import tempfile

    def refuse(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / ".x.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(OSError) as e:
        atomic.write_text(tmp_path / "report.json", "{}")
    assert e.value.filename == str(tmp_path / "report.json")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/run/last.pt")

    monkeypatch.setattr("glsr.train.trainer.train", full)
    rc, _, err = run_cli(["train", "--out", tmp_path / "r", *TRAIN_ARGS], capsys)
    line = one_line_error(err)
    assert rc == 2 and "/data/run/last.pt" in line and "free some disk space" in line and "--resume" in line


def test_predict_out_errors_come_before_any_output(files, tmp_path, capsys):
    rc, out, err = run_cli(["predict", files["face"], "--weights", files["pt"], "--box", *files["box"], "--out",
                            tmp_path / "ov.txt"], capsys)
    assert rc == 2 and out == "" and not (tmp_path / "ov.txt").exists()


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder nobody may write: a read-only tmpfs for root (who ignores permission bits), else mode 0555."""
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() != 0:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(d)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a read-only file system here: {r.stderr.decode().strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=True)


def test_read_only_outputs_are_one_line_naming_the_folder(files, readonly_dir, capsys):
    argvs = {
        "export -o": ["export", "--weights", files["pt"], "-o", readonly_dir, "--no-parity"],
        "export -o (new sub-folder)": ["export", "--weights", files["pt"], "-o", readonly_dir / "sub", "--no-parity"],
        "predict --out": ["predict", files["face"], "--weights", files["pt"], "--box", *files["box"], "--out",
                          readonly_dir / "ov.png"],
        "train --out": ["train", "--out", readonly_dir / "run", *TRAIN_ARGS],
    }
    for what, argv in argvs.items():
        rc, out, err = run_cli(argv, capsys)
        line = one_line_error(err)
        assert rc == 2 and str(readonly_dir) in line and ("writable" in line or "permission" in line), (what, line)
        assert out == "", (what, out)  # predict prints no landmarks it then fails to draw
    assert not any(readonly_dir.iterdir())


# ------------------------------------------------------------------------------------------------- 5: debris
def test_stale_scratch_folders_are_removed_and_live_ones_kept(tmp_path):
    from glsr.export.exporter import SCRATCH_PREFIX

    stale = tmp_path / f"{SCRATCH_PREFIX}dead"
    stale.mkdir()
    (stale / ".lock").write_text("")          # its holder is gone: the lock is free
    (stale / "m_fp32.onnx").write_bytes(b"x" * 100)
    legacy = tmp_path / f"{SCRATCH_PREFIX}abc123"
    legacy.mkdir()                            # an older glsr's folder: no lock, removed once old
    os.utime(legacy, (time.time() - 7 * 3600,) * 2)
    young = tmp_path / f"{SCRATCH_PREFIX}young"
    young.mkdir()
    with atomic.scratch_dir(tmp_path, SCRATCH_PREFIX) as live:
        assert atomic.remove_stale_scratch(tmp_path, SCRATCH_PREFIX) == 2
        assert live.is_dir() and young.is_dir() and not stale.exists() and not legacy.exists()
    assert not live.exists()


def test_artifacts_move_into_place_only_after_parity(files, tmp_path, monkeypatch):
    from glsr.export import export_model
    from glsr.export import parity as P
    from glsr.export.parity import default_inputs

    seen = {}

    def interrupted(model, artifacts, *a, **k):  # what `kill -9` during the parity check leaves
        seen["in_place"] = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
        seen["checked"] = [Path(p).parent.name for p in artifacts]
        raise KeyboardInterrupt

    monkeypatch.setattr(P, "check_artifacts", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_model(files["pt"], out_dir=tmp_path, name="m", parity_inputs=default_inputs("68", 2, 0, None))
    assert seen["in_place"] == [] and all(n.startswith(".glsr-export-") for n in seen["checked"])
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # scratch and lock gone too


def test_an_artifact_failing_parity_is_kept_only_under_a_failed_name(files, tmp_path, monkeypatch, capsys):
    from glsr.export import parity as P

    monkeypatch.setattr(P, "TOLERANCES", {k: P.Tolerance(max_px=-1.0) for k in P.TOLERANCES})
    rc, out, err = run_cli(["export", "--weights", files["pt"], "-o", tmp_path, "--name", "m", "--threads", "1"],
                           capsys)
    assert rc == 1 and "kept only as" in err
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["m_fp32.onnx.parity-failed", "m_fp32.onnx.parity.json"]
    report = json.loads((tmp_path / "m_fp32.onnx.parity.json").read_text())
    assert report["passed"] is False and report["results"][0]["artifact"].endswith(".parity-failed")
    with pytest.raises(ValueError, match="holds no exported artifact"):
        P.expand_artifacts([tmp_path])


def test_calibration_skips_unreadable_images_with_a_count(files):
    from glsr.export.exporter import calibration_faces
    from glsr.formats import ExportOptions

    opts = ExportOptions(precision="int8", calib=str(files["calib"]), calib_count=2)
    notes = []
    faces = calibration_faces("68", opts, notes=notes)
    assert [f.name for f in faces] == ["a0", "a1"]
    assert notes and "2 unreadable image(s) skipped" in notes[0] and "z_truncated.jpg: truncated" in notes[0]
    with pytest.raises(ValueError, match="2 usable image.*3 requested"):
        calibration_faces("68", replace(opts, calib_count=3))
    notes = []
    assert len(calibration_faces("68", replace(opts, calib_count=3), allow_fewer=True, notes=notes)) == 2
    assert any("calibrating on 2 image(s), 3 requested" in n for n in notes)


# ------------------------------------------------------------------------------------------------- 6: smaller
def test_truncated_images_are_detected(files, capsys):
    data = files["face"].read_bytes()
    assert jpeg_complete(data) and not jpeg_complete(data[:-100])
    assert jpeg_complete(data + b"\x00" * 1000 + b"appended video data")  # data after the image is not truncation
    assert image_data_problem(data[: len(data) // 2]).startswith("the JPEG data is truncated")
    rc, out, err = run_cli(["predict", files["truncated"], "--weights", files["pt"], "--box", *files["box"]], capsys)
    doc = json.loads(out)
    assert rc == 0 and "truncated" in doc["warnings"][0] and "truncated" in err
    assert "Corrupt JPEG" not in err  # libjpeg's own line is behind -v


def test_truncated_dataset_images_are_refused(files, tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    data = files["face"].read_bytes()
    (root / "a.jpg").write_bytes(data[: len(data) // 2])
    face = ProceduralFaces(scheme="68", count=1, seed=0, split="test")[0]
    (root / "a.txt").write_text("\n".join(f"{x} {y}" for x, y in np.asarray(face["landmarks"])) + "\n")
    with pytest.raises(DatasetError, match="a.jpg.*truncated"):
        load_image(FolderReader(root)[0])


def test_all_bad_faces_are_reported_in_one_pass_or_skipped_with_a_count(files, capsys):
    with pytest.raises(DatasetError) as e:
        FolderReader(files["bad"])  # annotation problems: the reader lists them all
    assert "2 malformed faces" in str(e.value) and "f1.txt" in str(e.value) and "f3.txt" in str(e.value)
    ds = open_checked(f"folder:{files['bad']}", skip_bad=True)
    assert len(ds) == 3 and ds.skipped == 3
    assert "left out 3 malformed face(s)" in capsys.readouterr().err
    rc, out, err = run_cli(["eval", "--weights", files["pt"], "--data", f"folder:{files['bad']}", "--skip-bad"],
                           capsys)
    assert rc == 0 and "3 faces" in out


def test_the_detector_works_on_a_shrunk_copy_of_a_huge_photo(monkeypatch):
    from glsr.runtime.detectors import MAX_DETECT_SIDE, HaarDetector

    det = HaarDetector("raw")
    seen = {}

    class Cascade:
        def detectMultiScale(self, grey, **kw):
            seen["shape"] = grey.shape
            return np.array([[100, 200, 50, 50]])

    det._cascade = Cascade()
    boxes = det.raw(np.zeros((6000, 4000, 3), np.uint8))
    assert max(seen["shape"]) <= MAX_DETECT_SIDE
    s = MAX_DETECT_SIDE / 6000
    assert np.allclose(boxes, [[(100 + .5) / s - .5, (200 + .5) / s - .5, (149 + .5) / s - .5, (249 + .5) / s - .5]])


# ------------------------------------------------------------------------------------------------- rough edges
def test_format_comma_lists_and_one_parity_report_per_format(exported):
    out, res = exported
    assert sorted(p.name for p in res.artifacts) == ["m_fp32.mnn", "m_fp32.onnx"]
    assert sorted(p.name for p in res.report_paths) == ["m_fp32.mnn.parity.json", "m_fp32.onnx.parity.json"]
    for p in res.report_paths:
        (r,) = json.loads(p.read_text())["results"]
        assert r["artifact"] == str(out / p.name[: -len(".parity.json")]) and r["status"] == "pass"
    assert build_parser().parse_args(["export", "--format", "onnx,mnn"]).format == ["onnx", "mnn"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no scratch folder, no lock file


def test_export_of_a_variant_writes_the_checkpoint_parity_needs(tmp_path):
    from glsr.export import export_model
    from glsr.export.parity import check_artifacts, default_inputs

    inputs = default_inputs("68", 2, 0, None)
    res = export_model(variant="b1", out_dir=tmp_path, parity_inputs=inputs, threads=1)
    assert res.checkpoint == tmp_path / "b1-68.pt" and res.passed
    assert check_artifacts(load_checkpoint(res.checkpoint), [tmp_path], inputs, threads=1).passed


def test_library_chatter_is_behind_verbose(exported, files, tmp_path):
    mnn = exported[0] / "m_fp32.mnn"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.pop("GLSR_VERBOSE", None)
    argv = [sys.executable, "-m", "glsr", "predict", str(files["face"]), "--weights", str(mnn), "--box", *files["box"]]
    quiet = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == 0 and quiet.stderr.strip() == "", quiet.stderr
    loud = subprocess.run(argv[:3] + ["-v"] + argv[3:], capture_output=True, text=True, env=env, timeout=300)
    assert loud.returncode == 0 and "MNN" in loud.stderr and json.loads(loud.stdout)["faces"]
    code = "from glsr.cli import set_verbosity; set_verbosity(False); import coremltools"
    ct = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert "_MLModelProxy" not in ct.stderr and "has not been tested" not in ct.stderr


def test_predict_help_states_the_box_convention_and_the_frame(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Box convention" in text and "tight box of the landmarks" in text and "'upright'" in text


def test_eval_shows_progress(files, capsys):
    from glsr.train.evaluate import evaluate

    evaluate([str(files["pt"])], "procedural:68", samples=2, progress=True)
    assert "eval" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- slow: processes
def _glsr(*args, **kw):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.Popen([sys.executable, "-m", "glsr", *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.slow
def test_two_trainings_into_one_folder_one_is_refused(tmp_path):
    procs = [_glsr("train", "--out", tmp_path / "r", *TRAIN_ARGS, "--seed", str(s)) for s in (1, 2)]
    results = [p.communicate(timeout=900) + (p.returncode,) for p in procs]
    codes = sorted(r[2] for r in results)
    assert codes == [0, 2], results
    err = next(r[1] for r in results if r[2] == 2)
    assert "is in use by another glsr process" in err and "Traceback" not in err
    seeds = {json.loads((tmp_path / "r" / "config.json").read_text())["seed"]}
    assert len(seeds) == 1


@pytest.mark.slow
def test_two_exports_of_one_stem_into_one_folder_one_is_refused(files, tmp_path):
    a, b = tmp_path / "a" / "m.pt", tmp_path / "b" / "m.pt"
    for p, seed in ((a, 1), (b, 2)):
        p.parent.mkdir()
        save_checkpoint(jittered("small", "68", sizes=TINY, seed=seed), p)
    out = tmp_path / "out"
    p1 = _glsr("export", "--weights", a, "-o", out, "--threads", "1")
    time.sleep(1.0)
    p2 = _glsr("export", "--weights", b, "-o", out, "--threads", "1")
    r1, r2 = p1.communicate(timeout=900), p2.communicate(timeout=900)
    assert sorted([p1.returncode, p2.returncode]) == [0, 2], (r1, r2)
    assert "in use by another glsr process" in (r1[1] + r2[1])


@pytest.mark.slow
def test_kill_during_export_leaves_nothing_a_later_export_does_not_clean(files, tmp_path):
    out = tmp_path / "out"
    p = _glsr("export", "--weights", files["pt"], "-o", out, "--threads", "1")
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if out.is_dir() and any(out.glob(".glsr-export-*/*.onnx")):  # converted, parity running
            break
        time.sleep(0.05)
    assert p.poll() is None, "the export finished before it could be killed"
    p.kill()
    p.communicate()
    assert not list(out.glob("*.onnx")) and not list(out.glob("*.parity.json"))  # nothing unverified in place
    q = _glsr("export", "--weights", files["pt"], "-o", out, "--threads", "1")
    q.communicate(timeout=900)
    assert q.returncode == 0
    assert sorted(x.name for x in out.iterdir()) == ["m_fp32.onnx", "m_fp32.onnx.parity.json"]


@pytest.mark.slow
def test_a_full_disk_during_training_is_one_line(tmp_path):
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    p = _glsr("train", "--out", tmp_path / "r", *TRAIN_ARGS, preexec_fn=limit)
    _, err = p.communicate(timeout=900)
    assert p.returncode == 2 and "Traceback" not in err
    assert "File too large" in err and "--resume" in err
    assert not [x for x in (tmp_path / "r").iterdir() if x.suffix == ".tmp"]


@pytest.mark.slow
def test_an_export_is_quiet_and_says_once_that_core_ml_runs_only_on_macos(files, tmp_path):
    """MNN's converter notices and coremltools' import warnings only with -v; glsr's own macOS note once."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    for k in ("PYTHONWARNINGS", "GLSR_VERBOSE"):
        env.pop(k, None)
    argv = [sys.executable, "-m", "glsr", "export", "--weights", str(files["pt"]), "--threads", "1"]
    quiet = subprocess.Popen(argv + ["--format", "mnn,coreml", "-o", str(tmp_path / "q")], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = quiet.communicate(timeout=900)
    assert quiet.returncode == 0 and err.strip() == "", err
    if sys.platform != "darwin":
        assert sum("Core ML runs only on macOS" in x for x in out.splitlines()) == 1, out
    loud = subprocess.Popen(argv[:3] + ["-v"] + argv[3:] + ["--format", "mnn", "-o", str(tmp_path / "v")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = loud.communicate(timeout=900)
    assert loud.returncode == 0 and err.strip(), "-v shows the libraries' own lines"


def test_models_shows_progress_while_counting(monkeypatch, capsys):
    """`glsr models` spent 13 s silent: the MAC counting shows a bar on a terminal (not in a pipe or a log)."""
    from glsr.models import complexity

    monkeypatch.setattr(complexity, "list_variants", lambda: ["small"])
    rows = complexity.model_rows("68", progress=True)
    assert [r.variant for r in rows] == ["small"] and "counting MACs" in capsys.readouterr().err
    complexity.model_rows("68")  # stderr is not a terminal here: no bar
    assert capsys.readouterr().err == ""
