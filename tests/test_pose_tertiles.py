"""The pose-tertile study's summary on hand-made predictions: per-tertile NME and the paired comparison of two rows
(``--pair A:B``) against the metric written out by hand."""
import numpy as np

from benchmarks.studies.pose_tertiles import add_mean_row, markdown, summarize
from glsr.pose import pose_tertiles, yaw_index
from glsr.shapes import template_shape


def _raw():
    rng = np.random.default_rng(0)
    gts = []
    for k in range(12):  # the template with its nose moved further and further: yaw thirds of 4 faces each
        g = template_shape("68").copy()
        g[30, 0] += 0.03 * k
        gts.append(g * 100 + 200)
    gt = np.stack(gts)
    rows = {}
    for name, scale in (("ref", 1.0), ("a", 2.0), ("b", 3.0)):
        pred = gt + scale * rng.normal(size=gt.shape)
        rows[name] = {"pred": list(pred), "disagreement": list(rng.uniform(0, 1, 12)), "found": 12}
    return {"rows": rows, "gt": gt, "ms": None, "count": 12}


def test_paired_rows_follow_the_per_face_errors():
    raw = _raw()
    v = summarize(raw, "ref", [("a", "b")])
    gt = raw["gt"]
    tert, _ = pose_tertiles(yaw_index(gt, "68"))
    iod = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=1)
    err = {k: np.linalg.norm(np.stack(r["pred"]) - gt, axis=2).mean(1) / iod for k, r in raw["rows"].items()}
    (p,) = v["paired"]
    assert (p["row"], p["against"]) == ("a", "b")
    for t in range(3):
        m = tert == t
        assert p["tertiles"][t]["faces"] == m.sum()
        assert np.isclose(p["tertiles"][t]["mean"], (err["a"][m] - err["b"][m]).mean())
        assert np.isclose(v["rows"]["a"]["tertiles"][t]["nme"], err["a"][m].mean())
    assert np.isclose(p["all"]["mean"], (err["a"] - err["b"]).mean())
    assert p["all"]["mean"] < 0  # a's noise is smaller than b's


def test_markdown_lists_the_pair():
    r = {"command": "python -m benchmarks.studies.pose_tertiles a=A b=B --pair a:b", "date": "d", "reference": "ref",
         "models": {"ref": "ref", "a": "A", "b": "B"}, "machine": {"cpu": "cpu", "cores": 2, "opencv": "4"},
         "val": summarize(_raw(), "ref", [("a", "b")])}
    text = markdown(r)
    assert "`a` against `b`" in text and "* large yaw:" in text
    assert "`a` against" not in markdown({**r, "val": summarize(_raw(), "ref")})


def test_a_mean_row_averages_its_members_face_by_face():
    raw = _raw()
    add_mean_row(raw, "a+b", ["a", "b"])
    a, b = (np.stack(raw["rows"][k]["pred"]) for k in ("a", "b"))
    assert np.allclose(np.stack(raw["rows"]["a+b"]["pred"]), (a + b) / 2)
    assert raw["rows"]["a+b"]["disagreement"] == raw["rows"]["a"]["disagreement"]
    v = summarize(raw, "ref", [("a+b", "a")])
    assert v["rows"]["a+b"]["nme"] < v["rows"]["b"]["nme"]   # independent noise: the mean is nearer than b's
