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
