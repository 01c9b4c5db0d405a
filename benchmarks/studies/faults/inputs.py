"""The files the fault corpus plants: checkpoints whose pickle runs a command, damaged torch files, EXIF-tagged
photos, a data set with bad faces, a calibration folder with broken images, and every input of a side's scratch
folder (:func:`write_inputs`)."""
from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Tuple

import cv2
import numpy as np

from glsr.procedural import ProceduralFaces

from benchmarks.studies.faults.harness import Ctx


class Evil:
    """Unpickling this runs ``touch MARKER`` (what a malicious checkpoint does)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant_evil(path: Path, marker: Path, **fields) -> Path:
    """A ``.pt`` whose pickle calls ``os.system`` (glsr checkpoint keys around it, so only unpickling stops it)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "glsr-checkpoint", **fields, "payload": Evil(marker)}, path)
    return path


def overwrite_64_bytes(path: Path, fill: bytes) -> None:
    """64 bytes of ``fill`` in the middle of the largest tensor record of a torch zip file."""
    with zipfile.ZipFile(path) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    off = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.file_size // 2
    raw[off:off + 64] = fill * 64
    path.write_bytes(bytes(raw))


def with_exif_orientation(jpeg: bytes, value: int) -> bytes:
    """JPEG bytes with an APP1 EXIF segment holding only the orientation tag."""
    tiff = b"II*\x00" + struct.pack("<IH", 8, 1) + struct.pack("<HHIHH", 0x0112, 3, 1, value, 0) + struct.pack("<I", 0)
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def write_bad_dataset(bad: Path) -> Path:
    """A ``folder:`` data set of 6 procedural faces, 3 of them bad: 60 points (f1), a NaN coordinate (f3), an
    undecodable image (f5)."""
    bad.mkdir()
    for i, s in enumerate(ProceduralFaces(scheme="68", count=6, seed=0, split="train")):
        cv2.imwrite(str(bad / f"f{i}.png"), np.ascontiguousarray(s["image"]))
        rows = [f"{x:.3f} {y:.3f}" for x, y in np.asarray(s["landmarks"])[: 60 if i == 1 else None]]
        if i == 3:
            rows[5] = "nan 3"
        (bad / f"f{i}.txt").write_text("\n".join(rows) + "\n")
    (bad / "f5.png").write_bytes(b"not a png")
    return bad


def write_calib_folder(calib: Path, jpeg: bytes) -> Path:
    """An int8 calibration folder: 2 good photos, a truncated JPEG (a third of ``jpeg``) and a junk file."""
    calib.mkdir()
    for i, s in enumerate(ProceduralFaces(scheme="68", count=2, seed=1, split="train")):
        cv2.imwrite(str(calib / f"a{i}.jpg"), np.ascontiguousarray(s["image"]))
    (calib / "z_truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (calib / "z_junk.jpg").write_bytes(b"junk" * 50)
    return calib


def write_face_images(folder: Path) -> Tuple[Dict[str, Any], np.ndarray, bytes, List[str]]:
    """The test face in ``folder``: ``face.jpg``, its first half (``truncated.jpg``) and an undecodable
    ``junk.jpg``. Returns ``(face sample, image, face.jpg's bytes, its box as --box arguments)``."""
    face = ProceduralFaces(scheme="68", count=1, seed=0, split="test")[0]
    image = np.ascontiguousarray(face["image"])
    cv2.imwrite(str(folder / "face.jpg"), image)
    data = (folder / "face.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "junk.jpg").write_bytes(b"not an image" * 20)
    return face, image, data, [f"{v:.2f}" for v in np.asarray(face["box"], dtype=float)]


def write_inputs(ctx: Ctx) -> None:
    """Every input the cases read, in the side's scratch folder (its model files are already there)."""
    ws = ctx.ws
    face, image, data, ctx.face_box = write_face_images(ws)
    big = cv2.resize(image, (10000, 10000), interpolation=cv2.INTER_LINEAR)
    cv2.imwrite(str(ws / "huge.jpg"), big)
    onnx = (ws / "onnx" / "m_fp32.onnx").read_bytes()
    (ws / "truncated.onnx").write_bytes(onnx[: len(onnx) // 2])
    (ws / "x.onnx").mkdir()
    # a folder data set: 3 good faces, 3 bad ones (60 points, a NaN coordinate, an undecodable image)
    write_bad_dataset(ws / "baddata")
    write_calib_folder(ws / "calib", data)
    # EXIF: one face padded to 320 x 256, landmarks in stored pixels; tagged Orientation=6 or not
    padded = np.pad(image, ((0, 0), (0, 64), (0, 0)))
    ok, buf = cv2.imencode(".jpg", padded)
    for name, tag in (("plain", None), ("tagged", 6)):
        d = ws / "exif" / name
        d.mkdir(parents=True)
        (d / "a.jpg").write_bytes(with_exif_orientation(buf.tobytes(), tag) if tag else buf.tobytes())
        (d / "a.txt").write_text("\n".join(f"{x:.3f} {y:.3f}" for x, y in np.asarray(face["landmarks"])) + "\n")

