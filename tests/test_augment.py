"""Section 4.1 augmentation: runtime-identical crops, landmarks that follow the pixels (rotation, flip with the
scheme's permutation), the measured box distribution, and (seed, epoch, index) determinism."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from glsr import geometry as geo
from glsr.models import create_model, get_variant
from glsr.runtime.processing import crop_batch
from glsr.schemes import get_scheme
from glsr.train.augment import (AugmentedFaces, Augmenter, AugmentParams, BoxStats, box_from_offsets, box_offsets,
                                get_face, preprocess_metadata)
from glsr.train.config import AugmentConfig
from glsr.train.targets import global_theta_target

SCHEME = get_scheme("68")
CFG = get_variant("small", input_size=64, loc_size=128, face_size=128, part_size=32)
IMAGE = 160


def make_faces(n: int = 6, seed: int = 0, with_box: bool = True):
    """Noise images with random 68-point 'faces' and detector-like boxes (known offsets from the tight box)."""
    rng = np.random.default_rng(seed)
    faces = []
    for _ in range(n):
        lm = rng.uniform(45, 115, (SCHEME.num_points, 2))
        image = rng.integers(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8)
        row = [rng.normal(0.02, 0.05), rng.normal(-0.03, 0.05), rng.normal(0.1, 0.05), rng.normal(0.1, 0.05)]
        faces.append({"image": image, "landmarks": lm, "box": box_from_offsets(lm, row) if with_box else None})
    return faces


def test_unperturbed_sample_is_exactly_the_runtime_crop():
    faces = make_faces(1)
    f = get_face(faces, 0)
    aug = Augmenter(CFG, SCHEME, AugmentConfig(), BoxStats.fallback(AugmentConfig()))
    s = aug.apply(f.image, f.landmarks, AugmentParams.identity())
    tight = geo.tight_box(f.landmarks)
    x, m = crop_batch(f.image, [tight], preprocess_metadata(CFG, SCHEME))
    assert s.crop.dtype == np.float32 and s.crop.shape == (3, CFG.input_size, CFG.input_size)
    assert np.array_equal(s.crop, x[0])
    np.testing.assert_allclose(s.crop_from_image, m[0], atol=1e-12)
    np.testing.assert_allclose(s.landmarks_crop, geo.apply_affine(m[0], f.landmarks), atol=1e-9)
    # the runtime metadata of a real model says the same thing
    from glsr.runtime.processing import metadata_for
    model = create_model(CFG, SCHEME, mean_shape=np.zeros((68, 2)))
    x2, _ = crop_batch(f.image, [tight], metadata_for(model))
    assert np.array_equal(x2[0], s.crop)


def test_loc_frame_matches_the_network_crop_to_loc_mapping():
    faces = make_faces(1)
    f = get_face(faces, 0)
    aug = Augmenter(CFG, SCHEME, AugmentConfig(), BoxStats.fallback(AugmentConfig()))
    s = aug.apply(f.image, f.landmarks, AugmentParams((0.0, 0.0, 0.1, 0.1), 7.0, True))
    model = create_model(CFG, SCHEME, mean_shape=np.zeros((68, 2)))
    crop_norm = geo.apply_affine(model.crop_from_loc[0].double().numpy(), s.landmarks_loc)
    np.testing.assert_allclose(geo.apply_affine(geo.pixel_from_norm(CFG.input_size), crop_norm), s.landmarks_crop,
                               atol=1e-4)
    # the box (x box_scale) spans the loc frame: the tight box of a zero-offset sample sits at +-1/box_scale
    s0 = aug.apply(f.image, f.landmarks, AugmentParams.identity())
    np.testing.assert_allclose(geo.tight_box(s0.landmarks_loc), np.array([-1, -1, 1, 1]) / CFG.box_scale, atol=0.02)


def _dot_image(lm: np.ndarray, colours: dict) -> np.ndarray:
    import cv2

    img = np.zeros((IMAGE, IMAGE, 3), np.uint8)
    for i, c in colours.items():
        cv2.circle(img, tuple(int(round(v)) for v in lm[i]), 4, c, -1)
    return img


@pytest.mark.parametrize("flip", [False, True])
def test_landmarks_follow_the_pixels_under_rotation_and_flip(flip):
    rng = np.random.default_rng(3)
    lm = rng.uniform(50, 110, (68, 2))
    lm[36], lm[45] = (60, 70), (100, 72)           # image-left and image-right outer eye corners
    red, blue = (0, 0, 255), (255, 0, 0)
    image = _dot_image(lm, {36: red, 45: blue})
    cfg = get_variant("small", input_size=128)
    aug = Augmenter(cfg, SCHEME, AugmentConfig(), BoxStats.fallback(AugmentConfig()))
    s = aug.apply(image, lm, AugmentParams((0.05, -0.05, 0.2, 0.1), 9.0, flip))
    crop = s.crop.transpose(1, 2, 0) * 127.5 + 127.5
    px = lambda i: crop[int(round(s.landmarks_crop[i, 1])), int(round(s.landmarks_crop[i, 0]))]  # noqa: E731
    # after a flip, point 36 (image-left corner) is the mirrored original 45 (blue), and 45 the original 36
    want36, want45 = (blue, red) if flip else (red, blue)
    np.testing.assert_allclose(px(36), want36, atol=40)
    np.testing.assert_allclose(px(45), want45, atol=40)
    assert s.landmarks_crop[36, 0] < s.landmarks_crop[45, 0]        # labels stay image-left / image-right


def test_box_offsets_round_trip_and_measured_distribution():
    faces = make_faces(400, seed=1)
    rows = np.stack([box_offsets(f["box"], f["landmarks"]) for f in faces])
    np.testing.assert_allclose(box_from_offsets(faces[0]["landmarks"], rows[0]), faces[0]["box"], atol=1e-9)
    stats = BoxStats.measure([(f["landmarks"], f["box"]) for f in faces], AugmentConfig())
    assert stats.measured == 400
    np.testing.assert_allclose(stats.mean, [0.02, -0.03, 0.1, 0.1], atol=0.012)
    np.testing.assert_allclose(np.sqrt(np.diag(stats.cov)), [0.05] * 4, atol=0.008)
    rng = np.random.default_rng(0)
    draws = np.stack([stats.sample(rng) for _ in range(4000)])
    np.testing.assert_allclose(draws.mean(0), stats.mean, atol=0.004)
    np.testing.assert_allclose(draws.std(0), np.sqrt(np.diag(stats.cov)), rtol=0.06)
    emp = np.stack([stats.sample(rng, "empirical") for _ in range(50)])
    assert all(any(np.array_equal(e, r) for r in rows) for e in emp)


def test_tight_or_missing_boxes_fall_back_to_the_configured_distribution():
    cfg = AugmentConfig(fallback_center_std=0.07, fallback_log_scale_std=0.03)
    faces = make_faces(5, with_box=False)
    stats = BoxStats.measure([(f["landmarks"], None) for f in faces], cfg)
    assert stats.measured == 0
    np.testing.assert_allclose(np.sqrt(np.diag(stats.cov)), [0.07, 0.07, 0.03, 0.03])
    tight = BoxStats.measure([(f["landmarks"], geo.tight_box(f["landmarks"])) for f in faces], cfg)
    assert tight.measured == 0


def test_parameters_depend_only_on_seed_epoch_and_index():
    stats = BoxStats.fallback(AugmentConfig())
    a = Augmenter(CFG, SCHEME, AugmentConfig(), stats, seed=5)
    b = Augmenter(CFG, SCHEME, AugmentConfig(), stats, seed=5)
    assert b.params(17, 3) == a.params(17, 3)                       # fresh object, any call order
    assert a.params(17, 3) != a.params(18, 3) and a.params(17, 3) != a.params(17, 4)
    assert Augmenter(CFG, SCHEME, AugmentConfig(), stats, seed=6).params(17, 3) != a.params(17, 3)
    fixed = Augmenter(CFG, SCHEME, AugmentConfig(fresh_each_epoch=False), stats, seed=5)
    assert fixed.params(17, 0) == fixed.params(17, 9)
    ps = [a.params(i, 0) for i in range(600)]
    angles = np.array([p.angle_deg for p in ps])
    assert angles.min() >= -10 and angles.max() <= 10 and angles.min() < -8 and angles.max() > 8
    assert 0.4 < np.mean([p.flip for p in ps]) < 0.6


def test_augmented_dataset_items_targets_and_geometry_only_shapes():
    faces = make_faces(4)
    stats = BoxStats.measure([(f["landmarks"], f["box"]) for f in faces], AugmentConfig())
    aug = Augmenter(CFG, SCHEME, AugmentConfig(), stats, seed=2)
    ref = np.random.default_rng(0).uniform(-1, 1, (68, 2))
    ds = AugmentedFaces(faces, aug, samples_per_image=3, reference=ref, margin=1.2)
    assert len(ds) == 12
    item = ds[(4, 7)]
    again = AugmentedFaces(faces, Augmenter(CFG, SCHEME, AugmentConfig(), stats, seed=2), 3, ref, 1.2)[(4, 7)]
    assert all(torch.equal(item[k], again[k]) for k in item)
    assert item["crop"].shape == (3, 64, 64) and item["landmarks_loc"].shape == (68, 2)
    expected = global_theta_target(item["landmarks_loc"].double().numpy(), ref, 1.2)
    np.testing.assert_allclose(item["theta_g_target"].numpy(), expected, atol=1e-5)
    shapes = ds.loc_shapes(12, epoch=4)
    np.testing.assert_allclose(shapes[7], item["landmarks_loc"].numpy(), atol=1e-5)
    with pytest.raises(IndexError):
        ds[12]
    # per-face repeats (pose oversampling): face j holds samples_per_image * repeats[j] consecutive samples
    more = AugmentedFaces(faces, aug, 3, ref, 1.2, repeats=[1, 3, 1, 2])
    assert len(more) == 21 and [more.face_of(i) for i in (0, 2, 3, 11, 12, 14, 15, 20)] == [0, 0, 1, 1, 2, 2, 3, 3]
    np.testing.assert_allclose(more[(4, 13)]["landmarks_loc"].numpy(),
                               more.loc_shapes(21, epoch=4)[13], atol=1e-5)
    with pytest.raises(ValueError, match="repeats must be 4 integers >= 1"):
        AugmentedFaces(faces, aug, 3, ref, 1.2, repeats=[1, 0, 1, 1])
