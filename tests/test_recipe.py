"""Recipes (``glsr train --recipe``): each shipped model's chain of runs as data. The last step of every shipped
recipe is the config its model's checkpoint records, and the runner chains the steps (each from the one before,
seeds averaged), ships the last one with its card, skips finished runs when run again, resumes a run with a saved
state and starts over one stopped before it saved one."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from glsr.models.checkpoint import read_checkpoint, trim_checkpoint_crop
from glsr.shipped import SHIPPED, shipped_path
from glsr.train.config import TrainConfig
from glsr.train.recipe import Recipe, load_recipe, recipe_names, run_recipe, step_config

TINY = {"variant": "small", "samples": 8, "val_samples": 4, "batch_size": 4, "threads": 1, "max_steps": 1,
        "model.input_size": 64, "model.loc_size": 128, "model.face_size": 128, "model.part_size": 32,
        "augment.samples_per_image": 2, "targets.mean_shape_samples": 64, "progress": False, "tensorboard": False,
        "stages": [{"epochs": 0, "lr": 0.002}, {"epochs": 1, "lr": 0.002}, {"epochs": 0, "lr": 0.002},
                   {"epochs": 0, "lr": 0.0002}]}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_model_has_a_recipe_ending_in_its_recorded_config(name):
    assert name in recipe_names()
    recipe = load_recipe(name)
    recorded = read_checkpoint(shipped_path(name))["extra"]["train_config"]
    ours = step_config(recipe, recipe.steps[-1], recorded["data"]).resolved().to_dict()
    theirs = TrainConfig.from_dict(recorded).resolved().to_dict()
    differ = sorted(k for k in ours if ours[k] != theirs[k])
    assert differ == ["init"] or differ == ["init", "seed"], differ   # the start is the chain's previous step
    shipped = read_checkpoint(shipped_path(name))
    assert len(recipe.steps[-1].seeds) == len(shipped["extra"]["soup"])
    trained = {"config": {**shipped["config"], **shipped["extra"].get("crop_trimmed_from", {})}, "extra": {}}
    made = trim_checkpoint_crop(trained, recipe.ship_crop, recipe.ship_align_loc)["config"]   # the crop it ships
    assert (shipped["config"]["input_size"], shipped["config"]["context"]) == (made["input_size"], made["context"])


def test_the_chain_runs_resumes_and_ships(tmp_path):
    recipe = Recipe.from_dict({"name": "tiny", "settings": TINY, "steps": [
        {"name": "a"}, {"name": "b", "settings": {"augment.flip_probability": 0}, "seeds": [0, 1]}]})
    trained = []

    def train(cfg, out, resume):
        """The first run for real; the seeds of the second step as copies of it with their own config (the chain
        logic is what is tested here; training itself is tests/test_trainer.py's)."""
        from glsr.train.trainer import train as real

        trained.append((out.name, cfg.init, cfg.seed, resume))
        events.append(f"train {out.name}")
        if out.name == "a":
            return real(cfg, out, resume)
        shutil.copytree(tmp_path / "a", out, dirs_exist_ok=True)
        (out / "config.json").write_text(cfg.to_json())
        ck = torch.load(out / "model.pt", map_location="cpu", weights_only=False)   # as this run would record it
        torch.save({**ck, "extra": {**ck["extra"], "train_config": json.loads(cfg.to_json())}}, out / "model.pt")

    events = []
    path = run_recipe(recipe, "procedural:68", tmp_path, train_fn=train, progress=events.append)
    assert [t[0] for t in trained] == ["a", "b-s0", "b-s1"]
    runs = [e for e in events if not e.startswith("[recipe tiny] shipped")]
    assert [e.split()[-1] if e.startswith("train ") else e.split()[2] for e in runs] == \
        ["a:", "a", "b-s0:", "b-s0", "b-s1:", "b-s1"]                 # each run announced just before it trains
    assert trained[0][1] is None and {t[1] for t in trained[1:]} == {str(tmp_path / "a" / "model.pt")}
    assert [t[2] for t in trained[1:]] == [0, 1]
    ck = read_checkpoint(path)
    assert path == tmp_path / "glsr-tiny-68.pt" and ck["extra"]["soup"] == [{"run": "b-s0", "seed": 0},
                                                                          {"run": "b-s1", "seed": 1}]
    assert json.loads((tmp_path / "b-s1" / "config.json").read_text())["augment"]["flip_probability"] == 0
    card = path.with_suffix(".md").read_text()
    assert "made by `glsr train --recipe tiny`" in card and "glsr ship b-s0 b-s1 --name tiny" in card
    trained.clear()
    assert run_recipe(recipe, "procedural:68", tmp_path, train_fn=train, progress=lambda m: None) == path
    assert trained == []                                   # every run finished: nothing is trained again
    shutil.rmtree(tmp_path / "b-s1")                       # stopped before its first saved state: starts over
    (tmp_path / "b-s1").mkdir()
    (tmp_path / "b-s1" / "metrics.jsonl").write_text("")
    (tmp_path / "b-s0" / "summary.json").unlink()          # stopped after a saved state: resumed
    (tmp_path / "b-s0" / "last.pt").write_bytes(b"state")
    run_recipe(recipe, "procedural:68", tmp_path, train_fn=train, progress=lambda m: None)
    assert [(t[0], t[3]) for t in trained] == [("b-s0", True), ("b-s1", False)]


def test_seeds_trained_at_once_land_where_one_at_a_time_does(tmp_path):
    """``jobs=2`` trains a step's seeds in two child processes; every run and the shipped soup are the same as
    training them one after another (only the wall time differs)."""
    recipe = Recipe.from_dict({"name": "tiny", "settings": TINY, "steps": [
        {"name": "a"}, {"name": "b", "settings": {"augment.flip_probability": 0}, "seeds": [0, 1]}]})
    one = run_recipe(recipe, "procedural:68", tmp_path / "one", progress=lambda m: None)
    two = run_recipe(recipe, "procedural:68", tmp_path / "two", progress=lambda m: None, jobs=2)
    for run in ("b-s0", "b-s1"):
        torch.testing.assert_close(read_checkpoint(tmp_path / "two" / run / "model.pt")["state_dict"],
                                   read_checkpoint(tmp_path / "one" / run / "model.pt")["state_dict"], rtol=0, atol=0)
    torch.testing.assert_close(read_checkpoint(two)["state_dict"], read_checkpoint(one)["state_dict"], rtol=0, atol=0)


def _fail_seed_one(cfg, out, resume):
    """A module-level training function (child processes import it) that fails for seed 1 only."""
    if cfg.seed == 1:
        raise RuntimeError("seed 1 failed")
    out.mkdir(parents=True, exist_ok=True)


def test_a_failed_seed_run_at_once_fails_the_chain(tmp_path, monkeypatch):
    recipe = Recipe.from_dict({"name": "tiny", "settings": {**TINY, "threads": 2}, "steps": [
        {"name": "b", "seeds": [0, 1]}]})
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    said = []
    with pytest.raises(RuntimeError, match="seed 1 failed"):
        run_recipe(recipe, "procedural:68", tmp_path, train_fn=_fail_seed_one, progress=said.append, jobs=2)
    assert (tmp_path / "b-s0").is_dir() and not (tmp_path / "glsr-tiny-68.pt").exists()
    assert "2 runs of 2 thread(s) each share 2 cores" in said[0]   # oversubscription is said, not hidden


def test_bad_recipes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown recipe 'smal'"):
        load_recipe("smal")
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"name": "x", "steps": [{"name": "a"}, {"name": "a"}]}))
    with pytest.raises(ValueError, match="two steps share a name"):
        load_recipe(bad)
    bad.write_text(json.dumps({"name": "x", "steps": [{"name": "a"}], "extra": 1}))
    with pytest.raises(ValueError, match="unknown keys \\['extra'\\]"):
        load_recipe(bad)
    recipe = Recipe.from_dict({"name": "x", "steps": [{"name": "a", "settings": {"augment.flip": 0}}]})
    with pytest.raises(ValueError, match="did you mean augment.flip_probability"):
        run_recipe(recipe, "procedural:68", tmp_path / "out", progress=lambda m: None)
    recipe = Recipe.from_dict({"name": "x", "start": {"import_dpr": {"folder": str(tmp_path / "none")}},
                               "steps": [{"name": "a"}]})
    with pytest.raises(FileNotFoundError, match="starts from the authors' release"):
        run_recipe(recipe, "procedural:68", tmp_path / "out2", progress=lambda m: None)
    assert not (tmp_path / "out2").exists()


def test_cli_refuses_flags_a_recipe_sets(tmp_path, capsys):
    from glsr.cli import main

    assert main(["train", "--recipe", "small", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--stage-epochs", "1", "1", "1", "1"]) == 2
    assert "instead of --stage-epochs" in capsys.readouterr().err
    assert main(["train", "--recipe", "small", "--data", f"300w:{tmp_path}", "--out", str(tmp_path / "o"),
                 "--jobs", "0"]) == 2
    assert "--jobs 0: give 1 or more" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "o"), "--jobs", "2"]) == 2
    assert "--jobs runs seeds of a --recipe" in capsys.readouterr().err and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_the_shipped_small_recipe_runs_every_step_end_to_end(tmp_path):
    """``glsr train --recipe small`` for real, one optimizer step per stage: the authors' release imported, three
    steps each from the one before, four seeds averaged into the shipped file with its card, and a re-run that
    trains nothing. ~1 min on 2 cores; the accuracy of a full run is not checked here (hours of CPU)."""
    from conftest import SHARED

    data = SHARED / "data" / "300w"
    if not (data.is_dir() and (SHARED / "reference" / "dpr_wflw").is_dir()):
        pytest.skip("needs ../shared/data/300w and ../shared/reference/dpr_wflw")
    from glsr.cli import main

    from importlib import resources

    raw = json.loads((resources.files("glsr.train") / "recipes" / "small.json").read_text())
    raw["start"]["import_dpr"]["folder"] = str(SHARED / "reference" / "dpr_wflw")  # wherever pytest runs from
    path = tmp_path / "small.json"
    path.write_text(json.dumps(raw))
    args = ["train", "--recipe", str(path), "--data", f"300w:{data}", "--out", str(tmp_path / "out"),
            "--set", "max_steps=1", "--set", "val_limit=4", "--set", "threads=1"]
    assert main(args) == 0
    out = tmp_path / "out"
    inits = {r: json.loads((out / r / "config.json").read_text())["init"]
             for r in ("small-1", "small-2", "small-s-s0", "small-s-s3")}
    assert inits == {"small-1": str(out / "start.pt"), "small-2": str(out / "small-1" / "model.pt"),
                     "small-s-s0": str(out / "small-2" / "model.pt"), "small-s-s3": str(out / "small-2" / "model.pt")}
    shipped = read_checkpoint(out / "glsr-small-68.pt")
    assert [m["seed"] for m in shipped["extra"]["soup"]] == [0, 1, 2, 3]
    assert shipped["extra"]["box_convention"] == "tight" and "300-W" in shipped["extra"]["licence"]
    members = [read_checkpoint(out / f"small-s-s{s}" / "model.pt")["state_dict"] for s in range(4)]
    name = next(k for k, v in members[0].items() if v.is_floating_point() and not torch.equal(v, members[1][k]))
    torch.testing.assert_close(shipped["state_dict"][name], sum(m[name] for m in members) / 4)   # the soup
    assert "made by `glsr train --recipe small`" in (out / "glsr-small-68.md").read_text()
    import numpy as np

    from glsr.runtime import Predictor

    image = np.full((240, 240, 3), 127, np.uint8)
    assert Predictor.from_file(out / "glsr-small-68.pt").predict(image, [[60, 60, 180, 180]]).shape == (1, 68, 2)
    runs = sorted(out.glob("*/model.pt"))
    before = [r.stat().st_mtime_ns for r in runs]
    assert main(args) == 0                                                     # finished runs kept: nothing retrained
    assert len(runs) == 6 and [r.stat().st_mtime_ns for r in runs] == before
    torch.testing.assert_close(read_checkpoint(out / "glsr-small-68.pt")["state_dict"], shipped["state_dict"])
