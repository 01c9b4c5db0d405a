"""A model runs only the stages it has: a local stage whose last layers are exactly zero is found, dropped from
export and inference (output unchanged), and the artifacts' metadata, ``glsr models`` and the card generator say
which stages run."""
import numpy as np
import pytest
import torch

from glsr.export import export_model
from glsr.formats import read_metadata
from glsr.models.complexity import format_shipped, shipped_rows
from glsr.runtime.predictor import Predictor
from support import jittered

pytestmark = pytest.mark.usefixtures("flush_denormals")


def _inert_local(model):
    """``model`` with every local regressor's last layer zeroed (as the shipped small and medium are)."""
    with torch.no_grad():
        for net in model.local_regress:
            net.fc[-1].weight.zero_()
            net.fc[-1].bias.zero_()
    return model


def test_inert_local_stage_is_found_and_dropped_without_changing_the_output():
    model = _inert_local(jittered("small", scale=0.02))
    assert model.inert_stages() == ("local-reinit", "local-regress")
    run = model.without_inert_stages()
    assert run.stages == ("global-reinit", "global-regress(small_mnv2)") and run.local_reinit is None
    assert model.local_reinit is not None and "local-regress" in model.stages  # the original is untouched
    x = torch.randn(2, 3, model.cfg.input_size, model.cfg.input_size)
    with torch.no_grad():
        np.testing.assert_allclose(run(x).numpy(), model(x).numpy(), atol=1e-3)  # px: float rounding only
    assert sum(p.numel() for p in run.parameters()) < sum(p.numel() for p in model.parameters())


def test_a_local_stage_with_one_nonzero_weight_is_kept():
    model = _inert_local(jittered("small", scale=0.02))
    with torch.no_grad():
        model.local_regress[2].fc[-1].bias[3] = 1e-6
    assert model.inert_stages() == () and model.without_inert_stages() is model
    assert jittered("gsr").inert_stages() == ()  # no local stage at all


@pytest.mark.parametrize("host_warp", [False, True])
def test_export_drops_the_inert_stage_and_says_so(tmp_path, host_warp):
    model = _inert_local(jittered("small", scale=0.02))
    res = export_model(model=model, formats="onnx", out_dir=tmp_path, name="m", host_warp=host_warp)
    assert res.passed and any("not exported" in n for n in res.notes)
    meta = read_metadata(res.artifacts[0])
    assert meta.stages == "global-reinit > global-regress(small_mnv2)"
    if host_warp:
        assert sorted(meta.host_warp["graphs"]) == ["global", "reinit"]
    img = np.random.default_rng(0).integers(0, 255, (260, 240, 3), dtype=np.uint8)
    box = [60.0, 70.0, 170.0, 190.0]
    ref = Predictor.from_file(res.artifacts[0], threads=1).predict(img, box)
    full = jittered("small", scale=0.02)
    kept = export_model(model=full, formats="onnx", out_dir=tmp_path / "full", name="m", host_warp=host_warp)
    assert read_metadata(kept.artifacts[0]).stages.endswith("local-reinit > local-regress") and not kept.notes
    assert ref.shape == (1, 68, 2) and np.isfinite(ref).all()


def test_shipped_models_table_names_the_stages_run():
    rows = {r.model: r for r in shipped_rows()}
    if "small" not in rows:
        pytest.skip("shipped small checkpoint not present")
    assert rows["small"].stages == "global-reinit > global-regress(small_mnv2)"
    assert rows["small"].not_run == "local-reinit > local-regress"
    if "small-fast" in rows:   # shipped with --drop-local: its local stage did not help on held-out faces
        assert rows["small-fast"].not_run == "local-reinit > local-regress"
    assert "| small | small | 512 |" in format_shipped(list(rows.values()))


def test_drop_local_stage_makes_the_stage_inert_and_says_so(tmp_path):
    from glsr.models.checkpoint import (LOCAL_DROPPED_KEY, drop_local_stage, model_from_checkpoint, read_checkpoint,
                                        save_checkpoint)

    model = jittered("small", "68").eval()
    save_checkpoint(model, tmp_path / "m.pt")
    ck = read_checkpoint(tmp_path / "m.pt")
    dropped = drop_local_stage(ck)
    assert dropped["extra"][LOCAL_DROPPED_KEY] is True and LOCAL_DROPPED_KEY not in (ck.get("extra") or {})
    net = model_from_checkpoint(dropped, tmp_path / "m.pt")
    assert net.inert_stages() == ("local-reinit", "local-regress")
    assert not model_from_checkpoint(ck, tmp_path / "m.pt").inert_stages()     # the original is not changed
    x = torch.randn(1, 3, net.cfg.input_size, net.cfg.input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():   # the landmarks are the global stage's
        out = net(x, intermediates=True)
        torch.testing.assert_close(out["shape_face"], out["shape_g"], atol=1e-5, rtol=0)
    gsr = jittered("gsr", "68")
    save_checkpoint(gsr, tmp_path / "g.pt")
    with pytest.raises(ValueError, match="no local stage to drop"):
        drop_local_stage(read_checkpoint(tmp_path / "g.pt"))


def test_glsr_ship_drop_local_ships_the_run_without_its_local_stage(tiny_run, tmp_path):
    from glsr.cli import main
    from glsr.models.checkpoint import load_checkpoint
    from support import copy_run

    run = copy_run(tiny_run, tmp_path / "run")
    assert main(["ship", str(run), "--name", "t", "-o", str(tmp_path / "m"), "--drop-local"]) == 0
    (pt,) = (tmp_path / "m").glob("*.pt")
    assert load_checkpoint(pt).inert_stages() == ("local-reinit", "local-regress")
    card = pt.with_suffix(".md").read_text()
    assert "Stages run: global-reinit > global-regress(small_mnv2) (local-reinit > local-regress carried" in card
    assert "- Shipped without its local stage (`glsr ship --drop-local`)" in card
    opening = card.splitlines()[2]                       # names what runs, not the variant's full description
    assert "Small MobileNetV2, its local stage carried but not run;" in opening
    assert "+ local stage" not in opening and "px parts" not in opening


def test_parity_takes_the_checkpoint_of_an_export_that_dropped_a_stage(tmp_path):
    """``glsr parity --weights CKPT`` on an artifact that ``glsr export`` wrote without CKPT's inert local stage: the
    artifact declares the digest of the weights it carries, which parity accepts as the checkpoint's."""
    import json

    from glsr.cli import main
    from glsr.models.checkpoint import atomic_torch_save, drop_local_stage, read_checkpoint, save_checkpoint

    save_checkpoint(jittered("small", "68"), tmp_path / "m.pt")
    atomic_torch_save(drop_local_stage(read_checkpoint(tmp_path / "m.pt")), tmp_path / "m.pt")
    assert main(["export", "--weights", str(tmp_path / "m.pt"), "--format", "onnx", "-o", str(tmp_path / "out"),
                 "--no-parity"]) == 0
    (art,) = (tmp_path / "out").glob("*.onnx")
    report = tmp_path / "parity.json"
    assert main(["parity", "--weights", str(tmp_path / "m.pt"), str(art), "--json", str(report), "--procedural", "2",
                 "--lfw", "0", "--no-shared"]) == 0
    assert [r["status"] for r in json.loads(report.read_text())["results"]] == ["pass"]
