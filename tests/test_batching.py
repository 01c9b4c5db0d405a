"""The one chunking of faces into an artifact's batch (glsr.runtime.batching), used by the predictor and parity."""
from __future__ import annotations

import numpy as np

from glsr.runtime.batching import run_in_batches


def test_static_batch_chunks_are_filled_with_the_last_face_and_cut_back():
    calls = []

    def fn(a, b):
        calls.append((a.copy(), b.copy()))
        return [a * 10 + b, a.sum(axis=1)]

    a, b = np.arange(10.0).reshape(5, 2), np.ones((5, 2))
    out, sums = run_in_batches(fn, [a, b], 2)
    np.testing.assert_array_equal(out, a * 10 + b)
    np.testing.assert_array_equal(sums, a.sum(axis=1))
    assert [len(c[0]) for c in calls] == [2, 2, 2]                      # every call gets exactly the batch
    np.testing.assert_array_equal(calls[-1][0], [[8, 9], [8, 9]])        # the short chunk repeats its last face


def test_dynamic_and_exact_batches():
    calls = []

    def fn(x):
        calls.append(len(x))
        return [x + 1]

    x = np.zeros((5, 3))
    np.testing.assert_array_equal(run_in_batches(fn, [x], None)[0], x + 1)    # dynamic: one call
    np.testing.assert_array_equal(run_in_batches(fn, [x], 4, pad=False)[0], x + 1)  # chunks of 4, the last short
    np.testing.assert_array_equal(run_in_batches(fn, [x], 5)[0], x + 1)       # exactly the batch: one call
    assert calls == [5, 4, 1, 5]
