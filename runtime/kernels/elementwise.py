"""Element-wise ops and activations (NumPy references)."""
from __future__ import annotations

import math

import numpy as np

_erf = np.frompyfunc(math.erf, 1, 1)


def ref_add(a, b):
    return np.add(a, b)


def ref_sub(a, b):
    return np.subtract(a, b)


def ref_mul(a, b):
    return np.multiply(a, b)


def ref_div(a, b):
    return np.divide(a, b)


def ref_neg(x):
    return np.negative(x)


def ref_relu(x):
    return np.maximum(x, 0).astype(x.dtype)


def ref_gelu(x):
    # exact GELU: x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), erf evaluated in float64
    x64 = x.astype(np.float64)
    return (0.5 * x64 * (1.0 + _erf(x64 / math.sqrt(2.0)).astype(np.float64))).astype(x.dtype)


def ref_gelu_tanh(x):
    x64 = x.astype(np.float64)
    inner = math.sqrt(2.0 / math.pi) * (x64 + 0.044715 * x64 ** 3)
    return (0.5 * x64 * (1.0 + np.tanh(inner))).astype(x.dtype)


def ref_sigmoid(x):
    # split by sign so exp never overflows
    x64 = x.astype(np.float64)
    out = np.empty_like(x64)
    pos = x64 >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x64[pos]))
    e = np.exp(x64[~pos])
    out[~pos] = e / (1.0 + e)
    return out.astype(x.dtype)


def ref_silu(x):
    return (x.astype(np.float64) * ref_sigmoid(x.astype(np.float64))).astype(x.dtype)


def ref_tanh(x):
    return np.tanh(x)


def ref_exp(x):
    return np.exp(x)


def ref_sqrt(x):
    return np.sqrt(x)


def ref_rsqrt(x):
    return (1.0 / np.sqrt(x)).astype(x.dtype)


def ref_square(x):
    return np.square(x)


def ref_cast(x, dtype="float32"):
    return x.astype(dtype)
