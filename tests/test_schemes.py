"""Landmark schemes are consistent data."""
import pytest

from glsr.schemes import PART_NAMES, SCHEMES, get_scheme


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_every_point_in_exactly_one_part(name):
    s = SCHEMES[name]
    all_points = [i for p in s.parts for i in p] + list(s.contour)
    assert sorted(all_points) == list(range(s.num_points))


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_flip_is_an_involution_mapping_left_parts_onto_right(name):
    s = SCHEMES[name]
    f = s.flip
    assert sorted(f) == list(range(s.num_points))
    assert all(f[f[i]] == i for i in range(s.num_points))
    left_eye, right_eye, nose, mouth = s.parts
    assert sorted(f[i] for i in left_eye) == sorted(right_eye)
    for part in (nose, mouth, s.contour):  # symmetric parts map onto themselves
        assert sorted(f[i] for i in part) == sorted(part)
    # normalization pairs swap under the flip
    for a, b in (s.interocular, s.interpupil):
        assert sorted(f[i] for i in a) == sorted(b)


def test_known_indices():
    wflw = get_scheme("wflw")
    assert wflw.interocular == ((60,), (72,))
    assert wflw.part("left_eye") == tuple(range(33, 42)) + tuple(range(60, 68)) + (96,)
    assert wflw.part_sizes == (18, 18, 9, 20) and len(wflw.contour) == 33
    s68 = get_scheme(68)
    assert s68.interocular == ((36,), (45,)) and s68.flip[36] == 45 and s68.flip[30] == 30
    assert get_scheme("aflw").num_points == 19 and get_scheme("300w") is s68
    assert PART_NAMES == ("left_eye", "right_eye", "nose", "mouth")


def test_unknown_scheme_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown landmark scheme"):
        get_scheme("42")


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_evaluation_groups_partition_and_brows_sit_in_eye_regions(name):
    s = SCHEMES[name]
    groups = s.evaluation_groups()
    assert sorted(i for g in groups.values() for i in g) == list(range(s.num_points))
    assert set(s.brows) <= set(s.parts[0]) | set(s.parts[1])
    assert sorted(s.flip[i] for i in s.brows) == sorted(s.brows)
