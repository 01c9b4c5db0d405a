"""Distillation (glsr.train.teacher): the config and its flags, the teachers' frame (the data set's loc frame),
the blend, refused teachers, and a run whose targets come from the teacher alone."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from glsr.models import create_model, get_variant, save_checkpoint
from glsr.schemes import get_scheme
from glsr.train.cli import config_from_args
from glsr.train.config import DistillConfig, StageConfig, TrainConfig
from glsr.train.teacher import Teachers, teacher_sentence
from glsr.train.trainer import STATE_FILE, Trainer, train
from tests.test_trainer import TINY_LR, TINY_MODEL, events, tiny_config


def _tiny_checkpoint(path, seed: int = 1, **overrides):
    torch.manual_seed(seed)
    model = create_model("small", "68", **{**TINY_MODEL.as_kwargs(), **overrides})
    save_checkpoint(model.eval(), path)
    return model.eval()


def _student():
    return get_variant("small", **TINY_MODEL.as_kwargs()), get_scheme("68")


# ------------------------------------------------------------------------------------------ config


def test_distill_config_validation_json_and_flags(tmp_path):
    with pytest.raises(ValueError, match=r"weight must be in \[0, 1\]"):
        DistillConfig(teachers=("a.pt",), weight=1.5)
    with pytest.raises(ValueError, match="single string"):
        DistillConfig(teachers="a.pt")
    assert not DistillConfig().active and not DistillConfig(("a.pt",), 0.0).active
    cfg = TrainConfig(distill=DistillConfig(["a.pt", "b.pt"], 0.25))
    assert cfg.distill.teachers == ("a.pt", "b.pt")          # lists from JSON become tuples: resume compares equal
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg
    from glsr.cli import build_parser

    args = build_parser().parse_args(["train", "--teacher", "small", "x.pt", "--teacher-weight", "0.3", "--out", "o"])
    assert config_from_args(args).distill == DistillConfig(("small", "x.pt"), 0.3)
    assert config_from_args(build_parser().parse_args(["train", "--out", "o"])).distill == DistillConfig()


def test_card_sentence_names_teachers_blend_and_licence():
    assert teacher_sentence({"teachers": [], "weight": 0.5}) == ""
    text = teacher_sentence({"teachers": ["small", "medium"], "weight": 0.25},
                            [{"teacher": "small", "sha256": "ab" * 32}, {"teacher": "medium", "sha256": "cd" * 32}])
    assert "0.75 x the annotation + 0.25 x the mean prediction of `small` (sha256 abababababab)" in text
    assert "`medium` (sha256 cdcdcdcdcdcd)" in text and "licence" in text


# ------------------------------------------------------------------------------------------ frame and blend


def test_teacher_landmarks_land_in_the_data_sets_loc_frame(tmp_path):
    """The map the teachers' outputs go through is the one that made each sample's ``landmarks_loc`` from its
    ``landmarks_crop``; the blend is the point-wise lerp of annotation and mean teacher prediction."""
    a = _tiny_checkpoint(tmp_path / "a.pt", seed=1)
    b = _tiny_checkpoint(tmp_path / "b.pt", seed=2)
    trainer = Trainer(tiny_config(), tmp_path / "run")
    teachers = Teachers.load([str(tmp_path / "a.pt"), str(tmp_path / "b.pt")], 0.25, trainer.vcfg, trainer.scheme,
                             trainer.model.box_convention)
    batch = torch.utils.data.default_collate([trainer.data[(0, i)] for i in range(3)])
    np.testing.assert_allclose(teachers.to_loc(batch["landmarks_crop"]).numpy(), batch["landmarks_loc"].numpy(),
                               atol=1e-5)
    crop, lm = batch["crop"], batch["landmarks_loc"]
    with torch.no_grad():
        mean_crop = (a(crop) + b(crop)) / 2
    want_teacher = teachers.to_loc(mean_crop)
    np.testing.assert_allclose(teachers.predict_loc(crop).numpy(), want_teacher.numpy(), atol=1e-5)
    np.testing.assert_allclose(teachers.blend(crop, lm).numpy(), (0.75 * lm + 0.25 * want_teacher).numpy(),
                               atol=1e-5)
    assert all(not p.requires_grad for m in teachers.models for p in m.parameters())
    assert [r["variant"] for r in teachers.records] == ["small", "small"] and len(teachers.records[0]["sha256"]) == 64


def test_teachers_that_read_another_crop_or_scheme_are_refused(tmp_path):
    vcfg, scheme = _student()
    _tiny_checkpoint(tmp_path / "big.pt", input_size=96)
    with pytest.raises(ValueError, match=r"another crop.*input_size 96 \(student 64\)"):
        Teachers.load([str(tmp_path / "big.pt")], 0.5, vcfg, scheme, "")
    torch.manual_seed(0)
    save_checkpoint(create_model("small", "98", **TINY_MODEL.as_kwargs()).eval(), tmp_path / "p98.pt")
    with pytest.raises(ValueError, match="98-point scheme; the training data is 68-point"):
        Teachers.load([str(tmp_path / "p98.pt")], 0.5, vcfg, scheme, "")
    m = _tiny_checkpoint(tmp_path / "tight.pt")
    m.box_convention = "tight"
    save_checkpoint(m, tmp_path / "tight.pt", extra={"box_convention": "tight"})
    with pytest.raises(ValueError, match="trained on 'tight' boxes; this run trains on 'procedural' boxes"):
        Teachers.load([str(tmp_path / "tight.pt")], 0.5, vcfg, scheme, "procedural")
    with pytest.raises(FileNotFoundError, match="teacher 'missing.pt'"):
        Teachers.load(["missing.pt"], 0.5, vcfg, scheme, "")


# ------------------------------------------------------------------------------------------ in a run


def _distill_config(teacher, weight: float) -> TrainConfig:
    """The global stage only, BatchNorm frozen, started from the teacher itself: the student's training forward
    then computes what the teacher computes."""
    return tiny_config(init=str(teacher), freeze_batchnorm=True, max_steps=2,
                       stages=(StageConfig(0, TINY_LR), StageConfig(1, TINY_LR), StageConfig(0, TINY_LR),
                               StageConfig(0, TINY_LR)),
                       distill=DistillConfig((str(teacher),), weight))


def test_a_student_distilled_from_itself_alone_starts_at_zero_loss_and_its_card_says_so(tmp_path):
    teacher = tmp_path / "t.pt"
    _tiny_checkpoint(teacher)
    first = {}
    for w in (0.0, 1.0):
        out = tmp_path / f"w{w}"
        train(_distill_config(teacher, w), out)
        first[w] = events(out, "step")[0]["global"]
    assert first[0.0] > 1.0            # the annotation: the random start is far from it (about 21)
    assert first[1.0] < 1e-4           # the teacher alone: the start predicts its own targets
    summary = json.loads((tmp_path / "w1.0" / "summary.json").read_text())
    assert summary["teachers"][0]["path"] == str(teacher) and len(summary["teachers"][0]["sha256"]) == 64
    assert "teachers" not in json.loads((tmp_path / "w0.0" / "summary.json").read_text())
    from glsr.train.ship import ship

    card = ship(tmp_path / "w1.0", "tiny", tmp_path / "models").with_suffix(".md").read_text()
    sha = summary["teachers"][0]["sha256"][:12]
    assert f"were 0 x the annotation + 1 x the mean prediction of `{teacher}` (sha256 {sha})" in card
    assert "Distilled" not in ship(tmp_path / "w0.0", "tiny", tmp_path / "m0").with_suffix(".md").read_text()


def test_resume_refuses_a_teacher_file_that_changed(tmp_path):
    teacher = tmp_path / "t.pt"
    _tiny_checkpoint(teacher, seed=1)
    cfg = replace(_distill_config(teacher, 0.5), max_steps=None)
    out = tmp_path / "run"
    train(cfg, out)
    assert (out / STATE_FILE).is_file()
    _tiny_checkpoint(teacher, seed=2)
    with pytest.raises(ValueError, match="is not the file this run started with"):
        Trainer(cfg, out, resume=True).run()
