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


def ref_relu2(x):
    return np.square(np.maximum(x, 0))


def apply_activation(act: str, x):
    """act(x) for any op with the activation trait: its own `ref_` (fused epilogues)."""
    from . import REFERENCE         # the registry, complete once the package is imported
    return REFERENCE[act](x)


def ref_cast(x, dtype="float32"):
    return x.astype(dtype)


# ---- compiled kernels (Numba) ------------------------------------------------------------
# One kernel for every activation, chosen by a small integer code, so adding an activation
# does not add a compiled specialisation. float64 values use libm like the refs; float32
# values use the vectorisable forms of _vmath.py. error_model="numpy": a float division
# that may divide by zero is otherwise a branch (to raise ZeroDivisionError), which stops
# LLVM vectorising the loop; that alone made GELU 13x slower.

from ..jit import njit, prange  # noqa: E402
from ._vmath import gelu_, gelu_tanh_, relu_, sigmoid_  # noqa: E402

ACT = {"identity": 0, "relu": 1, "gelu": 2, "gelu_tanh": 3, "silu": 4, "sigmoid": 5,
       "tanh": 6, "relu2": 7}


@njit(cache=True, inline="always", error_model="numpy")
def _act(v, kind):
    # one value, in its own precision (for kernels whose loops are not element-wise)
    if kind == 1:
        return relu_(v)
    if kind == 2:
        return gelu_(v)
    if kind == 3:
        return gelu_tanh_(v)
    if kind == 4:
        return v * sigmoid_(v)
    if kind == 5:
        return sigmoid_(v)
    if kind == 6:
        return math.tanh(v)
    if kind == 7:
        return relu_(v) * relu_(v)
    return v


@njit(cache=True, inline="always", error_model="numpy")
def _act_row(out, x, kind):
    # out[j] = act(x[j]) over one row, out may be x: the choice of activation is made once,
    # outside the loops, so each loop is a plain element-wise loop that LLVM vectorises
    # (a branch on `kind` inside the loop left some kernels scalar: 20 ns per element)
    n = x.shape[0]
    if kind == 1:
        for j in range(n):
            out[j] = relu_(x[j])
    elif kind == 2:
        for j in range(n):
            out[j] = gelu_(x[j])
    elif kind == 3:
        for j in range(n):
            out[j] = gelu_tanh_(x[j])
    elif kind == 4:
        for j in range(n):
            out[j] = x[j] * sigmoid_(x[j])
    elif kind == 5:
        for j in range(n):
            out[j] = sigmoid_(x[j])
    elif kind == 6:
        for j in range(n):
            out[j] = math.tanh(x[j])
    elif kind == 7:
        for j in range(n):
            out[j] = relu_(x[j]) * relu_(x[j])
    else:
        for j in range(n):
            out[j] = x[j]


ACT_BLOCK = 4096     # elements per parallel chunk of a flat activation
# the activation loops may fuse a multiply and an add into one FMA (more exact, never less):
# the polynomials of _vmath.py ran 1.2-1.3x faster so (GELU 2.35 -> 1.80 ns an element, Zen 3).
# _act_row is inlined, so it is every kernel calling it that takes the flag
FMA = {"contract"}


@njit(cache=True, parallel=True, nogil=True, error_model="numpy", fastmath=FMA)
def activation(out, x, kind):
    # out, x: (N,) flat views; in place when out is x
    n = x.shape[0]
    for c in prange((n + ACT_BLOCK - 1) // ACT_BLOCK):
        lo, hi = c * ACT_BLOCK, min(n, (c + 1) * ACT_BLOCK)
        _act_row(out[lo:hi], x[lo:hi], kind)


@njit(cache=True, parallel=True, nogil=True, error_model="numpy", fastmath=FMA)
def bias_act(y, bias, kind):
    # y: (N, C) in place, bias: (C,): the epilogue of a matrix product, y = act(y + bias)
    n, c = y.shape
    for i in prange(n):
        row = y[i]
        for j in range(c):
            row[j] += bias[j]
        _act_row(row, row, kind)


@njit(cache=True, nogil=True, error_model="numpy", fastmath=FMA)
def bias_act_cols(y, bias, kind, c0, c1):
    # bias_act over columns c0:c1 only: one lane's share of a product (runtime/lanes.py).
    # y stays a whole C-contiguous array so each row's slice is contiguous to LLVM
    b = bias[c0:c1]
    for i in range(y.shape[0]):
        row = y[i][c0:c1]
        for j in range(row.shape[0]):
            row[j] += b[j]
        _act_row(row, row, kind)


BINARY = {"add": 0, "sub": 1, "mul": 2, "div": 3}


@njit(cache=True, parallel=True)
def binary_rows(out, a, b, kind):
    # out: (R, K); a, b: (1|R, K): a row broadcast without NumPy's iterator buffers
    R, K = out.shape
    ra = 1 if a.shape[0] > 1 else 0
    rb = 1 if b.shape[0] > 1 else 0
    for i in prange(R):
        ia = i * ra
        ib = i * rb
        for j in range(K):
            x = a[ia, j]
            y = b[ib, j]
            if kind == 0:
                out[i, j] = x + y
            elif kind == 1:
                out[i, j] = x - y
            elif kind == 2:
                out[i, j] = x * y
            else:
                out[i, j] = x / y
