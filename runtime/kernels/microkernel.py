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

The driver packs NR rows of the output-major weight (N, K) into a (K, NR) panel, a few
panels at a time (GROUP_BYTES), which stay in L2 while the rows of x go by MR at a time,
each row block through every panel of the group; then the next group of columns.
Packing transposes 8 x 8 blocks in registers: done one value at a time it had cost a
third as long as the panel's multiply-adds at M = 128 (Zen 3, 1 thread, GPT-2 small's
shapes: 54-63 GFLOP/s packing per value, 68-76 by blocks, 74-78 with the panels packed
ahead of time). int8 and bf16 weights (kernels/_quant.py) are widened NR rows at a time
and packed the same way.
Partial tiles (rows past the last whole MR, columns past the last whole NR) run the same
kernel, which stores only the real rows and columns (the rows past M read x's last row):
no padded copies. Against padding (Zen 3, 1 thread, same process, medians of 12 pairs
in alternating order): a 15 x 32 x 15 product (attention's, per head) 1.20-1.24x, 64^3
1.01-1.05x, GPT-2's and MiniLM's 0.97-1.01x. A bias or activation is a pass of its
own over the call's columns after it (runtime/steps/linalg.py): applied to each panel's 16
columns while they were in L1, it had cost 1.6-2.2 ns an element for a bias alone and
4.2-6.4 for GELU, against 0.2-0.4 and 1.6-2.7 as one pass over rows hundreds of columns
wide (Zen 3, 1 thread, M = 128 and 480: a loop over 16 values pays its set-up per row and
is too short for the vectoriser's main loop). Each call allocates its group of panels
(scratch(): up to GROUP_BYTES, 256 KB; packed weights' widened rows another NR x K), the
one buffer of a compiled product outside the memory plan, since the tuner picks the kernel
at run time; prompt attention (kernels/prefill.py attention_blocks) takes one planned
panel per lane and runs Q K^T and P V through the same driver.

Weights are not kept packed as panels between calls: tried (each 16 output columns
stored k-major once at load, read in place, the next panel prefetched), it ran 0.94-1.01x
of packing per call with the weights coming from memory and 0.95-1.03x with them in the
caches (Zen 3, 1 thread, GPT-2's and MiniLM's shapes, same process, medians of 9 pairs;
two lanes no better), so the packing's cost is paid anyway in reading the panels cold. Every variant computes
kernels/linalg.py's ref_linear(x, wt[n0:n1].T).
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
    """An intrinsic kernel(c, ldc, a, lda, b, K, mr, nr): c[r, :nr] = a[r, :K] @ b (K, 2*VL)
    for r < mr; c, a, b float32 pointers, ldc/lda row strides in elements. Rows past mr
    read row mr-1 and columns past nr are computed but not stored, so an edge tile needs no
    zero-padded copy of x or y. Overwrites c."""
    V = ir.VectorType(F32, VL)
    NV = 2
    NR = NV * VL

    @intrinsic
    def kernel(typingctx, c, ldc, a, lda, b, K, mr, nr):
        ptr = types.CPointer(types.float32)
        sig = types.void(ptr, types.intp, ptr, types.intp, ptr, types.intp, types.intp,
                         types.intp)

        def codegen(context, builder, signature, args):
            c, ldc, a, lda, b, K, mr, nr = args
            i64 = K.type

            def const(v):
                return ir.Constant(i64, v)
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(V, [V, V, V]),
                                                 f"llvm.fma.v{VL}f32")
            zero = ir.Constant(V, [0.0] * VL)
            lanes0 = ir.Constant(ir.VectorType(ir.IntType(32), VL), [0] * VL)
            last = builder.sub(mr, const(1))
            # each row's start, rows past mr clamped to the last real one (loop-invariant)
            arow = [builder.gep(a, [builder.mul(builder.select(
                builder.icmp_signed("<", const(r), mr), const(r), last), lda)])
                for r in range(MR)]
            entry = builder.block
            loop = builder.append_basic_block("uk.loop")
            done = builder.append_basic_block("uk.done")
            builder.cbranch(builder.icmp_signed(">", K, const(0)), loop, done)

            builder.position_at_end(loop)
            k = builder.phi(i64)
            k.add_incoming(const(0), entry)
            acc = [[builder.phi(V) for _ in range(NV)] for _ in range(MR)]
            for row in acc:
                for p in row:
                    p.add_incoming(zero, entry)
            bk = builder.gep(b, [builder.mul(k, const(NR))])
            bv = [builder.load(builder.bitcast(builder.gep(bk, [const(VL * h)]),
                                               V.as_pointer()), align=4) for h in range(NV)]
            new = []
            for r in range(MR):
                ar = builder.load(builder.gep(arow[r], [k]))
                av = builder.insert_element(ir.Constant(V, ir.Undefined), ar,
                                            ir.Constant(ir.IntType(32), 0))
                av = builder.shuffle_vector(av, ir.Constant(V, ir.Undefined), lanes0)
                new.append([builder.call(fma, [av, bv[h], acc[r][h]]) for h in range(NV)])
            k1 = builder.add(k, const(1))
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
            whole = builder.icmp_signed(">=", nr, const(NR))
            for r in range(MR):
                with builder.if_then(builder.icmp_signed("<", const(r), mr)):
                    row = builder.gep(c, [builder.mul(const(r), ldc)])
                    with builder.if_else(whole) as (full, part):
                        with full:
                            for h in range(NV):
                                builder.store(final[NV * r + h], builder.bitcast(
                                    builder.gep(row, [const(VL * h)]), V.as_pointer()), align=4)
                        with part:      # an edge tile: the real columns one at a time
                            for h in range(NV):
                                for lane in range(VL):
                                    col = VL * h + lane
                                    with builder.if_then(builder.icmp_signed("<", const(col), nr)):
                                        builder.store(builder.extract_element(
                                            final[NV * r + h], ir.Constant(ir.IntType(32), lane)),
                                            builder.gep(row, [const(col)]))
            return context.get_dummy_value()
        return sig, codegen
    return kernel


@intrinsic
def _transpose8x8(typingctx, dst, ldd, src, lds):
    """dst[c, r] = src[r, c] for r, c < 8: eight rows of 8 floats loaded as vectors and
    transposed in registers (unpack, shuffle, swap halves: 24 shuffles), so packing a
    weight panel costs a few shuffles per 64 values instead of 64 strided stores."""
    sig = types.void(types.CPointer(types.float32), types.intp,
                     types.CPointer(types.float32), types.intp)

    def codegen(context, builder, signature, args):
        dst, ldd, src, lds = args
        V = ir.VectorType(F32, 8)
        i64 = ldd.type

        def shuffle(a, b, idx):
            return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), 8),
                                                            idx))
        r = [builder.load(builder.bitcast(builder.gep(src, [builder.mul(
            ir.Constant(i64, i), lds)]), V.as_pointer()), align=4) for i in range(8)]
        lo, hi = [0, 8, 1, 9, 4, 12, 5, 13], [2, 10, 3, 11, 6, 14, 7, 15]
        t = []
        for i in range(0, 8, 2):                   # pairs of rows interleaved
            t += [shuffle(r[i], r[i + 1], lo), shuffle(r[i], r[i + 1], hi)]
        even, odd = [0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15]
        u = []
        for base in (0, 4):                        # rows 0-3, then 4-7: four per column pair
            u += [shuffle(t[base], t[base + 2], even), shuffle(t[base], t[base + 2], odd),
                  shuffle(t[base + 1], t[base + 3], even), shuffle(t[base + 1], t[base + 3], odd)]
        low, high = [0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]
        cols = [shuffle(u[c], u[4 + c], low) for c in range(4)] + \
            [shuffle(u[c], u[4 + c], high) for c in range(4)]
        for c in range(8):
            builder.store(cols[c], builder.bitcast(builder.gep(dst, [builder.mul(
                ir.Constant(i64, c), ldd)]), V.as_pointer()), align=4)
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def _at(typingctx, arr, offset):
    # a pointer to the element `offset` elements past the start of an array's data
    sig = types.CPointer(arr.dtype)(arr, types.intp)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.gep(ary.data, [args[1]])
    return sig, codegen


@njit(cache=True, inline="always")
def pack_panel(panel, w, j, nr):
    # panel (K, NR) <- rows j:j+nr of w (N, K) as its columns, zero beyond nr; w's rows may
    # be strided, its columns not. Whole panels 8 x 8 blocks at a time (_transpose8x8).
    K, NR = panel.shape
    ldw = w.strides[0] // 4
    k8 = K - K % 8
    if nr == NR and NR % 8 == 0 and (K < 2 or w.strides[1] == 4):
        for jj in range(0, NR, 8):
            for k in range(0, k8, 8):
                _transpose8x8(_at(panel, k * NR + jj), NR, _at(w, (j + jj) * ldw + k), ldw)
            for k in range(k8, K):
                for c in range(jj, jj + 8):
                    panel[k, c] = w[j + c, k]
    else:
        for k in range(K):
            for jj in range(nr):
                panel[k, jj] = w[j + jj, k]
            for jj in range(nr, NR):
                panel[k, jj] = 0.0


@njit(cache=True, inline="always")
def _load_rows(panel, rows, wt, j, nr):
    # a float32 weight's output rows j:j+nr into the panel, straight from where they lie
    pack_panel(panel, wt, j, nr)


@intrinsic
def _copy16(typingctx, dst, src):
    """dst[:16] = src[:16], float32 pointers: two vector loads and stores, where a loop of
    runtime length copied one value at a time."""
    sig = types.void(types.CPointer(types.float32), types.CPointer(types.float32))

    def codegen(context, builder, signature, args):
        V = ir.VectorType(F32, 16)
        dst, src = (builder.bitcast(a, V.as_pointer()) for a in args)
        builder.store(builder.load(src, align=4), dst, align=4)
        return context.get_dummy_value()
    return sig, codegen


@njit(cache=True, inline="always")
def _load_cols(panel, rows, w, j, nr):
    # columns j:j+nr of a (K, N) row-major weight (attention's V: keys x head dims)
    K, NR = panel.shape
    if nr == 16 and NR == 16 and (K < 2 or w.strides[1] == 4):
        ldw = w.strides[0] // 4
        for k in range(K):
            _copy16(_at(panel, k * 16), _at(w, k * ldw + j))
        return
    for k in range(K):
        for jj in range(nr):
            panel[k, jj] = w[k, j + jj]
        for jj in range(nr, NR):
            panel[k, jj] = 0.0


# panels packed at a time, as many as fit in this many bytes (10 at K = 384, 5 at 768, 2 at
# 1536): each row block of x then meets them all while it is in L1, where one panel at a
# time read all of x again for every 16 columns. AMD EPYC Zen 3, 1 thread, one process,
# medians of 12 alternating pairs: 1.06-1.11x at K = 384 (MiniLM's shapes, M = 480-640),
# 1.07x at M = 512 K = 768, 1.01x at M = 128, 0.98-0.99x where K >= 1536 (1-2 panels);
# 128 KB gained less, 384 KB no more. Whole passes on two lanes, processes alternating:
# MiniLM (32 x 20 tokens) 1.12x by median (0.91-1.29 over 6 rounds), GPT-2 T=128 1.02x
# (0.95-1.05 over 5)
GROUP_BYTES = 262144


@njit(cache=True, inline="always")
def scratch(K, NR, packed):
    # drive's buffers for depth up to K: G panels (NR weight rows each, k-major) and a
    # packed weight's widened rows
    G = max(1, min(16, GROUP_BYTES // max(1, 4 * K * NR)))
    return (np.empty((G, K, NR), np.float32),           # loads write every value they use
            np.empty((NR if packed else 0, K), np.float32))


@njit(cache=True, inline="always")
def drive(y, x, src, n0, n1, kernel, MR, NR, load, buffers):
    # y[:, n0:n1] = x @ W[:, n0:n1]   y: (M, N)  x: (M, K); W's output rows (N, K) come from
    # src through load(panel, rows, src, j, nr) (float32 rows as they lie: _load_rows; packed
    # rows widened first: kernels/_quant.py). y and x may be row views (a column slice of a
    # wider y: the packed-weight product's panels), so the micro-kernel gets their row
    # strides, not their widths. buffers: scratch(K' >= K, NR, ...); its G panels are
    # packed at once, then each row block of x goes through all G
    M, K = x.shape
    if (K > 1 and x.strides[1] != 4) or (n1 - n0 > 1 and y.strides[1] != 4):
        raise ValueError("gemm_uk: y and x need unit column strides")
    ldy = y.strides[0] // 4
    lda = x.strides[0] // 4
    panel_buf, rows_buf = buffers
    G, Kp = panel_buf.shape[0], panel_buf.shape[1]
    rows = rows_buf[:, :K]
    for j0 in range(n0, n1, G * NR):
        ng = (min(n1 - j0, G * NR) + NR - 1) // NR
        for g in range(ng):
            j = j0 + g * NR
            load(panel_buf[g, :K], rows, src, j, min(NR, n1 - j))
        for i in range(0, M, MR):
            for g in range(ng):
                j = j0 + g * NR
                kernel(_at(y, i * ldy + j), ldy, _at(x, i * lda), lda,
                       _at(panel_buf, g * Kp * NR), K, min(MR, M - i), min(NR, n1 - j))


_uk6x16 = _micro_kernel(6, 8)
_uk12x32 = _micro_kernel(12, 16)


@njit(cache=True, nogil=True)
def product_nt(y, x, wt, buffers):
    # y = x @ wt.T (attention's Q K^T), float32, with the AVX2-sized micro-kernel;
    # buffers: scratch(K', 16, False)
    drive(y, x, wt, 0, y.shape[1], _uk6x16, 6, 16, _load_rows, buffers)


@njit(cache=True, nogil=True)
def product_nn(y, x, w, buffers):
    # y = x @ w (attention's P V), float32, with the AVX2-sized micro-kernel
    drive(y, x, w, 0, y.shape[1], _uk6x16, 6, 16, _load_cols, buffers)


@njit(cache=True, nogil=True)
def gemm_uk6x16(y, x, wt, n0, n1):
    drive(y, x, wt, n0, n1, _uk6x16, 6, 16, _load_rows, scratch(x.shape[1], 16, False))


@njit(cache=True, nogil=True)
def gemm_uk12x32(y, x, wt, n0, n1):
    drive(y, x, wt, n0, n1, _uk12x32, 12, 32, _load_rows, scratch(x.shape[1], 32, False))

