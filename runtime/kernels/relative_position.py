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


# ---- compiled kernels (Numba) ------------------------------------------------------------
# The bucket is a function of the relative distance alone, so the program computes the
# buckets of every distance it can meet once, with the reference function above (its
# float32 log decides bucket edges); the kernel only looks them up.

from ..jit import njit, prange  # noqa: E402


def bucket_table(lo: int, hi: int, bidirectional=True, num_buckets=32, max_distance=128):
    """Buckets of the relative distances lo..hi (int64, index 0 is distance lo)."""
    return relative_position_bucket(np.arange(lo, hi + 1), bidirectional, num_buckets,
                                    max_distance).astype(np.int64)


@njit(cache=True, parallel=True)
def relative_position_bias(out, table, buckets, lo, qpos0):
    # out: (1, H, T, S)  table: (NB, H)  buckets: bucket of distance lo + index
    # query i sits at position qpos0 + i, key j at j; distance j - (qpos0 + i)
    _, H, T, S = out.shape
    for h in prange(H):
        for i in range(T):
            for j in range(S):
                r = j - (qpos0 + i) - lo
                if r < 0:
                    r = 0
                elif r >= buckets.shape[0]:
                    r = buckets.shape[0] - 1
                out[0, h, i, j] = table[buckets[r], h]
