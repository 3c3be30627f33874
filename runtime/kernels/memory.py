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
