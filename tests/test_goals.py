"""The project's speed goals (benchmarks.goals, a maintainers' tool outside the package) on recorded results."""
from __future__ import annotations

import json

import pytest

from benchmarks import goals
from test_bench import fake_results
from test_latency import _case, peer_cases


def test_bench_goals_from_the_cases():
    g = {row["goal"]: row for row in goals.bench_goals(fake_results())}
    assert g["small 1 thread >= 400 fps"]["met"] and g["small 1 thread >= 400 fps"]["backend"] == "onnx"
    assert g["small 1 thread >= 400 fps"]["ratio"] == pytest.approx(500 / 400)
    assert g["large 1 thread >= 9 fps"]["met"] is True and g["large 2 threads >= 18 fps"]["met"] is False
    assert g["glue small onnx 1t <= 15%"]["met"]
    assert g["exported >= 3.5x eager: small 1t b1"]["measured"] == pytest.approx(10.0)
    assert "medium 1 thread >= 120 fps" not in g  # no medium case: no row


def test_faces_goals_and_the_command(tmp_path, capsys):
    cases = peer_cases()
    rows = {r["goal"]: r for r in goals.faces_goals({"cases": cases})}
    (peer,) = [r for r in rows.values() if "MediaPipe" in r["goal"]]
    assert peer["label"] == "small onnx" and peer["measured"] == 1.5 and not peer["met"]
    (mnn,) = [r for r in rows.values() if r["goal"].startswith("small mnn")]
    assert mnn["measured"] == pytest.approx(4.0 / 3.5 - 1, abs=1e-4) and mnn["met"] is False
    cases[1]["accuracy"]["nme51"] = 0.039
    cases.append({**_case("glsr", "small@256 onnx", 1.0, 0.035, "onnx", net_fixed=0.6), "recropped": True})
    peer = [r for r in goals.faces_goals({"cases": cases}) if "MediaPipe" in r["goal"]]
    assert [(r["label"], r["met"]) for r in peer] == [("fast onnx", True), ("small@256 onnx", True)]
    assert goals.faces_goals({"cases": cases[1:]}) == [r for r in goals.faces_goals({"cases": cases[1:]})
                                                       if "MediaPipe" not in r["goal"]]  # no MediaPipe: no ratio

    bench, faces = tmp_path / "bench.json", tmp_path / "faces.json"
    bench.write_text(json.dumps(fake_results()))
    faces.write_text(json.dumps({"cases": peer_cases()}))
    assert goals.main([str(bench), str(faces), "--md", str(tmp_path / "goals.md")]) == 0
    out = capsys.readouterr().out
    assert "| large 2 threads >= 18 fps | 16.7 fps (onnx) | **no** |" in out
    assert "| small 1 thread >= 400 fps | 500.0 fps (onnx) | yes |" in out and "1.50x (small onnx)" in out
    assert (tmp_path / "goals.md").read_text() == out


def test_not_a_record_is_one_line(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"models": {}}))
    assert goals.main([str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "x.json" in err[0] and "no 'cases' list" in err[0]
