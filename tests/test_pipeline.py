"""``glsr pipeline --quick``: every stage runs with tiny budgets and one report folder comes out; the shipped stage
exports, checks and times the shipped model, or says why it skipped; ``glsr parity`` (the CI check the pipeline
calls) catches a perturbation planted in an exported artifact, end to end through the CLI."""
import json
import shutil

import numpy as np
import pytest


def no_shipped_models(mp: pytest.MonkeyPatch, folder) -> None:
    """Make the install look like one without shipped weights (``glsr.shipped.models_dir`` -> an empty folder)."""
    import glsr.shipped

    folder.mkdir(parents=True, exist_ok=True)
    mp.setattr(glsr.shipped, "models_dir", lambda: folder)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from glsr.cli import main

    out = tmp_path_factory.mktemp("pipeline") / "run"
    with pytest.MonkeyPatch.context() as mp:  # the shipped stage has its own test below
        no_shipped_models(mp, tmp_path_factory.mktemp("no-models"))
        code = main(["pipeline", "--quick", "-o", str(out), "--threads", "1"])
    return code, out


@pytest.mark.slow
def test_quick_pipeline_runs_every_stage(quick_run):
    code, out = quick_run
    state = json.loads((out / "pipeline.json").read_text())
    statuses = {k: v["status"] for k, v in state["stages"].items()}
    expected = {k: "ok" for k in ("train", "eval", "export", "parity", "bench", "overlays", "report")}
    assert statuses == {**expected, "shipped": "skipped"}, \
        {k: (v["status"], v["detail"]) for k, v in state["stages"].items()}
    assert "glsr-small-68.pt is absent" in state["stages"]["shipped"]["detail"]
    assert code == 0 and state["quick"] is True
    for f in ("train/model.pt", "eval/eval.json", "eval/ced.png", "export/model_fp32.onnx", "export/model_fp32.mnn",
              "export/model_fp32.mlpackage", "export/model_fp32.mlmodel", "parity.json", "bench/bench.json",
              "bench/bench.md", "bench/bench.png", "overlays/procedural.png", "report.md"):
        assert (out / f).exists(), f
    report = (out / "report.md").read_text()
    for section in ("## Stages", "## Training", "## Evaluation", "## Export", "## Parity against PyTorch",
                    "## Speed", "## Shipped model (`small`)", "## Overlays", "![CED](eval/ced.png)"):
        assert section in report, section
    summary = json.loads((out / "train" / "summary.json").read_text())
    assert f"`model.pt` is the checkpoint of stage **{summary['selected']['stage']}**" in report
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"] and {r["format"] for r in parity["results"]} >= {"onnx", "mnn"}
    bench = json.loads((out / "bench" / "bench.json").read_text())
    assert {c["backend"] for c in bench["cases"]} == {"torch", "onnx", "mnn"} and bench["glue"]


@pytest.mark.slow
def test_quick_pipeline_overlays_real_photos(quick_run, lfw_dir):
    _, out = quick_run
    assert (out / "overlays" / "photos.png").is_file()
    assert "![photos](overlays/photos.png)" in (out / "report.md").read_text()


@pytest.mark.slow
def test_quick_pipeline_shipped_stage(quick_run, tmp_path, monkeypatch):
    """With a shipped ``small`` installed (here the quick run's model in its place), the shipped stage exports it,
    passes parity, times it, and the report shows all three."""
    import glsr.shipped
    from glsr.pipeline import run_pipeline

    _, first = quick_run
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    shutil.copy(first / "train" / "model.pt", zoo / "glsr-small-68.pt")
    monkeypatch.setattr(glsr.shipped, "models_dir", lambda: zoo)
    out = tmp_path / "run"
    code = run_pipeline(out, quick=True, threads=1, weights=str(first / "train" / "model.pt"),
                        skip=["eval", "export", "parity", "bench", "overlays"])
    state = json.loads((out / "pipeline.json").read_text())
    assert code == 0 and state["stages"]["shipped"]["status"] == "ok", state["stages"]["shipped"]
    assert (out / "shipped" / "export" / "glsr-small-68_fp32.onnx").is_file()
    parity = json.loads((out / "shipped" / "parity.json").read_text())
    assert parity["passed"] and {r["format"] for r in parity["results"]} == {"onnx"}
    bench = json.loads((out / "shipped" / "bench" / "bench.json").read_text())
    assert {c["backend"] for c in bench["cases"]} == {"torch"}
    report = (out / "report.md").read_text()
    section = report[report.index("## Shipped model (`small`)"):]
    assert "glsr-small-68_fp32.onnx" in section and "Passed: **True**" in section and "| torch | 1 |" in section


@pytest.mark.slow
def test_parity_cli_catches_a_planted_perturbation(quick_run, tmp_path):
    """Shift the global regressor's output bias by 0.002 (a fraction of a pixel, the size of a subtle converter
    bug) in an exported ONNX: `glsr parity` must exit 1 and name the breach; the untouched artifact passes."""
    import onnx
    from onnx import numpy_helper

    from glsr.cli import main

    _, out = quick_run
    model = out / "train" / "model.pt"
    good = tmp_path / "good" / "m_fp32.onnx"
    good.parent.mkdir()
    shutil.copy(out / "export" / "model_fp32.onnx", good)
    proto = onnx.load(str(good))
    init = next(i for i in proto.graph.initializer if i.name == "regress.pts_net.4.bias")
    b = numpy_helper.to_array(init)
    init.CopyFrom(numpy_helper.from_array((b + 0.002).astype(np.float32), init.name))
    bad = tmp_path / "bad" / "m_fp32.onnx"
    bad.parent.mkdir()
    onnx.save(proto, str(bad))

    args = ["--procedural", "2", "--lfw", "0", "--no-shared"]
    assert main(["parity", "--weights", str(model), str(good), "--json", str(tmp_path / "good.json"), *args]) == 0
    assert main(["parity", "--weights", str(model), str(bad), "--json", str(tmp_path / "bad.json"), *args]) == 1
    rep = json.loads((tmp_path / "bad.json").read_text())
    (res,) = rep["results"]
    assert not rep["passed"] and res["status"] == "fail" and res["breaches"]


def test_pipeline_rejects_bad_options(tmp_path, monkeypatch):
    from glsr.cli import main
    from glsr.pipeline import run_pipeline

    no_shipped_models(monkeypatch, tmp_path / "no-models")
    with pytest.raises(ValueError, match="unknown stage"):
        run_pipeline(tmp_path / "x", skip=["dance"])
    # a missing checkpoint fails the train stage; dependent stages are skipped, the report still comes out
    code = main(["pipeline", "--quick", "-o", str(tmp_path / "y"), "--weights", str(tmp_path / "none.pt")])
    state = json.loads((tmp_path / "y" / "pipeline.json").read_text())
    assert code == 1 and state["stages"]["train"]["status"] == "failed"
    assert state["stages"]["eval"]["status"] == "skipped" and (tmp_path / "y" / "report.md").is_file()
    # no shipped weights in this install: the shipped stage skips and says why, and that alone fails nothing
    shipped = state["stages"]["shipped"]
    assert shipped["status"] == "skipped" and "glsr-small-68.pt is absent" in shipped["detail"]
    assert "Skipped: no shipped `small` model" in (tmp_path / "y" / "report.md").read_text()


def test_report_says_which_stage_was_kept():
    from glsr.pipeline import kept_stage_lines

    summary = {"stages": [{"stage": "global", "global_step": 10, "val": {"nme": 0.061}},
                          {"stage": "finetune", "global_step": 12, "val": {"nme": 0.064}}],
               "selected": {"stage": "global", "checkpoint": "stage2-global.pt", "val_nme": 0.061}}
    text = "\n".join(kept_stage_lines(summary))
    assert "stage **global**" in text and "6.10 %" in text
    assert "| global | 10 | 6.10 | yes |" in text and "| finetune | 12 | 6.40 |  |" in text
    assert "last stage" in "\n".join(kept_stage_lines({"stages": [], "selected": None}))
