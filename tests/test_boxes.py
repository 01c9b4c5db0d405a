"""The box-convention table (glsr.boxes): one home for the conventions, the detectors' corrections, the box of
landmarks and the box files, used by the detectors, the data set readers, training and the runtime."""
from __future__ import annotations

import json

import numpy as np
import pytest

from glsr import boxes
from glsr.procedural import ProceduralConfig


def test_every_convention_is_defined_from_the_tight_box():
    assert set(boxes.CONVENTIONS) == {"tight", "procedural", "wflw"} and boxes.BOX_CONVENTIONS[-1] == "raw"
    assert boxes.TIGHT_TO_CONVENTION["tight"].apply([[0, 0, 10, 20]]).tolist() == [[0, 0, 10, 20]]
    # procedural: x 1.05 about the centre, moved down 0.06 of the height; the generator draws its boxes around it
    np.testing.assert_allclose(boxes.TIGHT_TO_CONVENTION["procedural"].apply([[0, 0, 100, 200]]),
                               [[-2.5, 7.0, 102.5, 217.0]])
    cfg = ProceduralConfig()
    assert (cfg.box_scale, *cfg.box_shift) == (boxes.PROCEDURAL_BOX.sx, boxes.PROCEDURAL_BOX.dx,
                                               boxes.PROCEDURAL_BOX.dy)
    help_text = boxes.conventions_help()
    assert all(f"{name} = " in help_text for name in boxes.CONVENTIONS) and "%" not in help_text  # argparse-safe


def test_relations_between_conventions():
    yunet_tight = boxes.correction_for("yunet", "tight")
    assert (yunet_tight.sx, yunet_tight.dy) == (boxes.DETECTOR_TO_TIGHT["yunet"].sx,
                                                boxes.DETECTOR_TO_TIGHT["yunet"].dy)
    assert boxes.correction_for("haar", "raw") is boxes.IDENTITY
    pts = np.array([[10.0, 20], [50, 100], [30, 60]])
    np.testing.assert_allclose(boxes.box_from_landmarks(pts), [[10, 20, 50, 100]])
    np.testing.assert_allclose(boxes.box_from_landmarks(pts, "wflw"), boxes.WFLW_BOX.apply([[10, 20, 50, 100]]))
    assert boxes.data_convention("procedural", None) == "procedural"
    assert boxes.data_convention("300w", "tight") == "tight" and boxes.data_convention("WFLW", "annotation") == "wflw"
    assert boxes.data_convention("aflw", "annotation") == "" and boxes.data_convention("300w", "file") == ""
    with pytest.raises(ValueError, match="known: \\['procedural', 'tight', 'wflw'\\]"):
        boxes.check_convention("loose")


def test_one_box_file_reader_for_detectors_and_data_sets(tmp_path):
    from glsr.runtime.detectors import read_boxes
    from glsr.train.datasets import DatasetError, read_box_file

    (tmp_path / "one.rct").write_text("431 184 675 554\n")
    (tmp_path / "two.rct").write_text("1 2 30 40\n\n5,6,70,80\n")
    (tmp_path / "pred.json").write_text(json.dumps({"faces": [{"box": [1, 2, 3, 4]}]}, indent=1))
    found, lines = boxes.read_box_file(tmp_path / "two.rct")
    assert found.tolist() == [[1, 2, 30, 40], [5, 6, 70, 80]] and lines == [1, 3]
    np.testing.assert_array_equal(read_boxes(tmp_path / "two.rct"), found)             # the boxfile detector's
    box, line = read_box_file(tmp_path / "one.rct")                                      # a data set's: one face
    assert box.tolist() == [431, 184, 675, 554] and line == 1
    assert read_box_file(tmp_path / "pred.json")[0].tolist() == [1, 2, 3, 4]  # glsr predict's output is a box file
    with pytest.raises(DatasetError, match=r"two.rct:3: a data set's box file holds one face's box"):
        read_box_file(tmp_path / "two.rct")
    bad = {"a.rct": ("1 2 x 4\n", 1, "non-numeric value 'x'"), "b.rct": ("\n1 2 3\n", 2, "expected 4, got 3"),
           "c.rct": ("1 2 inf 4\n", 1, "non-finite value 'inf'"), "d.json": ('{\n "box": [1, 2,\n', 3, "invalid JSON"),
           "e.json": ('{\n "box": [1, true, 3, 4]\n}', 2, "non-numeric value True"),
           "f.json": ('{"box": ["1", 2, 3, 4]}', 1, "non-numeric value '1'"), "g.json": ('{"rect": []}', 1, "'box'")}
    for name, (text, line, fragment) in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(boxes.BoxFileError) as e:
            boxes.read_box_file(tmp_path / name)
        assert e.value.line == line and fragment in str(e.value) and str(e.value).startswith(str(tmp_path / name))
        with pytest.raises(DatasetError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            read_box_file(tmp_path / name)
    (tmp_path / "empty.rct").write_text("\n")
    with pytest.raises(boxes.BoxFileError, match="no boxes"):
        boxes.read_box_file(tmp_path / "empty.rct")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        boxes.read_box_file(tmp_path / "missing.rct")


def test_one_image_suffix_table():
    from glsr.export import parity
    from glsr.imaging import IMAGE_SUFFIXES
    from glsr.runtime import cli
    from glsr.train import datasets

    assert parity.IMAGE_SUFFIXES is IMAGE_SUFFIXES and cli.IMAGE_SUFFIXES is IMAGE_SUFFIXES
    assert datasets.IMAGE_EXTENSIONS is IMAGE_SUFFIXES and datasets.BOX_FILE_SUFFIXES is boxes.BOX_FILE_SUFFIXES
