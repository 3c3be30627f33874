"""Prefill attention through BLAS: the masked, scaled row softmax between two products.

For a prompt (more than a few query rows) attention runs per (batch, head) as

    scores = Q_h @ K_h^T          (T, S)  BLAS, into planned scratch
    scores = softmax(mask(scale * scores + bias))   in place, this kernel
    out_h  = scores @ V_h         (T, D)  BLAS, into the output's head slice

instead of `attend`'s scalar loop with one exp per (query, key). The softmax is one pass
of compiled code with a vectorised exp (_vmath.py); it was three steps (mask, NumPy's exp,
normalise) before Numba had one. The reference of the op is `ref_attention`
(attention.py); decode steps (few rows) keep `attend`.
"""
from __future__ import annotations

import numpy as np
from numba import carray, types
from numba.core import cgutils
from numba.extending import intrinsic

from ..jit import cpu_flags, njit
from . import microkernel as k_uk
from ._vmath import exp_


@njit(cache=True, fastmath={"nnan", "nsz", "reassoc"})
def _max_or(x, init):
    # max(init, *x). The flags let LLVM vectorise the reduction: a NaN in x may be skipped
    # here, but it still reaches the caller's exp and sum, so a NaN row stays NaN
    m = init
    for j in range(x.shape[0]):
        v = x[j]
        m = v if v > m else m
    return m


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def softmax_masked(scores, qpos0, mask, bias, causal, window, scale):
    # scores: (T, S) raw q.k products -> softmax(scale * scores + bias) over the keys each
    # query sees, in place; masked keys 0. Key j sits at position j, query i at qpos0 + i.
    # mask: (S_mask,) bool by key position (S_mask = 0: none); bias: (T, S_bias) (S_bias = 0:
    # none). A row with every key masked is zeros, as the reference defines it.
    T, S = scores.shape
    n_mask = mask.shape[0]
    n_bias = bias.shape[1]
    # the row max in the scores' own precision, so that exp_ runs in float32 (vectorised)
    ninf = np.full(1, -np.inf, scores.dtype)[0]
    zero = np.zeros(1, scores.dtype)[0]
    for i in range(T):
        row = scores[i]
        qp = qpos0 + i
        # the keys the causal / window masks leave: [lo, hi)
        lo = 0
        hi = S
        if causal:
            hi = min(S, qp + 1)
        if window > 0:
            lo = max(0, qp - window + 1)
            if not causal:
                hi = min(hi, qp + window)
        lo = min(lo, S)
        hi = max(hi, lo)
        # loops over slices from 0: indices provably >= 0, so no negative-index fix-up in
        # the loop body and LLVM vectorises (range(lo, hi) ran 10x slower)
        row[:lo] = 0.0
        row[hi:] = 0.0
        seen = row[lo:hi]
        n = seen.shape[0]
        for j in range(n):
            seen[j] = seen[j] * scale
        b = bias[i, lo:min(hi, n_bias)]
        for j in range(b.shape[0]):
            seen[j] += b[j]
        mk = mask[lo:min(hi, n_mask)]
        for j in range(mk.shape[0]):
            # "+ zero": a conditional store would be a masked store (microcoded on AMD's
            # Zen, see _vmath.relu_); v + 0 stores every element
            seen[j] = (seen[j] if mk[j] else ninf) + zero
        m = _max_or(seen, ninf)
        if m == ninf:                           # every key masked: a row of zeros
            m = zero
        # the sum in the scores' precision too: a float64 one kept the loop from
        # vectorising (float32 partial sums of values in [0, 1] lose < 1e-6 relative)
        z = zero
        for j in range(n):
            e = exp_(seen[j] - m)               # a masked key: exp(-inf) = 0
            seen[j] = e
            z += e
        inv = zero + (1.0 / z if z > 0.0 else 0.0)
        for j in range(n):
            seen[j] = seen[j] * inv


# float32 prompts' attention products by the micro-kernel (attention_blocks), one call per
# lane, where the CPU has the FMA units it is written for; else BLAS per (head, block).
# AMD EPYC Zen 3, 1 thread, a GPT-2 small layer (12 heads, causal): T=128 1.72 -> 1.34 ms,
# T=512 about even (16.7 against 17.6 ms, a busy machine): the calls were the cost
MICRO = "fma" in cpu_flags()

# at most this many (query, key) pairs per head, one compiled call does a lane's every head
# a query row at a time (attention_rows); above it, attention_blocks (or BLAS per head).
# Short prompts (a batch of sentences) make thousands of tiny per-head products whose
# calls cost more than their arithmetic; attention_blocks, one call per lane too, is
# faster from ~8 x 8 pairs up: per (batch, head) pair at MiniLM's 12 heads of D = 32
# (Zen 3, 1 thread) rows/blocks took 1.04/1.76 us at 4 x 4 pairs, 1.81/1.99 at 6 x 6,
# 3.70/3.39 at 9 x 9, 9.31/6.21 at 15 x 15, 22.1/6.8 at 24 x 24 and 116/26 at 64 x 64
SMALL_PAIRS = 64


@intrinsic
def _row_ptr(typingctx, arr, i, j, k):
    # &arr[i, j, k, 0] of a 4-d array, no bounds check
    sig = types.CPointer(arr.dtype)(arr, i, j, k)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        idx = [context.cast(builder, a, t, types.intp)
               for a, t in zip(args[1:], signature.args[1:])]
        zero = context.get_constant(types.intp, 0)
        return cgutils.get_item_pointer(context, builder, aryty, ary, idx + [zero])
    return sig, codegen


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def attention_rows(out4, q4, kc, vc, n_keys, qpos0, mask, bias4, causal, window, scale, row,
                   p0, p1):
    # heads p0:p1 of the (batch, head) pairs, b = p // H, a query row at a time: row (1, W >=
    # n_keys) takes the row's q.k products, softmax_masked (query i at qpos0 + i), then
    # out_h[i] = row @ V_h. out4, q4: (B, T, H, D)  kc, vc: (B, Hkv, S, D)  mask: (B, S_mask)
    # bias4: (B, H, T, S_bias). The last axis of out4, q4, kc and vc must be contiguous
    # (`rows_contiguous`): each head row is read as a contiguous (D,) array, whose unit
    # stride LLVM knows, so the D-long loops vectorise (through the views' run-time strides
    # they ran scalar: 2-3x slower at MiniLM's D = 32)
    B, T, H, D = q4.shape
    group = H // kc.shape[1]
    s = row[:, :n_keys]
    for p in range(p0, p1):
        b = p // H
        h = p - b * H
        hk = h // group
        mb = mask[b, :min(n_keys, mask.shape[1])]
        for i in range(T):
            q = carray(_row_ptr(q4, b, i, h), D)
            for j in range(n_keys):
                k = carray(_row_ptr(kc, b, hk, j), D)
                acc = np.float32(0.0)
                for d in range(D):
                    acc += q[d] * k[d]
                s[0, j] = acc
            softmax_masked(s, qpos0 + i, mb, bias4[b, h, i:i + 1, :min(n_keys, bias4.shape[3])],
                           causal, window, scale)
            o = carray(_row_ptr(out4, b, i, h), D)
            for d in range(D):
                o[d] = 0.0
            for j in range(n_keys):
                w = s[0, j]
                v = carray(_row_ptr(vc, b, hk, j), D)
                for d in range(D):
                    o[d] += w * v[d]


def rows_contiguous(*arrays) -> bool:
    """Is the last axis of every array contiguous (what attention_rows reads as rows)?"""
    return all(a.shape[-1] <= 1 or a.strides[-1] == a.itemsize for a in arrays)


@njit(cache=True, nogil=True, error_model="numpy")
def attention_blocks(out4, q4, kc, vc, n_keys, qpos0, mask, bias4, causal, window, scale,
                     probs, panel, blocks, p0, p1):
    # heads p0:p1 of the (batch, head) pairs, b = p // H, one query block at a time:
    # blocks (n, 4) rows (i0, i1, j0, j1) as query_blocks gives them. scores = Q K^T and
    # out = P V by the micro-kernel (float32), softmax_masked between them, probabilities
    # in probs (rows >= i1 - i0, W >= n_keys), K^T's and V's panels in panel (>= max(D,
    # n_keys), 16): one compiled call for a lane's heads, where BLAS per (head, block) paid
    # a Python call per product. out4, q4: (B, T, H, D)  kc, vc: (B, Hkv, S, D)
    # mask: (B, S_mask)  bias4: (B, H, T, S_bias)
    B, T, H, D = q4.shape
    group = H // kc.shape[1]
    n_mask, n_bias = mask.shape[1], bias4.shape[3]
    flat = probs.reshape(-1)
    # one panel at a time (the planned one); float32: no widened rows
    buffers = (panel.reshape((1, panel.shape[0], panel.shape[1])), panel[:0])
    for p in range(p0, p1):
        b = p // H
        h = p - b * H
        hk = h // group
        for blk in range(blocks.shape[0]):
            i0, i1, j0, j1 = blocks[blk, 0], blocks[blk, 1], blocks[blk, 2], blocks[blk, 3]
            s = flat[:(i1 - i0) * (j1 - j0)].reshape(i1 - i0, j1 - j0)
            k_uk.product_nt(s, q4[b, i0:i1, h], kc[b, hk, j0:j1], buffers)
            mb = mask[b, j0:j1] if n_mask else mask[b]
            bb = bias4[b, h, i0:i1, j0:j1] if n_bias else bias4[b, h, i0:i1]
            # key j of the block sits at j0 + j: positions relative to j0
            softmax_masked(s, qpos0 + i0 - j0, mb, bb, causal, window, scale)
            k_uk.product_nn(out4[b, i0:i1, h], s, vc[b, hk, j0:j1], buffers)


def query_blocks(T: int, n_keys: int, qpos0: int, causal: bool, window: int,
                 step: int) -> list[tuple[int, int, int, int]]:
    """[(i0, i1, j0, j1)]: query rows i0:i1 (row i at position qpos0 + i), `step` rows at a
    time, and the keys j0:j1 (key j at position j) some row of the block may see."""
    out = []
    for i0 in range(0, T, step):
        i1 = min(T, i0 + step)
        first, last = qpos0 + i0, qpos0 + i1 - 1
        j0 = min(max(0, first - window + 1) if window else 0, n_keys)
        j1 = min(n_keys, last + 1) if causal else \
            (min(n_keys, last + window) if window else n_keys)
        out.append((i0, i1, j0, max(j0, j1)))
    return out


def attention_calls(out4, q4, kc, vc, n_keys, qpos0, mask, bias4, causal, window, scale,
                    probs, panels, lanes=1) -> list[list]:
    """A prompt's attention as [(fn, args), ...] per lane (runtime/lanes.py). A short one
    (T x keys <= SMALL_PAIRS, heads' rows contiguous): one attention_rows call per lane over
    its heads. Else per (batch, head) and query block, scores = Q_h K_h^T, softmax_masked
    in place, out_h = P V_h: for float32 on an FMA CPU one attention_blocks call per lane
    (the micro-kernel), else BLAS per product. Query head h reads K/V head h // (H / Hkv).
    The lanes share out the (batch, head) pairs, consecutive ones (a K/V group) together.
    Lane l has its own scratch, as the op's rule plans it (dsl/ops/attention.py
    prompt_scratch): probs[l] (rows, W >= n_keys), a block's probabilities, `rows` =
    prompt_rows (unless masked, a whole head up to 128 rows, so a short head's K and V are
    packed once), and panels[l] (>= max(D, n_keys), 16), the micro-kernel's (None
    for other dtypes). (Dealing the query blocks instead, all heads per block, took 0.86
    against 0.62 ms a layer at T=128 on 2 lanes: twice the calls, on 32-row blocks.)
    out4, q4: (B, T, H, D)  kc, vc: (B, Hkv, S, D) views  mask: (B, S_mask) bool  bias4:
    (B, H, T, S_bias)."""
    B, T, H, D = q4.shape
    group = H // kc.shape[1]
    lanes = max(1, min(lanes, B * H, probs.shape[0]))
    rows = probs.shape[1]
    n_mask, n_bias = mask.shape[1], bias4.shape[3]
    n = B * H
    if T * n_keys <= SMALL_PAIRS and rows_contiguous(out4, q4, kc, vc):
        # one call per lane over its heads, in the first row of its probabilities
        return [[(attention_rows, (out4, q4, kc, vc, n_keys, qpos0, mask, bias4, causal,
                                   window, scale, probs[lane, :1],
                                   lane * n // lanes, (lane + 1) * n // lanes))]
                for lane in range(lanes)]
    blocks = query_blocks(T, n_keys, qpos0, causal, window, rows)
    if MICRO and panels is not None and all(a.dtype == np.float32 for a in (out4, q4, kc, vc)) \
            and rows_contiguous(out4, q4, kc, vc):
        # one call per lane over its heads, the products by the micro-kernel
        table = np.array(blocks, np.int64).reshape(-1, 4)
        return [[(attention_blocks, (out4, q4, kc, vc, n_keys, qpos0, mask, bias4, causal,
                                     window, scale, probs[lane], panels[lane], table,
                                     lane * n // lanes, (lane + 1) * n // lanes))]
                for lane in range(lanes)]
    pairs = [(b, h) for b in range(B) for h in range(H)]
    per_lane = []
    for lane in range(lanes):
        flat = probs[lane].reshape(-1)
        calls = []
        for b, h in pairs[lane * n // lanes:(lane + 1) * n // lanes]:
            hk = h // group
            for i0, i1, j0, j1 in blocks:
                p = flat[:(i1 - i0) * (j1 - j0)].reshape(i1 - i0, j1 - j0)
                mb = mask[b, j0:j1] if n_mask else mask[b]
                bb = bias4[b, h, i0:i1, j0:j1] if n_bias else bias4[b, h, i0:i1]
                calls += [
                    (np.matmul, (q4[b, i0:i1, h], kc[b, hk, j0:j1].T, p)),
                    # key j of the block sits at j0 + j: positions relative to j0
                    (softmax_masked, (p, qpos0 + i0 - j0, mb, bb, causal, window, scale)),
                    (np.matmul, (p, vc[b, hk, j0:j1], out4[b, i0:i1, h]))]
        per_lane.append(calls)
    return per_lane


def attend_blas(out4, q4, kc, vc, n_keys, qpos0, mask, bias4, causal, window, scale, probs,
                panels, lanes=None):
    """Prefill attention over a KV cache whose slot j holds position j (decoding sessions,
    positions known only when the step runs): attention_calls, run on `lanes` if given.
    kc, vc: (B, Hkv, S_cap, D)  probs, panels: per lane, as attention_calls takes them."""
    from ..lanes import run_calls
    per_lane = attention_calls(out4, q4, kc, vc, n_keys, qpos0, mask, bias4, causal, window,
                               scale, probs, panels, lanes.n if lanes is not None else 1)
    if lanes is not None:
        lanes.run(per_lane)
    else:
        run_calls(per_lane[0])
