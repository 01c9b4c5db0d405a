"""Face boxes for the runtime: one small interface, a registry, and three detectors.

``FaceDetector.detect(image, path=None) -> [F, 4]`` float64 boxes ``(x1, y1, x2, y2)`` in image pixels (pixel
centres at integers, :mod:`glsr.geometry`), largest face first. ``path`` is the image file when there is one; only
detectors that read side files (:class:`BoxFileDetector`) need it.

Detectors are named by a spec string ``NAME[:ARG]`` (the CLI's ``--detector``), resolved by
:func:`make_detector` through :data:`DETECTORS`:

=====================  ===============================================================================
``yunet``              YuNet (OpenCV Model Zoo, MIT), shipped with glsr and run by ``cv2.FaceDetectorYN``
                       (the default); boxes corrected to the box convention the model declares, else to
                       ``procedural``
``yunet:CONVENTION``   corrected to ``procedural``, ``tight`` (tight box of the landmarks, glsr's dataset
                       readers' default and the shipped models'), ``wflw`` (WFLW annotation rectangles, the
                       authors' DPR models) or ``raw`` (uncorrected); ``yunet:MODEL.onnx``: another YuNet file
``haar[:CONVENTION]``  OpenCV's bundled frontal-face Haar cascade, corrected the same way
``boxfile``            boxes read from same-stem files beside the image (``IMAGE.rct`` / ``IMAGE.json``)
``boxfile:DIR``        the same, looked up in ``DIR`` by the image's stem
=====================  ===============================================================================

Box conventions and corrections
-------------------------------
Detector boxes are offset and scaled against the boxes models are trained with; the conventions, the measured
correction of each detector onto the tight box (``DETECTOR_TO_TIGHT``) and the box files live in one table,
:mod:`glsr.boxes` (its names are importable from here too). A convention detector's boxes are corrected onto the
convention the model declares.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from glsr.boxes import (BOX_CONVENTIONS, BOX_FILE_SUFFIXES, DEFAULT_BOX_CONVENTION, DETECTOR_TO_TIGHT,  # noqa: F401
                        IDENTITY, PROCEDURAL_BOX, TIGHT_TO_CONVENTION, WFLW_BOX, BoxCorrection, box_convention_of,
                        box_from_landmarks, check_convention, correction_for, read_box_file)
from glsr.imaging import check_image


class DetectorUnavailableError(ValueError):
    """The detector cannot run with this installation (e.g. OpenCV 5 without Haar cascades)."""


HAAR_CORRECTIONS: Dict[str, BoxCorrection] = {c: correction_for("haar", c) for c in BOX_CONVENTIONS}
"""The Haar detector's correction per target convention (kept by name for scripts that read it)."""
YUNET_CORRECTIONS: Dict[str, BoxCorrection] = {c: correction_for("yunet", c) for c in BOX_CONVENTIONS}


# ------------------------------------------------------------------------------------------ interface


class FaceDetector:
    """Base class: ``detect(image, path=None) -> [F, 4]`` boxes, largest first, ``correction`` applied."""

    name = "base"

    def __init__(self, correction: BoxCorrection = IDENTITY):
        self.correction = correction

    def detect(self, image: np.ndarray, path: Optional[str | os.PathLike] = None) -> np.ndarray:
        check_image(image)
        raw = np.asarray(self._detect(image, path), dtype=np.float64).reshape(-1, 4)
        if len(raw) == 0:
            return np.zeros((0, 4))
        area = (raw[:, 2] - raw[:, 0]) * (raw[:, 3] - raw[:, 1])
        return self.correction.apply(raw[np.argsort(-area, kind="stable")])

    def _detect(self, image: np.ndarray, path: Optional[str | os.PathLike]) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def bind(self, metadata) -> "FaceDetector":
        """Adapt to the model the boxes are for (the Predictor calls this); default: nothing to adapt."""
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(correction={self.correction})"


class ConventionDetector(FaceDetector):
    """A detector whose boxes are corrected onto a box convention (:data:`TIGHT_TO_CONVENTION`) by its measured
    :data:`DETECTOR_TO_TIGHT` correction. ``convention``: a name of :data:`BOX_CONVENTIONS`, or ``"auto"``: the one
    the model declares in its metadata when bound to it (:meth:`bind`), else :data:`DEFAULT_BOX_CONVENTION`."""

    def __init__(self, convention: str = "auto"):
        if convention != "auto" and convention not in BOX_CONVENTIONS:
            raise ValueError(f"unknown box convention {convention!r} for the {self.label} detector; choose one of "
                             f"{['auto', *BOX_CONVENTIONS]}")
        self.requested = convention
        self.convention = DEFAULT_BOX_CONVENTION if convention == "auto" else convention
        super().__init__(correction_for(self.name, self.convention))

    label = "base"

    def bind(self, metadata) -> "ConventionDetector":
        if self.requested == "auto":
            conv = box_convention_of(metadata) or DEFAULT_BOX_CONVENTION
            if conv not in BOX_CONVENTIONS:
                raise ValueError(f"the model declares box convention {conv!r}, for which no {self.label} correction "
                                 f"is measured ({sorted(BOX_CONVENTIONS)}); pass --detector {self.name}:CONVENTION")
            self.convention = conv
            self.correction = correction_for(self.name, conv)
        return self

    def describe(self) -> str:
        """One line for help texts and reports: detector and the convention its boxes are corrected to."""
        return f"{self.label}, boxes corrected to the {self.convention!r} convention"


DetectorFactory = Callable[[Optional[str]], FaceDetector]
DETECTORS: Dict[str, DetectorFactory] = {}
DETECTOR_HELP: Dict[str, str] = {}


def register_detector(name: str, help: str) -> Callable[[DetectorFactory], DetectorFactory]:
    """Register ``factory(arg) -> FaceDetector`` under ``name`` (``arg`` is what follows ``NAME:``)."""

    def deco(factory: DetectorFactory) -> DetectorFactory:
        DETECTORS[name] = factory
        DETECTOR_HELP[name] = help
        return factory

    return deco


def make_detector(spec: str | FaceDetector | None) -> Optional[FaceDetector]:
    """A detector from a spec ``NAME[:ARG]`` (see the module docstring); detectors and ``None`` pass through."""
    if spec is None or isinstance(spec, FaceDetector):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"detector spec must be a string like 'haar' or 'yunet:model.onnx', got {spec!r}")
    name, _, arg = spec.strip().partition(":")
    name = name.lower()
    if name not in DETECTORS:
        raise ValueError(f"unknown face detector {name!r}; choose one of: "
                         + "; ".join(f"{k} ({v})" for k, v in DETECTOR_HELP.items()))
    return DETECTORS[name](arg or None)


def detector_names() -> Sequence[str]:
    return tuple(DETECTORS)


# ------------------------------------------------------------------------------------------ Haar


HAAR_CASCADE = "haarcascade_frontalface_default.xml"
MAX_DETECT_SIDE = 2048
"""Detectors look at images at most this many pixels on a side: a larger photo is shrunk for detection and the
boxes are scaled back (`glsr predict` on a 10000 x 10000 photo: 16.4 s and 5.7 GB peak with the Haar cascade's
pyramid on the whole photo, 6.5 s and 0.84 GB shrunk, most of it decoding the photo).
Faces then need to be ``min_size`` pixels in the shrunk image (120 px in a 10000 px photo for the Haar cascade)."""


def shrunk_for_detection(image: np.ndarray, max_side: Optional[int] = None) -> tuple:
    """``(image, s)``: the image shrunk by ``s <= 1`` (area resampling) so that its longer side is at most
    ``max_side`` (default :data:`MAX_DETECT_SIDE`); ``s = 1`` returns it unchanged."""
    import cv2

    max_side = MAX_DETECT_SIDE if max_side is None else max_side
    h, w = image.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s == 1.0:
        return image, 1.0
    size = (max(1, int(round(w * s))), max(1, int(round(h * s))))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), s


def unshrink_boxes(boxes: np.ndarray, s: float) -> np.ndarray:
    """Boxes of a shrunk image back in the original's pixels (pixel centres at integers in both)."""
    return boxes if s == 1.0 else (np.asarray(boxes, dtype=np.float64) + 0.5) / s - 0.5


class HaarDetector(ConventionDetector):
    """OpenCV's bundled frontal-face Haar cascade (``cv2.data.haarcascades``, opencv-python 4.x); ``convention`` as
    in :class:`ConventionDetector`."""

    name = "haar"
    label = "OpenCV Haar cascade"

    def __init__(self, convention: str = "auto", scale_factor: float = 1.1, min_neighbors: int = 5,
                 min_size: int = 24, cascade: Optional[str | os.PathLike] = None):
        super().__init__(convention)
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.min_size = int(min_size)
        self._cascade = self._load(cascade)

    @staticmethod
    def _load(cascade: Optional[str | os.PathLike]):
        import cv2

        if cascade is None:
            data = getattr(cv2, "data", None)
            folder = getattr(data, "haarcascades", None)
            if folder is None or not hasattr(cv2, "CascadeClassifier"):
                raise DetectorUnavailableError(
                    f"this OpenCV ({getattr(cv2, '__version__', '?')}) has no bundled Haar cascades (cv2.data / "
                    "cv2.CascadeClassifier are gone in opencv-python 5): install 'opencv-python<5', use another "
                    "detector (--detector yunet:MODEL.onnx or boxfile), or give the face boxes (--box)")
            cascade = os.path.join(folder, HAAR_CASCADE)
        if not hasattr(cv2, "CascadeClassifier"):
            raise DetectorUnavailableError("this OpenCV has no CascadeClassifier (removed in opencv-python 5): install "
                               "'opencv-python<5' or give the face boxes (--box)")
        if not Path(cascade).is_file():
            raise FileNotFoundError(f"Haar cascade {cascade} does not exist (opencv-python installs it with "
                                    "cv2.data.haarcascades; reinstall 'opencv-python<5')")
        c = cv2.CascadeClassifier(str(cascade))
        if c.empty():
            raise ValueError(f"OpenCV could not load the Haar cascade {cascade}")
        return c

    def raw(self, image: np.ndarray) -> np.ndarray:
        """Uncorrected boxes ``[F, 4]`` (``(x, y, x + w - 1, y + h - 1)`` of OpenCV's rectangles)."""
        import cv2

        small, s = shrunk_for_detection(check_image(image))
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        found = self._cascade.detectMultiScale(grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                               minSize=(self.min_size, self.min_size))
        if len(found) == 0:
            return np.zeros((0, 4))
        f = np.asarray(found, dtype=np.float64).reshape(-1, 4)
        return unshrink_boxes(np.stack([f[:, 0], f[:, 1], f[:, 0] + f[:, 2] - 1, f[:, 1] + f[:, 3] - 1], axis=1), s)

    def _detect(self, image, path):
        return self.raw(image)


@register_detector("haar", "OpenCV's Haar cascade; haar:procedural|tight|wflw|raw picks the box convention "
                           "(default: the model's, else procedural)")
def _haar(arg: Optional[str]) -> FaceDetector:
    return HaarDetector(arg or "auto")


# ------------------------------------------------------------------------------------------ YuNet


YUNET_FILE = "face_detection_yunet.onnx"
YUNET_SHA256 = "ebafce4e3c118d6554634be5c27ab333b4c047a9a8c3faf1d7cf93101c22f0f0"
"""The YuNet model glsr ships (OpenCV Model Zoo, MIT; ``glsr/runtime/data/LICENSE-yunet.txt``), checked on load."""


def bundled_yunet() -> Path:
    """The YuNet model file installed with glsr (package data of ``glsr.runtime``), its checksum verified."""
    from glsr.digest import file_sha256

    path = Path(__file__).resolve().parent / "data" / YUNET_FILE
    if not path.is_file():
        raise FileNotFoundError(f"glsr's YuNet face detector is missing ({path}); reinstall glsr, or use "
                                "--detector haar, or give the face boxes (--box)")
    digest = file_sha256(path)
    if digest != YUNET_SHA256:
        raise ValueError(f"glsr's YuNet face detector {path} is damaged (sha256 {digest[:12]}..., expected "
                         f"{YUNET_SHA256[:12]}...); reinstall glsr, or use --detector haar")
    return path


class YuNetDetector(ConventionDetector):
    """YuNet (OpenCV Model Zoo) run by OpenCV's ``cv2.FaceDetectorYN`` on the image (shrunk to at most
    :data:`MAX_DETECT_SIDE` px), boxes corrected by the measured ``DETECTOR_TO_TIGHT["yunet"]``.

    ``model``: ``None`` = the model shipped with glsr (:func:`bundled_yunet`); another YuNet file may be given,
    but the correction was measured for the shipped one. ``score_threshold``: the detector's face score needed
    (0.7: every face of 300-W's fit and val splits is found, see ``benchmarks/results/detector_boxes.md``).
    """

    name = "yunet"
    label = "YuNet (OpenCV Model Zoo)"

    def __init__(self, convention: str = "auto", model: Optional[str | os.PathLike] = None,
                 score_threshold: float = 0.7, nms_threshold: float = 0.3):
        import cv2

        super().__init__(convention)
        if model is None:
            self.model = bundled_yunet()
        else:
            self.model = Path(model)
            if not self.model.is_file():
                raise FileNotFoundError(f"YuNet model {self.model} does not exist (glsr ships one: --detector yunet)")
        if not hasattr(cv2, "FaceDetectorYN"):
            raise DetectorUnavailableError(f"this OpenCV ({cv2.__version__}) has no cv2.FaceDetectorYN "
                                           "(needs OpenCV >= 4.5.4): upgrade opencv-python, or --detector haar")
        try:
            self._det = cv2.FaceDetectorYN.create(str(self.model), "", (320, 320), score_threshold, nms_threshold)
        except cv2.error as e:
            raise ValueError(f"OpenCV could not load {self.model} as a YuNet face detector: {e}") from e
        self.last_scores = np.zeros(0)

    def raw_faces(self, image: np.ndarray) -> np.ndarray:
        """YuNet's output ``[F, 15]`` in image pixels: box ``(x, y, w, h)``, five points (right eye, left eye, nose
        tip, mouth corners) and the score."""
        small, s = shrunk_for_detection(check_image(image))
        h, w = small.shape[:2]
        self._det.setInputSize((w, h))
        _, faces = self._det.detect(small)
        if faces is None or len(faces) == 0:
            return np.zeros((0, 15))
        f = np.asarray(faces, dtype=np.float64).reshape(-1, 15).copy()
        if s != 1.0:
            f[:, :14] = (f[:, :14] + 0.5) / s - 0.5
            f[:, 2:4] = np.asarray(faces, dtype=np.float64).reshape(-1, 15)[:, 2:4] / s
        return f

    def raw(self, image: np.ndarray) -> np.ndarray:
        """Uncorrected boxes ``[F, 4]`` (``(x, y, x + w - 1, y + h - 1)`` of YuNet's rectangles)."""
        f = self.raw_faces(image)
        return np.stack([f[:, 0], f[:, 1], f[:, 0] + f[:, 2] - 1, f[:, 1] + f[:, 3] - 1], axis=1)

    def _detect(self, image, path):
        return self.raw(image)


def _split_yunet_arg(arg: Optional[str]) -> tuple:
    """``yunet[:CONVENTION][:MODEL.onnx]`` (either order) -> ``(convention, model)``."""
    convention, model = "auto", None
    for part in (arg.split(":") if arg else []):
        if part in BOX_CONVENTIONS or part == "auto":
            convention = part
        elif part:
            model = part if model is None else f"{model}:{part}"  # a Windows drive letter
    return convention, model


@register_detector("yunet", "YuNet, shipped with glsr (default); yunet:procedural|tight|wflw|raw picks the box "
                            "convention (default: the model's), yunet:MODEL.onnx another YuNet file")
def _yunet(arg: Optional[str]) -> FaceDetector:
    convention, model = _split_yunet_arg(arg)
    return YuNetDetector(convention, model)


DEFAULT_DETECTOR = "yunet"
"""The detector ``glsr predict`` and :meth:`glsr.runtime.predictor.Predictor.from_file` use by default."""


# ------------------------------------------------------------------------------------------ box files


def read_boxes(path: str | os.PathLike) -> np.ndarray:
    """Boxes ``[F, 4]`` from a box file (:func:`glsr.boxes.read_box_file`: ``.rct`` lines, ``.json`` objects)."""
    return read_box_file(path)[0]


class BoxFileDetector(FaceDetector):
    """Boxes from files beside the image (``IMAGE_STEM.rct`` or ``.json``), or in ``folder`` by stem."""

    name = "boxfile"

    def __init__(self, folder: Optional[str | os.PathLike] = None, correction: BoxCorrection = IDENTITY):
        super().__init__(correction)
        self.folder = None if folder is None else Path(folder)
        if self.folder is not None and not self.folder.is_dir():
            raise FileNotFoundError(f"box folder {self.folder} does not exist")

    def box_file(self, path: str | os.PathLike) -> Path:
        p = Path(path)
        where = self.folder or p.parent
        for s in BOX_FILE_SUFFIXES:
            for cand in (where / (p.stem + s), where / (p.name + s)):
                if cand.is_file():
                    return cand
        raise FileNotFoundError(f"no box file for {p.name}: looked for {p.stem}{{{','.join(BOX_FILE_SUFFIXES)}}} in "
                                f"{where}")

    def _detect(self, image, path):
        if path is None:
            raise ValueError("the boxfile detector reads boxes from files beside the image, so it needs the image's "
                             "path (detect(image, path=...))")
        return read_boxes(self.box_file(path))


@register_detector("boxfile", "boxes from IMAGE.rct / IMAGE.json beside the image; boxfile:DIR looks in DIR")
def _boxfile(arg: Optional[str]) -> FaceDetector:
    return BoxFileDetector(arg)
