"""Timing one callable: warm-up (at least :data:`WARMUP_CALLS` calls and :data:`WARMUP_S` seconds), then
time-boxed iterations until the median is stable (95 % order-statistic interval within ±:data:`STABLE_REL` of it,
at least :data:`MIN_ITERS` calls) or the budget is spent; median, p90, mean, min and process CPU time."""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Tuple

import numpy as np


WARMUP_CALLS = 3

WARMUP_S = 0.3

MIN_ITERS = 10

STABLE_REL = 0.01

STABLE_MIN_ITERS = 60


@dataclass
class Timing:
    """Latency statistics of one timed callable, milliseconds."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    iterations: int
    seconds: float
    stable: bool
    cpu_ms: float = float("nan")   # median process CPU time per call (all threads); >> median_ms x threads = busy

    def to_dict(self) -> Dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in dataclasses.asdict(self).items()}


def median_interval(ts: np.ndarray) -> Tuple[float, float]:
    """Distribution-free ~95 % interval of the median (order statistics)."""
    s = np.sort(ts)
    n = len(s)
    half = 1.96 * math.sqrt(n) / 2
    lo = max(int(math.floor(n / 2 - half)), 0)
    hi = min(int(math.ceil(n / 2 + half)), n - 1)
    return float(s[lo]), float(s[hi])


def time_callable(fn: Callable[[], Any], budget_s: float = 3.0, min_iters: int = MIN_ITERS,
                  max_iters: int = 100_000, warmup_s: float = WARMUP_S, warmup_calls: int = WARMUP_CALLS,
                  stable_rel: float = STABLE_REL) -> Timing:
    """Warm up, then call ``fn`` until the median is stable or ``budget_s`` is spent (at least ``min_iters``)."""
    t0 = time.perf_counter()
    k = 0
    while k < warmup_calls or time.perf_counter() - t0 < warmup_s:
        fn()
        k += 1
        if time.perf_counter() - t0 > max(warmup_s, budget_s / 4) and k >= 1:
            break
    ts: List[float] = []
    cpu: List[float] = []
    start = time.perf_counter()
    stable = False
    while len(ts) < max_iters:
        c = time.process_time()
        a = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - a)
        cpu.append(time.process_time() - c)
        n = len(ts)
        elapsed = time.perf_counter() - start
        if n >= STABLE_MIN_ITERS and n % 20 == 0:
            arr = np.asarray(ts)
            lo, hi = median_interval(arr)
            med = float(np.median(arr))
            if (hi - lo) / 2 <= stable_rel * med:
                stable = True
                break
        if n >= min_iters and elapsed >= budget_s:
            break
    arr = np.asarray(ts) * 1e3
    if not stable and len(arr) >= 5:
        lo, hi = median_interval(arr)
        stable = (hi - lo) / 2 <= 2 * stable_rel * float(np.median(arr))
    return Timing(float(np.median(arr)), float(np.percentile(arr, 90)), float(arr.mean()), float(arr.min()), len(arr),
                  round(time.perf_counter() - start, 3), stable, float(np.median(cpu)) * 1e3)
