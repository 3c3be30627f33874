"""RETRO chunked cross-attention (NumPy reference)."""
from __future__ import annotations

import math

import numpy as np

from .norm import ref_softmax


def ref_chunked_cross_attention(q, k, v, chunk=1, heads=1, scale=None):
    B, T, HD = q.shape
    C, N = k.shape[1], k.shape[2]
    D = HD // heads
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    out = np.zeros((B, T, heads, D), dtype=np.float64)
    for t in range(T):
        u = (t + 1) // chunk - 1                   # the chunk whose neighbours t may read
        if not 0 <= u < C:
            continue
        qt = q[:, t].astype(np.float64).reshape(B, heads, 1, D)
        ku = k[:, u].astype(np.float64).reshape(B, N, heads, D).transpose(0, 2, 1, 3)
        vu = v[:, u].astype(np.float64).reshape(B, N, heads, D).transpose(0, 2, 1, 3)
        p = ref_softmax(qt @ ku.transpose(0, 1, 3, 2) * scale)          # (B, H, 1, N)
        out[:, t] = (p @ vu)[:, :, 0]
    return out.reshape(B, T, HD).astype(q.dtype)


# ---- compiled kernels (Numba) ------------------------------------------------------------

from ..jit import njit, prange  # noqa: E402


@njit(cache=True, parallel=True)
def chunked_cross_attention(out, q, k, v, chunk, scale, scores, acc):
    # out, q: (B, T, H, D)  k, v: (B, C, N, H, D)  scores: (B*H, N)  acc: (B*H, D) float64
    # token t reads the neighbours of chunk (t + 1) // chunk - 1 (none before the first)
    B, T, H, D = q.shape
    C, N = k.shape[1], k.shape[2]
    for bh in prange(B * H):
        b = bh // H
        h = bh % H
        for t in range(T):
            u = (t + 1) // chunk - 1
            if u < 0 or u >= C:
                for d in range(D):
                    out[b, t, h, d] = 0.0
                continue
            m = -np.inf
            for j in range(N):
                s = 0.0
                for d in range(D):
                    s += np.float64(q[b, t, h, d]) * k[b, u, j, h, d]
                s *= scale
                scores[bh, j] = s
                if s > m:
                    m = s
            for d in range(D):
                acc[bh, d] = 0.0
            z = 0.0
            for j in range(N):
                e = np.exp(scores[bh, j] - m)
                z += e
                for d in range(D):
                    acc[bh, d] += e * v[b, u, j, h, d]
            for d in range(D):
                out[b, t, h, d] = acc[bh, d] / z
