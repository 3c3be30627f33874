"""T5 relative position bias (NumPy reference)."""
from __future__ import annotations

import math

import numpy as np


def relative_position_bucket(rel, bidirectional=True, num_buckets=32, max_distance=128):
    """Bucket of each relative position rel = key - query (int array). The log is taken in
    float32, as in HF, so bucket edges land on the same side."""
    buckets = np.zeros(rel.shape, dtype=np.int64)
    if bidirectional:
        num_buckets //= 2
        buckets += (rel > 0).astype(np.int64) * num_buckets
        n = np.abs(rel)
    else:
        n = -np.minimum(rel, 0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    with np.errstate(divide="ignore"):
        ratio = np.log(n.astype(np.float32) / np.float32(max_exact))
    large = ratio / np.float32(math.log(max_distance / max_exact)) \
        * np.float32(num_buckets - max_exact)
    large = max_exact + np.where(is_small, 0, large).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    return buckets + np.where(is_small, n, large)


def ref_relative_position_bias(xq, xk, table, bidirectional=True, max_distance=128, offset=0):
    T, S = xq.shape[-2], xk.shape[-2]
    rel = np.arange(S)[None, :] - (np.arange(T)[:, None] + offset)      # (T, S)
    b = relative_position_bucket(rel, bidirectional, table.shape[0], max_distance)
    return np.transpose(table[b], (2, 0, 1))[None]                       # (1, H, T, S)
