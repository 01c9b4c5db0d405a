"""Fault corpus (see ``test_faults.py``): what needs real processes (two writers, kill -9, a file-size limit) and
rough edges of the commands."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from glsr.cli import build_parser, main
from glsr.models import load_checkpoint, save_checkpoint
from glsr.train.trainer import train
from support import REPO, TINY, TRAIN_ARGS, jittered

pytestmark = pytest.mark.usefixtures("one_torch_thread", "flush_denormals")

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
