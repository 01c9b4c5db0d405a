"""Face-alignment dataset readers, *as the datasets are distributed*, all producing :class:`FaceRecord`.

Conventions
-----------
* Landmarks are ``float64 [N, 2]`` image pixels ``(x, y)``, 0-based, pixel centres at integers (the convention of
  :mod:`glsr.geometry`).
* ``.pts`` files (300-W, COFW-68, and ``.pts`` files in a generic folder) store **1-based** coordinates (Matlab
  convention: the top-left pixel centre is ``(1, 1)``). Readers subtract 1 (option ``pts_one_based=True``, the
  default). WFLW lines, AFLW lists and generic ``.txt`` files are taken as stored (0-based; option
  ``one_based=False``).
* ``FaceRecord.box`` is the *raw* face box ``(x1, y1, x2, y2)`` chosen by ``box_source`` (see :data:`BOX_SOURCES`);
  readers never enlarge it (enlargement is the model's job).
* Malformed input (wrong point count, non-numeric or non-finite value, missing landmark file, empty box, ...) raises
  :class:`DatasetError` naming ``file:line``; with ``on_error="skip"`` the face is skipped with a
  :class:`DatasetWarning` naming ``file:line`` and counted in ``reader.skipped``. A reader that ends up with no
  face at all always raises.
* Records are immutable: their arrays are read-only, copy them before modifying.

Entry point: :func:`open_dataset` (``"300w:DIR"``, ``"wflw:DIR"``, ``"aflw:DIR"``, ``"cofw:DIR"``, ``"folder:DIR"``,
``"procedural[:68|:98]"``).
"""
from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from torch.utils.data import Dataset

from glsr.geometry import tight_box, validate_box
from glsr.schemes import SCHEMES, LandmarkScheme, get_scheme

PathLike = Union[str, os.PathLike]

# ------------------------------------------------------------------------------------------ format tables

IMAGE_EXTENSIONS: Tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp")
"""Image file extensions recognised next to a landmark file (matched case-insensitively)."""

BOX_FILE_SUFFIXES: Tuple[str, ...] = (".rct", ".json")
"""Same-stem box files, in order of preference: ``.rct`` = one line ``x1 y1 x2 y2``; ``.json`` = ``{"box": [...]}``."""

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
LIST_COMMENT = "#"

# 300-W (Sagonas et al. 2013) as distributed by iBUG, splits of the paper's Section 4.1 (protocol of Ren et al. /
# Zhu et al.): split -> glob patterns of the .pts files, relative to the 300-W root.
_300W_COMMON = ("lfpw/testset/*.pts", "helen/testset/*.pts")
_300W_CHALLENGING = ("ibug/*.pts",)
SPLITS_300W: Dict[str, Tuple[str, ...]] = {
    "train": ("lfpw/trainset/*.pts", "helen/trainset/*.pts", "afw/*.pts"),
    "common": _300W_COMMON,
    "challenging": _300W_CHALLENGING,
    "full": _300W_COMMON + _300W_CHALLENGING,
    "private-test": ("300W/01_Indoor/*.pts", "300W/02_Outdoor/*.pts"),
}
SPLIT_SIZES_300W: Dict[str, int] = {"train": 3148, "common": 554, "challenging": 135, "full": 689,
                                    "private-test": 600}

VALIDATION_SPLITS: Dict[str, Tuple[str, bool]] = {"fit": ("train", False), "val": ("train", True)}
"""glsr's held-out split of a training split: ``name -> (parent split, held out?)``. A face is held out when its
*photo* falls in :func:`held_out` (all faces of one photo on one side), so ``val`` is about
``1 / VALIDATION_MODULUS`` of the photos and ``fit`` the rest; the choice depends only on the photo's name,
never on which other files are present, so it is the same on every machine and as the data set grows."""
VALIDATION_MODULUS = 10
VALIDATION_SALT = "glsr-val-v1"
_PHOTO_FACE = re.compile(r"^(?P<photo>.+)_(?P<face>\d+)$")


def photo_key(landmark_file: PathLike, root: PathLike) -> str:
    """The photo a face crop comes from: its folder relative to ``root`` plus the file stem without the 300-W
    ``_K`` face suffix (``afw/1051618982_2.pts`` -> ``afw/1051618982``)."""
    path = Path(landmark_file)
    try:
        folder = path.parent.relative_to(root).as_posix()
    except ValueError:
        folder = path.parent.as_posix()
    m = _PHOTO_FACE.match(path.stem)
    return f"{folder}/{m.group('photo') if m else path.stem}"


def held_out(photo: str) -> bool:
    """Deterministic ~10 % choice of photos for validation (SHA-1 of the salted photo key)."""
    digest = hashlib.sha1(f"{VALIDATION_SALT}:{photo}".encode()).hexdigest()
    return int(digest[:8], 16) % VALIDATION_MODULUS == 0

# COFW-68 test set (Ghiasi & Fowlkes 2014 re-annotation): images + .pts anywhere under the root.
SPLITS_COFW: Dict[str, Tuple[str, ...]] = {"test": ("**/*.pts",)}
SPLIT_SIZES_COFW: Dict[str, int] = {"test": 507}

# WFLW (Wu et al. 2018) official annotation files. One line = the fields below, whitespace separated, in order.
WFLW_LINE_LAYOUT: Tuple[Tuple[str, int], ...] = (
    ("landmarks", 2 * 98),  # x0 y0 x1 y1 ... x97 y97
    ("box", 4),             # x_min y_min x_max y_max (the "rect")
    ("attributes", 6),      # 0/1 flags, names in WFLW_ATTRIBUTES
    ("image", 1),           # path relative to WFLW_images/
)
WFLW_ATTRIBUTES: Tuple[str, ...] = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")
WFLW_SUBSET_ALIASES: Dict[str, str] = {
    "pose": "pose", "largepose": "pose", "large_pose": "pose", "large-pose": "pose",
    "expression": "expression",
    "illumination": "illumination",
    "makeup": "makeup", "make-up": "makeup", "make_up": "makeup",
    "occlusion": "occlusion",
    "blur": "blur",
}
WFLW_ANNOTATION_FILES: Dict[str, str] = {"train": "list_98pt_rect_attr_train.txt",
                                         "test": "list_98pt_rect_attr_test.txt"}
WFLW_ANNOTATION_DIRS: Tuple[str, ...] = ("WFLW_annotations/list_98pt_rect_attr_train_test",
                                         "list_98pt_rect_attr_train_test", "WFLW_annotations", ".")
WFLW_IMAGE_DIRS: Tuple[str, ...] = ("WFLW_images", ".")
WFLW_SPLIT_SIZES: Dict[str, int] = {"train": 7500, "test": 2500}
WFLW_SUBSET_SIZES: Dict[str, int] = {"pose": 326, "expression": 314, "illumination": 698, "makeup": 206,
                                     "occlusion": 736, "blur": 773}

# AFLW-19 (Koestinger et al. 2011; 19-point protocol of Zhu et al. CVPR 2016).
AFLW_SPLIT_FILES: Dict[str, str] = {"train": "face_landmarks_aflw_train.csv",
                                    "full": "face_landmarks_aflw_test.csv",
                                    "frontal": "face_landmarks_aflw_test_frontal.csv"}
AFLW_SPLIT_SIZES: Dict[str, int] = {"train": 20000, "full": 4386, "frontal": 1314}
AFLW_IMAGE_DIRS: Tuple[str, ...] = ("images", ".")
HRNET_SCALE_UNIT = 200.0
"""HRNet/hourglass crop convention: ``scale == 1`` is a 200-pixel box side."""


@dataclass(frozen=True)
class AflwLayout:
    """Column layout of one AFLW-19 list format: ``image, <meta_fields...>, x0, y0, ..., x18, y18``."""

    name: str
    delimiter: Optional[str]  # None = any whitespace
    header_first_field: Optional[str]  # a first line starting with this is a header and skipped
    meta_fields: Tuple[str, ...]


AFLW_LAYOUTS: Dict[str, AflwLayout] = {
    # HRNet-Facial-Landmark-Detection CSV (data/aflw/face_landmarks_aflw_*.csv): header row, then
    # image_name,scale,box_size,center_w,center_h,x0,y0,...,x18,y18. Box = square of side scale*200 centred on
    # (center_w, center_h); box_size (sqrt(w*h) of the original box) is kept as attributes["face_size"].
    "hrnet-csv": AflwLayout("hrnet-csv", ",", "image_name", ("scale", "box_size", "center_w", "center_h")),
    # Plain list: image x1 y1 x2 y2 x0 y0 ... x18 y18, whitespace separated, no header.
    "box-list": AflwLayout("box-list", None, None, ("x1", "y1", "x2", "y2")),
}


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
    if declared is not None and declared[0] != len(points):
        raise DatasetError(f"{PTS_COUNT_KEY} says {declared[0]} but the file has {len(points)} points",
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
    if declared is not None and declared[0] != len(points):
        raise DatasetError(f"point count line says {declared[0]} but the file has {len(points)} points",
                           path, declared[1])
    if not points:
        raise DatasetError("no points", path)
    pts = np.stack(points)
    return pts - 1.0 if one_based else pts


def read_box_file(path: PathLike) -> Tuple[np.ndarray, int]:
    """Read a box file -> ``(box (x1, y1, x2, y2), line)``. ``.rct``: one line of 4 numbers; ``.json``:
    ``{"box": [x1, y1, x2, y2]}``. The box is not validated here (see :func:`_checked_box`)."""
    path = Path(path)
    text = _read_text(path, "box file")
    lines = text.splitlines()
    if path.suffix.lower() == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DatasetError(f"invalid JSON: {e.msg}", path, e.lineno) from None
        box = obj.get(JSON_BOX_KEY) if isinstance(obj, dict) else None
        line = next((no for no, t in enumerate(lines, 1) if f'"{JSON_BOX_KEY}"' in t), 1)
        if not isinstance(box, list) or len(box) != 4:
            raise DatasetError(f'expected {{"{JSON_BOX_KEY}": [x1, y1, x2, y2]}}', path, line)
        values = []
        for v in box:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise DatasetError(f"non-numeric value {v!r}", path, line)
            values.append(_number(str(v), path, line))
        return np.array(values), line
    content = [(no, t.strip()) for no, t in enumerate(lines, 1) if t.strip()]
    if not content:
        raise DatasetError("empty box file", path)
    no, text = content[0]
    if len(content) > 1:
        raise DatasetError("a box file holds one line 'x1 y1 x2 y2'; found more", path, content[1][0])
    tokens = text.split()
    if len(tokens) != 4:
        raise DatasetError(f"expected 'x1 y1 x2 y2', got {len(tokens)} values", path, no)
    return _numbers(tokens, path, no), no


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


# ------------------------------------------------------------------------------------------ readers


class DatasetReader(Sequence[FaceRecord]):
    """Base reader: reads all annotations eagerly at construction into ``self.records``.

    Parameters: ``root`` dataset folder; ``split`` a named split of the reader or a list/annotation file path
    (``None`` = the reader's default split); ``scheme`` overrides the reader's scheme (``None`` = default, or
    inferred from the first face for the generic folder); ``box_source`` one of :data:`BOX_SOURCES` allowed by
    the reader (``None`` = its default); ``on_error`` ``"raise"`` or ``"skip"``.

    Attributes: ``root``, ``split``, ``scheme`` (:class:`LandmarkScheme`), ``box_source``, ``on_error``,
    ``records``, ``skipped`` (count), ``skipped_sources`` (``file:line`` of each skipped face), ``expected_size``
    (the protocol's face count for a named split, else ``None``).
    """

    kind: ClassVar[str] = ""
    default_scheme: ClassVar[Optional[str]] = None
    default_split: ClassVar[Optional[str]] = None
    default_box_source: ClassVar[str] = "tight"
    box_sources: ClassVar[Tuple[str, ...]] = ("file", "tight", "auto")
    split_sizes: ClassVar[Mapping[str, int]] = {}

    def __init__(self, root: PathLike, split: Optional[Union[str, PathLike]] = None,
                 scheme: Optional[Union[str, int, LandmarkScheme]] = None, box_source: Optional[str] = None,
                 on_error: str = "raise") -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.kind} dataset root is not a directory", self.root)
        self.split = self.default_split if split is None else split
        chosen = scheme if scheme is not None else self.default_scheme
        self.scheme: Optional[LandmarkScheme] = None if chosen is None else get_scheme(chosen)
        self.box_source = self.default_box_source if box_source is None else box_source
        if self.box_source not in self.box_sources:
            raise ValueError(f"box_source {self.box_source!r} is not available for {self.kind}; choose one of "
                             f"{list(self.box_sources)} ({BOX_SOURCES})")
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.on_error = on_error
        self.records: List[FaceRecord] = []
        self.skipped = 0
        self.skipped_sources: List[str] = []
        self._errors: List[DatasetError] = []
        self._read()
        if self._errors:  # on_error="raise": every malformed face of the split in one message
            raise bad_faces_error(self._errors, self.root)
        if not self.records:
            detail = f" ({self.skipped} malformed faces skipped)" if self.skipped else ""
            raise DatasetError(f"no usable face found for split {self.split!r}{detail}", self.root)

    # -- Sequence protocol
    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index):  # type: ignore[override]
        return self.records[index]

    def __iter__(self) -> Iterator[FaceRecord]:
        return iter(self.records)

    @property
    def expected_size(self) -> Optional[int]:
        return self.split_sizes.get(self.split) if isinstance(self.split, str) else None

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, faces={len(self)}, "
                f"skipped={self.skipped})")

    # -- helpers for subclasses
    def _read(self) -> None:
        raise NotImplementedError

    def _add(self, make: Callable[[], Optional[FaceRecord]]) -> None:
        """Run ``make``; keep its record (``None`` = filtered out), or raise / warn-and-count a DatasetError."""
        try:
            record = make()
        except DatasetError as e:
            if self.on_error == "raise":
                self._errors.append(e)  # reported together once the whole split is read
                return
            self.skipped += 1
            self.skipped_sources.append(e.source)
            warnings.warn(f"{SKIPPED_PREFIX}{e}", DatasetWarning, stacklevel=3)
            return
        if record is not None:
            self.records.append(record)

    def _resolve_scheme(self, points: np.ndarray, path: PathLike, line: Optional[int]) -> LandmarkScheme:
        """Check the point count against the scheme (inferred from the first face when none was given)."""
        if self.scheme is None:
            matches = [s for s in SCHEMES.values() if s.num_points == len(points)]
            if not matches:
                raise DatasetError(f"{len(points)} points match no landmark scheme "
                                   f"({ {s.name: s.num_points for s in SCHEMES.values()} })", path, line)
            self.scheme = matches[0]
        if len(points) != self.scheme.num_points:
            raise DatasetError(f"{len(points)} points, but scheme {self.scheme.name!r} has "
                               f"{self.scheme.num_points}", path, line)
        return self.scheme

    def _record(self, image: Path, points: np.ndarray, source: Tuple[PathLike, Optional[int]],
                attributes: Dict[str, Any], annotation_box: Optional[np.ndarray] = None) -> FaceRecord:
        """Validate points, pick the box by ``box_source`` and build the record."""
        path, line = source
        scheme = self._resolve_scheme(points, path, line)
        if not np.all(np.isfinite(points)):
            raise DatasetError("non-finite landmark coordinate", path, line)
        kind = self.box_source
        box_file = _same_stem(image, BOX_FILE_SUFFIXES) if kind in ("file", "auto") else None
        if kind == "auto":
            kind = "file" if box_file is not None else "tight"
        if kind == "annotation":
            box = _checked_box(annotation_box, path, line)
        elif kind == "file":
            if box_file is None:
                raise DatasetError(f"no box file ({' or '.join(BOX_FILE_SUFFIXES)}) next to the image", image)
            raw, box_line = read_box_file(box_file)
            box = _checked_box(raw, box_file, box_line)
        else:
            box = _checked_box(tight_box(points), path, line)
        attrs = {"dataset": self.kind, "box_source": kind, **attributes}
        return FaceRecord(str(image), points, box, scheme.name, attrs, _where(path, line))


@dataclass(frozen=True)
class _Unit:
    """One face of a folder-like dataset before parsing; ``problem`` is the error to raise if a file is missing."""

    image: Optional[Path]
    landmark: Optional[Path]
    origin: Path
    line: Optional[int] = None
    problem: Optional[str] = None


class _FolderLikeReader(DatasetReader):
    """Images with same-stem landmark files. Splits: names in ``splits`` (glob patterns of landmark files),
    a list file of image paths relative to the root (one per line, ``#`` comments), or subclass-defined."""

    splits: ClassVar[Mapping[str, Tuple[str, ...]]] = {}
    landmark_suffixes: ClassVar[Tuple[str, ...]] = (".pts",)
    validation_splits: ClassVar[bool] = False

    def __init__(self, root: PathLike, split: Optional[Union[str, PathLike]] = None,
                 scheme: Optional[Union[str, int, LandmarkScheme]] = None, box_source: Optional[str] = None,
                 on_error: str = "raise", pts_one_based: bool = True) -> None:
        self.pts_one_based = pts_one_based
        super().__init__(root, split, scheme, box_source, on_error)

    def _read(self) -> None:
        for unit in self._units():
            self._add(lambda u=unit: self._face(u))

    def _units(self) -> List[_Unit]:
        if self.split in self.splits:
            return self._glob_units(self.splits[self.split])
        if isinstance(self.split, str) and self.split in VALIDATION_SPLITS and self.validation_splits:
            parent, side = VALIDATION_SPLITS[self.split]
            units = self._glob_units(self.splits[parent])
            chosen = [u for u in units if held_out(photo_key(u.origin, self.root)) == side]
            if not chosen:
                raise DatasetError(f"split {self.split!r} of {len(units)} faces is empty", self.root)
            return chosen
        list_file = _list_file(self.split, self.root)
        if list_file is not None:
            return self._list_units(list_file)
        names = sorted(self.splits) + (sorted(VALIDATION_SPLITS) if self.validation_splits else [])
        raise ValueError(f"unknown {self.kind} split {self.split!r}: use one of {names} "
                         f"or the path of a list file of image paths")

    def _glob_units(self, patterns: Sequence[str]) -> List[_Unit]:
        found = dict.fromkeys(p for pattern in patterns for p in sorted(self.root.glob(pattern)))
        if not found:
            raise DatasetError(f"no landmark file matches {list(patterns)} (split {self.split!r})", self.root)
        units = []
        for lm in found:
            image = _same_stem(lm, IMAGE_EXTENSIONS)
            problem = None if image else f"no image ({'/'.join(IMAGE_EXTENSIONS)}) next to the landmark file"
            units.append(_Unit(image, lm, lm, None, problem))
        return units

    def _list_units(self, list_file: Path) -> List[_Unit]:
        units = []
        for no, raw in enumerate(_read_lines(list_file, "split list file"), 1):
            rel = raw.split(LIST_COMMENT, 1)[0].strip()
            if not rel:
                continue
            image = self.root / rel
            if not image.is_file():
                units.append(_Unit(None, None, list_file, no, f"listed image {rel!r} not found under {self.root}"))
                continue
            lm = _same_stem(image, self.landmark_suffixes)
            problem = None if lm else f"no landmark file ({' or '.join(self.landmark_suffixes)}) for {rel!r}"
            units.append(_Unit(image, lm, list_file, no, problem))
        return units

    def _face(self, unit: _Unit) -> FaceRecord:
        if unit.problem is not None or unit.image is None or unit.landmark is None:
            raise DatasetError(unit.problem or "incomplete face", unit.origin, unit.line)
        suffix = unit.landmark.suffix.lower()
        points = LANDMARK_PARSERS[suffix](unit.landmark, one_based=self.pts_one_based and suffix == ".pts")
        attributes = {"subset": unit.landmark.parent.relative_to(self.root).as_posix()
                      if unit.landmark.is_relative_to(self.root) else unit.landmark.parent.as_posix()}
        return self._record(unit.image, points, (unit.landmark, 1), attributes)


class Reader300W(_FolderLikeReader):
    """300-W (68 points) from its distributed folder tree; splits in :data:`SPLITS_300W`, glsr's ``fit`` / ``val``
    partition of ``train`` (:data:`VALIDATION_SPLITS`) or a list file.

    ``attributes["subset"]`` is the folder of the face (``"lfpw/trainset"``, ``"ibug"``...). 300-W has no box in
    its ``.pts`` files: ``box_source`` is ``"tight"`` (default), ``"file"`` or ``"auto"``.
    """

    kind = "300w"
    default_scheme = "68"
    default_split = "train"
    splits = SPLITS_300W
    split_sizes = SPLIT_SIZES_300W
    validation_splits = True


class COFWReader(_FolderLikeReader):
    """COFW-68 test set (Ghiasi & Fowlkes re-annotation): images + 1-based ``.pts`` (like 300-W), split ``test``."""

    kind = "cofw"
    default_scheme = "68"
    default_split = "test"
    splits = SPLITS_COFW
    split_sizes = SPLIT_SIZES_COFW


class FolderReader(_FolderLikeReader):
    """Generic folder: every image (:data:`IMAGE_EXTENSIONS`, recursive) with a same-stem ``.pts`` (1-based) or
    ``.txt`` (0-based; optional count line, then ``x y`` lines) landmark file, ``.pts`` preferred when both exist;
    optional same-stem box file (:data:`BOX_FILE_SUFFIXES`). ``box_source`` defaults to ``"auto"``.

    ``split``: ``None`` = the whole folder, the name of a sub-folder, or a list file of image paths.
    The scheme is inferred from the first face's point count unless given.
    """

    kind = "folder"
    default_box_source = "auto"
    landmark_suffixes = (".pts", ".txt")

    def _units(self) -> List[_Unit]:
        list_file = _list_file(self.split, self.root)
        if list_file is not None:
            return self._list_units(list_file)
        base = self.root if self.split is None else self.root / str(self.split)
        if not base.is_dir():
            raise ValueError(f"folder split {self.split!r} is neither a sub-folder of {self.root} nor a list file")
        images = sorted(p for p in base.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not images:
            raise DatasetError(f"no image ({'/'.join(IMAGE_EXTENSIONS)}) in the folder", base)
        units = []
        for image in images:
            lm = _same_stem(image, self.landmark_suffixes)
            problem = None if lm else f"missing landmark file ({' or '.join(self.landmark_suffixes)}) for image"
            units.append(_Unit(image, lm, image, None, problem))
        return units


class WFLWReader(DatasetReader):
    """WFLW (98 points) from the official ``list_98pt_rect_attr_{train,test}.txt`` (layout
    :data:`WFLW_LINE_LAYOUT`), images under ``WFLW_images/``.

    ``split``: ``"train"``, ``"test"``, a subset name (:data:`WFLW_SUBSET_ALIASES`, e.g. ``"largepose"`` = test
    faces with the pose flag), or the path of an annotation file. ``subset`` filters any split by a flag.
    ``attributes`` holds the six flags as bools. Coordinates are taken as stored (``one_based=False``).
    """

    kind = "wflw"
    default_scheme = "98"
    default_split = "train"
    default_box_source = "annotation"
    box_sources = ("annotation", "file", "tight", "auto")
    split_sizes = WFLW_SPLIT_SIZES

    def __init__(self, root: PathLike, split: Optional[Union[str, PathLike]] = None,
                 scheme: Optional[Union[str, int, LandmarkScheme]] = None, box_source: Optional[str] = None,
                 on_error: str = "raise", subset: Optional[str] = None, one_based: bool = False,
                 image_root: Optional[PathLike] = None) -> None:
        self.subset = None if subset is None else _wflw_attribute(subset)
        self.one_based = one_based
        self._image_root = None if image_root is None else Path(image_root)
        super().__init__(root, split, scheme, box_source, on_error)

    @property
    def expected_size(self) -> Optional[int]:
        if self.split == "test" and self.subset is not None:
            return WFLW_SUBSET_SIZES[self.subset]
        return None if self.subset is not None else super().expected_size

    def _annotation_file(self) -> Path:
        name = str(self.split).lower()
        if name not in WFLW_ANNOTATION_FILES and name not in WFLW_SUBSET_ALIASES:
            list_file = _list_file(self.split, self.root)
            if list_file is not None:
                return list_file
        if name not in WFLW_ANNOTATION_FILES:
            if name not in WFLW_SUBSET_ALIASES:
                raise ValueError(f"unknown WFLW split {self.split!r}: use {sorted(WFLW_ANNOTATION_FILES)}, a subset "
                                 f"{sorted(WFLW_SUBSET_ALIASES)} or an annotation file path")
            if self.subset is not None and self.subset != WFLW_SUBSET_ALIASES[name]:
                raise ValueError(f"split {self.split!r} conflicts with subset {self.subset!r}")
            self.subset = WFLW_SUBSET_ALIASES[name]
            name = "test"
        self.split = name
        candidates = [self.root / d / WFLW_ANNOTATION_FILES[name] for d in WFLW_ANNOTATION_DIRS]
        for c in candidates:
            if c.is_file():
                return c
        raise DatasetError(f"WFLW annotation file {WFLW_ANNOTATION_FILES[name]} not found (looked in "
                           f"{list(WFLW_ANNOTATION_DIRS)})", self.root)

    def _read(self) -> None:
        ann = self._annotation_file()
        image_root = self._image_root or next(
            (self.root / d for d in WFLW_IMAGE_DIRS if (self.root / d).is_dir()), self.root)
        for no, raw in enumerate(_read_lines(ann, "WFLW annotation file"), 1):
            if raw.strip():
                self._add(lambda t=raw, n=no: self._line(t, ann, n, image_root))

    def _line(self, text: str, path: Path, line: int, image_root: Path) -> Optional[FaceRecord]:
        fields = text.split()
        expected = sum(n for _, n in WFLW_LINE_LAYOUT)
        if len(fields) != expected:
            layout = ", ".join(f"{n} {name}" for name, n in WFLW_LINE_LAYOUT)
            raise DatasetError(f"expected {expected} fields ({layout}), got {len(fields)}", path, line)
        parts: Dict[str, List[str]] = {}
        start = 0
        for name, n in WFLW_LINE_LAYOUT:
            parts[name] = fields[start:start + n]
            start += n
        points = _numbers(parts["landmarks"], path, line).reshape(-1, 2)
        if self.one_based:
            points = points - 1.0
        box = _numbers(parts["box"], path, line)
        flags = {}
        for name, token in zip(WFLW_ATTRIBUTES, parts["attributes"]):
            if token not in ("0", "1"):
                raise DatasetError(f"attribute {name!r} must be 0 or 1, got {token!r}", path, line)
            flags[name] = token == "1"
        if self.subset is not None and not flags[self.subset]:
            return None
        return self._record(image_root / parts["image"][0], points, (path, line), flags, annotation_box=box)


def _wflw_attribute(name: str) -> str:
    try:
        return WFLW_SUBSET_ALIASES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown WFLW subset {name!r}; known: {sorted(WFLW_SUBSET_ALIASES)}") from None


class AFLWReader(DatasetReader):
    """AFLW-19 from list files; layouts in :data:`AFLW_LAYOUTS`, chosen by ``layout`` (``"auto"``: a ``.csv``
    file or a comma in the first line = ``"hrnet-csv"``, else ``"box-list"``).

    * ``hrnet-csv`` (HRNet-Facial-Landmark-Detection ``face_landmarks_aflw_{train,test,test_frontal}.csv``): a header
      row, then ``image_name,scale,box_size,center_w,center_h,x0,y0,...,x18,y18`` (43 columns). The annotation box
      is the square of side ``scale * 200`` centred on ``(center_w, center_h)`` (HRNet's crop box);
      ``attributes["face_size"] = box_size`` (HRNet's AFLW normalizer).
    * ``box-list``: ``image x1 y1 x2 y2 x0 y0 ... x18 y18`` whitespace separated, no header;
      ``attributes["face_size"] = sqrt((x2 - x1) * (y2 - y1))``.

    Splits: ``train``, ``full`` (AFLW-Full test), ``frontal`` (AFLW-Frontal test) -> :data:`AFLW_SPLIT_FILES` in the
    root, or a list file path. Images are read relative to ``image_root`` (default ``root/images`` if it exists,
    else ``root``). Coordinates are taken as stored (``one_based=False``).
    """

    kind = "aflw"
    default_scheme = "19"
    default_split = "train"
    default_box_source = "annotation"
    box_sources = ("annotation", "file", "tight", "auto")
    split_sizes = AFLW_SPLIT_SIZES

    def __init__(self, root: PathLike, split: Optional[Union[str, PathLike]] = None,
                 scheme: Optional[Union[str, int, LandmarkScheme]] = None, box_source: Optional[str] = None,
                 on_error: str = "raise", layout: str = "auto", one_based: bool = False,
                 image_root: Optional[PathLike] = None) -> None:
        if layout != "auto" and layout not in AFLW_LAYOUTS:
            raise ValueError(f"unknown AFLW layout {layout!r}; choose 'auto' or one of {sorted(AFLW_LAYOUTS)}")
        self.layout_name = layout
        self.one_based = one_based
        self._image_root = None if image_root is None else Path(image_root)
        super().__init__(root, split, scheme, box_source, on_error)

    def _split_file(self) -> Path:
        if self.split not in AFLW_SPLIT_FILES:
            list_file = _list_file(self.split, self.root)
            if list_file is not None:
                return list_file
            raise ValueError(f"unknown AFLW split {self.split!r}: use {sorted(AFLW_SPLIT_FILES)} or a list file path")
        path = self.root / AFLW_SPLIT_FILES[self.split]
        if not path.is_file():
            raise DatasetError(f"AFLW list file for split {self.split!r} not found", path)
        return path

    def _read(self) -> None:
        path = self._split_file()
        lines = _read_lines(path, "AFLW list file")
        first = next((t for t in lines if t.strip()), "")
        if self.layout_name == "auto":
            layout = AFLW_LAYOUTS["hrnet-csv" if path.suffix.lower() == ".csv" or "," in first else "box-list"]
        else:
            layout = AFLW_LAYOUTS[self.layout_name]
        self.layout = layout
        image_root = self._image_root or next(
            (self.root / d for d in AFLW_IMAGE_DIRS if (self.root / d).is_dir()), self.root)
        for no, raw in enumerate(lines, 1):
            text = raw.strip()
            if not text:
                continue
            fields = [f.strip() for f in (text.split(layout.delimiter) if layout.delimiter else text.split())]
            if layout.header_first_field and no == 1 and fields[0].lower() == layout.header_first_field:
                continue
            self._add(lambda f=fields, n=no: self._line(f, layout, path, n, image_root))

    def _line(self, fields: List[str], layout: AflwLayout, path: Path, line: int, image_root: Path) -> FaceRecord:
        n_meta = len(layout.meta_fields)
        n_coords = 2 * self.scheme.num_points
        expected = 1 + n_meta + n_coords
        if len(fields) != expected:
            raise DatasetError(f"expected {expected} fields (image, {', '.join(layout.meta_fields)}, "
                               f"{n_coords} coordinates) in layout {layout.name!r}, got {len(fields)}", path, line)
        meta = dict(zip(layout.meta_fields, _numbers(fields[1:1 + n_meta], path, line)))
        points = _numbers(fields[1 + n_meta:], path, line).reshape(-1, 2)
        if self.one_based:
            points = points - 1.0
        if layout.name == "hrnet-csv":
            half = meta["scale"] * HRNET_SCALE_UNIT / 2
            box = np.array([meta["center_w"] - half, meta["center_h"] - half,
                            meta["center_w"] + half, meta["center_h"] + half])
            face_size = meta["box_size"]
            extra = {"scale": meta["scale"]}
        else:
            box = np.array([meta["x1"], meta["y1"], meta["x2"], meta["y2"]])
            face_size = math.sqrt(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0))
            extra = {}
        attrs = {"face_size": float(face_size), **extra}
        return self._record(image_root / fields[0], points, (path, line), attrs, annotation_box=box)


# ------------------------------------------------------------------------------------------ torch dataset


class FaceDataset(Dataset):
    """Torch dataset over face records; images are read lazily with OpenCV (BGR ``uint8 [H, W, 3]``).

    ``dataset[i]`` is ``transform(image, record)`` when a transform is given, else ``(image, record)``.
    A missing or undecodable image raises :class:`DatasetError` naming the image file and the record's source.
    """

    def __init__(self, records: Sequence[FaceRecord],
                 transform: Optional[Callable[[np.ndarray, FaceRecord], Any]] = None) -> None:
        self.records: List[FaceRecord] = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def load_image(self, index: int) -> np.ndarray:
        return load_image(self.records[index])

    def __getitem__(self, index: int) -> Any:
        record = self.records[index]
        image = load_image(record)
        return self.transform(image, record) if self.transform is not None else (image, record)


def load_image(record: FaceRecord) -> np.ndarray:
    """Read ``record.image_path`` as BGR ``uint8 [H, W, 3]`` (grayscale is expanded, alpha dropped).

    The stored pixel array is returned, never turned by an EXIF orientation tag: the landmark files of 300-W,
    WFLW, COFW and AFLW are in stored-pixel coordinates. A truncated JPEG / PNG (which a decoder would fill with
    grey) is a :class:`DatasetError` like an undecodable one.
    """
    from glsr.runtime.io import decode_image

    path = Path(record.image_path)
    if not path.is_file():
        raise DatasetError(f"image file not found (face annotated at {record.source})", path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"cannot read image file: {e} (face annotated at {record.source})", path) from None
    try:
        read = decode_image(data, path, exif=False)
    except ValueError as e:  # undecodable, or refused before decoding (a header claiming too many pixels)
        why = "cannot decode image file" if "could not be decoded" in str(e) else str(e).replace(f"image {path}", "")
        why = why.strip(" :")
        raise DatasetError(f"{why} (face annotated at {record.source})", path) from None
    if read.warnings:
        raise DatasetError(f"{read.warnings[0].split(': ', 1)[-1]} (face annotated at {record.source})", path)
    return read.image


# ------------------------------------------------------------------------------------------ entry point

DATASET_READERS: Dict[str, type] = {
    "300w": Reader300W,
    "wflw": WFLWReader,
    "aflw": AFLWReader,
    "cofw": COFWReader,
    "folder": FolderReader,
}
PROCEDURAL_KIND = "procedural"
PROCEDURAL_MODULE = "glsr.procedural"
PROCEDURAL_DEFAULT_SCHEME = "68"


def open_checked(spec: str, split: Optional[Union[str, PathLike]] = None, skip_bad: bool = False,
                 **options: Any) -> Sequence[FaceRecord]:
    """:func:`open_dataset` for a training or evaluation run: every malformed face of the split (annotation
    problems, image files missing or not readable by their header) in one :class:`DatasetError`, or, with
    ``skip_bad``, left out with one line on stderr giving the count. Procedural data is returned as is."""
    import sys

    from glsr.runtime.io import image_file_problem

    if spec.partition(":")[0].strip().lower() == PROCEDURAL_KIND:
        return open_dataset(spec, split=split, **options)
    options.pop("on_error", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DatasetWarning)
        try:
            ds = open_dataset(spec, split=split, on_error="skip", **options)
        except DatasetError:
            found = [str(w.message)[len(SKIPPED_PREFIX):] for w in caught if issubclass(w.category, DatasetWarning)]
            if found:
                raise bad_faces_error(found, spec.partition(":")[2].strip() or spec, skip_bad) from None
            raise
    problems = [str(w.message)[len(SKIPPED_PREFIX):] for w in caught if issubclass(w.category, DatasetWarning)]
    keep = []
    for r in ds.records:
        problem = image_file_problem(r.image_path)
        if problem:
            problems.append(f"{r.image_path}: {problem} (face annotated at {r.source})")
        else:
            keep.append(r)
    if not problems:
        return ds
    if not skip_bad:
        raise bad_faces_error(problems, ds.root)
    if not keep:
        raise DatasetError(f"no usable face: all {len(problems)} faces are malformed", ds.root)
    kept = {id(r) for r in keep}
    ds.skipped_sources += [r.source for r in ds.records if id(r) not in kept]
    ds.skipped = len(problems)
    ds.records = keep
    shown = "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else "")
    print(f"glsr: --skip-bad: left out {len(problems)} malformed face(s) of {spec}, kept {len(keep)}: {shown}",
          file=sys.stderr)
    return ds


def open_dataset(spec: str, scheme: Optional[Union[str, int, LandmarkScheme]] = None,
                 split: Optional[Union[str, PathLike]] = None, **options: Any) -> Sequence[FaceRecord]:
    """Open a dataset from a spec string ``KIND:DIR`` (kinds in :data:`DATASET_READERS`) or
    ``procedural[:68|:98]``.

    ``options`` go to the reader (``box_source``, ``on_error``, ``pts_one_based``, ``subset``, ``layout``,
    ``image_root``, ...). For ``procedural`` the module :mod:`glsr.procedural` is imported lazily and
    ``ProceduralFaces(scheme=<name>, **options)`` (plus ``split=`` when given) is returned.
    """
    kind, sep, rest = spec.partition(":")
    kind = kind.strip().lower()
    if kind == PROCEDURAL_KIND:
        names = [get_scheme(s).name for s in (rest or None, scheme) if s not in (None, "")]
        if len(set(names)) > 1:
            raise ValueError(f"spec {spec!r} conflicts with scheme={scheme!r}")
        procedural = importlib.import_module(PROCEDURAL_MODULE)
        kwargs = dict(options)
        if split is not None:
            kwargs["split"] = split
        return procedural.ProceduralFaces(scheme=names[0] if names else PROCEDURAL_DEFAULT_SCHEME, **kwargs)
    if kind not in DATASET_READERS:
        raise ValueError(f"unknown dataset kind {kind!r} in {spec!r}; use one of "
                         f"{[k + ':DIR' for k in DATASET_READERS] + [PROCEDURAL_KIND + '[:68|:98]']}")
    if not sep or not rest.strip():
        raise ValueError(f"dataset spec {spec!r} needs a directory: {kind}:DIR")
    return DATASET_READERS[kind](Path(rest.strip()).expanduser(), split=split, scheme=scheme, **options)
