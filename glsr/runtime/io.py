"""Image reading/writing with clear errors, atomic writes, and landmark overlays."""
from __future__ import annotations

import contextlib
import os
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence, Tuple

import cv2
import numpy as np

from glsr import atomic

EXIF_TRANSPOSES = {
    2: ("flip left-right",), 3: ("rotate 180",), 4: ("flip top-bottom",), 5: ("transpose",),
    6: ("rotate 90 clockwise",), 7: ("transverse",), 8: ("rotate 90 counter-clockwise",),
}
"""EXIF orientation tag value -> what turns the stored pixels into the upright picture (1 = already upright)."""


@dataclass(frozen=True)
class ImageFile:
    """A decoded image file: ``image`` HxWx3 uint8 BGR, its EXIF ``orientation`` tag (``None`` when absent),
    whether that orientation was ``applied`` (the pixels are then the upright picture, not the stored array),
    and ``warnings`` (e.g. a truncated file OpenCV decoded only in part)."""

    image: np.ndarray
    orientation: Optional[int] = None
    applied: bool = False
    warnings: Tuple[str, ...] = field(default=())

    @property
    def frame(self) -> str:
        """``"upright"`` when an EXIF rotation/flip was applied, else ``"stored"`` (the file's pixel array)."""
        return "upright" if self.applied else "stored"


def exif_orientation(data: bytes) -> Optional[int]:
    """The EXIF orientation tag (1-8) of JPEG bytes, ``None`` when there is none (or it is unreadable)."""
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker in (0xD9, 0xDA):  # end of image / start of scan: no EXIF before the pixels
            return None
        seg = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker == 0xE1 and data[pos + 4:pos + 10] == b"Exif\x00\x00":
            return _tiff_orientation(data[pos + 10:pos + 2 + seg])
        pos += 2 + seg
    return None


def _tiff_orientation(t: bytes) -> Optional[int]:
    end = {b"II": "<", b"MM": ">"}.get(t[:2])
    if end is None:
        return None
    try:
        ifd = struct.unpack(end + "I", t[4:8])[0]
        for i in range(struct.unpack(end + "H", t[ifd:ifd + 2])[0]):
            off = ifd + 2 + 12 * i
            tag, kind = struct.unpack(end + "HH", t[off:off + 4])
            if tag == 0x0112 and kind == 3:
                value = struct.unpack(end + "H", t[off + 8:off + 10])[0]
                return value if 1 <= value <= 8 else None
    except struct.error:
        return None
    return None


def apply_orientation(image: np.ndarray, orientation: Optional[int]) -> np.ndarray:
    """The upright picture of stored pixels with EXIF ``orientation`` (as photo viewers and OpenCV show it)."""
    if orientation in (None, 1):
        return image
    if orientation == 2:
        return cv2.flip(image, 1)
    if orientation == 3:
        return cv2.rotate(image, cv2.ROTATE_180)
    if orientation == 4:
        return cv2.flip(image, 0)
    if orientation == 5:
        return np.ascontiguousarray(image.transpose(1, 0, 2))
    if orientation == 6:
        return cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return cv2.rotate(cv2.flip(image, 1), cv2.ROTATE_90_CLOCKWISE)
    if orientation == 8:
        return cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return image


def jpeg_complete(data: bytes) -> bool:
    """Whether JPEG bytes reach their end-of-image marker (walks the segments and entropy-coded scans, so data
    appended after the image, or an EXIF thumbnail, cannot fool it)."""
    n, pos = len(data), 2
    while pos + 2 <= n:
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker == 0xD9:
            return True
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 2
            continue
        if pos + 4 > n:
            return False
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker == 0xDA:  # entropy-coded data up to the next marker that is not a stuffed 0xFF00 or a restart
            while True:
                pos = data.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= n:
                    return False
                nxt = data[pos + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
                    pos += 2
                elif nxt == 0xFF:
                    pos += 1
                else:
                    break
    return False


def png_complete(data: bytes) -> bool:
    """Whether PNG bytes hold every chunk up to ``IEND``."""
    pos = 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        pos += 12 + length
        if kind == b"IEND":
            return pos <= len(data)
    return False


def image_data_problem(data: bytes) -> Optional[str]:
    """What is wrong with an image file's bytes that a decoder would hide (``None`` when nothing is): a JPEG or
    PNG cut short decodes with its missing part grey or black."""
    if not data:
        return "the file is empty"
    if data[:2] == b"\xff\xd8" and not jpeg_complete(data):
        return "the JPEG data is truncated (no end-of-image marker): its lower part did not decode"
    if data[:8] == b"\x89PNG\r\n\x1a\n" and not png_complete(data):
        return "the PNG data is truncated (no IEND chunk): part of it did not decode"
    return None


def image_file_problem(path: str | os.PathLike) -> Optional[str]:
    """A cheap check of an image file before a long run (its header only, nothing decoded): ``None`` when OpenCV
    can read it, else what is wrong."""
    p = Path(path)
    if not p.is_file():
        return "image file not found"
    if p.stat().st_size == 0:
        return "image file is empty"
    if not cv2.haveImageReader(str(p)):
        return "not an image format OpenCV reads"
    return None


@contextlib.contextmanager
def _quiet_stderr(enabled: bool) -> Iterator[None]:
    """Silence file-descriptor-level stderr (C libraries) unless ``GLSR_VERBOSE`` is set (``glsr -v``)."""
    if not enabled or os.environ.get("GLSR_VERBOSE"):
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def decode_image(data: bytes, source: str | os.PathLike, exif: bool = True) -> ImageFile:
    """Decode image bytes as HxWx3 uint8 BGR; ``exif=True`` turns a JPEG with an EXIF orientation upright (as
    photo viewers show it), ``exif=False`` keeps the stored pixel array (the frame dataset annotations use).
    ``ValueError`` naming ``source`` when the bytes do not decode."""
    problem = image_data_problem(data)
    if problem and data[:2] == b"\xff\xd8":
        data = data + b"\xff\xd9"  # an end marker lets the decoder return the part it has (as cv2.imread does)
    with _quiet_stderr(bool(problem)):  # libjpeg's own complaint; glsr words it in ``warnings``
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) \
            if data else None
    if img is None:
        raise ValueError(f"image {source} could not be decoded (corrupt or not an image format OpenCV reads)")
    orientation = exif_orientation(data)
    applied = bool(exif and orientation not in (None, 1))
    warnings = (f"image {source}: {problem}; landmarks there are unreliable",) if problem else ()
    return ImageFile(apply_orientation(img, orientation) if applied else img, orientation, applied, warnings)


def read_image_file(path: str | os.PathLike, exif: bool = True) -> ImageFile:
    """:func:`decode_image` of a file; ``FileNotFoundError`` / ``ValueError`` naming the file otherwise."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"image {p} is a folder, not an image file")
    if not p.is_file():
        raise FileNotFoundError(f"image {p} does not exist")
    return decode_image(p.read_bytes(), p, exif)


def read_image(path: str | os.PathLike, exif: bool = True) -> np.ndarray:
    """Read an image as HxWx3 uint8 BGR (EXIF orientation applied unless ``exif=False``); ``FileNotFoundError`` /
    ``ValueError`` naming the file otherwise."""
    return read_image_file(path, exif).image


def check_image_suffix(path: str | os.PathLike, what: str = "--out") -> Path:
    """``ValueError`` unless OpenCV can encode an image by ``path``'s suffix (checked before any work is done)."""
    p = Path(path)
    if not p.suffix or not cv2.haveImageWriter(str(p)):
        raise ValueError(f"{what} {p}: cannot write an image as {p.suffix or '(no suffix)'!r}; use .png or .jpg")
    return p


def write_image_atomic(path: str | os.PathLike, image: np.ndarray) -> None:
    """Encode by the file's suffix and write via a temporary file + rename."""
    p = check_image_suffix(path, "image")
    ok, buf = cv2.imencode(p.suffix, image)
    if not ok:
        raise ValueError(f"cannot encode an image as {p.suffix!r}; use .png or .jpg")
    atomic.write_bytes(p, buf.tobytes())


def draw_landmarks(image: np.ndarray, landmarks: np.ndarray, boxes: Optional[Sequence[Sequence[float]]] = None,
                   color=(0, 255, 0), box_color=(255, 128, 0)) -> np.ndarray:
    """Copy of ``image`` with boxes and landmarks (``[F, N, 2]`` or ``[N, 2]``) drawn; radius scales with size."""
    out = image.copy()
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, np.asarray(landmarks).shape[-2], 2)
    r = max(1, int(round(min(image.shape[:2]) / 250)))
    for face in pts:
        for x, y in face:
            if np.isfinite(x) and np.isfinite(y):
                cv2.circle(out, (int(round(x)), int(round(y))), r, color, -1, cv2.LINE_AA)
    for b in boxes or []:
        x1, y1, x2, y2 = (int(round(v)) for v in b)
        cv2.rectangle(out, (x1, y1), (x2, y2), box_color, max(1, r), cv2.LINE_AA)
    return out
