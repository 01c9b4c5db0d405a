"""Per-face latency and accuracy comparison (glsr.bench.latency): the stages are the Predictor's own code path,
the crop / net / uncrop split adds up, scoring, the report files and CLI errors. Times nothing (a fake clock
stands in where the bookkeeping is checked); speed figures live in benchmarks/results."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from glsr.bench import latency
from glsr.bench.peers import StagedLandmarker
from support import SMALL, jittered


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class ClockedLandmarker(StagedLandmarker):
    """Stages that advance a fake clock by fixed amounts (seconds): crop 1 ms, net 5 ms, uncrop 0.5 ms."""

    name = "clocked"

    def __init__(self, clock: FakeClock):
        self.clock = clock

    def crop(self, image, boxes):
        self.clock.t += 0.001
        return boxes

    def net(self, state):
        self.clock.t += 0.005
        return state

    def uncrop(self, state):
        self.clock.t += 0.0005
        return np.zeros((1, 68, 2))


def test_latency_split_adds_up(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    face = latency.Face(np.zeros((8, 8, 3), np.uint8), np.zeros((68, 2)), np.array([0, 0, 4, 4.0]))
    r = latency.time_landmarker(ClockedLandmarker(clock), [face, face], budget_s=0.1)
    assert r["crop"]["median_ms"] == pytest.approx(1.0)
    assert r["net"]["median_ms"] == pytest.approx(5.0)
    assert r["uncrop"]["median_ms"] == pytest.approx(0.5)
    assert r["staged"]["median_ms"] == pytest.approx(6.5)
    assert r["e2e"]["median_ms"] == pytest.approx(6.5)
    assert r["calls"] >= 2 * 3 and r["rounds"] >= 3


def test_score68():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 100, (3, 68, 2))
    gt[:, 36] = [20, 50]
    gt[:, 45] = [80, 50]  # inter-ocular distance 60
    pred = gt + [3.0, 0.0]  # 5 % everywhere
    s = latency.score68(pred, gt)
    assert s["nme68"] == pytest.approx(0.05) and s["nme51"] == pytest.approx(0.05)
    assert s["failures"] == 0 and s["count"] == 3
    pred[0, :17] += [0.0, 60.0]  # jaw off by 100 % on one face: NME51 unchanged, NME68 a failure
    s = latency.score68(pred, gt)
    assert s["nme51"] == pytest.approx(0.05) and s["failures"] == 1
    assert s["nme68"] > 0.05


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    from glsr.models import save_checkpoint

    d = tmp_path_factory.mktemp("lat")
    ckpt = d / "tiny.pt"
    save_checkpoint(jittered("gsr", sizes=SMALL), ckpt)
    return ckpt, latency.export_glsr(ckpt, ["onnx"], "fp32", d / "art", None)["onnx"]


def test_glsr_stages_are_the_predictor(small_onnx, flush_denormals):
    from glsr.runtime.predictor import Predictor

    _, onnx = small_onnx
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (300, 320, 3), dtype=np.uint8)
    box = np.array([60.0, 50.0, 250.0, 260.0])
    lm = latency.GlsrLandmarker(onnx, threads=1)
    ref = Predictor.from_file(onnx, threads=1).predict(image, box)
    np.testing.assert_array_equal(lm.predict(image, box), ref)
    np.testing.assert_array_equal(lm.uncrop(lm.net(lm.crop(image, box))), ref)
    t0 = time.perf_counter()
    out, stages = lm.predict_timed(image, box)
    total = time.perf_counter() - t0
    np.testing.assert_array_equal(out, ref)
    assert all(s > 0 for s in stages) and sum(stages) <= total
    assert lm.describe()["input_size"] == SMALL["input_size"]


def test_run_faces_writes_the_report(small_onnx, tmp_path, flush_denormals):
    """fp32 and int8 of one model: both rows, the "int8 against fp32" section and, where int8 is not faster, its
    per-op profile (forced below on the same two artifacts, since which precision wins here is not the point)."""
    from glsr.bench import int8

    ckpt, _ = small_onnx
    cfg = latency.FacesConfig(models=[str(ckpt)], peers=[], backends=["onnx"], precisions=["fp32", "int8"],
                              budget_s=0.05, faces="procedural:68", split="test", limit=3, timing_faces=2,
                              isolate=False, work=str(tmp_path / "w"), profile_runs={"onnx": 3},
                              progress=lambda m: None)
    res = latency.run_faces(cfg)
    assert not res["errors"], res["errors"]
    case, _ = res["cases"]
    assert case["accuracy"]["count"] == 3 and case["model"] == "tiny" and case["backend"] == "onnx"
    assert set(case["latency"]) >= {"e2e", "crop", "net", "uncrop", "staged", "net_fixed"}
    over = res["summary"]["e2e_overhead"][0]
    assert "met" not in over and over["crop_plus_net_ms"] == pytest.approx(
        case["latency"]["crop"]["median_ms"] + case["latency"]["net_fixed"]["median_ms"], abs=1e-3)
    (e,) = res["int8_vs_fp32"]
    assert (e["fp32"], e["int8"]) == ("tiny onnx fp32", "tiny onnx int8")
    assert e["faster"] == (e["ratio_e2e"] < 1) and ("profile" in e) == (not e["faster"])
    paths = latency.write_faces(res, tmp_path / "out")
    assert [c["label"] for c in json.loads(paths["json"].read_text())["cases"]] == ["tiny onnx fp32",
                                                                                   "tiny onnx int8"]
    md = paths["md"].read_text()
    assert "| tiny | onnx | fp32 |" in md and paths["png"].stat().st_size > 0
    assert "## int8 against fp32" in md and e["verdict"] in md
    forced = [{**e, "faster": False}]
    arts = {f"tiny onnx {p}": str(next((tmp_path / "w" / "tiny" / f"{p}-graph").glob("*.onnx")))
            for p in ("fp32", "int8")}
    int8.attach_profiles(forced, arts, runs={"onnx": 3}, isolate=False, progress=lambda m: None)
    p = forced[0]["profile"]
    assert p["fp32"]["runs"] == 3 and p["int8"]["runs"] == 3
    int8_only = {r["op"] for r in p["ops"]["rows"] if r["only"] == "int8"}
    assert "QLinearConv" in int8_only or "QuantizeLinear" in int8_only, p["ops"]["rows"]
    assert p["ops"]["total"]["int8_ms"] == pytest.approx(sum(o["ms"] for o in p["int8"]["by_op"]), abs=1e-3)
    assert sum(f["int8_ms"] for f in p["families"]) == pytest.approx(p["ops"]["total"]["int8_ms"], abs=1e-3)
    md = "\n".join(int8.markdown(forced))
    assert "### tiny onnx: int8 against fp32 per op type" in md and "(int8 only)" in md and "| all op types |" in md
    assert "Each int8 kernel counted with the fp32 op it replaces" in md
    json.dumps(forced)  # the record stays JSON


def test_model_sources_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        latency.model_sources([str(tmp_path / "missing.pt")])


def test_cli_unknown_peer_is_one_line(capsys):
    from glsr.cli import main

    code = main(["bench", "--peers", "openface"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "unknown peer" in err[0]


def test_cli_unknown_backend_of_the_per_face_comparison_is_one_line(capsys, tmp_path):
    from glsr.cli import main

    code = main(["bench", "--peers", "none", "--models", "small", "--backends", "onnx", "tflite", "-o",
                 str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--backends tflite" in err[0] and not (tmp_path / "out").exists()


def _case(kind, label, e2e, nme51, backend=None, crop=0.5, net=None, net_fixed=None):
    lat = {"e2e": {"median_ms": e2e, "p90_ms": e2e}, "crop": {"median_ms": crop},
           "net": {"median_ms": e2e - crop if net is None else net}, "uncrop": {"median_ms": 0.0},
           "staged": {"median_ms": e2e}}
    if net_fixed is not None:
        lat["net_fixed"] = {"median_ms": net_fixed}
    return {"kind": kind, "label": label, "model": label, "backend": backend or kind, "precision": "fp32",
            "latency": lat, "accuracy": {"nme68": nme51 + 0.01, "nme51": nme51, "failures": 0, "count": 1},
            "landmarker": {"name": label}}


def peer_cases():
    return [_case("mediapipe", "mp", 2.0, 0.040),
            _case("glsr", "fast onnx", 1.5, 0.045, "onnx", net_fixed=1.0),     # faster, less accurate
            _case("glsr", "small onnx", 3.0, 0.035, "onnx", net_fixed=2.4),    # more accurate, 1.5x
            _case("glsr", "small mnn", 4.0, 0.035, "mnn", crop=0.5, net_fixed=3.0)]


def test_summary_of_a_peer_run():
    cases = peer_cases()
    s = latency.summarize_faces({"cases": cases})
    assert {r["label"]: r["ratio_e2e"] for r in s["ratios"]} == {"fast onnx": 0.75, "small onnx": 1.5,
                                                                  "small mnn": 2.0}
    assert s["fastest_more_accurate"]["label"] == "small onnx" and s["fastest_more_accurate"]["ratio"] == 1.5
    mnn = next(r for r in s["e2e_overhead"] if r["label"] == "small mnn")
    assert mnn["overhead"] == pytest.approx(4.0 / 3.5 - 1, abs=1e-4) and "met" not in mnn
    cases[1]["accuracy"]["nme51"] = 0.039                                       # now the fast one beats MediaPipe
    s = latency.summarize_faces({"cases": cases})
    assert s["fastest_more_accurate"]["label"] == "fast onnx"
    assert latency.summarize_faces({"cases": cases[1:]})["fastest_more_accurate"] is None  # no MediaPipe row
    assert "fastest_more_accurate_recropped" not in s
    # a re-cropped row (the same weights at a smaller input crop) counts only in the second line
    cases.append({**_case("glsr", "small@256 onnx", 1.0, 0.035, "onnx", net_fixed=0.6), "recropped": True})
    s = latency.summarize_faces({"cases": cases})
    assert s["fastest_more_accurate"]["label"] == "fast onnx"
    assert s["fastest_more_accurate_recropped"]["label"] == "small@256 onnx"
    md = latency.markdown({"cases": cases, "summary": s, "errors": [], "skipped": [],
                           "environment": {"date": "d", "host": "h", "platform": "p", "python": "3",
                                           "cpu": {"model": "m", "cores": 2, "flags": []}, "libraries": {},
                                           "glsr": "0", "commit": None},
                           "config": {"faces": "f", "split": "val", "timing_faces": 16, "threads": 1, "budget_s": 1}})
    assert "fast onnx: 1.500 ms" in md and "small@256 onnx, 1.000 ms = **0.50x**" in md
    assert "goal" not in md.lower() and " met" not in md


def test_command_line():
    assert latency.command_line(["/x/glsr/__main__.py", "bench", "--peers", "mediapipe,dlib"]) == \
        "glsr bench --peers mediapipe,dlib"
    assert latency.command_line(["/usr/bin/glsr", "bench", "--models", "a b.pt"]) == "glsr bench --models 'a b.pt'"
    assert latency.command_line(["/x/glsr/cli.py", "bench", "--time", "1"]) == "glsr bench --time 1"
    assert latency.command_line(["/x/other/cli.py", "bench"]) == "/x/other/cli.py bench"


def test_with_input_size_keeps_the_image_geometry(small_onnx, tmp_path, flush_denormals):
    """Re-cropping keeps the weights and maps the same image region: on a smooth image the landmarks in image
    pixels move by at most resampling noise (a wrong crop -> loc theta or output scale moves them by tens of px)."""
    import cv2

    from glsr.models import load_checkpoint
    from glsr.runtime.predictor import Predictor

    ckpt, _ = small_onnx
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (300, 320, 3)).astype(np.uint8), (0, 0), 6)
    image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX)
    box = np.array([60.0, 50.0, 250.0, 260.0])
    ref = Predictor.from_file(ckpt).predict(image, box)
    same = latency.with_input_size(ckpt, SMALL["input_size"], tmp_path / "same.pt")
    np.testing.assert_array_equal(Predictor.from_file(same).predict(image, box), ref)
    for size, bound in ((96, 2.5), (384, 1.0)):     # measured 1.68 px and 0.46 px
        path = latency.with_input_size(ckpt, size, tmp_path / f"s{size}.pt")
        assert latency.checkpoint_input_size(path) == size
        a, b = load_checkpoint(ckpt).state_dict(), load_checkpoint(path).state_dict()
        assert a.keys() == b.keys() and all(torch_equal(a[k], b[k]) for k in a)
        out = Predictor.from_file(path).predict(image, box)
        assert np.abs(out - ref).max() < bound, (size, np.abs(out - ref).max())


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_cli_bad_input_size_is_one_line(capsys):
    from glsr.bench.cli import parse_input_sizes
    from glsr.cli import main

    assert parse_input_sizes(["native", "256,320"]) == [None, 256, 320]
    code = main(["bench", "--peers", "none", "--models", "x.pt", "--input-sizes", "native", "big"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--input-sizes" in err[0] and "'big'" in err[0]
