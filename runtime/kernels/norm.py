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


# ---- compiled kernels (Numba) ------------------------------------------------------------
# Output first; rows are the flattened leading dims, statistics accumulate in float64 like
# the references. `bias` is always an array (zeros when the op has none) so each kernel
# compiles once per dtype.

from ..jit import njit, prange  # noqa: E402

# Reassociation lets LLVM vectorise the float64 row sums (several partial sums at once);
# strictly ordered, each add waited on the last: add_layernorm over (128, 768) took 0.22 ms.
_SUMS = {"reassoc", "contract"}


@njit(cache=True, inline="always")
def _layernorm_finish(out, row, total, weight, bias, eps):
    # out, row: (C,); `total` is the row's float64 sum, which the fused kernel gathers
    # while it adds the residual. One normalisation shared by the plain and fused
    # kernels, so both agree to the last bit.
    c = row.shape[0]
    mean = total / c
    var = 0.0
    for j in range(c):
        d = row[j] - mean
        var += d * d
    inv = 1.0 / np.sqrt(var / c + eps)
    for j in range(c):
        out[j] = (row[j] - mean) * inv * weight[j] + bias[j]


@njit(cache=True, inline="always")
def _rmsnorm_finish(out, row, ss, weight, eps):
    # out, row: (C,); `ss` is the row's float64 sum of squares
    c = row.shape[0]
    inv = 1.0 / np.sqrt(ss / c + eps)
    for j in range(c):
        out[j] = row[j] * inv * weight[j]


@njit(cache=True, parallel=True, nogil=True, fastmath=_SUMS)
def layernorm(out, x, weight, bias, eps):
    # out, x: (N, C); weight, bias: (C,)
    n, c = x.shape
    for i in prange(n):
        total = 0.0
        for j in range(c):
            total += x[i, j]
        _layernorm_finish(out[i], x[i], total, weight, bias, eps)


@njit(cache=True, parallel=True, nogil=True, fastmath=_SUMS)
def rmsnorm(out, x, weight, eps):
    # out, x: (N, C); weight: (C,)
    n, c = x.shape
    for i in prange(n):
        ss = 0.0
        for j in range(c):
            ss += np.float64(x[i, j]) * x[i, j]
        _rmsnorm_finish(out[i], x[i], ss, weight, eps)


@njit(cache=True, parallel=True, nogil=True, fastmath=_SUMS)
def add_layernorm(total, out, x, residual, weight, bias, eps):
    # total = x + residual, out = layernorm(total): the residual stream is read once
    n, c = x.shape
    for i in prange(n):
        acc = 0.0
        for j in range(c):
            s = x[i, j] + residual[i, j]
            total[i, j] = s
            acc += s
        _layernorm_finish(out[i], total[i], acc, weight, bias, eps)


@njit(cache=True, parallel=True, nogil=True, fastmath=_SUMS)
def add_rmsnorm(total, out, x, residual, weight, eps):
    # total = x + residual, out = rmsnorm(total)
    n, c = x.shape
    for i in prange(n):
        ss = 0.0
        for j in range(c):
            s = x[i, j] + residual[i, j]
            total[i, j] = s
            ss += np.float64(s) * s
        _rmsnorm_finish(out[i], total[i], ss, weight, eps)


@njit(cache=True, parallel=True)
def softmax(out, x):
    # out, x: (N, C), over the last axis; a row that is all -inf gives zeros (as the ref)
    n, c = x.shape
    for i in prange(n):
        m = -np.inf
        for j in range(c):
            if x[i, j] > m:
                m = x[i, j]
        if not np.isfinite(m):
            m = 0.0
        s = 0.0
        for j in range(c):
            e = np.exp(np.float64(x[i, j]) - m)
            out[i, j] = e
            s += e
        inv = 1.0 / s if s > 0 else 0.0
        for j in range(c):
            out[i, j] = out[i, j] * inv
