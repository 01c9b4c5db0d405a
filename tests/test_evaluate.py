"""``glsr eval``: scores on hand-made predictions, Table 4 perturbations, the prediction path, and the reports."""
from __future__ import annotations

import json

import numpy as np
import pytest

from glsr import geometry as geo
from glsr.cli import main
from glsr.models import create_model, save_checkpoint
from glsr.runtime.processing import crop_batch, metadata_for, uncrop
from glsr.schemes import get_scheme
from glsr.train.evaluate import (EvalItem, PERTURBATIONS, evaluate, format_markdown, mean_shape_predictions,
                                 open_faces, perturb_item, perturbed, predict_records, score)

SCHEME = get_scheme("68")
SIZES = dict(input_size=64, loc_size=128, face_size=128, part_size=32)


@pytest.fixture(scope="module")
def untrained_ckpts(tmp_path_factory):
    """An untrained b1 (its prediction is the mean shape placed in the box) and an untrained gsr."""
    d = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for name in ("b1", "gsr"):
        import torch
        torch.manual_seed(0)
        m = create_model(name, "68", **SIZES).eval()
        paths[name] = d / f"{name}.pt"
        save_checkpoint(m, paths[name])
    return paths


def _face(gt: np.ndarray) -> EvalItem:
    return EvalItem(np.zeros((200, 200, 3), np.uint8), gt, geo.tight_box(gt))


def test_score_hand_computed():
    rng = np.random.default_rng(0)
    gts = [rng.uniform(40, 160, (68, 2)) for _ in range(4)]
    # every point off by (3, 4) px -> error 5 px; normalized by each face's inter-pupil distance
    pred = np.stack(gts) + np.array([3.0, 4.0])
    d = np.array([np.linalg.norm(g[36:42].mean(0) - g[42:48].mean(0)) for g in gts])
    s = score(pred, np.stack(gts), SCHEME)
    np.testing.assert_allclose(s["errors"], 5.0 / d)
    assert s["nme"] == pytest.approx(np.mean(5.0 / d))
    assert all(v == pytest.approx(s["nme"]) for v in s["parts"].values())
    # only the mouth is wrong: the other parts score 0
    pred2 = np.stack(gts).copy()
    pred2[:, 48:68] += 10.0
    s2 = score(pred2, np.stack(gts), SCHEME, norm="interocular")
    assert s2["parts"]["eyes"] == 0 and s2["parts"]["mouth"] > 0
    assert s2["nme"] == pytest.approx(s2["parts"]["mouth"] * 20 / 68)
    # exact predictions: AUC 1 (up to the CED sampling step), FR 0
    s3 = score(np.stack(gts), np.stack(gts), SCHEME)
    assert s3["nme"] == 0 and s3["fr"] == 0 and s3["auc"] > 0.999


def test_perturbations_follow_table4_definitions():
    rng = np.random.default_rng(1)
    gt = rng.uniform(60, 140, (68, 2))
    item = _face(gt)
    b = item.box
    w, h = b[2] - b[0], b[3] - b[1]
    s = perturb_item(item, "scale", 0.3, rng)
    np.testing.assert_allclose(s.box[2] - s.box[0], 1.3 * w)
    np.testing.assert_allclose((s.box[:2] + s.box[2:]) / 2, (b[:2] + b[2:]) / 2)
    t = perturb_item(item, "translate", 0.2, rng)
    shift = (t.box[:2] - b[:2]) / np.array([w, h])
    assert np.linalg.norm(shift) == pytest.approx(0.2)
    np.testing.assert_allclose(t.box[2:] - t.box[:2], [w, h])
    # rotation: the image rotates about the box centre, the ground truth with it, the box stays
    import cv2
    img = np.zeros((200, 200, 3), np.uint8)
    cv2.circle(img, (int(gt[30, 0]), int(gt[30, 1])), 3, (255, 255, 255), -1)
    r = perturb_item(EvalItem(img, np.round(gt), b), "rotate", 20.0, np.random.default_rng(2))
    np.testing.assert_array_equal(r.box, b)
    x, y = np.round(r.gt[30]).astype(int)
    assert r.image[y, x].min() > 200
    c = (b[:2] + b[2:]) / 2
    assert np.linalg.norm(r.gt[30] - c) == pytest.approx(np.linalg.norm(np.round(gt[30]) - c))
    # deterministic per (seed, kind, level, face); level 0 is the identity
    a1 = perturbed([item] * 3, "translate", 0.1, seed=4)
    a2 = perturbed([item] * 3, "translate", 0.1, seed=4)
    assert all(np.array_equal(u.box, v.box) for u, v in zip(a1, a2))
    assert not np.array_equal(a1[0].box, a1[1].box)
    assert perturbed([item], "rotate", 0.0)[0] is item


def test_predictions_go_through_the_runtime_path(untrained_ckpts):
    ds = open_faces("procedural:68", "test", samples=3, seed=0)
    from glsr.train.evaluate import eval_items
    items, _ = eval_items(ds)
    pred = predict_records(untrained_ckpts["gsr"], items)
    from glsr.models import load_checkpoint
    import torch
    model = load_checkpoint(untrained_ckpts["gsr"])
    for it, p in zip(items, pred):
        x, m = crop_batch(it.image, [it.box], metadata_for(model))
        with torch.no_grad():
            want = uncrop(model(torch.from_numpy(x)).numpy(), m)[0]
        np.testing.assert_allclose(p, want, atol=1e-4)
    # an untrained network predicts its mean shape placed in the box: the baseline path agrees
    b1 = untrained_ckpts["b1"]
    np.testing.assert_allclose(mean_shape_predictions(b1, np.stack([it.box for it in items])),
                               predict_records(b1, items), atol=1e-3)


def test_evaluate_report_side_by_side_with_perturbation(untrained_ckpts, tmp_path):
    report = evaluate([str(untrained_ckpts["b1"]), str(untrained_ckpts["gsr"])], "procedural:68", perturb="scale",
                      samples=4, baseline=True)
    assert report["norm"] == "interpupil" and report["split"] == "test" and report["count"] == 4
    assert [m["label"] for m in report["models"]] == ["b1", "gsr"]
    rows = report["perturb"]["rows"]
    assert [r["level"] for r in rows] == [0.0] + list(PERTURBATIONS["scale"])
    assert rows[0]["nme"]["b1"] == pytest.approx(report["models"][0]["nme"])
    # the untrained b1 *is* the mean-shape baseline
    assert report["baseline"]["nme"] == pytest.approx(report["models"][0]["nme"], rel=1e-4)
    # a mean shape placed in an ever larger box gets ever worse
    nmes = [r["nme"]["b1"] for r in rows]
    assert all(a < b for a, b in zip(nmes, nmes[1:]))
    md = format_markdown(report)
    assert "| b1 |" in md and "| 0.5 |" in md and "Table 4" in md
    # face by face against the first model: the mean of the per-face differences, b1's own errors as reference
    (d,) = report["paired"]
    diffs = np.array(report["models"][1]["errors"]) - np.array(report["models"][0]["errors"])
    assert d["label"] == "gsr" and d["against"] == "b1" and d["faces"] == 4
    assert d["mean"] == pytest.approx(diffs.mean()) and d["better"] == int((diffs < 0).sum())
    assert diffs.min() <= d["low"] <= d["mean"] <= d["high"] <= diffs.max()
    assert (f"| gsr | {100 * d['mean']:+.3f} | {100 * d['low']:+.3f} to {100 * d['high']:+.3f} | {d['better']} / 4 |"
            in md) and "## Face by face against b1" in md
    assert "paired" not in evaluate([str(untrained_ckpts["b1"])], "procedural:68", samples=2)


def test_eval_cli_writes_json_markdown_and_plot(untrained_ckpts, tmp_path, capsys):
    out = tmp_path / "rep"
    rc = main(["eval", "--weights", str(untrained_ckpts["b1"]), "--data", "procedural:68", "--samples", "3",
               "--norm", "interocular", "--alpha", "0.08", "--json", str(out) + ".json", "--md", str(out) + ".md",
               "--plot", str(out) + ".png", "--perturb", "rotate"])
    assert rc == 0
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert rep["alpha"] == 0.08 and rep["norm"] == "interocular" and len(rep["perturb"]["rows"]) == 6
    assert (tmp_path / "rep.md").read_text().startswith("# Evaluation on procedural:68")
    assert (tmp_path / "rep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "NME (%)" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.tmp"))


def test_detector_boxes_default_to_glsr_predicts_path(untrained_ckpts):
    """``--boxes detector`` runs what ``glsr predict`` runs: YuNet by default, each face re-cropped from its first
    landmarks; ``refine=False`` scores the detector's box alone, and the other boxes are not refined."""
    from glsr.runtime.detectors import DEFAULT_DETECTOR

    w = [str(untrained_ckpts["b1"])]
    default = evaluate(w, "procedural:68", samples=2, boxes="detector")
    assert DEFAULT_DETECTOR == "yunet" and default["detector"] == "yunet" and default["refine"] is True
    assert default["boxes"] == "detector (yunet), refined" and "detector_misses" in default
    plain = evaluate(w, "procedural:68", samples=2, boxes="detector", refine=False)
    assert plain["refine"] is False and plain["boxes"] == "detector (yunet)"
    # the untrained b1 puts its mean shape in whatever box it gets: a re-crop from that shape moves the points
    assert default["models"][0]["errors"] != plain["models"][0]["errors"]
    haar = evaluate(w, "procedural:68", samples=2, boxes="detector", detector="haar", refine=False)
    assert haar["detector"] == "haar" and haar["boxes"] == "detector (haar)"
    tight = evaluate(w, "procedural:68", samples=2, boxes="tight")
    assert tight["refine"] is False and "detector" not in tight
