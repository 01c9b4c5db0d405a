"""Peer landmarkers timed and scored beside glsr (``glsr bench --peers mediapipe,dlib``): image + face box in,
68 landmarks in image pixels out, split into the same three stages as glsr's :class:`~glsr.runtime.predictor.
Predictor` (crop, network, uncrop) so their per-face cost compares line by line.

Peers (optional extra ``glsr[peers]`` plus the mediapipe wheel without its dependencies, :data:`INSTALL_HINT`; a
missing peer is skipped with the reason from :func:`peer_status`):

* ``mediapipe``: MediaPipe's face landmark model, ``face_landmark.tflite`` as shipped in the ``mediapipe==0.10.14``
  wheel (Apache-2.0; the file is read from the installed package folder, ``mediapipe`` is never imported: its
  ``protobuf<5`` pin conflicts with onnx, hence ``pip install --no-deps``), 468 mesh points from a 192x192 RGB
  ROI in [0, 1], run by the ``ai-edge-litert`` interpreter (MediaPipe's own TFLite runtime with the XNNPACK
  delegate) on ``threads`` threads. The ROI is built from the box
  as MediaPipe builds it from its detector's box (a square about the box centre, scaled), without rotation (glsr
  does not rotate either; MediaPipe's tracker rotates by the eye line of its own detector). The 468 points are
  reduced to 300-W's 68 with :data:`MEDIAPIPE_TO_68`.
* ``dlib``: dlib's ``shape_predictor_68_face_landmarks.dat`` (the ``face-recognition-models==0.3.0`` wheel; dlib
  itself from ``dlib-bin``, Boost licence). **That model was trained on 300-W (iBUG annotations): research use
  only, no commercial use**, and it has seen 300-W training faces, so its 300-W numbers are optimistic. dlib's
  Python API returns integer pixel coordinates; it is single-threaded. glsr's 300-W ``val`` split is a held-out
  part of 300-W's *training* photos, which dlib's model was trained on: its ``val`` figures are on faces it has
  seen, not a fair accuracy comparison.

Box conventions: every landmarker gets the same tight box of the 68 ground-truth points (glsr's real-face models'
convention). Each peer maps it to its own native box with a scale about the centre and a vertical shift
(:data:`PEER_BOXES`, fitted on 300-W's ``fit`` split by ``python -m benchmarks.studies.peer_boxes``; the
validation faces are never used to choose them).

Imports only the bench layer's own modules and the bottom layer; the peers' libraries are imported when a peer is
opened.
"""
from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from glsr import geometry as geo
from glsr.digest import file_sha256

# MediaPipe face mesh (468) -> 300-W / iBUG 68: the table published by Peizhi Yan's Mediapipe_2_Dlib_Landmarks
# project (https://github.com/PeizhiYan/Mediapipe_2_Dlib_Landmarks, mediapipe2dlib/mp2dlib.py, 2024), unchanged:
# one or two mesh vertices per 68-point landmark, averaged when two. Row i is 68-point landmark i (0-based; the
# project numbers them 1..68). Checked against a hand-labelled 300-W face in tests/test_peers.py.
MEDIAPIPE_TO_68: Tuple[Tuple[int, ...], ...] = (
    # jaw 0-16 (image-left to image-right)
    (127,), (234,), (93,), (132, 58), (58, 172), (136,), (150,), (176,), (152,), (400,), (379,), (365,),
    (397, 288), (361,), (323,), (454,), (356,),
    # brows 17-21, 22-26
    (70,), (63,), (105,), (66,), (107,),
    (336,), (296,), (334,), (293,), (300,),
    # nose bridge 27-30, nostrils 31-35
    (168, 6), (197, 195), (5,), (4,), (75,), (97,), (2,), (326,), (305,),
    # eyes 36-41, 42-47
    (33,), (160,), (158,), (133,), (153,), (144,),
    (362,), (385,), (387,), (263,), (373,), (380,),
    # outer lips 48-59
    (61,), (39,), (37,), (0,), (267,), (269,), (291,), (321,), (314,), (17,), (84,), (91,),
    # inner lips 60-67
    (78,), (82,), (13,), (312,), (308,), (317,), (14,), (87,),
)
MEDIAPIPE_TABLE_SOURCE = "Mediapipe_2_Dlib_Landmarks (Peizhi Yan, 2024), published table"


def mediapipe_to_68(points: np.ndarray) -> np.ndarray:
    """``[..., 468(+), D]`` mesh points -> ``[..., 68, D]`` (the mean of each row's vertices)."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim < 2 or p.shape[-2] < 468:
        raise ValueError(f"MediaPipe points must be [..., 468, D], got shape {p.shape}")
    return np.stack([p[..., list(rows), :].mean(axis=-2) for rows in MEDIAPIPE_TO_68], axis=-2)


@dataclass(frozen=True)
class PeerBox:
    """A peer's native box from a tight 68-point box: ``scale`` x the box about its centre, moved down by
    ``shift_y`` x the box height."""

    scale: float
    shift_y: float = 0.0

    def apply(self, box: np.ndarray) -> np.ndarray:
        b = np.asarray(box, dtype=np.float64)
        c = (b[:2] + b[2:]) / 2 + np.array([0.0, self.shift_y * (b[3] - b[1])])
        half = (b[2:] - b[:2]) / 2 * self.scale
        return np.concatenate([c - half, c + half])


PEER_BOXES: Dict[str, PeerBox] = {
    # fitted on the first 300 faces of 300-W's fit split (python -m benchmarks.studies.peer_boxes --limit 300;
    # benchmarks/results/peer_boxes.md): MediaPipe minimising NME51, dlib NME68
    "mediapipe": PeerBox(scale=1.55, shift_y=-0.025),
    "dlib": PeerBox(scale=1.175, shift_y=-0.0875),
}


@dataclass(frozen=True)
class PeerInfo:
    """What a peer is, what it needs and under which terms its model may be used."""

    name: str
    label: str
    modules: Tuple[str, ...]        # importable modules it needs
    model_licence: str
    points: int
    precision: str                  # how its model stores its numbers, for the comparison table
    install: str                    # what to install when it is missing


PEERS: Dict[str, PeerInfo] = {
    "mediapipe": PeerInfo("mediapipe", "MediaPipe face landmark (face_landmark.tflite, LiteRT)",
                          ("mediapipe", "ai_edge_litert"), "Apache-2.0 (mediapipe 0.10.14 wheel)", 468,
                          "fp16 weights", 'pip install -e ".[peers]" && pip install --no-deps mediapipe==0.10.14'),
    "dlib": PeerInfo("dlib", "dlib shape_predictor_68_face_landmarks", ("dlib", "face_recognition_models"),
                     "dlib Boost licence; the 68-point model was trained on 300-W (iBUG): research use only, "
                     "no commercial use", 68, "float trees", 'pip install -e ".[peers]"'),
}
INSTALL_HINT = PEERS["mediapipe"].install
"""The two-step install of both peers (mediapipe's own dependencies pin protobuf<5, which breaks onnx)."""
MEDIAPIPE_VERSION = "0.10.14"


def _module_dir(name: str) -> Optional[Path]:
    """The folder of an installed module, found without importing it (mediapipe's own imports pull protobuf
    and OpenCV versions glsr does not need)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def _dist_version(dist: str) -> Optional[str]:
    import importlib.metadata as md

    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def model_file(peer: str) -> Path:
    """The peer's model file inside its wheel; ``FileNotFoundError`` naming what to install."""
    if peer == "mediapipe":
        d, rel = _module_dir("mediapipe"), Path("modules/face_landmark/face_landmark.tflite")
    elif peer == "dlib":
        d, rel = _module_dir("face_recognition_models"), Path("models/shape_predictor_68_face_landmarks.dat")
    else:
        raise ValueError(f"unknown peer {peer!r}; choose from {sorted(PEERS)}")
    if d is None or not (d / rel).is_file():
        raise FileNotFoundError(f"{peer}: {rel.name} not found (install the peers: {PEERS[peer].install})")
    return d / rel


def peer_status(peer: str) -> Tuple[bool, str]:
    """``(available, reason)``: whether ``peer`` can run here, and why not."""
    if peer not in PEERS:
        return False, f"unknown peer {peer!r}; choose from {sorted(PEERS)}"
    missing = [m for m in PEERS[peer].modules if _module_dir(m) is None]
    if missing:
        return False, f"{', '.join(missing)} not installed ({PEERS[peer].install})"
    try:
        model_file(peer)
    except FileNotFoundError as e:
        return False, str(e)
    if peer == "mediapipe":
        v = _dist_version("mediapipe")
        if v is not None and v != MEDIAPIPE_VERSION:
            return False, (f"mediapipe {v} is installed; the comparison is defined on face_landmark.tflite of "
                           f"mediapipe {MEDIAPIPE_VERSION} (pip install --no-deps mediapipe=={MEDIAPIPE_VERSION})")
    return True, "available"


def parse_peers(text: str | Sequence[str] | None) -> List[str]:
    """``"mediapipe,dlib"`` (or a list) -> names; an unknown name is a ``ValueError`` listing the known ones."""
    if text is None:
        return []
    items = [text] if isinstance(text, str) else list(text)
    names = [n.strip().lower() for item in items for n in str(item).split(",") if n.strip()]
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise ValueError(f"unknown peer(s) {unknown}; choose from {sorted(PEERS)} (comma-separated)")
    return list(dict.fromkeys(names))


class StagedLandmarker:
    """Image + boxes -> ``[F, 68, 2]`` image pixels in three stages; ``predict`` runs them in order.

    ``crop(image, boxes) -> state``, ``net(state) -> state``, ``uncrop(state) -> landmarks``.
    """

    name = "base"
    num_points = 68

    def crop(self, image: np.ndarray, boxes: np.ndarray) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def net(self, state: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def uncrop(self, state: Any) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        return self.uncrop(self.net(self.crop(image, boxes)))

    def predict_timed(self, image: np.ndarray, boxes: np.ndarray) -> Tuple[np.ndarray, Tuple[float, float, float]]:
        """Landmarks and the seconds spent in crop, net and uncrop during this one call (they sum to the call)."""
        t0 = time.perf_counter()
        s = self.crop(image, boxes)
        t1 = time.perf_counter()
        s = self.net(s)
        t2 = time.perf_counter()
        out = self.uncrop(s)
        t3 = time.perf_counter()
        return out, (t1 - t0, t2 - t1, t3 - t2)

    def describe(self) -> Dict[str, Any]:
        return {"name": self.name}


def _boxes(boxes: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(b) == 0:
        raise ValueError("no face boxes given")
    return b


class MediaPipeLandmarker(StagedLandmarker):
    """MediaPipe's face landmark model through LiteRT; 468 points reduced to 68 (:data:`MEDIAPIPE_TO_68`).

    Crop: the square ROI (:data:`PEER_BOXES`) warped to 192x192 with OpenCV (bilinear, replicated border, as
    MediaPipe's ImageToTensor on CPU), BGR -> RGB, scaled to [0, 1]. Net: one ``invoke`` per face. Uncrop: the
    mesh's x, y (tensor pixels, edges at 0) mapped back to image pixels (centres at integers), then 468 -> 68.
    """

    name = "mediapipe"
    SIZE = 192

    def __init__(self, threads: int = 1, box: Optional[PeerBox] = None, model: Optional[str | Path] = None):
        from ai_edge_litert.interpreter import Interpreter

        self.model_path = Path(model) if model else model_file("mediapipe")
        self.threads = int(threads)
        self.box = box or PEER_BOXES["mediapipe"]
        self.version = _dist_version("mediapipe") if model is None else None
        self.interpreter = Interpreter(model_path=str(self.model_path), num_threads=self.threads)
        self.interpreter.allocate_tensors()
        inp = self.interpreter.get_input_details()[0]
        if tuple(inp["shape"]) != (1, self.SIZE, self.SIZE, 3):
            raise ValueError(f"{self.model_path.name}: input {tuple(inp['shape'])}, expected (1, 192, 192, 3)")
        self._in = inp["index"]
        outs = self.interpreter.get_output_details()
        self._out = next(o["index"] for o in outs if int(np.prod(o["shape"])) == 468 * 3)

    def roi_from_image(self, box: np.ndarray) -> np.ndarray:
        """The ``tensor_from_image`` pixel affine (pixel centres at integers in both) of one face."""
        b = self.box.apply(box)
        c = (b[:2] + b[2:]) / 2
        side = float(max(b[2] - b[0], b[3] - b[1]))
        k = self.SIZE / side
        left, top = c - side / 2
        return np.array([[k, 0.0, (0.5 - left) * k - 0.5], [0.0, k, (0.5 - top) * k - 0.5]])

    def crop(self, image: np.ndarray, boxes: np.ndarray) -> Any:
        import cv2

        ms, xs = [], []
        for box in _boxes(boxes):
            m = self.roi_from_image(box)
            roi = cv2.warpAffine(image, m, (self.SIZE, self.SIZE), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
            x = np.empty((1, self.SIZE, self.SIZE, 3), np.float32)
            x[0] = roi[..., ::-1]
            x *= np.float32(1 / 255)
            ms.append(m)
            xs.append(x)
        return xs, ms

    def net(self, state: Any) -> Any:
        xs, ms = state
        outs = []
        for x in xs:
            self.interpreter.set_tensor(self._in, x)
            self.interpreter.invoke()
            outs.append(self.interpreter.get_tensor(self._out).reshape(468, 3))
        return outs, ms

    def mesh(self, state: Any) -> np.ndarray:
        """``[F, 468, 2]`` image pixels from the net's state."""
        outs, ms = state
        return np.stack([geo.apply_affine(geo.invert_affine(m), o[:, :2].astype(np.float64) - 0.5)
                         for o, m in zip(outs, ms)])

    def uncrop(self, state: Any) -> np.ndarray:
        return mediapipe_to_68(self.mesh(state))

    def describe(self) -> Dict[str, Any]:
        return {"name": self.name, "model": self.model_path.name, "size_bytes": self.model_path.stat().st_size,
                "sha256": file_sha256(self.model_path), "mediapipe": self.version, "threads": self.threads,
                "roi": {"scale": self.box.scale, "shift_y": self.box.shift_y},
                "table": MEDIAPIPE_TABLE_SOURCE, "licence": PEERS["mediapipe"].model_licence}


class DlibLandmarker(StagedLandmarker):
    """dlib's 68-point shape predictor (an ensemble of regression trees on pixel intensities).

    Crop: the native box (:data:`PEER_BOXES`) as a ``dlib.rectangle`` (integer corners, as dlib's API takes them)
    and a C-contiguous image (dlib's intensity is the mean of the three channels, so BGR needs no conversion).
    Net: the predictor. Uncrop: the 68 parts as floats (dlib returns integer pixels).
    """

    name = "dlib"

    def __init__(self, threads: int = 1, box: Optional[PeerBox] = None, model: Optional[str | Path] = None):
        import dlib

        self._dlib = dlib
        self.model_path = Path(model) if model else model_file("dlib")
        self.threads = 1  # dlib's shape predictor is single-threaded
        self.box = box or PEER_BOXES["dlib"]
        self.predictor = dlib.shape_predictor(str(self.model_path))

    def crop(self, image: np.ndarray, boxes: np.ndarray) -> Any:
        img = np.ascontiguousarray(image)
        rects = []
        for box in _boxes(boxes):
            x1, y1, x2, y2 = (int(round(v)) for v in self.box.apply(box))
            rects.append(self._dlib.rectangle(x1, y1, x2, y2))
        return img, rects

    def net(self, state: Any) -> Any:
        img, rects = state
        return [self.predictor(img, r) for r in rects]

    def uncrop(self, state: Any) -> np.ndarray:
        return np.array([[(p.x, p.y) for p in shape.parts()] for shape in state], dtype=np.float64)

    def describe(self) -> Dict[str, Any]:
        return {"name": self.name, "model": self.model_path.name, "size_bytes": self.model_path.stat().st_size,
                "sha256": file_sha256(self.model_path), "dlib": getattr(self._dlib, "__version__", None),
                "threads": self.threads, "box": {"scale": self.box.scale, "shift_y": self.box.shift_y},
                "licence": PEERS["dlib"].model_licence}


def open_peer(name: str, threads: int = 1, box: Optional[PeerBox] = None) -> StagedLandmarker:
    """A peer landmarker by name; ``ValueError`` with the reason when it cannot run here."""
    ok, reason = peer_status(name)
    if not ok:
        raise ValueError(f"peer {name} unavailable: {reason}")
    cls = {"mediapipe": MediaPipeLandmarker, "dlib": DlibLandmarker}[name]
    return cls(threads=threads, box=box)
