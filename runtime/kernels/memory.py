"""Product-key memory (NumPy reference)."""
from __future__ import annotations

import numpy as np

from .norm import ref_softmax


def _topk(s, k):
    # indices of the k largest along the last axis, best first (stable on ties)
    return np.argsort(-s, axis=-1, kind="stable")[..., :k]


def ref_product_key_memory(q, keys, values, topk=32, heads=1):
    lead = q.shape[:-1]
    H, _, n, half = keys.shape
    qs = q.reshape(-1, H, 2, half).astype(np.float64)                   # (N, H, 2, Dk/2)
    out = np.zeros((qs.shape[0], values.shape[1]), dtype=np.float64)
    for h in range(H):
        s1 = qs[:, h, 0] @ keys[h, 0].T.astype(np.float64)              # (N, n)
        s2 = qs[:, h, 1] @ keys[h, 1].T.astype(np.float64)
        i1, i2 = _topk(s1, topk), _topk(s2, topk)                        # (N, k)
        best1 = np.take_along_axis(s1, i1, -1)
        best2 = np.take_along_axis(s2, i2, -1)
        comb = (best1[:, :, None] + best2[:, None, :]).reshape(-1, topk * topk)
        idx = (i1[:, :, None] * n + i2[:, None, :]).reshape(-1, topk * topk)
        pick = _topk(comb, topk)                                          # (N, k)
        w = ref_softmax(np.take_along_axis(comb, pick, -1))               # (N, k)
        rows = np.take_along_axis(idx, pick, -1)
        out += np.einsum("nk,nkd->nd", w, values[rows].astype(np.float64))
    return out.reshape(lead + (values.shape[1],)).astype(values.dtype)


def ref_prepend_memory(x, slots):
    mem = np.broadcast_to(slots.astype(x.dtype), x.shape[:-2] + slots.shape)
    return np.concatenate([mem, x], axis=-2)


def ref_memory_mask(mask, slots=1):
    ones = np.ones(mask.shape[:-1] + (slots,), dtype=mask.dtype)
    return np.concatenate([ones, mask], axis=-1)


# ---- compiled kernels (Numba) ------------------------------------------------------------
# Product keys: per row and head, the top-k of each half's n sub-key scores, then the best
# k of the k*k sums, softmax, weighted sum of value rows. Top-k lists are kept sorted by
# insertion with strict comparisons, which reproduces the reference's stable argsort
# (ties: the earlier index first). Rows run in `lanes` parallel lanes, each with its own
# scratch row (dsl/ops/memory.py: LANES).

from ..jit import njit, prange  # noqa: E402


@njit(cache=True, inline="always")
def _insert(vals, idx, count, k, v, i):
    # put (v, i) into the descending list vals[:count] (kept to k entries); returns count
    if count == k and v <= vals[k - 1]:
        return count
    p = count if count < k else k - 1
    while p > 0 and vals[p - 1] < v:
        if p < k:
            vals[p] = vals[p - 1]
            idx[p] = idx[p - 1]
        p -= 1
    vals[p] = v
    idx[p] = i
    return count + 1 if count < k else k


@njit(cache=True, parallel=True)
def product_key_memory(out, q, keys, values, topk, s, top_v, top_i, best_v, best_i, acc):
    # out: (N, Dv)  q: (N, H*Dk)  keys: (H, 2, n, Dk/2)  values: (n*n, Dv)
    # scratch per lane: s (L, 2, n), top_v/top_i (L, 2, k), best_v/best_i (L, k), acc (L, Dv)
    N = q.shape[0]
    H, _, n, half = keys.shape
    Dv = values.shape[1]
    L = s.shape[0]
    k = topk
    for lane in prange(L):
        for row in range(lane, N, L):
            for d in range(Dv):
                acc[lane, d] = 0.0
            for h in range(H):
                for part in range(2):
                    cnt = 0
                    for j in range(n):
                        v = 0.0
                        for d in range(half):
                            v += np.float64(q[row, (h * 2 + part) * half + d]) * keys[h, part, j, d]
                        cnt = _insert(top_v[lane, part], top_i[lane, part], cnt, k, v, j)
                cnt = 0
                for a in range(k):
                    for b in range(k):
                        v = top_v[lane, 0, a] + top_v[lane, 1, b]
                        cnt = _insert(best_v[lane], best_i[lane], cnt, k,
                                      v, top_i[lane, 0, a] * n + top_i[lane, 1, b])
                m = best_v[lane, 0]
                z = 0.0
                for a in range(k):
                    z += np.exp(best_v[lane, a] - m)
                for a in range(k):
                    w = np.exp(best_v[lane, a] - m) / z
                    r = best_i[lane, a]
                    for d in range(Dv):
                        acc[lane, d] += w * values[r, d]
            for d in range(Dv):
                out[row, d] = acc[lane, d]


@njit(cache=True)
def prepend_memory(out, x, slots):
    # out: (N, M + S, C)  x: (N, S, C)  slots: (M, C)
    N, S, C = x.shape
    M = slots.shape[0]
    for b in range(N):
        for i in range(M):
            for c in range(C):
                out[b, i, c] = slots[i, c]
        for i in range(S):
            for c in range(C):
                out[b, M + i, c] = x[b, i, c]
