"""Procedural faces: deterministic, exact, occlusion- and noise-aware, written in the generic folder format."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from glsr.geometry import tight_box
from glsr.procedural import (REFERENCE_SIZE, ProceduralConfig, ProceduralFaces, occlusion_mask, pts_text,
                                   write_folder)


def _parse_pts(path: Path) -> np.ndarray:
    """Minimal 300-W .pts parser (1-based file -> 0-based points), checking the exact layout we write."""
    lines = path.read_text().splitlines()
    assert lines[0] == "version: 1" and lines[2] == "{" and lines[-1] == "}"
    n = int(lines[1].split(":")[1])
    pts = np.array([[float(v) for v in ln.split()] for ln in lines[3:-1]])
    assert pts.shape == (n, 2)
    return pts - 1.0


@pytest.mark.parametrize("scheme", ["68", "98"])
def test_deterministic_by_seed_and_index_in_any_order(scheme):
    a = ProceduralFaces(scheme=scheme, count=10, seed=3)
    b = ProceduralFaces(scheme=scheme, count=10, seed=3)
    later = [b[i] for i in (7, 2)]
    first = [a[i] for i in (2, 7)]
    for x, y in zip(first, later[::-1]):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["landmarks"], y["landmarks"])
        np.testing.assert_array_equal(x["box"], y["box"])
        np.testing.assert_array_equal(x["occluded"], y["occluded"])
    item = first[0]
    assert item["image"].shape == (256, 256, 3) and item["image"].dtype == np.uint8
    assert item["landmarks"].shape == (int(scheme), 2) and item["landmarks"].dtype == np.float64
    assert item["occluded"].dtype == bool and item["box"].shape == (4,)
    assert "landmarks_clean" not in item
    assert not np.array_equal(first[0]["image"], first[1]["image"])
    assert not np.allclose(first[0]["landmarks"], first[1]["landmarks"])
    other_seed = ProceduralFaces(scheme=scheme, count=10, seed=4)[2]
    other_split = ProceduralFaces(scheme=scheme, count=10, seed=3, split="test")[2]
    for o in (other_seed, other_split):
        assert not np.allclose(o["landmarks"], item["landmarks"])
    np.testing.assert_array_equal(a[-8]["landmarks"], item["landmarks"])
    with pytest.raises(IndexError):
        a[10]


@pytest.mark.parametrize("scheme", ["68", "98"])
def test_default_landmarks_inside_image_and_annotation_matches_sample(scheme):
    ds = ProceduralFaces(scheme=scheme, count=300)
    size = ds.config.image_size
    for i in range(len(ds)):
        lm = ds.annotation(i).landmarks
        assert lm.min() >= 0 and lm.max() <= size - 1
    for i in (0, 5):
        s, a = ds.sample(i), ds.annotation(i)
        assert a.image is None
        np.testing.assert_array_equal(s.landmarks, a.landmarks)
        np.testing.assert_array_equal(s.box, a.box)


def test_annotation_noise_bounded_and_image_unchanged():
    delta, size = 4.0, 192
    noisy = ProceduralFaces(scheme="68", count=40, seed=1, image_size=size, annotation_noise=delta)
    clean = ProceduralFaces(scheme="68", count=40, seed=1, image_size=size)
    radii = []
    for i in range(len(noisy)):
        a = noisy.annotation(i)
        np.testing.assert_array_equal(a.landmarks_clean, clean.annotation(i).landmarks)
        np.testing.assert_array_equal(a.box, clean.annotation(i).box)  # the box follows the real face
        radii.append(np.linalg.norm(a.landmarks - a.landmarks_clean, axis=1))
    r = np.concatenate(radii)
    bound = delta * size / REFERENCE_SIZE
    assert r.max() <= bound + 1e-9 and r.mean() > 0.3 * bound
    assert r.mean() == pytest.approx(bound / 2, rel=0.1)  # radius uniform in [0, bound]
    item, ref = noisy[0], clean[0]
    np.testing.assert_array_equal(item["image"], ref["image"])
    np.testing.assert_array_equal(item["landmarks_clean"], ref["landmarks"])


def test_occlusion_mask_matches_occluders_and_pixels():
    common = dict(scheme="98", count=30, seed=5, blur_prob=0.0)
    occ = ProceduralFaces(occlusion_prob=1.0, **common)
    free = ProceduralFaces(occlusion_prob=0.0, **common)
    flagged = 0
    for i in range(10):
        s, f = occ.sample(i), free.sample(i)
        assert s.occluders and not f.occluders and not f.occluded.any()
        np.testing.assert_array_equal(s.occluded, occlusion_mask(s.landmarks, s.occluders))
        for k, (x, y) in enumerate(s.landmarks):
            inside = any(cv2.pointPolygonTest(p.astype(np.float32), (float(x), float(y)), True) > 1.0
                         for p in s.occluders)
            outside = all(cv2.pointPolygonTest(p.astype(np.float32), (float(x), float(y)), True) < -1.0
                          for p in s.occluders)
            assert (inside and s.occluded[k]) or (outside and not s.occluded[k]) or not (inside or outside)
        flagged += int(s.occluded.sum())
        # the occluders change pixels only inside their polygons (plus the anti-aliased border)
        mask = np.zeros(s.image.shape[:2], np.uint8)
        for p in s.occluders:
            cv2.fillPoly(mask, [np.round(p).astype(np.int32)], 255)
        near = cv2.dilate(mask, np.ones((5, 5), np.uint8)) > 0
        np.testing.assert_array_equal(s.image[~near], f.image[~near])
        np.testing.assert_array_equal(s.landmarks, f.landmarks)
    assert flagged > 0


def test_write_folder_round_trip(tmp_path):
    ds = ProceduralFaces(scheme="68", count=3, seed=2, annotation_noise=2.0)
    out = tmp_path / "noisy"
    names = write_folder(ds, out)
    assert len(names) == 3 and sorted(p.name for p in out.iterdir()) == sorted(
        f"{n}{ext}" for n in names for ext in (".png", ".pts", ".rct"))  # no temporary files left behind
    for i, name in enumerate(names):
        item = ds[i]
        np.testing.assert_allclose(_parse_pts(out / f"{name}.pts"), item["landmarks"], atol=1e-6)
        box = np.array([float(v) for v in (out / f"{name}.rct").read_text().split()])
        np.testing.assert_allclose(box, item["box"], atol=1e-6)
        np.testing.assert_array_equal(cv2.imread(str(out / f"{name}.png")), item["image"])
    write_folder(ds, tmp_path / "clean", clean=True)
    np.testing.assert_allclose(_parse_pts(tmp_path / "clean" / f"{names[0]}.pts"), ds[0]["landmarks_clean"],
                               atol=1e-6)
    # the project's reader understands the folder (1-based .pts, .rct boxes)
    from glsr.train.datasets import open_dataset

    records = open_dataset(f"folder:{out}")
    assert len(records) == 3 and records[0].scheme == "68"
    np.testing.assert_allclose(records[1].landmarks, ds[1]["landmarks"], atol=1e-6)
    np.testing.assert_allclose(records[1].box, ds[1]["box"], atol=1e-6)
    assert pts_text(np.zeros((2, 2))).splitlines()[3] == "1.000000 1.000000"


def test_box_bias_and_spread_follow_config():
    cfg = ProceduralConfig(scheme="68", count=400, seed=9, box_shift=(0.02, 0.08), box_shift_std=(0.03, 0.05),
                           box_scale=1.1, box_log_scale_std=0.06, box_log_aspect_std=0.0)
    ds = ProceduralFaces(cfg)
    rows = []
    for i in range(len(ds)):
        a = ds.annotation(i)
        t, b = tight_box(a.landmarks_clean), a.box
        wt, ht, wb, hb = t[2] - t[0], t[3] - t[1], b[2] - b[0], b[3] - b[1]
        rows.append([((b[0] + b[2]) - (t[0] + t[2])) / (2 * wt), ((b[1] + b[3]) - (t[1] + t[3])) / (2 * ht),
                     math.log(wb / wt), math.log(hb / ht)])
    r = np.array(rows)
    np.testing.assert_allclose(r.mean(0), [0.02, 0.08, math.log(1.1), math.log(1.1)], atol=0.012)
    np.testing.assert_allclose(r.std(0), [0.03, 0.05, 0.06, 0.06], rtol=0.2)
    np.testing.assert_allclose(r[:, 2], r[:, 3], atol=1e-12)  # no aspect jitter configured


def test_pixels_follow_landmarks():
    """Pupils are darker than cheeks, open-mouth interiors darker than the lips' outer edge."""
    ds = ProceduralFaces(scheme="98", count=40, seed=11, occlusion_prob=0.0, eyes_closed_prob=0.0, squint_max=0.0)

    def grey(img: np.ndarray, p: np.ndarray) -> float:
        x, y = int(round(p[0])), int(round(p[1]))
        return float(cv2.cvtColor(img[y - 1:y + 2, x - 1:x + 2], cv2.COLOR_BGR2GRAY).mean())

    darker = []
    for i in range(len(ds)):
        s = ds.sample(i)
        lm = s.landmarks
        for pupil, cheek in ((96, (lm[6] + lm[55]) / 2), (97, (lm[26] + lm[59]) / 2)):
            darker.append(grey(s.image, lm[pupil]) < grey(s.image, cheek))
    assert np.mean(darker) > 0.9

    mouths = ProceduralFaces(scheme="68", count=20, seed=12, occlusion_prob=0.0, mouth_open_prob=1.0, teeth_prob=0.0)
    inside = []
    for i in range(len(mouths)):
        s = mouths.sample(i)
        inner_centre = (s.landmarks[62] + s.landmarks[66]) / 2
        if s.landmarks[66, 1] - s.landmarks[62, 1] > 4:
            inside.append(grey(s.image, inner_centre) < grey(s.image, (s.landmarks[8] + s.landmarks[57]) / 2))
    assert len(inside) >= 5 and np.mean(inside) > 0.9


def test_dataset_plumbing():
    from torch.utils.data import DataLoader

    from glsr.train.datasets import open_dataset

    ds = open_dataset("procedural:98", split="test", count=4, seed=1, annotation_noise=1.0)
    assert isinstance(ds, ProceduralFaces) and len(ds) == 4 and ds.scheme.name == "98"
    assert ds.config.split == "test" and ds.config.seed == 1
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert tuple(batch["image"].shape) == (2, 256, 256, 3) and tuple(batch["landmarks_clean"].shape) == (2, 98, 2)
    with pytest.raises(TypeError, match="unknown procedural option"):
        ProceduralFaces(colour="red")
    with pytest.raises(ValueError, match="split"):
        ProceduralFaces(split="holdout")
    small = ProceduralFaces(scheme="68", count=2, image_size=96, yaw_range=[0, 0])
    assert small[1]["image"].shape == (96, 96, 3) and small.config.yaw_range == (0, 0)
