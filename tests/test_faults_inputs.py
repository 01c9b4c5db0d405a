"""Fault corpus (see ``test_faults.py``): images (EXIF, truncated, huge, multi-frame), boxes, data sets, numeric
options, configs, Ctrl-C."""
from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from glsr.procedural import ProceduralFaces
from glsr.runtime.io import apply_orientation, exif_orientation, image_data_problem, jpeg_complete, read_image_file
from glsr.train.datasets import DatasetError, FolderReader, load_image, open_checked
from glsr.train.trainer import train
from support import jpeg_bytes, one_line_error, run_cli

# the corpus's planted inputs, shared with the study that runs the same cases as processes before and after a change
from benchmarks.studies.fault_corpus import with_exif_orientation

pytestmark = pytest.mark.usefixtures("one_torch_thread", "flush_denormals")

# ------------------------------------------------------------------------------------------------- 3: EXIF
def test_exif_orientation_transforms_match_opencv(tmp_path):
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 255, (40, 60, 3), np.uint8), (5, 5), 0)
    data = jpeg_bytes(img)
    for value in range(1, 9):
        path = tmp_path / f"o{value}.jpg"
        path.write_bytes(with_exif_orientation(data, value))
        assert exif_orientation(path.read_bytes()) == value
        upright = cv2.imread(str(path))  # OpenCV applies the tag itself
        stored = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        assert np.array_equal(apply_orientation(stored, value), upright), value
        assert np.array_equal(read_image_file(path).image, upright)
        assert np.array_equal(read_image_file(path, exif=False).image, stored)


def _exif_dataset(files, root: Path, tag) -> Path:
    """One procedural face padded to 320 x 256 (so a 90 degree turn changes the size), landmarks as stored."""
    face = ProceduralFaces(scheme="68", count=1, seed=0, split="test")[0]
    image = np.pad(np.asarray(face["image"]), ((0, 0), (0, 64), (0, 0)))
    root.mkdir()
    data = jpeg_bytes(image)
    (root / "a.jpg").write_bytes(with_exif_orientation(data, tag) if tag else data)
    (root / "a.txt").write_text("\n".join(f"{x:.3f} {y:.3f}" for x, y in np.asarray(face["landmarks"])) + "\n")
    return root


def test_dataset_readers_read_the_stored_pixels_not_the_exif_rotation(files, tmp_path):
    from glsr.train.evaluate import evaluate

    plain = _exif_dataset(files, tmp_path / "plain", None)
    tagged = _exif_dataset(files, tmp_path / "tagged", 6)
    a = load_image(FolderReader(plain)[0])
    b = load_image(FolderReader(tagged)[0])
    assert b.shape == (256, 320, 3) and np.array_equal(a, b)
    nme = [evaluate([str(files["pt"])], f"folder:{d}")["models"][0]["nme"] for d in (plain, tagged)]
    assert nme[0] == nme[1]


def test_predict_honours_exif_and_names_the_frame(files, tmp_path, capsys):
    tagged = _exif_dataset(files, tmp_path / "tagged", 6) / "a.jpg"
    box = ["--box", "60", "80", "180", "200"]
    rc, out, _ = run_cli(["predict", tagged, "--weights", files["pt"], *box], capsys)
    doc = json.loads(out)
    assert rc == 0 and doc["frame"] == "upright" and doc["exif_orientation"] == 6 and doc["size"] == [256, 320]
    upright = tmp_path / "upright.png"
    cv2.imwrite(str(upright), cv2.rotate(cv2.imread(str(tagged), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION),
                                         cv2.ROTATE_90_CLOCKWISE))
    _, out2, _ = run_cli(["predict", upright, "--weights", files["pt"], *box], capsys)
    assert json.loads(out2)["faces"] == doc["faces"] and json.loads(out2)["frame"] == "stored"
    rc, out3, _ = run_cli(["predict", tagged, "--weights", files["pt"], *box, "--ignore-exif"], capsys)
    assert json.loads(out3)["frame"] == "stored" and json.loads(out3)["size"] == [320, 256]


# ------------------------------------------------------------------------------------------------- 6: smaller
def test_truncated_images_are_detected(files, capsys):
    data = files["face"].read_bytes()
    assert jpeg_complete(data) and not jpeg_complete(data[:-100])
    assert jpeg_complete(data + b"\x00" * 1000 + b"appended video data")  # data after the image is not truncation
    assert image_data_problem(data[: len(data) // 2]).startswith("the JPEG data is truncated")
    rc, out, err = run_cli(["predict", files["truncated"], "--weights", files["pt"], "--box", *files["box"]], capsys)
    doc = json.loads(out)
    assert rc == 0 and "truncated" in doc["warnings"][0] and "truncated" in err
    assert "Corrupt JPEG" not in err  # libjpeg's own line is behind -v


def test_truncated_dataset_images_are_refused(files, tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    data = files["face"].read_bytes()
    (root / "a.jpg").write_bytes(data[: len(data) // 2])
    face = ProceduralFaces(scheme="68", count=1, seed=0, split="test")[0]
    (root / "a.txt").write_text("\n".join(f"{x} {y}" for x, y in np.asarray(face["landmarks"])) + "\n")
    with pytest.raises(DatasetError, match="a.jpg.*truncated"):
        load_image(FolderReader(root)[0])


def test_all_bad_faces_are_reported_in_one_pass_or_skipped_with_a_count(files, capsys):
    with pytest.raises(DatasetError) as e:
        FolderReader(files["bad"])  # annotation problems: the reader lists them all
    assert "2 malformed faces" in str(e.value) and "f1.txt" in str(e.value) and "f3.txt" in str(e.value)
    ds = open_checked(f"folder:{files['bad']}", skip_bad=True)
    assert len(ds) == 3 and ds.skipped == 3
    assert "left out 3 malformed face(s)" in capsys.readouterr().err
    rc, out, err = run_cli(["eval", "--weights", files["pt"], "--data", f"folder:{files['bad']}", "--skip-bad"],
                           capsys)
    assert rc == 0 and "3 faces" in out


def test_the_detector_works_on_a_shrunk_copy_of_a_huge_photo(monkeypatch):
    from glsr.runtime.detectors import MAX_DETECT_SIDE, HaarDetector

    det = HaarDetector("raw")
    seen = {}

    class Cascade:
        def detectMultiScale(self, grey, **kw):
            seen["shape"] = grey.shape
            return np.array([[100, 200, 50, 50]])

    det._cascade = Cascade()
    boxes = det.raw(np.zeros((6000, 4000, 3), np.uint8))
    assert max(seen["shape"]) <= MAX_DETECT_SIDE
    s = MAX_DETECT_SIDE / 6000
    assert np.allclose(boxes, [[(100 + .5) / s - .5, (200 + .5) / s - .5, (149 + .5) / s - .5, (249 + .5) / s - .5]])




# ------------------------------------------------------------------------------------------------- 5: limits
def _png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width`` x ``height`` with a tiny IDAT (a decompression-bomb header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + \
        chunk(b"IEND", b"")


def test_a_huge_image_header_is_one_line_before_decoding(files, tmp_path, monkeypatch, capsys):
    from glsr.runtime.io import MAX_IMAGE_PIXELS_DEFAULT, image_header

    monkeypatch.setenv("GLSR_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS_DEFAULT))  # restored after --max-image-pixels

    for w, h in ((60000, 60000), (20000, 20000)):
        bomb = tmp_path / f"bomb{w}.png"
        bomb.write_bytes(_png_claiming(w, h))
        assert image_header(bomb.read_bytes()).width == w
        rc, out, err = run_cli(["predict", bomb, "--weights", files["pt"], "--box", "1", "1", "50", "50"], capsys)
        line = one_line_error(err)
        assert rc == 2 and out == "" and str(bomb) in line and f"--max-image-pixels {w * h}" in line, line
    rc, _, err = run_cli(["predict", files["face"], "--weights", files["pt"], "--box", *files["box"],
                          "--max-image-pixels", "1000"], capsys)  # the option moves the bound (here below it)
    assert rc == 2 and "--max-image-pixels 65536" in one_line_error(err)


def test_a_multi_frame_image_says_it_read_the_first_frame(files, tmp_path, capsys):
    pages = tmp_path / "pages.tiff"
    assert cv2.imwritemulti(str(pages), [files["image"], files["image"][:, ::-1].copy()])
    rc, out, err = run_cli(["predict", pages, "--weights", files["pt"], "--box", *files["box"]], capsys)
    doc = json.loads(out)
    assert rc == 0 and any("2 frames" in w and "first" in w for w in doc["warnings"]) and "2 frames" in err


@pytest.mark.parametrize("box", [["0", "0", "7680", "7680"], ["10", "10", "10.000000001", "10.000000001"]],
                         ids=["30x-the-image", "1e-9-px"])
def test_absurd_boxes_are_refused(files, capsys, box):
    rc, out, err = run_cli(["predict", files["face"], "--weights", files["pt"], "--box", *box], capsys)
    line = one_line_error(err)
    assert rc == 2 and out == "" and "face box" in line and ("30x" in line or "smaller than 1 px" in line), line


NUMERIC = [("bench", ["--threads", "100000"], "--threads"), ("bench", ["--batch", "0"], "--batch"),
           ("bench", ["--time", "-1"], "--time"), ("bench", ["--precision", "int4"], "--precision"),
           ("export", ["--threads", "0"], "--threads"), ("export", ["--calib-count", "0"], "--calib-count"),
           ("predict", ["IMG", "--threads", "100000"], "--threads"), ("train", ["--out", "r", "--lr", "nan"], "--lr"),
           ("train", ["--out", "r", "--batch-size", "0"], "--batch-size"),
           ("parity", ["--weights", "small", "x.onnx", "--procedural", "-1"], "--procedural")]


@pytest.mark.parametrize("command,args,option", NUMERIC, ids=[f"{c} {' '.join(a)}" for c, a, _ in NUMERIC])
def test_numeric_options_are_checked_before_any_work(files, tmp_path, monkeypatch, capsys, command, args, option):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_cli([command, *[str(files["face"]) if a == "IMG" else a for a in args]], capsys)
    line = one_line_error(err)
    assert rc == 2 and option in line, line
    assert list(tmp_path.iterdir()) == []  # nothing written, no bench-results folder


def test_a_config_of_the_wrong_type_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    for text, words in (('{"batch_size": "big"}', ["batch_size", "expected int"]), ('{"stages": 5}', ["stages"]),
                        ('{"augment": 5}', ["augment"])):
        cfg.write_text(text)
        rc, _, err = run_cli(["train", "--out", tmp_path / "r", "--config", cfg], capsys)
        line = one_line_error(err)
        assert rc == 2 and str(cfg) in line and all(w in line for w in words), line
    assert not (tmp_path / "r").exists()


def test_ctrl_c_is_one_line_and_exit_130(files, tmp_path, monkeypatch, capsys):
    import glsr.export

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(glsr.export, "export_model", interrupted)
    rc, _, err = run_cli(["export", "--weights", files["pt"], "-o", tmp_path / "o"], capsys)
    lines = [x for x in err.splitlines() if x.strip()]
    assert rc == 130 and len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in err
