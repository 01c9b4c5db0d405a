"""Distillation (``python -m benchmarks.distill``, a research tool outside the package, through the trainer's target
hook ``glsr.train.hooks``): its command line (glsr train's own arguments after ``--``), the teachers' frame (the
data set's loc frame), the blend, refused teachers, the targets and loss of a training step against the blend
written out, a run whose targets come from the teacher alone, its card, and resuming."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from benchmarks.distill import Distill, Teachers, main, parse, teacher_sentence
from glsr.cli import build_parser
from glsr.models import create_model, get_variant, load_checkpoint, save_checkpoint
from glsr.paths import portable
from glsr.schemes import get_scheme
from glsr.train.cli import config_from_args
from glsr.train.config import StageConfig, TrainConfig
from glsr.train.hooks import RECORD_KEY, TargetHook
from glsr.train.trainer import STATE_FILE, Trainer, train
from tests.test_trainer import TINY_LR, TINY_MODEL, events, four_stage_config


def _tiny_checkpoint(path, seed: int = 1, **overrides):
    torch.manual_seed(seed)
    model = create_model("small", "68", **{**TINY_MODEL.as_kwargs(), **overrides})
    save_checkpoint(model.eval(), path)
    return model.eval()


def _student():
    return get_variant("small", **TINY_MODEL.as_kwargs()), get_scheme("68")


# ------------------------------------------------------------------------------------------ command line


def test_command_line_is_glsr_trains_with_the_teachers_in_front(tmp_path):
    glsr_args = ["--out", "o", "--seed", "3", "--set", "loss.kind=l1"]
    want = config_from_args(build_parser().parse_args(["train", *glsr_args]))
    hook, cfg, args = parse(["--teacher", "small", "x.pt", "--teacher-weight", "0.3", "--", *glsr_args])
    assert isinstance(hook, TargetHook) and (hook.specs, hook.weight) == (["small", "x.pt"], 0.3)
    assert cfg == want and args.out == "o" and not args.resume
    hook, cfg, _ = parse(["--teacher", "small", *glsr_args])            # without "--"; the default weight
    assert (hook.specs, hook.weight, cfg) == (["small"], 0.5, want)
    assert parse(["--teacher", "small", "--teacher-weight", "0", "--", "--out", "o"])[0] is None  # annotation alone
    legacy = tmp_path / "c.json"  # a config of earlier glsr versions, with teachers: the tool reads them
    legacy.write_text(json.dumps({"seed": 3, "distill": {"teachers": ["a.pt", "b.pt"], "weight": 0.25}}))
    hook, cfg, _ = parse(["--", "--config", str(legacy), "--out", "o"])
    assert (hook.specs, hook.weight, cfg) == (["a.pt", "b.pt"], 0.25, TrainConfig(seed=3))
    hook, _, _ = parse(["--teacher", "m.pt", "--", "--config", str(legacy), "--out", "o"])   # flags override it
    assert (hook.specs, hook.weight) == (["m.pt"], 0.25)
    with pytest.raises(ValueError, match="single string"):
        Distill("a.pt")


@pytest.mark.parametrize("argv, message", [
    (["--", "--out", "o"], "give the teachers: --teacher W"),
    (["--teacher", "a.pt", "--teacher-weight", "1.5", "--", "--out", "o"], "--teacher-weight 1.5: give a share"),
    (["--teacher", "a.pt", "--teacher-weight", "nan", "--", "--out", "o"], "give a share in 0..1"),
    (["--teacher", "a.pt", "--", "--out", "o", "--bogus", "1"], "glsr train does not take --bogus 1"),
    (["--teacher", "a.pt", "--", "--out", "o", "--recipe", "small"], "distill a single run"),
    (["--teacher", "a.pt", "--", "--out", "o", "--seed", "-1"], "argument --seed: -1 is out of range"),
    (["--teacher", "missing.pt", "--", "--out", "OUT"], "teacher 'missing.pt': model file missing.pt does not exist"),
])
def test_bad_use_is_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "o").exists() and not (tmp_path / "OUT").exists()     # refused before the run starts


def test_card_sentence_names_teachers_blend_and_licence():
    text = teacher_sentence(0.25, [{"teacher": "small", "sha256": "ab" * 32},
                                   {"teacher": "medium", "sha256": "cd" * 32}])
    assert "0.75 x the annotation + 0.25 x the mean prediction of `small` (sha256 abababababab)" in text
    assert "`medium` (sha256 cdcdcdcdcdcd)" in text and "licence" in text and "benchmarks.distill" in text


# ------------------------------------------------------------------------------------------ frame and blend


def test_teacher_landmarks_land_in_the_data_sets_loc_frame(tmp_path):
    """The map the teachers' outputs go through is the one that made each sample's ``landmarks_loc`` from its
    ``landmarks_crop``; the blend is the point-wise lerp of annotation and mean teacher prediction."""
    a = _tiny_checkpoint(tmp_path / "a.pt", seed=1)
    b = _tiny_checkpoint(tmp_path / "b.pt", seed=2)
    trainer = Trainer(four_stage_config(), tmp_path / "run")
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


class Blend:
    """The targets of ``glsr train --teacher`` before the move, written out independently of the tool: ``(1 - w) *
    annotation + w * mean over teachers of their crop-pixel landmarks mapped by loc_from_crop``."""

    def __init__(self, paths, weight: float):
        self.paths, self.weight = paths, weight

    def start(self, run, recorded):
        self.models = [load_checkpoint(p).eval() for p in self.paths]
        self.loc = torch.tensor(run.loc_from_crop, dtype=torch.float32)
        return {"command": "blend"}

    def __call__(self, crop, lm):
        with torch.no_grad():
            mean = sum(m(crop) for m in self.models) / len(self.models)
        return (1 - self.weight) * lm + self.weight * (mean @ self.loc[:, :2].T + self.loc[:, 2])


class Recorder:
    """A hook around another that keeps the first batch it saw and the targets it returned."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def start(self, run, recorded):
        return self.inner.start(run, recorded)

    def __call__(self, crop, lm):
        out = self.inner(crop, lm)
        if not self.seen:
            self.seen = [crop.clone(), lm.clone(), out.clone()]
        return out


def test_a_distilled_step_trains_on_the_blend_of_annotation_and_teachers(tmp_path):
    """The tool's targets of a step are the blend (checked on the batch itself), and each step's loss (global and
    local stages) is the one the blend written out gives; without teachers the losses differ."""
    for seed in (1, 2):
        _tiny_checkpoint(tmp_path / f"t{seed}.pt", seed=seed)
    paths = [str(tmp_path / "t1.pt"), str(tmp_path / "t2.pt")]
    cfg = four_stage_config(max_steps=2, stages=(StageConfig(0, TINY_LR), StageConfig(1, TINY_LR),
                                                 StageConfig(1, TINY_LR), StageConfig(0, TINY_LR)))
    tool = Recorder(Distill(paths, 0.3))
    train(cfg, tmp_path / "tool", target_hook=tool)
    train(cfg, tmp_path / "blend", target_hook=Blend(paths, 0.3))
    train(cfg, tmp_path / "plain")
    crop, lm, out = tool.seen
    assert crop.shape == (4, 3, 64, 64) and lm.shape == out.shape == (4, 68, 2)
    np.testing.assert_allclose(out.numpy(), _started_blend(paths, 0.3)(crop, lm).numpy(), atol=1e-5)
    assert float((out - lm).abs().max()) > 0.01
    loss = {r: [(e["stage"], e["loss"]) for e in events(tmp_path / r, "step")] for r in ("tool", "blend", "plain")}
    assert [s for s, _ in loss["tool"]] == ["global", "global", "local", "local"]
    np.testing.assert_allclose([v for _, v in loss["tool"]], [v for _, v in loss["blend"]], rtol=1e-5)
    assert all(abs(a - b) > 1e-3 * abs(b) for (_, a), (_, b) in zip(loss["tool"], loss["plain"]))


def _started_blend(paths, weight: float) -> Blend:
    """A :class:`Blend` started for the tiny student (its loc_from_crop), to recompute one batch's targets."""
    from glsr.train.augment import loc_from_crop_pixels
    from glsr.train.hooks import RunInfo

    vcfg, scheme = _student()
    blend = Blend(paths, weight)
    blend.start(RunInfo(vcfg, scheme, "procedural", torch.device("cpu"), True, loc_from_crop_pixels(vcfg), "run"),
                None)
    return blend


def _self_distill_config(teacher) -> TrainConfig:
    """The global stage only, BatchNorm frozen, started from the teacher itself: the student's training forward
    then computes what the teacher computes."""
    return four_stage_config(init=str(teacher), freeze_batchnorm=True, max_steps=2,
                       stages=(StageConfig(0, TINY_LR), StageConfig(1, TINY_LR), StageConfig(0, TINY_LR),
                               StageConfig(0, TINY_LR)))


def test_a_student_distilled_from_itself_alone_starts_at_zero_loss_and_its_card_says_so(tmp_path):
    teacher = tmp_path / "t.pt"
    _tiny_checkpoint(teacher)
    train(_self_distill_config(teacher), tmp_path / "w1", target_hook=Distill([str(teacher)], 1.0))
    train(_self_distill_config(teacher), tmp_path / "w0")      # what the tool does for --teacher-weight 0
    first = {w: events(tmp_path / w, "step")[0]["global"] for w in ("w0", "w1")}
    assert first["w0"] > 1.0            # the annotation: the random start is far from it (about 21)
    assert first["w1"] < 1e-4           # the teacher alone: the start predicts its own targets
    record = json.loads((tmp_path / "w1" / "summary.json").read_text())[RECORD_KEY]
    assert record["teachers"][0]["path"] == str(teacher) and len(record["teachers"][0]["sha256"]) == 64
    assert RECORD_KEY not in json.loads((tmp_path / "w0" / "summary.json").read_text())
    assert "distill" not in json.loads((tmp_path / "w1" / "config.json").read_text())
    from glsr.train.ship import ship

    card = ship(tmp_path / "w1", "tiny", tmp_path / "models").with_suffix(".md").read_text()
    sha = record["teachers"][0]["sha256"][:12]
    assert f"were 0 x the annotation + 1 x the mean prediction of `{portable(teacher)}` (sha256 {sha})" in card
    assert (f"python -m benchmarks.distill --teacher {portable(teacher)} --teacher-weight 1 -- --config config.json "
            "--out w1") in card
    plain = ship(tmp_path / "w0", "tiny", tmp_path / "m0").with_suffix(".md").read_text()
    assert "Distilled" not in plain and "glsr train --config config.json --out w0" in plain
    with pytest.raises(ValueError, match="different target hooks"):   # no weight average of w0 and w1
        ship([tmp_path / "w0", replace_seed(tmp_path / "w1", tmp_path / "w1s")], "tiny", tmp_path / "soup")


def replace_seed(run, dst):
    """A copy of a run folder that says it was trained with seed 1 (its checkpoints' records too)."""
    import shutil

    shutil.copytree(run, dst)
    cfg = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**cfg, "seed": 1}))
    for ck in dst.glob("*.pt"):
        blob = torch.load(ck, weights_only=False)
        if "extra" in blob:
            blob["extra"]["train_config"]["seed"] = 1
            torch.save(blob, ck)
    return dst


def test_resume_needs_the_same_teachers_unchanged(tmp_path):
    teacher = tmp_path / "t.pt"
    _tiny_checkpoint(teacher, seed=1)
    cfg = replace(_self_distill_config(teacher), max_steps=None)
    out = tmp_path / "run"
    train(cfg, out, target_hook=Distill([str(teacher)], 0.5))
    assert (out / STATE_FILE).is_file()
    Trainer(cfg, out, resume=True, target_hook=Distill([str(teacher)], 0.5)).run()     # the same: resumes
    with pytest.raises(ValueError, match="trained with a target hook .*benchmarks.distill"):
        Trainer(cfg, out, resume=True)                                                  # glsr train --resume
    with pytest.raises(ValueError, match="resume it with the same teachers and weight"):
        Trainer(cfg, out, resume=True, target_hook=Distill([str(teacher)], 0.25))
    _tiny_checkpoint(teacher, seed=2)
    with pytest.raises(ValueError, match="is not the file this run started with"):
        Trainer(cfg, out, resume=True, target_hook=Distill([str(teacher)], 0.5)).run()
    plain = tmp_path / "plain"
    train(cfg, plain)
    with pytest.raises(ValueError, match="started without a target hook"):
        Trainer(cfg, plain, resume=True, target_hook=Distill([str(teacher)], 0.5))
