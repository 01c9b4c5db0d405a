"""The order of training samples: one shuffled epoch per ``(seed, stage, epoch)`` for one rank, resumable
mid-epoch (:class:`ResumableSampler`)."""
from __future__ import annotations

from typing import Iterator, Tuple

import numpy as np
from torch.utils.data import Sampler

STAGE_EPOCH_STRIDE = 1_000_000
"""Augmentation epoch key = stage index x this + epoch: every (stage, epoch) draws its own perturbations."""
SHUFFLE_STREAM = 7
"""Extra seed word separating the shuffling stream from the augmentation stream."""


class ResumableSampler(Sampler):
    """Shuffled keys ``(epoch_key, index)`` of one epoch for one rank, starting at a batch offset.

    The permutation depends only on ``(seed, epoch_key)``; the first ``n_batches * batch * world`` indices are
    dealt round-robin to the ranks (rank ``r`` gets positions ``r, r + world, ...``), then cut into per-rank
    batches of ``batch``; iteration starts at batch ``start_batch`` (mid-epoch resume).
    """

    def __init__(self, n: int, batch: int, seed: int, epoch_key: int, rank: int = 0, world: int = 1,
                 start_batch: int = 0):
        self.n, self.batch, self.seed, self.epoch_key = n, batch, seed, epoch_key
        self.rank, self.world, self.start_batch = rank, world, start_batch
        self.n_batches = n // (batch * world)
        if self.n_batches == 0:
            raise ValueError(f"{n} training samples cannot fill one batch of {batch} x {world} process(es); "
                             "lower --batch-size or add samples")

    def indices(self) -> np.ndarray:
        perm = np.random.default_rng([self.seed, SHUFFLE_STREAM, self.epoch_key]).permutation(self.n)
        used = perm[: self.n_batches * self.batch * self.world]
        return used[self.rank::self.world][self.start_batch * self.batch:]

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        return iter([(self.epoch_key, int(i)) for i in self.indices()])

    def __len__(self) -> int:
        return (self.n_batches - self.start_batch) * self.batch
