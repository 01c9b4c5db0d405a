"""The glue-floor study's arithmetic (``benchmarks.studies.glue_floor``): a form's floor is the sum of its
resampling kernels, the in-graph ones less a do-nothing call of the same runtime (never below zero), compared with
the sub-networks alone; checked on hand-made timings."""
import pytest

from benchmarks.studies.glue_floor import GOALS, _floors, markdown

TIMES = {"sub:global_reinit": 0.2, "sub:global_regress": 0.6,
         "host:warp crop": 0.10, "host:normalize crop": 0.04, "host:warp loc": 0.05, "host:normalize loc": 0.02,
         "host:warp face": 0.06, "host:normalize face": 0.03,
         "graph:noop": 0.01, "graph:loc step": 0.005, "graph:face step": 0.31}


def test_floors_sum_the_kernels_each_form_needs():
    r = _floors(TIMES)
    assert r["subnets_sum_ms"] == pytest.approx(0.8)
    assert r["kernels_ms"]["loc step"] == 0.0                 # 0.005 - 0.01: a slice cheaper than the empty call
    assert r["kernels_ms"]["face step"] == pytest.approx(0.30)
    hw, g = r["host-warp"], r["graph"]
    assert hw["floor_ms"] == pytest.approx(0.05 + 0.02 + 0.06 + 0.03)
    assert hw["floor"] == pytest.approx(0.16 / 0.8)
    assert hw["goal_ms"] == pytest.approx(GOALS["host-warp"] * 0.8)
    assert g["floor_ms"] == pytest.approx(0.10 + 0.04 + 0.0 + 0.30)
    assert g["floor"] == pytest.approx(0.44 / 0.8) and g["goal"] == GOALS["graph"]


def test_markdown_has_one_row_per_model_runtime_and_form():
    rec = {"environment": {"date": "2026-12-07", "cpu": {"model": "test cpu"}}, "loadavg": [[0, 0, 0], [0, 0, 0]],
           "rounds": 1, "command": "python -m benchmarks.studies.glue_floor",
           "models": [{"model": "m", "input_size": 196, "face_size": 136,
                       "runtimes": {"onnx": _floors(TIMES), "mnn": _floors(TIMES)}}]}
    rows = [ln for ln in markdown(rec).splitlines() if ln.startswith("| m (196 px crop")]
    assert len(rows) == 4
    assert "| onnx | host-warp | 0.800 |" in rows[0] and rows[0].endswith("| 0.160 | +20% | +15% | 0.120 |")
