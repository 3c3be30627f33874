"""Attention (NumPy references): the scaled dot-product core and ALiBi biases.

The reference computes in float64 and casts back, so fast kernels are compared against
something more exact than themselves.
"""
from __future__ import annotations

import math

import numpy as np


def visible(T: int, S: int, causal: bool = False, window: int | None = None) -> np.ndarray:
    """(T, S) bool: may query i see key j? Query i sits at absolute position S - T + i."""
    i = np.arange(T)[:, None] + (S - T)
    j = np.arange(S)[None, :]
    ok = np.ones((T, S), dtype=bool)
    if causal:
        ok &= j <= i
    if window is not None:
        ok &= j > i - window                 # Mistral: i - window < j <= i
        if not causal:
            ok &= j < i + window             # symmetric: |i - j| < window
    return ok


def ref_attention(q, k, v, mask=None, bias=None, heads=1, kv_heads=None, causal=False,
                  window=None, scale=None, cache=False, layer=None):
    # q: (..., T, H*D)  k, v: (..., S, Hkv*D)  -> (..., T, H*D)
    *lead, T, C = q.shape
    S = k.shape[-2]
    H = heads
    Hkv = kv_heads or heads
    D = C // H
    qh = q.astype(np.float64).reshape(*lead, T, H, D).swapaxes(-2, -3)        # (..., H, T, D)
    kh = k.astype(np.float64).reshape(*lead, S, Hkv, D).swapaxes(-2, -3)      # (..., Hkv, S, D)
    vh = v.astype(np.float64).reshape(*lead, S, Hkv, D).swapaxes(-2, -3)
    # query head h reads K/V head h // (H / Hkv)
    kh = np.repeat(kh, H // Hkv, axis=-3)                                    # (..., H, S, D)
    vh = np.repeat(vh, H // Hkv, axis=-3)
    s = 1.0 / math.sqrt(D) if scale is None else float(scale)
    scores = (qh @ kh.swapaxes(-1, -2)) * s                                  # (..., H, T, S)
    if bias is not None:
        scores = scores + bias
    ok = visible(T, S, causal, window)                                       # (T, S)
    if mask is not None:
        ok = ok & (np.asarray(mask) != 0)[..., None, None, :]                # (..., 1, T, S)
    scores = np.where(ok, scores, -np.inf)
    # a row with every key masked has no softmax; define it as zeros (not NaN)
    m = scores.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(scores - m)
    z = e.sum(axis=-1, keepdims=True)
    p = np.divide(e, z, out=np.zeros_like(e), where=z > 0)
    out = (p @ vh).swapaxes(-2, -3).reshape(*lead, T, C)                     # (..., T, H*D)
    return out.astype(q.dtype)


def alibi_slopes(heads: int) -> np.ndarray:
    """2^(-8h/n) for h = 1..n with n the largest power of two <= heads; the remaining heads
    take every other slope of the 2n sequence (the ALiBi paper's recipe)."""
    n = 2 ** int(math.floor(math.log2(heads)))
    base = 2.0 ** (-8.0 / n)
    slopes = [base ** h for h in range(1, n + 1)]
    if n < heads:
        extra = 2.0 ** (-4.0 / n)           # 2^(-8/(2n))
        slopes += [extra ** h for h in range(1, 2 * (heads - n), 2)]
    return np.array(slopes, dtype=np.float64)


def ref_alibi(x, heads=1, symmetric=False):
    S = x.shape[-2]
    slopes = alibi_slopes(heads)[:, None, None]                     # (H, 1, 1)
    j = np.arange(S)
    if symmetric:
        dist = np.abs(j[:, None] - j[None, :])                      # (S, S)
    else:
        dist = (S - 1 - j)[None, :]                                 # (1, S)
    return (-slopes * dist)[None].astype(np.float32)                # (1, H, 1|S, S)
