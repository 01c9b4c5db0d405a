"""``glsr pipeline --quick``: every stage runs with tiny budgets and one report folder comes out; ``glsr parity``
(the CI check the pipeline calls) catches a perturbation planted in an exported artifact, end to end through the
CLI."""
import json
import shutil

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from glsr.cli import main

    n = torch.get_num_threads()
    torch.set_num_threads(1)  # eager PyTorch with 2 threads crawls on a loaded shared machine
    out = tmp_path_factory.mktemp("pipeline") / "run"
    try:
        code = main(["pipeline", "--quick", "-o", str(out), "--threads", "1"])
    finally:
        torch.set_num_threads(n)
    return code, out


def test_quick_pipeline_runs_every_stage(quick_run):
    code, out = quick_run
    state = json.loads((out / "pipeline.json").read_text())
    statuses = {k: v["status"] for k, v in state["stages"].items()}
    assert statuses == {k: "ok" for k in ("train", "eval", "export", "parity", "bench", "overlays", "report")}, \
        {k: (v["status"], v["detail"]) for k, v in state["stages"].items()}
    assert code == 0 and state["quick"] is True
    for f in ("train/model.pt", "eval/eval.json", "eval/ced.png", "export/model_fp32.onnx", "export/model_fp32.mnn",
              "export/model_fp32.mlpackage", "export/model_fp32.mlmodel", "parity.json", "bench/bench.json",
              "bench/bench.md", "bench/bench.png", "overlays/procedural.png", "report.md"):
        assert (out / f).exists(), f
    report = (out / "report.md").read_text()
    for section in ("## Stages", "## Training", "## Evaluation", "## Export", "## Parity against PyTorch",
                    "## Speed", "## Overlays", "![CED](eval/ced.png)"):
        assert section in report, section
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"] and {r["format"] for r in parity["results"]} >= {"onnx", "mnn"}
    bench = json.loads((out / "bench" / "bench.json").read_text())
    assert {c["backend"] for c in bench["cases"]} == {"torch", "onnx", "mnn"} and bench["glue"]


def test_quick_pipeline_overlays_real_photos(quick_run, lfw_dir):
    _, out = quick_run
    assert (out / "overlays" / "photos.png").is_file()
    assert "![photos](overlays/photos.png)" in (out / "report.md").read_text()


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


def test_pipeline_rejects_bad_options(tmp_path, capsys):
    from glsr.cli import main
    from glsr.pipeline import run_pipeline

    with pytest.raises(ValueError, match="unknown stage"):
        run_pipeline(tmp_path / "x", skip=["dance"])
    # a missing checkpoint fails the train stage; dependent stages are skipped, the report still comes out
    code = main(["pipeline", "--quick", "-o", str(tmp_path / "y"), "--weights", str(tmp_path / "none.pt")])
    state = json.loads((tmp_path / "y" / "pipeline.json").read_text())
    assert code == 1 and state["stages"]["train"]["status"] == "failed"
    assert state["stages"]["eval"]["status"] == "skipped" and (tmp_path / "y" / "report.md").is_file()
