"""Prefill attention through BLAS: the masked, scaled row softmax between two products.

For a prompt (more than a few query rows) attention runs per (batch, head) as

    scores = Q_h @ K_h^T          (T, S)  BLAS, into planned scratch
    scores = softmax(mask(scale * scores + bias))   in place, this kernel
    out_h  = scores @ V_h         (T, D)  BLAS, into the output's head slice

instead of `attend`'s scalar loop with one exp per (query, key). The reference of the op
is `ref_attention` (attention.py); decode steps (few rows) keep `attend`.
"""
from __future__ import annotations

import numpy as np

from ..jit import njit


def softmax_masked(scores, qpos0, mask, bias, causal, window, scale):
    """The three steps the executor runs, in one call (for tests): masked, scaled scores
    minus their row max; NumPy's vectorised exp in place; rows divided by their sums."""
    mask_scores(scores, qpos0, mask, bias, causal, window, scale)
    np.exp(scores, out=scores)
    normalize_rows(scores)


# Numba has no vectorised exp here (no SVML), NumPy's float32 exp is SIMD: so the exp runs
# as a NumPy step between the two kernels, and masked keys become -inf (exp: 0)
@njit(cache=True, fastmath={"reassoc", "contract"})
def mask_scores(scores, qpos0, mask, bias, causal, window, scale):
    # scores: (T, S) raw q.k products -> scale * scores + bias - row max, masked keys -inf.
    # key j sits at position j, query i at qpos0 + i. mask: (S_mask,) bool by key position
    # (S_mask = 0: none); bias: (T, S_bias) (S_bias = 0: none). A row with every key
    # masked is all -inf, so it ends as zeros, as the reference defines it.
    T, S = scores.shape
    n_mask = mask.shape[0]
    n_bias = bias.shape[1]
    for i in range(T):
        row = scores[i]
        qp = qpos0 + i
        # the keys the causal / window masks leave: [lo, hi)
        lo = 0
        hi = S
        if causal:
            hi = min(S, qp + 1)
        if window > 0:
            lo = max(0, qp - window + 1)
            if not causal:
                hi = min(hi, qp + window)
        lo = min(lo, S)
        hi = max(hi, lo)
        for j in range(lo):
            row[j] = -np.inf
        for j in range(hi, S):
            row[j] = -np.inf
        for j in range(lo, hi):
            row[j] = row[j] * scale
        for j in range(lo, min(hi, n_bias)):
            row[j] += bias[i, j]
        for j in range(lo, min(hi, n_mask)):
            if not mask[j]:
                row[j] = -np.inf
        m = -np.inf
        for j in range(lo, hi):
            m = max(m, row[j])
        if m > -np.inf:
            for j in range(lo, hi):
                row[j] -= m


@njit(cache=True, fastmath={"reassoc", "contract"})
def normalize_rows(p):
    # p: (T, S) exponentials; each row divided by its float64 sum (an all-zero row stays)
    T, S = p.shape
    for i in range(T):
        z = 0.0
        for j in range(S):
            z += p[i, j]
        if z > 0.0:
            inv = 1.0 / z
            for j in range(S):
                p[i, j] = p[i, j] * inv
