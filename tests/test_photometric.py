"""Photometric augmentation and occlusion (glsr.train.photometric): hand-checked pixel values, the drawn
distributions, geometry that does not depend on it, and its config / CLI plumbing."""
from __future__ import annotations

import json

import numpy as np
import pytest

from glsr.schemes import get_scheme
from glsr.train import photometric as ph
from glsr.train.augment import Augmenter, AugmentParams, BoxStats, get_face
from glsr.train.config import AugmentConfig, TrainConfig
from test_augment import CFG, make_faces

SCHEME = get_scheme("68")
ON = AugmentConfig(color_jitter=(0.4, 0.1), blur_probability=0.5, grayscale_probability=0.2,
                   occlusion_probability=0.3)


def test_identity_returns_the_crop_untouched():
    crop = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert ph.apply(crop, ph.PhotometricParams.identity()) is crop


def test_contrast_and_brightness_about_the_mean_grey_level():
    crop = np.zeros((2, 2, 3), np.uint8)
    crop[0] = 50
    crop[1] = 150                                    # grey, mean luma 100
    out = ph.apply(crop, ph.PhotometricParams(contrast=2.0, brightness=10.0))
    assert out.dtype == np.uint8
    assert np.all(out[0] == 10) and np.all(out[1] == 210)           # (50-100)*2+110, (150-100)*2+110
    clipped = ph.apply(crop, ph.PhotometricParams(contrast=3.0, brightness=0.0))
    assert np.all(clipped[0] == 0) and np.all(clipped[1] == 250)    # -50 clips to 0; 250 stays


def test_grayscale_is_bt601_luma_in_bgr_order():
    crop = np.zeros((1, 1, 3), np.uint8)
    crop[0, 0] = (10, 20, 30)                        # B, G, R
    out = ph.apply(crop, ph.PhotometricParams(grayscale=True))
    assert out[0, 0].tolist() == [22, 22, 22]        # 0.114*10 + 0.587*20 + 0.299*30 = 21.85
    import cv2
    assert out[0, 0, 0] == cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)[0, 0]


def test_occlusion_fills_exactly_its_rectangle_and_blur_keeps_the_mean():
    crop = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    out = ph.apply(crop, ph.PhotometricParams(occlusion=(5, 2, 12, 9), occlusion_bgr=(1, 2, 3)))
    assert np.all(out[2:9, 5:12] == (1, 2, 3))
    mask = np.ones((20, 30), bool)
    mask[2:9, 5:12] = False
    assert np.array_equal(out[mask], crop[mask])
    flat = np.full((16, 16, 3), 77, np.uint8)
    assert np.array_equal(ph.apply(flat, ph.PhotometricParams(blur_sigma=1.5)), flat)
    blurred = ph.apply(crop, ph.PhotometricParams(blur_sigma=2.0)).astype(float)
    assert blurred.std() < 0.6 * crop.astype(float).std()


def test_draw_follows_the_config():
    rng = np.random.default_rng(3)
    size = 200
    ps = [ph.draw(rng, ON, size) for _ in range(3000)]
    contrast = np.array([p.contrast for p in ps])
    brightness = np.array([p.brightness for p in ps])
    assert np.all(np.abs(np.log(contrast)) <= 0.4) and np.abs(np.log(contrast)).max() > 0.38
    assert np.all(np.abs(brightness) <= 25.5) and np.abs(brightness).max() > 24
    blur = np.array([p.blur_sigma for p in ps])
    assert abs((blur > 0).mean() - 0.5) < 0.04
    assert blur[blur > 0].min() >= 0.5 * size / 256 and blur.max() <= 2.0 * size / 256
    assert abs(np.mean([p.grayscale for p in ps]) - 0.2) < 0.03
    boxes = [p.occlusion for p in ps if p.occlusion is not None]
    assert abs(len(boxes) / len(ps) - 0.3) < 0.04
    b = np.array(boxes)
    assert np.all(b[:, :2] >= 0) and np.all(b[:, 2:] <= size) and np.all(b[:, 2:] > b[:, :2])
    assert (b[:, 2] - b[:, 0]).max() <= 0.4 * size + 1
    # all off (the paper's recipe): nothing is drawn and the parameters are the identity
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    assert ph.draw(rng_a, AugmentConfig(), size).is_identity
    assert rng_a.random() == rng_b.random()


def test_geometry_does_not_depend_on_the_photometric_settings():
    faces = make_faces(2)
    stats = BoxStats.fallback(AugmentConfig())
    plain = Augmenter(CFG, SCHEME, AugmentConfig(), stats, seed=4)
    jittered = Augmenter(CFG, SCHEME, ON, stats, seed=4)
    changed = 0
    for i in range(40):
        a, b = plain.params(i, 2), jittered.params(i, 2)
        assert (a.offsets, a.angle_deg, a.flip) == (b.offsets, b.angle_deg, b.flip)
        assert a.pixels.is_identity
        changed += not b.pixels.is_identity
    assert changed > 30
    f = get_face(faces, 0)
    p = jittered.params(0, 2)
    sa = plain.apply(f.image, f.landmarks, AugmentParams(p.offsets, p.angle_deg, p.flip))
    sb = jittered.apply(f.image, f.landmarks, p)
    np.testing.assert_array_equal(sa.landmarks_loc, sb.landmarks_loc)
    assert not np.array_equal(sa.crop, sb.crop)


@pytest.mark.parametrize("bad", [dict(color_jitter=(0.1,)), dict(color_jitter=(-0.1, 0.0)),
                                 dict(blur_probability=1.5), dict(grayscale_probability=-0.1),
                                 dict(occlusion_probability=2.0), dict(max_blur=0.1), dict(max_occlusion=0.05)])
def test_bad_settings_are_refused_by_name(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        AugmentConfig(**bad)


def test_config_json_round_trip_and_cli_flags(tmp_path):
    from glsr.cli import build_parser
    from glsr.train.cli import config_from_args

    cfg = TrainConfig(augment=ON)
    path = tmp_path / "c.json"
    path.write_text(cfg.to_json())
    assert json.loads(path.read_text())["augment"]["color_jitter"] == [0.4, 0.1]
    assert TrainConfig.from_json_file(path).augment == ON            # the JSON list reads back as a tuple
    args = build_parser().parse_args(["train", "--out", "run", "--color-jitter", "0.4", "0.1", "--blur-probability",
                                      "0.5", "--grayscale-probability", "0.2", "--occlusion-probability", "0.3",
                                      "--max-rotation", "10"])
    assert config_from_args(args).augment == ON
    plain = config_from_args(build_parser().parse_args(["train", "--out", "run"])).augment
    assert plain == AugmentConfig() and plain.color_jitter == (0.0, 0.0)


def test_model_card_sentence_names_every_perturbation_that_is_on():
    assert ph.describe(TrainConfig().to_dict()["augment"]) is None
    text = ph.describe(TrainConfig(augment=ON).to_dict()["augment"])
    for needle in ("exp(U(-0.4, 0.4))", "up to 0.1 of the grey range", "blur with probability 0.5",
                   "grey with probability 0.2", "with probability 0.3"):
        assert needle in text
    only_grey = ph.describe(TrainConfig(augment=AugmentConfig(grayscale_probability=0.1)).to_dict()["augment"])
    assert only_grey.endswith("grey with probability 0.1.") and "blur" not in only_grey
