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
``"procedural[:68|:98]"``). The parts live in :mod:`glsr.train.data`: ``splits`` (layouts, split tables, the
held-out choice), ``annotations`` (format tables, records, errors, file parsers) and ``readers``; this module
keeps the torch dataset and the entry points and re-exports every public name, so ``from glsr.train.datasets
import ...`` works as before.
"""
from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
from torch.utils.data import Dataset

from glsr.schemes import LandmarkScheme, get_scheme
from glsr.train.data.annotations import (
    BOX_FILE_SUFFIXES, BOX_SOURCES, DatasetError, DatasetWarning, FaceRecord, IMAGE_EXTENSIONS, JSON_BOX_KEY,
    LANDMARK_PARSERS, LIST_COMMENT, MAX_LISTED_ERRORS, ON_ERROR, PTS_CLOSE, PTS_COUNT_KEY, PTS_OPEN, SKIPPED_PREFIX,
    SKIP_BAD_HINT, PathLike, bad_faces_error, read_box_file, read_pts, read_txt_points,
)
from glsr.train.data.readers import AFLWReader, COFWReader, DatasetReader, FolderReader, Reader300W, WFLWReader
from glsr.train.data.splits import (
    AFLW_IMAGE_DIRS, AFLW_LAYOUTS, AFLW_SPLIT_FILES, AFLW_SPLIT_SIZES, AflwLayout, HRNET_SCALE_UNIT, SPLITS_300W,
    SPLITS_COFW, SPLIT_SIZES_300W, SPLIT_SIZES_COFW, VALIDATION_MODULUS, VALIDATION_SALT, VALIDATION_SPLITS,
    WFLW_ANNOTATION_DIRS, WFLW_ANNOTATION_FILES, WFLW_ATTRIBUTES, WFLW_IMAGE_DIRS, WFLW_LINE_LAYOUT,
    WFLW_SPLIT_SIZES, WFLW_SUBSET_ALIASES, WFLW_SUBSET_SIZES, held_out, photo_key,
)

__all__ = [
    "AFLWReader", "AFLW_IMAGE_DIRS", "AFLW_LAYOUTS", "AFLW_SPLIT_FILES", "AFLW_SPLIT_SIZES", "AflwLayout",
    "BOX_FILE_SUFFIXES", "BOX_SOURCES", "COFWReader", "DATASET_READERS", "DatasetError", "DatasetReader",
    "DatasetWarning", "FaceDataset", "FaceRecord", "FolderReader", "HRNET_SCALE_UNIT", "IMAGE_EXTENSIONS",
    "JSON_BOX_KEY", "LANDMARK_PARSERS", "LIST_COMMENT", "MAX_LISTED_ERRORS", "ON_ERROR",
    "PROCEDURAL_DEFAULT_SCHEME", "PROCEDURAL_KIND", "PROCEDURAL_MODULE", "PTS_CLOSE", "PTS_COUNT_KEY", "PTS_OPEN",
    "Reader300W", "SKIPPED_PREFIX", "SKIP_BAD_HINT", "SPLITS_300W", "SPLITS_COFW", "SPLIT_SIZES_300W",
    "SPLIT_SIZES_COFW", "VALIDATION_MODULUS", "VALIDATION_SALT", "VALIDATION_SPLITS", "WFLWReader",
    "WFLW_ANNOTATION_DIRS", "WFLW_ANNOTATION_FILES", "WFLW_ATTRIBUTES", "WFLW_IMAGE_DIRS", "WFLW_LINE_LAYOUT",
    "WFLW_SPLIT_SIZES", "WFLW_SUBSET_ALIASES", "WFLW_SUBSET_SIZES", "bad_faces_error", "held_out", "load_image",
    "open_checked", "open_dataset", "photo_key", "read_box_file", "read_pts", "read_txt_points",
]

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
