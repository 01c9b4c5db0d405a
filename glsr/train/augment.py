"""Section 4.1 data augmentation: perturbed face boxes, in-plane rotation and mirroring, cropped exactly as the
runtime crops; optionally photometric perturbations and occlusion of the crop (:mod:`glsr.train.photometric`).

Conventions
-----------
* Geometry is :mod:`glsr.geometry`'s: pixel centres at integers, ``<to>_from_<from>`` matrices. A training crop
  is ``warp(image, crop_from_image, S)`` with ``crop_from_image = F o geometry.crop_from_image(box, S,
  cfg.crop_enlarge) o R`` where ``R`` rotates the image about the box centre and ``F`` optionally mirrors the
  crop (``x -> S - 1 - x``). With no rotation and no flip this is *exactly* what
  :func:`glsr.runtime.processing.crop_batch` does (same warp, channel order and normalization).
* Box perturbations are expressed relative to the ground-truth *tight* box ``(w, h, centre c)``: a row
  ``(dx, dy, ls_x, ls_y)`` means a box with centre ``c + (dx w, dy h)`` and size ``(w e^{ls_x}, h e^{ls_y})``.
  :class:`BoxStats` measures these rows between the records' boxes (detector / annotation boxes) and the tight
  boxes of their landmarks, then samples from them (Gaussian fit or empirical resampling).
* Rotation angles are uniform in ``[-max_rotation_deg, +max_rotation_deg]`` ("[0, 10] degrees", both signs);
  positive is counter-clockwise on screen (``cv2.getRotationMatrix2D``).
* A mirrored sample relabels its landmarks with the scheme's flip permutation: ``out[i] = mirrored[flip[i]]``.
* Randomness depends only on ``(seed, epoch, index)`` (:meth:`Augmenter.params`), never on call order, worker
  or process: the same sample is produced whether an epoch runs whole, resumed, or split across DDP ranks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from glsr import geometry as geo
from glsr.metadata import ArtifactMetadata
from glsr.models.network import crop_loc_theta
from glsr.models.registry import VariantConfig
from glsr.imaging import normalize
from glsr.schemes import LandmarkScheme
from glsr.train import photometric
from glsr.train.config import AugmentConfig
from glsr.train.targets import global_theta_target

OFFSET_FIELDS: Tuple[str, ...] = ("dx", "dy", "log_sx", "log_sy")
TIGHT_BOX_TOLERANCE = 1e-9
"""Offset rows whose every entry is below this are tight boxes, not detections, and are not measured."""

# ------------------------------------------------------------------------------------------ face access


@dataclass(frozen=True, eq=False)
class Face:
    """One annotated face, whatever the dataset: ``image`` HxWx3 uint8 BGR, ``landmarks`` ``[N, 2]`` the training
    annotation (possibly noisy), ``box`` the dataset's face box or ``None``, ``landmarks_clean`` the ground
    truth used for evaluation (equal to ``landmarks`` unless the data simulates annotation noise)."""

    image: np.ndarray
    landmarks: np.ndarray
    box: Optional[np.ndarray]
    landmarks_clean: np.ndarray


def _records(dataset: Any) -> Optional[Sequence[Any]]:
    """The :class:`FaceRecord` sequence behind a reader, a ``FaceDataset`` or a list of records (``None`` for
    datasets whose items carry their own pixels, e.g. procedural faces)."""
    from glsr.train.datasets import DatasetReader, FaceDataset, FaceRecord

    if isinstance(dataset, FaceDataset):
        return dataset.records
    if isinstance(dataset, DatasetReader):
        return dataset
    if isinstance(dataset, (list, tuple)) and dataset and isinstance(dataset[0], FaceRecord):
        return dataset
    return None


def _as_box(box: Any) -> Optional[np.ndarray]:
    if box is None:
        return None
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    return b if b.size == 4 and np.all(np.isfinite(b)) else None


def _from_item(item: Any) -> Face:
    if isinstance(item, dict):
        lm = np.asarray(item["landmarks"], dtype=np.float64)
        clean = item.get("landmarks_clean")
        return Face(np.asarray(item["image"]), lm, _as_box(item.get("box")),
                    lm if clean is None else np.asarray(clean, dtype=np.float64))
    if isinstance(item, tuple) and len(item) == 2:  # FaceDataset without transform: (image, record)
        image, rec = item
        return Face(image, rec.landmarks, _as_box(rec.box), rec.landmarks)
    raise TypeError(f"don't know how to read a face from a {type(item).__name__}")


def get_face(dataset: Any, index: int) -> Face:
    """Face ``index`` of a dataset reader / ``FaceDataset`` (records read from disk) or of a dataset whose items
    are dicts with ``image``, ``landmarks``, ``box`` and optionally ``landmarks_clean`` (procedural faces)."""
    recs = _records(dataset)
    if recs is not None:
        from glsr.train.datasets import load_image

        rec = recs[index]
        return Face(load_image(rec), rec.landmarks, _as_box(rec.box), rec.landmarks)
    return _from_item(dataset[index])


def get_annotation(dataset: Any, index: int, clean: bool = False) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """``(landmarks, box)`` of face ``index`` without decoding the image where the dataset allows it; ``clean``
    returns the ground truth instead of the (possibly noisy) training annotation."""
    recs = _records(dataset)
    if recs is not None:
        return recs[index].landmarks, _as_box(recs[index].box)
    if callable(getattr(dataset, "annotation", None)):  # procedural faces: annotations without rendering
        a = dataset.annotation(index)
        lm = a.landmarks_clean if clean and getattr(a, "landmarks_clean", None) is not None else a.landmarks
        return np.asarray(lm, dtype=np.float64), _as_box(a.box)
    f = get_face(dataset, index)
    return (f.landmarks_clean if clean else f.landmarks), f.box


# ------------------------------------------------------------------------------------------ box statistics


def box_offsets(box: Sequence[float], landmarks: np.ndarray) -> np.ndarray:
    """Row ``(dx, dy, log_sx, log_sy)`` of ``box`` relative to the tight box of ``landmarks``."""
    b = np.asarray(box, dtype=np.float64)
    t = geo.tight_box(landmarks)
    wt, ht = t[2] - t[0], t[3] - t[1]
    wb, hb = b[2] - b[0], b[3] - b[1]
    return np.array([((b[0] + b[2]) - (t[0] + t[2])) / (2 * wt), ((b[1] + b[3]) - (t[1] + t[3])) / (2 * ht),
                     np.log(wb / wt), np.log(hb / ht)])


def box_from_offsets(landmarks: np.ndarray, row: Sequence[float]) -> np.ndarray:
    """Inverse of :func:`box_offsets`: the box ``(x1, y1, x2, y2)`` a row describes for these landmarks."""
    t = geo.tight_box(landmarks)
    wt, ht = t[2] - t[0], t[3] - t[1]
    cx = (t[0] + t[2]) / 2 + row[0] * wt
    cy = (t[1] + t[3]) / 2 + row[1] * ht
    hw, hh = wt * np.exp(row[2]) / 2, ht * np.exp(row[3]) / 2
    return np.array([cx - hw, cy - hh, cx + hw, cy + hh])


@dataclass(frozen=True, eq=False)
class BoxStats:
    """Measured distribution of box-vs-tight-box offsets (rows of :data:`OFFSET_FIELDS`).

    ``rows`` ``[K, 4]`` measured rows (``K = 0`` for the fallback), ``mean`` / ``cov`` their Gaussian fit.
    """

    rows: np.ndarray
    mean: np.ndarray
    cov: np.ndarray

    @property
    def measured(self) -> int:
        return int(len(self.rows))

    @classmethod
    def fallback(cls, cfg: AugmentConfig) -> "BoxStats":
        c, s = cfg.fallback_center_std, cfg.fallback_log_scale_std
        return cls(np.zeros((0, 4)), np.array([0.0, 0.0, cfg.fallback_log_scale_mean, cfg.fallback_log_scale_mean]),
                   np.diag([c * c, c * c, s * s, s * s]))

    @classmethod
    def measure(cls, annotations: Sequence[Tuple[np.ndarray, Optional[np.ndarray]]], cfg: AugmentConfig
                ) -> "BoxStats":
        """Fit from ``(landmarks, box)`` pairs; pairs without a box, or whose box is the tight box, are ignored.
        Falls back to
        :meth:`fallback` when fewer than ``cfg.min_measured_boxes`` boxes are available."""
        rows = [box_offsets(b, lm) for lm, b in annotations if b is not None]
        # boxes that *are* the tight box (a reader's box_source="tight") say nothing about a detector
        rows = [r for r in rows if np.max(np.abs(r)) > TIGHT_BOX_TOLERANCE]
        if len(rows) < max(cfg.min_measured_boxes, 2):
            return cls.fallback(cfg)
        r = np.stack(rows)
        return cls(r, r.mean(axis=0), np.cov(r, rowvar=False, bias=True))

    def sample(self, rng: np.random.Generator, model: str = "gaussian") -> np.ndarray:
        """One offset row: from the Gaussian fit, or a measured row drawn uniformly (``"empirical"``)."""
        if model == "empirical" and self.measured:
            return self.rows[rng.integers(self.measured)].copy()
        return rng.multivariate_normal(self.mean, self.cov)

    def to_dict(self) -> Dict[str, Any]:
        return {"fields": list(OFFSET_FIELDS), "measured": self.measured, "mean": self.mean.tolist(),
                "std": np.sqrt(np.diag(self.cov)).tolist(), "cov": self.cov.tolist()}


# ------------------------------------------------------------------------------------------ augmenter


def preprocess_metadata(cfg: VariantConfig, scheme: LandmarkScheme) -> ArtifactMetadata:
    """The pre-processing contract of a variant (what :func:`glsr.runtime.processing.metadata_for` reports,
    without provenance)."""
    return ArtifactMetadata(variant=cfg.name, scheme=scheme.name, num_points=scheme.num_points,
                            input_size=cfg.input_size, crop_enlarge=cfg.crop_enlarge, box_scale=cfg.box_scale,
                            channel_order=cfg.channel_order, pixel_mean=cfg.pixel_mean, pixel_std=cfg.pixel_std)


def loc_from_crop_pixels(cfg: VariantConfig) -> np.ndarray:
    """``loc_norm_from_crop_px``: crop pixel coordinates -> normalized loc-frame coordinates."""
    crop_norm_from_loc_norm = crop_loc_theta(cfg.input_size, cfg.loc_size, cfg.context)
    return geo.compose(geo.invert_affine(crop_norm_from_loc_norm), geo.norm_from_pixel(cfg.input_size))


@dataclass(frozen=True)
class AugmentParams:
    """One sample's perturbation: box offset row, rotation (degrees, CCW on screen), mirroring and the crop's
    photometric perturbation (identity unless the :class:`AugmentConfig` turns it on)."""

    offsets: Tuple[float, float, float, float]
    angle_deg: float
    flip: bool
    pixels: photometric.PhotometricParams = photometric.PhotometricParams()

    @classmethod
    def identity(cls) -> "AugmentParams":
        return cls((0.0, 0.0, 0.0, 0.0), 0.0, False)


@dataclass(frozen=True, eq=False)
class AugmentedSample:
    """``crop`` ``[3, S, S]`` float32 network input; ``landmarks_crop`` ``[N, 2]`` crop pixels; ``landmarks_loc``
    ``[N, 2]`` normalized loc frame; ``crop_from_image`` ``[2, 3]``; ``box`` the perturbed box (image px)."""

    crop: np.ndarray
    landmarks_crop: np.ndarray
    landmarks_loc: np.ndarray
    crop_from_image: np.ndarray
    box: np.ndarray


class Augmenter:
    """Draws :class:`AugmentParams` from ``(seed, epoch, index)`` and applies them (see module docstring)."""

    def __init__(self, cfg: VariantConfig, scheme: LandmarkScheme, aug: AugmentConfig, box_stats: BoxStats,
                 seed: int = 0):
        self.cfg = cfg
        self.scheme = scheme
        self.aug = aug
        self.box_stats = box_stats
        self.seed = int(seed)
        self.meta = preprocess_metadata(cfg, scheme)
        self.size = cfg.input_size
        self.loc_from_crop = loc_from_crop_pixels(cfg)
        self.flip_matrix = np.array([[-1.0, 0.0, self.size - 1.0], [0.0, 1.0, 0.0]])
        self.flip_perm = np.asarray(scheme.flip)

    def params(self, index: int, epoch: int = 0) -> AugmentParams:
        """Perturbation of sample ``index`` in ``epoch`` (``epoch`` is ignored unless ``fresh_each_epoch``)."""
        key = epoch if self.aug.fresh_each_epoch else 0
        rng = np.random.default_rng([self.seed, int(key), int(index)])
        offsets = self.box_stats.sample(rng, self.aug.box_model)
        angle = rng.uniform(-self.aug.max_rotation_deg, self.aug.max_rotation_deg)
        flip = bool(rng.random() < self.aug.flip_probability)
        pixels = photometric.draw(rng, self.aug, self.size)      # drawn last: geometry never depends on it
        return AugmentParams(tuple(float(v) for v in offsets), float(angle), flip, pixels)

    def geometry(self, landmarks: np.ndarray, params: AugmentParams) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(crop_from_image, box, landmarks_crop)`` of a perturbation, without touching pixels."""
        lm = np.asarray(landmarks, dtype=np.float64)
        box = box_from_offsets(lm, params.offsets)
        centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        m = geo.compose(geo.crop_from_image(box, self.size, self.cfg.crop_enlarge),
                        geo.cv2_rotation(centre, params.angle_deg))
        pts = geo.apply_affine(m, lm)
        if params.flip:
            m = geo.compose(self.flip_matrix, m)
            pts = geo.apply_affine(self.flip_matrix, pts)[self.flip_perm]
        return m, box, pts

    def landmarks_loc(self, landmarks_crop: np.ndarray) -> np.ndarray:
        return geo.apply_affine(self.loc_from_crop, landmarks_crop)

    def apply(self, image: np.ndarray, landmarks: np.ndarray, params: AugmentParams) -> AugmentedSample:
        """Crop ``image`` as the runtime does, under perturbation ``params``."""
        m, box, pts = self.geometry(landmarks, params)
        crop = photometric.apply(geo.warp(image, m, self.size), params.pixels)
        return AugmentedSample(normalize(crop, self.meta), pts, self.landmarks_loc(pts), m, box)


# ------------------------------------------------------------------------------------------ torch dataset

SampleKey = Union[int, Tuple[int, int]]


class AugmentedFaces(Dataset):
    """``samples_per_image`` perturbed samples of every face of ``faces``.

    Index ``i`` is sample ``i % samples_per_image`` of face ``i // samples_per_image``; a key ``(epoch, i)``
    (what :class:`glsr.train.sampler.ResumableSampler` yields) selects that epoch's perturbation. Items are dicts
    of tensors: ``crop``, ``landmarks_loc``, ``landmarks_crop``, ``index`` and, when a ``reference`` shape is
    given, ``theta_g_target`` (theta*_g, Algorithm 1). ``cache`` keeps decoded faces in memory. ``repeats``
    (``[faces]`` integers >= 1, e.g. :func:`glsr.pose.pose_repeats`): face ``j`` gets ``samples_per_image *
    repeats[j]`` samples, the faces' samples in face order (``None``: every face ``samples_per_image``).
    """

    def __init__(self, faces: Any, augmenter: Augmenter, samples_per_image: int,
                 reference: Optional[np.ndarray] = None, margin: Optional[float] = None,
                 transform: str = "affine", cache: bool = False, repeats: Optional[Sequence[int]] = None):
        self.faces = faces
        self.augmenter = augmenter
        self.samples_per_image = int(samples_per_image)
        self.ends: Optional[np.ndarray] = None  # cumulative sample counts per face, when faces differ
        if repeats is not None:
            r = np.asarray(repeats, dtype=np.int64)
            if r.shape != (len(faces),) or (r < 1).any():
                raise ValueError(f"repeats must be {len(faces)} integers >= 1 (one per face), got shape {r.shape}")
            self.ends = np.cumsum(r * self.samples_per_image)
        self.reference = reference
        self.margin = augmenter.cfg.box_scale if margin is None else margin
        self.transform = transform
        self.cache: Optional[Dict[int, Face]] = {} if cache else None

    def __len__(self) -> int:
        return len(self.faces) * self.samples_per_image if self.ends is None else int(self.ends[-1])

    def face_of(self, index: int) -> int:
        """The face (index into ``faces``) that sample ``index`` comes from."""
        if self.ends is None:
            return int(index) // self.samples_per_image
        return int(np.searchsorted(self.ends, int(index), side="right"))

    def face(self, image_index: int) -> Face:
        if self.cache is None:
            return get_face(self.faces, image_index)
        if image_index not in self.cache:
            self.cache[image_index] = get_face(self.faces, image_index)
        return self.cache[image_index]

    def __getitem__(self, key: SampleKey) -> Dict[str, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range (0..{len(self) - 1})")
        face = self.face(self.face_of(index))
        s = self.augmenter.apply(face.image, face.landmarks, self.augmenter.params(index, epoch))
        out = {"crop": torch.from_numpy(s.crop),
               "landmarks_loc": torch.from_numpy(s.landmarks_loc.astype(np.float32)),
               "landmarks_crop": torch.from_numpy(s.landmarks_crop.astype(np.float32)),
               "index": torch.tensor(index)}
        if self.reference is not None:
            theta = global_theta_target(s.landmarks_loc, self.reference, self.margin, self.transform)
            out["theta_g_target"] = torch.from_numpy(theta.astype(np.float32))
        return out

    def loc_shapes(self, count: int, epoch: int = 0) -> np.ndarray:
        """Loc-frame landmarks of the first ``count`` samples of a strided sweep over the set, computed from the
        geometry alone (no pixels are warped): ``[count, N, 2]``."""
        n = len(self)
        count = min(count, n)
        idx = np.linspace(0, n - 1, count).round().astype(int) if count < n else np.arange(n)
        out: List[np.ndarray] = []
        ann: Dict[int, np.ndarray] = {}
        for i in idx:
            j = self.face_of(int(i))
            if j not in ann:
                ann[j] = get_annotation(self.faces, j)[0] if self.cache is None or j not in self.cache \
                    else self.cache[j].landmarks
            _, _, pts = self.augmenter.geometry(ann[j], self.augmenter.params(int(i), epoch))
            out.append(self.augmenter.landmarks_loc(pts))
        return np.stack(out)
