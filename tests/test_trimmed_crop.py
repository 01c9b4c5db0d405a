"""A model shipped at another crop than it was trained at (``glsr ship --crop``, ``--align-loc``): a trimmed crop
keeps the pixel scale and loc window in image pixels, an aligned one puts the loc pixels on crop pixels (the graph
slices the loc off the crop, with the resampler's values); the checkpoint remembers the crop it was trained at, the
shipped small-fast predicts near its trained geometry, and the card says so."""
import shutil

import numpy as np
import pytest

from glsr import geometry as geo
from glsr.models.checkpoint import TRIM_KEY, model_from_checkpoint, read_checkpoint, trim_checkpoint_crop
from glsr.models.network import crop_loc_theta, loc_window
from glsr.models.registry import get_variant, trimmed_crop
from glsr.shipped import shipped_path

FAST = get_variant("small", input_size=272, context=2.0, face_size=136, part_size=40)


def loc_from_image(cfg, box):
    """Loc pixels from image pixels for ``box`` under ``cfg``'s crop geometry."""
    crop_from_image = geo.crop_from_image(np.asarray(box, np.float64), cfg.input_size, cfg.crop_enlarge)
    crop_from_loc = geo.compose(geo.pixel_from_norm(cfg.input_size), crop_loc_theta(cfg.input_size, cfg.loc_size,
                                                                                  cfg.context),
                                geo.norm_from_pixel(cfg.loc_size))
    return geo.compose(geo.invert_affine(crop_from_loc), crop_from_image)


@pytest.mark.parametrize("size", [208, 192, 137, 300])
def test_trimmed_crop_keeps_the_loc_window_and_pixel_scale(size):
    t = trimmed_crop(FAST, size)
    assert t.input_size == size and t.context == pytest.approx(2.0 * (size - 1) / 271)
    for box in ([10, 20, 110, 140], [-30.5, 7.25, 400, 380]):
        np.testing.assert_allclose(loc_from_image(t, box), loc_from_image(FAST, box), atol=1e-9)
        a = geo.crop_from_image(np.asarray(box, np.float64), FAST.input_size, FAST.crop_enlarge)
        b = geo.crop_from_image(np.asarray(box, np.float64), size, t.crop_enlarge)
        np.testing.assert_allclose(a[:, :2], b[:, :2], rtol=1e-12)      # crop pixels per image pixel unchanged


def test_a_crop_without_the_loc_region_is_refused():
    with pytest.raises(ValueError, match="would not hold its loc region; give at least 137 px"):
        trimmed_crop(FAST, 136)


@pytest.mark.parametrize("size, context, window", [
    (196, 195 / 127, (34, 1, 1)), (197, 196 / 127, (34, 2, 1)), (509, 2.0, (127, 1, 2)), (512, 511 / 254, (128, 2, 2)),
    (384, 383 / 381, (1, 1, 3)), (208, 1.52768, None), (512, 2.0, None)])
def test_the_loc_is_read_off_a_loc_aligned_crop_with_the_resamplers_values(size, context, window):
    """Loc pixel j at crop pixel a + k j: k whole and a whole -> a (strided) slice, a half -> 2x2 means; the values
    are bilinear sampling's there (to float rounding of the grid), else the network resamples."""
    import torch

    from glsr.models.factory import create_model

    assert loc_window(size, 128, context) == window
    m = create_model("small", input_size=size, context=context, face_size=64, part_size=32).eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    resampled = m._sample(x, m.crop_from_loc.expand(2, 2, 3), m.grid_loc, 128)
    torch.testing.assert_close(m.loc_image(x), resampled, atol=3e-4, rtol=0)


def test_align_loc_puts_the_loc_pixels_on_crop_pixels():
    t = trimmed_crop(FAST, 196, align_loc=True)                       # 272 px at context 2: 1.07 crop px per loc px
    assert t.input_size == 196 and t.context == pytest.approx(195 / 127)
    assert loc_window(t.input_size, t.loc_size, t.context) == (34, 1, 1)
    small = get_variant("small", input_size=512, context=2.0)          # 2.01 crop px per loc px
    assert trimmed_crop(small, 512, align_loc=True).context == pytest.approx(511 / 254)
    with pytest.raises(ValueError, match="at 1 crop px per loc px .* give at least 128 px"):
        trimmed_crop(FAST, 127, align_loc=True)
    ck = {"config": FAST.to_dict(), "extra": {}, "state_dict": {}}
    a = trim_checkpoint_crop(ck, None, align_loc=True)                 # None: at its present size
    assert a["config"]["input_size"] == 272 and a["extra"][TRIM_KEY] == {"input_size": 272, "context": 2.0}
    assert trim_checkpoint_crop(trim_checkpoint_crop(ck, 208), 196, True)["config"] == t.to_dict()   # from the trained


def test_trimming_a_checkpoint_remembers_the_trained_crop():
    ck = {"config": FAST.to_dict(), "extra": {"licence": "x"}, "state_dict": {}}
    t = trim_checkpoint_crop(ck, 208)
    assert t["config"]["input_size"] == 208 and t["extra"][TRIM_KEY] == {"input_size": 272, "context": 2.0}
    assert ck["config"]["input_size"] == 272 and TRIM_KEY not in ck["extra"]        # the original is not changed
    again = trim_checkpoint_crop(t, 192)                                              # the first trained crop is kept
    assert again["config"]["input_size"] == 192 and again["extra"][TRIM_KEY]["input_size"] == 272
    back = trim_checkpoint_crop(again, 272)
    assert back["config"] == FAST.to_dict() and back["extra"] == {"licence": "x"}


def test_shipped_small_fast_reads_its_loc_off_the_crop_and_predicts_near_its_trained_geometry():
    """small-fast ships at a 196 px crop aligned to its loc (``glsr ship --crop 196 --align-loc``): the graph slices
    the loc off the crop, and the 0.94x pixel scale moves the landmarks little against the trained 272 px geometry
    (measured on 8 procedural faces: mean 0.19 px, worst face 0.52 px; on the 122 300-W val faces NME 4.00 % both,
    per-face difference -0.002 points: ``glsr eval --weights small-fast FILE --data 300w:DIR --split val``)."""
    import torch

    from glsr.export.parity import procedural_faces
    from glsr.runtime.processing import crop_batch, metadata_for, uncrop

    path = shipped_path("small-fast")
    ck = read_checkpoint(path)
    assert ck["config"]["input_size"] == 196 and ck["extra"][TRIM_KEY] == {"input_size": 272, "context": 2.0}
    shipped = model_from_checkpoint(ck, path).without_inert_stages()
    trained = model_from_checkpoint(trim_checkpoint_crop(ck, 272), path).without_inert_stages()
    assert shipped.loc_window == (34, 1, 1) and trained.loc_window is None
    assert trained.cfg.input_size == 272 and trained.cfg.context == 2.0
    moved = []
    with torch.no_grad():
        for f in procedural_faces("68", 8):
            out = []
            for m in (shipped, trained):
                x, crop_from_image = crop_batch(f.image, geo.tight_box(f.gt)[None], metadata_for(m))
                out.append(uncrop(m(torch.from_numpy(x)).numpy(), crop_from_image)[0])
            moved.append(float(np.linalg.norm(out[0] - out[1], axis=1).mean()))
    assert np.mean(moved) < 0.3 and max(moved) < 0.8, moved


def test_ship_card_crop_rewrites_the_geometry_and_the_card(tmp_path, capsys):
    from benchmarks.ship import main

    pt = tmp_path / "glsr-x-68.pt"
    shutil.copy(shipped_path("small-fast"), pt)
    assert main(["--card", str(pt), "--name", "x", "--crop", "272"]) == 0
    assert read_checkpoint(pt)["config"]["input_size"] == 272 and TRIM_KEY not in read_checkpoint(pt)["extra"]
    card = pt.with_suffix(".md").read_text()
    assert "272 px crop = box x 2," in card and "Shipped at a" not in card
    assert main(["--card", str(pt), "--name", "x", "--crop", "208"]) == 0
    ck = read_checkpoint(pt)
    assert ck["config"]["input_size"] == 208 and ck["extra"][TRIM_KEY]["input_size"] == 272
    card = pt.with_suffix(".md").read_text()
    assert "208 px crop = box x 1.52768," in card
    assert "- Shipped at a 208 px crop (context 1.52768), trimmed from the 272 px crop (context 2)" in card
    before = pt.read_bytes()
    capsys.readouterr()
    assert main(["--card", str(pt), "--name", "x", "--crop", "120"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "give at least 137 px" in err[0] and pt.read_bytes() == before   # nothing rewritten
    assert main(["--card", str(pt), "--name", "x", "--crop", "196", "--align-loc"]) == 0
    ck = read_checkpoint(pt)
    assert ck["config"]["context"] == pytest.approx(195 / 127) and ck["extra"][TRIM_KEY]["input_size"] == 272
    assert ("- Shipped at a 196 px crop (context 1.53543), aligned to the loc image's pixels, from the 272 px crop "
            "(context 2) it was trained at (`glsr ship --crop 196 --align-loc`): 0.937x its pixel scale, so the graph "
            "reads its 128 px loc image off the crop (a slice from crop pixel 34)") in pt.with_suffix(".md").read_text()


def test_glsr_ship_crop_ships_a_run_at_a_trimmed_crop(tiny_run, tmp_path, capsys):
    """`glsr ship RUN --crop PX` (the product's ship, which a recipe's "ship": {"crop": PX} calls): the shipped file
    has the smaller crop at the same pixel scale, remembers the trained one, and its card says so; a crop that would
    not hold the loc region is one line and writes nothing."""
    from glsr.cli import main
    from support import copy_run

    run = copy_run(tiny_run, tmp_path / "run")
    trained = read_checkpoint(run / "model.pt")["config"]
    size = trained["input_size"] * 3 // 4 + 1
    assert main(["ship", str(run), "--name", "t", "-o", str(tmp_path / "m"), "--crop", str(size)]) == 0
    (pt,) = (tmp_path / "m").glob("*.pt")
    ck = read_checkpoint(pt)
    assert ck["config"]["input_size"] == size
    assert ck["extra"][TRIM_KEY] == {"input_size": trained["input_size"], "context": trained["context"]}
    assert ck["config"]["context"] == pytest.approx(trained["context"] * (size - 1) / (trained["input_size"] - 1))
    assert f"- Shipped at a {size} px crop" in pt.with_suffix(".md").read_text()
    capsys.readouterr()
    assert main(["ship", str(run), "--name", "t", "-o", str(tmp_path / "m2"), "--crop", "3"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "give at least" in err[0] and not (tmp_path / "m2").exists()
    # --align-loc: the 96 px crop holds fewer pixels than the 128 px loc, so at its own size it is refused ...
    assert main(["ship", str(run), "--name", "t", "-o", str(tmp_path / "m3"), "--align-loc"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 crop px per loc px" in err[0] and "give at least 128 px" in err[0]
    assert not (tmp_path / "m3").exists()
    # ... and at 192 px the loc is crop pixels 32..159, which the shipped network slices off its crop
    assert main(["ship", str(run), "--name", "t", "-o", str(tmp_path / "m4"), "--crop", "192", "--align-loc"]) == 0
    (pt,) = (tmp_path / "m4").glob("*.pt")
    cfg = read_checkpoint(pt)["config"]
    assert cfg["input_size"] == 192 and loc_window(192, cfg["loc_size"], cfg["context"]) == (32, 1, 1)
    assert "aligned to the loc image's pixels" in pt.with_suffix(".md").read_text()
