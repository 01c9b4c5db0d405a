"""The analytic face model: templates follow each scheme's point order and obey the face's geometry."""
from __future__ import annotations

import numpy as np
import pytest

from glsr.geometry import tight_box
from glsr.schemes import SCHEMES, get_scheme
from glsr.shapes import (EXPRESSION_FIELDS, IDENTITY_FIELDS, LAYOUTS, ShapeParams, face_geometry, mirror_shape,
                         parametric_shape, parametric_shape_3d, template_shape)

ALL = sorted(SCHEMES)


def _random_params(seed: int, spread: float = 0.05) -> ShapeParams:
    rng = np.random.default_rng(seed)
    n = ShapeParams.neutral()
    values = {f: getattr(n, f) * (1 + spread * rng.standard_normal()) for f in IDENTITY_FIELDS}
    values.update(mouth_open=rng.uniform(0, 1), smile=rng.uniform(0, 1), eyes_closed=rng.uniform(0, 1))
    return ShapeParams(**values)


def _inside(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test (numpy)."""
    x, y = points[:, 0:1], points[:, 1:2]
    a, b = polygon, np.roll(polygon, -1, axis=0)
    crosses = (a[:, 1] > y) != (b[:, 1] > y)
    xs = a[:, 0] + (y - a[:, 1]) * (b[:, 0] - a[:, 0]) / np.where(b[:, 1] == a[:, 1], 1e-30, b[:, 1] - a[:, 1])
    return (np.sum(crosses & (x < xs), axis=1) % 2) == 1


def _signed_area(poly: np.ndarray) -> float:
    """Shoelace area; positive = clockwise on screen (y down)."""
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


@pytest.mark.parametrize("name", ALL)
def test_template_shape_and_frame(name):
    s = get_scheme(name)
    t = template_shape(name)
    assert t.shape == (s.num_points, 2) and t.dtype == np.float64 and np.all(np.isfinite(t))
    box = tight_box(t)
    if name in ("68", "98"):
        np.testing.assert_allclose(box, [0.05, 0.05, 0.95, 0.95], atol=1e-12)
    else:  # no jaw points: narrower, same vertical extent (brow peak to chin)
        assert 0.05 - 1e-12 <= box[0] < box[2] <= 0.95 + 1e-12
        np.testing.assert_allclose(box[[1, 3]], [0.05, 0.95], atol=1e-12)
    np.testing.assert_array_equal(t, parametric_shape(name, ShapeParams.neutral()))
    assert len(np.unique(np.round(t, 9), axis=0)) >= s.num_points - (3 if name != "19" else 0)  # closed inner lips


@pytest.mark.parametrize("name", ALL)
def test_mirrored_template_relabelled_by_flip_is_itself(name):
    t = template_shape(name)
    np.testing.assert_allclose(mirror_shape(t, name), t, atol=1e-9)
    # any symmetric parameter set (identity + mouth / smile / eyes) stays mirror-symmetric
    for seed in range(3):
        p = _random_params(seed)
        shape = parametric_shape(name, p)
        np.testing.assert_allclose(mirror_shape(shape, name), shape, atol=1e-9)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("seed", [None, 0, 1, 2])
def test_parts_inside_face_outline_and_eyes_ordered(name, seed):
    p = ShapeParams.neutral() if seed is None else _random_params(seed)
    s = get_scheme(name)
    shape = parametric_shape(name, p)
    outline = face_geometry(p).outline[:, :2]
    for part in s.parts:
        assert _inside(shape[list(part)], outline).all()
    left, right = shape[list(s.parts[0])], shape[list(s.parts[1])]
    assert left[:, 0].max() < 0.5 < right[:, 0].min()
    nose, mouth = shape[list(s.parts[2])], shape[list(s.parts[3])]
    # vertical order: eyes above the nose tip above the mouth above the chin
    assert left[:, 1].mean() < nose[:, 1].mean() < mouth[:, 1].mean() < outline[:, 1].max()


def test_schemes_agree_on_shared_points():
    p = _random_params(7)
    s68, s98, s19 = (parametric_shape(n, p) for n in ("68", "98", "19"))
    np.testing.assert_allclose(s98[0:33:2], s68[0:17])                      # jaw: every other WFLW point
    np.testing.assert_allclose(s98[33:38], s68[17:22])                       # upper brow arcs
    np.testing.assert_allclose(s98[42:47], s68[22:27])
    np.testing.assert_allclose(s98[51:60], s68[27:36])                       # nose
    np.testing.assert_allclose(s98[[60, 64, 68, 72]], s68[[36, 39, 42, 45]])  # eye corners
    np.testing.assert_allclose(s98[76:96], s68[48:68])                       # mouth
    np.testing.assert_allclose(s19[[6, 8, 9, 11]], s68[[36, 39, 42, 45]])     # AFLW eye corners
    np.testing.assert_allclose(s19[[7, 10]], s98[[96, 97]])                  # AFLW eye centres = pupils
    np.testing.assert_allclose(s19[[12, 13, 14, 15, 17, 18]], s68[[31, 30, 35, 48, 54, 8]])
    np.testing.assert_allclose(s19[[0, 1, 2]], s68[[17, 19, 21]])


@pytest.mark.parametrize("name", ["68", "98"])
def test_closed_curves_run_clockwise(name):
    s = get_scheme(name)
    p = ShapeParams.neutral().replace(mouth_open=0.6)
    shape = parametric_shape(name, p)
    eyes = ((36, 42), (42, 48)) if name == "68" else ((60, 68), (68, 76))
    lips = ((48, 60), (60, 68)) if name == "68" else ((76, 88), (88, 96))
    for a, b in eyes + lips:
        assert _signed_area(shape[a:b]) > 0
    if name == "98":
        for a, b in ((33, 42), (42, 51)):  # brows: upper arc left -> right, lower arc back
            assert _signed_area(shape[a:b]) > 0
    assert s.num_points == len(shape)


def test_pupils_at_eye_centres_98():
    t = template_shape("98")
    for pupil, (outer, inner), (top, bottom) in ((96, (60, 64), (62, 66)), (97, (72, 68), (70, 74))):
        np.testing.assert_allclose(t[pupil, 0], (t[outer, 0] + t[inner, 0]) / 2, atol=1e-12)
        assert t[top, 1] < t[pupil, 1] < t[bottom, 1]
        assert abs(t[pupil, 0] - t[top, 0]) < 1e-12  # middle lid points are above / below the pupil


def test_mouth_open_widens_inner_lip_gap_and_drops_the_chin():
    gaps, chins = [], []
    for amount in (0.0, 0.3, 0.6, 1.0):
        shape = parametric_shape("68", ShapeParams.neutral().replace(mouth_open=amount))
        gaps.append(shape[66, 1] - shape[62, 1])
        chins.append(shape[8, 1])
        assert np.all(shape[65:68, 1] >= shape[[63, 62, 61], 1])  # lower inner lip never above the upper one
    assert gaps[0] == pytest.approx(0.0, abs=1e-12)
    assert np.all(np.diff(gaps) > 0) and np.all(np.diff(chins) > 0)
    assert face_geometry(ShapeParams.neutral().replace(mouth_open=1.0)).mouth_gap > 0


def test_eyes_close_and_smile_lifts_corners():
    lid = lambda sh: sh[41, 1] - sh[37, 1]  # noqa: E731  lower minus upper lid (68, left eye)
    opened = parametric_shape("68", ShapeParams.neutral())
    half = parametric_shape("68", ShapeParams.neutral().replace(eyes_closed=0.5))
    closed = parametric_shape("68", ShapeParams.neutral().replace(eyes_closed=1.0))
    assert lid(opened) > lid(half) > 0
    np.testing.assert_allclose(closed[[37, 38, 43, 44]], closed[[41, 40, 47, 46]], atol=1e-12)
    assert face_geometry(ShapeParams.neutral().replace(eyes_closed=1.0)).eye_opening == pytest.approx(0, abs=1e-12)
    smile = parametric_shape("68", ShapeParams.neutral().replace(smile=1.0))
    lift = lambda sh: sh[[51, 57], 1].mean() - sh[[48, 54], 1].mean()  # noqa: E731
    assert lift(smile) > lift(opened) + 0.02
    assert smile[54, 0] - smile[48, 0] > opened[54, 0] - opened[48, 0]


def test_gaze_moves_only_the_pupils():
    base = parametric_shape("98", ShapeParams.neutral())
    look = parametric_shape("98", ShapeParams.neutral().replace(gaze_x=1.0, gaze_y=-0.5))
    moved = np.abs(look - base).max(axis=1) > 1e-12
    assert moved.nonzero()[0].tolist() == [96, 97]
    assert np.all(look[[96, 97], 0] > base[[96, 97], 0]) and np.all(look[[96, 97], 1] < base[[96, 97], 1])


def test_depth_is_a_face_surface():
    p3 = parametric_shape_3d("68")
    assert np.all(p3[:, 2] >= 0)
    assert int(np.argmax(p3[:, 2])) == 30                    # nose tip protrudes most
    assert p3[[0, 16], 2] == pytest.approx(0.0, abs=1e-12)   # jaw ends lie on the rim
    assert p3[8, 2] < p3[30, 2] and p3[27, 2] < p3[30, 2]


def test_params_dataclass():
    n = ShapeParams.neutral()
    assert n == ShapeParams() and set(IDENTITY_FIELDS).isdisjoint(EXPRESSION_FIELDS)
    with pytest.raises(Exception):
        n.face_width = 1.0  # type: ignore[misc]
    assert set(LAYOUTS) == set(SCHEMES)
    wider = parametric_shape("68", n.replace(face_width=1.0))
    assert tight_box(wider)[2] - tight_box(wider)[0] > 0.9
