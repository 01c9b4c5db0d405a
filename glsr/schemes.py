"""Landmark schemes as data: point counts, face parts, normalization pairs, flip permutations.

Conventions
-----------
* Indices are 0-based. "Left"/"right" are *image* left/right (the subject's right eye is the image-left eye),
  matching the 300-W and WFLW annotation order.
* ``parts`` lists the four locally regressed parts in the order the local stage uses
  (left-eye region, right-eye region, nose, mouth); ``contour`` holds what stays with the global stage.
  Every point belongs to exactly one of the five.
* ``interocular`` and ``interpupil`` are pairs of point *sets*; the normalizing distance is the distance
  between the centroids of the two sets (a single index is a set of one).
* ``flip`` is the permutation applied after mirroring x: ``flipped[i] = mirrored[flip[i]]``.

This module imports nothing from glsr.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Tuple

Index = Tuple[int, ...]

PART_NAMES: Tuple[str, ...] = ("left_eye", "right_eye", "nose", "mouth")


def _r(a: int, b: int) -> Index:
    """Inclusive integer range ``a..b`` as a tuple."""
    return tuple(range(a, b + 1))


def _perm_from_pairs(n: int, pairs: Tuple[Tuple[int, int], ...]) -> Index:
    perm = list(range(n))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return tuple(perm)


@dataclass(frozen=True)
class LandmarkScheme:
    """One landmark annotation layout (see module docstring for conventions)."""

    name: str
    num_points: int
    parts: Tuple[Index, Index, Index, Index]  # left eye region, right eye region, nose, mouth
    contour: Index
    interocular: Tuple[Index, Index]
    interpupil: Tuple[Index, Index]
    flip: Index
    default_norm: str  # "interocular" | "interpupil" | "box"
    brows: Index = field(default=())  # both eyebrows; each lies inside its eye region (Table 1 splits them)
    datasets: Tuple[str, ...] = field(default=())

    @property
    def part_names(self) -> Tuple[str, ...]:
        return PART_NAMES

    def part(self, name: str) -> Index:
        """Indices of a named part; ``"contour"`` is accepted too."""
        if name == "contour":
            return self.contour
        return self.parts[PART_NAMES.index(name)]

    @property
    def part_sizes(self) -> Tuple[int, ...]:
        return tuple(len(p) for p in self.parts)

    @property
    def eyes(self) -> Index:
        """Eye points (with pupils) = both eye regions minus the brows, sorted."""
        return tuple(sorted((set(self.parts[0]) | set(self.parts[1])) - set(self.brows)))

    def evaluation_groups(self) -> Dict[str, Index]:
        """Per-part groups of the paper's Table 1: contour, brows, eyes, nose, mouth (a partition)."""
        return {"contour": self.contour, "brows": self.brows, "eyes": self.eyes, "nose": self.parts[2],
                "mouth": self.parts[3]}

    def named_parts(self) -> Dict[str, Index]:
        """All five parts by name, contour last."""
        out = {n: p for n, p in zip(PART_NAMES, self.parts)}
        out["contour"] = self.contour
        return out


# ---------------------------------------------------------------- 68 points (300-W, COFW-68, iBUG layout)
_FLIP_68 = _perm_from_pairs(68, tuple((i, 16 - i) for i in range(8)) + (
    (17, 26), (18, 25), (19, 24), (20, 23), (21, 22),                      # brows
    (31, 35), (32, 34),                                                  # nostrils
    (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),          # eyes
    (48, 54), (49, 53), (50, 52), (55, 59), (56, 58),                    # outer lips
    (60, 64), (61, 63), (65, 67),                                        # inner lips
))

SCHEME_68 = LandmarkScheme(
    name="68",
    num_points=68,
    parts=(_r(17, 21) + _r(36, 41), _r(22, 26) + _r(42, 47), _r(27, 35), _r(48, 67)),
    contour=_r(0, 16),
    interocular=((36,), (45,)),
    interpupil=(_r(36, 41), _r(42, 47)),
    flip=_FLIP_68,
    default_norm="interpupil",
    brows=_r(17, 26),
    datasets=("300w", "cofw68"),
)

# ---------------------------------------------------------------- 98 points (WFLW)
_FLIP_98 = _perm_from_pairs(98, tuple((i, 32 - i) for i in range(16)) + (
    (33, 46), (34, 45), (35, 44), (36, 43), (37, 42), (38, 50), (39, 49), (40, 48), (41, 47),  # brows
    (55, 59), (56, 58),                                                                        # nostrils
    (60, 72), (61, 71), (62, 70), (63, 69), (64, 68), (65, 75), (66, 74), (67, 73),            # eyes
    (76, 82), (77, 81), (78, 80), (83, 87), (84, 86),                                          # outer lips
    (88, 92), (89, 91), (93, 95),                                                              # inner lips
    (96, 97),                                                                                  # pupils
))

SCHEME_98 = LandmarkScheme(
    name="98",
    num_points=98,
    parts=(_r(33, 41) + _r(60, 67) + (96,), _r(42, 50) + _r(68, 75) + (97,), _r(51, 59), _r(76, 95)),
    contour=_r(0, 32),
    interocular=((60,), (72,)),
    interpupil=((96,), (97,)),
    flip=_FLIP_98,
    default_norm="interocular",
    brows=_r(33, 50),
    datasets=("wflw",),
)

# ---------------------------------------------------------------- 19 points (AFLW without the ear points)
# 0-2 left brow, 3-5 right brow, 6-8 left eye (outer corner, centre, inner corner), 9-11 right eye
# (inner corner, centre, outer corner), 12-14 nose (left nostril, tip, right nostril), 15-17 mouth
# (left corner, centre, right corner), 18 chin.
_FLIP_19 = _perm_from_pairs(19, ((0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9), (12, 14), (15, 17)))

SCHEME_19 = LandmarkScheme(
    name="19",
    num_points=19,
    parts=((0, 1, 2, 6, 7, 8), (3, 4, 5, 9, 10, 11), (12, 13, 14), (15, 16, 17)),
    contour=(18,),
    interocular=((6,), (11,)),
    interpupil=((7,), (10,)),
    flip=_FLIP_19,
    default_norm="box",
    brows=_r(0, 5),
    datasets=("aflw",),
)

SCHEMES: Dict[str, LandmarkScheme] = {s.name: s for s in (SCHEME_68, SCHEME_98, SCHEME_19)}

# ---------------------------------------------------------------- correspondences between schemes
WFLW98_TO_68: Index = (
    _r(0, 32)[::2]                      # contour: every second of the 33 WFLW points -> 17
    + _r(33, 37) + _r(42, 46)           # upper brow arcs -> brows 17-26
    + _r(51, 59)                        # nose -> 27-35
    + (60, 61, 63, 64, 65, 67)          # image-left eye: corners, two upper, two lower -> 36-41
    + (68, 69, 71, 72, 73, 75)          # image-right eye -> 42-47
    + _r(76, 95)                        # mouth -> 48-67
)
"""The standard WFLW-98 -> 300-W-68 index list: ``points68 = points98[WFLW98_TO_68]``."""

CONVERSIONS: Dict[Tuple[str, str], Index] = {("98", "68"): WFLW98_TO_68}
"""``(from_scheme, to_scheme) -> indices into the source points``."""


def conversion(source: "str | int | LandmarkScheme", target: "str | int | LandmarkScheme") -> Index:
    """Indices selecting ``target``'s points from ``source``'s (identity when the schemes are equal)."""
    a, b = get_scheme(source), get_scheme(target)
    if a.name == b.name:
        return tuple(range(a.num_points))
    if (a.name, b.name) not in CONVERSIONS:
        raise ValueError(f"no landmark correspondence from scheme {a.name} to {b.name}; known: "
                         f"{[f'{x}->{y}' for x, y in CONVERSIONS]}")
    return CONVERSIONS[(a.name, b.name)]


def get_scheme(name: "str | int | LandmarkScheme") -> LandmarkScheme:
    """Look a scheme up by name or point count (``"68"``, ``98``, ``"wflw"`` ...)."""
    if isinstance(name, LandmarkScheme):
        return name
    key = str(name).lower()
    if key in SCHEMES:
        return SCHEMES[key]
    for s in SCHEMES.values():
        if key in s.datasets:
            return s
    raise ValueError(f"unknown landmark scheme {name!r}; known: {sorted(SCHEMES)} "
                     f"or dataset names {[d for s in SCHEMES.values() for d in s.datasets]}")
