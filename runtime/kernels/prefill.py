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


def query_blocks(T: int, n_keys: int, qpos0: int, causal: bool, window: int,
                 step: int) -> list[tuple[int, int, int, int]]:
    """[(i0, i1, j0, j1)]: query rows i0:i1 (row i at position qpos0 + i) and the keys j0:j1
    (key j at position j) some row of the block may see. Without a causal or window mask,
    one block of every row and key."""
    step = step if causal or window else T
    out = []
    for i0 in range(0, T, step):
        i1 = min(T, i0 + step)
        first, last = qpos0 + i0, qpos0 + i1 - 1
        j0 = min(max(0, first - window + 1) if window else 0, n_keys)
        j1 = min(n_keys, last + 1) if causal else \
            (min(n_keys, last + window) if window else n_keys)
        out.append((i0, i1, j0, max(j0, j1)))
    return out


def attend_blas(out4, q4, kc, vc, n_keys, qpos0, mask, bias4, causal, window, scale, probs,
                step):
    """Prefill attention over a KV cache whose slot j holds position j (decoding sessions,
    positions known only when the step runs). out4, q4: (B, T, H, D)  kc, vc: (B, Hkv,
    S_cap, D)  mask: (B, S_mask) bool  bias4: (B, H, T, S_bias)  probs: >= T*n_keys items."""
    B, T, H, D = q4.shape
    group = H // kc.shape[1]
    n_mask, n_bias = mask.shape[1], bias4.shape[3]
    flat = probs.reshape(-1)
    for i0, i1, j0, j1 in query_blocks(T, n_keys, qpos0, causal, window, step):
        p = flat[:(i1 - i0) * (j1 - j0)].reshape(i1 - i0, j1 - j0)
        for b in range(B):
            mb = mask[b, j0:j1] if n_mask else mask[b]
            for h in range(H):
                hk = h // group
                bb = bias4[b, h, i0:i1, j0:j1] if n_bias else bias4[b, h, i0:i1]
                np.matmul(q4[b, i0:i1, h], kc[b, hk, j0:j1].T, p)
                mask_scores(p, qpos0 + i0 - j0, mb, bb, causal, window, scale)
                np.exp(p, out=p)
                normalize_rows(p)
                np.matmul(p, vc[b, hk, j0:j1], out4[b, i0:i1, h])
