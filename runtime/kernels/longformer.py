"""Longformer sliding-window + global attention (NumPy reference, dense (T, T) scores:
clear rather than banded)."""
from __future__ import annotations

import math

import numpy as np


def _softmax_rows(s, allowed):
    # rows with no allowed key give zeros, as padded queries do in HF
    s = np.where(allowed, s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    e = np.exp(s - np.where(np.isfinite(m), m, 0.0))
    total = e.sum(axis=-1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


def ref_longformer_attention(q, k, v, qg, kg, vg, global_mask, mask=None, heads=1, window=2,
                             scale=None):
    B, T, C = q.shape
    dtype = q.dtype
    D = C // heads
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    glob = np.asarray(global_mask) != 0                                  # (B, T)
    real = np.ones((B, T), dtype=bool) if mask is None else np.asarray(mask) != 0
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    band = np.abs(i - j) <= window // 2                                   # (T, T)
    split = lambda t: t.astype(np.float64).reshape(B, T, heads, D).transpose(0, 2, 1, 3)
    q, k, v, qg, kg, vg = map(split, (q, k, v, qg, kg, vg))              # (B, H, T, D)
    # local queries: the window (minus global keys) plus every global key, each once
    local_keys = ((band[None] & ~glob[:, None, :]) | glob[:, None, :]) & real[:, None, :]
    p = _softmax_rows(q @ k.transpose(0, 1, 3, 2) * scale, local_keys[:, None])
    out = p @ v                                                           # (B, H, T, D)
    # global queries: every real key, with the global projections
    pg = _softmax_rows(qg @ kg.transpose(0, 1, 3, 2) * scale, real[:, None, None, :])
    out = np.where(glob[:, None, :, None], pg @ vg, out)
    out = np.where(real[:, None, :, None], out, 0.0)
    return out.transpose(0, 2, 1, 3).reshape(B, T, C).astype(dtype)
