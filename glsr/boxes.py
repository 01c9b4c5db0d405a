"""Face-box conventions, the one table: which box a model expects, how every other box maps onto it, and box files.

Boxes are ``(x1, y1, x2, y2)`` float64 in image pixels (pixel centres at integers, :mod:`glsr.geometry`). A model
is trained on one kind of face box, its **box convention**, recorded in its checkpoint and every export's metadata
(``box_convention``). Every convention is defined from the **tight box** of the face's landmarks (min / max of
their x and y) by a :class:`BoxCorrection`: new centre = centre + ``(dx * w, dy * h)``, new size = ``(sx * w,
sy * h)`` (the parametrisation of :func:`glsr.train.augment.box_offsets`). :data:`CONVENTIONS` holds each
convention's correction and its one-line definition (what help texts and model cards say):

===============  ===================================================================================================
``tight``        the tight box of the landmarks: 300-W readers' default (``box_source`` ``tight``), the shipped
                 models'
``procedural``   glsr's procedural faces' simulated detector box: tight box x 1.05, moved down 0.06 of its height
                 (:class:`glsr.procedural.ProceduralConfig` takes its defaults from here)
``wflw``         WFLW's annotation rectangles (the authors' released DPR models, ``glsr import-dpr``): measured on
                 the WFLW samples by ``python -m benchmarks.studies.box_correction``
===============  ===================================================================================================

Relations between boxes:

* **detectors** (:data:`DETECTOR_TO_TIGHT`): each detector's boxes onto the tight box, the median measured on the
  300-W ``fit`` faces against the tight box of their 68 ground-truth points (Haar's are square and stop short of
  the chin; YuNet's are wider and reach onto the forehead): Haar by ``python -m
  benchmarks.studies.box_correction_300w``, YuNet by ``python -m benchmarks.studies.detector_boxes``. A detector's
  box in convention C is ``DETECTOR_TO_TIGHT[name].then(CONVENTIONS[C].correction)`` (:func:`correction_for`);
  ``raw`` = the detector's own boxes;
* **landmarks** (:func:`box_from_landmarks`): a face's box in convention C from its landmarks (refinement,
  tracking);
* **training data** (:func:`data_convention`): the convention a data set's boxes follow, by its kind and its
  readers' ``box_source``;
* **the crop around the box**: a model crops ``box x context`` (:class:`glsr.models.registry.VariantConfig`
  ``context``, the margin; the loc region inside it is the box x ``box_scale``), so a box of another convention
  shifts and scales the face inside the crop.

Box files (:func:`read_box_file`, :data:`BOX_FILE_SUFFIXES`): boxes stored beside an image, read by the
``boxfile`` detector and the data set readers alike.

Bottom layer: imports only numpy and :mod:`glsr.geometry`.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from glsr.geometry import tight_box


# ------------------------------------------------------------------------------------------ corrections


@dataclass(frozen=True)
class BoxCorrection:
    """Affine box correction relative to the box itself: centre shift ``(dx, dy)`` in box widths/heights and size
    factors ``(sx, sy)``. The identity is ``BoxCorrection()``."""

    sx: float = 1.0
    sy: float = 1.0
    dx: float = 0.0
    dy: float = 0.0
    source: str = ""

    def apply(self, boxes: np.ndarray) -> np.ndarray:
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        cx = (b[:, 0] + b[:, 2]) / 2 + self.dx * w
        cy = (b[:, 1] + b[:, 3]) / 2 + self.dy * h
        hw, hh = self.sx * w / 2, self.sy * h / 2
        return np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1)

    @classmethod
    def between(cls, src: np.ndarray, dst: np.ndarray, source: str = "") -> "BoxCorrection":
        """Median correction mapping boxes ``src [K, 4]`` onto ``dst [K, 4]`` (robust to a few bad pairs)."""
        s = np.asarray(src, dtype=np.float64).reshape(-1, 4)
        d = np.asarray(dst, dtype=np.float64).reshape(-1, 4)
        if len(s) == 0 or s.shape != d.shape:
            raise ValueError(f"need matching, non-empty box lists, got {s.shape} and {d.shape}")
        sw, sh = s[:, 2] - s[:, 0], s[:, 3] - s[:, 1]
        dw, dh = d[:, 2] - d[:, 0], d[:, 3] - d[:, 1]
        dx = ((d[:, 0] + d[:, 2]) - (s[:, 0] + s[:, 2])) / 2 / sw
        dy = ((d[:, 1] + d[:, 3]) - (s[:, 1] + s[:, 3])) / 2 / sh
        return cls(float(np.median(dw / sw)), float(np.median(dh / sh)), float(np.median(dx)), float(np.median(dy)),
                   source)

    def then(self, other: "BoxCorrection") -> "BoxCorrection":
        """This correction followed by ``other`` (exact: both are axis-aligned scale + shift of the box)."""
        return BoxCorrection(self.sx * other.sx, self.sy * other.sy, self.dx + other.dx * self.sx,
                             self.dy + other.dy * self.sy, f"{self.source} then {other.source}")

    def to_dict(self) -> Dict[str, object]:
        return {"sx": self.sx, "sy": self.sy, "dx": self.dx, "dy": self.dy, "source": self.source}


IDENTITY = BoxCorrection(source="none")


# ------------------------------------------------------------------------------------------ the conventions


@dataclass(frozen=True)
class BoxConvention:
    """One convention: its name, its box as a correction of the tight box of the landmarks, and its definition
    in words (help texts, model cards)."""

    name: str
    correction: BoxCorrection
    definition: str


TIGHT, PROCEDURAL, WFLW, RAW = "tight", "procedural", "wflw", "raw"
# The simulated detector box of glsr's procedural training faces relative to the tight box of the landmarks
# (glsr.procedural.ProceduralConfig's box_scale / box_shift defaults are these numbers).
PROCEDURAL_BOX = BoxCorrection(1.05, 1.05, 0.0, 0.06, "procedural faces: tight box x 1.05, centre +0.06 h")
# WFLW annotation rectangles against the tight box of their ground truth (median of the 5 WFLW samples,
# ``python -m benchmarks.studies.box_correction``, ``tight_to_rct`` in benchmarks/results/box_correction.json).
WFLW_BOX = BoxCorrection(0.9212, 1.3105, 0.0476, -0.1765, "tight -> .rct median of the 5 WFLW samples")

CONVENTIONS: Dict[str, BoxConvention] = {c.name: c for c in (
    BoxConvention(TIGHT, BoxCorrection(source="tight box of the landmarks"),
                  "the tight box of the landmarks (brow to chin, ear to ear): the shipped models' and 300-W "
                  "readers'"),
    BoxConvention(PROCEDURAL, PROCEDURAL_BOX,
                  "glsr's procedural faces' box: the tight box x 1.05, moved down by 0.06 of its height"),
    BoxConvention(WFLW, WFLW_BOX, "WFLW's annotation rectangles (the authors' released DPR models)"),
)}
"""Every box convention by name (see the module docstring)."""
TIGHT_TO_CONVENTION: Dict[str, BoxCorrection] = {name: c.correction for name, c in CONVENTIONS.items()}
"""Box conventions (the boxes a model was trained on) as corrections of the tight box of the landmarks."""
BOX_CONVENTIONS = (*CONVENTIONS, RAW)
"""Names a detector spec accepts after ``:``; ``raw`` = the detector's own boxes, uncorrected."""
DEFAULT_BOX_CONVENTION = PROCEDURAL
"""Used when neither the detector spec nor the artifact's metadata names a convention: glsr's own models are
trained on procedural faces (``glsr train`` / ``glsr pipeline`` default)."""

DETECTOR_TO_TIGHT: Dict[str, BoxCorrection] = {
    # python -m benchmarks.studies.box_correction_300w (benchmarks/results/box_correction_300w.md)
    "haar": BoxCorrection(0.849, 0.823, 0.008, 0.144,
                          "300-W fit split, 977 faces: Haar box -> tight box of the 68 ground-truth points"),
    # python -m benchmarks.studies.detector_boxes (benchmarks/results/detector_boxes.md)
    "yunet": BoxCorrection(1.0416, 0.7594, 0.0035, 0.1208,
                           "300-W fit split, 1085 faces: YuNet box -> tight box of the 68 ground-truth points"),
}
"""Measured median correction of each detector's boxes onto the tight box of the 68 ground-truth points of the
300-W ``fit`` faces (never the validation faces)."""


def check_convention(convention: str, what: str = "box convention") -> str:
    """``convention`` if it is a name of :data:`CONVENTIONS`, else ``ValueError`` listing them."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown {what} {convention!r}; known: {sorted(CONVENTIONS)}")
    return convention


def correction_for(detector: str, convention: str) -> BoxCorrection:
    """The correction of ``detector``'s boxes onto ``convention`` (``raw``: none)."""
    if convention == RAW:
        return IDENTITY
    c = DETECTOR_TO_TIGHT[detector].then(TIGHT_TO_CONVENTION[check_convention(convention)])
    return BoxCorrection(c.sx, c.sy, c.dx, c.dy, f"{detector} -> {convention}: {c.source}")


def box_from_landmarks(landmarks: np.ndarray, convention: str = TIGHT) -> np.ndarray:
    """Boxes ``[F, 4]`` in ``convention`` from landmarks ``[F, N, 2]`` (or ``[N, 2]``): the tight box of each face's
    points, corrected by :data:`TIGHT_TO_CONVENTION` (what refinement and tracking crop with)."""
    pts = np.asarray(landmarks, dtype=np.float64)
    pts = pts.reshape((-1,) + pts.shape[-2:])
    return TIGHT_TO_CONVENTION[check_convention(convention)].apply(tight_box(pts))


def box_convention_of(metadata: Any) -> Optional[str]:
    """The box convention an artifact declares (``metadata.box_convention`` or
    ``metadata.export_options["box_convention"]``), ``None`` when it declares none."""
    conv = getattr(metadata, "box_convention", None)
    if not conv:
        conv = (getattr(metadata, "export_options", None) or {}).get("box_convention")
    return str(conv) if conv else None


def data_convention(kind: str, box_source: Optional[str]) -> str:
    """The convention of the boxes a data set of ``kind`` (``procedural``, ``300w``, ``wflw``, ...) gives its faces
    with the readers' ``box_source``: ``procedural`` for procedural faces, ``tight`` for the tight box of the
    landmarks, ``wflw`` for WFLW's annotation rectangles, else ``""`` (unknown: a detector then falls back to
    :data:`DEFAULT_BOX_CONVENTION`)."""
    kind = kind.strip().lower()
    if kind == PROCEDURAL:
        return PROCEDURAL
    if box_source == TIGHT:
        return TIGHT
    if box_source == "annotation" and kind == WFLW:
        return WFLW
    return ""


def conventions_help() -> str:
    """``tight = ...; procedural = ...; wflw = ...``: the definitions, for help texts."""
    return "; ".join(f"{c.name} = {c.definition}" for c in CONVENTIONS.values())


# ------------------------------------------------------------------------------------------ box files


BOX_FILE_SUFFIXES: Tuple[str, ...] = (".rct", ".json")
"""Same-stem box files, in order of preference (matched case-insensitively by the readers that look for them)."""
JSON_BOX_KEYS = ("box", "boxes", "faces")


class BoxFileError(ValueError):
    """A malformed box file; ``str(err)`` starts with ``file:line`` (or ``file``); ``reason``, ``path``, ``line``."""

    def __init__(self, reason: str, path: str | os.PathLike, line: Optional[int] = None):
        self.reason, self.path, self.line = reason, str(path), line
        super().__init__(f"{self.path}{'' if line is None else f':{line}'}: {reason}")


def _value(v: Any, path: Path, line: int, text: bool) -> float:
    """A finite number from a text token (``text``) or a JSON value (numbers only: no strings, no booleans)."""
    if not isinstance(v, str if text else (int, float)) or isinstance(v, bool):
        raise BoxFileError(f"non-numeric value {v!r}: a box is 4 numbers x1 y1 x2 y2", path, line)
    try:
        x = float(v)
    except ValueError:
        raise BoxFileError(f"non-numeric value {v!r}: a box is 4 numbers x1 y1 x2 y2", path, line) from None
    if not math.isfinite(x):
        raise BoxFileError(f"non-finite value {v!r}: a box is 4 finite numbers x1 y1 x2 y2", path, line)
    return x


def _json_rows(text: str, path: Path) -> List[Tuple[int, Any]]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise BoxFileError(f"invalid JSON: {e.msg}", path, e.lineno) from None
    lines = text.splitlines()

    def line_of(key: str) -> int:
        return next((no for no, t in enumerate(lines, 1) if f'"{key}"' in t), 1)

    if isinstance(obj, dict):
        key = next((k for k in JSON_BOX_KEYS if k in obj), None)
        if key is None:
            raise BoxFileError("a JSON box file needs a 'box', 'boxes' or 'faces' key", path, 1)
        line = line_of(key)
        if key == "box":
            return [(line, obj["box"])]
        rows = obj[key] if isinstance(obj[key], list) else [obj[key]]
        if key == "faces":  # glsr predict's output
            return [(line, f.get("box") if isinstance(f, dict) else f) for f in rows]
        return [(line, r) for r in rows]
    if isinstance(obj, list):
        return [(1, r) for r in (obj if obj and isinstance(obj[0], list) else [obj])]
    raise BoxFileError("a JSON box file holds an object or a list", path, 1)


def read_box_file(path: str | os.PathLike) -> Tuple[np.ndarray, List[int]]:
    """Boxes ``[F, 4]`` from a box file and the line each came from; the boxes are not validated here
    (:func:`glsr.geometry.validate_box`).

    ``.rct`` (and any other suffix): one face per line, ``x1 y1 x2 y2`` separated by spaces or commas, blank
    lines skipped (WFLW's and glsr's data set box files are the one-face case). ``.json``: ``{"box": [x1, y1, x2,
    y2]}`` (data set readers), ``{"boxes": [[...], ...]}``, a list of boxes or one bare box, or ``glsr predict``'s
    output (``{"faces": [{"box": [...]}, ...]}``). ``FileNotFoundError`` for a missing file, :class:`BoxFileError`
    (a ``ValueError`` naming ``file:line``) for anything malformed.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"box file {p} does not exist")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise BoxFileError(f"cannot read box file: {e}", p) from None
    is_json = p.suffix.lower() == ".json"
    if is_json:
        rows = _json_rows(text, p)
    else:
        rows = [(no, t.replace(",", " ").split()) for no, t in enumerate(text.splitlines(), 1) if t.strip()]
    if not rows:
        raise BoxFileError("no boxes in the file (empty box file)", p)
    boxes, lines = [], []
    for line, row in rows:
        if not isinstance(row, list):
            raise BoxFileError(f"a box is 4 numbers x1 y1 x2 y2, got {row!r}", p, line)
        if len(row) != 4:
            raise BoxFileError(f"a box is 4 numbers x1 y1 x2 y2 (expected 4, got {len(row)})", p, line)
        boxes.append([_value(v, p, line, not is_json) for v in row])
        lines.append(line)
    return np.asarray(boxes, dtype=np.float64), lines
