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


# ---- compiled kernels (Numba) ------------------------------------------------------------
# Banded: a local query scans its window (|i - j| <= window // 2) and then the global keys,
# listed once per batch row, so the work is O(T * (window + globals)), not O(T^2). Scores
# are float64 per (b, h) row of scratch; masks arrive as bool.

from ..jit import njit, prange  # noqa: E402


@njit(cache=True, parallel=True)
def longformer_attention(out, q, k, v, qg, kg, vg, glob, real, half, scale, gidx, gcount,
                         scores, acc):
    # out, q..vg: (B, T, H, D)  glob: (B, T) bool  real: (B, T) bool, or (B, 0): all real
    # gidx: (B, T) global key positions, gcount: (B,)  scores: (B*H, T)  acc: (B*H, D)
    B, T, H, D = q.shape
    has_real = real.shape[1] > 0
    for b in range(B):
        c = 0
        for j in range(T):
            if glob[b, j] and (not has_real or real[b, j]):
                gidx[b, c] = j
                c += 1
        gcount[b] = c
    for bh in prange(B * H):
        b = bh // H
        h = bh % H
        for i in range(T):
            for d in range(D):
                acc[bh, d] = 0.0
            if has_real and not real[b, i]:
                for d in range(D):
                    out[b, i, h, d] = 0.0
                continue
            m = -np.inf
            if glob[b, i]:
                # a global query sees every real key, through the global projections
                for j in range(T):
                    s = -np.inf
                    if not has_real or real[b, j]:
                        s = 0.0
                        for d in range(D):
                            s += np.float64(qg[b, i, h, d]) * kg[b, j, h, d]
                        s *= scale
                    scores[bh, j] = s
                    if s > m:
                        m = s
                z = 0.0
                if m > -np.inf:
                    for j in range(T):
                        if scores[bh, j] > -np.inf:
                            e = np.exp(scores[bh, j] - m)
                            z += e
                            for d in range(D):
                                acc[bh, d] += e * vg[b, j, h, d]
            else:
                lo = max(0, i - half)
                hi = min(T - 1, i + half)
                n = 0
                for j in range(lo, hi + 1):      # the window, minus global keys
                    if glob[b, j]:
                        continue
                    s = -np.inf
                    if not has_real or real[b, j]:
                        s = 0.0
                        for d in range(D):
                            s += np.float64(q[b, i, h, d]) * k[b, j, h, d]
                        s *= scale
                    scores[bh, n] = s
                    n += 1
                    if s > m:
                        m = s
                for g in range(gcount[b]):       # then every global key, once
                    j = gidx[b, g]
                    s = 0.0
                    for d in range(D):
                        s += np.float64(q[b, i, h, d]) * k[b, j, h, d]
                    s *= scale
                    scores[bh, n] = s
                    n += 1
                    if s > m:
                        m = s
                z = 0.0
                if m > -np.inf:
                    n = 0
                    for j in range(lo, hi + 1):
                        if glob[b, j]:
                            continue
                        if scores[bh, n] > -np.inf:
                            e = np.exp(scores[bh, n] - m)
                            z += e
                            for d in range(D):
                                acc[bh, d] += e * v[b, j, h, d]
                        n += 1
                    for g in range(gcount[b]):
                        j = gidx[b, g]
                        e = np.exp(scores[bh, n] - m)
                        z += e
                        for d in range(D):
                            acc[bh, d] += e * v[b, j, h, d]
                        n += 1
            inv = 1.0 / z if z > 0.0 else 0.0
            for d in range(D):
                out[b, i, h, d] = acc[bh, d] * inv
