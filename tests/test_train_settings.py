"""``glsr train --set KEY=VALUE``: any TrainConfig field by its dotted path, checked against the dataclasses, the
same config as the dedicated flags, and a one-line error naming the closest keys for a typo."""
from __future__ import annotations

import pytest

from glsr.cli import build_parser, main
from glsr.train.cli import config_from_args
from glsr.train.config import STAGE_NAMES, TrainConfig, apply_settings, setting_keys


def config(*argv: str) -> TrainConfig:
    return config_from_args(build_parser().parse_args(["train", "--out", "run", *argv]))


def test_settings_equal_the_flags():
    assert config("--set", "augment.flip_probability=0") == config("--flip-probability", "0")
    assert config("--data", "300w:x", "--set", "stages.global.lr=0.0003", "--set", "stages.reinit.epochs=0") == \
        config("--data", "300w:x", "--stage-lr", "0.01", "0.0003", "0.01", "0.001", "--stage-epochs", "0", "150",
               "150", "150")
    assert config("--set", "loss.kind=l1", "--set", "model.face_size=136") == config("--loss", "l1",
                                                                                     "--face-size", "136")
    assert config("--set", "augment.color_jitter=0.3,0.1") == config("--color-jitter", "0.3", "0.1")


def test_values_are_typed_and_settings_come_last():
    cfg = apply_settings(TrainConfig(), ["weight_decay=1e-4", "batch_size=16", "amp=false", "init=null",
                                         "augment.color_jitter=[0.3, 0.1]", "stages.1.epochs=2.0"])
    assert cfg.weight_decay == 1e-4 and cfg.batch_size == 16 and cfg.amp is False and cfg.init is None
    assert tuple(cfg.augment.color_jitter) == (0.3, 0.1) and cfg.stages[1].epochs == 2
    assert config("--seed", "3", "--set", "seed=5").seed == 5
    assert apply_settings(TrainConfig(), []) == TrainConfig()


@pytest.mark.parametrize("setting, message", [
    ("augment.flip_probabilty=0", "did you mean augment.flip_probability"),
    ("stages.warmup.lr=1", "unknown setting"),
    ("seed=x", "expected a whole number"),
    ("amp=1", "expected true or false"),
    ("weight_decay=fast", "expected a number"),
    ("stages.global.lr=-1", "learning rate must be > 0"),
    ("optimizer=rmsprop", "optimizer must be one of sgd, adam"),
    ("seed", "give KEY=VALUE"),
])
def test_bad_settings_are_one_line(setting, message):
    with pytest.raises(ValueError, match=message):
        apply_settings(TrainConfig(), [setting])


def test_every_field_has_a_key():
    keys = set(setting_keys())
    plain = TrainConfig().resolved().to_dict()
    assert {k for k, v in plain.items() if not isinstance(v, (dict, list))} <= keys
    assert {f"augment.{k}" for k in plain["augment"]} <= keys and {f"loss.{k}" for k in plain["loss"]} <= keys
    assert {f"stages.{n}.lr" for n in STAGE_NAMES} <= keys


def test_cli_refuses_a_bad_setting_before_writing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--set", "los.kind=l1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean loss.kind" in err and not out.exists()


def help_text(capsys, flag: str) -> str:
    with pytest.raises(SystemExit) as e:
        main(["train", flag])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_help_offers_at_most_30_options_and_help_all_the_rest(capsys):
    from glsr.train.cli import RESEARCH_FLAGS

    short, full = help_text(capsys, "--help"), help_text(capsys, "--help-all")
    shown = [line.split()[0].rstrip(",") for line in short.splitlines() if line.startswith("  -")]
    assert len(shown) <= 30 and "--set" in shown and "--data" in shown and "--init" in shown
    assert not set(shown) & set(RESEARCH_FLAGS) and "--help-all" in short
    assert all(f in full for f in RESEARCH_FLAGS)
    assert config("--flip-probability", "0", "--optimizer", "adam") == config(   # still accepted
        "--set", "augment.flip_probability=0", "--set", "optimizer=adam")


def test_flags_fill_default_budgets_as_the_data_makes_them():
    """A geometry or stage flag starts from the defaults of the data given with it: the registered variant's sizes
    and the paper's stages for 300-W, procedural data's small ones otherwise."""
    from glsr.train.config import ModelOverrides, PROCEDURAL_DEFAULTS, paper_stages

    assert config("--data", "300w:x", "--input-size", "272").model == ModelOverrides(input_size=272)
    assert config("--input-size", "272").model == ModelOverrides(**{**PROCEDURAL_DEFAULTS["model"].as_kwargs(),
                                                                     "input_size": 272})
    assert config("--data", "300w:x", "--lr", "0.002").stages[1].epochs == paper_stages()[1].epochs
    assert [s.epochs for s in config("--lr", "0.002").stages] == list(PROCEDURAL_DEFAULTS["stage_epochs"])


def test_configs_recorded_before_distillation_moved_out_still_load(tmp_path, capsys):
    """``distill`` (moved to ``python -m benchmarks.distill``): dropped when it had no teachers (or weight 0), as
    every run recorded before the move holds; refused in one line naming the tool when it had teachers."""
    assert TrainConfig.from_dict({"seed": 2, "distill": {"teachers": [], "weight": 0.5}}) == TrainConfig(seed=2)
    assert TrainConfig.from_dict({"distill": {"teachers": ["small"], "weight": 0.0}}) == TrainConfig()
    with pytest.raises(ValueError, match=r'config.distill: teachers \["small", "medium"\] at weight 0.5: .*'
                                         "python -m benchmarks.distill --teacher"):
        TrainConfig.from_dict({"distill": {"teachers": ["small", "medium"], "weight": 0.5}})
    with pytest.raises(ValueError, match="--set distill.weight: not a glsr train setting any more; .*distill --"):
        apply_settings(TrainConfig(), ["distill.weight=0.3"])
    assert "distill" not in TrainConfig().to_dict() and not any(k.startswith("distill") for k in setting_keys())
    old = tmp_path / "old.json"
    old.write_text('{"seed": 1, "distill": {"teachers": ["small"], "weight": 0.5}}')
    assert main(["train", "--config", str(old), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--config {old}: config.distill" in err[0] and not (tmp_path / "run").exists()
