"""Fault corpus (see ``test_faults.py``): locks, outputs that never destroy or escape, full disks, read-only
folders, debris of killed runs."""
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

import pytest
import torch

from glsr import atomic
from glsr.train.runstate import RUN_LOCK, run_folder_lock
from glsr.train.trainer import STATE_FILE, train
from support import REPO, TRAIN_ARGS, copy_run, one_line_error, run_cli, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread", "flush_denormals")

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


# ------------------------------------------------------------------------------------------------- 4: one line
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

    mine = tmp_path / f"{SCRATCH_PREFIX}my-notes"  # a user's folder under a glsr-like name: never touched
    mine.mkdir()
    os.utime(mine, (time.time() - 7 * 3600,) * 2)
    stale = tmp_path / f"{SCRATCH_PREFIX}dead1234"
    stale.mkdir()
    (stale / ".lock").write_text("")          # its holder is gone: the lock is free
    (stale / "m_fp32.onnx").write_bytes(b"x" * 100)
    legacy = tmp_path / f"{SCRATCH_PREFIX}abc12345"
    legacy.mkdir()                            # an older glsr's folder: no lock, removed once old
    os.utime(legacy, (time.time() - 7 * 3600,) * 2)
    young = tmp_path / f"{SCRATCH_PREFIX}young123"
    young.mkdir()
    with atomic.scratch_dir(tmp_path, SCRATCH_PREFIX) as live:
        assert atomic.remove_stale_scratch(tmp_path, SCRATCH_PREFIX) == 2
        assert live.is_dir() and young.is_dir() and not stale.exists() and not legacy.exists() and mine.is_dir()
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




# ------------------------------------------------------------------------------------------------- 4: never destroy
def test_export_never_replaces_or_removes_what_it_did_not_create(files, tmp_path, capsys):
    out = tmp_path / "o"
    (out / "m_fp32.onnx").mkdir(parents=True)
    (out / "m_fp32.onnx" / "notes.txt").write_text("mine")
    rc, _, err = run_cli(["export", "--weights", files["pt"], "-o", out, "--no-parity"], capsys)
    line = one_line_error(err)
    assert rc == 2 and "m_fp32.onnx exists" in line and "never replaces" in line and "--name" in line, line
    assert (out / "m_fp32.onnx" / "notes.txt").read_text() == "mine"
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "m_fp32.onnx.parity.json").write_text('{"mine": 1}')
    rc, _, err = run_cli(["export", "--weights", files["pt"], "-o", tmp_path / "p", "--no-parity"], capsys)
    assert rc == 2 and "m_fp32.onnx.parity.json" in one_line_error(err)
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["m_fp32.onnx.parity.json"]
    rc, _, err = run_cli(["export", "--weights", files["pt"], "-o", tmp_path / "n", "--name", "../escaped"], capsys)
    assert rc == 2 and "--name" in one_line_error(err) and not list(tmp_path.glob("escaped*"))
    # an earlier glsr export is replaced as before
    for _ in range(2):
        rc, _, err = run_cli(["export", "--weights", files["pt"], "-o", tmp_path / "q", "--no-parity"], capsys)
        assert rc == 0, err


@pytest.mark.parametrize("command", ["export", "train"])
@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_lock_files_never_write_through_a_planted_link(files, tmp_path, capsys, command, link):
    from glsr.export.exporter import SCRATCH_PREFIX

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "o"
    out.mkdir()
    lock = out / (f"{SCRATCH_PREFIX}m.lock" if command == "export" else RUN_LOCK)
    os.symlink(victim, lock) if link == "symlink" else os.link(victim, lock)
    argv = (["export", "--weights", files["pt"], "-o", out, "--no-parity"] if command == "export"
            else ["train", "--out", out, *TRAIN_ARGS])
    rc, _, err = run_cli(argv, capsys)
    line = one_line_error(err)
    assert rc == 2 and str(lock) in line and ("symbolic link" in line or "hard link" in line), line
    assert victim.read_text() == "precious"
    assert sorted(p.name for p in out.iterdir()) == [lock.name]


def test_bench_writes_under_the_current_folder_unless_told(tmp_path, monkeypatch):
    from glsr.bench.cli import DEFAULT_OUT, default_out

    monkeypatch.chdir(tmp_path)
    out = default_out(None).resolve()
    assert out.parent == tmp_path / DEFAULT_OUT and REPO not in out.parents
    assert default_out(None, android=True).resolve() == tmp_path / DEFAULT_OUT
    assert default_out(str(tmp_path / "x")) == tmp_path / "x"


def test_ship_stamps_only_what_the_run_trained_and_never_overwrites_it(files, tiny_run, tmp_path):
    from glsr.train.ship import ship

    run = copy_run(tiny_run, tmp_path / "run")
    with pytest.raises(ValueError, match=r"--file m.md: give a .pt file"):
        ship(run, "t", tmp_path / "models", file="m.md")
    with pytest.raises(ValueError, match="--file '../m.pt': give a plain name"):
        ship(run, "t", tmp_path / "models", file="../m.pt")
    with pytest.raises(ValueError, match="would write into the run folder"):
        ship(run, "t", run, file="model.pt")
    before = (run / "model.pt").read_bytes()
    assert ship(run, "t", tmp_path / "models").is_file() and (run / "model.pt").read_bytes() == before
    shutil.copy(files["pt"], run / "model.pt")  # a model the run did not train, dropped into its folder
    with pytest.raises(ValueError, match="was not trained by the run .*records no training config"):
        ship(run, "t", tmp_path / "models2")
    assert not (tmp_path / "models2").exists()
