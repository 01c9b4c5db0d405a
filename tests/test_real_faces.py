"""Real-face training support: the 300-W validation split, the WFLW-98 -> 68 correspondence, the 68-point start
from the authors' release, ``--init`` geometry and mean shape, keeping the best stage, and scoring a model of
another scheme. The shipped weights themselves are tested in ``tests/test_shipped.py``."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from glsr.models import create_model, save_checkpoint
from glsr.schemes import SCHEME_68, SCHEME_98, WFLW98_TO_68, conversion, get_scheme
from glsr.train.datasets import VALIDATION_MODULUS, held_out, open_dataset, photo_key
from glsr.train.evaluate import point_selection, score
from glsr.train.trainer import init_geometry, read_init, select_stage, train

from conftest import SHARED
from support import jittered

DATA_300W = SHARED / "data" / "300w"


# ------------------------------------------------------------------------------------------ split


def _pts(path: Path, points: np.ndarray) -> None:
    lines = ["version: 1", f"n_points: {len(points)}", "{"] + [f"{x + 1:.3f} {y + 1:.3f}" for x, y in points] + ["}"]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def fake_300w(tmp_path_factory):
    """A 300-W tree with 120 photos (1-3 faces each) in afw/ and helen/trainset/; images are 1x1 PNG stand-ins."""
    import cv2

    root = tmp_path_factory.mktemp("w300")
    rng = np.random.default_rng(0)
    pixel = np.zeros((8, 8, 3), np.uint8)
    for folder, photos in (("afw", 60), ("helen/trainset", 60)):
        (root / folder).mkdir(parents=True)
        for k in range(photos):
            for face in range(1, 1 + int(rng.integers(1, 4))):
                stem = root / folder / f"{1000 + k}_{face}"
                cv2.imwrite(str(stem.with_suffix(".png")), pixel)
                _pts(stem.with_suffix(".pts"), rng.uniform(1, 7, size=(68, 2)))
    return root


def test_photo_key_groups_the_faces_of_one_photo(tmp_path):
    assert photo_key(tmp_path / "afw" / "1051618982_2.pts", tmp_path) == "afw/1051618982"
    assert photo_key(tmp_path / "helen" / "trainset" / "100032540_1.pts", tmp_path) == "helen/trainset/100032540"
    assert photo_key(tmp_path / "ibug" / "image_003_1.pts", tmp_path) == "ibug/image_003"
    assert photo_key(tmp_path / "lfpw" / "image_0001.pts", tmp_path) == "lfpw/image"  # last _K is the face


def test_held_out_is_a_fixed_tenth_of_photos():
    keys = [f"afw/{k}" for k in range(5000)]
    chosen = [held_out(k) for k in keys]
    assert chosen == [held_out(k) for k in keys]                          # deterministic
    assert abs(np.mean(chosen) - 1 / VALIDATION_MODULUS) < 0.015           # ~10 %


def test_fit_and_val_partition_train_by_photo(fake_300w):
    train_set = open_dataset(f"300w:{fake_300w}", split="train")
    fit = open_dataset(f"300w:{fake_300w}", split="fit")
    val = open_dataset(f"300w:{fake_300w}", split="val")
    paths = lambda ds: {r.image_path for r in ds}  # noqa: E731
    assert paths(fit) | paths(val) == paths(train_set) and not paths(fit) & paths(val)
    photos = lambda ds: {photo_key(Path(r.image_path).with_suffix(".pts"), fake_300w) for r in ds}  # noqa: E731
    assert not photos(fit) & photos(val)                                  # all faces of a photo on one side
    assert 0 < len(photos(val)) < 0.25 * len(photos(train_set))
    with pytest.raises(ValueError, match="fit"):
        open_dataset(f"300w:{fake_300w}", split="nope")


def test_shared_300w_split_sizes():
    if not DATA_300W.is_dir():
        pytest.skip(f"300-W faces not found at {DATA_300W} (../shared is only on CI and dev machines)")
    fit = open_dataset(f"300w:{DATA_300W}", split="fit")
    val = open_dataset(f"300w:{DATA_300W}", split="val")
    assert (len(fit), len(val)) == (1085, 122) and fit.skipped == val.skipped == 0
    assert {r.attributes["subset"] for r in val} == {"afw", "helen/trainset"}


# ------------------------------------------------------------------------------------------ 98 -> 68


def test_wflw98_to_68_maps_parts_and_mirror_symmetry():
    w = list(WFLW98_TO_68)
    assert len(w) == 68 and len(set(w)) == 68
    # the mirror image of point i is the mirror image of its WFLW point: flip commutes with the selection
    assert all(w[SCHEME_68.flip[i]] == SCHEME_98.flip[w[i]] for i in range(68))
    assert w[:17] == list(range(0, 33, 2))                                  # jaw: every second contour point
    assert [w[i] for i in (36, 39, 42, 45)] == [60, 64, 68, 72]             # eye corners
    assert [w[i] for i in (30, 48, 54)] == [54, 76, 82]                     # nose tip, mouth corners
    assert conversion("68", 68) == tuple(range(68))
    with pytest.raises(ValueError, match="no landmark correspondence"):
        conversion("19", "68")


def test_select_points_predicts_exactly_the_selected_points():
    from glsr.models.dpr import select_points

    m98 = jittered("gsr", "98", theta_mode="forward_pixel", context=2.0, box_scale=1.0)
    m68 = select_points(m98, "68")
    assert m68.scheme.name == "68" and m68.cfg.theta_mode == "forward_pixel" and m68.cfg.context == 2.0
    x = torch.randn(2, 3, m98.cfg.input_size, m98.cfg.input_size)
    with torch.no_grad():
        np.testing.assert_allclose(m68(x).numpy(), m98(x)[:, list(WFLW98_TO_68)].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="global-stage"):
        select_points(jittered("small", "98"), "68")


def test_import_dpr_68_matches_the_98_point_release(dpr_dir):
    from glsr.models.dpr import import_dpr

    m98, m68 = import_dpr(dpr_dir), import_dpr(dpr_dir, scheme="68")
    assert m68.box_convention == m98.box_convention == "wflw"
    x = torch.randn(1, 3, m98.cfg.input_size, m98.cfg.input_size)
    with torch.no_grad():
        assert torch.equal(m68(x), m98(x)[:, list(WFLW98_TO_68)])


def test_scoring_a_98_point_model_on_68_point_data():
    sel = point_selection("98", get_scheme("68"), "m.onnx")
    assert sel == list(WFLW98_TO_68) and point_selection("68", get_scheme("68"), "m") is None
    with pytest.raises(ValueError, match="m.onnx predicts scheme 19"):
        point_selection("19", get_scheme("68"), "m.onnx")
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 100, (3, 68, 2))
    gt[:, 36], gt[:, 45] = [10, 50], [50, 50]                               # outer corners 40 px apart
    s = score(gt + [4.0, 0.0], gt, get_scheme("68"))
    assert s["by_norm"]["interocular"] == pytest.approx(0.1)               # 4 px / 40 px
    shifted = gt + [4.0, 0.0]
    shifted[:, :34] += [0.0, -1.0]                                           # half the points 1 px up
    assert score(shifted, gt, get_scheme("68"))["offset_px"] == pytest.approx([4.0, -0.5])


# ------------------------------------------------------------------------------------------ --init, best stage


def test_init_checkpoint_brings_its_geometry_and_mean_shape(tmp_path):
    from support import TINY
    from test_trainer import four_stage_config

    src = jittered("gsr", "68", sizes=TINY, theta_mode="forward_pixel", context=2.0, box_scale=1.0)
    mean = src.mean_shape.numpy() * 0.9
    src.set_mean_shape(mean)
    save_checkpoint(src, tmp_path / "init.pt")
    init = read_init(tmp_path / "init.pt")
    assert init_geometry(init, {"context": 1.5})["context"] == 1.5          # the run's own setting wins
    assert init_geometry(init, {})["theta_mode"] == "forward_pixel"
    cfg = replace(four_stage_config(variant="small", init=str(tmp_path / "init.pt")), model=None)
    cfg = replace(cfg, stages=tuple(replace(s, epochs=e) for s, e in zip(cfg.stages, (0, 1, 0, 0))))
    out = train(cfg, tmp_path / "run")
    start = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][0]
    assert start["init"]["mean_shape"] and start["init"]["geometry"]["theta_mode"] == "forward_pixel"
    ck = torch.load(out, map_location="cpu", weights_only=False)
    assert ck["config"]["context"] == 2.0 and ck["config"]["input_size"] == TINY["input_size"]
    np.testing.assert_allclose(ck["state_dict"]["mean_shape"].numpy(), mean, atol=1e-6)
    assert ck["extra"]["box_convention"] == "procedural"
    assert ck["extra"]["lineage"] == ["init.pt"]                      # the --init chain, recorded by the run
    assert torch.equal(ck["state_dict"]["reinit.fc_loc.2.weight"], src.state_dict()["reinit.fc_loc.2.weight"])


def test_select_stage_keeps_the_lowest_held_out_nme():
    stages = [{"stage": "global", "val": {"nme": 0.05}}, {"stage": "local", "val": {"nme": 0.04}},
              {"stage": "finetune", "val": {"nme": 0.045}}]
    assert select_stage(stages)["stage"] == "local"
    assert select_stage([{"stage": "global", "val": None}]) is None
    assert select_stage([{"stage": "a", "val": {"nme": float("nan")}}, {"stage": "b", "val": {"nme": 0.2}}])["stage"] == "b"


def test_ship_stamps_the_run_and_writes_its_card(tmp_path):
    from glsr.models import load_checkpoint
    from glsr.train.ship import ship
    from test_trainer import four_stage_config

    cfg = four_stage_config()
    cfg = replace(cfg, stages=tuple(replace(s, epochs=e) for s, e in zip(cfg.stages, (1, 1, 0, 0))))
    train(cfg, tmp_path / "run")
    path = ship(tmp_path / "run", "tiny", tmp_path / "models")
    assert path.name == "glsr-tiny-68.pt"
    model = load_checkpoint(path)
    assert model.box_convention == "procedural" and model.scheme.name == "68"
    card = path.with_suffix(".md").read_text()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    kept = summary["selected"]["stage"]
    assert f"Kept: the `{kept}` stage" in card and "glsr train --config config.json --out run" in card
    assert f"{100 * summary['selected']['val_nme']:.2f} %" in card           # the run's own held-out number
    assert "- Weights started from: scratch" in card
    assert "procedural faces" in card and json.loads((tmp_path / "run" / "config.json").read_text())["seed"] == 0
    with pytest.raises(FileNotFoundError, match="finished `glsr train` run"):
        ship(tmp_path, "x", tmp_path / "models")

    # a second run of the same recipe with another seed (its weights shifted by a known amount): the two ship as
    # their average, the card lists both members, and runs of different recipes or one seed are refused
    import shutil

    shutil.copytree(tmp_path / "run", tmp_path / "run-b")
    cfg_b = json.loads((tmp_path / "run-b" / "config.json").read_text())
    (tmp_path / "run-b" / "config.json").write_text(json.dumps({**cfg_b, "seed": 1, "threads": 2}))
    ck = torch.load(tmp_path / "run" / "model.pt", map_location="cpu", weights_only=False)
    ck_b = {**ck, "state_dict": {k: (v + 1.0 if v.is_floating_point() else v) for k, v in ck["state_dict"].items()},
            "extra": {**ck["extra"], "train_config": {**ck["extra"]["train_config"], "seed": 1}}}  # as run-b trained
    torch.save(ck_b, tmp_path / "run-b" / "model.pt")
    soup = ship([tmp_path / "run", tmp_path / "run-b"], "tiny", tmp_path / "soup")
    got = torch.load(soup, map_location="cpu", weights_only=False)
    for k, v in ck["state_dict"].items():
        expected = v + 0.5 if v.is_floating_point() else v
        torch.testing.assert_close(got["state_dict"][k], expected, rtol=0, atol=1e-6)
    assert got["extra"]["soup"] == [{"run": "run", "seed": 0}, {"run": "run-b", "seed": 1}]
    assert load_checkpoint(soup).box_convention == "procedural"
    card = soup.with_suffix(".md").read_text()
    assert "glsr train --config config.json --seed 1 --out run-b" in card and "glsr ship run run-b" in card
    assert card.count(f"| {100 * summary['selected']['val_nme']:.2f} % |") >= 2         # each member's own number
    (tmp_path / "run-b" / "config.json").write_text(json.dumps({**cfg_b, "seed": 1, "weight_decay": 0.1}))
    with pytest.raises(ValueError, match="differ in weight_decay"):
        ship([tmp_path / "run", tmp_path / "run-b"], "tiny", tmp_path / "soup")
    (tmp_path / "run-b" / "config.json").write_text(json.dumps(cfg_b))
    with pytest.raises(ValueError, match="share a seed"):
        ship([tmp_path / "run", tmp_path / "run-b"], "tiny", tmp_path / "soup")


def test_study_table_rows_and_the_perturbation_table_of_the_chosen_models():
    """The study's Markdown from a hand-made record: one row per model with every column in order, and a Table 4
    block holding only the models the protocol ran on."""
    from benchmarks.studies.real_faces import markdown

    parts = {k: 0.03 for k in ("contour", "brows", "eyes", "nose", "mouth")}
    m = {"variant": "small", "face_size": 256, "stages": "global+local", "loss": "l1", "start": "scratch",
         "params": 1.5e6, "tight": {"nme": 0.04, "by_norm": {"interpupil": 0.056}, "fr": 0.0, "auc": 0.6,
                                    "parts": parts},
         "detector": {"nme": 0.05, "misses": 3}, "speed": {"ms_median": 5.0}}
    r = {"split": "val", "faces": 122, "models": {"a": m, "b": m},
         "perturb": {"scale": [{"level": 0.0, "nme": {"b": 0.04}}, {"level": 0.1, "nme": {"b": 0.0512}}]}}
    r["models"]["b"] = {**m, "detector": {"nme": 0.05, "misses": 0, "spec": "yunet", "refine": True}}
    md = markdown(r, "cmd")
    # a record from before the YuNet default names no detector: it was Haar's box and says so
    assert ("| a | small (256) | global+local | l1 | scratch | 4.00 | 5.60 | 0.00 | 0.600 | 5.00 (Haar) | 3 | 1.50 M | "
            "5.00 |" in md)
    assert "| b | small (256) | global+local | l1 | scratch | 4.00 | 5.60 | 0.00 | 0.600 | 5.00 | 0 | 1.50 M |" in md
    assert "| scale | b |" in md and "| 0.1 | 5.12 |" in md and "| scale | a" not in md


def test_study_compares_every_model_with_small_and_each_ladder_step_with_the_one_before():
    from benchmarks.studies.real_faces import LADDER, paired_lines

    small = [0.03, 0.04, 0.05, 0.06]
    ced = {"small": small, "medium": [e + 0.001 for e in small], LADDER[0]: [0.05] * 4, LADDER[1]: [0.04] * 4,
           "short": [0.1]}                                          # another face count: left out, not miscompared
    lines = paired_lines({"ced": ced})
    assert "| medium | small | +0.100 | +0.100 to +0.100 | 0 / 4 |" in lines
    assert f"| {LADDER[1]} | {LADDER[0]} | -1.000 | -1.000 to -1.000 | 4 / 4 |" in lines
    assert not any(line.startswith("| short |") for line in lines)
    assert paired_lines({"ced": {"medium": small}}) == []           # nothing to compare with


def test_study_update_replaces_and_adds_models_and_marks_timings_of_another_machine():
    """``--update``: a partial study merged into a recorded one; same label replaced in place, a new one appended,
    the rest kept; Table 4 rows merged per level; rows timed on another machine marked."""
    from benchmarks.studies.real_faces import markdown, merge_update

    parts = {k: 0.03 for k in ("contour", "brows", "eyes", "nose", "mouth")}

    def model(nme, ms):
        return {"variant": "small", "face_size": 256, "stages": "global", "loss": "adaptive", "start": "wflw",
                "params": 1.5e6, "tight": {"nme": nme, "by_norm": {"interpupil": nme * 1.4}, "fr": 0.0, "auc": 0.6,
                                           "parts": parts},
                "detector": {"nme": nme + 0.01, "misses": 3}, "speed": {"ms_median": ms}}
    base = {"split": "val", "faces": 122, "norm": "interocular", "command": "first",
            "machine": {"cpu": {"model": "Xeon"}}, "models": {"small": model(0.0373, 6.0), "b1": model(0.0384, 6.1)},
            "ced": {"small": [0.03], "b1": [0.04]},
            "perturb": {"scale": [{"level": 0.0, "nme": {"small": 0.0373, "b1": 0.0384}},
                                  {"level": 0.1, "nme": {"small": 0.04, "b1": 0.05}}]}}
    new = {"split": "val", "faces": 122, "norm": "interocular", "models": {"small": model(0.035, 5.0),
                                                                          "fast": model(0.04, 2.0)},
           "ced": {"small": [0.02], "fast": [0.05]},
           "perturb": {"scale": [{"level": 0.0, "nme": {"small": 0.035}}, {"level": 0.1, "nme": {"small": 0.038}}]}}
    out = merge_update(base, new, "second", {"cpu": {"model": "EPYC"}})
    assert list(out["models"]) == ["small", "b1", "fast"] and out["models"]["small"]["tight"]["nme"] == 0.035
    assert out["models"]["b1"] == base["models"]["b1"] and out["ced"]["small"] == [0.02]
    assert out["perturb"]["scale"][1]["nme"] == {"small": 0.038, "b1": 0.05}
    assert base["models"]["small"]["tight"]["nme"] == 0.0373                      # the record itself is untouched
    md = markdown(out, out["command"])
    assert "Updated (small, fast; EPYC): `second`" in md and "measured by an update on EPYC" in md
    assert "| 3.50 | 4.90 |" in md and md.count(" * |") == 2 and "| 6.10 |" in md  # small, fast marked; b1 not
    with pytest.raises(ValueError, match="do not belong in one table"):
        merge_update(base, {**new, "faces": 100}, "third", {"cpu": {"model": "EPYC"}})
    # --no-speed: accuracy re-measured, the recorded timing and where it was measured kept
    quiet = {**new, "models": {"small": {**model(0.034, 0.0), "speed": None}}, "ced": {"small": [0.01]}, "perturb": {}}
    kept = merge_update(out, quiet, "fourth", {"cpu": {"model": "Other"}})
    assert kept["models"]["small"]["tight"]["nme"] == 0.034 and kept["models"]["small"]["speed"] == {"ms_median": 5.0}
    assert kept["models"]["small"]["machine"] == "EPYC"
    with pytest.raises(ValueError, match="measure its speed too"):
        merge_update(out, {**quiet, "models": {"new": {**model(0.03, 0.0), "speed": None}}, "ced": {"new": [0.0]}},
                     "fifth", {"cpu": {"model": "EPYC"}})


def test_average_state_dicts_means_floats_keeps_integer_buffers_and_refuses_other_networks():
    from glsr.train.soup import average_state_dicts

    a = {"w": torch.tensor([1.0, 2.0]), "bn.num_batches_tracked": torch.tensor(7)}
    b = {"w": torch.tensor([3.0, 6.0]), "bn.num_batches_tracked": torch.tensor(9)}
    got = average_state_dicts([a, b], ["a", "b"])
    assert torch.equal(got["w"], torch.tensor([2.0, 4.0])) and int(got["bn.num_batches_tracked"]) == 7
    with pytest.raises(ValueError, match="b: w has shape"):
        average_state_dicts([a, {**b, "w": torch.zeros(3)}], ["a", "b"])
    with pytest.raises(ValueError, match="hold different tensors"):
        average_state_dicts([a, {"v": torch.zeros(2)}], ["a", "b"])
    with pytest.raises(ValueError, match="at least two"):
        average_state_dicts([a], ["a"])
