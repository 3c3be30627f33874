"""Matrix products (NumPy references)."""
from __future__ import annotations

import numpy as np


def ref_matmul(a, b, transpose_b=False):
    return np.matmul(a, np.swapaxes(b, -1, -2) if transpose_b else b)


def ref_linear(x, weight, bias=None):
    # x: (..., in), weight: (in, out), bias: (out,)
    y = np.matmul(x, weight)
    return y if bias is None else y + bias


# ---- compiled kernels (Numba) ------------------------------------------------------------
# Products with many rows go to BLAS (np.dot from Python). A decode step has one row per
# sequence: a matrix-vector product that only streams the weight once, so the cost is
# read bandwidth. The weight is stored output-major (executor.py), each thread takes a
# contiguous share of the outputs and streams its rows once; the bias + activation
# epilogue is fused. Measured on this machine (1 thread, GPT-2 small's 49 matrices, 495 MB):
# 28 GB/s against 22 GB/s for OpenBLAS sgemv; the (in, out) axpy form reached 20 GB/s.

from ..jit import njit, prange  # noqa: E402
from .elementwise import _act  # noqa: E402


@njit(cache=True, parallel=True, fastmath={"reassoc", "contract"})
def gemv_t(y, x, wt, bias, kind, nt):
    # y: (M, N) = act(x @ wt.T + bias); x: (M, K); wt: (N, K) row-major (a weight stored
    # output-major, e.g. a tied embedding read as the LM head): one dot product per output;
    # nt: threads (numba.get_num_threads() inside a kernel would stop it being cached)
    M, K = x.shape
    N = wt.shape[0]
    share = (N + nt - 1) // nt
    for t in prange(nt):
        zero = np.zeros(1, y.dtype)[0]         # accumulate in y's precision
        for j in range(t * share, min(N, (t + 1) * share)):
            for m in range(M):
                s = zero
                for k in range(K):
                    s += x[m, k] * wt[j, k]
                y[m, j] = _act(s + bias[j], kind)
