"""Where the faces of each distributed data set are and which split they belong to: file layouts and split
tables of 300-W, COFW, WFLW and AFLW, and glsr's held-out ``fit`` / ``val`` choice of photos (:func:`held_out`)."""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

PathLike = Union[str, os.PathLike]


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
