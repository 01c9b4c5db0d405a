"""Running a graph over any number of faces in chunks of its batch: the one chunking of the runtime and parity.

An artifact exported with a static batch ``N`` takes exactly ``N`` faces per call; a dynamic one takes any
number. :func:`run_in_batches` feeds inputs in chunks of ``size`` and fills a short last chunk up to ``size`` by
repeating its last face (a real input in the graph's range, so no precision mode ever sees an out-of-range pad;
every face's outputs depend on that face alone), then cuts the outputs back.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import numpy as np


def run_in_batches(fn: Callable[..., Sequence[np.ndarray]], xs: Sequence[np.ndarray], size: Optional[int],
                   pad: bool = True) -> List[np.ndarray]:
    """``fn(*inputs) -> [outputs]`` over the inputs' first axis (every input has the same length) in chunks of
    ``size`` faces; ``None`` (or exactly ``size`` faces) runs all at once. ``pad``: fill a short last chunk up to
    ``size`` by repeating its last face (a static batch); ``False``: run it short (a dynamic batch)."""
    total = len(xs[0])
    if size is None or total == size:
        return [np.asarray(y) for y in fn(*xs)]
    parts = []
    for i in range(0, total, size):
        chunk = [x[i:i + size] for x in xs]
        k = len(chunk[0])
        if pad and k < size:
            chunk = [np.concatenate([c, np.repeat(c[-1:], size - k, axis=0)]) for c in chunk]
        parts.append([np.asarray(y)[:k] for y in fn(*chunk)])
    return [np.concatenate(ys) for ys in zip(*parts)]
