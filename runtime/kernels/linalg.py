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
# Products with many rows go to BLAS (np.dot from Python), or, for a prompt's few hundred
# rows against a weight of modest depth, to gemm_nt below. A decode step has one row per
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


# A prompt's products, y = x @ wt.T, read both operands along K: x's rows and the output-major
# weight's rows are contiguous, so every output is a dot product and nothing is packed (BLAS
# packs both operands on every call). An R x C tile keeps R*C running sums in vector
# registers and loads R + C vectors per R*C multiply-adds; the C weight rows (3 KB each at
# K = 768) stay in L1 while a block of x's rows streams from L2. Which tile wins depends on
# the vector registers the CPU has, so there is a kernel per tile and the tuner
# (runtime/tune.py) measures them on the machine at hand:
#   TILE_4x4: 16 sums + 8 loads, for 32 registers (AVX-512). AMD EPYC Zen 4, 1 thread,
#             M = 128, K = 768: 88-95 GFLOP/s against OpenBLAS's 77-86.
#   TILE_2x4, TILE_3x3: 8-9 sums + 6 loads, for 16 registers (AVX2). AMD EPYC Zen 3,
#             1 thread, same shapes: 65-70 GFLOP/s, where 4x4 spills to 46 and OpenBLAS
#             runs 65-75.
GEMM_ROW_BLOCK = 192     # rows of x per pass over the weights: 192 x 768 float32 = 576 KiB


@njit(cache=True, inline="always", fastmath={"reassoc", "contract"})
def _dot(a, b, zero):
    s = zero
    for k in range(a.shape[0]):
        s += a[k] * b[k]
    return s


@njit(cache=True, inline="always", fastmath={"reassoc", "contract"})
def _tile4x4(y, x, wt, i, j, z):
    # y[i:i+4, j:j+4] = x[i:i+4] @ wt[j:j+4].T: 16 dot products in one pass over K; z is
    # zero in y's precision (a literal 0 would make float32 sums float64)
    x0, x1, x2, x3 = x[i], x[i + 1], x[i + 2], x[i + 3]
    w0, w1, w2, w3 = wt[j], wt[j + 1], wt[j + 2], wt[j + 3]
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = z
    s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = z
    for k in range(x.shape[1]):
        a0, a1, a2, a3 = x0[k], x1[k], x2[k], x3[k]
        b0, b1, b2, b3 = w0[k], w1[k], w2[k], w3[k]
        s00 += a0 * b0
        s01 += a0 * b1
        s02 += a0 * b2
        s03 += a0 * b3
        s10 += a1 * b0
        s11 += a1 * b1
        s12 += a1 * b2
        s13 += a1 * b3
        s20 += a2 * b0
        s21 += a2 * b1
        s22 += a2 * b2
        s23 += a2 * b3
        s30 += a3 * b0
        s31 += a3 * b1
        s32 += a3 * b2
        s33 += a3 * b3
    y[i, j], y[i, j + 1], y[i, j + 2], y[i, j + 3] = s00, s01, s02, s03
    y[i + 1, j], y[i + 1, j + 1], y[i + 1, j + 2], y[i + 1, j + 3] = s10, s11, s12, s13
    y[i + 2, j], y[i + 2, j + 1], y[i + 2, j + 2], y[i + 2, j + 3] = s20, s21, s22, s23
    y[i + 3, j], y[i + 3, j + 1], y[i + 3, j + 2], y[i + 3, j + 3] = s30, s31, s32, s33


@njit(cache=True, inline="always", fastmath={"reassoc", "contract"})
def _tile2x4(y, x, wt, i, j, z):
    # y[i:i+2, j:j+4] = x[i:i+2] @ wt[j:j+4].T: 8 dot products in one pass over K
    x0, x1 = x[i], x[i + 1]
    w0, w1, w2, w3 = wt[j], wt[j + 1], wt[j + 2], wt[j + 3]
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = z
    for k in range(x.shape[1]):
        a0, a1 = x0[k], x1[k]
        b0, b1, b2, b3 = w0[k], w1[k], w2[k], w3[k]
        s00 += a0 * b0
        s01 += a0 * b1
        s02 += a0 * b2
        s03 += a0 * b3
        s10 += a1 * b0
        s11 += a1 * b1
        s12 += a1 * b2
        s13 += a1 * b3
    y[i, j], y[i, j + 1], y[i, j + 2], y[i, j + 3] = s00, s01, s02, s03
    y[i + 1, j], y[i + 1, j + 1], y[i + 1, j + 2], y[i + 1, j + 3] = s10, s11, s12, s13


@njit(cache=True, inline="always", fastmath={"reassoc", "contract"})
def _tile3x3(y, x, wt, i, j, z):
    # y[i:i+3, j:j+3] = x[i:i+3] @ wt[j:j+3].T: 9 dot products in one pass over K
    x0, x1, x2 = x[i], x[i + 1], x[i + 2]
    w0, w1, w2 = wt[j], wt[j + 1], wt[j + 2]
    s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = z
    for k in range(x.shape[1]):
        a0, a1, a2 = x0[k], x1[k], x2[k]
        b0, b1, b2 = w0[k], w1[k], w2[k]
        s00 += a0 * b0
        s01 += a0 * b1
        s02 += a0 * b2
        s10 += a1 * b0
        s11 += a1 * b1
        s12 += a1 * b2
        s20 += a2 * b0
        s21 += a2 * b1
        s22 += a2 * b2
    y[i, j], y[i, j + 1], y[i, j + 2] = s00, s01, s02
    y[i + 1, j], y[i + 1, j + 1], y[i + 1, j + 2] = s10, s11, s12
    y[i + 2, j], y[i + 2, j + 1], y[i + 2, j + 2] = s20, s21, s22


@njit(cache=True, inline="always", fastmath={"reassoc", "contract"})
def _gemm_nt(y, x, wt, n0, n1, tile, R, C):
    # y[:, n0:n1] = x @ wt[n0:n1].T   y: (M, N)  x: (M, K)  wt: (N, K), all C-contiguous,
    # in R x C tiles. Columns n0:n1 only: one lane's share (runtime/lanes.py); rows and
    # columns past the last whole tile are single dot products. Inlined into one kernel
    # per tile, so each tile's loop is compiled (and its registers allocated) on its own.
    M = x.shape[0]
    zero = np.zeros(1, y.dtype)[0]
    jc = n0 + (n1 - n0) // C * C
    for r0 in range(0, M, GEMM_ROW_BLOCK):
        r1 = min(M, r0 + GEMM_ROW_BLOCK)
        ir = r0 + (r1 - r0) // R * R
        for j in range(n0, jc, C):
            for i in range(r0, ir, R):
                tile(y, x, wt, i, j, zero)
            for i in range(ir, r1):
                for jj in range(j, j + C):
                    y[i, jj] = _dot(x[i], wt[jj], zero)
        for jj in range(jc, n1):
            for i in range(r0, r1):
                y[i, jj] = _dot(x[i], wt[jj], zero)


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def gemm_nt_4x4(y, x, wt, n0, n1):
    _gemm_nt(y, x, wt, n0, n1, _tile4x4, 4, 4)


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def gemm_nt_2x4(y, x, wt, n0, n1):
    _gemm_nt(y, x, wt, n0, n1, _tile2x4, 2, 4)


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def gemm_nt_3x3(y, x, wt, n0, n1):
    _gemm_nt(y, x, wt, n0, n1, _tile3x3, 3, 3)


TILES = {"nt4x4": gemm_nt_4x4, "nt2x4": gemm_nt_2x4, "nt3x3": gemm_nt_3x3}
