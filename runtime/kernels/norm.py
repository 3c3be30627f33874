"""Normalisations and softmax over one axis (NumPy references, accumulated in float64)."""
from __future__ import annotations

import numpy as np


def ref_layernorm(x, weight, bias=None, eps=1e-5):
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=-1, keepdims=True)
    var = ((x64 - mean) ** 2).mean(axis=-1, keepdims=True)   # biased, as in the paper
    y = (x64 - mean) / np.sqrt(var + eps) * weight
    return (y if bias is None else y + bias).astype(x.dtype)


def ref_rmsnorm(x, weight, eps=1e-6):
    x64 = x.astype(np.float64)
    rms = np.sqrt((x64 * x64).mean(axis=-1, keepdims=True) + eps)
    return (x64 / rms * weight).astype(x.dtype)


def ref_softmax(x, axis=-1):
    # Subtracting the max keeps exp finite. A row that is entirely -inf (every position
    # masked) has no defined softmax; we define it as all zeros rather than NaN.
    x64 = x.astype(np.float64)
    m = np.max(x64, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(x64 - m)
    s = e.sum(axis=axis, keepdims=True)
    return np.divide(e, s, out=np.zeros_like(e), where=s > 0).astype(x.dtype)


def ref_add_layernorm(x, residual, weight, bias=None, eps=1e-5):
    # fused residual + norm: returns (s, layernorm(s)) with s = x + residual
    s = x + residual
    return s, ref_layernorm(s, weight, bias, eps)


def ref_add_rmsnorm(x, residual, weight, eps=1e-6):
    s = x + residual
    return s, ref_rmsnorm(s, weight, eps)
