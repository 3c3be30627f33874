"""Packed weights: 8-bit and bf16 matrix-product weights, and the products that read them.

A matrix-product weight W (K, N) (in, out) is stored output-major, as the rows of W^T:
`data` (N, K), each row one output's K input weights, and `scales` (N, ceil(K / 32)).

    int8  data[j, k] = round(W[k, j] / s),  s = scales[j, k // 32] = max |block| / 127
          (symmetric, one scale per block of 32 along K, as GGUF's Q8_0; the last block
          of a row is shorter when K is not a multiple of 32: its scale is its own max)
    bf16  data[j, k] = the top 16 bits of W[k, j]'s float32, rounded to nearest even;
          scales is (N, 0): bf16 needs none

A block holding NaN or +-inf has no int8 form: it is stored as zeros with a NaN scale, so
it reads back NaN; bf16 keeps both. Activations and sums stay float32: the products below
read `data` as it lies and widen each weight in registers, never into a float32 copy of
the matrix.

    gemv_packed    decode (a few rows): a matrix-vector product streaming each weight row
                   once, bias + activation fused, the outputs shared out over threads
    gemm_packed    a prompt's products: 256 weight rows at a time widened into a float32
                   panel, then float32's own product kernel (BLAS or gemm_nt's tiles);
                   or a micro-kernel's panel (16 or 32 rows) widened and packed at once
    gather_packed  rows of a packed table (a tied embedding read by its lookup too)

The format (BLOCK, what a row stands for: `dequantize`) is runtime/packed.py's, which
imports no Numba. This is a helper file, not an op family: its `ref_` functions are the
NumPy twins of these kernels (dequantise, then compute in float32), not op references.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from ..jit import njit, prange
from . import microkernel as k_uk
from ..packed import BLOCK, PACK_ROWS, QMAX, PackedWeight, dequantize
from ._vmath import _float32_from_bits
from .elementwise import _act, apply_activation


# ---- NumPy twins -----------------------------------------------------------------------------

def ref_pack_int8(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """rows (N, K) float32 -> (data (N, K) int8, scales (N, ceil(K/32)) float32)."""
    rows = np.asarray(rows, np.float32)
    N, K = rows.shape
    nb = -(-K // BLOCK)
    padded = np.zeros((N, nb * BLOCK), np.float32)       # the short last block: zeros
    padded[:, :K] = rows
    blocks = padded.reshape(N, nb, BLOCK)
    bad = ~np.isfinite(blocks).all(axis=2)
    with np.errstate(invalid="ignore", over="ignore"):
        amax = np.abs(np.where(np.isfinite(blocks), blocks, 0)).max(axis=2)
        scale = amax / np.float32(QMAX)
        inv = np.where(scale > 0, np.float32(1) / np.where(scale > 0, scale, 1), 0)
        q = np.clip(np.rint(blocks * inv[:, :, None].astype(np.float32)), -QMAX, QMAX)
    q[bad] = 0
    scale = np.where(bad, np.float32(np.nan), scale).astype(np.float32)
    return q.reshape(N, -1)[:, :K].astype(np.int8), scale


def ref_pack_bf16(rows: np.ndarray) -> np.ndarray:
    """rows (N, K) float32 -> the bf16 bits (N, K) uint16, rounded to nearest even; NaN
    stays NaN (a quiet one: rounding its payload could carry into the exponent)."""
    bits = np.ascontiguousarray(rows, np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> 16) & 1)) >> 16
    nan = (bits & 0x7FFFFFFF) > 0x7F800000
    return np.where(nan, (bits >> 16) | 0x0040, rounded).astype(np.uint16)


def ref_packed_product(x, data, scales, bias=None, act=None):
    """act(x @ W + bias) for W packed as (data, scales): the twin of every product here."""
    y = np.matmul(x, dequantize(data, scales).T)
    y = y if bias is None else y + bias
    return y if act in (None, "identity") else apply_activation(act, y)


# ---- compiled kernels ------------------------------------------------------------------------

def _weight(row, srow, k):
    """The float32 value of weight k of a packed row (compiled: see the overload)."""


@overload(_weight, inline="always")
def _weight_impl(row, srow, k):
    # chosen by the row's type when a kernel compiles: one kernel source for both formats
    if row.dtype == types.int8:
        return lambda row, srow, k: np.float32(row[k]) * srow[k >> 5]
    if row.dtype == types.uint16:
        return lambda row, srow, k: _float32_from_bits(np.uint32(row[k]) << 16)
    return None


def _widen(dst, row, srow):
    """dst[:] = the float32 values of a packed row segment (compiled: see the overload)."""


@overload(_widen, inline="always")
def _widen_impl(dst, row, srow):
    if row.dtype == types.uint16:
        def widen_bf16(dst, row, srow):
            for k in range(row.shape[0]):
                dst[k] = _float32_from_bits(np.uint32(row[k]) << 16)
        return widen_bf16
    if row.dtype == types.int8:
        def widen_int8(dst, row, srow):
            # block by block, each block a loop of its own from 0: LLVM vectorises that
            # (one loop over the segment with srow[k >> 5] stayed scalar here)
            n = row.shape[0]
            for b in range((n + BLOCK - 1) // BLOCK):
                lo = b * BLOCK
                hi = min(lo + BLOCK, n)
                d, r, s = dst[lo:hi], row[lo:hi], srow[b]
                for k in range(hi - lo):
                    d[k] = np.float32(r[k]) * s
        return widen_int8
    return None


@njit(cache=True, nogil=True)
def pack_int8(data, scales, rows):
    # data: (N, K) int8, scales: (N, ceil(K/32)) float32 <- rows: (N, K) float32 of any
    # layout (a weight (K, N) read transposed); ref_pack_int8 is its twin, bit for bit
    N, K = rows.shape
    for j in range(N):
        for b in range(scales.shape[1]):
            lo, hi = b * BLOCK, min(K, (b + 1) * BLOCK)
            amax = np.float32(0)
            finite = True
            for k in range(lo, hi):
                v = rows[j, k]
                if not np.isfinite(v):
                    finite = False
                elif abs(v) > amax:
                    amax = abs(v)
            s = amax / np.float32(QMAX)
            inv = np.float32(1) / s if s > 0 else np.float32(0)
            for k in range(lo, hi):
                data[j, k] = np.int8(min(max(np.rint(rows[j, k] * inv), -QMAX), QMAX)) \
                    if finite else np.int8(0)
            scales[j, b] = s if finite else np.float32(np.nan)


@njit(cache=True, nogil=True)
def pack_bf16(data, rows):
    # data: (N, K) uint16 <- rows: (N, K) float32 of any layout; twin: ref_pack_bf16
    N, K = rows.shape
    one = np.empty(1, np.float32)
    bits = one.view(np.uint32)
    for j in range(N):
        for k in range(K):
            one[0] = rows[j, k]
            b = bits[0]
            if (b & 0x7FFFFFFF) > 0x7F800000:
                data[j, k] = np.uint16((b >> 16) | 0x0040)
            else:
                data[j, k] = np.uint16((b + 0x7FFF + ((b >> 16) & 1)) >> 16)


@intrinsic
def _prefetch(typingctx, arr, offset):
    """Ask for the cache line holding element `offset` of a C-contiguous array (counted
    from its first element) to be read into the caches; an x86 prefetch never faults."""
    if not isinstance(arr, types.Array) or not isinstance(offset, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = builder.module.globals.get("llvm.prefetch.p0i8")
        if fn is None:
            fn = ir.Function(builder.module, fnty, name="llvm.prefetch.p0i8")
        ptr = builder.bitcast(builder.gep(data, [args[1]]), i8p)
        # read, keep in every cache level, data (not instructions)
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return types.none(arr, offset), codegen


# A decode step streams ~140 MB of int8 weights (GPT-2 small) from DRAM. The widening
# keeps a core busy enough that its out-of-order window no longer covers the memory
# latency, so each row asks for the bytes PREFETCH_BYTES ahead of it. AMD EPYC (Zen 3, 1
# thread, a GPT-2 small step's 49 matrices, benchmarks/packed_kernels.py): int8 8.3 -> 9.6
# Gweights/s (10.8 GB/s), 2.7-2.8x float32's gemv_t; bf16 1.6x (5.9 Gweights/s). 4 KiB
# ahead was as good for int8, not for bf16; 32 KiB no better.
PREFETCH_BYTES = 16384


@njit(cache=True, parallel=True, fastmath={"reassoc", "contract"})
def gemv_packed(y, x, data, scales, bias, kind, nt):
    # y: (M, N) = act(x @ W + bias); x: (M, K) float32; W packed as data (N, K) C-contiguous,
    # scales. Each thread streams a contiguous share of the weight rows once; the weights
    # widen in registers (int8: sign-extend, convert, times the block's scale, which LLVM
    # loads once per vector of 32 since the loop starts on a block). nt: threads (asking
    # Numba inside a kernel would stop it being cached).
    M, K = x.shape
    N = data.shape[0]
    share = (N + nt - 1) // nt
    line = max(1, 64 // data.itemsize)                 # elements per cache line
    ahead = PREFETCH_BYTES // data.itemsize
    for t in prange(nt):
        for j in range(t * share, min(N, (t + 1) * share)):
            for c in range(j * K + ahead, min((j + 1) * K + ahead, N * K), line):
                _prefetch(data, c)
            row, srow = data[j], scales[j]
            for m in range(M):
                xm = x[m]
                s = np.float32(0)
                for k in range(K):
                    s += xm[k] * _weight(row, srow, k)
                y[m, j] = _act(s + bias[j], kind)


@njit(cache=True, nogil=True)
def widen_rows(w, data, scales):
    # w: (R, K) float32 = the values of packed rows data (R, K), scales
    for j in range(w.shape[0]):
        _widen(w[j], data[j], scales[j])


# A prompt's product: the packed weight is widened PANEL rows at a time into a float32
# buffer, and each panel multiplied by the kernel float32 weights would use for this class
# of product on this machine (runtime/tune.py: OpenBLAS, or kernels/linalg.py's gemm_nt with
# one of its tiles). Each weight is widened once per call, costing ~0.2 ns against the
# ~2M ns of multiply-adds it meets in a prompt of M rows, and the panel (256 rows x K) is
# the only float32 copy of any of it. Measured on AMD EPYC (Zen 3, 1 thread, M = 128,
# GPT-2 small's four shapes, benchmarks/packed_kernels.py): int8 through OpenBLAS 49-67
# GFLOP/s where float32 through OpenBLAS runs 54-70.
PANEL = 256


@njit(cache=True, inline="always")
def _load_packed(panel, rows, src, j, nr):
    # packed output rows j:j+nr widened into `rows`, then packed as float32's are
    data, scales = src
    for jj in range(nr):
        _widen(rows[jj], data[j + jj], scales[j + jj])
    k_uk.pack_panel(panel, rows, 0, nr)


@njit(cache=True, nogil=True)
def gemm_packed_uk6x16(y, x, data, scales, n0, n1):
    k_uk.drive(y, x, (data, scales), n0, n1, k_uk._uk6x16, 6, 16, _load_packed,
               k_uk.scratch(x.shape[1], 16, True))


@njit(cache=True, nogil=True)
def gemm_packed_uk12x32(y, x, data, scales, n0, n1):
    k_uk.drive(y, x, (data, scales), n0, n1, k_uk._uk12x32, 12, 32, _load_packed,
               k_uk.scratch(x.shape[1], 32, True))


# the micro-kernels read packed weights themselves, NR rows at a time: no 256-row panel
# of float32 between them and the weights
MICRO = {k_uk.gemm_uk6x16: gemm_packed_uk6x16, k_uk.gemm_uk12x32: gemm_packed_uk12x32}


def gemm_packed(y, x, data, scales, n0, n1, kernel=None):
    """y[:, n0:n1] = x @ W[:, n0:n1], W packed as data (N, K), scales; x (M, K) float32.
    `kernel` is float32's kernel for this class (y, x, wt, n0, n1): a gemm_nt tile or a
    micro-kernel (which then reads the packed rows itself), or None: BLAS. Columns n0:n1
    only: one lane's share (runtime/lanes.py)."""
    if kernel in MICRO:
        MICRO[kernel](y, x, data, scales, n0, n1)
        return
    buf = np.empty((min(PANEL, n1 - n0), x.shape[1]), np.float32)
    for j0 in range(n0, n1, PANEL):
        j1 = min(n1, j0 + PANEL)
        w = buf[:j1 - j0]
        widen_rows(w, data[j0:j1], scales[j0:j1])
        if kernel is None:
            np.matmul(x, w.T, out=y[:, j0:j1])
        else:
            kernel(y[:, j0:j1], x, w, 0, j1 - j0)


gemm_packed.calls_blas = True       # the executor's thread policy asks (runtime/jit.py)


def gemm_packed_calls(y, x, data, scales, n0, n1, kernel) -> list[tuple]:
    """The Numba kernels gemm_packed calls, with arguments of the types it passes them:
    for a program to compile before its first run."""
    if kernel in MICRO:
        return [(MICRO[kernel], (y, x, data, scales, n0, n1))]
    w = np.empty((1, x.shape[1]), np.float32)
    calls = [(widen_rows, (w, data[n0:n0 + 1], scales[n0:n0 + 1]))]
    if kernel is not None:
        for j0 in sorted({n0, n0 + (n1 - 1 - n0) // PANEL * PANEL}):   # first, last panel
            j1 = min(n1, j0 + PANEL)
            calls.append((kernel, (y[:, j0:j1], x, np.empty((j1 - j0, x.shape[1]),
                                                            np.float32), 0, j1 - j0)))
    return calls


@njit(cache=True, parallel=True)
def gather_packed(out, ids, data, scales):
    # out: (N, C) = the rows ids (N,) of a packed table (V, C); returns how many ids fall
    # outside 0..V-1 (those rows are left as they were: the caller raises)
    V = data.shape[0]
    for n in prange(ids.shape[0]):
        if 0 <= ids[n] < V:
            _widen(out[n], data[ids[n]], scales[ids[n]])
    return np.count_nonzero((ids < 0) | (ids >= V))


def pack_weight(w: np.ndarray, kind: str, transposed: bool) -> PackedWeight:
    """Pack a float32 matrix: its rows (transposed=False) or its columns (True)."""
    rows = w.T if transposed else w
    R, C = rows.shape
    if kind == "int8":
        data = np.empty((R, C), np.int8)
        scales = np.empty((R, -(-C // BLOCK)), np.float32)
    elif kind == "bf16":
        data = np.empty((R, C), np.uint16)
        scales = np.empty((R, 0), np.float32)
    else:
        raise ValueError(f"unknown packed weight kind {kind!r}")
    for r0 in range(0, R, PACK_ROWS):
        # a strided source (a weight (K, N) read by columns) is copied a few rows at a time:
        # reading it element by element across rows would miss the cache on every one
        part = np.ascontiguousarray(rows[r0:r0 + PACK_ROWS], np.float32)
        if kind == "int8":
            pack_int8(data[r0:r0 + PACK_ROWS], scales[r0:r0 + PACK_ROWS], part)
        else:
            pack_bf16(data[r0:r0 + PACK_ROWS], part)
    return PackedWeight(kind, data, scales, transposed)
