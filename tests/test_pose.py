"""The yaw index on hand-built faces (frontal, turned, rolled, other schemes), the tertile split and the pose
oversampling of training faces."""
import numpy as np
import pytest

from glsr import geometry as geo
from glsr.pose import pose_repeats, pose_tertiles, yaw_index
from glsr.schemes import WFLW98_TO_68
from glsr.shapes import template_shape


def turned_face(nose_x: float) -> np.ndarray:
    """The 68-point template with its jaw ends at x = 0 and 1, its eyes level and the nose tip moved to ``nose_x``."""
    p = template_shape("68").copy()
    assert abs(p[36:42, 1].mean() - p[42:48, 1].mean()) < 1e-12   # the template's eyes are level
    p[0, 0], p[16, 0] = 0.0, 1.0
    p[30, 0] = nose_x
    return p


def test_yaw_index_on_hand_checked_faces():
    assert abs(float(yaw_index(template_shape("68")))) < 1e-9      # the symmetric template: frontal
    # nose at 3/4 of the jaw's width: d_left 0.75, d_right 0.25 -> (0.75 - 0.25) / 1.0 = 0.5
    assert float(yaw_index(turned_face(0.75))) == pytest.approx(0.5)
    assert float(yaw_index(turned_face(0.25))) == pytest.approx(-0.5)
    assert float(yaw_index(turned_face(1.0))) == pytest.approx(1.0)   # a profile: the nose on the jaw's end
    # roll removed: the face turned 30 degrees in-plane and moved keeps its index; a batch gives one per face
    r = geo.cv2_rotation((0.5, 0.0), 30.0)
    faces = np.stack([turned_face(0.75), geo.apply_affine(r, turned_face(0.75)) + 40])
    np.testing.assert_allclose(yaw_index(faces), [0.5, 0.5], atol=1e-9)


def test_yaw_index_reads_other_schemes_through_their_68_points():
    p68 = turned_face(0.75)
    p98 = np.zeros((98, 2))
    p98[list(WFLW98_TO_68)] = p68
    assert float(yaw_index(p98, "98")) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="scheme 19 has no correspondence"):
        yaw_index(np.zeros((19, 2)), "19")
    with pytest.raises(ValueError, match=r"\[\.\.\., 68, 2\]"):
        yaw_index(np.zeros((5, 2)), "68")


def test_tertiles_and_oversampling():
    yaw = np.array([0.0, -0.1, 0.2, 0.3, -0.6, 0.9])
    tert, edges = pose_tertiles(yaw)
    assert tert.tolist() == [0, 0, 1, 1, 2, 2] and edges[0] < 0.2 < edges[1] < 0.6
    np.testing.assert_array_equal(pose_repeats(yaw, 3.0), [1, 1, 2, 2, 3, 4])   # 1 + round(3 |yaw|)
    np.testing.assert_array_equal(pose_repeats([2.5], 3.0), [4])                 # |yaw| capped at 1
    np.testing.assert_array_equal(pose_repeats(yaw, 0.0), np.ones(6))
    with pytest.raises(ValueError, match="strength"):
        pose_repeats(yaw, -1.0)
