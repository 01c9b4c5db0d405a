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


MAX_IMAGE_PIXELS_DEFAULT = 128 * 1024 * 1024
"""Largest decoded image glsr accepts by default: 134 megapixels (a 16384 x 8192 panorama, 400 MB as BGR); a larger
one (or a small file whose header claims one: a decompression bomb) is refused before decoding.
``--max-image-pixels N`` (or ``GLSR_MAX_IMAGE_PIXELS``) raises it."""


def max_image_pixels() -> int:
    """The bound in force: ``GLSR_MAX_IMAGE_PIXELS`` (set by ``--max-image-pixels``), else the default."""
    try:
        return max(1, int(float(os.environ.get("GLSR_MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS_DEFAULT))))
    except ValueError:
        return MAX_IMAGE_PIXELS_DEFAULT


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says, read without decoding: ``width`` x ``height`` (``None`` when this reader
    does not know the format) and the number of ``frames`` (pages of a TIFF, frames of an animated PNG / GIF /
    WebP; 1 otherwise)."""

    format: str
    width: Optional[int]
    height: Optional[int]
    frames: int = 1


def _u16(b: bytes, i: int, end: str = ">") -> int:
    return struct.unpack(end + "H", b[i:i + 2])[0]


def _u32(b: bytes, i: int, end: str = ">") -> int:
    return struct.unpack(end + "I", b[i:i + 4])[0]


def _jpeg_header(d: bytes) -> ImageHeader:
    pos = 2
    while pos + 9 <= len(d):
        if d[pos] != 0xFF:
            break
        marker = d[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return ImageHeader("JPEG", _u16(d, pos + 7), _u16(d, pos + 5))
        if marker in (0xD9, 0xDA):
            break
        pos += 2 + _u16(d, pos + 2)
    return ImageHeader("JPEG", None, None)


def _png_header(d: bytes) -> ImageHeader:
    w, h, frames, pos = _u32(d, 16), _u32(d, 20), 1, 8
    while pos + 8 <= len(d):
        length, kind = _u32(d, pos), d[pos + 4:pos + 8]
        if kind == b"acTL":
            frames = max(1, _u32(d, pos + 8))
        if kind in (b"IDAT", b"IEND"):
            break
        pos += 12 + length
    return ImageHeader("PNG", w, h, frames)


def _gif_header(d: bytes) -> ImageHeader:
    w, h = _u16(d, 6, "<"), _u16(d, 8, "<")
    pos = 13 + (3 * 2 ** ((d[10] & 7) + 1) if d[10] & 0x80 else 0)
    frames = 0
    while pos < len(d):
        block = d[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            pos += 2
        elif block == 0x2C:  # image descriptor (+ local colour table), LZW code size, then sub-blocks
            frames += 1
            flags = d[pos + 9] if pos + 9 < len(d) else 0
            pos += 10 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0) + 1
        else:
            break
        while pos < len(d) and d[pos]:
            pos += d[pos] + 1
        pos += 1
    return ImageHeader("GIF", w, h, max(frames, 1))


def _webp_header(d: bytes) -> ImageHeader:
    kind = d[12:16]
    if kind == b"VP8X":
        w, h = 1 + int.from_bytes(d[24:27], "little"), 1 + int.from_bytes(d[27:30], "little")
        frames, pos = 0, 12
        while pos + 8 <= len(d):
            size = _u32(d, pos + 4, "<")
            frames += d[pos:pos + 4] == b"ANMF"
            pos += 8 + size + (size & 1)
        return ImageHeader("WebP", w, h, max(frames, 1))
    if kind == b"VP8 ":
        return ImageHeader("WebP", _u16(d, 26, "<") & 0x3FFF, _u16(d, 28, "<") & 0x3FFF)
    if kind == b"VP8L":
        bits = _u32(d, 21, "<")
        return ImageHeader("WebP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    return ImageHeader("WebP", None, None)


def _tiff_header(d: bytes) -> ImageHeader:
    end = "<" if d[:2] == b"II" else ">"
    ifd, frames, w, h, seen = _u32(d, 4, end), 0, None, None, set()
    while 0 < ifd < len(d) - 2 and ifd not in seen and frames < 100000:
        seen.add(ifd)
        n = _u16(d, ifd, end)
        for i in range(n):
            off = ifd + 2 + 12 * i
            tag, kind = _u16(d, off, end), _u16(d, off + 2, end)
            if frames == 0 and tag in (256, 257):
                value = _u16(d, off + 8, end) if kind == 3 else _u32(d, off + 8, end)
                w, h = (value, h) if tag == 256 else (w, value)
        frames += 1
        ifd = _u32(d, ifd + 2 + 12 * n, end)
    return ImageHeader("TIFF", w, h, max(frames, 1))


def _pnm_header(d: bytes) -> ImageHeader:
    words, text = [], d[2:512].split(b"\n")
    for line in text:
        words += line.split(b"#")[0].split()
        if len(words) >= 2:
            return ImageHeader("PNM", int(words[0]), int(words[1]))
    return ImageHeader("PNM", None, None)


def image_header(data: bytes) -> ImageHeader:
    """Dimensions and frame count from the first bytes of an image file (JPEG, PNG / APNG, GIF, BMP, WebP, TIFF,
    PNM); ``width``/``height`` ``None`` for other formats or a header this reader cannot parse."""
    readers = ((b"\xff\xd8", _jpeg_header), (b"\x89PNG\r\n\x1a\n", _png_header), (b"GIF8", _gif_header),
               (b"II*\x00", _tiff_header), (b"MM\x00*", _tiff_header))
    try:
        for magic, read in readers:
            if data.startswith(magic):
                return read(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_header(data)
        if data[:2] == b"BM" and len(data) >= 26:
            w, h = struct.unpack("<ii", data[18:26])
            return ImageHeader("BMP", abs(w), abs(h))
        if data[:1] == b"P" and data[1:2] in b"123456":
            return _pnm_header(data)
    except (struct.error, IndexError, ValueError):
        pass
    return ImageHeader("?", None, None)


def image_size_problem(header: ImageHeader, source: str | os.PathLike) -> Optional[str]:
    """A one-line refusal when the header claims more pixels than :func:`max_image_pixels` (``None`` when not)."""
    if header.width is None or header.height is None:
        return None
    limit = max_image_pixels()
    if header.width * header.height > limit:
        return (f"image {source}: its {header.format} header says {header.width} x {header.height} pixels "
                f"({header.width * header.height / 1e6:.0f} megapixels), above the {limit / 1e6:.0f} megapixel limit "
                "glsr decodes (a decompression bomb, or a huge photo); shrink it, or raise the limit with "
                f"--max-image-pixels {header.width * header.height}")
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
    header = image_header(data)
    too_big = image_size_problem(header, source)  # before decoding: a 1 MB file can claim gigabytes of pixels
    if too_big:
        raise ValueError(too_big)
    problem = image_data_problem(data)
    if problem and data[:2] == b"\xff\xd8":
        data = data + b"\xff\xd9"  # an end marker lets the decoder return the part it has (as cv2.imread does)
    with _quiet_stderr(bool(problem)):  # libjpeg's own complaint; glsr words it in ``warnings``
        try:
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) \
                if data else None
        except cv2.error as e:  # OpenCV's own limits (e.g. its pixel cap) on a format whose header glsr does not read
            raise ValueError(f"image {source} could not be decoded ({_cv_error_line(e)}); shrink it or convert it to "
                             "PNG / JPEG") from None
    if img is None:
        raise ValueError(f"image {source} could not be decoded (corrupt or not an image format OpenCV reads)")
    too_big = image_size_problem(ImageHeader(header.format, img.shape[1], img.shape[0]), source)
    if too_big:  # a format whose header glsr does not read: refused after decoding, before any further copy
        raise ValueError(too_big)
    orientation = exif_orientation(data)
    applied = bool(exif and orientation not in (None, 1))
    warnings = [f"image {source}: {problem}; landmarks there are unreliable"] if problem else []
    if header.frames > 1:
        warnings.append(f"image {source} holds {header.frames} frames ({header.format}); glsr read the first one "
                        "only: extract the frame you want (e.g. as PNG) to be sure which one is used")
    return ImageFile(apply_orientation(img, orientation) if applied else img, orientation, applied, tuple(warnings))


def _cv_error_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    line = next((x for x in reversed(text) if x.strip()), "OpenCV error")
    return line.split(") ", 1)[-1].strip()[:160]


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
