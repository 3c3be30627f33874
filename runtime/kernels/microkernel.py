"""Register-blocked matrix-product micro-kernels, written in LLVM IR (Numba cannot say them).

A prompt's product y = x @ W spends its time in one loop: for each k, broadcast one element
of each of MR rows of x and multiply it into NR columns of W, accumulating an MR x NR tile
of y that never leaves the vector registers. That is the kernel BLIS, OpenBLAS and ONNX
Runtime's MLAS are built around; written in Python, Numba's vectoriser spills or stays
scalar (kernels/linalg.py's dot-product tiles are the best it does), so the loop is emitted
here as IR with explicit vectors and llvm.fma, and LLVM only allocates the registers:

    uk6x16   AVX2 (16 vector registers): 6 x 2 accumulators <8 x float>, 2 loads of W,
             1 broadcast of x per k. AMD EPYC Zen 3, one thread, M = 126, K = 768:
             75-81 GFLOP/s against OpenBLAS's 63-76 (time.thread_time, a busy machine).
    uk12x32  AVX-512 (32 registers): 12 x 2 accumulators <16 x float>. Offered to the
             tuner only where the CPU has AVX-512 (untested for speed here: the tuner
             measures it before it is used).

The driver packs NR rows of the output-major weight (N, K) into a (K, NR) panel, the
panel stays in L2 while the rows of x go by MR at a time, and the next NR columns follow.
Partial tiles (rows past the last whole MR, columns past the last whole NR) run the same
kernel on a zero-padded copy and keep what is real. Each call allocates its panel and
tile scratch (K x NR + MR x (K + NR) floats: ~70 KB at K = 768), the one buffer of a
compiled product that is outside the memory plan, since the tuner picks the kernel at
run time. Every variant computes kernels/linalg.py's ref_linear(x, wt[n0:n1].T).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..jit import njit

F32 = ir.FloatType()


def _micro_kernel(MR: int, VL: int):
    """An intrinsic kernel(c, ldc, a, lda, b, K): c[r, :2*VL] = a[r, :K] @ b (K, 2*VL) for
    r < MR; c, a, b float32 pointers, ldc/lda row strides in elements. Overwrites c."""
    V = ir.VectorType(F32, VL)
    NV = 2
    NR = NV * VL

    @intrinsic
    def kernel(typingctx, c, ldc, a, lda, b, K):
        sig = types.void(types.CPointer(types.float32), types.intp,
                         types.CPointer(types.float32), types.intp,
                         types.CPointer(types.float32), types.intp)

        def codegen(context, builder, signature, args):
            c, ldc, a, lda, b, K = args
            i64 = K.type
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(V, [V, V, V]),
                                                 f"llvm.fma.v{VL}f32")
            zero = ir.Constant(V, [0.0] * VL)
            lanes0 = ir.Constant(ir.VectorType(ir.IntType(32), VL), [0] * VL)
            entry = builder.block
            loop = builder.append_basic_block("uk.loop")
            done = builder.append_basic_block("uk.done")
            builder.cbranch(builder.icmp_signed(">", K, ir.Constant(i64, 0)), loop, done)

            builder.position_at_end(loop)
            k = builder.phi(i64)
            k.add_incoming(ir.Constant(i64, 0), entry)
            acc = [[builder.phi(V) for _ in range(NV)] for _ in range(MR)]
            for row in acc:
                for p in row:
                    p.add_incoming(zero, entry)
            bk = builder.gep(b, [builder.mul(k, ir.Constant(i64, NR))])
            bv = [builder.load(builder.bitcast(builder.gep(bk, [ir.Constant(i64, VL * h)]),
                                               V.as_pointer()), align=4) for h in range(NV)]
            new = []
            for r in range(MR):
                ar = builder.load(builder.gep(a, [builder.add(
                    builder.mul(ir.Constant(i64, r), lda), k)]))
                av = builder.insert_element(ir.Constant(V, ir.Undefined), ar,
                                            ir.Constant(ir.IntType(32), 0))
                av = builder.shuffle_vector(av, ir.Constant(V, ir.Undefined), lanes0)
                new.append([builder.call(fma, [av, bv[h], acc[r][h]]) for h in range(NV)])
            k1 = builder.add(k, ir.Constant(i64, 1))
            body_end = builder.block
            k.add_incoming(k1, body_end)
            for r in range(MR):
                for h in range(NV):
                    acc[r][h].add_incoming(new[r][h], body_end)
            builder.cbranch(builder.icmp_signed("<", k1, K), loop, done)

            builder.position_at_end(done)
            final = []
            for r in range(MR):
                for h in range(NV):
                    v = builder.phi(V)
                    v.add_incoming(zero, entry)
                    v.add_incoming(new[r][h], body_end)
                    final.append(v)
            for r in range(MR):
                for h in range(NV):
                    dst = builder.gep(c, [builder.add(builder.mul(ir.Constant(i64, r), ldc),
                                                      ir.Constant(i64, VL * h))])
                    builder.store(final[NV * r + h], builder.bitcast(dst, V.as_pointer()),
                                  align=4)
            return context.get_dummy_value()
        return sig, codegen
    return kernel


@intrinsic
def _at(typingctx, arr, offset):
    # a pointer to the element `offset` elements past the start of an array's data
    sig = types.CPointer(arr.dtype)(arr, types.intp)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.gep(ary.data, [args[1]])
    return sig, codegen


@njit(cache=True, inline="always")
def _gemm_packed(y, x, wt, n0, n1, kernel, MR, NR):
    # y[:, n0:n1] = x @ wt[n0:n1].T   y: (M, N)  x: (M, K)  wt: (N, K), float32; y and x
    # may be row views (a column slice of a wider y: the packed-weight product's panels),
    # so the micro-kernel gets their row strides, not their widths
    M, K = x.shape
    if (K > 1 and x.strides[1] != 4) or (n1 - n0 > 1 and y.strides[1] != 4):
        raise ValueError("gemm_uk: y and x need unit column strides")
    ldy = y.strides[0] // 4
    lda = x.strides[0] // 4
    panel = np.zeros((K, NR), np.float32)          # NR weight rows, k-major
    tile = np.empty((MR, NR), np.float32)          # a partial tile's result
    xpad = np.zeros((MR, K), np.float32)           # the last rows, zero-padded to MR
    mfull = M - M % MR
    for j in range(n0, n1, NR):
        nr = min(NR, n1 - j)
        for jj in range(nr):
            for k in range(K):
                panel[k, jj] = wt[j + jj, k]
        for jj in range(nr, NR):
            for k in range(K):
                panel[k, jj] = 0.0
        pp = _at(panel, 0)
        for i in range(0, mfull, MR):
            if nr == NR:
                kernel(_at(y, i * ldy + j), ldy, _at(x, i * lda), lda, pp, K)
            else:
                kernel(_at(tile, 0), NR, _at(x, i * lda), lda, pp, K)
                for r in range(MR):
                    for jj in range(nr):
                        y[i + r, j + jj] = tile[r, jj]
        if mfull < M:
            for r in range(M - mfull):
                for k in range(K):
                    xpad[r, k] = x[mfull + r, k]
            kernel(_at(tile, 0), NR, _at(xpad, 0), K, pp, K)
            for r in range(M - mfull):
                for jj in range(nr):
                    y[mfull + r, j + jj] = tile[r, jj]


_uk6x16 = _micro_kernel(6, 8)
_uk12x32 = _micro_kernel(12, 16)


@njit(cache=True, nogil=True)
def gemm_uk6x16(y, x, wt, n0, n1):
    _gemm_packed(y, x, wt, n0, n1, _uk6x16, 6, 16)


@njit(cache=True, nogil=True)
def gemm_uk12x32(y, x, wt, n0, n1):
    _gemm_packed(y, x, wt, n0, n1, _uk12x32, 12, 32)
