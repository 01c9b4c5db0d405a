"""Annotation files as distributed: format tables (image and box-file suffixes, box sources), the
:class:`FaceRecord` every reader yields, :class:`DatasetError` naming ``file:line``, and the parsers of
``.pts``, point ``.txt`` and box files. Conventions: :mod:`glsr.train.datasets`."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from glsr import boxes
from glsr.boxes import BOX_FILE_SUFFIXES  # noqa: F401 (re-exported: the readers' table)
from glsr.geometry import validate_box
from glsr.imaging import IMAGE_SUFFIXES

PathLike = Union[str, os.PathLike]

# ------------------------------------------------------------------------------------------ format tables

IMAGE_EXTENSIONS: Tuple[str, ...] = IMAGE_SUFFIXES
"""Image file extensions recognised next to a landmark file (matched case-insensitively): glsr's one table,
:data:`glsr.imaging.IMAGE_SUFFIXES`."""
# BOX_FILE_SUFFIXES (same-stem box files, in order of preference) and their reader: glsr.boxes

BOX_SOURCES: Dict[str, str] = {
    "annotation": "the box stored in the annotation itself (WFLW rect, AFLW list box)",
    "file": "a same-stem box file next to the image (.rct or .json); missing file = malformed input",
    "tight": "the tight box of the ground-truth landmarks (glsr.geometry.tight_box)",
    "auto": "'file' when a box file exists next to the image, else 'tight'",
}

ON_ERROR = ("raise", "skip")

PTS_OPEN, PTS_CLOSE = "{", "}"
PTS_COUNT_KEY = "n_points"
JSON_BOX_KEY = "box"
"""The key of a data set's JSON box file (``{"box": [x1, y1, x2, y2]}``; :func:`glsr.boxes.read_box_file`)."""
LIST_COMMENT = "#"
# ------------------------------------------------------------------------------------------ records and errors


class DatasetError(ValueError):
    """Malformed or missing dataset input; ``str(err)`` starts with ``file:line`` (or ``file``)."""

    def __init__(self, message: str, path: Optional[PathLike] = None, line: Optional[int] = None):
        self.reason = message
        self.path = None if path is None else str(path)
        self.line = line
        super().__init__(f"{self.source}: {message}" if self.path is not None else message)

    @property
    def source(self) -> str:
        return _where(self.path, self.line)


SKIPPED_PREFIX = "skipped malformed face: "
SKIP_BAD_HINT = "fix them, or pass --skip-bad to leave them out (with a count)"
MAX_LISTED_ERRORS = 10


SKIP_BAD_GIVEN_HINT = "fix them: --skip-bad was given, but these stop the reader before any face can be left out"


def bad_faces_error(errors: Sequence[Union["DatasetError", str]], root: PathLike,
                    skip_bad: bool = False) -> "DatasetError":
    """One :class:`DatasetError` for every malformed face found in one pass over a split; ``skip_bad``: the user
    already passed ``--skip-bad`` (the message then does not advise it)."""
    hint = SKIP_BAD_GIVEN_HINT if skip_bad else SKIP_BAD_HINT
    if len(errors) == 1 and isinstance(errors[0], DatasetError):
        e = errors[0]
        return DatasetError(f"{e.reason}; {hint.replace('them', 'it', 1).replace('them', 'the face')}",
                            e.path, e.line)
    listed = "; ".join(str(e) for e in errors[:MAX_LISTED_ERRORS])
    more = f"; and {len(errors) - MAX_LISTED_ERRORS} more" if len(errors) > MAX_LISTED_ERRORS else ""
    return DatasetError(f"{len(errors)} malformed faces: {listed}{more}; {hint}", root)


class DatasetWarning(UserWarning):
    """Emitted for each face skipped with ``on_error="skip"``."""


def _where(path: Optional[PathLike], line: Optional[int]) -> str:
    if path is None:
        return "<unknown>"
    return f"{path}:{line}" if line is not None else str(path)


@dataclass(frozen=True, eq=False)
class FaceRecord:
    """One annotated face. ``landmarks`` ``[N, 2]`` float64 0-based pixel centres ``(x, y)``; ``box`` raw
    ``(x1, y1, x2, y2)`` or ``None``; ``scheme`` a :data:`glsr.schemes.SCHEMES` key; ``source`` ``"file:line"``."""

    image_path: str
    landmarks: np.ndarray
    box: Optional[np.ndarray]
    scheme: str
    attributes: Dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        lm = np.array(self.landmarks, dtype=np.float64)
        if lm.ndim != 2 or lm.shape[1] != 2:
            raise ValueError(f"{self.source}: landmarks must have shape [N, 2], got {lm.shape}")
        lm.setflags(write=False)
        object.__setattr__(self, "landmarks", lm)
        if self.box is not None:
            box = np.array(self.box, dtype=np.float64).reshape(-1)
            if box.size != 4:
                raise ValueError(f"{self.source}: box must have 4 numbers, got {box.size}")
            box.setflags(write=False)
            object.__setattr__(self, "box", box)
        object.__setattr__(self, "image_path", str(self.image_path))
        object.__setattr__(self, "attributes", dict(self.attributes))


# ------------------------------------------------------------------------------------------ file parsers


def _read_text(path: Path, what: str) -> str:
    """A text file (UTF-8, optional BOM); missing or unreadable files raise :class:`DatasetError`."""
    if not path.is_file():
        raise DatasetError(f"{what} not found", path)
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read {what}: {e}", path) from None


def _read_lines(path: Path, what: str) -> List[str]:
    return _read_text(path, what).splitlines()


def _number(token: str, path: PathLike, line: Optional[int]) -> float:
    """A finite float from a text token, else :class:`DatasetError` at ``path:line``."""
    try:
        value = float(token)
    except ValueError:
        raise DatasetError(f"non-numeric value {token!r}", path, line) from None
    if not math.isfinite(value):
        raise DatasetError(f"non-finite value {token!r}", path, line)
    return value


def _numbers(tokens: Sequence[str], path: PathLike, line: Optional[int]) -> np.ndarray:
    return np.array([_number(t, path, line) for t in tokens], dtype=np.float64)


def read_pts(path: PathLike, one_based: bool = True) -> np.ndarray:
    """Read an iBUG ``.pts`` file -> ``[N, 2]`` 0-based points.

    Format: ``key: value`` header lines (``version: 1``, ``n_points: 68``), ``{``, one ``x y`` per line, ``}``.
    ``.pts`` coordinates are 1-based (Matlab); with ``one_based=True`` 1 is subtracted.
    """
    path = Path(path)
    lines = _read_lines(path, "landmark file")
    declared: Optional[Tuple[int, int]] = None  # (count, line)
    points: List[np.ndarray] = []
    state = "header"
    for no, raw in enumerate(lines, 1):
        text = raw.strip()
        if not text:
            continue
        if state == "header":
            if text == PTS_OPEN:
                state = "points"
            elif ":" in text:
                key, value = (s.strip() for s in text.split(":", 1))
                if key == PTS_COUNT_KEY:
                    if not value.isdigit():
                        raise DatasetError(f"non-numeric value {value!r} for {PTS_COUNT_KEY}", path, no)
                    declared = (int(value), no)
            else:
                raise DatasetError(f"unexpected header line {text!r} (expected 'key: value' or '{PTS_OPEN}')",
                                   path, no)
        elif state == "points":
            if text == PTS_CLOSE:
                state = "done"
                continue
            tokens = text.split()
            if len(tokens) != 2:
                raise DatasetError(f"expected 'x y', got {len(tokens)} values: {text!r}", path, no)
            points.append(_numbers(tokens, path, no))
        else:
            raise DatasetError(f"unexpected content after '{PTS_CLOSE}': {text!r}", path, no)
    if state == "header":
        raise DatasetError(f"no '{PTS_OPEN}' line: not a .pts file", path, len(lines) or None)
    if state == "points":
        raise DatasetError(f"missing closing '{PTS_CLOSE}'", path, len(lines))
    return _point_array(points, declared, PTS_COUNT_KEY, path, one_based)


def _point_array(points: List[np.ndarray], declared: Optional[Tuple[int, int]], count_name: str, path: Path,
                 one_based: bool) -> np.ndarray:
    """The points read from a landmark file as ``[N, 2]`` (0-based), checked against its declared ``(count, line)``
    (``count_name``: what the file calls that line)."""
    if declared is not None and declared[0] != len(points):
        raise DatasetError(f"{count_name} says {declared[0]} but the file has {len(points)} points",
                           path, declared[1])
    if not points:
        raise DatasetError("no points", path)
    pts = np.stack(points)
    return pts - 1.0 if one_based else pts


def read_txt_points(path: PathLike, one_based: bool = False) -> np.ndarray:
    """Read a ``.txt`` landmark file -> ``[N, 2]``: optional first line with the point count, then ``x y`` lines.

    Coordinates are taken as stored (0-based) unless ``one_based``. Blank lines are ignored.
    """
    path = Path(path)
    lines = [(no, raw.strip()) for no, raw in enumerate(_read_lines(path, "landmark file"), 1) if raw.strip()]
    declared: Optional[Tuple[int, int]] = None
    if lines and len(lines[0][1].split()) == 1:
        no, text = lines.pop(0)
        if not text.isdigit():
            raise DatasetError(f"non-numeric point count {text!r}", path, no)
        declared = (int(text), no)
    points = []
    for no, text in lines:
        tokens = text.split()
        if len(tokens) != 2:
            raise DatasetError(f"expected 'x y', got {len(tokens)} values: {text!r}", path, no)
        points.append(_numbers(tokens, path, no))
    return _point_array(points, declared, "point count line", path, one_based)


def read_box_file(path: PathLike) -> Tuple[np.ndarray, int]:
    """Read a data set's box file -> ``(box (x1, y1, x2, y2), line)``: one face's box (:func:`glsr.boxes.read_box_file`
    reads the formats: ``.rct`` a line of 4 numbers, ``.json`` ``{"box": [x1, y1, x2, y2]}``). The box is not
    validated here (see :func:`_checked_box`)."""
    try:
        found, lines = boxes.read_box_file(path)
    except boxes.BoxFileError as e:
        raise DatasetError(e.reason, path, e.line) from None
    except FileNotFoundError:
        raise DatasetError("box file not found", path) from None
    if len(found) > 1:
        raise DatasetError(f"a data set's box file holds one face's box 'x1 y1 x2 y2'; found {len(found)}", path,
                           lines[1])
    return found[0], lines[0]


LANDMARK_PARSERS: Dict[str, Callable[..., np.ndarray]] = {".pts": read_pts, ".txt": read_txt_points}


def _checked_box(box: Sequence[float], path: PathLike, line: Optional[int]) -> np.ndarray:
    try:
        return validate_box(box)
    except ValueError as e:
        raise DatasetError(str(e), path, line) from None


def _same_stem(path: Path, suffixes: Sequence[str]) -> Optional[Path]:
    """First existing ``path`` with one of ``suffixes`` (tried as given, lower- and upper-case)."""
    for suffix in suffixes:
        for s in dict.fromkeys((suffix, suffix.lower(), suffix.upper())):
            candidate = path.with_suffix(s)
            if candidate.is_file():
                return candidate
    return None


def _list_file(split: Any, root: Path) -> Optional[Path]:
    """``split`` as an existing list/annotation file (as given, or relative to ``root``), else ``None``."""
    if not isinstance(split, (str, os.PathLike)) or not str(split):
        return None
    for candidate in (Path(split), root / split):
        if candidate.is_file():
            return candidate
    return None
