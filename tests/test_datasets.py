"""Dataset readers on tiny fake distributions built in tmp_path (and the 5 real reference WFLW faces)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from glsr.geometry import tight_box
from glsr.paths import SHARED
from glsr.train.datasets import (
    AFLWReader, DatasetError, DatasetWarning, FaceDataset, FaceRecord, FolderReader, Reader300W, WFLWReader,
    open_dataset, read_pts, read_txt_points,
)

REFERENCE_SAMPLES = SHARED / "reference" / "dpr_wflw" / "samples"
PTS_FIRST_POINT_LINE = 4  # "version", "n_points", "{" precede the first point


# ------------------------------------------------------------------------------------------ fake files


def shape(n: int, seed: int = 0) -> np.ndarray:
    """Non-degenerate points on a 1/4-pixel grid (exact in text round trips and under the +-1 shift)."""
    rng = np.random.default_rng(seed)
    return np.round(rng.uniform(10, 90, size=(n, 2)) * 4) / 4


def write_pts(path: Path, pts: np.ndarray, n_points: int | None = None, lines: list[str] | None = None) -> Path:
    body = lines if lines is not None else [f"{x:.2f} {y:.2f}" for x, y in pts]
    n = len(body) if n_points is None else n_points
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("version: 1\n" f"n_points:  {n}\n" "{\n" + "\n".join(body) + "\n}\n")
    return path


def touch_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not decoded by the readers")
    return path


def face_300w(root: Path, rel: str, seed: int, ext: str = ".jpg") -> np.ndarray:
    """Write image + .pts; return the 0-based points the reader must produce."""
    pts1 = shape(68, seed) + 1.0  # as stored: 1-based
    write_pts(root / f"{rel}.pts", pts1)
    touch_image(root / f"{rel}{ext}")
    return pts1 - 1.0


TREE_300W = {  # relative stem -> image extension
    "lfpw/trainset/image_0001": ".png", "lfpw/trainset/image_0002": ".png",
    "helen/trainset/100032540_1": ".jpg", "afw/1051618982_1": ".jpg",
    "lfpw/testset/image_0001": ".png", "helen/testset/30427236_1": ".jpg", "helen/testset/30844800_1": ".jpg",
    "ibug/image_003_1": ".jpg",
    "300W/01_Indoor/indoor_001": ".png", "300W/02_Outdoor/outdoor_001": ".png",
}


@pytest.fixture()
def root300w(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "300W_root"
    truth = {rel: face_300w(root, rel, i, ext) for i, (rel, ext) in enumerate(TREE_300W.items())}
    return root, truth


def wflw_line(pts: np.ndarray, box, flags, image: str) -> str:
    coords = " ".join(f"{v:.3f}" for v in pts.reshape(-1))
    return f"{coords} {' '.join(str(b) for b in box)} {' '.join(str(f) for f in flags)} {image}"


WFLW_ROWS = [  # flags: pose expression illumination makeup occlusion blur
    ((0, 0, 0, 0, 0, 0), "51--Dresses/a.jpg"),
    ((1, 0, 0, 0, 1, 0), "2--Demonstration/b.jpg"),
    ((1, 1, 0, 0, 0, 1), "2--Demonstration/c.jpg"),
    ((0, 0, 1, 1, 1, 0), "9--Press_Conference/d.jpg"),
]


@pytest.fixture()
def rootwflw(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    root = tmp_path / "WFLW"
    ann = root / "WFLW_annotations" / "list_98pt_rect_attr_train_test"
    ann.mkdir(parents=True)
    (root / "WFLW_images").mkdir()
    pts = [shape(98, 10 + i) for i in range(len(WFLW_ROWS))]
    lines = [wflw_line(p, (5, 6, 95, 97), flags, img) for p, (flags, img) in zip(pts, WFLW_ROWS)]
    (ann / "list_98pt_rect_attr_test.txt").write_text("\n".join(lines) + "\n")
    (ann / "list_98pt_rect_attr_train.txt").write_text(lines[0] + "\n")
    return root, pts


def assert_names(err: BaseException, path: Path, line: int | None) -> None:
    where = f"{path}:{line}" if line is not None else str(path)
    assert where in str(err), f"{where!r} not in {str(err)!r}"


# ------------------------------------------------------------------------------------------ 300-W


def test_300w_splits_counts_and_one_based_shift(root300w):
    root, truth = root300w
    sizes = {"train": 4, "common": 3, "challenging": 1, "full": 4, "private-test": 2}
    for split, n in sizes.items():
        reader = Reader300W(root, split=split)
        assert len(reader) == n, split
    reader = Reader300W(root, split="train")
    assert reader.expected_size == 3148
    rec = next(r for r in reader if "afw" in r.image_path)
    np.testing.assert_array_equal(rec.landmarks, truth["afw/1051618982_1"])  # exactly stored - 1
    assert rec.scheme == "68" and rec.image_path.endswith("afw/1051618982_1.jpg")
    np.testing.assert_array_equal(rec.box, tight_box(truth["afw/1051618982_1"]))
    assert rec.attributes["subset"] == "afw" and rec.attributes["box_source"] == "tight"
    assert rec.source == f"{root / 'afw/1051618982_1.pts'}:1"
    challenging = Reader300W(root, split="challenging")
    assert challenging[0].image_path.endswith("ibug/image_003_1.jpg")


def test_300w_pts_one_based_option(root300w):
    root, truth = root300w
    rec = Reader300W(root, split="challenging", pts_one_based=False)[0]
    np.testing.assert_array_equal(rec.landmarks, truth["ibug/image_003_1"] + 1.0)


def test_read_pts_values(tmp_path):
    p = write_pts(tmp_path / "a.pts", np.array([[1.0, 1.0], [10.5, 3.25]]))
    np.testing.assert_array_equal(read_pts(p), [[0.0, 0.0], [9.5, 2.25]])
    np.testing.assert_array_equal(read_pts(p, one_based=False), [[1.0, 1.0], [10.5, 3.25]])


def test_300w_list_file_split(root300w, tmp_path):
    root, truth = root300w
    lst = tmp_path / "my_split.txt"
    lst.write_text("# two faces\nhelen/testset/30844800_1.jpg\n\nibug/image_003_1.jpg  # the hard one\n")
    reader = Reader300W(root, split=str(lst))
    assert [Path(r.image_path).name for r in reader] == ["30844800_1.jpg", "image_003_1.jpg"]
    np.testing.assert_array_equal(reader[1].landmarks, truth["ibug/image_003_1"])
    assert reader.expected_size is None

    lst.write_text("helen/testset/30844800_1.jpg\nibug/missing.jpg\n")
    with pytest.raises(DatasetError) as e:
        Reader300W(root, split=lst)
    assert_names(e.value, lst, 2)


def test_300w_rejects_annotation_box_and_unknown_split(root300w):
    root, _ = root300w
    with pytest.raises(ValueError, match="box_source"):
        Reader300W(root, split="train", box_source="annotation")
    with pytest.raises(ValueError, match="unknown 300w split"):
        Reader300W(root, split="validation")


def test_300w_missing_image_names_pts(tmp_path):
    root = tmp_path / "r"
    write_pts(root / "ibug" / "lonely.pts", shape(68))
    with pytest.raises(DatasetError) as e:
        Reader300W(root, split="challenging")
    assert_names(e.value, root / "ibug" / "lonely.pts", None)
    assert "no image" in str(e.value)


PTS_CASES = {  # name -> (lines of points or None, n_points override, expected line, message fragment)
    "wrong_count": (None, 67, 1, "67 points, but scheme '68' has 68"),
    "non_numeric": ("bad_token", None, PTS_FIRST_POINT_LINE + 5, "non-numeric value 'abc'"),
    "nan": ("nan", None, PTS_FIRST_POINT_LINE + 5, "non-finite value 'nan'"),
    "count_mismatch": ("count", 70, 2, "n_points says 70 but the file has 68 points"),
    "three_values": ("three", None, PTS_FIRST_POINT_LINE + 5, "expected 'x y'"),
}


@pytest.mark.parametrize("case", sorted(PTS_CASES))
def test_300w_malformed_pts(tmp_path, case):
    kind, n_points, line, fragment = PTS_CASES[case]
    root = tmp_path / "r"
    pts = shape(67 if case == "wrong_count" else 68)
    body = [f"{x:.2f} {y:.2f}" for x, y in pts]
    if kind == "bad_token":
        body[5] = "12.0 abc"
    elif kind == "nan":
        body[5] = "nan 3.0"
    elif kind == "three":
        body[5] = "1 2 3"
    bad = write_pts(root / "ibug" / "bad.pts", pts, n_points=n_points, lines=body)
    touch_image(root / "ibug" / "bad.jpg")
    with pytest.raises(DatasetError) as e:
        Reader300W(root, split="challenging")
    assert_names(e.value, bad, line)
    assert fragment in str(e.value)


def test_300w_missing_closing_brace(tmp_path):
    root = tmp_path / "r"
    bad = root / "ibug" / "x.pts"
    bad.parent.mkdir(parents=True)
    bad.write_text("version: 1\nn_points: 68\n{\n" + "\n".join("1 2" for _ in range(68)) + "\n")
    touch_image(root / "ibug" / "x.jpg")
    with pytest.raises(DatasetError, match="missing closing"):
        Reader300W(root, split="challenging")


def test_skip_mode_warns_and_counts(root300w):
    root, _ = root300w
    bad = write_pts(root / "ibug" / "zz_bad.pts", shape(68), lines=["1 2"] * 10 + ["x y"] + ["1 2"] * 57)
    touch_image(root / "ibug" / "zz_bad.jpg")
    with pytest.raises(DatasetError):
        Reader300W(root, split="challenging")
    with pytest.warns(DatasetWarning) as caught:
        reader = Reader300W(root, split="challenging", on_error="skip")
    assert len(reader) == 1 and reader.skipped == 1
    where = f"{bad}:{PTS_FIRST_POINT_LINE + 10}"
    assert reader.skipped_sources == [where]
    assert any(where in str(w.message) for w in caught)


def test_all_faces_skipped_raises(tmp_path):
    root = tmp_path / "r"
    write_pts(root / "ibug" / "a.pts", shape(10))
    touch_image(root / "ibug" / "a.jpg")
    with pytest.warns(DatasetWarning), pytest.raises(DatasetError, match="no usable face"):
        Reader300W(root, split="challenging", on_error="skip")


# ------------------------------------------------------------------------------------------ WFLW


def test_wflw_values_and_subsets(rootwflw):
    root, pts = rootwflw
    test = WFLWReader(root, split="test")
    assert len(test) == 4 and test.expected_size == 2500
    rec = test[1]
    np.testing.assert_allclose(rec.landmarks, pts[1], atol=0, rtol=0)  # taken as stored, no shift
    np.testing.assert_array_equal(rec.box, [5, 6, 95, 97])
    assert rec.image_path == str(root / "WFLW_images" / "2--Demonstration/b.jpg")
    assert rec.attributes["pose"] is True and rec.attributes["occlusion"] is True
    assert rec.attributes["blur"] is False and rec.attributes["box_source"] == "annotation"
    ann = root / "WFLW_annotations" / "list_98pt_rect_attr_train_test" / "list_98pt_rect_attr_test.txt"
    assert rec.source == f"{ann}:2"

    counts = {"pose": 2, "largepose": 2, "expression": 1, "illumination": 1, "makeup": 1, "make-up": 1,
              "occlusion": 2, "blur": 1}
    for name, n in counts.items():
        assert len(WFLWReader(root, split=name)) == n, name
        assert len(WFLWReader(root, split="test", subset=name)) == n, name
    largepose = WFLWReader(root, split="largepose")
    assert largepose.split == "test" and largepose.subset == "pose" and largepose.expected_size == 326
    assert [Path(r.image_path).name for r in largepose] == ["b.jpg", "c.jpg"]
    assert len(WFLWReader(root)) == 1  # default split: train


def test_wflw_tight_box_option(rootwflw):
    root, pts = rootwflw
    rec = WFLWReader(root, split="test", box_source="tight")[0]
    np.testing.assert_allclose(rec.box, tight_box(pts[0]))
    assert rec.attributes["box_source"] == "tight"


WFLW_BAD = {  # name -> (mutation of the field list, message fragment)
    "field_count": (lambda f: f[:-2] + f[-1:], "expected 207 fields"),
    "non_numeric": (lambda f: f[:7] + ["1.2.3"] + f[8:], "non-numeric value '1.2.3'"),
    "nan": (lambda f: f[:7] + ["NaN"] + f[8:], "non-finite value 'NaN'"),
    "empty_box": (lambda f: f[:196] + ["50", "6", "40", "97"] + f[200:], "x2 > x1"),
    "bad_flag": (lambda f: f[:200] + ["2"] + f[201:], "attribute 'pose' must be 0 or 1"),
}


@pytest.mark.parametrize("case", sorted(WFLW_BAD))
def test_wflw_malformed_lines(rootwflw, case):
    root, pts = rootwflw
    mutate, fragment = WFLW_BAD[case]
    ann = root / "WFLW_annotations" / "list_98pt_rect_attr_train_test" / "list_98pt_rect_attr_test.txt"
    lines = ann.read_text().splitlines()
    lines[2] = " ".join(mutate(lines[2].split()))
    ann.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as e:
        WFLWReader(root, split="test")
    assert_names(e.value, ann, 3)
    assert fragment in str(e.value)
    with pytest.warns(DatasetWarning, match=f"{ann}:3"):
        reader = WFLWReader(root, split="test", on_error="skip")
    assert len(reader) == 3 and reader.skipped == 1


def test_wflw_missing_annotation_file(tmp_path):
    (tmp_path / "w").mkdir()
    with pytest.raises(DatasetError, match="list_98pt_rect_attr_test.txt not found"):
        WFLWReader(tmp_path / "w", split="test")
    with pytest.raises(ValueError, match="unknown WFLW subset"):
        WFLWReader(tmp_path / "w", split="test", subset="hats")


# ------------------------------------------------------------------------------------------ AFLW


def aflw_csv_row(image: str, scale: float, box_size: float, cx: float, cy: float, pts: np.ndarray) -> str:
    return ",".join([image, f"{scale}", f"{box_size}", f"{cx}", f"{cy}"] + [f"{v:.2f}" for v in pts.reshape(-1)])


AFLW_HEADER = "image_name,scale,box_size,center_w,center_h," + ",".join(
    f"original_{i}_{c}" for i in range(19) for c in "xy")


def test_aflw_hrnet_csv_splits_and_values(tmp_path):
    root = tmp_path / "aflw"
    (root / "images").mkdir(parents=True)
    pts = [shape(19, 30 + i) for i in range(3)]
    rows = [aflw_csv_row(f"0/image{i:05d}.jpg", 0.5, 80.0 + i, 50.0, 60.0, p) for i, p in enumerate(pts)]
    (root / "face_landmarks_aflw_train.csv").write_text("\n".join([AFLW_HEADER] + rows) + "\n")
    (root / "face_landmarks_aflw_test.csv").write_text("\n".join([AFLW_HEADER] + rows[:2]) + "\n")
    (root / "face_landmarks_aflw_test_frontal.csv").write_text("\n".join([AFLW_HEADER] + rows[:1]) + "\n")
    assert [len(AFLWReader(root, split=s)) for s in ("train", "full", "frontal")] == [3, 2, 1]
    reader = AFLWReader(root, split="full")
    assert reader.layout.name == "hrnet-csv" and reader.expected_size == 4386
    rec = reader[1]
    np.testing.assert_array_equal(rec.landmarks, pts[1])
    np.testing.assert_array_equal(rec.box, [0.0, 10.0, 100.0, 110.0])  # side 0.5 * 200 about (50, 60)
    assert rec.attributes["face_size"] == 81.0 and rec.scheme == "19"
    assert rec.image_path == str(root / "images" / "0/image00001.jpg")
    assert rec.source == f"{root / 'face_landmarks_aflw_test.csv'}:3"


def test_aflw_box_list_layout_and_errors(tmp_path):
    root = tmp_path / "aflw"
    root.mkdir()
    p = shape(19, 3)
    good = "img/a.jpg 10 20 90 84 " + " ".join(f"{v:.2f}" for v in p.reshape(-1))
    lst = root / "my_list.txt"
    lst.write_text(good + "\n")
    rec = AFLWReader(root, split=lst)[0]
    np.testing.assert_array_equal(rec.box, [10, 20, 90, 84])
    assert rec.attributes["face_size"] == pytest.approx(np.sqrt(80 * 64))
    np.testing.assert_array_equal(rec.landmarks, p)

    lst.write_text(good + "\n" + good.rsplit(" ", 1)[0] + "\n")  # line 2 lacks one coordinate
    with pytest.raises(DatasetError) as e:
        AFLWReader(root, split=lst)
    assert_names(e.value, lst, 2)
    assert "expected 43 fields" in str(e.value)
    lst.write_text(good.replace(" 90 84 ", " 90 20 ", 1) + "\n")  # y2 == y1
    with pytest.raises(DatasetError, match="empty"):
        AFLWReader(root, split=lst)


# ------------------------------------------------------------------------------------------ generic folder


def test_folder_txt_pts_rct_json(tmp_path):
    root = tmp_path / "faces"
    root.mkdir()
    a, b, c, d = (shape(98, 40 + i) for i in range(4))
    touch_image(root / "a.jpg")
    (root / "a.txt").write_text("98\n" + "\n".join(f"{x} {y}" for x, y in a) + "\n")
    (root / "a.rct").write_text("1 2 300 400\n")
    touch_image(root / "sub" / "b.PNG")
    (root / "sub" / "b.txt").write_text("\n".join(f"{x} {y}" for x, y in b))  # no count line
    (root / "sub" / "b.json").write_text(json.dumps({"box": [5, 6, 70.5, 80]}))
    touch_image(root / "c.bmp")
    write_pts(root / "c.pts", c + 1.0)  # 1-based
    touch_image(root / "d.jpeg")
    (root / "d.txt").write_text("\n".join(f"{x} {y}" for x, y in d))
    reader = FolderReader(root)
    assert reader.scheme.name == "98"  # inferred
    recs = {Path(r.image_path).stem: r for r in reader}
    assert sorted(recs) == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(recs["a"].landmarks, a)
    np.testing.assert_array_equal(recs["a"].box, [1, 2, 300, 400])
    np.testing.assert_array_equal(recs["b"].landmarks, b)
    np.testing.assert_array_equal(recs["b"].box, [5, 6, 70.5, 80])
    np.testing.assert_allclose(recs["c"].landmarks, c, atol=1e-12)
    np.testing.assert_allclose(recs["c"].box, tight_box(c), atol=1e-12)
    assert [recs[k].attributes["box_source"] for k in "abcd"] == ["file", "file", "tight", "tight"]
    np.testing.assert_array_equal(recs["d"].box, tight_box(d))
    assert len(FolderReader(root, split="sub")) == 1

    with pytest.raises(DatasetError) as e:
        FolderReader(root, box_source="file")
    assert "no box file" in str(e.value) and "c.bmp" in str(e.value)


FOLDER_BAD = {  # name -> (files to write {name: text}, bad file, line, fragment)
    "count_line": ({"f.txt": "97\n" + "1 2\n" * 98}, "f.txt", 1, "says 97 but the file has 98"),
    "count_non_numeric": ({"f.txt": "abc\n" + "1 2\n" * 98}, "f.txt", 1, "non-numeric point count 'abc'"),
    "value": ({"f.txt": "1 2\n" * 40 + "1 inf\n" + "1 2\n" * 57}, "f.txt", 41, "non-finite value 'inf'"),
    "rct_empty_box": ({"f.txt": "1 2\n3 4\n" * 49, "f.rct": "50 10 40 90\n"}, "f.rct", 1, "x2 > x1"),
    "rct_text": ({"f.txt": "1 2\n3 4\n" * 49, "f.rct": "1 2 x 4\n"}, "f.rct", 1, "non-numeric value 'x'"),
    "json": ({"f.txt": "1 2\n3 4\n" * 49, "f.json": '{\n "box": [1, 2, 3]\n}'}, "f.json", 2, "expected"),
    "json_syntax": ({"f.txt": "1 2\n3 4\n" * 49, "f.json": '{\n "box": [1, 2,\n'}, "f.json", 3, "invalid JSON"),
}


@pytest.mark.parametrize("case", sorted(FOLDER_BAD))
def test_folder_malformed(tmp_path, case):
    files, bad, line, fragment = FOLDER_BAD[case]
    touch_image(tmp_path / "f.jpg")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(DatasetError) as e:
        FolderReader(tmp_path, scheme="98")
    assert_names(e.value, tmp_path / bad, line)
    assert fragment in str(e.value)


def test_folder_missing_landmark_file_skip(tmp_path):
    touch_image(tmp_path / "has.jpg")
    (tmp_path / "has.txt").write_text("1 2\n3 4\n" * 34)  # 68 points
    touch_image(tmp_path / "none.png")
    with pytest.raises(DatasetError) as e:
        FolderReader(tmp_path)
    assert_names(e.value, tmp_path / "none.png", None)
    assert "missing landmark file" in str(e.value)
    with pytest.warns(DatasetWarning, match="none.png"):
        reader = FolderReader(tmp_path, on_error="skip")
    assert len(reader) == 1 and reader.skipped == 1 and reader.scheme.name == "68"


def test_read_txt_points_with_and_without_count(tmp_path):
    p = tmp_path / "p.txt"
    p.write_text("2\n1.5 2.5\n3 4\n\n")
    np.testing.assert_array_equal(read_txt_points(p), [[1.5, 2.5], [3, 4]])
    p.write_text("1.5 2.5\n3 4\n")
    np.testing.assert_array_equal(read_txt_points(p), [[1.5, 2.5], [3, 4]])


# ------------------------------------------------------------------------------ records, torch dataset, entry point


def test_face_dataset_loads_bgr_and_reports_bad_images(tmp_path):
    image = np.zeros((12, 16, 3), np.uint8)
    image[3, 5] = (255, 0, 0)  # blue in BGR
    assert cv2.imwrite(str(tmp_path / "ok.png"), image)
    (tmp_path / "ok.txt").write_text("1 2\n3 4\n" * 34)
    touch_image(tmp_path / "broken.jpg")
    (tmp_path / "broken.txt").write_text("1 2\n3 4\n" * 34)
    reader = FolderReader(tmp_path)
    ds = FaceDataset(reader)
    recs = {Path(r.image_path).name: i for i, r in enumerate(ds.records)}
    img, rec = ds[recs["ok.png"]]
    assert img.dtype == np.uint8 and img.shape == (12, 16, 3) and tuple(img[3, 5]) == (255, 0, 0)
    assert FaceDataset(reader, transform=lambda im, r: im.shape)[recs["ok.png"]] == (12, 16, 3)
    with pytest.raises(DatasetError, match="cannot decode") as e:
        ds[recs["broken.jpg"]]
    assert str(tmp_path / "broken.jpg") in str(e.value)
    (tmp_path / "ok.png").unlink()
    with pytest.raises(DatasetError, match="image file not found") as e:
        ds[recs["ok.png"]]
    assert str(tmp_path / "ok.png") in str(e.value)


def test_face_record_is_immutable():
    rec = FaceRecord("x.jpg", np.zeros((68, 2)), np.array([0, 0, 1, 1]), "68", {}, "x.pts:1")
    assert rec.landmarks.dtype == np.float64
    with pytest.raises(ValueError):
        rec.landmarks[0, 0] = 1.0
    with pytest.raises(AttributeError):
        rec.scheme = "98"  # type: ignore[misc]


def test_open_dataset_specs(root300w, rootwflw):
    root, _ = root300w
    reader = open_dataset(f"300w:{root}", split="common")
    assert isinstance(reader, Reader300W) and len(reader) == 3
    wroot, _ = rootwflw
    assert len(open_dataset(f"wflw:{wroot}", split="test", box_source="tight")) == 4
    with pytest.raises(ValueError, match="unknown dataset kind"):
        open_dataset(f"lfw:{root}")
    with pytest.raises(ValueError, match="needs a directory"):
        open_dataset("cofw:")
    with pytest.raises(DatasetError, match="not a directory"):
        open_dataset(f"folder:{root / 'nope'}")


def test_cofw_reader(tmp_path):
    truth = face_300w(tmp_path / "cofw", "test/1", 7)
    reader = open_dataset(f"cofw:{tmp_path / 'cofw'}")
    assert len(reader) == 1 and reader.expected_size == 507
    np.testing.assert_array_equal(reader[0].landmarks, truth)


# ------------------------------------------------------------------------------------------ real reference faces


@pytest.mark.skipif(not REFERENCE_SAMPLES.is_dir(), reason=f"shared reference data not present at {REFERENCE_SAMPLES}")
def test_reference_wflw_samples():
    reader = open_dataset(f"folder:{REFERENCE_SAMPLES}")
    assert len(reader) == 5 and reader.skipped == 0 and reader.scheme.name == "98"
    for rec in reader:
        stem = Path(rec.image_path).with_suffix("")
        assert rec.landmarks.shape == (98, 2)
        lines = stem.with_suffix(".txt").read_text().split("\n")
        np.testing.assert_array_equal(rec.landmarks[0], [float(v) for v in lines[1].split()])
        np.testing.assert_array_equal(rec.box, [float(v) for v in stem.with_suffix(".rct").read_text().split()])
        assert rec.attributes["box_source"] == "file"
    first = reader[0]
    assert Path(first.image_path).name == "13_Interview_Interview_2_People_Visible_13_199_0.jpg"
    np.testing.assert_array_equal(first.box, [431, 184, 675, 554])
    np.testing.assert_array_equal(first.landmarks[0], [408.794006, 308.996002])
    image, _ = FaceDataset(reader)[0]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
