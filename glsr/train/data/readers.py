"""The dataset readers (300-W, COFW, WFLW, AFLW, a generic folder), all producing
:class:`~glsr.train.data.annotations.FaceRecord`; conventions in :mod:`glsr.train.datasets`."""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from glsr.geometry import tight_box
from glsr.schemes import SCHEMES, LandmarkScheme, get_scheme
from glsr.train.data.annotations import (
    BOX_FILE_SUFFIXES, BOX_SOURCES, DatasetError, DatasetWarning, FaceRecord, IMAGE_EXTENSIONS, LANDMARK_PARSERS,
    LIST_COMMENT, ON_ERROR, SKIPPED_PREFIX, _checked_box, _list_file, _numbers, _read_lines, _same_stem, _where,
    bad_faces_error, read_box_file,
)
from glsr.train.data.splits import (
    AFLW_IMAGE_DIRS, AFLW_LAYOUTS, AFLW_SPLIT_FILES, AFLW_SPLIT_SIZES, AflwLayout, HRNET_SCALE_UNIT, SPLITS_300W,
    SPLITS_COFW, SPLIT_SIZES_300W, SPLIT_SIZES_COFW, VALIDATION_SPLITS, WFLW_ANNOTATION_DIRS, WFLW_ANNOTATION_FILES,
    WFLW_ATTRIBUTES, WFLW_IMAGE_DIRS, WFLW_LINE_LAYOUT, WFLW_SPLIT_SIZES, WFLW_SUBSET_ALIASES, WFLW_SUBSET_SIZES,
    held_out, photo_key,
)

PathLike = Union[str, os.PathLike]

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
