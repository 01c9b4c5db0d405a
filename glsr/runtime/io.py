"""Image reading/writing with clear errors, atomic writes, and landmark overlays."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from glsr import atomic


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as HxWx3 uint8 BGR; ``FileNotFoundError`` / ``ValueError`` naming the file otherwise."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image {p} does not exist")
    img = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"image {p} could not be decoded (corrupt or not an image format OpenCV reads)")
    return img


def write_image_atomic(path: str | os.PathLike, image: np.ndarray) -> None:
    """Encode by the file's suffix and write via a temporary file + rename."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(p.suffix or ".png", image)
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
